"""Notebook 03, direct logit attribution: by layer and component, by head and, in the key MLP
layer, by neuron, with the check that the components sum to the metric."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from factcircuits.methods import attribution as A
from factcircuits.methods import intervals as I
from factcircuits.methods.evaluate import PreparedTask
from factcircuits.methods.uncertainty import (
    mean_estimate,
    ratio_of_means_estimate,
    with_interval,
)
from factcircuits.models import LoadedModel
from factcircuits.results.estimates import ANSWER_HEAD, SUBJECT_READ, Estimate
from factcircuits.results.headlines import Headline, interval, number
from factcircuits.results.kinds import Table
from factcircuits.results.registry import HEADS, IN_SHORT, MOVES, SURE, Finding, Method, Profile
from factcircuits.results.run import Run
from factcircuits.results.summary import Options, Summary, estimates_of
from factcircuits.results.wording import interval_cell

DLA_UNIT = "metric"
SOURCE_SHARE = "fraction of the head's DLA"
SOURCE_NAMES = {"subject": "the subject tokens", "relation": "the relation tokens",
                "last": "the last token itself", "other": "the other tokens (BOS, prefix)"}


@dataclass
class AttributionHeadline(Headline):
    direction: str | None = number("the answer direction attributed (the task's metric)")
    dla_sum_check_max_abs_error: float | None = number(
        "largest |metric − (components + bias)| over prompts", DLA_UNIT)
    dla_sum_check_passes: bool | None = number("that error is below 1e-3")
    dla_sum_checked_against: str | None = number("logits, or pre-cap logits with a final "
                                                 "soft-cap (Gemma 2)")
    top_head: str | None = number("the head with the largest mean |DLA| (L<layer>H<head>)")
    top_head_dla: float | None = number("its mean DLA", DLA_UNIT)
    top_head_dla_ci: list[float] | None = interval("top_head_dla")
    top_layer_component: str | None = number("the layer's attention or MLP with the largest "
                                             "mean |DLA| ('attn L23')")
    top_layer_component_dla: float | None = number("its mean DLA", DLA_UNIT)
    top_layer_component_dla_ci: list[float] | None = interval("top_layer_component_dla")
    key_mlp_layer: int | None = number("the MLP layer with the largest mean |DLA|", "layer")
    # The top head's DLA split by the source position it reads (Chughtai et al. 2024)
    top_head_subject_share: float | None = number(
        "share of the top head's DLA that comes through its attention to the subject tokens "
        "(ratio of means over prompts)", SOURCE_SHARE)
    top_head_subject_share_ci: list[float] | None = interval("top_head_subject_share")
    top_head_relation_share: float | None = number(
        "share that comes through the relation tokens", SOURCE_SHARE)
    top_head_relation_share_ci: list[float] | None = interval("top_head_relation_share")
    top_head_last_share: float | None = number("share that comes through the last token "
                                               "itself", SOURCE_SHARE)
    top_head_last_share_ci: list[float] | None = interval("top_head_last_share")
    top_head_other_share: float | None = number("share that comes through the other tokens "
                                                "(BOS, format prefix)", SOURCE_SHARE)
    top_head_other_share_ci: list[float] | None = interval("top_head_other_share")
    top_head_moves_from_subject: bool | None = number(
        "the top head's DLA is positive (interval above 0) and most of it comes through the "
        "subject (interval of the subject share above 0.5)")


@dataclass(frozen=True)
class LayerDLA:
    """One layer's attention or MLP output and its mean direct logit attribution."""

    component: str  # "attn" or "mlp"
    layer: int
    dla: float


@dataclass(frozen=True)
class HeadDLA:
    """One attention head and its mean direct logit attribution."""

    layer: int
    head: int
    dla: float


