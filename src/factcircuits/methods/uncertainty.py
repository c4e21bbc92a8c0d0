"""How sure a number is: bootstrap over prompts.

Every aggregate the write-up states (a mean over prompts, a per-layer curve's peak, a ratio of
means) is recomputed on resamples of the prompts, drawn with replacement. One resample is a
vector of counts per prompt, so a statistic that is a (weighted) mean over prompts is one
matrix product for all resamples: `resampled_means`. Intervals are percentile intervals;
a peak layer gets the range that holds the peak in the central 95 % of resamples; a comparison
of two paired quantities gets its bootstrap interval, a two-sided bootstrap p-value and an
exact sign test. Resamples are seeded by the run's seed, so a rerun gives the same intervals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from factcircuits.results.parameter_declarations import SEED

N_RESAMPLES = 1000
LEVEL = 0.95
SMALL_SAMPLE = 20  # below this many prompts the findings say the sample is small


def resample_counts(n: int, n_resamples: int = N_RESAMPLES, seed: int = SEED.default) -> np.ndarray:
    """[n_resamples, n] how often each of n prompts is drawn in each resample (rows sum to n)."""
    if n < 1:
        raise ValueError("a bootstrap needs at least one prompt")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(float)


def resampled_means(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean over prompts (axis 0 of `values`, [n, ...]) in every resample: [n_resamples, ...].
    NaN marks a prompt without that cell (e.g. a token class it lacks): it is left out of that
    cell's mean; a cell no drawn prompt has is NaN."""
    values = np.asarray(values, dtype=float)
    flat = values.reshape(len(values), -1)
    present = ~np.isnan(flat)
    total = counts @ np.where(present, flat, 0.0)
    weight = counts @ present.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(weight > 0, total / np.where(weight > 0, weight, 1), np.nan)
    return means.reshape(len(counts), *values.shape[1:])


def percentile_interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Central `level` interval of bootstrap samples (NaN resamples ignored)."""
    samples = np.asarray(samples, dtype=float)
    samples = samples[~np.isnan(samples)]
    if not len(samples):
        return math.nan, math.nan
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


@dataclass
class Estimate:
    """A number aggregated over prompts with its 95 % bootstrap interval."""

    value: float
    low: float
    high: float
    n: int

    def interval(self) -> list[float]:
        return [self.low, self.high]


def mean_estimate(values, seed: int = SEED.default, n_resamples: int = N_RESAMPLES) -> Estimate:
    """The mean of per-prompt `values` with its bootstrap interval."""
    values = np.asarray(values, dtype=float)
    samples = resampled_means(values, resample_counts(len(values), n_resamples, seed))
    return Estimate(float(np.nanmean(values)), *percentile_interval(samples), int(len(values)))


def ratio_of_means_estimate(numerator, denominator, seed: int = SEED.default,
                            n_resamples: int = N_RESAMPLES) -> Estimate:
    """mean(numerator) / mean(denominator) over the same prompts, with its interval (shares
    and normalized effects are ratios of means, so no prompt with a tiny denominator can
    dominate)."""
    num, den = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    counts = resample_counts(len(num), n_resamples, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        samples = resampled_means(num, counts) / resampled_means(den, counts)
        value = float(np.nanmean(num) / np.nanmean(den))
    return Estimate(value, *percentile_interval(samples), int(len(num)))


@dataclass
class Peak:
    """Where a per-layer curve (mean over prompts) peaks, and how stable that place is."""

    layer: int  # the peak of the mean curve
    value: Estimate  # the curve at that layer, with its interval
    layer_low: int  # the range holding the resampled peak in the central 95 % of resamples
    layer_high: int
    n_layers: int

    @property
    def spread(self) -> int:
        return self.layer_high - self.layer_low

    def resolved(self) -> bool:
        """A peak is located when its range spans at most a third of the model."""
        return self.spread <= self.n_layers / 3

    def layer_range(self) -> list[int]:
        return [self.layer_low, self.layer_high]


def peak_of_curves(curves, seed: int = SEED.default, n_resamples: int = N_RESAMPLES,
                   n_layers: int | None = None, layers=None) -> Peak:
    """`curves` [n_prompts, n_points] (NaN: a prompt without that point): the peak of the mean
    curve, its value's interval and the range of resampled peaks. `layers` names the points
    (default 0..n_points-1); `n_layers` is the model's depth for `resolved`."""
    curves = np.asarray(curves, dtype=float)
    layers = np.arange(curves.shape[1]) if layers is None else np.asarray(layers)
    counts = resample_counts(len(curves), n_resamples, seed)
    samples = resampled_means(curves, counts)  # [B, n_points]
    mean = np.nanmean(curves, axis=0)
    best = int(np.nanargmax(mean))
    value = Estimate(float(mean[best]), *percentile_interval(samples[:, best]), len(curves))
    return Peak(int(layers[best]), value, *peak_range(samples, layers),
                int(n_layers or len(layers)))


