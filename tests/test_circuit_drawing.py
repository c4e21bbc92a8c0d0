"""The circuit drawings (methods/circuits/layout.py, figures.py): in the static drawing no
label box overlaps another (a naive layer-by-column layout of the same circuits does, so the
check can fail), the drawing keeps to its edge budget and says what it leaves out; the
interactive figure switches sizes and carries each edge's scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from factcircuits.methods.circuits import figures as FG
from factcircuits.methods.circuits.graph import Graph
from factcircuits.methods.circuits.layout import (
    Box,
    label_size,
    layered_layout,
    overlapping,
)
from factcircuits.methods.circuits.summary import node_frame


def _circuit(n_layers: int, n_heads: int, n_kv: int, n_edges: int, seed: int,
             into_layer: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A random circuit of a model's graph: n_edges edges with random signed scores (all
    into the attention of `into_layer` when given: one very wide row)."""
    table = Graph(n_layers, n_heads, n_kv).edge_table()
    if into_layer is not None:
        table = table[(table["downstream_layer"] == into_layer) & (table["input"] != "mlp")]
    rng = np.random.default_rng(seed)
    picked = table.iloc[rng.choice(len(table), n_edges, replace=False)].copy()
    picked["eap_ig"] = rng.normal(size=n_edges)
    picked["eap"] = picked["eap_ig"] + rng.normal(scale=0.1, size=n_edges)
    picked["rank"] = picked["eap_ig"].abs().rank(ascending=False, method="first").astype(int)
    return node_frame(Graph(n_layers, n_heads, n_kv), picked), picked


CIRCUITS = {  # SmolLM2's shape (30 layers, 9 heads, 3 KV heads), a wide row, a small model
    "smollm2": (30, 9, 3, 60, 0, None),
    "wide row": (4, 32, 8, 60, 1, 3),
    "small": (3, 4, 2, 12, 2, None),
}


@pytest.mark.parametrize("name", CIRCUITS)
def test_no_label_box_overlaps_another(name):
    nodes, edges = _circuit(*CIRCUITS[name])
    width = 730
    lay = layered_layout(nodes, edges, width)
    assert set(lay.boxes) == set(nodes["node"])
    assert overlapping(lay.boxes.values()) == []
    for box in lay.boxes.values():  # inside the canvas, and each label fits its box
        assert 0 <= box.x0 < box.x1 <= width and 0 <= box.y0 < box.y1 <= lay.height
        assert box.x1 - box.x0 >= label_size(box.name)[0] - 1e-9
    # every edge runs upward: from a lower row to a higher one
    for up, down in zip(edges["upstream"], edges["downstream"]):
        assert lay.boxes[up].y1 <= lay.boxes[down].y0


def _naive_boxes(nodes: pd.DataFrame, width: float, row_height: float = 20) -> list[Box]:
    """The label boxes of the earlier diagram: x = layer spread over the canvas, y = rank in
    the layer, each label beside its node."""
    layers = sorted(nodes["layer"].unique())
    step = width / max(len(layers) - 1, 1)
    boxes = []
    for i, layer in enumerate(layers):
        names = sorted(nodes.loc[nodes["layer"] == layer, "node"])
        for j, name in enumerate(names):
            w, h = label_size(name)
            x, y = i * step, j * row_height
            boxes.append(Box(name, x, y, x + w, y + h))
    return boxes


@pytest.mark.parametrize("name", ["smollm2", "wide row"])
def test_a_naive_layout_of_the_same_circuit_overlaps(name):
    nodes, _ = _circuit(*CIRCUITS[name])
    assert overlapping(_naive_boxes(nodes, 730))


def test_overlap_by_hand():
    a = Box("a", 0, 0, 10, 10)
    assert a.overlaps(Box("b", 9, 9, 20, 20))
    assert not a.overlaps(Box("c", 10, 0, 20, 10))  # touching edges do not overlap
    assert not a.overlaps(Box("d", 0, 10.5, 10, 20))


def test_static_figure_keeps_its_edge_budget_and_says_what_is_left_out():
    nodes, edges = _circuit(*CIRCUITS["smollm2"])
    roles = pd.DataFrame({"node": [n for n in nodes["node"] if "H" in n and "KV" not in n]})
    roles["role"] = ["mover", "relation", "mixed", "other"] * (len(roles) // 4) + \
        ["other"] * (len(roles) % 4)
    fig = FG.static_circuit_figure(nodes, edges, roles, max_edges=25)
    lines = [t for t in fig.data if t.mode == "lines"]
    assert len(lines) == 25
    shown = FG.strongest(edges, "eap_ig", 25)
    rest = edges.drop(shown.index)
    share = rest["eap_ig"].abs().sum() / edges["eap_ig"].abs().sum()
    assert (f"the 25 strongest of 60 circuit edges drawn; the other 35 hold {share:.0%}"
            in fig.layout.title.text)
    drawn = set(shown["upstream"]) | set(shown["downstream"])
    assert len(fig.layout.shapes) == len(drawn)
    assert {a.text for a in fig.layout.annotations} == drawn
    fills = {a.text: s.fillcolor for a, s in zip(fig.layout.annotations, fig.layout.shapes)}
    role_of = dict(zip(roles["node"], roles["role"]))
    for node, fill in fills.items():
        assert fill == FG._FILLS[role_of.get(node, FG.NOT_A_HEAD)]
    # one data unit is one pixel, so the layout's boxes are the drawn ones
    plot_w = fig.layout.width - fig.layout.margin.l - fig.layout.margin.r
    plot_h = fig.layout.height - fig.layout.margin.t - fig.layout.margin.b
    assert plot_w == pytest.approx(np.diff(fig.layout.xaxis.range)[0])
    assert plot_h == pytest.approx(np.diff(fig.layout.yaxis.range)[0])


def test_interactive_figure_switches_size_and_carries_the_scores():
    nodes, edges = _circuit(*CIRCUITS["smollm2"])
    sizes = [(10, "10 edges"), (30, "30 edges"), (60, "60 edges")]
    inclusion = pd.Series(0.5, index=edges.index)
    fig = FG.interactive_circuit_figure(edges, nodes, sizes, inclusion=inclusion)
    [slider] = fig.layout.sliders
    assert [s.label for s in slider.steps] == ["10 edges", "30 edges", "60 edges"]
    assert slider.active == 2
    for (n, _), step in zip(sizes, slider.steps):
        visible = [fig.data[i] for i, v in enumerate(step.args[0]["visible"]) if v]
        [hover] = [t for t in visible if t.customdata is not None]
        assert len(hover.customdata) == n
        assert sorted(int(c[5]) for c in hover.customdata) == list(range(1, n + 1))
        assert "EAP-IG" in hover.hovertemplate and "bootstrap" in hover.hovertemplate
        top = edges.sort_values("rank").iloc[0]
        first = [c for c in hover.customdata if int(c[5]) == 1][0]
        assert first[3] == pytest.approx(top["eap_ig"]) and first[4] == pytest.approx(top["eap"])
    # what is visible at first is the last size, or the one asked for
    assert [t.visible for t in fig.data] == list(slider.steps[2].args[0]["visible"])
    first = FG.interactive_circuit_figure(edges, nodes, sizes, active=0)
    assert first.layout.sliders[0].active == 0
    assert [t.visible for t in first.data] == list(slider.steps[0].args[0]["visible"])
