"""Notebook 04, activation patching: the residual stream, attention and MLP outputs by position
and every head, clean into corrupted (denoising: sufficiency) and corrupted into clean
(noising: necessity), for the equal-length prompt pairs; the maps on several counterfactuals
per prompt and how far their peaks move; and the fast scan (AtP, AtP*) checked against it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from factcircuits.methods import atp_checks as AC
from factcircuits.methods import attribution_patching as AP
from factcircuits.methods import by_relation as R
from factcircuits.methods import counterfactual_spread as CS
from factcircuits.methods import intervals as I
from factcircuits.methods import necessity as NS
from factcircuits.methods import patching as P
from factcircuits.methods.atp_checks import SCAN_TOP_K
from factcircuits.methods.counterfactual_sets import N_COUNTERFACTUALS, with_counterfactuals
from factcircuits.methods.engine import MAX_PATCHES
from factcircuits.methods.evaluate import PreparedTask, relations_of
from factcircuits.methods.patching import HEADS_BY_POSITION
from factcircuits.methods.positions import CLASS_TITLES, TOKEN_CLASSES
from factcircuits.methods.uncertainty import layer_with_range, with_interval
from factcircuits.models import LoadedModel
from factcircuits.results.estimates import ANSWER_HEAD, MLP_AT_SUBJECT, Estimate
from factcircuits.results.headlines import Headline, interval, layer_range, number
from factcircuits.results.kinds import Table
from factcircuits.results.parameter_declarations import SEED
from factcircuits.results.registry import (
    BY_RELATION,
    HEADS,
    WHERE,
    Finding,
    Method,
    Profile,
    Sample,
)
from factcircuits.results.run import Run
from factcircuits.results.summary import Options, Summary, estimates_of
from factcircuits.results.wording import (
    LAYER0_MLP,
    head_label,
    interval_cells,
    layer_text,
    peak_cell,
    relation_peaks_text,
)

NORMALIZED = "fraction of the clean−corrupted gap"
LOST = "fraction of the clean−corrupted gap lost"
PATCHED_COMPONENTS = ("resid_pre", "attn_out", "mlp_out")
NAME = "activation patching"  # the estimator, as sentences name it


TOP_HEADS = 5  # heads the summary lists by |patching effect| (not a run parameter)


def _peak(what: str):
    return number(f"peak of patching {what} (normalized)", NORMALIZED)


def _peak_layer(what: str):
    return number(f"layer of the peak of patching {what} (normalized)", "layer")


def _peak_class(what: str):
    return number(f"token class where patching {what} (normalized) peaks")


RESOLVED = "that range spans at most a third of the model"
NOISING = "noising"  # the variant's name in sentences and Estimates
# patched on every counterfactual draw: the two whose peaks the findings follow (the attention
# output would add a third of the draws' cost for a peak no sentence reads)
SPREAD_COMPONENTS = ("resid_pre", "mlp_out")


def _lost_at(what: str):
    return number(f"share of the gap lost when {what} is corrupted in the clean run at the "
                  "denoising peak (noising)", LOST)


def _verdict(what: str):
    return number(f"{what} at the denoising peak: necessary, sufficient, both or neither "
                  f"resolved (95% interval of the share lost / restored above {NS.BAR})")


def _shift(what: str):
    return number(f"layers the peak of {what} moves across the counterfactual draws "
                  "(max − min)", "layers")
MLP_SUBJECT = "MLP outputs at the last subject token (layers ≥ 1)"
ATTN_LAST = "attention outputs at the last token"


@dataclass
class PatchingHeadline(Headline):
    """Notebook 04's headline: sample, peaks with ranges, top head, AtP."""

    n_pairs: int | None = number("equal-length prompt pairs patched", "pairs")
    n_dropped_unequal: int | None = number("pairs left out for unequal token length", "pairs")
    metric: str | None = number("the metric patched (the task's main metric)")
    clean_metric: float | None = number("mean metric of the clean prompts", "metric")
    corrupted_metric: float | None = number("mean metric of the corrupted prompts", "metric")
    resid_pre_handover_layer: int | None = number(
        "first layer where patching the last token's residual restores at least as much as "
        "the subject's", "layer")
    top_head_layer: int | None = number("layer of the head whose patching restores most",
                                        "layer")
    top_head: int | None = number("that head's index in its layer", "head")
    top_head_effect: float | None = number("its normalized effect", NORMALIZED)
    top_head_effect_ci: list[float] | None = interval("top_head_effect")
    atp_seconds: float | None = number("time of the AtP scan (all four grids)", "seconds")
    exact_patching_seconds: float | None = number("time of the exact patching", "seconds")
    atp_resid_pre_spearman: float | None = number("rank correlation of AtP with exact "
                                                  "patching over residual cells", "Spearman ρ")
    atp_star_resid_pre_spearman: float | None = number("the same for AtP*", "Spearman ρ")
    atp_resid_pre_recall_top5_in_top10: float | None = number(
        "share of each prompt's 5 largest exact effects among AtP's 10 largest",
        "fraction")
    atp_resid_pre_exact_near_top5: float | None = number(
        "residual cells per prompt within 10% of the fifth largest exact effect", "cells")
    atp_heads_by_pos_same_sign: float | None = number(
        "share of AtP's proposed head × position cells whose exact effect has its sign",
        "fraction")
    # each patched component's peak over layers and token classes
    resid_pre_peak: float | None = _peak("residual stream (resid_pre)")
    resid_pre_peak_ci: list | None = interval("resid_pre_peak")
    resid_pre_peak_layer: int | None = _peak_layer("residual stream (resid_pre)")
    resid_pre_peak_layer_range: list | None = layer_range("resid_pre_peak_layer")
    resid_pre_peak_layer_resolved: bool | None = number(RESOLVED)
    resid_pre_peak_class: str | None = _peak_class("residual stream (resid_pre)")
    attn_out_peak: float | None = _peak("attention output")
    attn_out_peak_ci: list | None = interval("attn_out_peak")
    attn_out_peak_layer: int | None = _peak_layer("attention output")
    attn_out_peak_layer_range: list | None = layer_range("attn_out_peak_layer")
    attn_out_peak_layer_resolved: bool | None = number(RESOLVED)
    attn_out_peak_class: str | None = _peak_class("attention output")
    mlp_out_peak: float | None = _peak("MLP output")
    mlp_out_peak_ci: list | None = interval("mlp_out_peak")
    mlp_out_peak_layer: int | None = _peak_layer("MLP output")
    mlp_out_peak_layer_range: list | None = layer_range("mlp_out_peak_layer")
    mlp_out_peak_layer_resolved: bool | None = number(RESOLVED)
    mlp_out_peak_class: str | None = _peak_class("MLP output")
    # the MLP output at the last subject token, and attention's at the last token
    mlp_out_subject_last_peak: float | None = number(f"peak of patching {MLP_SUBJECT}",
                                                     NORMALIZED)
    mlp_out_subject_last_peak_ci: list | None = interval("mlp_out_subject_last_peak")
    mlp_out_subject_last_peak_layer: int | None = number(
        f"layer of the peak of patching {MLP_SUBJECT}", "layer")
    mlp_out_subject_last_peak_layer_range: list | None = layer_range(
        "mlp_out_subject_last_peak_layer")
    mlp_out_subject_last_peak_layer_resolved: bool | None = number(RESOLVED)
    mlp_out_subject_last_layer0: float | None = number(
        "patching the layer-0 MLP output at the last subject token (part of the embedding, so "
        "reported on its own)", NORMALIZED)
    mlp_out_subject_last_layer0_ci: list | None = interval("mlp_out_subject_last_layer0")
    attn_out_last_peak: float | None = number(f"peak of patching {ATTN_LAST}", NORMALIZED)
    attn_out_last_peak_ci: list | None = interval("attn_out_last_peak")
    attn_out_last_peak_layer: int | None = number(f"layer of the peak of patching {ATTN_LAST}",
                                                  "layer")
    attn_out_last_peak_layer_range: list | None = layer_range("attn_out_last_peak_layer")
    attn_out_last_peak_layer_resolved: bool | None = number(RESOLVED)
    # noising: the clean run with one corrupted state (necessity), on the share-lost scale
    noising_resid_pre_peak: float | None = number(
        "largest share lost by corrupting the residual stream at one layer and token class",
        LOST)
    noising_resid_pre_peak_ci: list | None = interval("noising_resid_pre_peak")
    noising_resid_pre_peak_layer: int | None = number("layer of that peak", "layer")
    noising_resid_pre_peak_layer_range: list | None = layer_range("noising_resid_pre_peak_layer")
    noising_resid_pre_peak_class: str | None = number("token class of that peak")
    noising_mlp_out_subject_last_peak: float | None = number(
        f"peak share lost by corrupting {MLP_SUBJECT}", LOST)
    noising_mlp_out_subject_last_peak_ci: list | None = interval(
        "noising_mlp_out_subject_last_peak")
    noising_mlp_out_subject_last_peak_layer: int | None = number(
        f"layer of the noising peak of {MLP_SUBJECT}", "layer")
    noising_mlp_out_subject_last_peak_layer_range: list | None = layer_range(
        "noising_mlp_out_subject_last_peak_layer")
    noising_attn_out_last_peak: float | None = number(
        f"peak share lost by corrupting {ATTN_LAST}", LOST)
    noising_attn_out_last_peak_ci: list | None = interval("noising_attn_out_last_peak")
    noising_attn_out_last_peak_layer: int | None = number(
        f"layer of the noising peak of {ATTN_LAST}", "layer")
    noising_top_head_layer: int | None = number("layer of the head whose corruption loses most",
                                                "layer")
    noising_top_head: int | None = number("that head's index in its layer", "head")
    noising_top_head_effect: float | None = number("the share it loses", LOST)
    noising_top_head_effect_ci: list | None = interval("noising_top_head_effect")
    # each denoising peak read both ways
    resid_pre_lost_at_peak: float | None = _lost_at("the residual stream")
    resid_pre_lost_at_peak_ci: list | None = interval("resid_pre_lost_at_peak")
    resid_pre_verdict: str | None = _verdict("the residual stream")
    mlp_out_subject_last_lost_at_peak: float | None = _lost_at(MLP_SUBJECT)
    mlp_out_subject_last_lost_at_peak_ci: list | None = interval(
        "mlp_out_subject_last_lost_at_peak")
    mlp_out_subject_last_verdict: str | None = _verdict(MLP_SUBJECT)
    attn_out_last_lost_at_peak: float | None = _lost_at(ATTN_LAST)
    attn_out_last_lost_at_peak_ci: list | None = interval("attn_out_last_lost_at_peak")
    attn_out_last_verdict: str | None = _verdict(ATTN_LAST)
    # several counterfactuals per prompt (denoising)
    n_counterfactual_draws: int | None = number("counterfactual draws patched", "draws")
    counterfactual_draw_pairs: list | None = number("pairs patched in each draw", "pairs")
    mlp_out_subject_last_peak_layers_by_draw: list | None = number(
        f"layer of the peak of {MLP_SUBJECT} in each draw", "layers")
    mlp_out_subject_last_peak_shift: int | None = _shift(MLP_SUBJECT)
    resid_pre_peak_layers_by_draw: list | None = number(
        "layer of the residual stream's peak in each draw", "layers")
    resid_pre_peak_shift: int | None = _shift("the residual stream")

    def estimates(self) -> list[Estimate]:
        """The head whose patching restores most and the MLP peak at the last subject token."""
        found = []
        if self.top_head_layer is not None:
            found.append(Estimate(
                ANSWER_HEAD, NAME, site="head", layer=int(self.top_head_layer),
                head=self.top_head, value=self.top_head_effect, interval=self.top_head_effect_ci,
                unit=NORMALIZED, n=self.n_pairs, how="head patching",
                why="head whose patching restores most"))
        if self.mlp_out_subject_last_peak_layer is not None:
            found.append(Estimate(
                MLP_AT_SUBJECT, NAME, site="mlp", token_class="subject_last",
                layer=int(self.mlp_out_subject_last_peak_layer),
                layer_range=self.mlp_out_subject_last_peak_layer_range,
                value=self.mlp_out_subject_last_peak, interval=self.mlp_out_subject_last_peak_ci,
                unit=NORMALIZED, n=self.n_pairs,
                why="MLP output peak at the last subject token"))
        if self.noising_mlp_out_subject_last_peak_layer is not None:
            found.append(Estimate(
                MLP_AT_SUBJECT, NAME, site="mlp", token_class="subject_last",
                layer=int(self.noising_mlp_out_subject_last_peak_layer),
                layer_range=self.noising_mlp_out_subject_last_peak_layer_range,
                value=self.noising_mlp_out_subject_last_peak,
                interval=self.noising_mlp_out_subject_last_peak_ci, unit=LOST, n=self.n_pairs,
                how=f"{NAME} ({NOISING})"))
        return found


