"""Per-pair edge scores, circuit stability, and what relations' circuits share: the per-pair
rows reweighted equal the scores of the resampled pairs computed directly (tiny models), and
Jaccard, weighted overlap, the shared core and stability on hand-made circuits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from circuit_helpers import pairs as tiny_pairs

from factcircuits.methods.circuits import faithfulness as F
from factcircuits.methods.circuits.forward import CircuitForward
from factcircuits.methods.circuits.graph import Graph
from factcircuits.methods.circuits.per_pair import PairScores, pair_edge_scores
from factcircuits.methods.circuits.relations import (
    GroupCircuit,
    overlap_table,
    relation_study,
    shared_core,
)
from factcircuits.methods.circuits.roles import circuit_heads
from factcircuits.methods.circuits.scores import edge_scores
from factcircuits.methods.circuits.split import split_pairs
from factcircuits.methods.circuits.stability import (
    jaccard,
    set_jaccard,
    stability,
    weighted_jaccard,
)
from factcircuits.methods.uncertainty import Estimate
from factcircuits.models.tiny import tiny_model
from factcircuits.results.summary import Options

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=["llama", "gemma2"])
def lm(request):
    return tiny_model(family=request.param, seed=3)


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_reweighted_per_pair_scores_equal_scoring_the_resampled_pairs(family):
    lm = tiny_model(family=family, seed=3)
    pairs = tiny_pairs(lm)
    cf = CircuitForward(lm)
    per_pair = pair_edge_scores(lm, pairs, ig_steps=3, progress=False, forward=cf)
    assert per_pair.eap_ig.shape == (3, cf.graph.n_edges)
    whole = edge_scores(lm, pairs, ig_steps=3, progress=False, forward=cf)
    assert torch.allclose(per_pair.of().eap_ig, whole.eap_ig, atol=1e-6)
    assert torch.allclose(per_pair.of().eap, whole.eap, atol=1e-6)
    # one bootstrap resample: pair 0 twice, pair 2 once, pair 1 not at all
    counts = np.array([[2.0, 0.0, 1.0], [0.0, 3.0, 0.0]])
    for row in counts:
        drawn = [i for i, c in enumerate(row) for _ in range(int(c))]
        direct = edge_scores(lm, pairs.subset(drawn), ig_steps=3, progress=False, forward=cf)
        for method in ("eap", "eap_ig"):
            got = per_pair.reweighted(row[None], method=method)[0]
            assert (got - getattr(direct, method)).abs().max() <= 1e-6
    # a subset of rows reweighted: pair 2 twice of rows [1, 2]
    sub = per_pair.reweighted(np.array([[0.0, 2.0]]), rows=[1, 2])[0]
    assert torch.allclose(sub, per_pair.eap_ig[2], atol=1e-7)


def test_jaccard_on_hand_made_circuits():
    a = torch.tensor([1, 1, 1, 0, 0], dtype=torch.bool)
    b = torch.tensor([0, 1, 1, 1, 0], dtype=torch.bool)
    assert jaccard(a, b) == pytest.approx(2 / 4)
    assert jaccard(a, a) == 1.0
    assert jaccard(torch.zeros(5, dtype=torch.bool), torch.zeros(5, dtype=torch.bool)) == 1.0
    assert set_jaccard({"L0H1", "MLP 0", "logits"}, {"MLP 0", "logits"}) == pytest.approx(2 / 3)
    wa, wb = torch.tensor([0.5, 0.5, 0.0]), torch.tensor([0.25, 0.25, 0.5])
    # Σ min = 0.5, Σ max = 1.5
    assert weighted_jaccard(wa, wb) == pytest.approx(0.5 / 1.5)


def test_shared_core_every_then_majority():
    m = lambda *bits: torch.tensor(bits, dtype=torch.bool)  # noqa: E731
    core = shared_core({"a": m(1, 1, 0, 0), "b": m(1, 0, 1, 0), "c": m(1, 1, 1, 1)})
    assert core.rule == "every" and core.mask.tolist() == [True, False, False, False]
    core = shared_core({"a": m(1, 1, 0, 0), "b": m(0, 1, 1, 0), "c": m(0, 0, 1, 1)})
    assert core.rule == "majority" and core.needed == 2
    assert core.mask.tolist() == [False, True, True, False]
    assert core.in_circuits.tolist() == [1, 2, 2, 1]
    core = shared_core({"a": m(1, 0, 0, 0), "b": m(0, 1, 0, 0), "c": m(0, 0, 1, 0),
                        "d": m(0, 0, 0, 1)})
    assert core.rule == "majority" and core.needed == 3 and core.n_edges == 0


def hand_circuit(name, scores, k, graph):
    est = Estimate(1.0, 1.0, 1.0, 1)
    return GroupCircuit(name, np.arange(2), split_pairs(2), pd.DataFrame(), est, est, est, 1.0,
                        k, torch.zeros(graph.n_edges), scores, None)


def test_overlap_table_on_hand_made_circuits():
    g = Graph(1, 1, 1)  # edges: input→q,k,v of L0H0; input, L0H0 → MLP 0; 3 writers → logits
    table = g.edge_table()
    assert g.n_edges == 8
    a_scores = torch.zeros(8)
    a_scores[[0, 7]] = torch.tensor([3.0, -1.0])  # input→L0H0 q, MLP 0→logits
    b_scores = torch.zeros(8)
    b_scores[[7, 4]] = torch.tensor([2.0, 2.0])  # MLP 0→logits, L0H0→MLP 0 (mlp input)
    a, b = hand_circuit("a", a_scores, 2, g), hand_circuit("b", b_scores, 2, g)
    assert set(table.loc[[0, 7], "downstream"]) == {"L0H0", "logits"}
    got = overlap_table(g, [a, b]).set_index(["relation_a", "relation_b"])
    assert got.loc[("a", "b"), "edge_jaccard"] == pytest.approx(1 / 3)
    # nodes a: input, L0H0, MLP 0, logits; b: L0H0, MLP 0, logits → 3 / 4
    assert got.loc[("a", "b"), "node_jaccard"] == pytest.approx(3 / 4)
    # weights a: 0.75, 0.25 (edge 7); b: 0.5 (edge 7), 0.5 → Σ min 0.25, Σ max 0.75+0.5+0.5
    assert got.loc[("a", "b"), "weighted_overlap"] == pytest.approx(0.25 / 1.75)
    assert got.loc[("a", "a"), "edge_jaccard"] == 1.0


def test_stability_of_hand_made_per_pair_scores():
    g = Graph(1, 1, 1)
    # every pair ranks edges 0 and 1 on top: any resample's top-2 is the full sample's
    rows = torch.tensor([[5.0, 4.0, 0.1, 0, 0, 0, 0, 0]] * 6)
    same = PairScores(g, rows, rows, torch.zeros(6), torch.zeros(6), 1)
    got = stability(same, 2, n_resamples=100, seed=1)
    assert got.median == 1.0 and got.stable and got.n_resamples == 100
    assert got.chance == pytest.approx(0.25 / 1.75)  # 2 of 8 edges: q / (2 − q)
    assert got.inclusion[:2].tolist() == [1.0, 1.0] and got.inclusion[2:].sum() == 0
    # each pair puts a different edge on top: the top-1 follows whichever pair is drawn most
    rows = 5 * torch.eye(8)[:4]
    split = PairScores(g, rows, rows, torch.zeros(4), torch.zeros(4), 1)
    got = stability(split, 1, n_resamples=200, seed=1)
    assert got.median < 0.8 and not got.stable
    assert got.inclusion.sum() == pytest.approx(1.0)  # one edge per resample
    assert 0 < float(got.inclusion[0]) < 1
    # frequencies are exact multiples of 1 / resamples (in float32, 19 / 20 < 0.95)
    np.testing.assert_allclose(got.inclusion * 200, (got.inclusion * 200).round(), atol=1e-9)
    assert got.inclusion.dtype == torch.float64


def test_relation_study_on_a_tiny_model(lm):
    pairs = tiny_pairs(lm)
    study = relation_study(lm, pairs, min_pairs=1, ig_steps=2, seed=0,
                           stability_resamples=20, sizes=(10, 50, 100), progress=False)
    assert study.circuits == []  # one relation: the run's circuit is its circuit
    pooled = study.pooled
    assert pooled.split.kind == "cross-fitted" and len(pooled.faithfulness) == 3
    # the full graph is the full model: faithfulness 1 at 100 %
    assert pooled.faithfulness["faithfulness"].iloc[-1] == pytest.approx(1.0, abs=1e-5)
    assert pooled.edges_for_80 is not None and int(pooled.mask.sum()) == pooled.edges_for_80
    assert torch.equal(pooled.mask, F.top_k(study.scores.of().eap_ig, pooled.edges_for_80))
    assert pooled.stability is None  # 3 pairs: too few to resample


def test_two_relations_with_the_same_pairs_share_their_whole_circuit(lm):
    # relations a and b hold copies of the same three pairs: same scores, same circuits
    pairs = tiny_pairs(lm).subset([0, 1, 2, 0, 1, 2])
    pairs.rows["relation"] = ["a"] * 3 + ["b"] * 3
    study = relation_study(lm, pairs, min_pairs=3, ig_steps=2, seed=0,
                           stability_resamples=20, sizes=(10, 50, 100), progress=False)
    a, b = study.circuits
    assert (a.name, b.name) == ("a", "b")
    assert torch.allclose(a.eap_ig, b.eap_ig) and a.edges_for_80 == b.edges_for_80
    pooled = study.pooled  # 6 pairs: resampled, unless its circuit is the whole graph
    if pooled.edges_for_80 < study.graph.n_edges:
        assert pooled.stability.n_resamples == 20 and pooled.stability.k == pooled.edges_for_80
    else:
        assert pooled.stability is None
    assert a.stability is None  # 3 pairs each
    assert (study.overlap[["edge_jaccard", "node_jaccard", "weighted_overlap"]]
            .to_numpy() == pytest.approx(1.0))
    assert study.core.rule == "every" and torch.equal(study.core.mask, a.mask)
    row = study.core_table.set_index("relation").loc["a"]
    assert row["own_edges"] == 0 and row["unique_edges"] == 0
    assert row["core_faithfulness"] == pytest.approx(row["circuit_faithfulness"])


def chapter_run(folder, found):
    from factcircuits.chapters import relation_circuits as chapter
    from factcircuits.results.run import Run
    from factcircuits.results.store import Results

    found.save(Results(folder, chapter.METHOD))
    return Run.in_progress(folder)


def test_findings_say_what_the_saved_numbers_support(lm, tmp_path):
    from factcircuits.chapters import relation_circuits as chapter
    from factcircuits.results.registry import CIRCUITS

    pairs = tiny_pairs(lm).subset([0, 1, 2, 0, 1, 2])
    pairs.rows["relation"] = ["a"] * 3 + ["b"] * 3
    pairs.rows["prompt"] = pairs.prompts  # what the drawn circuit's head roles read
    pairs.rows["subject"] = [p.split()[-2] for p in pairs.prompts]
    found = chapter.summarise(lm, pairs, options=Options(
        chapter.METHOD, min_pairs=3, ig_steps=2, seed=0, stability_resamples=20))
    assert set(zip(found.roles["layer"], found.roles["head"])) == set(
        circuit_heads(found.drawing.nodes))
    h = found.headline
    assert h.n_relations == 2 and h.n_relations_searched == 2 and h.core_rule == "every"
    findings = chapter.relation_findings(chapter_run(tmp_path, found))
    assert {f.section for f in findings} == {CIRCUITS} and len(findings) == 3
    stab, by_relation, shared = (f.text for f in findings)
    assert f"median Jaccard {h.stability_median:.2f}" in stab
    assert ("not stable at this sample size" in stab) == (h.stability_median < 0.8)
    assert "a (3 pairs)" in by_relation and "b (3 pairs)" in by_relation
    assert "edge Jaccard 1.00–1.00" in shared and "in every relation's circuit" in shared
    carried = int((found.study.core_table["core_low"] >= 0.8).sum())
    assert f"clears 0.8 for {carried} of 2 relations" in shared


def test_findings_of_a_single_relation_say_there_is_no_overlap(tmp_path):
    from factcircuits.chapters import relation_circuits as chapter
    from factcircuits.results.run import Run
    from factcircuits.results.store import Results

    Results(tmp_path, chapter.METHOD).headline(chapter.RelationCircuitsHeadline(
        n_pairs=12, n_relations=1, n_relations_searched=0, split="cross-fitted",
        edges_for_80=40, stability_median=0.5, stability_range=[0.3, 0.7],
        stability_resamples=100))
    texts = [f.text for f in chapter.relation_findings(Run.in_progress(tmp_path))]
    assert "not stable at this sample size" in texts[0] and "0.30–0.70" in texts[0]
    assert "one relation, so there is no per-relation circuit or overlap" in texts[1]


def test_the_pages_tables_put_each_number_beside_its_interval():
    import pandas as pd

    from factcircuits.chapters.relation_circuits import core_view, relations_view

    rel = pd.DataFrame([{"relation": "country_language", "n_pairs": 8, "split": "cross-fitted",
                         "edges_for_80": 1413, "faithfulness_for_80": 0.8812,
                         "faithfulness_low": 0.81, "faithfulness_high": 1.0, "cpr": 0.97,
                         "cpr_low": 0.94, "cpr_high": 0.995, "stability_median": 0.544,
                         "stability_low": float("nan"), "stability_high": 0.72,
                         "stable": False}])
    row = relations_view(rel).iloc[0]
    assert row["faithfulness"] == "0.88 [0.81, 1.00]" and row["CPR"] == "0.97 [0.94, 0.99]"
    assert row["stability (median Jaccard)"] == "0.54"  # no interval when an end is missing
    assert row["stable"] == "no" and row["edges (80 %)"] == 1413
    core = pd.DataFrame([{"relation": "r", "n_pairs": 5, "circuit_edges": 10, "own_edges": 4,
                          "unique_edges": 2, "core_faithfulness": 0.5, "core_low": 0.25,
                          "core_high": 0.75, "circuit_faithfulness": 0.9,
                          "circuit_low": 0.8, "circuit_high": 1.0}])
    assert core_view(core).iloc[0]["core alone"] == "0.50 [0.25, 0.75]"
