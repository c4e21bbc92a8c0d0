"""Circuits across models by relative depth (issue 33.6), from hand-made runs: a 6-layer and an
11-layer model, each with a saved circuit and head roles, and a run without them."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from test_compare import retitle
from test_findings import make_run

from factcircuits.chapters import circuit as C
from factcircuits.methods.circuits.roles import COLUMNS as ROLE_COLUMNS
from factcircuits.report.circuit_depth import (
    band_index,
    band_labels,
    depth_figure,
    depth_markdown,
    depth_table,
    runs_by_depth,
)
from factcircuits.report.evidence import load_runs
from factcircuits.results.store import Results


def save_circuit(folder, edges, roles=None):
    """edges: [(source, target, eap_ig)]; node layers read from the names (input −1, 'L3H1',
    'MLP 4', logits 99); roles: [(node, role)] (every number 1.0 but the DLA's interval)."""
    def layer(name):
        if name == "input":
            return -1
        if name == "logits":
            return 99
        return int(name.split()[1]) if name.startswith("MLP") else int(name[1:].split("H")[0])

    names = list(dict.fromkeys([n for e in edges for n in e[:2]]))
    nodes = pd.DataFrame({"name": names, "kind": ["head" if n.startswith("L") else n.split()[0]
                                                  for n in names],
                          "layer": [layer(n) for n in names]})
    table = pd.DataFrame({"source": [e[0] for e in edges], "target": [e[1] for e in edges],
                          "input": "q", "eap": [e[2] for e in edges],
                          "eap_ig": [e[2] for e in edges],
                          "rank": list(range(1, len(edges) + 1))})
    out = Results(folder, C.METHOD)
    out.save("circuit", (nodes, table))
    if roles is not None:
        rows = []
        for node, role in roles:
            row = {c: 1.0 for c, kind in ROLE_COLUMNS.items() if kind == "float"}
            row |= {"node": node, "layer": layer(node), "head": int(node.split("H")[1]),
                    "role": role, "dla": 2.0, "dla_low": 1.5, "dla_high": 2.5}
            rows.append(row)
        out.save("head_roles", pd.DataFrame(rows, columns=list(ROLE_COLUMNS)))
    record = json.loads((folder / "run.json").read_text())
    record["headline"][C.METHOD.notebook] = C.METHOD.headline(n_pairs=4).to_json()
    (folder / "run.json").write_text(json.dumps(record))


def two_models(tmp_path):
    # 6 layers: depth = layer / 5; 11 layers: depth = layer / 10
    small = retitle(make_run(tmp_path, "a__d__1", notebooks=("01",)), "org/small", "d", 6)
    save_circuit(small, [("input", "L1H0", 1.0), ("L1H0", "L3H1", -1.0),  # from embeddings
                         ("L3H1", "logits", 2.0), ("MLP 5", "logits", 4.0)],
                 [("L1H0", "other"), ("L3H1", "mover"), ("L4H2", "relation")])
    deep = retitle(make_run(tmp_path, "b__d__2", notebooks=("01",)), "org/deep", "d", 11)
    save_circuit(deep, [("L2H0", "L8H1", 1.0), ("L8H1", "logits", 1.0),
                        ("L10H3", "logits", 2.0)],
                 [("L8H1", "mover"), ("L10H3", "mover"), ("L2H0", "mixed")])
    retitle(make_run(tmp_path, "c__d__3", notebooks=("01",)), "org/none", "d", 4)
    return load_runs(tmp_path)


def test_bands_are_fifths_with_the_embeddings_apart():
    assert band_labels() == ["embeddings", "0–0.2", "0.2–0.4", "0.4–0.6", "0.6–0.8", "0.8–1"]
    assert [band_index(d) for d in (-0.1, 0.0, 0.19, 0.2, 2 / 10, 0.6, 0.99, 1.0)] == \
        [0, 1, 1, 2, 2, 4, 5, 5]


def test_heads_and_edge_bands_by_relative_depth(tmp_path):
    shown, missing = runs_by_depth(two_models(tmp_path))
    assert [c.label for c in shown] == ["Run 1 · small", "Run 2 · deep"]
    assert missing == [("Run 3 · none", "notebook 08_circuit was not run")]
    small, deep = shown
    # small: sources input (embeddings), L1 (0.2), L3 (0.6), MLP 5 (1.0): one edge each
    assert small.bands["n_edges"].tolist() == [1, 0, 1, 0, 1, 1]
    assert small.bands["share"].tolist() == [0.25, 0, 0.25, 0, 0.25, 0.25]
    # |EAP-IG| 1, 1, 2, 4 of 8
    assert small.bands["abs_share"].tolist() == [0.125, 0, 0.125, 0, 0.25, 0.5]
    # deep: sources L2 (0.2), L8 (0.8), L10 (1.0)
    assert deep.bands["n_edges"].tolist() == [0, 0, 1, 0, 0, 2]
    # only mover and relation heads are placed, at layer / (n_layers − 1)
    assert dict(zip(small.heads["node"], small.heads["depth"])) == {"L3H1": 0.6, "L4H2": 0.8}
    assert dict(zip(deep.heads["node"], deep.heads["depth"])) == {"L8H1": 0.8, "L10H3": 1.0}
    table = depth_table(shown)
    assert table.loc["Run 1 · small", "mover heads (depth)"] == "L3H1 (0.60)"
    assert table.loc["Run 2 · deep", "relation heads (depth)"] == "none"
    assert table.loc["Run 2 · deep", "band with most edges"] == "0.8–1 (2 of 3, 67%)"


def test_figure_draws_each_run_and_says_why_a_run_is_missing(tmp_path):
    runs = two_models(tmp_path)
    text, fig = depth_markdown(runs)
    assert "Run 3 · none: notebook 08_circuit was not run" in text
    heads = {t.name: t for t in fig.data if t.type == "scatter" and ", " in t.name}
    assert set(heads) == {"Run 1 · small, mover heads", "Run 1 · small, relation heads",
                          "Run 2 · deep, mover heads"}
    assert list(heads["Run 2 · deep, mover heads"].x) == pytest.approx([0.8, 1.0])
    assert list(heads["Run 1 · small, relation heads"].x) == pytest.approx([0.8])
    assert heads["Run 1 · small, relation heads"].marker.symbol == "diamond"
    bars = {t.name: t for t in fig.data if t.type == "bar"}
    assert set(bars) == {"Run 1 · small", "Run 2 · deep"}
    # a run's heads and bars share its colour; the runs' colours differ
    assert heads["Run 2 · deep, mover heads"].marker.color == bars["Run 2 · deep"].marker.color
    assert bars["Run 1 · small"].marker.color != bars["Run 2 · deep"].marker.color
    assert list(bars["Run 2 · deep"].y) == pytest.approx([0, 0, 1 / 3, 0, 0, 2 / 3])
    # the embeddings' bar sits left of depth 0, the fifths at their centres
    assert list(bars["Run 1 · small"].x) == pytest.approx([-0.1, 0.1, 0.3, 0.5, 0.7, 0.9])


def test_a_run_without_head_roles_keeps_its_edge_bands(tmp_path):
    folder = retitle(make_run(tmp_path, "a__d__1", notebooks=("01",)), "org/small", "d", 6)
    save_circuit(folder, [("L1H0", "logits", 1.0)])
    (shown,), missing = runs_by_depth(load_runs(tmp_path))
    assert missing == [] and shown.heads is None and "predates head roles" in shown.no_heads
    assert shown.bands["n_edges"].tolist() == [0, 0, 1, 0, 0, 0]
    fig = depth_figure([shown])
    assert any("predates head roles" in a.text for a in fig.layout.annotations)


def test_no_circuit_anywhere_gives_no_figure(tmp_path):
    retitle(make_run(tmp_path, "a__d__1", notebooks=("01",)), "org/small", "d", 6)
    text, fig = depth_markdown(load_runs(tmp_path))
    assert fig is None and "No run has a circuit to place" in text


def test_the_comparison_page_carries_the_section_and_its_figure(tmp_path):
    from factcircuits.report.page_files import FigureWriter, comparison_markdown

    runs = two_models(tmp_path / "runs")
    writer = FigureWriter(tmp_path, "comparison", static=False)
    page = comparison_markdown(runs, writer)
    section = page[page.index("## Circuits across models by relative depth"):]
    assert "| Run 1 · small | 4 | L3H1 (0.60) | L4H2 (0.80) |" in section
    assert "Circuits across models by relative depth" in section.split("```{=html}")[1]
