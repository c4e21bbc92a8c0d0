"""The summaries behind notebooks 03–07, as `task_check.check` is behind notebook 01: each runs
its method on the prompts a notebook analyses and returns the tables it shows and saves plus a
headline dict of the numbers it narrates. Notebooks only narrate and plot these."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from factcircuits.errors import UserError
from factcircuits.methods import ablation as AB
from factcircuits.methods import attribution as A
from factcircuits.methods import by_relation as R
from factcircuits.methods import causal_tracing as CT
from factcircuits.methods import intervals as I
from factcircuits.methods import knockout as KO
from factcircuits.methods import patching as P
from factcircuits.methods.attention import Patterns, head_patterns, last_token_attention
from factcircuits.methods.evaluate import PreparedTask
from factcircuits.methods.positions import TOKEN_CLASSES, PromptPositions, prompt_positions
from factcircuits.models import LoadedModel


# --------------------------------------------------------------------------- 03 attribution
@dataclass
class AttributionSummary:
    attribution: A.HeadAttribution
    sum_check: pd.DataFrame
    top_layer: dict  # the layer × component with the largest mean |DLA|: component, layer, dla
    top_heads: pd.DataFrame
    key_mlp_layer: int  # the MLP layer with the largest mean |DLA|
    top_neurons: pd.DataFrame  # of the key MLP layer
    neuron_share: float  # share of the key MLP layer's mean DLA its top neurons carry
    soft_cap_note: str
    headline: dict


def attribution_summary(lm: LoadedModel, prepared: PreparedTask, *, kind: str = "auto",
                        top_k: int = 10, batch_size: int = 16, seed: int = 0,
                        progress: bool = False) -> AttributionSummary:
    """DLA by layer, head and (in the key MLP layer) neuron, with the sum check; intervals
    (bootstrap over prompts, `seed`) for the top head's and component's mean DLA."""
    att = A.attribute_heads(lm, prepared, kind=kind, batch_size=batch_size, progress=progress)
    check = A.sum_check(att.decomposition, att.direction)
    means = A.summarise_layers(att.layers[att.layers.component != "embed"])
    top_row = means.loc[means["dla"].abs().idxmax()]
    top_h = A.top_heads(att.heads, top_k)
    mlp_means = means[means.component == "mlp"]
    key_layer = int(mlp_means.loc[mlp_means["dla"].abs().idxmax(), "layer"])
    neurons = A.neuron_dla(lm, prepared, key_layer, att.direction, batch_size=batch_size,
                           progress=progress)
    top_n = A.top_neurons(neurons, top_k)
    share = float(top_n["dla"].sum() / mlp_means.set_index("layer").loc[key_layer, "dla"])
    max_err = float(check["error"].abs().max())
    cap = A.soft_cap_note(lm)
    headline = {
        # With a final soft-cap (Gemma 2) the check compares with the pre-cap logits' metric.
        "dla_sum_check_max_abs_error": max_err, "dla_sum_check_passes": max_err < 1e-3,
        "dla_sum_checked_against": "pre-cap logits" if cap else "logits",
        "top_head": f"L{int(top_h['layer'][0])}H{int(top_h['head'][0])}",
        "top_head_dla": top_h["dla"][0],
        "top_head_dla_ci": I.cell_interval(att.heads, "dla", seed, layer=int(top_h["layer"][0]),
                                           head=int(top_h["head"][0])),
        "top_layer_component": f"{top_row['component']} L{int(top_row['layer'])}",
        "top_layer_component_dla": top_row["dla"],
        "top_layer_component_dla_ci": I.cell_interval(
            att.layers, "dla", seed, layer=int(top_row["layer"]),
            component=top_row["component"]),
        "key_mlp_layer": key_layer,
        "direction": att.direction.kind}
    top_layer = {"component": top_row["component"], "layer": int(top_row["layer"]),
                 "dla": float(top_row["dla"])}
    return AttributionSummary(att, check, top_layer, top_h, key_layer, top_n, share, cap,
                              headline)


# --------------------------------------------------------------------------- 04 patching
PATCHED_COMPONENTS = ("resid_pre", "attn_out", "mlp_out")


@dataclass
class PatchingSummary:
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


def patching_summary(lm: LoadedModel, pairs: PreparedTask, *, n_dropped: int = 0,
                     max_patches="auto", heads_by_position: bool = False, top_k: int = 5,
                     seed: int = 0, progress: bool = True) -> PatchingSummary:
    """Activation patching of the residual stream, attention and MLP outputs by position and of
    every head, for the equal-length pairs `pairs` (`n_dropped` others were left out)."""
    headline = {"n_pairs": len(pairs.prompts), "n_dropped_unequal": n_dropped,
                "metric": pairs.main_metric}
    if not len(pairs.prompts):
        return PatchingSummary(headline)
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
                                               pooled, n_layers, seed))
    return PatchingSummary(headline, results, heads, by_pos, positions, long, classes, roles,
                           top_heads, pd.DataFrame(rows),
                           P.normalization_caveat(clean_mean, corrupt_mean, pairs.main_metric),
                           handover, by_relation)


# --------------------------------------------------------------------------- 05 causal tracing
@dataclass
class TracingSummary:
    traces: dict[str, CT.TraceResult]
    positions: pd.DataFrame  # patching.position_table
    long: pd.DataFrame  # every trace, tidy
    aie: pd.DataFrame  # average indirect effect per kind × layer × token class
    peaks: pd.DataFrame  # peak AIE per kind × token class
    window: int  # MLP / attention window actually used
    metric_name: str
    headline: dict
    by_relation: pd.DataFrame | None = None  # MLP at the last subject token, per relation
    relation_curves: pd.DataFrame | None = None

    def peak(self, kind: str, token_class: str) -> dict | None:
        """{layer, peak_aie} of `kind` at `token_class`, None when no prompt has that class."""
        row = self.peaks[(self.peaks["kind"] == kind) & (self.peaks["token_class"] == token_class)]
        if not len(row):
            return None
        return {"layer": int(row["layer"].iloc[0]), "peak_aie": float(row["peak_aie"].iloc[0])}


def tracing_summary(lm: LoadedModel, prepared: PreparedTask, *, noise_samples: int = 2,
                    noise_scale: float = 3.0, seed: int = 0, metric: str = "prob",
                    window: int = 10, max_patches="auto",
                    progress: bool = True) -> TracingSummary:
    """ROME causal tracing of hidden states (window 1) and MLP / attention outputs (`window`,
    clamped to 1..n_layers), averaged by token class."""
    window = max(1, min(int(window), lm.model.cfg.n_layers))
    traces = CT.trace(lm, prepared, noise_samples=noise_samples, noise_scale=noise_scale,
                      seed=seed, metric=metric, windows={"hidden": 1, "mlp": window,
                                                         "attn": window},
                      max_patches=max_patches, progress=progress)
    positions = P.position_table(lm, prepared)
    long = pd.concat([t.tidy(positions) for t in traces.values()], ignore_index=True)
    aie = CT.average_indirect_effect(long).merge(I.aie_bands(long, seed),
                                                  on=["kind", "layer", "token_class"], how="left")
    peaks = CT.peak_by_class(aie)
    hidden = traces["hidden"]
    metric_name = "P(answer)" if metric == "prob" else prepared.main_metric
    headline = {
        "n_prompts": len(prepared.prompts), "noise_samples": noise_samples,
        "noise_scale": noise_scale, "noise_std": hidden.noise_std, "seed": seed,
        "window": window, "metric": metric_name,
        "clean_mean": float(hidden.clean.mean()), "noised_mean": float(hidden.corrupted.mean()),
        "total_effect_mean": float(hidden.total_effect().mean()),
    }
    # One entry per (state kind, token class), e.g. mlp_subject_last_peak_aie / _peak_layer.
    for _, row in peaks.iterrows():
        headline[f"{row['kind']}_{row['token_class']}_peak_aie"] = float(row["peak_aie"])
        headline[f"{row['kind']}_{row['token_class']}_peak_layer"] = int(row["layer"])
    # intervals over prompts (resamples seeded like the noise), peak ranges and the claims
    headline.update(I.tracing_intervals(long, lm.model.cfg.n_layers, seed))
    by_relation, curves = tracing_by_relation(long, prepared, headline, lm.model.cfg.n_layers,
                                              seed)
    return TracingSummary(traces, positions, long, aie, peaks, window, metric_name, headline,
                          by_relation, curves)


def relations_of(prepared: PreparedTask) -> pd.Series | None:
    """Each prompt's relation, when the prompts span several relations."""
    relations = prepared.rows.get("relation")
    if relations is None or relations.nunique() < 2:
        return None
    return relations.reset_index(drop=True).astype(str)


