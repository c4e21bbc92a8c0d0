"""What a run found, in words, computed only from its typed results (`results.run.Run`).

For each run: does the model know the facts; where the fact is read (layers, token classes,
components); how it moves to the last token (attention windows, heads); how sure that is
(agreement between methods, sample sizes); and how it compares with the original study
(gemma-2b-it) and with ROME (GPT-2 XL), by relative depth where models differ in depth.
When the model is at chance, the findings say so and do not interpret the mechanism.

Each method contributes its own sentences (its registry entry's `findings`: bullets by
section, clauses of the summary and of the heads bullet); this module adds those that read
several methods at once — through their Estimates (`results.estimates`), never by naming a
method — and orders them by section. The same markdown feeds
the Quarto front page and the Quarto-free preview (through `factcircuits.report.synthesis`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from factcircuits.report.readings import by_method, comparable, mlp_at_subject
from factcircuits.report.sureness import (
    CONFOUNDED,
    UNRESOLVED,
    Check,
    checks,
    sureness,
)
from factcircuits.results.claims import run_claims
from factcircuits.results.estimates import (
    ATTENTION_AT_LAST,
    ATTENTION_AT_SUBJECT,
    MLP_AT_SUBJECT,
    MLP_SHARE,
    ORIGINAL,
    ROME,
    published,
)
from factcircuits.results.registry import (
    HEADS,
    IN_SHORT,
    KNOWLEDGE,
    LITERATURE,
    MOVES,
    SECTIONS,
    SURE,
    Finding,
    methods,
)
from factcircuits.results.run import Run, depth_band, relative_depth
from factcircuits.results.wording import SUBLAYER_NAMES, layer_text, model_line


@dataclass
class RunFindings:
    run: Run
    at_chance: bool
    summary: str
    sections: dict[str, list[str]] = field(default_factory=dict)  # title -> bullets
    checks: list[Check] = field(default_factory=list)


def _heads(bullets: list[Finding]) -> list[Finding]:
    """The heads the methods single out (their `HEADS` clauses), side by side."""
    heads = [b.text for b in sorted((b for b in bullets if b.section == HEADS),
                                    key=lambda b: b.order)]
    return [Finding(MOVES, "**Heads**: " + "; ".join(heads) + ".", 20)] if heads else []


def _literature(ev: Run) -> list[Finding]:
    """The run's estimates beside the published ones of the same quantity (`PUBLISHED`)."""
    bullets = []
    estimates = ev.estimates()
    o = published(MLP_SHARE, ORIGINAL)
    lens = comparable(estimates, MLP_SHARE, ORIGINAL)
    if lens is not None and lens.value is not None:
        share, layer = lens.value, lens.layer
        depth, o_depth = ev.depth(layer), relative_depth(o.layer, o.n_layers)
        where = ("MLPs write most of it directly, as there" if share >= 0.5 else
                 "attention sublayers write most of it directly; a direct effect leaves out "
                 "what MLPs contribute through later layers, so this does not say attention "
                 "carries the fact")
        text = (f"**Original study** ({o.model}, {o.n_layers} layers; direct effects by "
                f"{lens.method}): MLPs wrote ≈{o.value:.0%} of the increase, the largest "
                f"jump at the layer-{o.layer} MLP (relative depth {o_depth:.2f}). Here "
                f"MLPs write {share:.0%}, so {where}; the largest jump is the "
                f"{SUBLAYER_NAMES.get(lens.site, 'sublayer')} of "
                f"{layer_text(ev, layer)}")
        if depth is not None:
            side = "later" if depth > o_depth else "earlier"
            text += f", {abs(depth - o_depth):.2f} of the depth {side}"
        bullets.append(Finding(LITERATURE, text + ".", len(bullets)))
    mlp = comparable(estimates, MLP_AT_SUBJECT, ROME)
    if mlp is not None:
        r, r_attn = published(MLP_AT_SUBJECT, ROME), published(ATTENTION_AT_SUBJECT, ROME)
        layer, aie = mlp.layer, mlp.value
        band = depth_band(ev.depth(layer))
        attn = comparable(estimates, ATTENTION_AT_SUBJECT, ROME)
        attn_aie = None if attn is None else attn.value
        text = (f"**ROME** ({r.model}, {r.n_layers} layers): the MLPs at the last subject "
                f"token in middle layers decide (AIE {r.value:.1%} against "
                f"{r_attn.value:.1%} for attention there), attention at the last token acts "
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
        # attention at the last token, by the method that gave the MLP peak
        last = next((e for e in by_method(estimates, ATTENTION_AT_LAST)
                     if e.method == mlp.method), None)
        last_attn = None if last is None else last.layer
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


def prompts_analysed(ev: Run) -> int | None:
    """The prompts the mechanistic analyses used (the first method that counts them)."""
    return next((x.n for m in methods() for x in m.samples_of(ev)
                 if x.what == "prompts analysed" and x.n), None)


def _summary(ev: Run, at_chance: bool, checks: list[Check], bullets: list[Finding]) -> str:
    if at_chance:
        return (f"{ev.short_model} is at chance on {ev.dataset}: there is no retrieved fact to "
                "locate, so no mechanism is claimed.")
    parts = []
    mlp = mlp_at_subject(ev)
    if mlp is not None:
        # "one layer at a time": restored as ROME did, but without ROME's window
        single = mlp.window is None and mlp == comparable(ev.estimates(), MLP_AT_SUBJECT, ROME)
        parts.append(f"restoring the MLP output at the last subject token matters most in "
                     f"{depth_band(ev.depth(mlp.layer))} layers ({mlp.method}"
                     f"{', one layer at a time' if single else ''}: layer {int(mlp.layer)})")
    # each method's own clause (`IN_SHORT` findings), in their order
    parts += [b.text for b in sorted((b for b in bullets if b.section == IN_SHORT),
                                     key=lambda b: b.order)]
    if not parts:
        return "This run has too few analyses to say where the fact is read."
    text = "; ".join(parts)
    text = text[0].upper() + text[1:] + "."
    if checks:
        text += f" {sum(c.agree for c in checks)} of {len(checks)} cross-method checks agree"
        open_ = sum(c.verdict in (UNRESOLVED, CONFOUNDED) for c in checks)
        text += f" ({open_} not resolved)." if open_ else "."
    n = prompts_analysed(ev)
    if n is not None and n < 20:
        text += f" Based on {n} prompts: a small sample."
    return text


def at_chance(ev: Run) -> bool:
    """The model does not know the facts (the task check says so): no mechanism is read."""
    return any(m.at_chance(ev) for m in methods() if m.at_chance and ev.has(m))


# ------------------------------------------------------------------ public API
def run_findings(ev: Run) -> RunFindings:
    """Every registered method's sentences and the cross-method ones, by section."""
    chance = at_chance(ev)
    found = [] if chance else checks(ev)
    bullets = [f for m in methods() for f in m.findings_for(ev)]
    if not any(ev.has(m) for m in methods() if m.at_chance):
        bullets.append(Finding(KNOWLEDGE, "The task check (notebook 01) did not run, so whether "
                               "the model knows these facts is not established."))
    summary = _summary(ev, chance, found, bullets)
    if chance:  # no mechanism to interpret: what the model knows, and how sure
        bullets = [b for b in bullets if b.section == KNOWLEDGE]
    else:
        bullets += _heads(bullets) + _literature(ev)
    sections = {s: [b.text for b in sorted((b for b in bullets if b.section == s),
                                           key=lambda b: b.order)] for s in SECTIONS}
    sections[SURE] = sureness(ev, found, mechanism=not chance)
    return RunFindings(ev, chance, summary, {k: v for k, v in sections.items() if v}, found)


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
