"""Circuits across models by relative depth (issue 33.6): where each run's mover and relation
heads sit, and the share of its circuit's edges per depth band.

Read from each run's saved circuit and head roles (the registry entry that declares them as
`Method.circuit`), placed at layer / (n_layers − 1) so that models of different depth
compare. An edge is placed at the component that writes it (its source node); edges written
by the embeddings form a band of their own. A run without the tables is listed with why.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from factcircuits.results.registry import DEPTH_LABEL, Method, methods
from factcircuits.results.run import Run

N_BANDS = 5  # fifths of the depth
EMBEDDINGS = "embeddings"
DRAWN_ROLES = ("mover", "relation")  # the roles issue 33.6 sets side by side
_ROLE_NAMES = {"mover": "mover heads", "relation": "relation heads"}
_SYMBOLS = {"mover": "circle", "relation": "diamond"}
_OFFSETS = {"mover": 0.14, "relation": -0.14}  # the two roles of a run on two lines


def band_labels(n_bands: int = N_BANDS) -> list[str]:
    """'embeddings', then '0–0.2', '0.2–0.4', …, '0.8–1' (the last band holds depth 1)."""
    edges = [round(i / n_bands, 3) for i in range(n_bands + 1)]
    return [EMBEDDINGS] + [f"{lo:g}–{hi:g}" for lo, hi in zip(edges, edges[1:])]


def band_index(depth: float, n_bands: int = N_BANDS) -> int:
    """The band (1 … n_bands; 0: embeddings) of a relative depth: [i/n, (i+1)/n), the last
    band closed at 1; depth below 0 (the embeddings, layer −1) is band 0."""
    if depth < 0:
        return 0
    # a depth on a boundary (layer 2 of 11 layers: 0.2) belongs to the band it opens
    return 1 + min(int(np.floor(depth * n_bands + 1e-9)), n_bands - 1)


@dataclass
class CircuitDepth:
    """One run's circuit by relative depth."""

    run: Run
    label: str  # 'Run 1 · model'
    n_edges: int
    bands: pd.DataFrame  # band, n_edges, share, abs_share (of the circuit's total |EAP-IG|)
    heads: pd.DataFrame | None  # node, role, layer, depth, dla, dla_low, dla_high
    no_heads: str | None = None  # why `heads` is None


def circuit_method() -> Method | None:
    """The registered method that saves the circuit compared across models."""
    return next((m for m in methods() if m.circuit is not None), None)


def edge_bands(nodes: pd.DataFrame, edges: pd.DataFrame, n_layers: int,
               n_bands: int = N_BANDS) -> pd.DataFrame:
    """Each depth band's count and share of the circuit's edges (placed at their source node's
    layer / (n_layers − 1)) and its share of their total |EAP-IG| (when scored)."""
    layer = dict(zip(nodes["name"], nodes["layer"]))
    depth = edges["source"].map(layer).astype(float) / (n_layers - 1)
    band = np.array([band_index(d, n_bands) for d in depth], dtype=int)
    counts = np.bincount(band, minlength=n_bands + 1)
    weight = (edges["eap_ig"].abs().to_numpy() if "eap_ig" in edges
              else np.ones(len(edges)))
    mass = np.bincount(band, weights=weight, minlength=n_bands + 1)
    total = max(len(edges), 1)
    return pd.DataFrame({"band": band_labels(n_bands), "n_edges": counts,
                         "share": counts / total,
                         "abs_share": mass / mass.sum() if mass.sum() else np.nan * mass})


