"""Notebook 02, the logit lens: the metric read from the residual stream after every sublayer
at the last token, the attention and MLP shares of its increase, and the largest jump."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from factcircuits.chapters import attribution
from factcircuits.methods import attribute_rate as AR
from factcircuits.methods import logit_lens as LL
from factcircuits.methods.attention import EXAMPLE
from factcircuits.methods.attribution import DIRECTION
from factcircuits.methods.evaluate import PreparedTask
from factcircuits.methods.topk import TOP_K
from factcircuits.methods.uncertainty import with_interval
from factcircuits.models import LoadedModel
from factcircuits.results.claims import run_claims
from factcircuits.results.estimates import MLP_SHARE, Estimate
from factcircuits.results.headlines import Headline, interval, layer_range, number
from factcircuits.results.kinds import Table
from factcircuits.results.registry import (
    BY_RELATION,
    IN_SHORT,
    WHERE,
    Finding,
    Method,
    Profile,
    Sample,
)
from factcircuits.results.run import Run
from factcircuits.results.summary import Options, Summary, estimates_of
from factcircuits.results.wording import (
    SUBLAYER_NAMES,
    component_name,
    layer_text,
    metric_name,
    relation_peaks_text,
)

SHARE = "fraction of the increase"
RATE = "share of attribute tokens"
RELATION_PEAKS = {"relation": "str", "n": "int", "peak_layer": "int", "layer_low": "int",
                  "layer_high": "int", "value": "float", "value_low": "float",
                  "value_high": "float", "differs_from_pooled": "bool"}


@dataclass
class LogitLensHeadline(Headline):
    n_prompts: int | None = number("prompts analysed", "prompts")
    direction: str | None = number("the answer direction read (the task's metric)")
    mlp_share: float | None = number("MLP sublayers' share of the metric's increase from the "
                                     "embeddings to the last layer", SHARE)
    mlp_share_ci: list[float] | None = interval("mlp_share")
    attn_share: float | None = number("attention sublayers' share of that increase", SHARE)
    attn_share_ci: list[float] | None = interval("attn_share")
    total_increase: float | None = number("the metric after the last layer minus after the "
                                          "embeddings", "metric")
    total_increase_ci: list[float] | None = interval("total_increase")
    peak_layer: int | None = number("layer of the largest single increase", "layer")
    peak_layer_range: list[int] | None = layer_range("peak_layer")
    peak_layer_resolved: bool | None = number("that range spans at most a third of the model")
    peak_sublayer: str | None = number("sublayer (attn or mlp) of the largest increase")
    peak_jump: float | None = number("the largest single increase", "metric")
    peak_jump_ci: list[float] | None = interval("peak_jump")
    # Attribute rate (Geva et al. 2023): the logit lens at the last subject token
    attribute_rate_k: int | None = number("top tokens in which the attribute rate counts the "
                                          "subject's attribute tokens", "tokens")
    attribute_rate_n_prompts: int | None = number("prompts whose subject has attribute tokens "
                                                  "in the dataset", "prompts")
    attribute_rate_tokens_mean: float | None = number("mean attribute tokens per prompt's "
                                                      "subject (first tokens of its objects)",
                                                      "tokens")
    attribute_rate_peak: float | None = number("peak over layers of the mean share of the "
                                               "subject's attribute tokens in the logit lens's "
                                               "top k at the last subject token", RATE)
    attribute_rate_peak_ci: list[float] | None = interval("attribute_rate_peak")
    attribute_rate_peak_layer: int | None = number("layer of that peak", "layer")
    attribute_rate_peak_layer_range: list[int] | None = layer_range("attribute_rate_peak")
    attribute_rate_other_subjects: float | None = number(
        "control at the peak layer: share of the other subjects' attribute tokens in the top k "
        "at the last subject token", RATE)
    attribute_rate_other_subjects_ci: list[float] | None = interval(
        "attribute_rate_other_subjects")
    attribute_rate_excess_over_other_subjects_ci: list[float] | None = number(
        "95% paired bootstrap interval of the peak rate minus that control", RATE)
    attribute_rate_first_relation: float | None = number(
        "control at the peak layer: share of the subject's attribute tokens in the top k at "
        "the prompt's first relation token", RATE)
    attribute_rate_first_relation_ci: list[float] | None = interval(
        "attribute_rate_first_relation")
    attribute_rate_excess_over_first_relation_ci: list[float] | None = number(
        "95% paired bootstrap interval of the peak rate minus that control", RATE)
    attribute_rate_control: float | None = number("the larger of the two controls at the peak "
                                                  "layer", RATE)
    attribute_rate_control_ci: list[float] | None = interval("attribute_rate_control")
    attribute_rate_control_kind: str | None = number("which control that is")
    attribute_rate_excess: float | None = number("peak rate minus that control (mean over "
                                                 "prompts of the paired difference)", RATE)
    attribute_rate_excess_ci: list[float] | None = interval("attribute_rate_excess")
    claim_attribute_rate_above_other_subjects: dict | None = number(
        "test of 'the attribute rate peaks above the other-subjects control' (exact paired "
        "permutation test, peak layer re-chosen on every swap)")
    claim_attribute_rate_above_first_relation: dict | None = number(
        "test of 'the attribute rate peaks above the first-relation-token control'")
    attribute_rate_enriched: bool | None = number("the peak rate exceeds both controls, each "
                                                  "paired interval of the difference above 0")


def lens_findings(run: Run) -> list[Finding]:
    h: LogitLensHeadline = run.headline(METHOD)
    found = []
    if h.mlp_share is not None:
        text = (f"**Direct effects at the last token** (logit lens): attention sublayers write "
                f"{with_interval(h.attn_share, h.attn_share_ci, '.0%')} of the increase in the "
                f"{metric_name(h.direction)} and MLP sublayers "
                f"{with_interval(h.mlp_share, h.mlp_share_ci, '.0%')}; the largest single jump "
                f"is the {SUBLAYER_NAMES.get(h.peak_sublayer, 'sublayer')} of "
                f"{layer_text(run, h.peak_layer, h.peak_layer_range)}.")
        dla = run.headline(attribution.METHOD)
        if dla.top_layer_component:
            size = with_interval(dla.top_layer_component_dla, dla.top_layer_component_dla_ci,
                                 "+.2f")
            text += (f" By direct logit attribution the largest component is the "
                     f"{component_name(dla.top_layer_component)}, {size}.")
        found.append(Finding(WHERE, text, 30))
    enrichment = enrichment_text(run, h)
    if enrichment:
        found.append(Finding(WHERE, enrichment, 35))
    relations = relation_peaks_text(run.result(METHOD, "by_relation"),
                                    "the logit lens's largest jump")
    if relations:
        found.append(Finding(BY_RELATION, relations, 40))
    return found


def enrichment_text(run: Run, h: LogitLensHeadline) -> str:
    """The attribute-rate sentence: "enriched" only when the peak rate is above both controls
    with intervals of the differences that exclude 0."""
    if h.attribute_rate_peak is None or h.attribute_rate_control is None:
        return ""
    rate = with_interval(h.attribute_rate_peak, h.attribute_rate_peak_ci, ".0%")
    control = with_interval(h.attribute_rate_control, h.attribute_rate_control_ci, ".0%")
    excess = with_interval(h.attribute_rate_excess, h.attribute_rate_excess_ci, "+.0%")
    text = (f"**Subject enrichment** (attribute rate: the logit lens read directly at the last "
            f"subject token, Geva et al. 2023): the share of the subject's attribute tokens "
            f"among the top {h.attribute_rate_k} tokens peaks at {rate} after "
            f"{layer_text(run, h.attribute_rate_peak_layer, h.attribute_rate_peak_layer_range)}"
            f", against {control} for the stronger control there "
            f"({h.attribute_rate_control_kind}), a paired difference of {excess}")
    if h.attribute_rate_enriched:
        return text + (": the last subject token is **enriched** with the subject's "
                       "attributes (both controls lie below, each difference's interval above "
                       "0).")
    return text + (": the rate is not resolved above both controls, so this run does not show "
                   "the subject token enriched with its attributes.")


def lens_share(t):
    final = float(t["value"].iloc[-1])
    if abs(final) < 1e-9:
        return None
    return t.assign(share=t["value"] / final)


def lens_depth(table, n_layers: int):
    """Logit-lens read-outs on one depth scale: 0 = the embeddings, (l + ½) / L after layer
    l's attention, (l + 1) / L after its MLP, 1 = after the last layer."""
    half = (table["sublayer"] == "attn") * 0.5
    return (table["layer"].astype(float) + 1 - half) / n_layers


