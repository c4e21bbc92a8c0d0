"""Bootstrap intervals over prompts, peak ranges, paired tests and the agreement rule, against
hand computations and clear synthetic cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from factcircuits.methods import intervals as I
from factcircuits.methods import uncertainty as U
from factcircuits.report.sureness import AGREE, DISAGREE, UNRESOLVED, layer_ranges_agree


def test_resampled_means_equal_a_loop_over_drawn_prompts():
    values = np.array([[1.0, np.nan], [2.0, 5.0], [4.0, 7.0]])  # prompt 0 lacks the 2nd cell
    counts = U.resample_counts(3, n_resamples=50, seed=3)
    assert (counts.sum(1) == 3).all()
    got = U.resampled_means(values, counts)
    for b, row in enumerate(counts):
        drawn = [i for i in range(3) for _ in range(int(row[i]))]
        first = np.mean([values[i, 0] for i in drawn])
        second = [values[i, 1] for i in drawn if not np.isnan(values[i, 1])]
        assert got[b, 0] == pytest.approx(first)
        if second:
            assert got[b, 1] == pytest.approx(np.mean(second))
        else:
            assert math.isnan(got[b, 1])


def test_accuracy_interval_is_the_binomial_quantiles():
    """The bootstrap mean of 8 ones and 2 zeros is Binomial(10, 0.8) / 10: P(X ≤ 4) = 0.006 <
    0.025 < P(X ≤ 5) = 0.033 and P(X ≤ 9) = 0.89 < 0.975, so the interval is [0.5, 1.0]."""
    estimate = U.mean_estimate([1] * 8 + [0] * 2, seed=0)
    assert estimate.value == pytest.approx(0.8) and estimate.n == 10
    assert estimate.interval() == [0.5, 1.0]
    assert U.mean_estimate([0.3] * 7).interval() == pytest.approx([0.3, 0.3])
    # seeded: the same resamples give the same interval; another seed may not
    assert U.mean_estimate(np.arange(12.0), seed=4).interval() == \
        U.mean_estimate(np.arange(12.0), seed=4).interval()


def test_ratio_of_means_is_not_the_mean_of_ratios():
    # per-prompt shares 0.9 and 0.1 over totals 1 and 9: mean of ratios 0.5, ratio of means 0.18
    estimate = U.ratio_of_means_estimate([0.9, 0.9], [1.0, 9.0])
    assert estimate.value == pytest.approx(1.8 / 10)


def test_paired_comparison_by_hand():
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 0.0])
    b = a - np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, -1]) * 0.5  # a > b for 9 of 10
    result = U.paired_comparison(a, b, seed=1)
    assert result.difference.value == pytest.approx(0.4)
    assert (result.n_positive, result.n_negative) == (9, 1)
    assert result.p_sign == pytest.approx(22 / 1024)  # 2 · (C(10,9) + C(10,10)) / 2^10
    assert result.supports() and result.difference.low > 0
    assert 0 < result.p_bootstrap < 0.05
    noise = np.random.default_rng(0).normal(size=(2, 40))
    assert not U.paired_comparison(noise[0], noise[1]).supports()


def synthetic_curves(peak: int, n_prompts: int = 20, n_layers: int = 12, noise: float = 0.05,
                     seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    layers = np.arange(n_layers)
    return np.exp(-((layers - peak) ** 2) / 2.0) + noise * rng.normal(size=(n_prompts, n_layers))


def test_clearly_separated_peaks_disagree_and_noisy_ones_are_not_resolved():
    a = U.peak_of_curves(synthetic_curves(2), n_layers=12)
    b = U.peak_of_curves(synthetic_curves(9, seed=1), n_layers=12)
    assert (a.layer, a.layer_range()) == (2, [2, 2]) and (b.layer, b.layer_range()) == (9, [9, 9])
    assert layer_ranges_agree(a.layer_range(), b.layer_range(), 12) == DISAGREE
    near = U.peak_of_curves(synthetic_curves(3, seed=2), n_layers=12)
    assert layer_ranges_agree(a.layer_range(), [2, 3], 12) == AGREE
    assert near.resolved()
    flat = U.peak_of_curves(np.random.default_rng(5).normal(size=(8, 12)), n_layers=12)
    assert flat.spread > 4 and not flat.resolved()
    assert layer_ranges_agree(a.layer_range(), flat.layer_range(), 12) == UNRESOLVED


def test_patching_peak_interval_by_hand():
    """A small tidy table of 4 pairs × 3 layers: the normalized effect at the peak is a ratio
    of means, and its interval is the percentiles of that ratio over the same resamples."""
    rng = np.random.default_rng(0)
    rows = []
    for prompt in range(4):
        clean, corrupted = 2.0 + prompt, -1.0
        for layer in range(3):
            metric = corrupted + (clean - corrupted) * (0.2, 0.9, 0.4)[layer] + 0.1 * rng.normal()
            rows.append({"component": "mlp_out", "token_class": "subject_last", "layer": layer,
                         "prompt_id": prompt, "metric": metric, "clean": clean,
                         "corrupted": corrupted})
    long = pd.DataFrame(rows)
    found = I.normalized_peak(long, "mlp_out", "subject_last", n_layers=3, seed=7)
    at_peak = long[long["layer"] == 1].sort_values("prompt_id")
    counts = U.resample_counts(4, seed=7)
    ratios = []
    for row in counts:  # by hand: weighted means of metric, clean and corrupted
        w = row / row.sum()
        m, c, k = (float((w * at_peak[col].to_numpy()).sum())
                   for col in ("metric", "clean", "corrupted"))
        ratios.append((m - k) / (c - k))
    assert found["layer"] == 1 and found["n"] == 4
    assert found["effect_ci"] == pytest.approx(list(np.percentile(ratios, [2.5, 97.5])))
    assert found["layer_range"] == [1, 1]


def test_clopper_pearson_exact_values():
    # 4 of 4: the lower bound solves p**4 = 0.025, i.e. 0.025 ** (1/4) = 0.3976
    assert U.clopper_pearson(4, 4) == pytest.approx((0.025 ** 0.25, 1.0), abs=1e-6)
    assert U.clopper_pearson(4, 4)[0] == pytest.approx(0.398, abs=1e-3)
    assert U.clopper_pearson(0, 3) == pytest.approx((0.0, 1 - 0.025 ** (1 / 3)), abs=1e-6)
    # 5 of 10, the textbook value (0.1871, 0.8129); symmetric in successes and failures
    low, high = U.clopper_pearson(5, 10)
    assert (low, high) == pytest.approx((0.18709, 0.81291), abs=1e-4)
    assert U.clopper_pearson(3, 10)[0] == pytest.approx(1 - U.clopper_pearson(7, 10)[1])
    # the bounds are where the binomial tails equal 2.5% (the definition)
    k, n = 3, 12
    low, high = U.clopper_pearson(k, n)
    tail = sum(math.comb(n, i) * low**i * (1 - low) ** (n - i) for i in range(k, n + 1))
    head = sum(math.comb(n, i) * high**i * (1 - high) ** (n - i) for i in range(k + 1))
    assert tail == pytest.approx(0.025, abs=1e-9) and head == pytest.approx(0.025, abs=1e-9)
    # unlike the percentile bootstrap, it never collapses to a point
    assert U.proportion_estimate([1, 1, 1, 1]).interval()[0] < 0.4


def test_wilson_by_formula():
    z = 1.959964
    p, n = 0.3, 10
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert U.wilson(3, 10) == pytest.approx((centre - half, centre + half), abs=1e-5)


def test_holm_on_hand_made_p_values():
    # sorted 0.01, 0.03, 0.04 → 3·0.01, 2·0.03, max(1·0.04, 0.06): [0.03, 0.06, 0.06]
    assert U.holm([0.04, 0.01, 0.03]) == pytest.approx([0.06, 0.03, 0.06])
    adjusted = U.holm([0.5, float("nan"), 0.001, 0.02])  # NaN: not tested, not counted
    assert math.isnan(adjusted[1])
    assert [adjusted[i] for i in (2, 3, 0)] == pytest.approx([0.003, 0.04, 0.5])
    assert U.holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])


def test_swap_test_is_exact_and_redoes_the_selection():
    # 5 pairs all favouring a: only the identity and the full swap reach |T| → p = 2/32
    a, b = np.arange(1.0, 6.0), np.zeros(5)
    assert U.swap_test(a, b, U.mean_difference) == pytest.approx(2 / 32)
    assert U.smallest_p(5) == pytest.approx(2 / 32)
    # by enumeration: the share of the 2**n sign flips whose |mean| reaches the observed one
    d = np.array([0.5, -0.2, 1.0, 0.3, 0.8, -0.1])
    flips = [np.array(s) for s in itertools.product([1, -1], repeat=6)]
    expected = np.mean([abs((f * d).mean()) >= abs(d.mean()) - 1e-12 for f in flips])
    assert U.swap_test(d, np.zeros(6), U.mean_difference) == pytest.approx(expected)
    # a selecting statistic: with two identical curves per prompt every swap gives 0, p = 1
    curves = np.random.default_rng(0).normal(size=(6, 4))
    assert U.swap_test(curves, curves.copy(), U.peak_difference) == 1.0
    # peak_difference chooses each curve's peak on the permuted data
    a = np.array([[0.0, 1.0, 0.0]] * 3)
    b = np.array([[0.0, 0.0, 0.5]] * 3)
    assert U.peak_difference(a[None], b[None])[0] == pytest.approx(0.5)
    assert U.peak_layer_difference(a[None], b[None])[0] == 1.0  # a peaks one layer earlier


def test_claims_are_judged_together_with_holm():
    strong = I.paired_claim("x", "a beats b", np.arange(1.0, 11.0), np.zeros(10))
    assert strong["p"] == pytest.approx(2 / 1024) and strong["testable"]
    weaker = I.paired_claim("y", "", [0.3, 0.2, 0.5, -0.1, 0.4, 0.6, 0.2, 0.1, 0.3, 0.2],
                            np.zeros(10))
    small = I.paired_claim("z", "", [1.0, 2.0, 3.0, 4.0], np.zeros(4))
    assert not small["testable"]  # 2/16 > 0.05: no outcome on 4 prompts reaches α
    judged = U.judge_claims([strong, weaker, small])
    assert [c["verdict"] for c in judged] == ["supported", "supported", "not tested"]
    assert judged[0]["family"] == 2  # the untested claim is not in Holm's family
    assert judged[1]["p_holm"] == pytest.approx(max(2 * strong["p"], weaker["p"]))
    against = I.paired_claim("w", "", np.zeros(10), np.arange(1.0, 11.0))
    assert U.judge_claims([against])[0]["verdict"] == "contradicted"
    noise = np.random.default_rng(1).normal(size=(2, 30))
    assert U.judge_claims([I.paired_claim("v", "", *noise)])[0]["verdict"] == "not resolved"
    # one claim alone supported at p = 0.03 is not supported among three when Holm needs 0.017
    claim = {**strong, "p": 0.03}
    alone, crowd = U.judge_claims([claim]), U.judge_claims([claim, {**claim, "p": 0.5},
                                                            {**claim, "p": 0.6}])
    assert alone[0]["verdict"] == "supported" and crowd[0]["verdict"] == "not resolved"
    assert "not tested" in U.claim_text(judged[2]) and "n = 4" in U.claim_text(judged[2])
    # a test that passes with an interval through 0 is not enough: not resolved
    torn = {**strong, "p": 0.01, "difference_ci": [-0.1, 2.0]}
    assert U.judge_claims([torn])[0]["verdict"] == "not resolved"


def test_formatting():
    assert U.with_interval(0.8, [0.5, 1.0], ".0%") == "80% (95% CI 50% to 100%)"
    assert U.with_interval(0.8, None, ".2f") == "0.80"
    assert U.layer_with_range(5, [3, 8]) == "layer 5 (95% of resamples peak in layers 3–8)"


def test_not_computed_values_are_said_never_an_error():
    marker = {"not_computed": "the computation gave NaN"}
    assert U.with_interval(None, [0.1, 0.2]) == "not computed"
    assert U.with_interval(0.5, [marker, marker]) == "0.50"
    assert U.with_interval(0.5, [float("nan"), 0.7]) == "0.50"
    assert U.layer_with_range(4, [marker, 6]) == "layer 4"
    assert U.claim_text({"difference": marker, "p": 0.5}).startswith(
        "not computed")


def test_the_layer0_mlp_is_reported_on_its_own_not_as_the_peak():
    """Patching's MLP peak is taken over layers ≥ 1 (layer 0 restores the subject's identity);
    layer 0's own effect is the ratio of mean restorations there."""
    rows = []
    for prompt in range(4):
        clean, corrupted = 2.0 + prompt, -1.0
        for layer, share in enumerate((0.95, 0.3, 0.6, 0.1)):
            rows.append({"component": "mlp_out", "token_class": "subject_last", "layer": layer,
                         "prompt_id": prompt, "metric": corrupted + (clean - corrupted) * share,
                         "clean": clean, "corrupted": corrupted})
    long = pd.DataFrame(rows)
    assert I.normalized_peak(long, "mlp_out", "subject_last", 4)["layer"] == 0
    found = I.patching_intervals(long, pd.DataFrame(columns=["component", "token_class"]), 4)
    assert found["mlp_out_subject_last_peak_layer"] == 2
    assert found["mlp_out_subject_last_peak"] == pytest.approx(0.6)
    assert found["mlp_out_subject_last_peak_layer_range"] == [2, 2]
    assert found["mlp_out_subject_last_layer0"] == pytest.approx(0.95)
