"""Plotly figures of notebook 08: the faithfulness curve and the circuit drawn layer by layer."""

from __future__ import annotations

import pandas as pd

from factcircuits.methods.circuits.faithfulness import THRESHOLD
from factcircuits.results.parameter_declarations import whole

MAX_EDGES = 60  # strongest edges drawn in the circuit diagram


MAX_EDGES_DRAWN = whole("max_edges_drawn", 60, "strongest circuit edges drawn in the diagram",
                        1, allowed="use a whole number of at least 1 (edges drawn in the "
                        "circuit diagram)")


def faithfulness_figure(table: pd.DataFrame, title: str = "Faithfulness of the circuits",
                        random_draws: int | None = None):
    """Faithfulness against circuit size (percent of edges, log axis), one line per method and
    variant (the random circuits' mean, method "random", dashed grey: the baseline), with the
    80 % threshold and the full model (1)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for (method, variant), part in table.groupby(["method", "variant"], sort=False):
        part = part.sort_values("size_percent")
        baseline = method == "random"
        name = (f"random circuits (mean of {random_draws} draws)" if baseline and random_draws
                else "random circuits" if baseline else f"{method}, {variant}")
        fig.add_trace(go.Scatter(
            x=part["size_percent"], y=part["faithfulness"], mode="lines+markers",
            name=name, customdata=part[["n_edges"]],
            line={"dash": "dash", "color": "grey"} if baseline else None,
            hovertemplate="%{x}% of edges (%{customdata[0]} edges): f = %{y:.3f}<extra></extra>"))
    fig.add_hline(y=1.0, line_dash="dot", annotation_text="full model")
    fig.add_hline(y=THRESHOLD, line_dash="dash", annotation_text=f"{THRESHOLD:.0%}")
    fig.add_hline(y=0.0, line_dash="dot", annotation_text="empty circuit")
    fig.update_layout(title=title, xaxis_title="circuit size (% of edges, log scale)",
                      yaxis_title="faithfulness (0 = empty, 1 = full model)",
                      xaxis_type="log", template="plotly_white")
    return fig


def _positions(nodes: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """x = layer (input −1, logits n_layers), y = rank of the node within its layer; odd
    layers sit half a row lower, so the names of neighbouring layers do not collide."""
    out = {}
    for layer, part in nodes.groupby("layer"):
        names = sorted(part["node"], key=lambda n: (n.startswith("MLP"), len(n), n))
        shift = 0.5 if int(layer) % 2 else 0.0
        for i, name in enumerate(names):
            out[name] = (float(layer), i - (len(names) - 1) / 2 - shift)
    return out


def circuit_figure(nodes: pd.DataFrame, edges: pd.DataFrame, score: str = "eap_ig",
                   max_edges: int = MAX_EDGES, title: str = "Circuit"):
    """The circuit layer by layer: x = layer, nodes named as the other chapters (L23H4,
    MLP 5, input, logits; a key/value head feeding several query heads is L{l}KV{g}), edge
    width by |score| (blue positive: carries the clean answer; red negative), at most
    `max_edges` strongest edges, with a note of how many of how many are drawn."""
    import plotly.graph_objects as go

    shown = edges.reindex(edges[score].abs().sort_values(ascending=False).index).head(max_edges)
    used = set(shown["upstream"]) | set(shown["downstream"])
    pos = _positions(nodes[nodes["node"].isin(used)])
    top = float(shown[score].abs().max()) if len(shown) else 1.0
    fig = go.Figure()
    for row in shown.itertuples():
        (x0, y0), (x1, y1) = pos[row.upstream], pos[row.downstream]
        value = getattr(row, score)
        fig.add_trace(go.Scatter(
            x=[x0, x1], y=[y0, y1], mode="lines", showlegend=False,
            line={"width": 0.5 + 6 * abs(value) / (top or 1.0),
                  "color": "rgba(31,119,180,0.6)" if value >= 0 else "rgba(214,39,40,0.6)"},
            hovertext=f"{row.upstream} → {row.downstream} ({row.input}): {value:.3g}",
            hoverinfo="text"))
    names = list(pos)
    # labels beside their node, alternating sides by layer: dense layers stay readable
    fig.add_trace(go.Scatter(
        x=[pos[n][0] for n in names], y=[pos[n][1] for n in names], mode="markers+text",
        text=names, showlegend=False, hoverinfo="text", textfont={"size": 9},
        textposition=["middle left" if int(pos[n][0]) % 2 else "middle right" for n in names],
        marker={"size": 8, "color": "black"}))
    rows = max((sum(1 for n in names if pos[n][0] == x) for x in {p[0] for p in pos.values()}),
               default=1)
    note = f"{len(shown)} strongest of {len(edges)} circuit edges shown"
    fig.update_layout(title=f"{title}<br><sup>{note}</sup>", template="plotly_white",
                      xaxis_title="layer (input at −1, logits after the last layer)",
                      yaxis={"visible": False}, height=320 + 26 * rows,
                      margin={"l": 30, "r": 30})
    return fig