@dataclass(frozen=True)
class LensIncrease:
    """The mean lens curve's rise from the embeddings to the final metric, split between the
    attention and MLP sublayers, and its largest single jump (`LogitLens.shares`)."""

    embed_value: float  # the metric read after the embeddings
    final_value: float  # ... and after the last layer
    total_increase: float
    attn_increase: float
    mlp_increase: float
    attn_share: float  # of the total increase (NaN when it is 0)
    mlp_share: float
    peak_layer: int  # where the largest single jump is
    peak_sublayer: str
    peak_jump: float


@dataclass(kw_only=True)
class LensSummary(Summary):
    """The logit lens and the attribute rate of the prepared prompts, with what the
    notebook's figures draw."""

    lens: LL.LogitLens
    shares: dict  # LogitLens.shares(): the sublayers' increases and the largest jump
    curve: pd.DataFrame  # the mean curve with its band
    attributes: AR.AttributeRate
    rate_curve: pd.DataFrame  # the attribute rate and its controls per layer
    example: int  # the prompt whose top tokens are listed
    top_tokens: pd.DataFrame
    by_relation: pd.DataFrame | None  # None: the prompts come from one relation

    @property
    def increase(self) -> LensIncrease:
        """`shares` by name."""
        return LensIncrease(**self.shares)

    @property
    def share_caveat(self) -> str:
        """Why the attention/MLP shares are not meaningful, when they cancel (else empty)."""
        return LL.share_caveat(self.shares)


