"""Plotly figures of notebook 09: pairs per relation, the faithfulness curves of the run's and
each relation's circuits, the stability of each circuit, the overlap heatmaps and the shared
core's faithfulness per relation."""

from __future__ import annotations

import numpy as np
import pandas as pd

from factcircuits.methods.circuits.faithfulness import THRESHOLD
from factcircuits.methods.circuits.stability import STABLE_MEDIAN


def pairs_figure(table: pd.DataFrame, min_pairs: int):
    """Patchable pairs per relation; relations below `min_pairs` in grey."""
    import plotly.graph_objects as go

    colour = np.where(table["searched"].astype(bool), "#1f77b4", "#b0b0b0")
    fig = go.Figure(go.Bar(x=table["relation"], y=table["n_pairs"], marker_color=colour,
                           hovertemplate="%{x}: %{y} pairs<extra></extra>"))
    fig.add_hline(y=min_pairs, line_dash="dash",
                  annotation_text=f"min_pairs = {min_pairs}")
    fig.update_layout(title="Patchable prompt pairs per relation<br><sup>blue: a circuit of "
                      "its own is searched; grey: too few pairs (or a single relation)</sup>",
                      xaxis_title="relation", yaxis_title="pairs")
    return fig


def curves_figure(table: pd.DataFrame):
    """Faithfulness of the EAP-IG top-k circuits against size, one line per group, with 95 %
    bootstrap intervals over the evaluation pairs."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, part in table.groupby("relation", sort=False):
        part = part.sort_values("size_percent")
        fig.add_trace(go.Scatter(
            x=part["size_percent"], y=part["faithfulness"], mode="lines+markers", name=name,
            error_y={"type": "data", "symmetric": False,
                     "array": part["high"] - part["faithfulness"],
                     "arrayminus": part["faithfulness"] - part["low"], "thickness": 1},
            customdata=part[["n_edges"]],
            hovertemplate=f"{name}: %{{x}}% of edges (%{{customdata[0]}} edges), "
                          "f = %{y:.3f}<extra></extra>"))
    fig.add_hline(y=1.0, line_dash="dot", annotation_text="full model")
    fig.add_hline(y=THRESHOLD, line_dash="dash", annotation_text=f"{THRESHOLD:.0%}")
    fig.update_layout(title="Faithfulness of each circuit (EAP-IG top-k, out of sample)",
                      xaxis_title="circuit size (% of edges, log scale)",
                      yaxis_title="faithfulness (0 = empty, 1 = full model)")
    fig.update_xaxes(type="log")
    return fig


def stability_figure(table: pd.DataFrame):
    """Each circuit's Jaccard with its resamples' circuits, one box per group, with the
    stability bar."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, part in table.groupby("relation", sort=False):
        fig.add_trace(go.Box(y=part["jaccard"], name=name, boxpoints="all", jitter=0.4,
                             pointpos=0, marker_size=3, showlegend=False))
    fig.add_hline(y=STABLE_MEDIAN, line_dash="dash",
                  annotation_text=f"stable: median ≥ {STABLE_MEDIAN}")
    fig.update_layout(title="Stability: Jaccard of each bootstrap resample's circuit with the "
                      "full sample's", yaxis_title="Jaccard (edges)", yaxis_range=[0, 1.02])
    return fig


def inclusion_figure(edges: pd.DataFrame, groups: list[str] | None = None):
    """How often each edge of a circuit is in a resample's circuit (`circuits_graph`'s
    `inclusion`), for `groups` (default: every group whose circuit was resampled): one group
    as a histogram of its edges, several as one violin each (their circuits differ in size)."""
    import plotly.graph_objects as go

    resampled = edges.dropna(subset=["inclusion"])
    names = [g for g in (groups or list(dict.fromkeys(resampled["relation"])))
             if (resampled["relation"] == g).any()]
    axis = "share of resamples whose circuit holds the edge"
    fig = go.Figure()
    if len(names) == 1:
        part = resampled[resampled["relation"] == names[0]]
        fig.add_trace(go.Histogram(x=part["inclusion"], name=names[0],
                                   xbins={"start": 0, "end": 1.0001, "size": 0.05}))
        fig.update_layout(title=f"Inclusion frequency of the edges of {names[0]}'s circuit "
                          f"({len(part):,} edges)", xaxis_title=axis, yaxis_title="edges")
        return fig
    for name in names:
        part = resampled[resampled["relation"] == name]
        fig.add_trace(go.Violin(y=part["inclusion"], x=[name] * len(part), name=name,
                                box_visible=True, meanline_visible=True, points=False,
                                spanmode="hard", showlegend=False))
    fig.update_layout(title="Inclusion frequency of each circuit's edges<br><sup>the share of "
                      "bootstrap resamples whose circuit (of the same size) holds the edge"
                      "</sup>", yaxis_title=axis, yaxis_range=[0, 1.02], xaxis_title="circuit")
    return fig


OVERLAPS = (("edge_jaccard", "edges (Jaccard)"), ("node_jaccard", "nodes (Jaccard)"),
            ("weighted_overlap", "|score|-weighted"))


def overlap_figure(table: pd.DataFrame):
    """Heatmaps of the overlap between relations' 80 % circuits: edge Jaccard, node Jaccard
    and the |score|-weighted overlap."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = list(dict.fromkeys(table["relation_a"]))
    fig = make_subplots(rows=1, cols=len(OVERLAPS), subplot_titles=[t for _, t in OVERLAPS],
                        horizontal_spacing=0.12)
    for i, (column, label) in enumerate(OVERLAPS, start=1):
        grid = table.pivot(index="relation_a", columns="relation_b",
                           values=column).loc[names, names]
        fig.add_trace(go.Heatmap(z=grid.to_numpy(), x=names, y=names, zmin=0, zmax=1,
                                 colorscale="Viridis", showscale=i == len(OVERLAPS),
                                 text=np.round(grid.to_numpy(), 2), texttemplate="%{text}",
                                 hovertemplate=f"%{{y}} × %{{x}}: {label} %{{z:.3f}}"
                                               "<extra></extra>"), row=1, col=i)
        fig.update_yaxes(showticklabels=i == 1, row=1, col=i)
    fig.update_layout(title="What the relations' 80% circuits share",
                      height=300 + 25 * len(names), width=max(900, 260 * len(OVERLAPS)))
    return fig


def core_figure(table: pd.DataFrame, core_label: str):
    """The shared core's faithfulness alone and the relation's own circuit's, per relation,
    with 95 % intervals."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for prefix, name in (("core", core_label), ("circuit", "the relation's own 80% circuit")):
        value = table[f"{prefix}_faithfulness"]
        fig.add_trace(go.Bar(
            x=table["relation"], y=value, name=name,
            error_y={"type": "data", "symmetric": False,
                     "array": table[f"{prefix}_high"] - value,
                     "arrayminus": value - table[f"{prefix}_low"]}))
    fig.add_hline(y=THRESHOLD, line_dash="dash", annotation_text=f"{THRESHOLD:.0%}")
    fig.update_layout(barmode="group", title="Does the shared core alone carry each "
                      "relation's behaviour?", yaxis_title="faithfulness on the relation's "
                      "pairs (in sample)", xaxis_title="relation")
    return fig