@dataclass(kw_only=True)
class AttributionSummary(Summary):
    attribution: A.HeadAttribution
    sum_check: pd.DataFrame
    top_layer: LayerDLA  # the layer × component with the largest mean |DLA|
    top_heads: pd.DataFrame
    key_mlp_layer: int  # the MLP layer with the largest mean |DLA|
    top_neurons: pd.DataFrame  # of the key MLP layer
    neuron_share: float  # share of the key MLP layer's mean DLA its top neurons carry
    soft_cap_note: str
    sources: pd.DataFrame  # head_source_dla: every head's DLA by source
    top_head_sources: pd.DataFrame  # source_split of the top heads

    @property
    def strongest_head(self) -> HeadDLA:
        """The first row of `top_heads`: the head with the largest mean |DLA|."""
        top = self.top_heads
        return HeadDLA(int(top["layer"][0]), int(top["head"][0]), float(top["dla"][0]))

    @property
    def max_linearisation_offset(self) -> float:
        """Largest |first-order gap| the yes/no log-odds add back before the sum check."""
        offset = self.sum_check.get("linearisation_offset")
        return float("nan") if offset is None else float(offset.abs().max())


def summarise(lm: LoadedModel, prepared: PreparedTask, *, options: Options
              ) -> AttributionSummary:
    """DLA by layer, head and (in the key MLP layer) neuron, with the sum check; intervals
    (bootstrap over prompts, `seed`) for the top head's and component's mean DLA."""
    seed, batch_size, top_k = options.seed, options.batch_size, options.top_components
    progress = True
    att = A.attribute_heads(lm, prepared, kind=options.direction, batch_size=batch_size,
                            progress=progress)
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
    sources = A.head_source_dla(lm, prepared, att.decomposition, att.direction,
                                batch_size=batch_size, progress=progress)
    split = A.source_split(sources, top_h)
    headline = AttributionHeadline(
        # With a final soft-cap (Gemma 2) the check compares with the pre-cap logits' metric.
        dla_sum_check_max_abs_error=max_err, dla_sum_check_passes=max_err < 1e-3,
        dla_sum_checked_against="pre-cap logits" if cap else "logits",
        top_head=f"L{int(top_h['layer'][0])}H{int(top_h['head'][0])}",
        top_head_dla=float(top_h["dla"][0]),
        top_head_dla_ci=I.cell_interval(att.heads, "dla", seed, layer=int(top_h["layer"][0]),
                                        head=int(top_h["head"][0])),
        top_layer_component=f"{top_row['component']} L{int(top_row['layer'])}",
        top_layer_component_dla=float(top_row["dla"]),
        top_layer_component_dla_ci=I.cell_interval(
            att.layers, "dla", seed, layer=int(top_row["layer"]),
            component=top_row["component"]),
        key_mlp_layer=key_layer,
        direction=att.direction.kind,
        **top_head_source_fields(sources, int(top_h["layer"][0]), int(top_h["head"][0]),
                                 seed))
    top_layer = LayerDLA(top_row["component"], int(top_row["layer"]), float(top_row["dla"]))
    tables = {"sum_check": check, "layer_dla": att.layers, "head_dla": att.heads,
              "top_heads": top_h, "head_source_dla": sources, "top_head_sources": split,
              "top_neurons": top_n}
    return AttributionSummary(headline=headline, tables=tables,
                              estimates=estimates_of(METHOD, headline, tables),
                              attribution=att, sum_check=check, top_layer=top_layer,
                              top_heads=top_h, key_mlp_layer=key_layer, top_neurons=top_n,
                              neuron_share=share, soft_cap_note=cap, sources=sources,
                              top_head_sources=split)


def top_head_source_fields(sources: pd.DataFrame, layer: int, head: int, seed: int) -> dict:
    """The headline's split of one head's DLA by source: each source's share of the head's
    DLA (ratio of means over prompts, bootstrap interval), and whether the head moves the
    attribute from the subject (its DLA is positive and most of it comes through the
    subject, both intervals clear of the line)."""
    part = sources[(sources["layer"] == layer) & (sources["head"] == head)]
    by_prompt = part.pivot(index="prompt", columns="source", values="dla")
    total = by_prompt.sum(axis=1).to_numpy()
    out = {}
    for source in A.SOURCES:
        estimate = ratio_of_means_estimate(by_prompt[source].to_numpy(), total, seed)
        out[f"top_head_{source}_share"] = estimate.value
        out[f"top_head_{source}_share_ci"] = estimate.interval()
    positive = mean_estimate(total, seed).low > 0
    low = out["top_head_subject_share_ci"][0]
    out["top_head_moves_from_subject"] = bool(positive and low == low and low > 0.5)
    return out


