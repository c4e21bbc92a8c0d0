"""One run's evidence as the write-up reads it: headline numbers, result tables, model depth.

Everything the findings say comes from a run folder through this class (see
`factcircuits.run.folders` for the folder layout); a missing file or key reads as None, so a
run with only some notebooks still gets the findings its files support.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

# Position of a layer in the stack: 0 = first layer, 1 = last. Bands name thirds of the depth.
DEPTH_BANDS = ((1 / 3, "early"), (2 / 3, "middle"), (float("inf"), "late"))


def relative_depth(layer: float | None, n_layers: int | None) -> float | None:
    """layer / (n_layers − 1): comparable across models of different depth."""
    if layer is None or not n_layers or n_layers < 2:
        return None
    return float(layer) / (n_layers - 1)


def depth_band(depth: float | None) -> str | None:
    if depth is None:
        return None
    return next(name for limit, name in DEPTH_BANDS if depth < limit)


@dataclass
class RunEvidence:
    run_id: str
    folder: Path
    model: str
    dataset: str
    task: str
    n_layers: int | None
    headline: dict[str, dict[str, Any]]
    record: dict[str, Any] = field(default_factory=dict)  # run.json
    model_info: dict[str, Any] = field(default_factory=dict)  # model.json

    @classmethod
    def load(cls, folder: Path | str) -> RunEvidence:
        folder = Path(folder)
        record = _read_json(folder / "run.json")
        model_info = _read_json(folder / "model.json") or record.get("model") or {}
        headline = {p.stem: _read_json(p) for p in sorted((folder / "headline").glob("*.json"))}
        params = record.get("parameters") or {}
        model = (model_info.get("resolved_name") or model_info.get("name")
                 or params.get("model") or "unknown model")
        task = params.get("task") or (headline.get("01_task_check") or {}).get("task") or "?"
        return cls(run_id=record.get("run_id") or folder.name, folder=folder, model=str(model),
                   dataset=_dataset_name(params.get("dataset")), task=str(task),
                   n_layers=model_info.get("n_layers"), headline=headline, record=record,
                   model_info=model_info)

    def number(self, notebook: str, key: str) -> Any:
        """A headline value, or None when the notebook or key is absent."""
        return (self.headline.get(notebook) or {}).get(key)

    def table(self, notebook: str, name: str) -> pd.DataFrame | None:
        path = self.folder / "results" / notebook / f"{name}.csv"
        if not path.is_file():
            return None
        try:
            return pd.read_csv(path)
        except (pd.errors.EmptyDataError, pd.errors.ParserError):
            return None

    def depth(self, layer: float | None) -> float | None:
        return relative_depth(layer, self.n_layers)

    @property
    def short_model(self) -> str:
        return self.model.rsplit("/", 1)[-1]

    @property
    def title(self) -> str:
        return f"{self.short_model} on {self.dataset}"

    @property
    def anchor(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.run_id.lower())


def _dataset_name(spec: Any) -> str:
    """A registered dataset's name, or a dataset file's stem ('data/my.csv' -> 'my')."""
    text = str(spec or "?")
    return Path(text).stem if "/" in text or text.endswith((".csv", ".jsonl")) else text


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def load_runs(runs_root: Path | str) -> list[RunEvidence]:
    """Every accepted run under `runs_root` (staging and failed attempts are not runs)."""
    from factcircuits.run.folders import list_runs

    root = Path(runs_root)
    if not root.is_dir():
        return []
    return [RunEvidence.load(run["run_dir"]) for run in list_runs(root)]


def peak_row(table: pd.DataFrame | None, value: str, **where: Any) -> pd.Series | None:
    """The row with the largest `value` among rows matching `where` (None if there is none)."""
    if table is None or value not in table.columns:
        return None
    part = table
    for column, wanted in where.items():
        if column not in part.columns:
            return None
        part = part[part[column] == wanted]
    part = part.dropna(subset=[value])
    if part.empty:
        return None
    return part.loc[part[value].idxmax()]
