"""Plotly figures of notebook 08: the faithfulness curve and the circuit drawn layer by layer."""

from __future__ import annotations

import math

import pandas as pd

from factcircuits.methods.circuits.faithfulness import THRESHOLD
from factcircuits.results.parameter_declarations import whole

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


STATIC_WIDTH = 900  # px: the PDF's images are this wide (`run.display.PNG_WIDTH`)
_MARGIN = {"l": 150, "r": 20, "t": 95, "b": 20}  # px; row names sit in the left margin
NOT_A_HEAD = "not a head"  # input, MLPs, logits, key/value reader inputs
_FILLS = {"mover": "#f4a3a3", "relation": "#a9c9ef", "mixed": "#d2bde8", "other": "#e3e3e3",
          NOT_A_HEAD: "#ffffff"}
_WIDTHS = (1.0, 2.2, 3.6, 5.2)  # edge widths by quarter of the largest |score| drawn


def strongest(edges: pd.DataFrame, score: str, k: int) -> pd.DataFrame:
    """The k edges with the largest |score| (ties kept in table order)."""
    return edges.reindex(edges[score].abs().sort_values(ascending=False, kind="stable")
                         .index).head(k)


def node_roles(nodes: pd.DataFrame, roles: pd.DataFrame | None) -> dict[str, str]:
    """Each node's colour group: a head's role (`roles.role_table`), else NOT_A_HEAD; a head
    without a row (no roles computed) is "other"."""
    known = dict(zip(roles["node"], roles["role"])) if roles is not None and len(roles) else {}
    return {name: known.get(name, "other") if kind == "head" else NOT_A_HEAD
            for name, kind in zip(nodes["node"], nodes["kind"])}


def rest_summary(edges: pd.DataFrame, shown: pd.DataFrame, score: str = "eap_ig") -> str:
    """What the drawing leaves out: how many edges, their share of the circuit's total |score|
    and how many nodes only they touch."""
    rest = edges.drop(shown.index)
    if not len(rest):
        return f"all {len(edges):,} circuit edges drawn"
    total = float(edges[score].abs().sum())
    share = float(rest[score].abs().sum()) / total if total else float("nan")
    drawn = set(shown["upstream"]) | set(shown["downstream"])
    hidden = (set(rest["upstream"]) | set(rest["downstream"])) - drawn
    label = {"eap_ig": "EAP-IG", "eap": "EAP"}.get(score, score)
    return (f"the {len(shown):,} strongest of {len(edges):,} circuit edges drawn; the other "
            f"{len(rest):,} hold {share:.0%} of the circuit's total |{label}| and touch "
            f"{len(hidden):,} node{'s' if len(hidden) != 1 else ''} not drawn")


_BEND = 14.0  # px sideways per row an edge passes over, so long edges leave the column


def _curve(start: tuple[float, float], end: tuple[float, float], bend: float,
           points: int = 16) -> tuple[list[float], list[float]]:
    """A quadratic Bézier from `start` to `end` whose control point sits `bend` pixels to the
    side of the midpoint (a straight line when bend is 0)."""
    (x0, y0), (x1, y1) = start, end
    cx, cy = (x0 + x1) / 2 + bend, (y0 + y1) / 2
    ts = [k / (points - 1) for k in range(points)] if bend else [0.0, 1.0]
    xs = [(1 - t) ** 2 * x0 + 2 * (1 - t) * t * cx + t ** 2 * x1 for t in ts]
    ys = [(1 - t) ** 2 * y0 + 2 * (1 - t) * t * cy + t ** 2 * y1 for t in ts]
    return xs, ys


