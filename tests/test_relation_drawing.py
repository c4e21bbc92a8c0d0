"""Notebook 09 draws the run's circuit with chapter 08's figure, each edge's bootstrap inclusion
frequency on hover (issue 33.2/33.5): the drawn circuit is the group's saved top-k circuit and
each edge's hover shows its own inclusion frequency (tiny model)."""

from __future__ import annotations

import numpy as np
import pytest
from circuit_helpers import pairs as tiny_pairs

from factcircuits.chapters import relation_circuits as chapter
from factcircuits.methods.circuits import faithfulness as F
from factcircuits.methods.circuits.figures import interactive_circuit_figure
from factcircuits.methods.circuits.relation_figures import inclusion_figure
from factcircuits.models.tiny import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def found():
    lm = tiny_model(family="llama", seed=3)
    pairs = tiny_pairs(lm).subset([0, 1, 2, 0, 1, 2])  # 6 pairs: enough to resample
    pairs.rows["relation"] = ["a"] * 3 + ["b"] * 3
    # a size grid whose 80 % circuit is below the whole graph, so that it is resampled
    study = chapter.relation_study(lm, pairs, min_pairs=3, ig_steps=2, seed=0,
                                   stability_resamples=20, sizes=(2, 5, 10, 20, 50, 100),
                                   progress=False)
    return study


def test_the_drawing_is_the_saved_circuit_with_its_inclusion_frequencies(found):
    study = found
    pooled = study.pooled
    assert pooled.stability is not None, "the fixture's circuit should be resampled"
    drawing = chapter.circuit_drawing(study, pooled)
    k = pooled.edges_for_80
    # the top-k circuit by the pooled |EAP-IG|, ranked 1 … k
    expected = np.flatnonzero(F.top_k(pooled.eap_ig, k).numpy())
    assert sorted(drawing.circuit_edges.index) == expected.tolist()
    assert drawing.circuit_edges["rank"].tolist() == list(range(1, k + 1))
    # the saved graph's inclusion column (edge order) is the drawing's, edge for edge
    _, saved = chapter.circuits_graph(study)
    saved = saved[saved["relation"] == pooled.name]
    assert saved["inclusion"].to_numpy() == pytest.approx(
        drawing.inclusion.loc[expected].to_numpy())
    assert drawing.steps[-1][0] == k and [n for n, _ in drawing.steps] == \
        sorted(n for n, _ in drawing.steps)
    # nodes: every endpoint of the circuit's edges, nothing else
    ends = set(drawing.circuit_edges["upstream"]) | set(drawing.circuit_edges["downstream"])
    assert set(drawing.nodes["node"]) == ends

    fig = interactive_circuit_figure(drawing.edges, drawing.nodes, drawing.steps,
                                     inclusion=drawing.inclusion, active=-1)
    hover = [t for t in fig.data if t.visible and t.customdata is not None]
    assert len(hover) == 1 and "bootstrap circuits" in hover[0].hovertemplate
    table = study.graph.edge_table()  # an edge's index from its names, independently
    index = {(u, d, i): e for e, (u, d, i) in
             enumerate(zip(table["upstream"], table["downstream"], table["input"]))}
    inclusion = pooled.stability.inclusion.numpy()
    for up, down, kind, *_, freq in hover[0].customdata:
        assert freq == pytest.approx(inclusion[index[(up, down, kind)]])
    assert len(hover[0].customdata) == k


def test_inclusion_figure_shows_every_resampled_circuit(found):
    _, edges = chapter.circuits_graph(found)
    fig = inclusion_figure(edges)
    groups = [c.name for c in [found.pooled, *found.circuits]
              if c.mask is not None and c.stability is not None]
    assert [t.name for t in fig.data] == groups
    for trace, name in zip(fig.data, groups):
        part = edges[edges["relation"] == name]
        values = trace.x if trace.type == "histogram" else trace.y
        assert sorted(values) == pytest.approx(sorted(part["inclusion"]))
    # several circuits: one violin each; a circuit without resamples is not drawn
    assert [t.type for t in fig.data] == (["histogram"] if len(groups) == 1 else
                                          ["violin"] * len(groups))
    one = inclusion_figure(edges, [found.pooled.name])
    assert [t.type for t in one.data] == ["histogram"]


def test_inclusion_figure_of_several_circuits_is_a_violin_each():
    import pandas as pd

    edges = pd.DataFrame({"relation": ["all pairs"] * 3 + ["a"] * 2 + ["b"] * 2,
                          "inclusion": [1.0, 0.9, 0.2, 0.5, 1.0, np.nan, np.nan]})
    fig = inclusion_figure(edges)  # b was not resampled: left out
    assert [(t.type, t.name) for t in fig.data] == [("violin", "all pairs"), ("violin", "a")]
    assert list(fig.data[1].y) == [0.5, 1.0]


def relations_row(name, n_pairs, f, low, high, median=None, s_low=None, s_high=None):
    return {"relation": name, "n_pairs": n_pairs, "split": "held-out", "edges_for_80": 19,
            "size_for_80": 10.0, "faithfulness_for_80": f, "faithfulness_low": low,
            "faithfulness_high": high, "cpr": 0.9, "cpr_low": 0.8, "cpr_high": 1.0,
            "cmd": 0.1, "cmd_low": 0.0, "cmd_high": 0.2,
            "stability_median": median if median is not None else np.nan,
            "stability_low": s_low if s_low is not None else np.nan,
            "stability_high": s_high if s_high is not None else np.nan,
            "stability_chance": 0.05, "stable": median is not None and median >= 0.8}


def test_relation_findings_give_each_circuit_its_interval_and_its_stability(tmp_path):
    """Issue 33.7: each relation's faithfulness with its interval and whether that interval
    clears 0.8 (reaching 0.8 is the point estimate's), each stability median with its 95 %
    range of resamples, and the verdict only as strong as the median's bar."""
    import pandas as pd

    from factcircuits.results.registry import CIRCUITS
    from factcircuits.results.run import Run
    from factcircuits.results.store import Results

    rows = [relations_row(chapter.POOLED, 30, 0.9, 0.85, 0.95, 0.9, 0.8, 0.97),
            relations_row("capital", 15, 0.95, 0.82, 1.05, 0.85, 0.7, 0.95),
            relations_row("language", 15, 1.75, -5.0, 9.0, 0.46, 0.36, 1.0),
            relations_row("colour", 6, 0.9, 0.1, 1.2)]  # too few pairs to resample
    out = Results(tmp_path, chapter.METHOD)
    out.save("relations", pd.DataFrame(rows, columns=list(chapter.RELATIONS_COLUMNS)))
    out.headline(chapter.METHOD.headline(split="held-out", n_pairs=30, n_relations=3,
                                         n_relations_searched=3, min_pairs=5,
                                         stability_resamples=100))
    findings = chapter.relation_findings(Run.in_progress(tmp_path))
    (by_relation,) = [f.text for f in findings if f.section == CIRCUITS]
    assert "capital (15 pairs) 19 edges, 0.95 (95% CI 0.82 to 1.05)" in by_relation
    assert "The interval's lower end clears 0.8 for 1 of these 3." in by_relation
    assert ("capital 0.85 (0.70–0.95), language 0.46 (0.36–1.00); 1 of 2 are stable "
            "(median ≥ 0.8), the others not stable at this sample size.") in by_relation
    assert "colour 0." not in by_relation.split("Stability")[1]  # not resampled: not listed
