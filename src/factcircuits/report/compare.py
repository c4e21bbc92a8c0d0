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


def depth_profiles(table: pd.DataFrame, runs_root: Path | None = None) -> pd.DataFrame:
    """Per-layer profiles of the runs in `table` on relative depth, so models of different
    depth overlay: the logit-lens curve (mean metric read after each sublayer, as a fraction
    of the run's final value; depth = step / (2·layers)) and the mean MLP and attention DLA per
    layer (as a fraction of the run's summed |mean DLA|; depth = layer / (layers − 1)).
    Tidy: run_id, model, dataset, profile, depth, value."""
    from factcircuits.run.folders import list_runs

    wanted = set(table["run_id"]) if len(table) else set()
    frames = []
    for run in list_runs(runs_root):
        n_layers = (run.get("model") or {}).get("n_layers")
        if run["run_id"] not in wanted or not n_layers or n_layers < 2:
            continue
        ids = {"run_id": run["run_id"],
               "model": (run.get("model") or {}).get("resolved_name"),
               "dataset": (run.get("parameters") or {}).get("dataset")}
        results = Path(run["run_dir"]) / "results"
        lens = results / "02_logit_lens" / "logit_lens_mean.csv"
        if lens.is_file():
            curve = pd.read_csv(lens).sort_values("step")
            final = float(curve["value"].iloc[-1])
            if final:
                frames.append(pd.DataFrame({**ids, "profile": "logit lens (fraction of final)",
                                            "depth": curve["step"] / (2 * n_layers),
                                            "value": curve["value"] / final}))
        dla = results / "03_attribution" / "layer_dla.csv"
        if dla.is_file():
            layers = pd.read_csv(dla)
            means = (layers[layers["component"] != "embed"]
                     .groupby(["component", "layer"], as_index=False)["dla"].mean())
            total = float(means["dla"].abs().sum())
            for component, part in means.groupby("component"):
                if total:
                    frames.append(pd.DataFrame({
                        **ids, "profile": f"{component} DLA (fraction of total |DLA|)",
                        "depth": part["layer"] / (n_layers - 1), "value": part["dla"] / total}))
    columns = ["run_id", "model", "dataset", "profile", "depth", "value"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def profile_figure(profiles: pd.DataFrame):
    """Per-layer profiles overlaid on relative depth: one panel per profile, one line per run
    (model · dataset). None when no run has per-layer results."""
    import plotly.express as px

    if profiles.empty:
        return None
    data = profiles.assign(run=profiles["model"].astype(str) + " · "
                           + profiles["dataset"].astype(str))
    fig = px.line(data, x="depth", y="value", color="run", facet_row="profile", markers=True,
                  labels={"depth": "relative depth (0 = embeddings, 1 = last layer)",
                          "value": ""}, title="Per-layer profiles by relative depth")
    fig.update_yaxes(matches=None)
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=", 1)[-1]))
    fig.update_layout(height=260 * data["profile"].nunique() + 120,
                      legend={"orientation": "h", "y": -0.1})
    return fig


def comparison_figures(table: pd.DataFrame, runs_root: Path | None = None) -> list:
    """The headline overview and the per-layer profiles overlaid by relative depth."""
    figures = [comparison_figure(table), profile_figure(depth_profiles(table, runs_root))]
    return [f for f in figures if f is not None]
