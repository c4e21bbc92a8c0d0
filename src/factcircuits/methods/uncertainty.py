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

N_RESAMPLES = 1000
LEVEL = 0.95
SMALL_SAMPLE = 20  # below this many prompts the findings say the sample is small


def resample_counts(n: int, n_resamples: int = N_RESAMPLES, seed: int = 0) -> np.ndarray:
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


def mean_estimate(values, seed: int = 0, n_resamples: int = N_RESAMPLES) -> Estimate:
    """The mean of per-prompt `values` with its bootstrap interval."""
    values = np.asarray(values, dtype=float)
    samples = resampled_means(values, resample_counts(len(values), n_resamples, seed))
    return Estimate(float(np.nanmean(values)), *percentile_interval(samples), int(len(values)))


def ratio_of_means_estimate(numerator, denominator, seed: int = 0,
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


def peak_of_curves(curves, seed: int = 0, n_resamples: int = N_RESAMPLES,
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


def paired_comparison(a, b, seed: int = 0, n_resamples: int = N_RESAMPLES) -> Comparison:
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


def with_interval(value, interval, spec: str = ".2f") -> str:
    """'0.28 (95% CI 0.15 to 0.41)'; a percentage spec ('.0%') formats all three alike. A value
    or interval that was not computed (None, NaN, a run's not-computed marker) is said so or
    left out, never an error."""
    if not _number(value):
        return "not computed"
    if not interval or len(interval) != 2 or not all(_number(v) for v in interval):
        return format(value, spec)
    low, high = interval
    return f"{value:{spec}} (95% CI {low:{spec}} to {high:{spec}})"


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


def claim_text(found: dict, spec: str = ".3f") -> str:
    """'supported: mean difference +0.12 (95% CI 0.05 to 0.20), paired bootstrap p < 0.002,
    sign test 9 of 10 prompts (p = 0.021), n = 10'; 'not computed' without the numbers."""
    if not all(_number(found.get(k)) for k in ("difference", "p_bootstrap", "p_sign")):
        return "not computed (no prompt had both quantities)"
    verdict = {"supported": "**supported**", "contradicted": "**contradicted** (the opposite "
               "holds)", "not resolved": "**not resolved** (the interval includes no "
               "difference)"}[found["verdict"]]
    n_pos, n_neg = found["n_positive"], found["n_negative"]
    difference = with_interval(found["difference"], found["difference_ci"], "+" + spec)
    return (f"{verdict}: mean difference {difference}"
            f"; paired bootstrap {p_text(found['p_bootstrap'])}; sign test {n_pos} of "
            f"{n_pos + n_neg} prompts (p = {found['p_sign']:.2g}); n = {found['n']}")
