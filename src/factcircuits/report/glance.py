"""The findings at a glance: the front page's first figure, drawn from the runs' Estimates.

Each located quantity (`results.estimates.LOCATED`) that a run estimates is a block of rows,
one row per method: a bar over the layers holding the method's peak in 95% of bootstrap
resamples and a dot at the peak, placed by relative depth (layer / (layers − 1)) so that
models of different depth share the axis. A bar's colour is the quantity's agreement verdict
(`report.sureness.checks`): the same rule as the 'How sure' list, so the figure and the list
cannot disagree. An estimate without a resampled range is a dot alone (a head's layer is
exact; older runs lack ranges). Several runs: one row per run and method, labelled 'Run N' as
in the table below it.
"""

from __future__ import annotations

from factcircuits.report.readings import by_method
from factcircuits.report.sureness import AGREE, CONFOUNDED, DISAGREE, UNRESOLVED, checks
from factcircuits.results.estimates import LOCATED, Estimate
from factcircuits.results.registry import DEPTH_LABEL
from factcircuits.results.run import Run

ALONE = "one method only"
COLOURS = {AGREE: "#2ca02c", DISAGREE: "#d62728", UNRESOLVED: "#7f7f7f",
           CONFOUNDED: "#ff7f0e", ALONE: "#1f77b4"}
LEGEND = {AGREE: "methods agree (resampled ranges overlap)",
          DISAGREE: "methods differ (ranges do not overlap)",
          UNRESOLVED: "not resolved (a range wider than a third of the model)",
          CONFOUNDED: "not comparable (a layer-0 MLP)", ALONE: "one method only"}
ROW_PX, MIN_PX = 34, 260  # a row's height and the smallest figure: legible at A4 width


def quantity_verdict(found: list) -> str:
    """One verdict for a quantity from its checks (several methods: several checks): differs
    when any pair differs, agrees when every pair agrees, else not resolved."""
    verdicts = [c.verdict for c in found]
    if not verdicts:
        return ALONE
    if DISAGREE in verdicts:
        return DISAGREE
    if all(v == AGREE for v in verdicts):
        return AGREE
    return CONFOUNDED if CONFOUNDED in verdicts else UNRESOLVED


def glance_rows(runs: list[Run]) -> list[dict]:
    """One row per (quantity, run, method) with a located layer: its label, relative depth of
    the peak and of the resampled range, the verdict and the hover text."""
    rows = []
    for quantity in LOCATED:
        for number, ev in enumerate(runs, 1):
            if not ev.n_layers or ev.n_layers < 2:
                continue
            verdict = quantity_verdict([c for c in checks(ev) if c.question == quantity])
            for e in by_method(ev.estimates(), quantity):
                if e.layer is None:
                    continue
                rows.append(_row(ev, e, quantity, verdict,
                                 f" · Run {number}" if len(runs) > 1 else ""))
    return rows


def _row(ev: Run, e: Estimate, quantity: str, verdict: str, run_label: str) -> dict:
    span = e.peak_range
    where = f"layer {e.layer}" + (f" ({e.component})" if e.component else "")
    if e.layer_range is not None:
        where += f", 95% of resamples in layers {span[0]}–{span[1]}"
    label = e.by + (f": {e.component}" if e.site == "head" and e.component else "")
    return {"quantity": quantity, "method": label + run_label,
            "peak": ev.depth(e.layer),
            "low": None if span is None else ev.depth(span[0]),
            "high": None if span is None else ev.depth(span[1]),
            "verdict": verdict, "hover": f"{quantity}<br>{e.by}: {where}<br>{verdict}"}


def glance_figure(runs: list[Run]):
    """The figure (plotly), or None when no run locates anything."""
    import plotly.graph_objects as go

    rows = glance_rows(runs)
    if not rows:
        return None
    # top to bottom in reading order: each quantity's name on a row of its own, then its
    # methods' rows (numeric positions: the first row at the top)
    slots: list[tuple[str, dict | None]] = []
    for i, r in enumerate(rows):  # rows come grouped by quantity
        if i == 0 or rows[i - 1]["quantity"] != r["quantity"]:
            slots.append((f"<b>{r['quantity'][0].upper()}{r['quantity'][1:]}</b>", None))
        slots.append((r["method"], r))
    position = {id(r): len(slots) - 1 - i for i, (_, r) in enumerate(slots) if r is not None}
    fig = go.Figure()
    for verdict, colour in COLOURS.items():
        picked = [(position[id(r)], r) for r in rows if r["verdict"] == verdict]
        if not picked:
            continue
        bars_x, bars_y = [], []
        for yi, r in picked:
            if r["low"] is not None and r["high"] is not None and r["high"] > r["low"]:
                bars_x += [r["low"], r["high"], None]
                bars_y += [yi, yi, None]
        fig.add_trace(go.Scatter(x=bars_x, y=bars_y, mode="lines", hoverinfo="skip",
                                 line={"color": colour, "width": 12}, opacity=0.4,
                                 legendgroup=verdict, showlegend=False))
        fig.add_trace(go.Scatter(x=[r["peak"] for _, r in picked], y=[yi for yi, _ in picked],
                                 mode="markers", name=LEGEND[verdict], legendgroup=verdict,
                                 marker={"color": colour, "size": 12,
                                         "line": {"color": "white", "width": 1}},
                                 hovertext=[r["hover"] for _, r in picked],
                                 hoverinfo="text"))
    height = max(MIN_PX, 210 + ROW_PX * len(slots))
    fig.update_layout(
        title={"text": "Where the methods locate the fact<br><sup>bar: layers holding the peak "
                       "in 95% of bootstrap resamples; dot: the peak;<br>colour: agreement, as "
                       "under How sure</sup>", "x": 0},
        # the right margin holds the last tick's label ("1 (last)") at the site's column width
        height=height, width=900, margin={"l": 340, "r": 50, "t": 110, "b": 130},
        legend={"orientation": "h", "yanchor": "top", "y": -120 / (height - 210), "x": 0,
                "font": {"size": 14}},
        plot_bgcolor="white", font={"size": 15})
    fig.update_xaxes(range=[-0.03, 1.03], title=DEPTH_LABEL, showgrid=True,
                     gridcolor="#e5e5e5", zeroline=False, tickvals=[0, 1 / 3, 2 / 3, 1],
                     ticktext=["0 (first)", "1/3", "2/3", "1 (last)"])
    fig.update_yaxes(tickvals=list(range(len(slots)))[::-1], ticktext=[t for t, _ in slots],
                     range=[-0.7, len(slots) - 0.3], showgrid=False, tickfont={"size": 15})
    return fig