def peak_range(samples: np.ndarray, points=None) -> tuple[int, int]:
    """The range of `points` (default the column indices) holding the largest point of the
    resampled curves `samples` [n_resamples, n_points] in the central 95 % of resamples,
    rounded outwards to whole points (NaN points ignored; an all-NaN resample left out)."""
    points = np.arange(samples.shape[1]) if points is None else np.asarray(points)
    ok = ~np.all(np.isnan(samples), axis=1)
    peaks = points[np.nanargmax(np.where(np.isnan(samples[ok]), -np.inf, samples[ok]), axis=1)]
    low, high = percentile_interval(peaks)
    return int(math.floor(low)), int(math.ceil(high))


@dataclass
class Comparison:
    """Paired comparison of two per-prompt quantities a and b: mean(a − b) with its interval,
    a two-sided bootstrap p-value and an exact sign test."""

    difference: Estimate
    p_bootstrap: float
    n_positive: int  # prompts where a > b
    n_negative: int
    p_sign: float

    @property
    def n(self) -> int:
        return self.difference.n

    def supports(self) -> bool:
        """The interval of the difference excludes 0."""
        d = self.difference
        return bool(d.low > 0 or d.high < 0)


def binomial_two_sided_p(successes: int, n: int, p: float = 0.5) -> float:
    """Exact two-sided binomial test: the probability of an outcome at most as likely."""
    if n == 0:
        return 1.0
    pmf = [math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(n + 1)]
    observed = pmf[successes]
    return min(1.0, sum(q for q in pmf if q <= observed * (1 + 1e-9)))


def paired_comparison(a, b, seed: int = SEED.default, n_resamples: int = N_RESAMPLES) -> Comparison:
    """Is a larger than b, prompt by prompt? (prompts where either is NaN are left out)"""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = ~(np.isnan(a) | np.isnan(b))
    diff = a[keep] - b[keep]
    samples = resampled_means(diff, resample_counts(len(diff), n_resamples, seed))
    estimate = Estimate(float(diff.mean()), *percentile_interval(samples), int(len(diff)))
    # two-sided: twice the share of resamples on the other side of 0 than the estimate
    other = np.mean(samples <= 0) if estimate.value > 0 else np.mean(samples >= 0)
    # (k + 1) / (B + 1): a resample count of 0 means p < 2/B, never p = 0
    p_boot = float(min(1.0, 2 * (other * len(samples) + 1) / (len(samples) + 1)))
    pos, neg = int((diff > 0).sum()), int((diff < 0).sum())
    return Comparison(estimate, p_boot, pos, neg, binomial_two_sided_p(pos, pos + neg))


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        not math.isnan(value)


def with_interval(value, interval, spec: str = ".2f", label: str = "95% CI") -> str:
    """'0.28 (95% CI 0.15 to 0.41)'; a percentage spec ('.0%') formats all three alike. A value
    or interval that was not computed (None, NaN, a run's not-computed marker) is said so or
    left out, never an error."""
    if not _number(value):
        return "not computed"
    if not interval or len(interval) != 2 or not all(_number(v) for v in interval):
        return format(value, spec)
    low, high = interval
    return f"{value:{spec}} ({label} {low:{spec}} to {high:{spec}})"


def layer_with_range(layer, layer_range) -> str:
    """'layer 5; 95% of resamples peak in layers 3–8' (or 'at layer 5 in 95% of resamples')."""
    if not layer_range or not all(_number(v) for v in layer_range):
        return f"layer {int(layer)}"
    low, high = (int(v) for v in layer_range)
    if low == high:
        return f"layer {int(layer)} (the peak in 95% of resamples)"
    return f"layer {int(layer)} (95% of resamples peak in layers {low}–{high})"


def p_text(p: float | None) -> str:
    if p is None:
        return "p not computed"
    return "p < 0.002" if p < 0.002 else f"p = {p:.2g}"


SUPPORTED, CONTRADICTED, NOT_RESOLVED, NOT_TESTED = (
    "supported", "contradicted", "not resolved", "not tested")


def claim_p(found: dict) -> float:
    """The p-value a claim is judged by (a record from before exact tests: its sign test)."""
    p = found.get("p", found.get("p_sign"))
    return float(p) if _number(p) else math.nan


def _interval_agrees(found: dict) -> bool:
    """The difference's interval lies on the side the test supports (a claim whose test and
    interval disagree, e.g. p = 0.04 with an interval through 0, stays not resolved)."""
    ci = found.get("difference_ci")
    if not ci or len(ci) != 2 or not all(_number(v) for v in ci):
        return True  # no interval to disagree
    return ci[0] > 0 if found["difference"] > 0 else ci[1] < 0


