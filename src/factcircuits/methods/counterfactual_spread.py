"""How much activation patching's maps move with the counterfactual: the same patching run on
each counterfactual draw (`counterfactual_sets.counterfactual_tasks`), the maps averaged over
the draws with the spread between them, and how far each located peak moves.

A draw's pairs are the prompts whose drawn partner has their token length, so draws can
differ in their prompts as well as in their partners: the spread is the sensitivity of the
map to both, which is what a reader changing the counterfactual would see.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from factcircuits.methods import patching as P
from factcircuits.methods.counterfactual_sets import counterfactual_tasks
from factcircuits.methods.engine import MAX_PATCHES
from factcircuits.methods.evaluate import PreparedTask
from factcircuits.models import LoadedModel

#: the located peaks whose movement is reported: (name, component, token class or None = the
#: component's best class, first layer considered)
PEAKS = (("mlp_out_subject_last", "mlp_out", "subject_last", 1),
         ("attn_out_last", "attn_out", "last", 0),
         ("resid_pre", "resid_pre", None, 0))


@dataclass
class CounterfactualSpread:
    classes: pd.DataFrame  # by_class per draw: component, layer, token_class, normalized, draw
    averaged: pd.DataFrame  # per (component, layer, token_class): mean, low, high over draws
    peaks: pd.DataFrame  # per (draw, peak): layer, effect, n_pairs
    n_pairs: dict[int, int]  # pairs patched per draw

    def shift(self, peak: str) -> int | None:
        """How many layers the named peak moves across the draws (max − min; None when fewer
        than two draws locate it)."""
        layers = self.peaks.loc[self.peaks["peak"] == peak, "layer"].dropna()
        return int(layers.max() - layers.min()) if len(layers) >= 2 else None

    def layers(self, peak: str) -> list[int]:
        """The named peak's layer in each draw, in draw order."""
        part = self.peaks[self.peaks["peak"] == peak].sort_values("draw")
        return [int(x) for x in part["layer"].dropna()]


def same_pairs(a: PreparedTask, b: PreparedTask) -> bool:
    """Whether two tasks hold the same prompt pairs and the same metric's tokens."""
    def ids(t):
        return None if t.cf_ids is None else (t.answer_ids.tolist(), t.cf_ids.tolist())
    return (a.prompts == b.prompts and a.corrupted_prompts == b.corrupted_prompts
            and ids(a) == ids(b) and a.signs.tolist() == b.signs.tolist())


def class_peak(classes: pd.DataFrame, component: str, token_class: str | None,
               from_layer: int = 0) -> tuple[int | None, float | None]:
    """(layer, normalized effect) where `component`'s class-averaged effect peaks, at
    `token_class` (None: any class), among layers ≥ `from_layer`."""
    part = classes[(classes["component"] == component) & (classes["layer"] >= from_layer)]
    if token_class is not None:
        part = part[part["token_class"] == token_class]
    part = part.dropna(subset=["normalized"])
    if part.empty:
        return None, None
    row = part.loc[part["normalized"].idxmax()]
    return int(row["layer"]), float(row["normalized"])


def patch_over_counterfactuals(lm: LoadedModel, prepared: PreparedTask,
                               components=("resid_pre", "attn_out", "mlp_out"), *,
                               direction: str = "denoising", max_patches=MAX_PATCHES.default,
                               reuse: tuple[PreparedTask, pd.DataFrame] | None = None,
                               progress: bool = False) -> CounterfactualSpread:
    """Patch `components` by position on every counterfactual draw of `prepared` (its
    `counterfactual_draws`, else its own pairs as draw 0) and compare the draws' maps.
    `reuse`: (pairs, their `tidy` long table of `components` in `direction`, on the share
    scale) already patched; a draw with exactly those pairs is read from it, not patched."""
    frames, peaks, n_pairs = [], [], {}
    for draw in counterfactual_tasks(prepared, lm.tokenizer):
        if reuse is not None and same_pairs(draw.task, reuse[0]):
            long = reuse[1][reuse[1]["component"].isin(components)]
        else:
            positions = P.position_table(lm, draw.task)
            long = pd.concat([P.tidy(P.patch(lm, draw.task, c, direction=direction,
                                             max_patches=max_patches, progress=progress)
                                     .as_effect(), positions) for c in components],
                             ignore_index=True)
        classes = P.by_class(long, "token_class").assign(draw=draw.draw)
        frames.append(classes)
        n_pairs[draw.draw] = len(draw.prompt_ids)
        for name, component, token_class, first in PEAKS:
            if component in components:
                layer, effect = class_peak(classes, component, token_class, first)
                if layer is None:  # no pair of this draw has that token class
                    continue
                peaks.append({"draw": draw.draw, "peak": name, "layer": layer,
                              "effect": effect, "n_pairs": len(draw.prompt_ids)})
    classes = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["component", "layer", "token_class", "normalized", "draw"])
    averaged = (classes.groupby(["component", "layer", "token_class"], observed=True)
                ["normalized"].agg(mean="mean", low="min", high="max", n_draws="count")
                .reset_index())
    return CounterfactualSpread(classes, averaged, pd.DataFrame(
        peaks, columns=["draw", "peak", "layer", "effect", "n_pairs"]), n_pairs)


def sensitivity_sentence(spread: CounterfactualSpread, peak: str, what: str) -> str:
    """'Across 3 counterfactual draws (7, 5 and 4 pairs) the peak of <what> lies at layers
    4, 5 and 4: it moves by at most 1 layer.' Empty when fewer than two draws locate it."""
    layers, shift = spread.layers(peak), spread.shift(peak)
    if shift is None:
        return ""
    counts = [spread.n_pairs[d] for d in sorted(spread.n_pairs)]
    listed = lambda xs: (", ".join(map(str, xs[:-1])) + f" and {xs[-1]}")  # noqa: E731
    return (f"Across {len(counts)} counterfactual draws ({listed(counts)} pairs) the peak of "
            f"{what} lies at layers {listed(layers)}: it moves by at most {shift} "
            f"layer{'s' if shift != 1 else ''}.")
