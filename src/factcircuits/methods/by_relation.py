"""By relation: where each relation's mechanism peaks, with the range of resampled peaks, and
whether it differs from the pooled study (the range excludes the pooled peak layer). Curves per
relation with their bands feed the small multiples in the notebooks."""

from __future__ import annotations

import numpy as np
import pandas as pd

from factcircuits.methods.intervals import normalized_peak
from factcircuits.methods.uncertainty import peak_of_curves, resample_counts, resampled_means
from factcircuits.results.parameter_declarations import SEED
from factcircuits.results.wording import MIN_PROMPTS, not_tested_text


def relation_peaks(values: np.ndarray, relations, pooled_layer: int, n_layers: int,
                   seed: int = SEED.default, layers=None) -> pd.DataFrame:
    """Per relation: prompts, the peak layer of the mean curve with the range of resampled
    peaks, the value there with its interval, and whether the range excludes the pooled peak
    layer. `values` [n_prompts, n_points] (one row per prompt), `relations` per row."""
    relations = np.asarray(relations, dtype=str)
    rows = []
    for relation in sorted(set(relations)):
        part = values[relations == relation]
        part = part[~np.all(np.isnan(part), axis=1)]
        if not len(part):
            continue
        peak = peak_of_curves(part, seed=seed, n_layers=n_layers, layers=layers)
        rows.append({"relation": relation, "n": len(part), "peak_layer": peak.layer,
                     "layer_low": peak.layer_low, "layer_high": peak.layer_high,
                     "value": peak.value.value, "value_low": peak.value.low,
                     "value_high": peak.value.high,
                     "differs_from_pooled": len(part) >= MIN_PROMPTS and not
                     peak.layer_low <= pooled_layer <= peak.layer_high})
    return pd.DataFrame(rows)


def relation_peaks_markdown(table: pd.DataFrame, pooled_layer: int, what: str) -> str:
    """Which relations' peak ranges exclude the pooled peak layer, in one sentence."""
    if table is None or table.empty:
        return ""
    differ = table[table["differs_from_pooled"]]
    few = int((table["n"] < MIN_PROMPTS).sum())
    if few == len(table):
        return f"{what}: by relation, not tested: {not_tested_text(few, len(table))}."
    note = f" ({not_tested_text(few, len(table))})" if few else ""
    if differ.empty:
        return (f"{what}: no relation's range of resampled peaks excludes the pooled peak "
                f"(layer {pooled_layer}){note}.")
    names = ", ".join(f"{r.relation} (layer {r.peak_layer}, 95% of resamples in "
                      f"{r.layer_low}–{r.layer_high}, n = {r.n})" for r in differ.itertuples())
    return (f"{what}: relations whose range of resampled peaks excludes the pooled peak "
            f"(layer {pooled_layer}): {names}{note}.")


def relation_curves(values: np.ndarray, relations, seed: int = SEED.default,
                    layers=None) -> pd.DataFrame:
    """Per relation and layer: the mean curve and its 95 % bootstrap band (small multiples)."""
    relations = np.asarray(relations, dtype=str)
    layers = np.arange(values.shape[1]) if layers is None else np.asarray(layers)
    frames = []
    for relation in sorted(set(relations)):
        part = values[relations == relation]
        samples = resampled_means(part, resample_counts(len(part), seed=seed))
        with np.errstate(all="ignore"):
            low, high = np.nanpercentile(samples, [2.5, 97.5], axis=0)
        frames.append(pd.DataFrame({"relation": relation, "layer": layers, "n": len(part),
                                    "mean": np.nanmean(part, axis=0), "low": low,
                                    "high": high}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def relation_normalized_peaks(long: pd.DataFrame, component: str, token_class: str,
                              relations, pooled_layer: int, n_layers: int,
                              seed: int = SEED.default, from_layer: int = 0) -> pd.DataFrame:
    """`normalized_peak` per relation (`relations[prompt_id]`), with whether its range
    excludes the pooled peak layer."""
    relations = np.asarray(relations, dtype=str)
    rows = []
    for relation in sorted(set(relations)):
        ids = np.flatnonzero(relations == relation)
        found = normalized_peak(long[long["prompt_id"].isin(ids)], component, token_class,
                                n_layers, seed, from_layer)
        if found:
            low, high = found["layer_range"]
            rows.append({"relation": relation, "n": found["n"], "peak_layer": found["layer"],
                         "layer_low": low, "layer_high": high, "value": found["effect"],
                         "value_low": found["effect_ci"][0], "value_high": found["effect_ci"][1],
                         "differs_from_pooled": found["n"] >= MIN_PROMPTS and not
                         low <= pooled_layer <= high})
    return pd.DataFrame(rows)


def relation_figure(curves: pd.DataFrame, title: str, y_label: str, wrap: int = 4):
    """Small multiples: one panel per relation, its mean curve and 95% band."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    relations = list(dict.fromkeys(curves["relation"]))
    rows = (len(relations) + wrap - 1) // wrap
    n = curves.groupby("relation")["n"].first()
    fig = make_subplots(rows=rows, cols=wrap, shared_xaxes=True, shared_yaxes=True,
                        subplot_titles=[f"{r} (n = {n[r]})" for r in relations],
                        vertical_spacing=min(0.3 / max(rows, 1), 0.08))
    for i, relation in enumerate(relations):
        part = curves[curves["relation"] == relation]
        where = {"row": i // wrap + 1, "col": i % wrap + 1}
        fig.add_trace(go.Scatter(x=list(part["layer"]) + list(part["layer"])[::-1],
                                 y=list(part["high"]) + list(part["low"])[::-1], fill="toself",
                                 mode="none", fillcolor="rgba(99,110,250,0.2)",
                                 showlegend=False, hoverinfo="skip"), **where)
        fig.add_trace(go.Scatter(x=part["layer"], y=part["mean"], mode="lines",
                                 line={"color": "#636efa"}, showlegend=False,
                                 name=relation), **where)
    fig.update_annotations(font_size=10)
    fig.update_layout(title=title, height=190 * rows + 90, margin={"t": 80})
    fig.update_yaxes(title_text=y_label, col=1)
    fig.update_xaxes(title_text="layer", row=rows)
    return fig