def summarise(lm: LoadedModel, prepared: PreparedTask, *, options: Options) -> LensSummary:
    from factcircuits.run.session import analysed_dataset

    seed = options.seed
    lens = LL.logit_lens(lm, prepared, kind=options.direction, batch_size=options.batch_size,
                         progress=True)
    dataset = analysed_dataset(options.dataset, options.task, options.relation)
    attributes = AR.attribute_rate(lm, prepared, dataset.rows, k=options.attribute_k,
                                   batch_size=options.batch_size)
    headline = LogitLensHeadline(**lens.headline(seed), **attributes.headline(seed))
    curve, rate_curve = lens.mean_curve(seed), attributes.curves(seed)
    example = min(options.example, len(prepared.prompts) - 1)
    answers = [int(prepared.answer_ids[example])] if prepared.task == "cloze" else []
    top = LL.top_tokens(lm, lens.decomposition, example, options.top_k, answers)
    relations = prepared.rows.get("relation")
    by_relation = (lens.by_relation(relations.astype(str).to_numpy(), seed)
                   if relations is not None and relations.nunique() > 1 else None)
    tables = {"logit_lens": lens.table, "logit_lens_mean": curve, "top_tokens_example": top,
              "attribute_rate": attributes.table, "attribute_rate_curve": rate_curve}
    if by_relation is not None:
        tables["by_relation"] = by_relation
    return LensSummary(headline=headline, tables=tables,
                       estimates=estimates_of(METHOD, headline, tables),
                       lens=lens, shares=lens.shares(), curve=curve, attributes=attributes,
                       rate_curve=rate_curve, example=example, top_tokens=top,
                       by_relation=by_relation)