def tracing_by_relation(long, prepared, headline, n_layers, seed):
    """Restoring MLP outputs at the last subject token, per relation: peaks with their ranges
    and the curves with bands (None, None for one relation or no such token class)."""
    relations = relations_of(prepared)
    pooled = headline.get("mlp_subject_last_peak_layer")
    if relations is None or pooled is None:
        return None, None
    part = long[(long["kind"] == "mlp") & (long["token_class"] == "subject_last")]
    values, ids = I.prompt_curves(part, "indirect_effect", n_layers)
    names = relations.to_numpy()[ids]
    return (R.relation_peaks(values, names, pooled, n_layers, seed),
            R.relation_curves(values, names, seed))


# --------------------------------------------------------------------------- 06 ablation, knockout
@dataclass
class AblationSummary:
    components: list[tuple]  # the ablated components, largest mean |DLA| first
    table: pd.DataFrame  # ablation_table
    summary: pd.DataFrame  # mean per component × mode, largest drop first
    biggest: dict  # the single component and mode with the largest drop
    joint: pd.DataFrame  # rows of `summary` with every component ablated together
    headline: dict


def ablation_summary(lm: LoadedModel, prepared: PreparedTask, *,
                     reference: PreparedTask | None = None, n_components: int = 6,
                     batch_size: int = 16, seed: int = 0,
                     progress: bool = False) -> AblationSummary:
    """Zero- and mean-ablate the `n_components` components with the largest mean |DLA| (means
    over `reference`'s prompts), alone and together."""
    if n_components < 1:  # a slice [:n] with n < 1 would ablate "all but -n", not n
        raise UserError(f"n_components={n_components}: use a whole number of at least 1")
    att = A.attribute_heads(lm, prepared, batch_size=batch_size, progress=progress)
    components = A.top_components(att.layers, att.heads, n_components)
    table = AB.ablation_table(lm, prepared, components, batch_size=batch_size,
                              reference=reference, progress=progress)
    summary = AB.summarise(table)
    together = summary["component"].str.startswith("all")
    big = summary[~together].iloc[0]
    biggest = {"component": big["component"], "mode": big["mode"], "drop": big["drop"]}
    headline = {"ablation_biggest_drop": big["drop"],
                "ablation_biggest_drop_ci": I.cell_interval(table, "drop", seed,
                                                            component=big["component"],
                                                            mode=big["mode"]),
                "ablation_biggest_component": big["component"],
                "ablation_biggest_mode": big["mode"]}
    return AblationSummary(components, table, summary, biggest, summary[together], headline)