def attribution_findings(run: Run) -> list[Finding]:
    """The top head's direct effect split by the source it reads; "moves the attribute from
    the subject" only when most of that direct effect comes through the subject positions."""
    h: AttributionHeadline = run.headline(METHOD)
    if h.top_head is None or h.top_head_subject_share is None:
        return []

    by_source = {"subject": (h.top_head_subject_share, h.top_head_subject_share_ci),
                 "relation": (h.top_head_relation_share, h.top_head_relation_share_ci),
                 "last": (h.top_head_last_share, h.top_head_last_share_ci),
                 "other": (h.top_head_other_share, h.top_head_other_share_ci)}
    shares = ", ".join(f"{with_interval(*by_source[key], '.0%')} through {name}"
                       for key, name in SOURCE_NAMES.items())
    text = (f"**Direct effect by source** (the top head's DLA split by the positions it "
            f"attends to, Chughtai et al. 2024): of {h.top_head}'s direct effect on the answer "
            f"(DLA {with_interval(h.top_head_dla, h.top_head_dla_ci)}), {shares}")
    if h.top_head_moves_from_subject:
        text += (f"; most of it comes through the subject, so {h.top_head} **moves the "
                 "attribute from the subject** to the last token (a direct effect: what it "
                 "writes there, not what removing it would change).")
    elif h.top_head_dla is not None and h.top_head_dla < 0:
        text += ("; its mean direct effect pushes against the answer, so it is not read as "
                 "moving the attribute to the last token.")
    else:
        text += ("; most of it is not shown to come through the subject, so this run does not "
                 f"show {h.top_head} moving the attribute from the subject.")
    return [Finding(MOVES, text, 25)]


def dla_share(table: pd.DataFrame) -> pd.DataFrame | None:
    """Mean DLA per layer of the attention and MLP outputs, divided by the sum of their
    absolute values over every layer, so models whose logits differ in scale compare (signed:
    a negative share pushes towards the counterfactual / the wrong answer)."""
    means = (table[table["component"].isin(["attn", "mlp"])]
             .groupby(["component", "layer"], as_index=False)["dla"].mean())
    total = float(means["dla"].abs().sum())
    if total < 1e-9:
        return None
    return means.assign(share=means["dla"] / total,
                        sublayer=means["component"].map({"attn": "attention", "mlp": "MLP"}))


NAME = "direct logit attribution"  # the estimator, as sentences name it


def attribution_notes(run: Run) -> list[Finding]:
    """Its clause of the run's summary (the top head, and whether it moves the attribute from
    the subject) and the check that the components sum to the metric (How sure)."""
    h: AttributionHeadline = run.headline(METHOD)
    found = []
    if h.top_head:
        moves = h.top_head_moves_from_subject
        found.append(Finding(IN_SHORT, f"head {h.top_head} has the largest direct effect on the "
                             "answer" + (" and moves the attribute from the subject (most of "
                                         "that direct effect comes through the subject "
                                         "positions)" if moves else
                                         ", most of it not through the subject positions"
                                         if moves is False else ""), 40))
        found.append(Finding(HEADS, f"the largest direct effect on the answer is **{h.top_head}**"
                             f" (DLA {with_interval(h.top_head_dla, h.top_head_dla_ci)})", 10))
    err = h.dla_sum_check_max_abs_error
    if err is not None:
        passes = h.dla_sum_check_passes
        found.append(Finding(SURE, f"**Attribution check**: the components sum to the metric "
                             f"within {err:.1e} ({'passes' if passes else '**fails**'} the "
                             "1e-3 check).", 90))
    return found
TOP_HEADS_CHECKED = 5  # heads by |DLA| the circuit's cross-check looks for


