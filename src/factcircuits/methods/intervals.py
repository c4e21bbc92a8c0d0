"""The intervals and tests behind each notebook's headline: `uncertainty` applied to the
per-prompt tables the methods already return. Keys follow the headline they sit beside:
`<number>_ci` = [low, high] (95 % bootstrap over prompts), `<layer>_range` = [first, last]
layers holding the resampled peak in 95 % of resamples, `<layer>_resolved` = that range spans
at most a third of the model; a claim is a dict with its test (see `claim`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from factcircuits.methods.uncertainty import (
    Comparison,
    mean_estimate,
    paired_comparison,
    peak_of_curves,
    peak_range,
    percentile_interval,
    ratio_of_means_estimate,
    resample_counts,
    resampled_means,
)


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


def claim(name: str, comparison: Comparison, statement: str) -> dict:
    """A comparison over prompts, ready for the findings: what is claimed, the test, the mean
    difference with its interval, the p-values and the sample size."""
    d = comparison.difference
    verdict = ("supported" if d.low > 0 else "contradicted" if d.high < 0 else "not resolved")
    return {"claim": statement, "name": name, "test": "paired bootstrap and sign test over prompts",
            "difference": d.value, "difference_ci": d.interval(), "n": d.n,
            "p_bootstrap": comparison.p_bootstrap, "p_sign": comparison.p_sign,
            "n_positive": comparison.n_positive, "n_negative": comparison.n_negative,
            "verdict": verdict}


def peak_order(a: np.ndarray, b: np.ndarray, seed: int = 0) -> float:
    """Share of resamples (the same prompts drawn for both) in which curve `a` peaks at an
    earlier layer than curve `b`; both [n_prompts, n_layers]."""
    counts = resample_counts(len(a), seed=seed)
    peak_a = np.nanargmax(np.nan_to_num(resampled_means(a, counts), nan=-np.inf), axis=1)
    peak_b = np.nanargmax(np.nan_to_num(resampled_means(b, counts), nan=-np.inf), axis=1)
    return float(np.mean(peak_a < peak_b))


# --------------------------------------------------------------------------- 05 causal tracing
def tracing_intervals(long: pd.DataFrame, n_layers: int, seed: int = 0) -> dict:
    """Per (state kind, token class): the peak AIE's interval and the peak layer's range; the
    claims 'MLPs carry more than attention at the last subject token' and 'the MLP peak at the
    last subject token comes before attention's at the last token'."""
    out, per = {}, {}
    for (kind, cls), part in long.groupby(["kind", "token_class"], observed=True):
        values, _ = curves(part, "indirect_effect", n_layers=n_layers)
        values = values[~np.all(np.isnan(values), axis=1)]
        if not len(values):
            continue
        per[kind, cls] = values
        peak = peak_of_curves(values, seed=seed, n_layers=n_layers)
        out[f"{kind}_{cls}_peak_aie_ci"] = peak.value.interval()
        out[f"{kind}_{cls}_peak_layer_range"] = peak.layer_range()
        out[f"{kind}_{cls}_peak_layer_resolved"] = peak.resolved()
    mlp, attn = per.get(("mlp", "subject_last")), per.get(("attn", "subject_last"))
    if mlp is not None and attn is not None and len(mlp) == len(attn):
        # each prompt's state at its kind's peak layer (of the mean curve)
        a = mlp[:, int(np.nanargmax(np.nanmean(mlp, 0)))]
        b = attn[:, int(np.nanargmax(np.nanmean(attn, 0)))]
        out["claim_mlp_over_attn_subject_last"] = claim(
            "mlp_over_attn_subject_last", paired_comparison(a, b, seed),
            "restoring MLP outputs at the last subject token recovers more than restoring "
            "attention outputs there (each at its peak layer)")
    late = per.get(("attn", "last"))
    if mlp is not None and late is not None and len(mlp) == len(late):
        out["mlp_subject_before_attn_last_share"] = peak_order(mlp, late, seed)
    return out


def aie_bands(long: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
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
                    seed: int = 0) -> dict | None:
    """The normalized effect (ratio of means, as `patching.by_class`) of `component` at
    `token_class` by layer: its peak layer, the range of resampled peaks and the interval of
    the effect there."""
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
    if np.all(np.isnan(mean)):
        return None
    best = int(np.nanargmax(mean))
    low, high = peak_range(samples)
    return {"layer": best, "effect": float(mean[best]),
            "effect_ci": list(percentile_interval(samples[:, best])),
            "layer_range": [low, high], "resolved": bool(high - low <= n_layers / 3),
            "n": int(len(metric))}


def patching_intervals(long: pd.DataFrame, peaks: pd.DataFrame, n_layers: int,
                       seed: int = 0) -> dict:
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
    for component, cls in (("mlp_out", "subject_last"), ("attn_out", "last")):
        found = normalized_peak(long, component, cls, n_layers, seed)
        if found:
            key = f"{component}_{cls}"
            out.update({f"{key}_peak": found["effect"], f"{key}_peak_ci": found["effect_ci"],
                        f"{key}_peak_layer": found["layer"],
                        f"{key}_peak_layer_range": found["layer_range"],
                        f"{key}_peak_layer_resolved": found["resolved"]})
    return out


def head_effect_interval(values: np.ndarray, clean: np.ndarray, corrupted: np.ndarray,
                         seed: int = 0) -> list[float]:
    """Interval of one head's normalized patching effect (ratio of means over pairs)."""
    return ratio_of_means_estimate(values - corrupted, clean - corrupted, seed).interval()


# --------------------------------------------------------------------------- 03, 06
def peak_window_range(table: pd.DataFrame, role: str, seed: int = 0) -> list[int]:
    """Knockout: the range of window centres where removing `role` lowers P(answer) most, in
    95 % of resamples (the minimum of the mean relative change, as `knockout.peak_windows`)."""
    part = table[table["role"] == role]
    values, centres = curves(part, "relative_p_change", prompt="prompt", layer="centre")
    samples = resampled_means(values, resample_counts(len(values), seed=seed))
    return list(peak_range(-samples, centres))  # the largest fall: the peak of −change


def cell_interval(table: pd.DataFrame, value: str, seed: int = 0, prompt: str = "prompt",
                  **where) -> list[float]:
    """Interval of the mean over prompts of `value` in the rows matching `where`."""
    part = table
    for column, wanted in where.items():
        part = part[part[column] == wanted]
    per_prompt = part.groupby(prompt)[value].mean()
    return mean_estimate(per_prompt.to_numpy(), seed).interval()