def circuit_depth(run: Run, label: str, found: Method | None = None) -> CircuitDepth | str:
    """The run's circuit by relative depth, or why it has none to show."""
    found = found or circuit_method()
    if found is None:
        return "no registered method saves a circuit"
    if not run.has(found):
        return f"notebook {found.notebook} was not run"
    if not run.n_layers or run.n_layers < 2:
        return "the model's depth is unknown"
    graph = run.result(found, found.circuit.graph)
    if graph is None:
        return (f"no circuit was saved (results/{found.notebook}/{found.circuit.graph}/: no "
                "prompt pair could be patched)")
    nodes, edges = graph
    if not len(edges):
        return "its circuit has no edge"
    roles = run.result(found, found.circuit.roles)
    heads, why = None, None
    if roles is None:
        why = (f"no head-roles table (results/{found.notebook}/{found.circuit.roles}.csv: the "
               "run predates head roles)")
    else:
        heads = roles[roles["role"].isin(DRAWN_ROLES)].assign(
            depth=lambda t: t["layer"].astype(float) / (run.n_layers - 1))
    return CircuitDepth(run, label, len(edges), edge_bands(nodes, edges, run.n_layers), heads,
                        why)


def runs_by_depth(runs: list[Run]) -> tuple[list[CircuitDepth], list[tuple[str, str]]]:
    """The runs with a circuit to place ('Run i · model' labels, in run order) and the others
    with why: (label, reason)."""
    found, shown, missing = circuit_method(), [], []
    for i, run in enumerate(runs, 1):
        label = f"Run {i} · {run.short_model}"
        got = circuit_depth(run, label, found)
        if isinstance(got, str):
            missing.append((label, got))
        else:
            shown.append(got)
    return shown, missing


def _depths_text(heads: pd.DataFrame | None, role: str, why: str | None) -> str:
    if heads is None:
        return "– (" + (why or "no roles") + ")"
    mine = heads[heads["role"] == role].sort_values(["depth", "node"])
    if not len(mine):
        return "none"
    return ", ".join(f"{r.node} ({r.depth:.2f})" for r in mine.itertuples())


def depth_table(shown: list[CircuitDepth]) -> pd.DataFrame:
    """Per run: its circuit's edges, its mover and relation heads with their relative depth,
    and the band holding most of its edges."""
    rows = []
    for c in shown:
        top = c.bands.loc[c.bands["n_edges"].idxmax()]
        rows.append({"run": c.label, "circuit edges": c.n_edges,
                     "mover heads (depth)": _depths_text(c.heads, "mover", c.no_heads),
                     "relation heads (depth)": _depths_text(c.heads, "relation", c.no_heads),
                     "band with most edges": f"{top['band']} ({int(top['n_edges'])} of "
                                             f"{c.n_edges}, {top['share']:.0%})"})
    return pd.DataFrame(rows).set_index("run")


