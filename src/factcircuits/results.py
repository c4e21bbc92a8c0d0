"""Where notebooks put their results inside a run folder, so the report can compare runs.

Layout of a run folder (written by notebooks, read by the report):
  <run_dir>/results/<notebook>/<table>.csv   tidy tables
  <run_dir>/headline/<notebook>.json          a few headline numbers per notebook
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd


def _clean(value: Any) -> Any:
    """JSON-safe scalars: numpy/torch numbers become floats, NaN becomes None."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def save_headline(run_dir: str | Path, notebook: str, numbers: dict[str, Any]) -> Path:
    path = Path(run_dir) / "headline" / f"{notebook}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(numbers), indent=2, sort_keys=True) + "\n")
    return path


def save_table(run_dir: str | Path, notebook: str, name: str, table: pd.DataFrame) -> Path:
    path = Path(run_dir) / "results" / notebook / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return path


def load_headlines(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """All headline numbers of a run, keyed by notebook."""
    folder = Path(run_dir) / "headline"
    if not folder.is_dir():
        return {}
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def load_table(run_dir: str | Path, notebook: str, name: str) -> pd.DataFrame:
    return pd.read_csv(Path(run_dir) / "results" / notebook / f"{name}.csv")