def judge_claims(found: list[dict], alpha: float | None = None) -> list[dict]:
    """Each claim with its Holm-adjusted p-value over all the claims given (a run's family)
    and its verdict: **supported** / **contradicted** when the adjusted p ≤ α (by the sign of
    the difference) and the difference's interval excludes 0 on that side, **not resolved**
    otherwise, **not tested** when no outcome on its n
    prompts could reach α (its test is then left out of the family)."""
    alpha = ALPHA if alpha is None else alpha
    p = [claim_p(c) if c.get("testable", True) and _number(c.get("difference")) else math.nan
         for c in found]
    adjusted = holm(p)
    judged = []
    for c, q in zip(found, adjusted):
        if math.isnan(q):
            verdict = NOT_TESTED
        elif q <= alpha and _interval_agrees(c):
            verdict = SUPPORTED if c["difference"] > 0 else CONTRADICTED
        else:
            verdict = NOT_RESOLVED
        judged.append({**c, "p_holm": q, "verdict": verdict, "family": len(
            [v for v in p if not math.isnan(v)])})
    return judged


def claim_text(found: dict, spec: str = ".3f") -> str:
    """'**supported**: mean difference +0.12 (95% CI 0.05 to 0.20); exact paired permutation
    test p = 0.004, Holm-adjusted over the run's 3 claims p = 0.012; 9 of 10 prompts; n = 10'.
    `found` is a judged claim (`judge_claims`)."""
    if not _number(found.get("difference")):
        return "not computed (no prompt had both quantities)"
    verdict = found.get("verdict", NOT_RESOLVED)
    n = found.get("n")
    unit = found.get("unit")
    difference = with_interval(found["difference"], found.get("difference_ci"),
                               "+.0f" if unit == "layers" else "+" + spec)
    if unit:
        difference += f" {unit}"
    if verdict == NOT_TESTED:
        return (f"**not tested**: with n = {n} prompts no outcome can reach p ≤ {ALPHA:g} "
                f"(mean difference {difference})")
    label = {SUPPORTED: "**supported**", CONTRADICTED: "**contradicted** (the opposite holds)",
             NOT_RESOLVED: "**not resolved**"}[verdict]
    test = found.get("test", "test")
    text = f"{label}: mean difference {difference}; {test} {p_text(claim_p(found))}"
    if _number(found.get("p_holm")):
        text += (f", Holm-adjusted over the run's {found.get('family', 1)} tested claims "
                 f"{p_text(found['p_holm'])}")
    n_pos, n_neg = found.get("n_positive"), found.get("n_negative")
    if n_pos is not None and n_neg is not None:
        text += f"; higher in {n_pos} of {n_pos + n_neg} prompts"
    return text + f"; n = {n}"


# ---------------------------------------------------------------------------------------------
# Small-sample statistics: exact intervals for proportions, exact paired tests, Holm.
#
# A percentile bootstrap collapses to a point when every prompt agrees (4 of 4 correct gives
# [1, 1]) and undercovers below ~20 prompts, so proportions get Clopper–Pearson intervals and
# claims get exact permutation tests whose smallest attainable p-value is known: a claim on too
# few prompts to ever reach ALPHA is "not tested", never "not resolved".

ALPHA = 0.05  # family-wise error rate of a run's claims (Holm)
EXACT_SWAPS = 4096  # up to 2**12 swap patterns are enumerated; beyond, a seeded Monte Carlo
MONTE_CARLO_SWAPS = 9999


def _binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X ≤ k) for X ~ Binomial(n, p)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    return float(sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1)))