def depth_figure(shown: list[CircuitDepth], n_bands: int = N_BANDS):
    """Two panels on one relative-depth axis, one colour per run: above, each run's mover
    (circle) and relation (diamond) heads, one row per run (hover: the head's direct effect
    with its interval); below, the share of each run's circuit edges per band (one bar per
    run, grouped; the embeddings left of 0). None with nothing to draw."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from factcircuits.report.compare import PALETTE

    if not shown:
        return None
    width = 1 / n_bands
    centres = [-width / 2] + [(i + 0.5) * width for i in range(n_bands)]
    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12,
        row_heights=[0.45, 0.55],
        subplot_titles=["Mover and relation heads of each run's circuit",
                        "Share of each circuit's edges by the depth of the component "
                        "writing them"])
    rows = list(range(len(shown)))[::-1]  # Run 1 on top
    colours = [PALETTE[i % len(PALETTE)] for i in range(len(shown))]  # a run's, both panels
    for role in DRAWN_ROLES:  # the symbol says the role (legend entries in grey)
        fig.add_trace(go.Scatter(
            x=[None], y=[None], mode="markers", name=_ROLE_NAMES[role], legendgroup=role,
            marker={"color": "#999999", "symbol": _SYMBOLS[role], "size": 10}), row=1, col=1)
    for row, c, colour in zip(rows, shown, colours):
        for role in DRAWN_ROLES:
            heads = c.heads[c.heads["role"] == role] if c.heads is not None else ()
            if not len(heads):
                continue
            fig.add_trace(go.Scatter(
                x=heads["depth"], y=[row + _OFFSETS[role]] * len(heads), mode="markers",
                name=f"{c.label}, {_ROLE_NAMES[role]}", legendgroup=role, showlegend=False,
                hoverinfo="text",
                hovertext=[f"{c.label}: {h.node} ({role}), layer {h.layer} of "
                           f"{c.run.n_layers}, depth {h.depth:.2f}<br>direct effect (DLA) "
                           f"{h.dla:.3g} [{h.dla_low:.3g}, {h.dla_high:.3g}]"
                           for h in heads.itertuples()],
                marker={"color": colour, "symbol": _SYMBOLS[role], "size": 11,
                        "line": {"color": "#333333", "width": 1}}), row=1, col=1)
    for row, c in zip(rows, shown):  # say so where a row stays empty
        empty = (c.no_heads if c.heads is None else "no mover or relation head"
                 if not len(c.heads) else None)
        if empty:
            fig.add_annotation(x=0.5, y=row, text=empty, showarrow=False, row=1, col=1,
                               font={"size": 10, "color": "#666666"})
    for c, colour in zip(shown, colours):
        fig.add_trace(go.Bar(
            x=centres, y=c.bands["share"], name=c.label, marker_color=colour,
            customdata=np.stack([c.bands["band"], c.bands["n_edges"],
                                 np.full(len(c.bands), c.n_edges), c.bands["abs_share"]],
                                axis=1),
            hovertemplate=(f"{c.label}<br>depth %{{customdata[0]}}: %{{customdata[1]}} of "
                           "%{customdata[2]} edges (%{y:.0%}), %{customdata[3]:.0%} of the "
                           "circuit's |EAP-IG|<extra></extra>")), row=2, col=1)
    ticks = [-width / 2] + [i * width for i in range(n_bands + 1)]
    labels = [EMBEDDINGS] + [f"{t:g}" for t in (round(i * width, 3) for i in range(n_bands + 1))]
    fig.update_xaxes(range=[-width - 0.02, 1.02], tickvals=ticks, showticklabels=False,
                     row=1, col=1)
    fig.update_xaxes(range=[-width - 0.02, 1.02], tickvals=ticks, ticktext=labels,
                     title_text=DEPTH_LABEL, row=2, col=1)
    fig.update_yaxes(tickvals=rows, ticktext=[c.label for c in shown],
                     range=[-0.6, len(shown) - 0.4], row=1, col=1)
    fig.update_yaxes(title_text="share of the circuit's edges", tickformat=".0%", row=2,
                     col=1)
    for x in [i * width for i in range(n_bands + 1)]:  # the bands' boundaries
        fig.add_vline(x=x, line={"color": "#dddddd", "width": 1}, row="all", col=1)
    fig.update_layout(
        title={"text": "Circuits across models by relative depth", "x": 0, "xanchor": "left"},
        template="plotly_white", barmode="group", bargap=0.15,
        height=420 + 40 * len(shown), margin={"t": 90},
        legend={"orientation": "h", "y": -0.14, "yanchor": "top", "x": 0})
    return fig


def depth_markdown(runs: list[Run]) -> tuple[str, object | None]:
    """The comparison's section on circuits by depth: the text and table, and the figure (None
    when no run has a circuit to place)."""
    from factcircuits.report.page_files import markdown_table

    if circuit_method() is None:  # no registered method saves a circuit: nothing to say
        return "", None
    shown, missing = runs_by_depth(runs)
    parts = ["## Circuits across models by relative depth\n"]
    if shown:
        parts.append(
            "Each run's 80 % circuit (the circuit chapter's) placed at relative depth, "
            "layer / (layers − 1), so models of different depth compare: where its **mover** "
            "and **relation** heads sit (roles as in the methods appendix; hover for each "
            "head's direct effect with its interval), and the share of its edges in each fifth "
            "of the depth, an edge placed at the component that writes it (edges from the "
            "embeddings apart). The shares count the edges of one circuit found on the run's "
            "pairs, not estimates over resamples: how much that circuit moves under resampled "
            "pairs is its chapter's stability section.\n")
        parts.append(markdown_table(depth_table(shown)))
    if missing:
        parts.append(("Not placed: " if shown else "No run has a circuit to place: ")
                     + "; ".join(f"{label}: {why}" for label, why in missing) + ".\n")
    return "\n".join(parts), depth_figure(shown)
