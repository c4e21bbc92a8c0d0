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

from factcircuits.report.evidence import RunEvidence, depth_band, peak_row, relative_depth

# Published reference points (typed once here, with their source; everything else is computed).
ORIGINAL_STUDY = {"model": "google/gemma-2b-it", "n_layers": 18, "mlp_share": 0.70,
                  "peak_layer": 13, "peak_sublayer": "mlp"}  # the study this project extends
ROME = {"model": "GPT-2 XL", "n_layers": 48, "mlp_aie": 0.066, "attn_aie": 0.016,
        "noise_samples": 10}  # Meng et al. 2022, causal tracing at the last subject token
# Two layer estimates agree when they differ by at most this share of the model's depth.
AGREEMENT_DEPTH = 0.10

METRIC_NAMES = {"logit_diff": "logit difference (correct − counterfactual)",
                "log_odds": "log-odds of the answer sets",
                "logit_diff_sum": "summed logit difference of the answer sets",
                "prob_mass_diff": "probability-mass difference of the answer sets"}
SUBLAYER_NAMES = {"attn": "attention", "mlp": "MLP", "embed": "embedding"}

TRACING, PATCHING = "05_causal_tracing", "04_activation_patching"
TASK, LENS, DLA, KNOCKOUT, ATTENTION = ("01_task_check", "02_logit_lens", "03_attribution",
                                        "06_ablation_knockout", "07_attention_patterns")


@dataclass
class Check:
    """One comparison of two methods' answers to the same question."""
    question: str
    agree: bool
    detail: str


@dataclass
class RunFindings:
    evidence: RunEvidence
    at_chance: bool
    summary: str
    sections: dict[str, list[str]] = field(default_factory=dict)  # title -> bullets
    checks: list[Check] = field(default_factory=list)


# ------------------------------------------------------------------ formatting helpers
def _layer(ev: RunEvidence, layer) -> str:
    depth = ev.depth(layer)
    return f"layer {int(layer)}" + (f" (relative depth {depth:.2f})" if depth is not None else "")


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