@dataclass
class PatchingMaps:
    """Exact patching's maps and peaks (denoising; noising and the counterfactual draws once
    `add_noising` and `add_spread` ran), and the headline's numbers so far."""

    headline: dict
    results: dict[str, P.PatchResult] = field(default_factory=dict)  # empty: nothing patchable
    heads: P.PatchResult | None = None  # per head, all positions
    heads_by_position: P.PatchResult | None = None
    positions: pd.DataFrame | None = None  # patching.position_table
    long: pd.DataFrame | None = None  # patching.tidy of every component
    classes: pd.DataFrame | None = None  # normalized effect by token class
    roles: pd.DataFrame | None = None  # normalized effect by role
    top_heads: pd.DataFrame | None = None
    peaks: pd.DataFrame | None = None  # per component: peak class and peak role
    caveat: str = ""  # normalization_caveat
    handover: int | None = None  # first layer where the last token's effect ≥ the subject's
    by_relation: pd.DataFrame | None = None  # MLP output at the last subject token
    noising: dict[str, P.PatchResult] = field(default_factory=dict)  # corrupted into clean
    noising_heads: P.PatchResult | None = None
    noising_long: pd.DataFrame | None = None  # tidy, on the share-lost scale
    noising_classes: pd.DataFrame | None = None  # share lost by token class
    states: pd.DataFrame | None = None  # each denoising peak read both ways (necessity.both_ways)
    spread: CS.CounterfactualSpread | None = None  # denoising on every counterfactual draw

    def noising_grid(self, component: str) -> pd.DataFrame:
        """Share lost [layer × token class] of `component`, classes in reading order."""
        grid = self.noising_classes[self.noising_classes["component"] == component].pivot(
            index="layer", columns="token_class", values="normalized")
        return grid[[c for c in TOKEN_CLASSES if c in grid.columns]]

    def class_grid(self, component: str) -> pd.DataFrame:
        """Normalized effect [layer × token class] of `component`, classes in reading order."""
        grid = self.classes[self.classes["component"] == component].pivot(
            index="layer", columns="token_class", values="normalized")
        return grid[[c for c in TOKEN_CLASSES if c in grid.columns]]


