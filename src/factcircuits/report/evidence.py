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
        headline = {p.stem: {k: headline_value(v) for k, v in _read_json(p).items()}
                    for p in sorted((folder / "headline").glob("*.json"))}
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


def headline_value(value: Any) -> Any:
    """A headline value as the findings read it: None when it was not computed (the marker
    `run.folders` writes for NaN, or the null older runs hold)."""
    from factcircuits.run.folders import NOT_COMPUTED

    if isinstance(value, dict) and NOT_COMPUTED in value:
        return None
    if isinstance(value, float) and value != value:
        return None
    return value


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def load_runs(runs_root: Path | str) -> list[RunEvidence]:
    """Every accepted run under `runs_root` whose files can be read (staging and failed
    attempts are not runs; damaged runs are left out: see `scan_evidence`)."""
    return scan_evidence(runs_root)[0]


def scan_evidence(runs_root: Path | str) -> tuple[list[RunEvidence], list[tuple[str, str]]]:
    """(runs, damaged): the runs the write-up can show, and (run folder name, what is wrong)
    for those it cannot. One damaged run never stops the write-up of the others."""
    from factcircuits.report.findings import run_findings
    from factcircuits.run.folders import scan_runs

    root = Path(runs_root)
    if not root.is_dir():
        return [], []
    records, unreadable = scan_runs(root)
    runs, damaged = [], [(folder.name, why) for folder, why in unreadable]
    for record in records:
        folder = Path(record["run_dir"])
        problem = files_problem(folder, record)
        if problem is None:
            ev = RunEvidence.load(folder)
            try:
                run_findings(ev)  # what every page computes from it
                runs.append(ev)
                continue
            except Exception as exc:  # noqa: BLE001 -- any reader's failure leaves this run out
                missing = [f"{nb}.{k}" for nb, values in ev.headline.items()
                           for k, v in values.items() if v is None]
                problem = (f"headline value(s) not computed: {', '.join(missing[:4])}" if missing
                           else f"its findings cannot be computed ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0][:80] if str(exc) else ''})")
        damaged.append((folder.name, problem))
    return runs, sorted(damaged)


def files_problem(folder: Path, record: dict[str, Any]) -> str | None:
    """What is wrong with a run folder's files (headlines, model.json, the executed notebooks
    run.json lists), or None. An absent file is no damage: pages show what a run has."""
    paths = [*sorted((folder / "headline").glob("*.json")), folder / "model.json"]
    paths += [folder / f"{nb.get('name')}.ipynb" for nb in record.get("notebooks") or []
              if isinstance(nb, dict)]
    for path in paths:
        name = path.relative_to(folder).as_posix()
        try:
            data = path.read_bytes()
            if not data:
                return f"{name} is empty (0 bytes)"
            value = json.loads(data)
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            return f"{name} is unreadable ({str(exc).splitlines()[0][:80]})"
        if not isinstance(value, dict):
            return f"{name} is not a JSON object"
    return None


def damaged_markdown(damaged: list[tuple[str, str]]) -> str:
    """The runs left out of the write-up, each with what is wrong (empty when none)."""
    if not damaged:
        return ""
    lines = [f"**{len(damaged)} run(s) left out** because their files cannot be read; rerun "
             "them or delete their folders:", ""]
    return "\n".join(lines + [f"- `{name}`: {why}" for name, why in damaged]) + "\n"


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