def overview(run: Run) -> dict[str, str]:
    """Its cell of the table of several runs: the head with the largest direct effect."""
    h = run.headline(METHOD)
    return {"top head (DLA)": "—" if not h.top_head else
            f"{h.top_head}: " + interval_cell(h.top_head_dla, h.top_head_dla_ci, ".2f")}


def attribution_estimates(run: Run) -> list[Estimate]:
    """The heads with the largest |DLA| and the MLP with the largest (singled out for the
    circuit's cross-check), the top head as the head that moves the answer, and its layer as
    where attention reads the subject."""
    h = run.headline(METHOD)
    found = []
    heads = run.result(METHOD, "top_heads")
    if heads is not None:
        found += [Estimate("a head with a large direct effect", NAME, site="head",
                           layer=int(r.layer), head=int(r.head), value=float(r.dla), unit="DLA",
                           why=f"top-{i + 1} head by |DLA|")
                  for i, r in enumerate(heads.head(TOP_HEADS_CHECKED).itertuples())]
    if h.key_mlp_layer is not None:
        found.append(Estimate("the MLP with the largest direct effect", NAME, site="mlp",
                              layer=int(h.key_mlp_layer), unit="DLA",
                              why="MLP with the largest |DLA|"))
    if h.top_head:
        layer, head = (int(v) for v in h.top_head[1:].split("H"))
        found.append(Estimate(ANSWER_HEAD, NAME, site="head", layer=layer, head=head,
                              value=h.top_head_dla, interval=h.top_head_dla_ci, unit="DLA",
                              why="top-1 head by |DLA|"))
        # the layer where the top head reads (a head's layer is exact: no resampled range)
        found.append(Estimate(SUBJECT_READ, NAME, site="head", layer=layer, head=head,
                              value=h.top_head_subject_share, unit=SOURCE_SHARE,
                              how="top DLA head"))
    return found


METHOD = Method(
    notebook="03_attribution", title="Direct logit attribution", short="attribution",
    headline=AttributionHeadline,
    results={
        "sum_check": Table({"prompt": "int", "metric": "float", "components_plus_bias": "float",
                            "linearisation_offset": "float", "error": "float"},
                           "the components' sum against the metric, per prompt"),
        "layer_dla": Table({"prompt": "int", "layer": "int", "component": "str", "dla": "float"},
                           "DLA of each layer's embedding, attention and MLP, per prompt"),
        "head_dla": Table({"prompt": "int", "layer": "int", "head": "int", "dla": "float"},
                          "DLA of each head, per prompt"),
        "top_heads": Table({"layer": "int", "head": "int", "dla": "float", "abs_dla": "float"},
                           "the heads with the largest mean |DLA|"),
        "top_neurons": Table({"layer": "int", "neuron": "int", "dla": "float",
                              "activation": "float", "abs_dla": "float"},
                             "the key MLP layer's neurons with the largest mean |DLA|"),
        "head_source_dla": Table({"prompt": "int", "layer": "int", "head": "int",
                                  "source": "str", "dla": "float"},
                                 "each head's DLA split by the source position it reads "
                                 "(subject, relation, last, other), per prompt"),
        "top_head_sources": Table({"layer": "int", "head": "int", "dla": "float",
                                   "subject": "float", "relation": "float", "last": "float",
                                   "other": "float", "subject_share": "float",
                                   "relation_share": "float", "last_share": "float",
                                   "other_share": "float"},
                                  "the top heads' mean DLA by source, and each source's share"),
    },
    findings=lambda run: attribution_findings(run) + attribution_notes(run),
    key_numbers=("top_head_dla",),
    quantities=(ANSWER_HEAD, SUBJECT_READ),
    estimates=attribution_estimates,
    overview=overview,
    profiles=(Profile("layer_dla", dla_share, "share", "sublayer",
                      "Direct logit attribution by layer<br><sup>mean DLA of each layer's "
                      "attention and MLP output, as a signed share of the run's total |DLA|"
                      "</sup>", "share of total |DLA|"),),
    parameters=(A.DIRECTION, A.TOP_COMPONENTS),
)
