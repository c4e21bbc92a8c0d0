"""What a run found, in words, computed only from its headline and result files.

For each run: does the model know the facts; where the fact is read (layers, token classes,
components); how it moves to the last token (attention windows, heads); how sure that is
(agreement between methods, sample sizes); and how it compares with the original study
(gemma-2b-it) and with ROME (GPT-2 XL), by relative depth where models differ in depth.
When the model is at chance, the findings say so and do not interpret the mechanism.

The same markdown feeds the Quarto front page and the Quarto-free preview (through
`factcircuits.report.synthesis`, which adds what the runs have in common).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from factcircuits.methods.uncertainty import with_interval
from factcircuits.report.evidence import RunEvidence, depth_band, peak_row, relative_depth
from factcircuits.report.readings import (
    ATTENTION,
    DLA,
    KNOCKOUT,
    LAYER0_MLP,
    LENS,
    ORIGINAL_STUDY,
    PATCHING,
    ROME,
    TASK,
    TRACING,
    head_label,
    mlp_at_subject,
    subject_knockout,
    tracing_window,
)
from factcircuits.report.sureness import (
    CONFOUNDED,
    UNRESOLVED,
    Check,
    checks,
    interval_text,
    range_text,
    sureness,
)

METRIC_NAMES = {"logit_diff": "logit difference (correct − counterfactual)",
                "log_odds": "log-odds of the answer sets",
                "logit_diff_sum": "summed logit difference of the answer sets",
                "prob_mass_diff": "probability-mass difference of the answer sets"}
SUBLAYER_NAMES = {"attn": "attention", "mlp": "MLP", "embed": "embedding"}
@dataclass
class RunFindings:
    evidence: RunEvidence
    at_chance: bool
    summary: str
    sections: dict[str, list[str]] = field(default_factory=dict)  # title -> bullets
    checks: list[Check] = field(default_factory=list)


# ------------------------------------------------------------------ formatting helpers
def _layer(ev: RunEvidence, layer, layer_range=None) -> str:
    """'layer 3 (relative depth 0.30; 95% of resamples in layers 2–4)'."""
    depth = ev.depth(layer)
    notes = [f"relative depth {depth:.2f}"] if depth is not None else []
    if layer_range:
        notes.append(range_text(layer_range))
    return f"layer {int(layer)}" + (f" ({'; '.join(notes)})" if notes else "")


def _window(ev: RunEvidence, first, last) -> str:
    d1, d2 = ev.depth(first), ev.depth(last)
    depth = f" (relative depth {d1:.2f}–{d2:.2f})" if d1 is not None and d2 is not None else ""
    return f"layers {int(first)}–{int(last)}{depth}"


def _metric(name) -> str:
    return METRIC_NAMES.get(name, name or "metric")


def _component(label: str) -> str:
    """'attn L23' -> 'attention of layer 23' (direct logit attribution's component names)."""
    kind, _, layer = str(label).partition(" L")
    return f"{SUBLAYER_NAMES.get(kind, kind)} of layer {layer}" if layer.isdigit() else label


def _change(fraction: float) -> str:
    return f"falls by {-fraction:.0%}" if fraction < 0 else f"rises by {fraction:.0%}"


def _knowledge(ev: RunEvidence) -> tuple[bool, list[str]]:
    n = ev.number(TASK, "n_prompts")
    if n is None:
        return False, ["The task check (notebook 01) did not run, so whether the model knows "
                       "these facts is not established."]
    acc, kept = ev.number(TASK, "accuracy"), ev.number(TASK, "n_kept")
    metric = ev.number(TASK, "main_metric") or "metric"
    correct = round(acc * n)  # top-1 (cloze) or the label's answer set (yes/no)
    pairwise = ev.number(TASK, "pairwise_accuracy")  # cloze runs since the known parameter
    top1 = " (the answer is its top token)" if pairwise is not None else ""
    text = (f"The model answers **{correct} of {n}** prompts correctly{top1}: "
            f"{interval_text(ev, TASK, 'accuracy', '.0%')}; mean "
            f"{_metric(metric)} {interval_text(ev, TASK, 'mean_metric', '+.2f')}")
    if ev.number(TASK, "mean_p_answer") is not None:
        text += f", mean P(correct answer) {interval_text(ev, TASK, 'mean_p_answer')}"
    text += "."
    if pairwise is not None:
        text += (f" It ranks the answer above the counterfactual for {round(pairwise * n)} "
                 f"({pairwise:.0%}).")
    if ev.number(TASK, "auc") is not None:
        text += (f" AUC of true against false statements {ev.number(TASK, 'auc'):.2f}; "
                 f"binomial test against 50%: p = {ev.number(TASK, 'p_vs_chance'):.2g}.")
    at_chance = bool(ev.number(TASK, "at_chance"))
    if at_chance:
        text += (" **The model is at chance on this task**: the later analyses describe how it "
                 "produces an uninformed answer, so the mechanism is not interpreted here.")
    elif kept is not None and (kept < n or ev.number(TASK, "known") not in (None, "top1")):
        phrase = ev.number(TASK, "known_phrase") or "answers correctly"
        criterion = ev.number(TASK, "known")
        if criterion and f"known={criterion}" not in phrase:
            phrase += f" (`known={criterion}`)"
        which = (f"the {kept} prompts it {phrase}" if kept < n
                 else f"all {n} prompts, each one it {phrase}")
        text += f" The mechanistic analyses use {which}."
    return at_chance, [text]


def _where(ev: RunEvidence) -> list[str]:
    bullets = []
    mlp = mlp_at_subject(ev)
    if "tracing" in mlp:
        layer, aie = mlp["tracing"]
        attn_aie = ev.number(TRACING, "attn_subject_last_peak_aie")
        first, last = tracing_window(ev, int(layer))
        restored = (f"layers {first}–{last}, the window centred on " if last > first else "")
        trace_range = ev.number(TRACING, "mlp_subject_last_peak_layer_range")
        text = (f"**Causal tracing** ({ev.number(TRACING, 'n_prompts')} prompts): restoring "
                f"the MLP outputs at the last subject token recovers the most for {restored}"
                f"{_layer(ev, layer, trace_range)}, "
                f"{depth_band(ev.depth(layer))} layers: AIE "
                f"{interval_text(ev, TRACING, 'mlp_subject_last_peak_aie', '.3f')} on "
                f"{ev.number(TRACING, 'metric') or 'the metric'}")
        if attn_aie is not None:
            text += (f", against "
                     f"{interval_text(ev, TRACING, 'attn_subject_last_peak_aie', '.3f')} at "
                     "most for attention at that token")
        bullets.append(text + ".")
    if ev.number(PATCHING, "n_pairs"):
        text = f"**Activation patching** ({ev.number(PATCHING, 'n_pairs')} prompt pairs):"
        handover = ev.number(PATCHING, "resid_pre_handover_layer")
        if handover is not None:
            text += (f" the residual stream carries the clean answer at the subject tokens "
                     f"first and at the last token from {_layer(ev, handover)} on;")
        if "patching" in mlp:
            layer, effect = mlp["patching"]
            ci = ev.number(PATCHING, "mlp_out_subject_last_peak_ci")
            where = ev.number(PATCHING, "mlp_out_subject_last_peak_layer_range")
            text += (f" the MLP output at the last subject token restores most at "
                     f"{_layer(ev, layer, where)}, "
                     f"{with_interval(effect, ci)} of the clean−corrupted gap"
                     + (f" ({LAYER0_MLP})" if layer == 0 else "") + ";")
        row = peak_row(ev.table(PATCHING, "patching_by_class"), "normalized",
                       component="attn_out", token_class="last")
        if row is not None:
            text += (f" the attention output at the last token most at {_layer(ev, row['layer'])}, "
                     f"{row['normalized']:.2f}.")
        bullets.append(text.rstrip(";:") + ("" if text.endswith(".") else "."))
    if ev.number(LENS, "mlp_share") is not None:
        lens_range = ev.number(LENS, "peak_layer_range")
        text = (f"**Direct effects at the last token** (logit lens): attention sublayers write "
                f"{interval_text(ev, LENS, 'attn_share', '.0%')} of the increase in the "
                f"{_metric(ev.number(LENS, 'direction'))} and MLP sublayers "
                f"{interval_text(ev, LENS, 'mlp_share', '.0%')}; the largest single jump is "
                f"the {SUBLAYER_NAMES.get(ev.number(LENS, 'peak_sublayer'), 'sublayer')} of "
                f"{_layer(ev, ev.number(LENS, 'peak_layer'), lens_range)}.")
        if ev.number(DLA, "top_layer_component"):
            text += (f" By direct logit attribution the largest component is the "
                     f"{_component(ev.number(DLA, 'top_layer_component'))} "
                     f"({interval_text(ev, DLA, 'top_layer_component_dla', '+.2f')}).")
        bullets.append(text)
    return bullets


def _moves(ev: RunEvidence) -> list[str]:
    bullets = []
    ko = subject_knockout(ev)
    if ko is not None:
        bullets.append(
            f"**Attention knockout**: blocking the last token's attention to the subject hurts "
            f"most in {_window(ev, ko['first'], ko['last'])}"
            + (f" (in 95% of resamples the worst window is centred on layers "
               f"{centres[0]}–{centres[1]})"
               if (centres := ev.number(KNOCKOUT, "knockout_subject_peak_centre_range")) else "")
            + f": P(answer) {_change(ko['relative_p_change'])}"
            + (f" (95% CI {ci[0]:+.0%} to {ci[1]:+.0%})"
               if (ci := ev.number(KNOCKOUT, 'knockout_subject_peak_relative_p_change_ci'))
               else "") + ".")
    heads = []
    if ev.number(DLA, "top_head"):
        heads.append(f"the largest direct effect on the answer is **{ev.number(DLA, 'top_head')}**"
                     f" (DLA {interval_text(ev, DLA, 'top_head_dla')})")
    if ev.number(PATCHING, "top_head_layer") is not None:
        patched = head_label(ev.number(PATCHING, "top_head_layer"),
                             ev.number(PATCHING, "top_head"))
        heads.append(f"patching one head at a time restores most with **{patched}** "
                     f"({interval_text(ev, PATCHING, 'top_head_effect')} of the gap)")
    if ev.number(ATTENTION, "top_dla_head_subject_attention") is not None:
        heads.append(f"on the example prompt {ev.number(ATTENTION, 'top_dla_head')} puts "
                     f"{ev.number(ATTENTION, 'top_dla_head_subject_attention'):.2f} of the last "
                     f"token's attention on the subject")
    if heads:
        bullets.append("**Heads**: " + "; ".join(heads) + ".")
    return bullets


def _relations(ev: RunEvidence) -> list[str]:
    """Relations that stand out from the pooled numbers (their interval excludes them)."""
    bullets = []
    accuracy = ev.table(TASK, "by_relation")
    if accuracy is not None and not accuracy.empty:
        differ = accuracy[accuracy["differs_from_pooled"].astype(bool)]
        names = ", ".join(f"{r.relation} {r.accuracy:.0%} (95% CI {r.accuracy_low:.0%} to "
                          f"{r.accuracy_high:.0%}, {r.rows} prompts)" for r in differ.itertuples())
        bullets.append(f"**Accuracy by relation** ({len(accuracy)} relations): "
                       + (f"the intervals of {names} exclude the pooled accuracy."
                          if names else "no relation's interval excludes the pooled accuracy."))
    for notebook, what in ((TRACING, "causal tracing's MLP peak at the last subject token"),
                           (PATCHING, "patching's MLP peak at the last subject token"),
                           (LENS, "the logit lens's largest jump")):
        table = ev.table(notebook, "by_relation")
        if table is None or table.empty:
            continue
        differ = table[table["differs_from_pooled"].astype(bool)]
        names = ", ".join(f"{r.relation} (layer {r.peak_layer}, 95% of resamples in "
                          f"{r.layer_low}–{r.layer_high}, n = {r.n})" for r in differ.itertuples())
        bullets.append(f"**Where {what} sits, by relation**: "
                       + (f"{names} differ from the pooled peak." if names else
                          f"no relation's range excludes the pooled peak ({len(table)} "
                          "relations; small per-relation samples resolve only large shifts)."))
    return bullets


def _literature(ev: RunEvidence) -> list[str]:
    bullets = []
    o = ORIGINAL_STUDY
    if ev.number(LENS, "mlp_share") is not None:
        share, layer = ev.number(LENS, "mlp_share"), ev.number(LENS, "peak_layer")
        depth, o_depth = ev.depth(layer), relative_depth(o["peak_layer"], o["n_layers"])
        where = "MLPs carry most of it, as there" if share >= 0.5 else (
            "attention, not the MLPs, carries most of it")
        text = (f"**Original study** ({o['model']}, {o['n_layers']} layers): MLPs carried "
                f"≈{o['mlp_share']:.0%} of the increase, the largest jump at the layer-"
                f"{o['peak_layer']} MLP (relative depth {o_depth:.2f}). Here MLPs carry "
                f"{share:.0%}, so {where}; the largest jump is the "
                f"{SUBLAYER_NAMES.get(ev.number(LENS, 'peak_sublayer'), 'sublayer')} of "
                f"{_layer(ev, layer)}")
        if depth is not None:
            side = "later" if depth > o_depth else "earlier"
            text += f", {abs(depth - o_depth):.2f} of the depth {side}"
        bullets.append(text + ".")
    mlp = mlp_at_subject(ev)
    if "tracing" in mlp:
        r = ROME
        layer, aie = mlp["tracing"]
        band = depth_band(ev.depth(layer))
        attn_aie = ev.number(TRACING, "attn_subject_last_peak_aie")
        text = (f"**ROME** ({r['model']}, {r['n_layers']} layers): the MLPs at the last subject "
                f"token in middle layers decide (AIE {r['mlp_aie']:.1%} against "
                f"{r['attn_aie']:.1%} for attention there), attention at the last token acts "
                f"later. Here the MLP peak at the last subject token is in the **{band}** layers"
                f" ({'as in' if band == 'middle' else 'unlike'} ROME)")
        found = ev.number(TRACING, "claim_mlp_over_attn_subject_last")
        if attn_aie is not None:
            ratio = "larger" if aie > attn_aie else "not larger"
            if isinstance(found, dict):  # say only what the test supports
                ratio = {"supported": "larger", "contradicted": "smaller",
                         "not resolved": "not resolved against"}[found["verdict"]]
            text += f", and its AIE ({aie:.1%}) is {ratio} than attention's ({attn_aie:.1%})"
        last_attn = ev.number(TRACING, "attn_last_peak_layer")
        if last_attn is not None:
            share = ev.number(TRACING, "mlp_subject_before_attn_last_share")
            order = "later" if last_attn > layer else "not later"
            if share is not None:
                order = ("later" if share >= 0.975 else "not later" if share <= 0.025 else
                         f"not resolved as later ({share:.0%} of resamples)")
            text += (f"; attention at the last token peaks at {_layer(ev, last_attn)}, "
                     f"{order} than the MLP peak")
        bullets.append(text + ".")
    return bullets


def _summary(ev: RunEvidence, at_chance: bool, checks: list[Check]) -> str:
    if at_chance:
        return (f"{ev.short_model} is at chance on {ev.dataset}: there is no retrieved fact to "
                "locate, so no mechanism is claimed.")
    parts = []
    mlp = mlp_at_subject(ev)
    if "tracing" in mlp or "patching" in mlp:
        layer = (mlp.get("tracing") or mlp["patching"])[0]
        parts.append(f"the subject is enriched by MLPs at its last token in "
                     f"{depth_band(ev.depth(layer))} layers (peak at layer {int(layer)})")
    ko, head = subject_knockout(ev), ev.number(DLA, "top_head")
    if ko is not None:
        parts.append(f"attention in layers {int(ko['first'])}–{int(ko['last'])}"
                     + (f" (top head {head})" if head else "")
                     + " moves the attribute to the last token")
    elif head:
        parts.append(f"head {head} writes the answer at the last token")
    if not parts:
        return "This run has too few analyses to say where the fact is read."
    text = "; ".join(parts)
    text = text[0].upper() + text[1:] + "."
    if checks:
        text += f" {sum(c.agree for c in checks)} of {len(checks)} cross-method checks agree"
        open_ = sum(c.verdict in (UNRESOLVED, CONFOUNDED) for c in checks)
        text += f" ({open_} not resolved)." if open_ else "."
    n = ev.number(LENS, "n_prompts") or ev.number(TRACING, "n_prompts")
    if n is not None and n < 20:
        text += f" Based on {n} prompts: a small sample."
    return text


# ------------------------------------------------------------------ public API
def run_findings(ev: RunEvidence) -> RunFindings:
    at_chance, knowledge = _knowledge(ev)
    found = [] if at_chance else checks(ev)
    sections = {"Does the model know the facts?": knowledge}
    if not at_chance:
        sections["Where the fact is read"] = _where(ev)
        sections["How it reaches the last token"] = _moves(ev)
        sections["How sure"] = sureness(ev, found)
        sections["By relation"] = _relations(ev)
        sections["Compared with earlier studies"] = _literature(ev)
    else:
        sections["How sure"] = sureness(ev, [], mechanism=False)
    return RunFindings(ev, at_chance, _summary(ev, at_chance, found),
                       {k: v for k, v in sections.items() if v}, found)


def run_markdown(ev: RunEvidence, level: int = 2, anchors: bool = True) -> str:
    """One run's findings: a heading, the summary, then one short list per question."""
    f = run_findings(ev)
    hashes = "#" * level
    anchor = f" {{#sec-findings-{ev.anchor}}}" if anchors else ""
    lines = [f"{hashes} {ev.title}{anchor}", "",
             f"Model `{ev.model}`, task {ev.task}, run `{ev.run_id}`.", "",
             f"**In short.** {f.summary}", ""]
    for title, bullets in f.sections.items():
        lines += [f"{hashes}# {title}" + (" {.unnumbered}" if anchors else ""), ""]
        lines += [f"- {b}" for b in bullets] + [""]
    return "\n".join(lines)
