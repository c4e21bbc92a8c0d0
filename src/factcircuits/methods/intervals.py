"""The intervals and tests behind each notebook's headline: `uncertainty` applied to the
per-prompt tables the methods already return. Keys follow the headline they sit beside:
`<number>_ci` = [low, high] (95 % bootstrap over prompts), `<layer>_range` = [first, last]
layers holding the resampled peak in 95 % of resamples, `<layer>_resolved` = that range spans
at most a third of the model; a claim is a dict with its test (see `claim`)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from factcircuits.methods.uncertainty import (
    ALPHA,
    Estimate,
    mean_difference,
    mean_estimate,
    paired_comparison,
    peak_difference,
    peak_layer_difference,
    peak_of_curves,
    peak_range,
    percentile_interval,
    ratio_of_means_estimate,
    resample_counts,
    resampled_means,
    smallest_p,
    swap_test,
)
from factcircuits.results.parameter_declarations import SEED


def curves(table: pd.DataFrame, value: str, prompt: str = "prompt_id", layer: str = "layer",
           n_layers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """([n_prompts, n_points] per-prompt curve of `value` over `layer` (NaN where a prompt has
    no row), the layers). Rows of one prompt and layer are averaged (tokens of one class)."""
    wide = _wide(table, value, prompt, layer, n_layers)
    return wide.to_numpy(dtype=float), wide.columns.to_numpy()


def prompt_curves(table: pd.DataFrame, value: str, n_layers: int | None = None,
                  prompt: str = "prompt_id") -> tuple[np.ndarray, np.ndarray]:
    """(per-prompt curves [n, n_points] as `curves`, the prompt id of each row)."""
    wide = _wide(table, value, prompt, "layer", n_layers)
    return wide.to_numpy(dtype=float), wide.index.to_numpy()


def _wide(table, value, prompt, layer, n_layers) -> pd.DataFrame:
    wide = table.groupby([prompt, layer], observed=True)[value].mean().unstack(layer)
    return wide if n_layers is None else wide.reindex(columns=range(n_layers))


def claim(name: str, statement: str, difference: Estimate, p: float, test: str,
          n_positive: int | None = None, n_negative: int | None = None) -> dict:
    """A claim over prompts, ready for the findings: what is claimed, its test and p-value,
    the difference with its interval and the sample size. Its verdict is given later, with
    the run's other claims (`uncertainty.judge_claims`: Holm over the run, "not tested" when
    n is too small for any outcome to reach α)."""
    n = int(difference.n)
    return {"claim": statement, "name": name, "test": test, "difference": difference.value,
            "difference_ci": difference.interval(), "n": n, "p": float(p),
            "testable": bool(smallest_p(n) <= ALPHA),
            "n_positive": n_positive, "n_negative": n_negative}


def paired_claim(name: str, statement: str, a, b, seed: int = SEED.default) -> dict:
    """'a exceeds b, prompt by prompt': mean difference with its bootstrap interval, tested by
    an exact paired permutation (sign-flip) test; the sign counts are shown beside it."""
    comparison = paired_comparison(a, b, seed)
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = ~(np.isnan(a) | np.isnan(b))
    p = swap_test(a[keep], b[keep], mean_difference, seed) if keep.any() else math.nan
    return claim(name, statement, comparison.difference, p,
                 "exact paired permutation test over prompts", comparison.n_positive,
                 comparison.n_negative)


def peak_order(a: np.ndarray, b: np.ndarray, seed: int = SEED.default) -> float:
    """Share of resamples (the same prompts drawn for both) in which curve `a` peaks at an
    earlier layer than curve `b`; both [n_prompts, n_layers] over the same layers."""
    counts = resample_counts(len(a), seed=seed)
    peak_a = np.nanargmax(np.nan_to_num(resampled_means(a, counts), nan=-np.inf), axis=1)
    peak_b = np.nanargmax(np.nan_to_num(resampled_means(b, counts), nan=-np.inf), axis=1)
    return float(np.mean(peak_a < peak_b))


# --------------------------------------------------------------------------- 05 causal tracing
SWAP_PEAKS = ("exact paired permutation test over prompts (MLP and attention curves swapped "
              "per prompt, each peak layer re-chosen on every swap)")


def tracing_intervals(long: pd.DataFrame, n_layers: int, seed: int = SEED.default) -> dict:
    """The intervals and claims of notebook 05, from the per-prompt curves of `long`
    (`TraceResult.tidy` rows of every kind):

    - per (kind, token class): the peak AIE's interval, the range of resampled peak layers and
      whether it is resolved; MLP peaks over layers ≥ 1 (`causal_tracing.first_peak_layer`);
    - `mlp_subject_last_layer0_aie` (+ `_ci`): the layer-0 MLP at the last subject token
      (window 1), reported on its own;
    - `<mlp|attn>_<class>_windowed_peak_survives`: the windowed curve's peak layer lies within
      the window-1 curve's range of resampled peak layers (only for a window above 1);
    - claims (window-1 curves, layers ≥ 1 for both kinds so that a prompt's MLP and attention
      curves can be swapped layer for layer): `claim_mlp_over_attn_subject_last` (peak of the
      mean MLP curve − peak of attention's at the last subject token; difference: the mean
      per-prompt difference at each curve's peak layer) and `claim_mlp_before_attn_last`
      (attention's peak layer at the last token − the MLP's at the last subject token), both
      tested by `swap_test`, which redoes the choice of peak layers on every swap pattern;
      `mlp_subject_before_attn_last_share`: the share of resamples with the MLP peak earlier
      (descriptive)."""
    from factcircuits.methods.causal_tracing import WINDOWED, first_peak_layer

    out, per, peak_layers = {}, {}, {}
    for (kind, cls), part in long.groupby(["kind", "token_class"], observed=True):
        values, ids = prompt_curves(part, "indirect_effect", n_layers)
        keep = ~np.all(np.isnan(values), axis=1)
        if not keep.any():
            continue
        per[kind, cls] = pd.DataFrame(values[keep], index=ids[keep])
        first = first_peak_layer(kind)
        peak = peak_of_curves(values[keep][:, first:], seed=seed, n_layers=n_layers,
                              layers=np.arange(first, n_layers))
        out[f"{kind}_{cls}_peak_aie_ci"] = peak.value.interval()
        out[f"{kind}_{cls}_peak_layer_range"] = peak.layer_range()
        out[f"{kind}_{cls}_peak_layer_resolved"] = peak.resolved()
        if "window" not in part or part["window"].max() > 1:  # window 1: the same curve
            peak_layers[kind, cls] = peak.layer
    for (kind, cls), layer in peak_layers.items():
        single = out.get(f"{WINDOWED.get(kind)}_{cls}_peak_layer_range")
        if kind in WINDOWED and single is not None:
            out[f"{WINDOWED[kind]}_{cls}_windowed_peak_survives"] = bool(
                single[0] <= layer <= single[1])
    mlp0 = per.get(("mlp", "subject_last"))
    if mlp0 is not None:
        estimate = mean_estimate(mlp0[0].to_numpy(), seed)
        out["mlp_subject_last_layer0_aie"] = estimate.value
        out["mlp_subject_last_layer0_aie_ci"] = estimate.interval()
    pair = _paired_curves(per, ("mlp", "subject_last"), ("attn", "subject_last"))
    if pair is not None:
        out["claim_mlp_over_attn_subject_last"] = peak_value_claim(
            "mlp_over_attn_subject_last",
            "restoring MLP outputs at the last subject token recovers more than restoring "
            "attention outputs there (each at its peak layer, window 1, layers ≥ 1)",
            *pair, seed)
    pair = _paired_curves(per, ("mlp", "subject_last"), ("attn", "last"))
    if pair is not None:
        out["claim_mlp_before_attn_last"] = peak_layer_claim(
            "mlp_before_attn_last",
            "the MLP peak at the last subject token comes at an earlier layer than attention's "
            "peak at the last token (window 1, layers ≥ 1)", *pair, seed)
        out["mlp_subject_before_attn_last_share"] = peak_order(*pair, seed)
    return out


def _paired_curves(per: dict, a_key, b_key, first: int = 1):
    """The curves of `a_key` and `b_key` on the prompts that have both, layers ≥ `first`
    (None when either is missing or no prompt has both)."""
    if a_key not in per or b_key not in per:
        return None
    a, b = per[a_key].iloc[:, first:], per[b_key].iloc[:, first:]
    both = a.index.intersection(b.index)
    a, b = a.loc[both].to_numpy(dtype=float), b.loc[both].to_numpy(dtype=float)
    complete = ~(np.isnan(a).any(axis=1) | np.isnan(b).any(axis=1))
    return (a[complete], b[complete]) if complete.any() else None


def _peak_column(curves_: np.ndarray) -> int:
    return int(np.nanargmax(np.nanmean(curves_, axis=0)))


def peak_value_claim(name: str, statement: str, a: np.ndarray, b: np.ndarray,
                     seed: int = SEED.default) -> dict:
    """'Curve a's peak exceeds curve b's' for paired per-prompt curves [n, n_layers]: the
    difference is the mean per-prompt a − b, each at its own curve's peak layer (bootstrap
    interval; the sign counts beside it); the p-value is `swap_test` with `peak_difference`,
    which chooses the peak layers again on every swap pattern."""
    comparison = paired_comparison(a[:, _peak_column(a)], b[:, _peak_column(b)], seed)
    p = swap_test(a, b, peak_difference, seed)
    return claim(name, statement, comparison.difference, p, SWAP_PEAKS,
                 comparison.n_positive, comparison.n_negative)


def peak_layer_claim(name: str, statement: str, a: np.ndarray, b: np.ndarray,
                     seed: int = SEED.default) -> dict:
    """'Curve a peaks at an earlier layer than curve b': the difference is b's peak layer −
    a's (of the mean curves; percentile interval over resamples of the prompts, the same
    prompts for both); the p-value is `swap_test` with `peak_layer_difference`."""
    counts = resample_counts(len(a), seed=seed)

    def peaks(x):
        return np.argmax(np.nan_to_num(resampled_means(x, counts), nan=-np.inf), axis=1)
    value = float(_peak_column(b) - _peak_column(a))
    difference = Estimate(value, *percentile_interval(peaks(b) - peaks(a)), int(len(a)))
    p = swap_test(a, b, peak_layer_difference, seed)
    return {**claim(name, statement, difference, p, SWAP_PEAKS), "unit": "layers"}


def aie_bands(long: pd.DataFrame, seed: int = SEED.default) -> pd.DataFrame:
    """Per (kind, layer, token class): the 95 % bootstrap band (low, high) of the AIE over
    prompts (each prompt's tokens of a class averaged first, as `average_indirect_effect`)."""
    rows = []
    counts = None
    for (kind, cls), part in long.groupby(["kind", "token_class"], observed=True):
        values, layers = curves(part, "indirect_effect")
        if counts is None or len(counts[0]) != len(values):
            counts = resample_counts(len(values), seed=seed)
        samples = resampled_means(values, counts)
        for j, layer in enumerate(layers):
            low, high = np.nanpercentile(samples[:, j], [2.5, 97.5]) \
                if not np.all(np.isnan(samples[:, j])) else (np.nan, np.nan)
            rows.append({"kind": kind, "layer": int(layer), "token_class": cls,
                         "low": float(low), "high": float(high)})
    return pd.DataFrame(rows, columns=["kind", "layer", "token_class", "low", "high"])


# --------------------------------------------------------------------------- 04 patching
def normalized_curves(long: pd.DataFrame, component: str, token_class: str, n_layers: int):
    """Per-prompt metric, clean and corrupted curves of one component at one token class."""
    part = long[(long["component"] == component) & (long["token_class"] == token_class)]
    return [curves(part, column, n_layers=n_layers)[0]
            for column in ("metric", "clean", "corrupted")]


def normalized_peak(long: pd.DataFrame, component: str, token_class: str, n_layers: int,
                    seed: int = SEED.default, from_layer: int = 0) -> dict | None:
    """The normalized effect (ratio of means, as `patching.by_class`) of `component` at
    `token_class` by layer: its peak layer (among layers ≥ `from_layer`), the range of
    resampled peaks and the interval of the effect there."""
    metric, clean, corrupted = normalized_curves(long, component, token_class, n_layers)
    keep = ~np.all(np.isnan(metric), axis=1)
    if not keep.any():
        return None
    metric, clean, corrupted = metric[keep], clean[keep], corrupted[keep]
    counts = resample_counts(len(metric), seed=seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        def normalized(m, c, k):
            return (m - k) / (c - k)
        samples = normalized(*(resampled_means(x, counts) for x in (metric, clean, corrupted)))
        mean = normalized(*(np.nanmean(x, 0) for x in (metric, clean, corrupted)))
    mean[:from_layer], samples[:, :from_layer] = np.nan, np.nan  # e.g. the layer-0 MLP
    if np.all(np.isnan(mean)):
        return None
    best = int(np.nanargmax(mean))
    low, high = peak_range(samples)
    return {"layer": best, "effect": float(mean[best]),
            "effect_ci": list(percentile_interval(samples[:, best])),
            "layer_range": [low, high], "resolved": bool(high - low <= n_layers / 3),
            "n": int(len(metric))}


def patching_intervals(long: pd.DataFrame, peaks: pd.DataFrame, n_layers: int,
                       seed: int = SEED.default) -> dict:
    """For each component's peak (layer, token class): the effect's interval and the range of
    the peak layer at that class; the MLP output at the last subject token and the attention
    output at the last token, whatever their component's overall peak."""
    out = {}
    for row in peaks.itertuples():
        found = normalized_peak(long, row.component, row.token_class, n_layers, seed)
        if found:
            out[f"{row.component}_peak_ci"] = found["effect_ci"]
            out[f"{row.component}_peak_layer_range"] = found["layer_range"]
            out[f"{row.component}_peak_layer_resolved"] = found["resolved"]
    # the MLP peak over layers ≥ 1, as causal tracing's: the layer-0 MLP acts as part of the
    # embedding (it restores the subject's identity), so it is reported on its own
    for component, cls, first in (("mlp_out", "subject_last", 1), ("attn_out", "last", 0)):
        found = normalized_peak(long, component, cls, n_layers, seed, from_layer=first)
        if found:
            key = f"{component}_{cls}"
            out.update({f"{key}_peak": found["effect"], f"{key}_peak_ci": found["effect_ci"],
                        f"{key}_peak_layer": found["layer"],
                        f"{key}_peak_layer_range": found["layer_range"],
                        f"{key}_peak_layer_resolved": found["resolved"]})
    layer0 = _layer0_effect(long, seed)
    if layer0 is not None:
        out["mlp_out_subject_last_layer0"], out["mlp_out_subject_last_layer0_ci"] = layer0
    return out


def _layer0_effect(long: pd.DataFrame, seed: int) -> tuple[float, list[float]] | None:
    """The layer-0 MLP's normalized effect at the last subject token, with its interval."""
    metric, clean, corrupted = normalized_curves(long, "mlp_out", "subject_last", 1)
    column = [x[:, 0] for x in (metric, clean, corrupted)]
    keep = ~np.isnan(column[0])
    if not keep.any():
        return None
    m, c, k = (x[keep] for x in column)
    found = ratio_of_means_estimate(m - k, c - k, seed)
    return found.value, found.interval()


def head_effect_interval(values: np.ndarray, clean: np.ndarray, corrupted: np.ndarray,
                         seed: int = SEED.default) -> list[float]:
    """Interval of one head's normalized patching effect (ratio of means over pairs)."""
    return ratio_of_means_estimate(values - corrupted, clean - corrupted, seed).interval()


# --------------------------------------------------------------------------- 03, 06
def peak_window_range(table: pd.DataFrame, role: str, seed: int = SEED.default) -> list[int]:
    """Knockout: the range of window centres where removing `role` lowers P(answer) most, in
    95 % of resamples (the minimum of the mean relative change, as `knockout.peak_windows`)."""
    part = table[table["role"] == role]
    values, centres = curves(part, "relative_p_change", prompt="prompt", layer="centre")
    samples = resampled_means(values, resample_counts(len(values), seed=seed))
    return list(peak_range(-samples, centres))  # the largest fall: the peak of −change


def cell_interval(table: pd.DataFrame, value: str, seed: int = SEED.default, prompt: str = "prompt",
                  **where) -> list[float]:
    """Interval of the mean over prompts of `value` in the rows matching `where`."""
    part = table
    for column, wanted in where.items():
        part = part[part[column] == wanted]
    per_prompt = part.groupby(prompt)[value].mean()
    return mean_estimate(per_prompt.to_numpy(), seed).interval()