ENRICHMENT_CLAIMS = ("claim_attribute_rate_above_other_subjects",
                     "claim_attribute_rate_above_first_relation")


def lens_notes(run: Run) -> list[Finding]:
    """Its clause of the run's summary: whether the last subject token's state is enriched
    with the subject's attributes ("enriched" only when Geva's tests, judged with the run's
    other claims, support it)."""
    h = run.headline(METHOD)
    if h.attribute_rate_enriched is None:
        return []
    judged = run_claims(run)
    tests = [judged[k]["verdict"] for k in ENRICHMENT_CLAIMS if k in judged]
    enriched = (all(v == "supported" for v in tests) if tests  # Holm over the run
                else h.attribute_rate_enriched)
    return [Finding(IN_SHORT, "the last subject token's state is enriched with the subject's "
                    f"attributes (attribute rate peaks at layer {h.attribute_rate_peak_layer}, "
                    "above both controls)" if enriched else
                    "enrichment of the last subject token with the subject's attributes is not "
                    "shown (its attribute rate is not above both controls)", 20)]


def lens_samples(run: Run) -> list[Sample]:
    n = run.headline(METHOD).n_prompts
    return [Sample(None if n is None else f"{n} prompts analysed", "prompts analysed", n)]


def lens_estimates(h) -> list[Estimate]:
    """The MLPs' share of the direct effect and where the largest jump is (the original
    study's comparison)."""
    if h.mlp_share is None:
        return []
    return [Estimate(MLP_SHARE, "logit lens", site=h.peak_sublayer, layer=h.peak_layer,
                     layer_range=h.peak_layer_range, value=h.mlp_share, interval=h.mlp_share_ci,
                     unit="fraction", n=h.n_prompts)]


METHOD = Method(
    notebook="02_logit_lens", title="Logit lens", short="logit lens",
    headline=LogitLensHeadline,
    results={
        "logit_lens": Table({"prompt": "int", "step": "int", "layer": "int", "sublayer": "str",
                             "label": "str", "value": "float"},
                            "the metric after each sublayer, per prompt"),
        "logit_lens_mean": Table({"step": "int", "layer": "int", "sublayer": "str",
                                  "label": "str", "value": "float", "low": "float",
                                  "high": "float"}, "the mean curve with its band"),
        "top_tokens_example": Table({"step": "int", "layer": "int", "sublayer": "str",
                                     "label": "str", "top_tokens": "str", "top_probs": "str"},
                                    "logit-lens top tokens of one prompt (and the answer's "
                                    "rank)", open_columns=True),
        "by_relation": Table(RELATION_PEAKS, "the largest jump per relation"),
        "attribute_rate": Table({"prompt": "int", "read": "str", "layer": "int",
                                 "share": "float", "count": "float", "n_tokens": "int"},
                                "attribute tokens in the logit lens's top k after each layer, "
                                "per prompt: at the last subject token (read 'subject') and "
                                "the two controls"),
        "attribute_rate_curve": Table({"read": "str", "layer": "int", "rate": "float",
                                       "low": "float", "high": "float", "n_prompts": "int"},
                                      "the mean attribute rate and controls per layer, with "
                                      "their bands"),
    },
    findings=lambda run: lens_findings(run) + lens_notes(run),
    samples=lens_samples,
    key_numbers=("mlp_share", "peak_layer_depth"),
    quantities=(MLP_SHARE,),
    estimates=lambda run: lens_estimates(run.headline(METHOD)),
    profiles=(Profile("logit_lens_mean", lens_share, "share", None,
                      "Logit lens: share of the final metric reached<br><sup>mean metric read "
                      "from the residual stream after each sublayer</sup>",
                      "share of final value",
                      "relative depth (0 = embeddings, 1 = after the last layer)",
                      lens_depth),),
    parameters=(DIRECTION, EXAMPLE, TOP_K, AR.ATTRIBUTE_K),
)