@dataclass
class KnockoutSummary:
    table: pd.DataFrame  # knockout_sweep
    summary: pd.DataFrame  # mean per role × window
    peaks: dict[str, dict]  # per role: the window that lowers P(answer) most
    window: int
    headline: dict


def knockout_summary(lm: LoadedModel, prepared: PreparedTask, *, window: int = 0,
                     batch_size: int = 16, seed: int = 0,
                     progress: bool = False) -> KnockoutSummary:
    """Attention knockout from the last position over sliding windows (`window` 0: the
    default, n_layers // 6)."""
    table = KO.knockout_sweep(lm, prepared, window or None, batch_size=batch_size,
                              progress=progress)
    peaks = KO.peak_windows(table)
    k = int(table["window"].iloc[0])
    headline = {"knockout_window": k,
                **{f"knockout_{role}_peak_centre": p["centre"] for role, p in peaks.items()},
                **{f"knockout_{role}_peak_relative_p_change": p["relative_p_change"]
                   for role, p in peaks.items()},
                **{f"knockout_{role}_peak_relative_p_change_ci": I.cell_interval(
                    table, "relative_p_change", seed, role=role, centre=p["centre"])
                   for role, p in peaks.items()},
                **{f"knockout_{role}_peak_centre_range": I.peak_window_range(table, role, seed)
                   for role in peaks}}
    return KnockoutSummary(table, KO.summarise(table), peaks, k, headline)


# --------------------------------------------------------------------------- 07 attention
@dataclass
class AttentionSummary:
    top_heads: pd.DataFrame  # the heads with the largest mean |DLA|
    heads: list[tuple[int, int]]
    example: int  # the prompt shown
    tokens: list[str]
    patterns: Patterns
    positions: PromptPositions
    last: pd.DataFrame  # attention from the last token, with each key's token class
    subject_attention: pd.Series  # per (layer, head): attention from the last token on subject
    headline: dict


def attention_summary(lm: LoadedModel, prepared: PreparedTask, *, n_heads: int = 6,
                      example: int = 0, batch_size: int = 16,
                      progress: bool = False) -> AttentionSummary:
    """Attention patterns of the `n_heads` heads with the largest mean |DLA| on prompt
    `example` (clamped to the prompts), and how much of the last token's attention each puts
    on the subject."""
    att = A.attribute_heads(lm, prepared, batch_size=batch_size, progress=progress)
    top = A.top_heads(att.heads, n_heads)
    heads = list(zip(top["layer"].astype(int), top["head"].astype(int)))
    ex = min(example, len(prepared.prompts) - 1)
    tokens, patterns = head_patterns(lm, prepared, heads, example=ex)
    pos = prompt_positions(lm.tokenizer, prepared.prompts[ex], prepared.rows["subject"][ex],
                           prepared.prompt_format, prepared.rows["prompt"][ex])
    last = last_token_attention(tokens, patterns)
    last["class"] = [pos.classes[k] for k in last["key"]]
    subj = (last[last["class"].str.startswith("subject")].groupby(["layer", "head"])
            ["attention"].sum())
    best = subj.idxmax()
    top_dla = subj.get((heads[0][0], heads[0][1]), 0.0)
    headline = {"top_subject_head": f"L{best[0]}H{best[1]}",
                "top_subject_head_attention": subj.max(),
                "top_dla_head": f"L{heads[0][0]}H{heads[0][1]}",
                "top_dla_head_subject_attention": top_dla, "example": ex}
    return AttentionSummary(top, heads, ex, tokens, patterns, pos, last, subj, headline)
