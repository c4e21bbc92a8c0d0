"""What a run found, in words, computed only from its typed results (`results.run.Run`).

For each run: does the model know the facts; where the fact is read (layers, token classes,
components); how it moves to the last token (attention windows, heads); how sure that is
(agreement between methods, sample sizes); and how it compares with the original study
(gemma-2b-it) and with ROME (GPT-2 XL), by relative depth where models differ in depth.
When the model is at chance, the findings say so and do not interpret the mechanism.

Each method contributes its own sentences (its registry entry's `findings`); this module adds
those that read several methods at once, and orders them by section. The same markdown feeds
the Quarto front page and the Quarto-free preview (through `factcircuits.report.synthesis`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from factcircuits.chapters import (
    activation_patching,
    attention_patterns,
    attribution,
    causal_tracing,
    logit_lens,
    task_check,
)
from factcircuits.chapters.ablation_knockout import role_knockout, subject_knockout
from factcircuits.methods.uncertainty import with_interval
from factcircuits.report.readings import ORIGINAL_STUDY, ROME, mlp_at_subject
from factcircuits.report.sureness import (
    CONFOUNDED,
    UNRESOLVED,
    Check,
    checks,
    run_claims,
    sureness,
)
from factcircuits.results.registry import (
    KNOWLEDGE,
    LITERATURE,
    MOVES,
    SECTIONS,
    SURE,
    Finding,
    methods,
)
from factcircuits.results.run import Run, depth_band, relative_depth
from factcircuits.results.wording import SUBLAYER_NAMES, head_label, layer_text, model_line


@dataclass
class RunFindings:
    run: Run
    at_chance: bool
    summary: str
    sections: dict[str, list[str]] = field(default_factory=dict)  # title -> bullets
    checks: list[Check] = field(default_factory=list)


def _heads(ev: Run) -> list[Finding]:
    """The heads three methods single out, side by side."""
    dla = ev.headline(attribution.METHOD)
    patch = ev.headline(activation_patching.METHOD)
    attention = ev.headline(attention_patterns.METHOD)
    heads = []
    if dla.top_head:
        heads.append(f"the largest direct effect on the answer is **{dla.top_head}**"
                     f" (DLA {with_interval(dla.top_head_dla, dla.top_head_dla_ci)})")
    if patch.top_head_layer is not None:
        patched = head_label(patch.top_head_layer, patch.top_head)
        heads.append(f"patching one head at a time restores most with **{patched}** "
                     f"({with_interval(patch.top_head_effect, patch.top_head_effect_ci)} of "
                     "the gap)")
    if attention.top_dla_head_subject_attention is not None:
        heads.append(f"on the example prompt {attention.top_dla_head} puts "
                     f"{attention.top_dla_head_subject_attention:.2f} of the last "
                     f"token's attention on the subject")
    return [Finding(MOVES, "**Heads**: " + "; ".join(heads) + ".", 20)] if heads else []


def _literature(ev: Run) -> list[Finding]:
    bullets = []
    o = ORIGINAL_STUDY
    lens = ev.headline(logit_lens.METHOD)
    if lens.mlp_share is not None:
        share, layer = lens.mlp_share, lens.peak_layer
        depth, o_depth = ev.depth(layer), relative_depth(o["peak_layer"], o["n_layers"])
        where = ("MLPs write most of it directly, as there" if share >= 0.5 else
                 "attention sublayers write most of it directly; a direct effect leaves out "
                 "what MLPs contribute through later layers, so this does not say attention "
                 "carries the fact")
        text = (f"**Original study** ({o['model']}, {o['n_layers']} layers; direct effects by "
                f"logit lens): MLPs wrote ≈{o['mlp_share']:.0%} of the increase, the largest "
                f"jump at the layer-{o['peak_layer']} MLP (relative depth {o_depth:.2f}). Here "
                f"MLPs write {share:.0%}, so {where}; the largest jump is the "
                f"{SUBLAYER_NAMES.get(lens.peak_sublayer, 'sublayer')} of "
                f"{layer_text(ev, layer)}")
        if depth is not None:
            side = "later" if depth > o_depth else "earlier"
            text += f", {abs(depth - o_depth):.2f} of the depth {side}"
        bullets.append(Finding(LITERATURE, text + ".", len(bullets)))
    mlp = mlp_at_subject(ev)
    if "tracing" in mlp:
        r = ROME
        layer, aie = mlp["tracing"]
        band = depth_band(ev.depth(layer))
        tr = ev.headline(causal_tracing.METHOD)
        attn_aie = tr.attn_subject_last_peak_aie
        text = (f"**ROME** ({r['model']}, {r['n_layers']} layers): the MLPs at the last subject "
                f"token in middle layers decide (AIE {r['mlp_aie']:.1%} against "
                f"{r['attn_aie']:.1%} for attention there), attention at the last token acts "
                f"later. Here the MLP peak at the last subject token is in the **{band}** layers"
                f" ({'as in' if band == 'middle' else 'unlike'} ROME)")
        judged = run_claims(ev)
        found = judged.get("claim_mlp_over_attn_subject_last")
        if attn_aie is not None:
            ratio = ("larger than" if aie > attn_aie else "not larger than") + " (untested)"
            if found:  # say only what the test supports
                ratio = {"supported": "larger than", "contradicted": "smaller than",
                         "not resolved": "not resolved as larger than",
                         "not tested": "not tested against"}[found["verdict"]]
            text += f", and its AIE ({aie:.1%}) is {ratio} attention's ({attn_aie:.1%})"
        last_attn = tr.attn_last_peak_layer
        if last_attn is not None:
            order = judged.get("claim_mlp_before_attn_last")
            said = ("later" if last_attn > layer else "not later") + " (untested)"
            if order:
                said = {"supported": "later", "contradicted": "earlier",
                        "not resolved": "not resolved as later",
                        "not tested": "not tested as later"}[order["verdict"]]
            text += (f"; attention at the last token peaks at {layer_text(ev, last_attn)}, "
                     f"{said} than the MLP peak")
        bullets.append(Finding(LITERATURE, text + ".", len(bullets)))
    return bullets


def _summary(ev: Run, at_chance: bool, checks: list[Check]) -> str:
    if at_chance:
        return (f"{ev.short_model} is at chance on {ev.dataset}: there is no retrieved fact to "
                "locate, so no mechanism is claimed.")
    parts = []
    mlp = mlp_at_subject(ev)
    if "tracing" in mlp or "patching" in mlp:
        single = ev.headline(causal_tracing.METHOD).window_rule is not None  # window-1 peaks
        method = (f"causal tracing{', one layer at a time' if single else ''}"
                  if "tracing" in mlp else "activation patching")
        layer = (mlp.get("tracing") or mlp["patching"])[0]
        parts.append(f"restoring the MLP output at the last subject token matters most in "
                     f"{depth_band(ev.depth(layer))} layers ({method}: layer {int(layer)})")
    lens = ev.headline(logit_lens.METHOD)
    if lens.attribute_rate_enriched is not None:  # the verb "enriched" needs Geva's test
        judged = run_claims(ev)
        tests = [judged[k]["verdict"] for k in ("claim_attribute_rate_above_other_subjects",
                                                "claim_attribute_rate_above_first_relation")
                 if k in judged]
        enriched = (all(v == "supported" for v in tests) if tests  # Holm over the run
                    else lens.attribute_rate_enriched)
        parts.append("the last subject token's state is enriched with the subject's attributes "
                     f"(attribute rate peaks at layer {lens.attribute_rate_peak_layer}, above "
                     "both controls)" if enriched else
                     "enrichment of the last subject token with the subject's attributes is "
                     "not shown (its attribute rate is not above both controls)")
    ko, relation = subject_knockout(ev), role_knockout(ev, "relation")
    if ko is not None:
        text = (f"blocking the last token's attention to the subject hurts most in layers "
                f"{int(ko['first'])}–{int(ko['last'])}")
        if relation is not None:
            text += (f", to the relation tokens in layers {int(relation['first'])}–"
                     f"{int(relation['last'])}")
        parts.append(text + " (total effects)")
    dla = ev.headline(attribution.METHOD)
    if dla.top_head:
        moves = dla.top_head_moves_from_subject
        parts.append(f"head {dla.top_head} has the largest direct effect on the answer"
                     + (" and moves the attribute from the subject (most of that direct effect "
                        "comes through the subject positions)" if moves else
                        ", most of it not through the subject positions" if moves is False
                        else ""))
    if not parts:
        return "This run has too few analyses to say where the fact is read."
    text = "; ".join(parts)
    text = text[0].upper() + text[1:] + "."
    if checks:
        text += f" {sum(c.agree for c in checks)} of {len(checks)} cross-method checks agree"
        open_ = sum(c.verdict in (UNRESOLVED, CONFOUNDED) for c in checks)
        text += f" ({open_} not resolved)." if open_ else "."
    n = (ev.headline(logit_lens.METHOD).n_prompts
         or ev.headline(causal_tracing.METHOD).n_prompts)
    if n is not None and n < 20:
        text += f" Based on {n} prompts: a small sample."
    return text


# ------------------------------------------------------------------ public API
def run_findings(ev: Run) -> RunFindings:
    """Every registered method's sentences and the cross-method ones, by section."""
    at_chance = task_check.at_chance(ev)
    found = [] if at_chance else checks(ev)
    bullets = [f for m in methods() for f in m.findings_for(ev)]
    if not ev.has(task_check.METHOD):
        bullets.append(Finding(KNOWLEDGE, "The task check (notebook 01) did not run, so whether "
                               "the model knows these facts is not established."))
    if at_chance:  # no mechanism to interpret: what the model knows, and how sure
        bullets = [b for b in bullets if b.section == KNOWLEDGE]
    else:
        bullets += _heads(ev) + _literature(ev)
    sections = {s: [b.text for b in sorted((b for b in bullets if b.section == s),
                                           key=lambda b: b.order)] for s in SECTIONS}
    sections[SURE] = sureness(ev, found, mechanism=not at_chance)
    return RunFindings(ev, at_chance, _summary(ev, at_chance, found),
                       {k: v for k, v in sections.items() if v}, found)


def run_markdown(ev: Run, level: int = 2, anchors: bool = True) -> str:
    """One run's findings: a heading, the summary, then one short list per question."""
    f = run_findings(ev)
    hashes = "#" * level
    anchor = f" {{#sec-findings-{ev.anchor}}}" if anchors else ""
    lines = [f"{hashes} {ev.title}{anchor}", "",
             f"Model {model_line(ev)}; task {ev.task}, run `{ev.run_id}`.", "",
             f"**In short.** {f.summary}", ""]
    for title, bullets in f.sections.items():
        lines += [f"{hashes}# {title}" + (" {.unnumbered}" if anchors else ""), ""]
        lines += [f"- {b}" for b in bullets] + [""]
    return "\n".join(lines)
