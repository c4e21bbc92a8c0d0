"""Headline numbers across runs (model × dataset): one table and its plots.

Used by the Quarto comparison page and by the preview HTML alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

ID_COLUMNS = ["run_id", "model", "dataset", "task"]


def flat_headline(run: dict[str, Any]) -> dict[str, Any]:
    """{'01_logit_lens': {'auc': 0.5}} -> {'01_logit_lens.auc': 0.5} (numbers only)."""
    flat = {}
    for notebook, numbers in sorted((run.get("headline") or {}).items()):
        for key, value in sorted(numbers.items()):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                flat[f"{notebook}.{key}"] = value
    return flat


def comparison_table(runs_root: Path | None = None) -> pd.DataFrame:
    """One row per accepted run: id, model, dataset, task, then `notebook.metric` columns."""
    from factcircuits.pipeline import list_runs

    rows = []
    for run in list_runs(runs_root):
        params = run.get("parameters", {})
        rows.append({"run_id": run["run_id"], "model": params.get("model"),
                     "dataset": params.get("dataset"), "task": params.get("task"),
                     **flat_headline(run)})
    return pd.DataFrame(rows, columns=None if rows else ID_COLUMNS)


def comparison_figures(table: pd.DataFrame, max_metrics: int = 12) -> list:
    """One grouped bar chart per metric: dataset on x, one bar per model."""
    import plotly.express as px

    metrics = [c for c in table.columns if c not in ID_COLUMNS][:max_metrics]
    figures = []
    for metric in metrics:
        data = table.dropna(subset=[metric])
        if data.empty:
            continue
        fig = px.bar(data, x="dataset", y=metric, color="model", barmode="group",
                     hover_data=["run_id"], title=metric)
        fig.update_layout(height=360, margin={"t": 50, "b": 40})
        figures.append(fig)
    return figures