def static_circuit_figure(nodes: pd.DataFrame, edges: pd.DataFrame,
                          roles: pd.DataFrame | None = None, score: str = "eap_ig",
                          max_edges: int = MAX_EDGES_DRAWN.default, title: str = "Circuit",
                          n_layers: int | None = None):
    """The circuit for print: the `max_edges` strongest edges, every node a box holding its
    name (`layout.layered_layout`: no label overlaps another label or box), rows from the
    input (bottom) to the logits (top), heads filled by role, edge width by |score| (blue
    carries the clean answer, red works against it); the subtitle says what is left out."""
    import plotly.graph_objects as go

    from factcircuits.methods.circuits.layout import FONT_FAMILY, FONT_SIZE, layered_layout

    shown = strongest(edges, score, max_edges)
    used = set(shown["upstream"]) | set(shown["downstream"])
    drawn = nodes[nodes["node"].isin(used)]
    width = STATIC_WIDTH - _MARGIN["l"] - _MARGIN["r"]
    lay = layered_layout(drawn, shown, width, n_layers)
    group = node_roles(drawn, roles)
    top = float(shown[score].abs().max()) if len(shown) else 1.0
    height = math.ceil(lay.height)
    fig = go.Figure()
    rows_y = sorted({b.y0 for b in lay.boxes.values()})
    for i, row in enumerate(shown.itertuples()):
        up, down = lay.boxes[row.upstream], lay.boxes[row.downstream]
        value = getattr(row, score)
        skipped = sum(1 for y in rows_y if up.y1 < y < down.y0)
        xs, ys = _curve((up.centre[0], up.y1), (down.centre[0], down.y0),
                        _BEND * skipped * (1 if i % 2 else -1))
        fig.add_trace(go.Scatter(
            x=xs, y=ys, mode="lines",
            showlegend=False, hoverinfo="skip",
            line={"width": _WIDTHS[min(int(4 * abs(value) / (top or 1.0)), 3)],
                  "color": "rgba(31,119,180,0.55)" if value >= 0 else "rgba(214,39,40,0.55)"}))
    for name, box in lay.boxes.items():
        fig.add_shape(type="rect", x0=box.x0, y0=box.y0, x1=box.x1, y1=box.y1, layer="above",
                      line={"color": "#555555", "width": 1}, fillcolor=_FILLS[group[name]])
        fig.add_annotation(x=box.centre[0], y=box.centre[1], text=name, showarrow=False,
                           font={"size": FONT_SIZE, "color": "black"})
    for role in [r for r in _FILLS if r in set(group.values())]:  # legend: one entry a role
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=role,
                                 marker={"symbol": "square", "size": 12, "color": _FILLS[role],
                                         "line": {"color": "#555555", "width": 1}}))
    fig.update_layout(
        title=f"{title}<br><sup>{rest_summary(edges, shown, score)}</sup>",
        template="plotly_white", width=STATIC_WIDTH, font={"family": FONT_FAMILY},
        height=height + 4 + _MARGIN["t"] + _MARGIN["b"], margin=_MARGIN,
        xaxis={"range": [0, lay.width], "visible": False, "fixedrange": True},
        yaxis={"range": [-2, height + 2], "fixedrange": True, "showgrid": False,
               "zeroline": False, "tickvals": [y for _, y in lay.rows],
               "ticktext": [label for label, _ in lay.rows], "tickfont": {"size": 10}},
        legend={"orientation": "h", "x": 0, "y": 1.0, "yanchor": "bottom",
                "title": {"text": "head role:"}})
    return fig


def _edge_traces(part: pd.DataFrame, pos: dict, score: str, top: float, inclusion) -> list:
    """Line traces of one circuit size (one per width and sign) and one trace of markers at
    the edges' midpoints that carries their hover text (lines hover only at their ends)."""
    import plotly.graph_objects as go

    bins = [min(int(4 * abs(v) / (top or 1.0)), 3) for v in part[score]]
    traces = []
    for sign, colour in ((1, "rgba(31,119,180,0.5)"), (-1, "rgba(214,39,40,0.5)")):
        for b, w in enumerate(_WIDTHS):
            xs, ys = [], []
            for row, bin_ in zip(part.itertuples(), bins):
                value = getattr(row, score)
                if bin_ == b and (value >= 0) == (sign > 0):
                    (x0, y0), (x1, y1) = pos[row.upstream], pos[row.downstream]
                    xs += [x0, x1, None]
                    ys += [y0, y1, None]
            if xs:
                traces.append(go.Scatter(x=xs, y=ys, mode="lines", hoverinfo="skip",
                                         showlegend=False, line={"width": w, "color": colour}))
    freq = (part.index.map(lambda i: inclusion.get(i, float("nan"))) if inclusion is not None
            else [float("nan")] * len(part))
    mids = [((pos[u][0] + pos[d][0]) / 2, (pos[u][1] + pos[d][1]) / 2)
            for u, d in zip(part["upstream"], part["downstream"])]
    custom = list(zip(part["upstream"], part["downstream"], part["input"], part["eap_ig"],
                      part["eap"], part["rank"], freq))
    stable = "<br>in %{customdata[6]:.0%} of the bootstrap circuits" if inclusion is not None \
        else ""
    traces.append(go.Scatter(
        x=[m[0] for m in mids], y=[m[1] for m in mids], mode="markers", showlegend=False,
        marker={"size": 7, "color": "rgba(90,90,90,0.25)"}, customdata=custom,
        hovertemplate=("%{customdata[0]} → %{customdata[1]} (%{customdata[2]} input)<br>"
                       "EAP-IG %{customdata[3]:.4g} (rank %{customdata[5]})<br>"
                       "EAP %{customdata[4]:.4g}" + stable + "<extra></extra>")))
    return traces


