"""Headline numbers across runs (model × dataset): tables and one overview figure.

Used by the Quarto comparison page and by the preview HTML alike. Layer numbers are also
given as relative depth (layer / (n_layers − 1)), so models of different depth compare.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

ID_COLUMNS = ["run_id", "model", "dataset", "task"]
LAYER_KEY = re.compile(r"(layer|centre)$")
# The few numbers a reviewer compares first, in reading order (regexes over `notebook.key`).
KEY_METRICS = [
    r"01_task_check\.accuracy$", r"01_task_check\.auc$", r"01_task_check\.mean_metric$",
    r"02_logit_lens\.mlp_share$", r"02_logit_lens\.peak_layer_depth$",
    r"03_attribution\.top_head_dla$", r"04_activation_patching\.resid_pre_peak$",
    r"04_activation_patching\.resid_pre_peak_layer_depth$",
    r"05_causal_tracing\.total_effect_mean$", r"05_causal_tracing\.mlp_subject_last_peak_aie$",
    r"05_causal_tracing\.mlp_subject_last_peak_layer_depth$",
    r"06_ablation_knockout\.ablation_biggest_drop$",
    r"06_ablation_knockout\.knockout_subject_peak_centre_depth$",
]


def flat_headline(run: dict[str, Any]) -> dict[str, Any]:
    """{'02_logit_lens': {'peak_layer': 23}} -> {'02_logit_lens.peak_layer': 23, and
    '02_logit_lens.peak_layer_depth': 0.79 when the model's depth is known} (numbers only)."""
    n_layers = (run.get("model") or {}).get("n_layers")
    flat = {}
    for notebook, numbers in sorted((run.get("headline") or {}).items()):
        for key, value in sorted(numbers.items()):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                flat[f"{notebook}.{key}"] = value
                if LAYER_KEY.search(key) and n_layers and n_layers > 1:
                    flat[f"{notebook}.{key}_depth"] = round(value / (n_layers - 1), 4)
    return flat


def comparison_table(runs_root: Path | None = None) -> pd.DataFrame:
    """One row per accepted run: id, model, dataset, task, then `notebook.metric` columns."""
    from factcircuits.run.folders import list_runs

    rows = []
    for run in list_runs(runs_root):
        params = run.get("parameters", {})
        model = (run.get("model") or {}).get("resolved_name") or params.get("model")
        rows.append({"run_id": run["run_id"], "model": model,
                     "dataset": params.get("dataset"), "task": params.get("task"),
                     **flat_headline(run)})
    return pd.DataFrame(rows, columns=None if rows else ID_COLUMNS)


def key_metrics(table: pd.DataFrame) -> list[str]:
    columns = [c for c in table.columns if c not in ID_COLUMNS]
    return [c for pattern in KEY_METRICS for c in columns if re.search(pattern, c)]


def key_table(table: pd.DataFrame) -> pd.DataFrame:
    """The key numbers only: one row per run, short column names."""
    keys = key_metrics(table)
    out = table[["run_id", "model", "dataset", "task", *keys]].copy()
    return out.rename(columns={k: k.split(".", 1)[1] for k in keys})


def full_table(table: pd.DataFrame) -> pd.DataFrame:
    """Every headline number: one row per number, one column per run."""
    if table.empty:
        return table
    return table.set_index("run_id").drop(columns=["model", "dataset", "task"]).T


def comparison_figure(table: pd.DataFrame):
    """One figure, a small panel per key metric (every number, up to 12, when the runs have
    none of the key ones): dataset on x, one bar per model. None when nothing to plot."""
    import plotly.express as px
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    keys = key_metrics(table) or [c for c in table.columns if c not in ID_COLUMNS][:12]
    keys = [k for k in keys if table[k].notna().any()]
    if not keys:
        return None
    cols = 2
    rows = (len(keys) + cols - 1) // cols
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[k.split(".", 1)[1] for k in keys],
                        vertical_spacing=0.5 / rows)
    colours = dict(zip(sorted(table["model"].astype(str).unique()),
                       px.colors.qualitative.Plotly * 10))
    for i, key in enumerate(keys):
        data = table.dropna(subset=[key])
        for model, part in data.groupby(data["model"].astype(str)):
            fig.add_trace(go.Bar(x=part["dataset"], y=part[key], name=model,
                                 marker_color=colours[model], legendgroup=model,
                                 showlegend=i == 0, hovertext=part["run_id"]),
                          row=i // cols + 1, col=i % cols + 1)
    fig.update_layout(height=220 * rows + 80, barmode="group", margin={"t": 60, "b": 30},
                      title="Key headline numbers by dataset and model",
                      legend={"orientation": "h", "y": -0.05})
    return fig


def comparison_figures(table: pd.DataFrame) -> list:
    figure = comparison_figure(table)
    return [figure] if figure is not None else []