def tracing_window(ev: RunEvidence, layer: int) -> tuple[int, int]:
    """First and last layer restored together around `layer` (ROME's window, clipped)."""
    window = int(ev.number(TRACING, "window") or 1)
    last_layer = (ev.n_layers or layer + window) - 1
    return max(0, layer - window // 2), min(last_layer, layer - (-window // 2) - 1)


def _head(layer, head) -> str:
    return f"L{int(layer)}H{int(head)}"


def _tolerance(ev: RunEvidence) -> int:
    """Layers within which two estimates count as the same place (at least one)."""
    return max(1, round(AGREEMENT_DEPTH * ((ev.n_layers or 11) - 1)))


# ------------------------------------------------------------------ the evidence, by question
def _knowledge(ev: RunEvidence) -> tuple[bool, list[str]]:
    n = ev.number(TASK, "n_prompts")
    if n is None:
        return False, ["The task check (notebook 01) did not run, so whether the model knows "
                       "these facts is not established."]
    acc, kept = ev.number(TASK, "accuracy"), ev.number(TASK, "n_kept")
    metric = ev.number(TASK, "main_metric") or "metric"
    correct = round(acc * n)  # top-1 (cloze) or the label's answer set (yes/no)
    pairwise = ev.number(TASK, "pairwise_accuracy")  # cloze runs since the known parameter
    top1 = ": the answer is its top token" if pairwise is not None else ""
    text = (f"The model answers **{correct} of {n}** prompts correctly ({acc:.0%}{top1}); mean "
            f"{_metric(metric)} {ev.number(TASK, 'mean_metric'):+.2f}")
    if ev.number(TASK, "mean_p_answer") is not None:
        text += f", mean P(correct answer) {ev.number(TASK, 'mean_p_answer'):.2f}"
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


def mlp_at_subject(ev: RunEvidence) -> dict:
    """Where restoring MLP outputs at the last subject token matters most, by method."""
    out = {}
    if ev.number(TRACING, "mlp_subject_last_peak_layer") is not None:
        out["tracing"] = (ev.number(TRACING, "mlp_subject_last_peak_layer"),
                          ev.number(TRACING, "mlp_subject_last_peak_aie"))
    row = peak_row(ev.table(PATCHING, "patching_by_class"), "normalized",
                   component="mlp_out", token_class="subject_last")
    if row is not None:
        out["patching"] = (int(row["layer"]), float(row["normalized"]))
    return out


def subject_knockout(ev: RunEvidence) -> dict | None:
    table = ev.table(KNOCKOUT, "knockout_summary")
    if table is None or "relative_p_change" not in table.columns:
        return None
    part = table[table["role"] == "subject"].dropna(subset=["relative_p_change"])
    if part.empty:
        return None
    return part.loc[part["relative_p_change"].idxmin()].to_dict()


def _where(ev: RunEvidence) -> list[str]:
    bullets = []
    mlp = mlp_at_subject(ev)
    if "tracing" in mlp:
        layer, aie = mlp["tracing"]
        attn_aie = ev.number(TRACING, "attn_subject_last_peak_aie")
        first, last = tracing_window(ev, int(layer))
        restored = (f"layers {first}–{last}, the window centred on " if last > first else "")
        text = (f"**Causal tracing** ({ev.number(TRACING, 'n_prompts')} prompts): restoring "
                f"the MLP outputs at the last subject token recovers the most for {restored}"
                f"{_layer(ev, layer)}, {depth_band(ev.depth(layer))} layers: AIE {aie:.3f} on "
                f"{ev.number(TRACING, 'metric') or 'the metric'}")
        if attn_aie is not None:
            text += f", against {attn_aie:.3f} at most for attention at that token"
        bullets.append(text + ".")
    if ev.number(PATCHING, "n_pairs"):
        text = f"**Activation patching** ({ev.number(PATCHING, 'n_pairs')} prompt pairs):"
        handover = ev.number(PATCHING, "resid_pre_handover_layer")
        if handover is not None:
            text += (f" the residual stream carries the clean answer at the subject tokens "
                     f"first and at the last token from {_layer(ev, handover)} on;")
        if "patching" in mlp:
            layer, effect = mlp["patching"]
            text += (f" the MLP output at the last subject token restores most at "
                     f"{_layer(ev, layer)}, {effect:.2f} of the clean−corrupted gap;")
        row = peak_row(ev.table(PATCHING, "patching_by_class"), "normalized",
                       component="attn_out", token_class="last")
        if row is not None:
            text += (f" the attention output at the last token most at {_layer(ev, row['layer'])}, "
                     f"{row['normalized']:.2f}.")
        bullets.append(text.rstrip(";:") + ("" if text.endswith(".") else "."))
    if ev.number(LENS, "mlp_share") is not None:
        text = (f"**Direct effects at the last token** (logit lens): attention sublayers write "
                f"{ev.number(LENS, 'attn_share'):.0%} of the increase in the "
                f"{_metric(ev.number(LENS, 'direction'))} and MLP sublayers "
                f"{ev.number(LENS, 'mlp_share'):.0%}; the largest single jump is the "
                f"{SUBLAYER_NAMES.get(ev.number(LENS, 'peak_sublayer'), 'sublayer')} of "
                f"{_layer(ev, ev.number(LENS, 'peak_layer'))}.")
        if ev.number(DLA, "top_layer_component"):
            text += (f" By direct logit attribution the largest component is the "
                     f"{_component(ev.number(DLA, 'top_layer_component'))} "
                     f"({ev.number(DLA, 'top_layer_component_dla'):+.2f}).")
        bullets.append(text)
    return bullets


def _moves(ev: RunEvidence) -> list[str]:
    bullets = []
    ko = subject_knockout(ev)
    if ko is not None:
        bullets.append(
            f"**Attention knockout**: blocking the last token's attention to the subject hurts "
            f"most in {_window(ev, ko['first'], ko['last'])}: P(answer) "
            f"{_change(ko['relative_p_change'])}.")
    heads = []
    if ev.number(DLA, "top_head"):
        heads.append(f"the largest direct effect on the answer is **{ev.number(DLA, 'top_head')}**"
                     f" (DLA {ev.number(DLA, 'top_head_dla'):.2f})")
    if ev.number(PATCHING, "top_head_layer") is not None:
        heads.append("patching one head at a time restores most with **"
                     + _head(ev.number(PATCHING, "top_head_layer"), ev.number(PATCHING, "top_head"))
                     + f"** ({ev.number(PATCHING, 'top_head_effect'):.2f} of the gap)")
    if ev.number(ATTENTION, "top_dla_head_subject_attention") is not None:
        heads.append(f"on the example prompt {ev.number(ATTENTION, 'top_dla_head')} puts "
                     f"{ev.number(ATTENTION, 'top_dla_head_subject_attention'):.2f} of the last "
                     f"token's attention on the subject")
    if heads:
        bullets.append("**Heads**: " + "; ".join(heads) + ".")
    return bullets


def _checks(ev: RunEvidence) -> list[Check]:
    tol, checks = _tolerance(ev), []
    mlp = mlp_at_subject(ev)
    if {"tracing", "patching"} <= set(mlp):
        a, b = int(mlp["tracing"][0]), int(mlp["patching"][0])
        first, last = tracing_window(ev, a)
        window = f" (window {first}–{last})" if last > first else ""
        checks.append(Check("MLP peak at the last subject token",
                            first - tol <= b <= last + tol,
                            f"causal tracing centred on layer {a}{window}, activation "
                            f"patching layer {b}"))
    dla_head = ev.number(DLA, "top_head")
    if dla_head and ev.number(PATCHING, "top_head_layer") is not None:
        patch_head = _head(ev.number(PATCHING, "top_head_layer"), ev.number(PATCHING, "top_head"))
        checks.append(Check("the head that moves the answer", patch_head == dla_head,
                            f"direct logit attribution {dla_head}, head patching {patch_head}"))
    ko = subject_knockout(ev)
    if dla_head and ko is not None:
        layer = int(dla_head[1:].split("H")[0])
        inside = ko["first"] - tol <= layer <= ko["last"] + tol
        checks.append(Check("where attention reads the subject", inside,
                            f"top DLA head in layer {layer}, subject knockout peaks in layers "
                            f"{int(ko['first'])}–{int(ko['last'])}"))
    return checks


def _sureness(ev: RunEvidence, checks: list[Check]) -> list[str]:
    bullets = []
    if checks:
        agree = sum(c.agree for c in checks)
        verdict = ("the methods agree" if agree == len(checks) else
                   "the methods partly agree" if 2 * agree >= len(checks) else
                   "the methods disagree: treat the location as uncertain")
        bullets.append(f"**Agreement between methods**: {agree} of {len(checks)} checks agree, "
                       f"so {verdict} (same place = within {_tolerance(ev)} layers, "
                       f"{AGREEMENT_DEPTH:.0%} of the depth)."
                       + "".join(f"\n  - {c.question[0].upper()}{c.question[1:]}: "
                                 f"{'agrees' if c.agree else '**differs**'} ({c.detail})."
                                 for c in checks))
    sizes = []
    if ev.number(LENS, "n_prompts") is not None:
        sizes.append(f"{ev.number(LENS, 'n_prompts')} prompts analysed")
    if ev.number(PATCHING, "n_pairs") is not None:
        sizes.append(f"{ev.number(PATCHING, 'n_pairs')} patched pairs "
                     f"({ev.number(PATCHING, 'n_dropped_unequal') or 0} left out for unequal "
                     f"token length)")
    samples = ev.number(TRACING, "noise_samples")
    if samples is not None:
        sizes.append(f"{samples} noise samples per prompt in causal tracing"
                     + (f" (ROME used {ROME['noise_samples']})"
                        if samples < ROME["noise_samples"] else ""))
    if sizes:
        bullets.append("**Sample sizes**: " + "; ".join(sizes) + ".")
    err = ev.number(DLA, "dla_sum_check_max_abs_error")
    if err is not None:
        passes = ev.number(DLA, "dla_sum_check_passes")
        bullets.append(f"**Attribution check**: the components sum to the metric within "
                       f"{err:.1e} ({'passes' if passes else '**fails**'} the 1e-3 check).")
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
        if attn_aie is not None:
            ratio = "larger" if aie > attn_aie else "not larger"
            text += f", and its AIE ({aie:.1%}) is {ratio} than attention's ({attn_aie:.1%})"
        last_attn = ev.number(TRACING, "attn_last_peak_layer")
        if last_attn is not None:
            order = "later" if last_attn > layer else "not later"
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
        text += f" {sum(c.agree for c in checks)} of {len(checks)} cross-method checks agree."
    return text


# ------------------------------------------------------------------ public API
def run_findings(ev: RunEvidence) -> RunFindings:
    at_chance, knowledge = _knowledge(ev)
    checks = [] if at_chance else _checks(ev)
    sections = {"Does the model know the facts?": knowledge}
    if not at_chance:
        sections["Where the fact is read"] = _where(ev)
        sections["How it reaches the last token"] = _moves(ev)
        sections["How sure"] = _sureness(ev, checks)
        sections["Compared with earlier studies"] = _literature(ev)
    else:
        sections["How sure"] = _sureness(ev, [])
    return RunFindings(ev, at_chance, _summary(ev, at_chance, checks),
                       {k: v for k, v in sections.items() if v}, checks)


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