def _node_traces(names: list[str], pos: dict, group: dict, roles: pd.DataFrame | None) -> list:
    """One marker trace per colour group, with each head's numbers on hover."""
    import plotly.graph_objects as go

    info = roles.set_index("node") if roles is not None and len(roles) else None

    def hover(name):
        if info is None or name not in info.index:
            return name
        r = info.loc[name]
        return (f"{name}: {r['role']}<br>direct effect (DLA) {r['dla']:.3g} "
                f"[{r['dla_low']:.3g}, {r['dla_high']:.3g}]<br>through the subject "
                f"{r['subject_share']:.0%}, the relation {r['relation_share']:.0%}<br>"
                f"attention to the subject {r['attn_subject']:.0%}, the relation "
                f"{r['attn_relation']:.0%}")
    traces = []
    for role, fill in _FILLS.items():
        mine = [n for n in names if group[n] == role]
        if mine:
            traces.append(go.Scatter(
                x=[pos[n][0] for n in mine], y=[pos[n][1] for n in mine], mode="markers",
                name=role, legendgroup=role, text=[hover(n) for n in mine], hoverinfo="text",
                marker={"size": 11, "color": fill, "line": {"color": "#333333", "width": 1}}))
    return traces


def interactive_circuit_figure(edges: pd.DataFrame, nodes: pd.DataFrame,
                               sizes: list[tuple[int, str]], roles: pd.DataFrame | None = None,
                               inclusion: pd.Series | None = None, score: str = "eap_ig",
                               title: str = "Circuit", active: int = -1):
    """The circuit for the site: x = layer, nodes coloured by role with their numbers on
    hover, edges with their EAP-IG and EAP scores (and, given `inclusion`, indexed like
    `edges`, the share of bootstrap circuits holding each) on hover at their midpoints, and a
    slider over `sizes` ((n_edges, label), ascending; the top n edges by `rank`); `nodes` are
    those of the largest size, placed once so that nodes keep their places; `active`: the
    size shown first (index into `sizes`)."""
    import plotly.graph_objects as go

    pos = _positions(nodes)
    group = node_roles(nodes, roles)
    ranked = edges.sort_values("rank")
    fig, groups = go.Figure(), []
    for n, _ in sizes:
        part = ranked.head(n)
        top = float(part[score].abs().max()) if len(part) else 1.0
        names = [m for m in pos if m in set(part["upstream"]) | set(part["downstream"])]
        traces = (_edge_traces(part, pos, score, top, inclusion)
                  + _node_traces(names, pos, group, roles))
        groups.append(range(len(fig.data), len(fig.data) + len(traces)))
        fig.add_traces(traces)
    active = range(len(sizes))[active]
    steps = []
    for i, (n, label) in enumerate(sizes):
        visible = [False] * len(fig.data)
        for t in groups[i]:
            visible[t] = True
        steps.append({"method": "update", "label": label,
                      "args": [{"visible": visible}, {"title.text": f"{title}<br><sup>the top "
                                                      f"{n:,} edges by |EAP-IG|</sup>"}]})
    for t, trace in enumerate(fig.data):
        trace.visible = t in groups[active]
    rows = max((sum(1 for p in pos.values() if p[0] == x) for x in {p[0] for p in pos.values()}),
               default=1)
    fig.update_layout(
        title=f"{title}<br><sup>the top {sizes[active][0]:,} edges by |EAP-IG|</sup>",
        template="plotly_white", height=380 + 22 * rows, hovermode="closest",
        xaxis_title="layer (input at −1, logits after the last layer)",
        yaxis={"visible": False}, legend={"title": {"text": "head role"}},
        sliders=[{"active": active, "steps": steps, "currentvalue": {"prefix": "circuit: "},
                  "pad": {"t": 40}}])
    return fig


def size_steps(faithfulness: pd.DataFrame, k: int, f_k: float | None = None
               ) -> list[tuple[int, str]]:
    """The slider's circuit sizes: EAP-IG's top-k sizes on the faithfulness grid smaller than
    the drawn circuit's k edges, then k itself, each labelled with its faithfulness on the
    evaluation pairs (`f_k`: the k-edge circuit's, when known)."""
    grid = faithfulness[(faithfulness["method"] == "EAP-IG")
                        & (faithfulness["variant"] == "top-k")
                        & (faithfulness["n_edges"] < k) & (faithfulness["n_edges"] > 0)]
    steps = [(int(r.n_edges), f"{int(r.n_edges):,} edges (f = {r.faithfulness:.2f})")
             for r in grid.sort_values("n_edges").itertuples()]
    last = f"{k:,} edges" + (f" (f = {f_k:.2f})" if f_k is not None else "")
    return steps + [(k, last)]