def handover_layer(roles: pd.DataFrame) -> int | None:
    """First layer where patching the residual stream at the last token restores at least as
    much as at the subject tokens (None when it never does, or a role is missing)."""
    resid = roles[roles["component"] == "resid_pre"].pivot(index="layer", columns="role",
                                                           values="normalized")
    if not {"subject", "last"} <= set(resid.columns):
        return None
    later = resid.index[resid["last"] >= resid["subject"]]
    return int(later[0]) if len(later) else None


def patch_maps(
        lm: LoadedModel,
        pairs: PreparedTask,
        *,
        n_dropped: int = 0,
        max_patches=MAX_PATCHES.default,
        heads_by_position: bool = HEADS_BY_POSITION.default,
        top_k: int = TOP_HEADS,
        seed: int = SEED.default,
        progress: bool = True) -> PatchingMaps:
    """Activation patching (denoising) of the residual stream, attention and MLP outputs by
    position and of every head, for the equal-length pairs `pairs` (`n_dropped` others were
    left out); `add_noising` and `add_spread` add the controls."""
    headline = {"n_pairs": len(pairs.prompts), "n_dropped_unequal": n_dropped,
                "metric": pairs.main_metric}
    if not len(pairs.prompts):
        return PatchingMaps(headline)
    positions = P.position_table(lm, pairs)
    results = {c: P.patch(lm, pairs, c, max_patches=max_patches, progress=progress)
               for c in PATCHED_COMPONENTS}
    heads = P.patch_heads(lm, pairs, max_patches=max_patches, progress=progress)
    long = pd.concat([P.tidy(r, positions) for r in results.values()], ignore_index=True)
    classes, roles = P.by_class(long, "token_class"), P.by_class(long, "role")
    clean_mean, corrupt_mean = float(heads.clean.mean()), float(heads.corrupted.mean())
    head_grid = heads.normalized_mean()
    flat = head_grid.flatten().nan_to_num(float("-inf"))
    top = flat.topk(min(top_k, len(flat)))
    n_heads = head_grid.shape[1]
    top_heads = pd.DataFrame({"layer": (top.indices // n_heads).tolist(),
                              "head": (top.indices % n_heads).tolist(),
                              "normalized": top.values.tolist()})
    by_pos = (P.patch_heads_by_pos(lm, pairs, max_patches=max_patches, progress=progress)
              if heads_by_position else None)
    rows = []
    for component in results:
        best = P.peak(long[long["component"] == component], "token_class")
        best_role = P.peak(long[long["component"] == component], "role")
        rows.append({"component": component, **best, "role": best_role["role"],
                     "role_effect": best_role["effect"], "role_layer": best_role["layer"]})
        headline[f"{component}_peak"] = best["effect"]
        headline[f"{component}_peak_layer"] = best["layer"]
        headline[f"{component}_peak_class"] = best["token_class"]
    handover = handover_layer(roles)
    n_layers = lm.model.cfg.n_layers
    headline.update(I.patching_intervals(long, pd.DataFrame(rows), n_layers, seed))
    layer, head = int(top_heads["layer"][0]), int(top_heads["head"][0])
    headline.update(top_head_layer=layer, top_head=head,
                    top_head_effect=float(top_heads["normalized"][0]),
                    top_head_effect_ci=I.head_effect_interval(
                        heads.values[layer, head].numpy(), heads.clean.numpy(),
                        heads.corrupted.numpy(), seed),
                    clean_metric=clean_mean, corrupted_metric=corrupt_mean,
                    resid_pre_handover_layer=handover)
    relations = relations_of(pairs)
    pooled = headline.get("mlp_out_subject_last_peak_layer")
    by_relation = (None if relations is None or pooled is None else
                   R.relation_normalized_peaks(long, "mlp_out", "subject_last", relations,
                                               pooled, n_layers, seed, from_layer=1))
    summary = PatchingMaps(headline, results, heads, by_pos, positions, long, classes,
                              roles, top_heads, pd.DataFrame(rows),
                              P.normalization_caveat(clean_mean, corrupt_mean,
                                                     pairs.main_metric), handover, by_relation)
    return summary


def add_noising(lm: LoadedModel, pairs: PreparedTask, summary: PatchingMaps, *,
                max_patches=MAX_PATCHES.default, seed: int = SEED.default,
                progress: bool = True) -> None:
    """Noising of the same components and heads, into `summary`: its peaks (share lost) and
    each denoising peak read both ways (`necessity.both_ways`)."""
    n_layers, h = lm.model.cfg.n_layers, summary.headline
    noise = {c: P.patch(lm, pairs, c, direction="noising", max_patches=max_patches,
                        progress=progress) for c in PATCHED_COMPONENTS}
    heads = P.patch_heads(lm, pairs, direction="noising", max_patches=max_patches,
                          progress=progress)
    long = pd.concat([P.tidy(r.as_effect(), summary.positions) for r in noise.values()],
                     ignore_index=True)
    resid = P.peak(long[long["component"] == "resid_pre"], "token_class")
    found = I.patching_intervals(long, pd.DataFrame([{"component": "resid_pre", **resid}]),
                                 n_layers, seed)
    h.update(noising_resid_pre_peak=resid["effect"], noising_resid_pre_peak_layer=resid["layer"],
             noising_resid_pre_peak_class=resid["token_class"],
             noising_resid_pre_peak_ci=found.get("resid_pre_peak_ci"),
             noising_resid_pre_peak_layer_range=found.get("resid_pre_peak_layer_range"))
    for key in ("mlp_out_subject_last", "attn_out_last"):
        for end in ("peak", "peak_ci", "peak_layer", "peak_layer_range"):
            if f"{key}_{end}" in found and (key, end) != ("attn_out_last", "peak_layer_range"):
                h[f"noising_{key}_{end}"] = found[f"{key}_{end}"]
    grid = heads.as_effect().normalized_mean()
    best = int(grid.flatten().nan_to_num(float("-inf")).argmax())
    layer, head = divmod(best, grid.shape[1])
    lost_heads = heads.as_effect()
    h.update(noising_top_head_layer=layer, noising_top_head=head,
             noising_top_head_effect=float(grid[layer, head]),
             noising_top_head_effect_ci=I.head_effect_interval(
                 lost_heads.values[layer, head].numpy(), lost_heads.clean.numpy(),
                 lost_heads.corrupted.numpy(), seed))
    states = []
    peaks = summary.peaks.set_index("component")
    cells = [("resid_pre", "resid_pre", peaks.loc["resid_pre", "token_class"],
              h.get("resid_pre_peak_layer")),
             ("mlp_out_subject_last", "mlp_out", "subject_last",
              h.get("mlp_out_subject_last_peak_layer")),
             ("attn_out_last", "attn_out", "last", h.get("attn_out_last_peak_layer"))]
    for key, component, token_class, layer in cells:
        if layer is None:
            continue
        state = NS.both_ways(summary.long, long, component, token_class, int(layer), n_layers,
                             seed)
        states.append({"state": key, **state})
        h[f"{key}_lost_at_peak"] = state["lost"]
        h[f"{key}_lost_at_peak_ci"] = [state["lost_low"], state["lost_high"]]
        h[f"{key}_verdict"] = state["verdict"]
    summary.noising, summary.noising_heads, summary.noising_long = noise, heads, long
    summary.noising_classes = P.by_class(long, "token_class")
    summary.states = pd.DataFrame(states)


def add_spread(lm: LoadedModel, pairs: PreparedTask, counterfactuals: PreparedTask,
               summary: PatchingMaps, *, max_patches=MAX_PATCHES.default,
               progress: bool = True) -> None:
    """Denoising on every counterfactual draw, into `summary`: the maps' spread and how far
    each located peak moves (draw 0, the dataset's own pairs, is the patching above)."""
    spread = CS.patch_over_counterfactuals(lm, counterfactuals, SPREAD_COMPONENTS,
                                           max_patches=max_patches, progress=progress,
                                           reuse=(pairs, summary.long))
    summary.spread = spread
    summary.headline.update(
        n_counterfactual_draws=len(spread.n_pairs),
        counterfactual_draw_pairs=[spread.n_pairs[d] for d in sorted(spread.n_pairs)],
        mlp_out_subject_last_peak_layers_by_draw=spread.layers("mlp_out_subject_last"),
        mlp_out_subject_last_peak_shift=spread.shift("mlp_out_subject_last"),
        resid_pre_peak_layers_by_draw=spread.layers("resid_pre"),
        resid_pre_peak_shift=spread.shift("resid_pre"))


@dataclass(frozen=True)
class ScanAgreement:
    """One row of the `atp_agreement` table: how the scan's estimates of one component rank
    against exact patching (`atp_checks.agreement`)."""

    n_cells: int  # cells patching can change
    spearman: float  # rank correlation over those cells, pooled across prompts
    spearman_median: float  # median of the per-prompt correlations
    recall_top5_in_top10: float  # share of each prompt's 5 largest exact effects in its top 10
    exact_near_top5: float  # cells per prompt within 10% of the fifth largest exact effect

    @classmethod
    def of(cls, row: pd.Series) -> ScanAgreement:
        return cls(int(row["n_cells"]), float(row["spearman"]), float(row["spearman_median"]),
                   float(row["recall_top5_in_top10"]), float(row["exact_near_top5"]))


@dataclass(frozen=True)
class LayerError:
    """The scan's mean |error| on the residual stream at one layer, beside the mean |exact
    effect| there (fractions of the clean−corrupted gap: `atp_checks.error_by_layer`)."""

    layer: int
    exact_abs: float
    atp_abs_error: float
    atp_star_abs_error: float


@dataclass(frozen=True)
class ProposedCell:
    """One head × position cell the scan proposed, patched exactly; estimate and exact effect
    as fractions of the clean−corrupted gap."""

    prompt_id: int
    layer: int
    head: int
    pos: int
    estimate: float
    exact: float


# AtP* must remove more than this share of AtP's mean |error| for the notebook to put part of
# the error on the first attention pattern saturating
SATURATION_SHARE = 0.1


@dataclass
class AtpCheck:
    """The AtP scan against the exact grids: agreement per component, cell pairs, error by
    layer, and the scan's top head × position proposals patched exactly."""

    scan: dict
    agreement: pd.DataFrame
    cells: pd.DataFrame  # estimate against exact, per cell
    errors: pd.DataFrame  # mean |error| by layer, AtP and AtP*
    proposals: pd.DataFrame
    checked: dict  # proposal_summary

    def _residual(self, method: str) -> ScanAgreement:
        rows = self.agreement[self.agreement["component"] == "resid_pre"].set_index("method")
        return ScanAgreement.of(rows.loc[method])

    @property
    def residual_atp(self) -> ScanAgreement:
        """AtP against exact patching of the residual stream."""
        return self._residual("AtP")

    @property
    def residual_atp_star(self) -> ScanAgreement:
        """AtP* against exact patching of the residual stream."""
        return self._residual("AtP*")

    @property
    def worst_layer(self) -> LayerError:
        """The layer where AtP errs most on the residual stream."""
        row = self.errors.loc[self.errors["atp_abs_error"].idxmax()]
        return LayerError(int(row["layer"]), float(row["exact_abs"]),
                          float(row["atp_abs_error"]), float(row["atp_star_abs_error"]))

    @property
    def mean_abs_error(self) -> tuple[float, float]:
        """Mean |error| over the layers: (AtP, AtP*)."""
        return (float(self.errors["atp_abs_error"].mean()),
                float(self.errors["atp_star_abs_error"].mean()))

    @property
    def star_error_change(self) -> float:
        """Relative change of the mean |error| from AtP to AtP* (−0.3: AtP* removes 30%)."""
        atp_error, star_error = self.mean_abs_error
        return star_error / atp_error - 1

    @property
    def star_error_removed(self) -> float:
        """Share of AtP's mean |error| that AtP* removes (0.3: 30%; negative: it adds)."""
        return -self.star_error_change

    @property
    def saturation_explains_part(self) -> bool:
        """Whether AtP* removes more than `SATURATION_SHARE` of AtP's error, so part of the
        error is the first attention pattern that reads the patched state saturating."""
        return self.star_error_change < -SATURATION_SHARE

    @property
    def n_proposals_checked(self) -> int:
        """Head × position cells the scan proposed and exact patching checked."""
        return int(self.checked["n_cells"])

    @property
    def proposals_same_sign(self) -> float:
        """Share of the proposed cells whose exact effect has the estimate's sign."""
        return float(self.checked["same_sign"])

    @property
    def proposals_spearman(self) -> float:
        """Rank correlation of the proposed cells' estimates with their exact effects."""
        return float(self.checked["spearman"])

    def numbers(self, exact_seconds: float) -> dict:
        atp, star = self.residual_atp, self.residual_atp_star
        return dict(
            atp_seconds=self.scan["resid_pre"].seconds, exact_patching_seconds=exact_seconds,
            atp_resid_pre_spearman=atp.spearman, atp_star_resid_pre_spearman=star.spearman,
            atp_resid_pre_recall_top5_in_top10=atp.recall_top5_in_top10,
            atp_resid_pre_exact_near_top5=atp.exact_near_top5,
            atp_heads_by_pos_same_sign=self.checked["same_sign"])


def atp_check(lm: LoadedModel, pairs: PreparedTask, summary: PatchingMaps,
              top_k: int = SCAN_TOP_K.default) -> AtpCheck:
    scan = AP.scan(lm, pairs)
    results = summary.results
    agreement = pd.DataFrame(
        [AC.agreement(scan[c], results[c], star=star) for c in results for star in (False, True)]
        + [AC.agreement(scan["z"], summary.heads)]
        + ([AC.agreement(scan["z"], summary.heads_by_position)]
           if summary.heads_by_position is not None else []))
    cells = pd.concat([AC.paired_cells(scan[c], results[c]) for c in results],
                      ignore_index=True)
    errors = AC.error_by_layer(scan["resid_pre"], results["resid_pre"])
    proposals = AC.check_proposals(lm, pairs, scan["z"], k=top_k)
    return AtpCheck(scan, agreement, cells, errors, proposals, AC.proposal_summary(proposals))


@dataclass(kw_only=True)
class ActivationPatchingSummary(Summary):
    """Everything notebook 04 shows: the pairs patched, exact patching both ways and on every
    counterfactual draw, and the AtP check (None when no pair can be patched)."""

    pairs: PreparedTask  # the equal-length pairs patched
    dropped: pd.DataFrame  # the pairs left out, with the reason
    patching: PatchingMaps
    atp: AtpCheck | None

    def peak(self, component: str) -> pd.Series:
        """The component's row of `peaks`: its peak class, layer and effect."""
        return self.patching.peaks.set_index("component").loc[component]

    def peak_class(self, component: str) -> str:
        """The token class where patching `component` restores most."""
        return str(self.peak(component)["token_class"])

    def peak_text(self, component: str) -> str:
        """'layer 5 (95% of resamples in layers 4–6), normalized effect 0.42 (95% CI …)'."""
        row, h = self.peak(component), self.headline
        layer = layer_with_range(row["layer"], getattr(h, f"{component}_peak_layer_range"))
        effect = with_interval(row["effect"], getattr(h, f"{component}_peak_ci"))
        return f"{layer}, normalized effect {effect}"

    def both_ways(self, component: str) -> tuple[np.ndarray, list[str]]:
        """Denoising's share restored and noising's share lost [2 × token class × layer] of
        `component`, over the token classes both maps have, and those classes."""
        both = [self.patching.class_grid(component), self.patching.noising_grid(component)]
        classes = [c for c in both[0].columns if c in both[1].columns]
        return np.stack([g[classes].T.to_numpy() for g in both]), classes

    def draws_line(self, component: str, token_class: str) -> pd.DataFrame:
        """Denoising of one component at one token class by layer, one row per draw (the draw
        as text, so the figure colours draws as categories)."""
        classes = self.patching.spread.classes
        part = classes[(classes["component"] == component)
                       & (classes["token_class"] == token_class)]
        return part.assign(draw=part["draw"].astype(str))

    def example_grid(self, component: str, index: int = 0) -> tuple[np.ndarray, list[str]]:
        """One pair's normalized effect [position × layer] of `component`, and its positions'
        labels ('3: " Paris"')."""
        result = self.patching.results[component]
        n_tok = int(self.patching.results["resid_pre"].lengths[index])
        positions = self.patching.positions
        tokens = positions[positions["prompt_id"] == index]["token"].tolist()
        return (result.normalized()[:, :n_tok, index].T.numpy(),
                [f"{i}: {t!r}" for i, t in enumerate(tokens)])

    def best_proposal(self) -> ProposedCell:
        """The scan's proposed head × position cell with the largest exact effect, estimate
        and effect as fractions of the clean−corrupted gap."""
        row = AC.normalized_proposals(pd.DataFrame([self.atp.checked["best"]]),
                                      self.gap).iloc[0]
        return ProposedCell(int(row["prompt_id"]), int(row["layer"]), int(row["head"]),
                            int(row["pos"]), float(row["estimate"]), float(row["exact"]))

    @property
    def head_grid(self) -> np.ndarray:
        """Each head's normalized effect, patched at all positions [layer × head]."""
        return self.patching.heads.normalized_mean().numpy()

    @property
    def peak_layers_by_draw(self) -> pd.DataFrame:
        """The layer of each located peak [peak × counterfactual draw]."""
        return self.patching.spread.peaks.pivot(index="peak", columns="draw", values="layer")

    @property
    def gap(self) -> float:
        """The mean clean−corrupted gap: the unit of exact patching's figures."""
        return AC.mean_gap(self.patching.results["resid_pre"])


def summarise(lm: LoadedModel, prepared: PreparedTask, *, options: Options
              ) -> ActivationPatchingSummary:
    """Exact patching both ways and on every counterfactual draw (timed), then the AtP check,
    for the prompts whose counterfactual has their token length."""
    from factcircuits.run.session import patchable

    pairs, dropped = patchable(lm.tokenizer, prepared)
    counterfactuals = with_counterfactuals(lm, prepared, options.n_counterfactuals,
                                           options.seed)
    start = time.perf_counter()
    summary = patch_maps(lm, pairs, n_dropped=len(dropped), max_patches=options.max_patches,
                         heads_by_position=options.heads_by_position, seed=options.seed)
    exact_seconds = time.perf_counter() - start  # denoising alone, as AtP estimates it
    if summary.results:
        add_noising(lm, pairs, summary, max_patches=options.max_patches, seed=options.seed)
        add_spread(lm, pairs, counterfactuals, summary, max_patches=options.max_patches)
    atp = atp_check(lm, pairs, summary, options.scan_top_k) if summary.results else None
    numbers = atp.numbers(exact_seconds) if atp else {}
    headline = PatchingHeadline(**summary.headline, **numbers)
    tables = {}
    if summary.results:
        tables.update(patching_long=summary.long, patching_by_class=summary.classes,
                      patching_by_role=summary.roles, heads=P.tidy(summary.heads),
                      peaks=summary.peaks, noising_by_class=summary.noising_classes,
                      necessity=summary.states,
                      counterfactual_by_class=summary.spread.classes,
                      counterfactual_peaks=summary.spread.peaks,
                      atp_agreement=atp.agreement,
                      atp_heads_by_position_proposals=atp.proposals)
        if summary.heads_by_position is not None:
            tables["heads_by_position"] = P.tidy(summary.heads_by_position)
    if summary.by_relation is not None:
        tables["by_relation"] = summary.by_relation
    if len(dropped):
        tables["dropped_pairs"] = dropped
    return ActivationPatchingSummary(headline=headline, tables=tables,
                                     estimates=estimates_of(METHOD, headline, tables), pairs=pairs,
                                     dropped=dropped, patching=summary, atp=atp)


def necessity_view(states: pd.DataFrame) -> pd.DataFrame:
    """The necessity table as a page shows it: each located state, the share restored and lost
    beside their 95 % intervals and the verdict, in columns that fit an A4 page (the saved
    `necessity` table keeps every column)."""
    return pd.DataFrame({
        "state": [f"{P.COMPONENT_TITLES[c]}, {CLASS_TITLES.get(t, t)}"
                  for c, t in zip(states["component"], states["token_class"])],
        "layer": states["layer"],
        "restored (denoising)": interval_cells(states, "restored", "restored_low",
                                               "restored_high", ".2f"),
        "lost (noising)": interval_cells(states, "lost", "lost_low", "lost_high", ".2f"),
        "verdict": states["verdict"]})


# ------------------------------------------------------------------ findings
def patching_findings(run: Run) -> list[Finding]:
    h = run.headline(METHOD)
    found = []
    if h.n_pairs:
        text = f"**Activation patching** ({h.n_pairs} prompt pairs):"
        if h.resid_pre_handover_layer is not None:
            text += (f" the residual stream carries the clean answer at the subject tokens "
                     f"first and at the last token from "
                     f"{layer_text(run, h.resid_pre_handover_layer)} on;")
        layer = h.mlp_out_subject_last_peak_layer
        if layer is not None:
            text += (f" the MLP output at the last subject token restores most at "
                     f"{layer_text(run, layer, h.mlp_out_subject_last_peak_layer_range)}, "
                     f"{with_interval(h.mlp_out_subject_last_peak, h.mlp_out_subject_last_peak_ci)}"
                     f" of the clean−corrupted gap" + (f" ({LAYER0_MLP})" if layer == 0 else "")
                     + (" among layers ≥ 1; the layer-0 MLP alone restores "
                        + with_interval(h.mlp_out_subject_last_layer0,
                                        h.mlp_out_subject_last_layer0_ci) + f" ({LAYER0_MLP})"
                        if h.mlp_out_subject_last_layer0 is not None and layer != 0 else "")
                     + ";")
        if h.attn_out_last_peak_layer is not None:
            text += (f" the attention output at the last token most at "
                     f"{layer_text(run, h.attn_out_last_peak_layer)}, "
                     f"{h.attn_out_last_peak:.2f}.")
        found.append(Finding(WHERE, text.rstrip(";:") + ("" if text.endswith(".") else "."),
                             20))
    relations = relation_peaks_text(run.result(METHOD, "by_relation"),
                                    "patching's MLP peak at the last subject token")
    if relations:
        found.append(Finding(BY_RELATION, relations, 30))
    return found


def state_clauses(run: Run, h: PatchingHeadline) -> list[str]:
    """Per denoising peak: restored and lost there, and what that makes the state."""
    states = (
        ("the residual stream at its peak", h.resid_pre_peak_layer, h.resid_pre_peak,
         h.resid_pre_peak_ci, h.resid_pre_lost_at_peak, h.resid_pre_lost_at_peak_ci,
         h.resid_pre_verdict),
        ("the MLP output at the last subject token", h.mlp_out_subject_last_peak_layer,
         h.mlp_out_subject_last_peak, h.mlp_out_subject_last_peak_ci,
         h.mlp_out_subject_last_lost_at_peak, h.mlp_out_subject_last_lost_at_peak_ci,
         h.mlp_out_subject_last_verdict),
        ("the attention output at the last token", h.attn_out_last_peak_layer,
         h.attn_out_last_peak, h.attn_out_last_peak_ci, h.attn_out_last_lost_at_peak,
         h.attn_out_last_lost_at_peak_ci, h.attn_out_last_verdict))
    return [f"{what} ({layer_text(run, layer)}) restores {with_interval(restored, r_ci)} of "
            f"the gap and its corruption loses {with_interval(lost, l_ci)}: **{verdict}**"
            for what, layer, restored, r_ci, lost, l_ci, verdict in states
            if verdict is not None and layer is not None]


def necessity_findings(run: Run) -> list[Finding]:
    """Denoising beside noising at each located peak: which states are necessary, which
    sufficient, which both."""
    h = run.headline(METHOD)
    clauses = state_clauses(run, h)
    if not clauses:
        return []
    return [Finding(WHERE, "**Necessary or sufficient** (activation patching both ways: "
                    "restoring one clean state into the corrupted run, and corrupting it in "
                    "the clean run; a state is called sufficient or necessary when the 95% "
                    f"interval of the share restored or lost lies above {NS.BAR}): "
                    + "; ".join(clauses) + ".", 21)]


def sensitivity_findings(run: Run) -> list[Finding]:
    """How far patching's peaks move across counterfactual draws."""
    h = run.headline(METHOD)
    layers, shift = h.mlp_out_subject_last_peak_layers_by_draw, h.mlp_out_subject_last_peak_shift
    if shift is None or not layers or not h.counterfactual_draw_pairs:
        return []
    pairs = ", ".join(map(str, h.counterfactual_draw_pairs))
    text = (f"**Sensitivity to the counterfactual**: patched with {h.n_counterfactual_draws} "
            f"counterfactual draws per prompt ({pairs} pairs), the peak of the MLP output at "
            f"the last subject token lies at layers {', '.join(map(str, layers))}: it moves "
            f"by at most **{shift} layer{'s' if shift != 1 else ''}** across counterfactuals")
    if h.resid_pre_peak_shift is not None:
        text += (f"; the residual stream's peak by at most {h.resid_pre_peak_shift} "
                 f"layer{'s' if h.resid_pre_peak_shift != 1 else ''}")
    return [Finding(WHERE, text + ".", 22)]


def patching_heads(run: Run) -> list[Finding]:
    """Its clause of the heads bullet: the head whose patching restores most."""
    h = run.headline(METHOD)
    if h.top_head_layer is None:
        return []
    return [Finding(HEADS, f"patching one head at a time restores most with "
                    f"**{head_label(h.top_head_layer, h.top_head)}** "
                    f"({with_interval(h.top_head_effect, h.top_head_effect_ci)} of the gap)", 20)]


def overview(run: Run) -> dict[str, str]:
    """Its cell of the table of several runs: the MLP output's peak at the last subject token
    (a peak at the layer-0 MLP marked)."""
    h = run.headline(METHOD)
    return {"patching: MLP peak": peak_cell(
        h.mlp_out_subject_last_peak_layer, h.mlp_out_subject_last_peak_layer_range,
        h.mlp_out_subject_last_peak, h.mlp_out_subject_last_peak_ci, layer0_mlp=True)}


def patching_samples(run: Run) -> list[Sample]:
    h = run.headline(METHOD)
    return [Sample(None if h.n_pairs is None else
                   f"{h.n_pairs} patched pairs ({h.n_dropped_unequal or 0} left out for unequal "
                   "token length)", "pairs patched", h.n_pairs)]


TOKEN_CLASS_NAMES = {"subject_last": "last subject token", "last": "last token"}


def resid_profile(t: pd.DataFrame) -> pd.DataFrame:
    return (t[(t["component"] == "resid_pre") & t["token_class"].isin(list(TOKEN_CLASS_NAMES))]
            .assign(position=lambda d: d["token_class"].map(TOKEN_CLASS_NAMES)))


PATCH_ROWS = {"component": "str", "layer": "int", "metric": "float", "clean": "float",
              "corrupted": "float", "normalized": "float", "n_cells": "int"}
PAIR_ROWS = {"prompt": "str", "corrupted_prompt": "str", "reason": "str"}
METHOD = Method(
    notebook="04_activation_patching", title="Activation patching", short="patching",
    headline=PatchingHeadline,
    results={
        "patching_long": Table({"component": "str", "layer": "int", "pos": "int",
                                "prompt_id": "int", "metric": "float", "normalized": "float",
                                "clean": "float", "corrupted": "float", "token": "str",
                                "token_class": "str", "role": "str"},
                               "every patched cell, per pair"),
        "patching_by_class": Table({**PATCH_ROWS, "token_class": "str"},
                                   "normalized effect by layer and token class"),
        "patching_by_role": Table({**PATCH_ROWS, "role": "str"},
                                  "normalized effect by layer and role"),
        "heads": Table({"component": "str", "layer": "int", "head": "int", "prompt_id": "int",
                        "metric": "float", "normalized": "float", "clean": "float",
                        "corrupted": "float"}, "every head patched at all positions"),
        "heads_by_position": Table({"component": "str", "layer": "int", "head": "int",
                                    "prompt_id": "int", "metric": "float",
                                    "normalized": "float", "clean": "float",
                                    "corrupted": "float"}, "every head at every position",
                                   open_columns=True),
        "peaks": Table({"component": "str", "effect": "float", "layer": "int",
                        "token_class": "str", "role": "str", "role_effect": "float",
                        "role_layer": "int"}, "each component's peak class and role"),
        "atp_agreement": Table({"component": "str", "method": "str", "n_cells": "int",
                                "spearman": "float", "spearman_median": "float",
                                "recall_top5_in_top10": "float", "exact_near_top5": "float"},
                               "AtP and AtP* against exact patching"),
        "atp_heads_by_position_proposals": Table(
            {"prompt_id": "int", "rank": "int", "layer": "int", "pos": "int", "head": "int",
             "estimate": "float", "exact": "float"}, "AtP's top head × position cells, "
            "patched exactly"),
        "by_relation": Table({"relation": "str", "n": "int", "peak_layer": "int",
                              "layer_low": "int", "layer_high": "int", "value": "float",
                              "value_low": "float", "value_high": "float",
                              "differs_from_pooled": "bool"},
                             "the MLP peak at the last subject token per relation"),
        "dropped_pairs": Table(PAIR_ROWS, "pairs left out, with the reason", open_columns=True),
        "noising_by_class": Table({**PATCH_ROWS, "token_class": "str"},
                                  "noising: share of the gap lost by layer and token class"),
        "necessity": Table({"state": "str", "component": "str", "token_class": "str",
                            "layer": "int", "restored": "float", "restored_low": "float",
                            "restored_high": "float", "lost": "float", "lost_low": "float",
                            "lost_high": "float", "verdict": "str"},
                           "each denoising peak read both ways"),
        "counterfactual_by_class": Table({**PATCH_ROWS, "token_class": "str", "draw": "int"},
                                         "denoising by layer and token class, per "
                                         "counterfactual draw"),
        "counterfactual_peaks": Table({"draw": "int", "peak": "str", "layer": "int",
                                       "effect": "float", "n_pairs": "int"},
                                      "each located peak in each counterfactual draw"),
    },
    findings=lambda run: (patching_findings(run) + necessity_findings(run)
                          + sensitivity_findings(run) + patching_heads(run)),
    samples=patching_samples,
    overview=overview,
    key_numbers=("resid_pre_peak", "resid_pre_peak_layer_depth"),
    quantities=(ANSWER_HEAD, MLP_AT_SUBJECT),
    profiles=(Profile("patching_by_class", resid_profile, "normalized", "position",
                      "Activation patching of the residual stream (resid_pre)<br><sup>share of "
                      "the clean–corrupted metric gap restored, at the last subject token and "
                      "the last token</sup>", "normalized effect"),),
    parameters=(MAX_PATCHES, P.HEADS_BY_POSITION, AC.SCAN_TOP_K, N_COUNTERFACTUALS),
)
