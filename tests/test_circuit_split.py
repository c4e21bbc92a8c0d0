"""Circuits judged out of sample and against chance: the seeded discovery/evaluation split (or
cross-fitting), no edge scored on a pair that judges it, and the random-circuit baseline (a
uniform draw of k edges; 1 at the full graph, 0 at the empty one; its headline numbers by hand)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from circuit_helpers import pairs

from factcircuits.methods.circuits import faithfulness as F
from factcircuits.methods.circuits import summary as S
from factcircuits.methods.circuits.graph import Graph
from factcircuits.methods.circuits.headline import build_headline
from factcircuits.methods.circuits.scores import edge_scores
from factcircuits.methods.circuits.split import PairSplit, split_pairs
from factcircuits.models.tiny import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lm():
    return tiny_model(family="gemma2", seed=3)


# ------------------------------------------------------------------ the split rule
def test_twenty_pairs_are_split_in_two_seeded_halves():
    split = split_pairs(20, seed=4)
    assert split.kind == "held-out" and len(split.folds) == 1
    fold = split.folds[0]
    assert len(fold.discovery) == len(fold.evaluation) == 10
    assert not set(fold.discovery) & set(fold.evaluation)
    assert sorted([*fold.discovery, *fold.evaluation]) == list(range(20))
    again = split_pairs(20, seed=4).folds[0]
    assert list(again.discovery) == list(fold.discovery)  # the seed fixes the split
    assert any(list(split_pairs(20, seed=s).folds[0].discovery) != list(fold.discovery)
               for s in range(5, 8))
    odd = split_pairs(21, seed=0).folds[0]  # the evaluation half is the larger one
    assert (len(odd.discovery), len(odd.evaluation)) == (10, 11)


@pytest.mark.parametrize("n", [2, 7, 19])
def test_fewer_than_twenty_pairs_are_cross_fitted(n):
    split = split_pairs(n, seed=0)
    assert split.kind == "cross-fitted" and split.n_discovery is None
    (a, b), (b2, a2) = [(f.discovery, f.evaluation) for f in split.folds]
    assert list(a) == list(a2) and list(b) == list(b2)  # each fold judges the other's circuits
    assert not set(a) & set(b) and sorted([*a, *b]) == list(range(n))
    assert sorted(split.evaluation) == list(range(n))  # every pair evaluated exactly once
    assert split.fold_sizes == [n // 2, n - n // 2]


def test_one_pair_is_judged_in_sample_and_none_is_an_error():
    split = split_pairs(1)
    assert split.kind == "in-sample" and list(split.evaluation) == [0]
    with pytest.raises(ValueError):
        split_pairs(0)
    assert split_pairs(4, min_per_half=2).kind == "held-out"  # the rule: n ≥ 2 × min_per_half


# ------------------------------------------------------------------ no leak
class _Spy:
    """Records the clean prompts each edge scoring and each evaluation sees, in call order."""

    def __init__(self, monkeypatch):
        self.scored, self.judged = [], []
        real_scores, real_evaluator = S.edge_scores, F.Evaluator
        spy = self

        def scores(lm, prepared, **kw):
            spy.scored.append(list(prepared.prompts))
            return real_scores(lm, prepared, **kw)

        class Evaluator(real_evaluator):
            def __init__(self, lm, prepared, *a, **kw):
                spy.judged.append(list(prepared.prompts))
                super().__init__(lm, prepared, *a, **kw)

        monkeypatch.setattr(S, "edge_scores", scores)
        monkeypatch.setattr(F, "Evaluator", Evaluator)


@pytest.mark.parametrize("min_per_half", [1, 10], ids=["held-out", "cross-fitted"])
def test_no_edge_is_scored_on_a_pair_that_judges_it(lm, monkeypatch, min_per_half):
    task = pairs(lm)
    spy = _Spy(monkeypatch)
    found = S.circuit_summary(lm, task, progress=False, random_draws=2,
                              min_per_half=min_per_half, seed=1)
    split = found.split
    assert len(spy.scored) == len(spy.judged) == len(split.folds)
    for scored, judged in zip(spy.scored, spy.judged):
        assert scored and judged and not set(scored) & set(judged)
    judged = [p for fold in spy.judged for p in fold]
    assert sorted(judged) == sorted({task.prompts[i] for i in split.evaluation})
    assert found.headline.n_evaluation_pairs == len(judged)
    monkeypatch.undo()
    if split.kind == "held-out":
        # the scores shown are those of the discovery pairs alone
        alone = edge_scores(lm, task.subset(split.folds[0].discovery), progress=False)
        assert found.headline.n_discovery_pairs == len(split.folds[0].discovery)
    else:
        # the two folds' scores, weighted by their sizes, are the scores of every pair
        alone = edge_scores(lm, task, progress=False)
        assert found.headline.fold_pairs == [len(f.discovery) for f in split.folds]
    torch.testing.assert_close(found.scores.eap_ig, alone.eap_ig, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(found.scores.eap, alone.eap, atol=1e-6, rtol=1e-4)


def test_cross_fitted_faithfulness_pools_each_pair_under_the_other_folds_circuit(lm):
    """Recomputed by hand for one size: every pair under the top-k circuit chosen on the fold
    it is not in, then (mean m − mean m(∅)) / (mean m(full) − mean m(∅)) over all pairs."""
    task = pairs(lm)
    found = S.circuit_summary(lm, task, progress=False, random_draws=0, seed=2)
    assert found.split.kind == "cross-fitted"
    E, size = found.scores.graph.n_edges, 20
    m, empty, full = [], [], []
    for fold in found.split.folds:
        chosen = edge_scores(lm, task.subset(fold.discovery), progress=False).eap_ig
        judge = F.Evaluator(lm, task.subset(fold.evaluation))
        values = judge.metrics(torch.stack([F.top_k(chosen, F.n_for(size, E)).float(),
                                            torch.zeros(E), torch.ones(E)]))
        m += values[0].tolist()
        empty += values[1].tolist()
        full += values[2].tolist()
    want = (np.mean(m) - np.mean(empty)) / (np.mean(full) - np.mean(empty))
    row = found.faithfulness.query("method == 'EAP-IG' and variant == 'top-k' "
                                   "and size_percent == @size")
    assert float(row["faithfulness"].iloc[0]) == pytest.approx(want, abs=1e-5)


# ------------------------------------------------------------------ the random baseline
def test_random_circuits_are_uniform_subsets_of_k_edges():
    draws = F.random_circuits(10, 3, 20000, seed=0)
    assert (draws.sum(1) == 3).all()
    n = len(draws)
    each = draws.float().mean(0)  # P(edge in circuit) = k / E
    assert (each - 0.3).abs().max() < 4 * np.sqrt(0.3 * 0.7 / n)
    both = (draws[:, 0] & draws[:, 7]).float().mean()  # P(two given edges) = k(k−1)/(E(E−1))
    assert abs(float(both) - 6 / 90) < 4 * np.sqrt((6 / 90) * (84 / 90) / n)
    assert torch.equal(F.random_circuits(10, 3, 5, seed=1), F.random_circuits(10, 3, 5, seed=1))
    assert not torch.equal(F.random_circuits(10, 3, 5, seed=1),
                           F.random_circuits(10, 3, 5, seed=2))
    assert F.random_circuits(10, 10, 2).all() and not F.random_circuits(10, 0, 2).any()


def test_random_baseline_is_1_at_every_edge_and_0_at_none(lm):
    task = pairs(lm)
    found = S.circuit_summary(lm, task, progress=False, random_draws=3, seed=0)
    rand = found.faithfulness.query("method == 'random'").set_index("size_percent")
    top = found.faithfulness.query("method == 'EAP-IG' and variant == 'top-k'")
    assert list(rand.index) == list(F.MIB_SIZES)
    assert list(rand["n_edges"]) == list(top["n_edges"])  # the same sizes as EAP-IG's
    assert rand.loc[100, "faithfulness"] == pytest.approx(1.0)
    judge = F.Evaluator(lm, task)
    E = judge.graph.n_edges
    none = judge.metrics(torch.cat([F.random_circuits(E, 0, 3), torch.zeros(1, E),
                                    torch.ones(1, E)]).float())
    assert float(F.faithfulness(none[:3].mean(0), none[3], none[4])) == pytest.approx(
        0.0, abs=1e-6)
    h = found.headline
    assert h.random_draws == 3
    assert h.cpr_minus_random == pytest.approx(h.cpr - h.random_cpr)
    if h.size_for_80 is not None:
        assert h.random_faithfulness_for_80 == pytest.approx(
            rand.loc[h.size_for_80, "faithfulness"])


def test_random_baseline_headline_by_hand():
    """Two pairs, ten edges, sizes 50 % and 100 %: empty circuit 0, full model 2 on both pairs.
    EAP-IG's 5-edge circuit gives 2 and 1.5 (f = 0.875), the random 5-edge circuits' mean 0.4
    and 0.6 (f = 0.25); CPR = 0.5 × (0.875 + 1) / 2 = 0.46875, random 0.5 × (0.25 + 1) / 2 =
    0.3125. Resampling two pairs gives f ∈ {0.75, 0.875, 1}, so the 95 % interval at 50 % is
    [0.75, 1] and its lower end does not clear 0.8."""
    top = pd.DataFrame({"method": "EAP-IG", "variant": "top-k", "size_percent": [50.0, 100.0],
                        "n_edges": [5, 10], "faithfulness": [0.875, 1.0]})
    rand = top.assign(method="random", faithfulness=[0.25, 1.0])
    base = {"empty": np.zeros(2), "full": np.full(2, 2.0), "corrupted": np.zeros(2)}
    scores = SimpleNamespace(ig_steps=5, seconds=1.0, clean=torch.zeros(2))
    split = PairSplit("cross-fitted", split_pairs(2).folds, 2)
    h = build_headline(top, np.array([[2.0, 1.5], [2.0, 2.0]]), base, scores, 10,
                       ablation="counterfactual", split=split,
                       random=(rand, np.array([[0.4, 0.6], [2.0, 2.0]]), 4),
                       eap=(rand, np.array([[0.4, 0.6], [2.0, 2.0]])))
    assert (h.edges_for_80, h.size_for_80, h.faithfulness_for_80) == (5, 50.0, 0.875)
    assert h.faithfulness_for_80_ci == pytest.approx([0.75, 1.0])
    assert h.faithfulness_for_80_lower_bound_clears is False
    assert h.random_faithfulness_for_80 == pytest.approx(0.25)
    assert (h.cpr, h.random_cpr) == pytest.approx((0.46875, 0.3125))
    assert h.cpr_minus_random == pytest.approx(0.15625)
    # paired: pair 1 alone gives 0.5 × (1 + 1) / 2 − 0.5 × (0.2 + 1) / 2 = 0.2, pair 2 alone
    # 0.5 × (0.75 + 1) / 2 − 0.5 × (0.3 + 1) / 2 = 0.1125
    assert h.cpr_minus_eap == pytest.approx(0.15625)
    assert h.cpr_minus_eap_ci == pytest.approx([0.1125, 0.2])
    assert (h.random_draws, h.split, h.fold_pairs, h.n_evaluation_pairs) == (
        4, "cross-fitted", [1, 1], 2)


def test_component_shares_count_heads_mlps_and_layers_by_hand():
    graph = Graph(n_layers=2, n_heads=4, n_kv_heads=2)
    shares = S.component_shares(graph, {"input", "L0H1", "L1KV0", "MLP 1", "logits"})
    # one of 8 query heads (L1KV0 is a key/value head, not a query head), one of 2 MLPs,
    # both layers' attention (a head in layer 0, a key/value head in layer 1)
    assert shares == {"head": 1 / 8, "mlp": 1 / 2, "attention": 1.0}