def _solve_decreasing(f, target: float) -> float:
    """The p in [0, 1] where the decreasing function f(p) equals `target` (bisection)."""
    low, high = 0.0, 1.0
    for _ in range(100):
        mid = (low + high) / 2
        if f(mid) > target:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def clopper_pearson(successes: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Exact (Clopper–Pearson) interval of a binomial proportion: it covers at least `level`
    for every n and true proportion (4 of 4 → [0.398, 1])."""
    if n < 1:
        return math.nan, math.nan
    k, tail = int(successes), (1 - level) / 2
    # low: P(X ≥ k | p) = tail; high: P(X ≤ k | p) = tail (both CDFs fall as p grows)
    low = 0.0 if k == 0 else _solve_decreasing(lambda p: _binomial_cdf(k - 1, n, p), 1 - tail)
    high = 1.0 if k == n else _solve_decreasing(lambda p: _binomial_cdf(k, n, p), tail)
    return float(low), float(high)


def wilson(successes: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (narrower than Clopper–Pearson, close to
    nominal coverage on average)."""
    if n < 1:
        return math.nan, math.nan
    z = _normal_quantile(1 - (1 - level) / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _normal_quantile(q: float) -> float:
    """Inverse of the standard normal CDF (bisection on erf)."""
    low, high = -10.0, 10.0
    for _ in range(100):
        mid = (low + high) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < q:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def proportion_estimate(outcomes, level: float = LEVEL) -> Estimate:
    """The share of true `outcomes` (0/1 per prompt) with its Clopper–Pearson interval."""
    values = np.asarray(outcomes, dtype=float)
    values = values[~np.isnan(values)]
    k, n = int(values.sum()), int(len(values))
    low, high = clopper_pearson(k, n, level)
    return Estimate(k / n if n else math.nan, low, high, n)


def holm(p_values) -> list[float]:
    """Holm's step-down adjustment: claim i is supported at family-wise level α when its
    adjusted p-value is ≤ α. NaN p-values (untested claims) stay NaN and do not count."""
    p = [float(v) if v is not None else math.nan for v in p_values]
    tested = sorted((v, i) for i, v in enumerate(p) if not math.isnan(v))
    m = len(tested)
    adjusted, running = [math.nan] * len(p), 0.0
    for rank, (value, i) in enumerate(tested):
        running = max(running, min(1.0, (m - rank) * value))
        adjusted[i] = running
    return adjusted


def swap_patterns(n: int, seed: int = SEED.default) -> np.ndarray:
    """[n_patterns, n] booleans: which pairs a permutation swaps. Every pattern when there are
    at most EXACT_SWAPS (the identity first), else the identity and MONTE_CARLO_SWAPS seeded
    random patterns."""
    if 2**n <= EXACT_SWAPS:
        return ((np.arange(2**n)[:, None] >> np.arange(n)) & 1).astype(bool)
    rng = np.random.default_rng(seed)
    random = rng.integers(0, 2, size=(MONTE_CARLO_SWAPS, n)).astype(bool)
    return np.vstack([np.zeros((1, n), dtype=bool), random])


def smallest_p(n: int) -> float:
    """The smallest two-sided p-value a paired swap test on n pairs can give (2 / 2**n)."""
    return min(1.0, 2.0 / 2**n) if n < 64 else 0.0


def swap_test(a, b, statistic, seed: int = SEED.default) -> float:
    """Exact two-sided permutation test that paired items a[i], b[i] are exchangeable.

    `statistic(a, b)` takes stacks [n_patterns, n, ...] and returns [n_patterns] values; it is
    recomputed on every swap pattern, so a statistic that *selects* (e.g. the peak layer of a
    mean curve) has its selection redone each time: the p-value accounts for the choice.
    p = share of patterns whose |statistic| ≥ the observed one (identity included)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    patterns = swap_patterns(len(a), seed)
    # in chunks: 10,000 patterns × n prompts × layers would be gigabytes at a few hundred
    chunk = max(1, int(2e7 // max(1, a.size)))
    values = []
    for start in range(0, len(patterns), chunk):
        part = patterns[start:start + chunk]
        mask = part.reshape(*part.shape, *([1] * (a.ndim - 1)))
        values.append(np.asarray(statistic(np.where(mask, b[None], a[None]),
                                           np.where(mask, a[None], b[None])), dtype=float))
    values = np.concatenate(values)
    observed = abs(values[0])
    exceed = np.abs(values) >= observed * (1 - 1e-12) - 1e-15
    if 2 ** len(a) <= EXACT_SWAPS:
        return float(exceed.mean())
    return float((exceed[1:].sum() + 1) / len(values))


def mean_difference(a, b) -> np.ndarray:
    """Swap-test statistic: mean over pairs of a − b (per pattern)."""
    return np.nanmean(a - b, axis=1)


def peak_difference(a, b) -> np.ndarray:
    """Swap-test statistic for curves [.., n, layers]: the peak of a's mean curve minus the
    peak of b's, each at its own peak layer chosen on the same (permuted) data."""
    return np.nanmax(np.nanmean(a, axis=1), axis=-1) - np.nanmax(np.nanmean(b, axis=1), axis=-1)


def difference_at_peak(a, b) -> np.ndarray:
    """Swap-test statistic for curves: a's mean curve at its peak layer minus b's mean curve
    at that same layer (the layer chosen on the permuted data)."""
    mean_a, mean_b = np.nanmean(a, axis=1), np.nanmean(b, axis=1)
    peak = np.argmax(np.where(np.isnan(mean_a), -np.inf, mean_a), axis=-1)
    rows = np.arange(len(mean_a))
    return mean_a[rows, peak] - mean_b[rows, peak]


def peak_layer_difference(a, b) -> np.ndarray:
    """Swap-test statistic for curves: the peak layer of b's mean curve minus a's (positive
    when a peaks earlier)."""
    def peak(x):
        mean = np.nanmean(x, axis=1)
        return np.argmax(np.where(np.isnan(mean), -np.inf, mean), axis=-1)
    return (peak(b) - peak(a)).astype(float)
