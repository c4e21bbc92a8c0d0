"""How sure a run's findings are: intervals in words, cross-method agreement decided by the
ranges of resampled peaks, and claims with their test. Reads typed headlines only (the
`_ci`, `_range` and `claim_` fields the methods store beside each number).

Agreement of two layer estimates: each comes with the range of layers holding its peak in 95 %
of bootstrap resamples over prompts. They *agree* when the ranges overlap, *disagree* when they
do not, and are *not resolved at this sample size* when a range spans more than a third of the
model (a peak that could be almost anywhere agrees with everything). Ranges are compared as
they are: never widened by a method's window (a window restores several layers at once, so
widening by it would let any nearby peak agree).

Claims: every `claim_*` field of every method's headline is one claim of the run; they are
judged together (`uncertainty.judge_claims`: exact tests, Holm-adjusted over the run's tested
claims, "not tested" below the sample that could reach α)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from factcircuits.chapters import activation_patching, attribution, causal_tracing, logit_lens
from factcircuits.chapters.ablation_knockout import METHOD as KNOCKOUT
from factcircuits.chapters.ablation_knockout import subject_knockout
from factcircuits.methods.uncertainty import ALPHA, SMALL_SAMPLE, claim_text, judge_claims
from factcircuits.report.readings import ROME, mlp_at_subject
from factcircuits.results.registry import methods
from factcircuits.results.run import Run
from factcircuits.results.wording import LAYER0_MLP, head_label, range_text

AGREE, DISAGREE, UNRESOLVED = "agrees", "differs", "not resolved at this sample size"
CONFOUNDED = "not comparable (layer-0 MLP)"


@dataclass
class Check:
    """One comparison of two methods' answers to the same question."""

    question: str
    verdict: str  # AGREE | DISAGREE | UNRESOLVED
    detail: str

    @property
    def agree(self) -> bool:
        return self.verdict == AGREE


def layer_ranges_agree(a: list[int] | None, b: list[int] | None, n_layers: int | None) -> str:
    """The verdict for two peak ranges [first, last] (see the module docstring)."""
    if not a or not b or not all(isinstance(v, (int, float)) for v in (*a, *b)):
        return UNRESOLVED
    third = (n_layers or 0) / 3
    if n_layers and (a[1] - a[0] > third or b[1] - b[0] > third):
        return UNRESOLVED
    return AGREE if a[0] <= b[1] and b[0] <= a[1] else DISAGREE


def small_sample_note(sizes: dict[str, int]) -> str:
    """'With 10 prompts analysed and 7 pairs patched (fewer than 20), …': each n as used."""
    small = {what: n for what, n in sizes.items() if n is not None and n < SMALL_SAMPLE}
    if not small:
        return ""
    listed = " and ".join(f"{n} {what}" for what, n in small.items())
    return (f" With {listed} (fewer than {SMALL_SAMPLE}), intervals are wide and only large "
            "differences are resolved; percentile bootstrap intervals of means cover somewhat "
            "less than 95% at this size, so read them as approximate (proportions use exact "
            "intervals).")


def checks(ev: Run) -> list[Check]:
    """Cross-method checks, decided by the ranges of resampled peaks (`sureness`)."""
    found = []
    mlp = mlp_at_subject(ev)
    tr, pa = ev.headline(causal_tracing.METHOD), ev.headline(activation_patching.METHOD)
    if {"tracing", "patching"} <= set(mlp):
        a, b = int(mlp["tracing"][0]), int(mlp["patching"][0])
        a_range = tr.mlp_subject_last_peak_layer_range
        b_range = pa.mlp_out_subject_last_peak_layer_range
        detail = (f"causal tracing layer {a} ({range_text(a_range)}), activation "
                  f"patching layer {b} ({range_text(b_range)})")
        verdict = CONFOUNDED if b == 0 else layer_ranges_agree(a_range, b_range, ev.n_layers)
        if b == 0:
            detail += f"; {LAYER0_MLP}"
        found.append(Check("MLP peak at the last subject token", verdict, detail))
    dla_head = ev.headline(attribution.METHOD).top_head
    if dla_head and pa.top_head_layer is not None:
        patch_head = head_label(pa.top_head_layer, pa.top_head)
        found.append(Check("the head that moves the answer",
                            AGREE if patch_head == dla_head else DISAGREE,
                            f"direct logit attribution {dla_head}, head patching {patch_head}"))
    ko = subject_knockout(ev)
    centres = ev.headline(KNOCKOUT).knockout_subject_peak_centre_range
    if dla_head and ko is not None:
        layer = int(dla_head[1:].split("H")[0])
        detail = f"top DLA head in layer {layer}, subject knockout peaks in "
        if centres:  # compared with the window centres as they are, not widened
            verdict = layer_ranges_agree([layer, layer], list(centres), ev.n_layers)
            detail += (f"windows of layers {int(ko['first'])}–{int(ko['last'])}; their centres "
                       f"lie in layers {centres[0]}–{centres[1]} in 95% of resamples")
        else:
            verdict = UNRESOLVED
            detail += f"layers {int(ko['first'])}–{int(ko['last'])} (no resampled range)"
        found.append(Check("where attention reads the subject", verdict, detail))
    return found


def run_claims(ev: Run) -> dict[str, dict]:
    """Every claim the run's methods stored (`claim_*` headline fields), judged together: by
    field name, each with its Holm-adjusted p and verdict."""
    stored = []
    for method in methods():
        if not ev.has(method):
            continue
        h = ev.headline(method)
        for f in dataclasses.fields(h):
            value = getattr(h, f.name)
            if f.name.startswith("claim_") and isinstance(value, dict):
                stored.append((f.name, {**value, "method": method.short}))
    judged = judge_claims([c for _, c in stored])
    return {name: c for (name, _), c in zip(stored, judged)}


def claims(ev: Run) -> list[str]:
    """The run's claims, each with its test and verdict (Holm over the run)."""
    found = run_claims(ev)
    bullets = [f"*{c['claim'][0].upper()}{c['claim'][1:]}* ({c['method']}): {claim_text(c)}."
               for c in found.values()]
    if bullets:
        tested = next(iter(found.values())).get("family", 0)
        bullets.append(f"A claim is **supported** only when its exact test survives Holm's "
                       f"correction over the run's {tested} tested claims at α = {ALPHA:g}; "
                       "peak layers are chosen inside each permutation, so choosing them on the "
                       "same prompts is accounted for.")
    return bullets


def sureness(ev: Run, checks: list[Check], mechanism: bool = True) -> list[str]:
    """The 'How sure' bullets; without `mechanism` (a model at chance) no claim is tested."""
    bullets = []
    if checks:
        agree = sum(c.agree for c in checks)
        differ = sum(c.verdict == DISAGREE for c in checks)
        open_ = len(checks) - agree - differ
        verdict = ("the sample is too small to tell whether the methods agree" if not agree + differ
                   else ("the methods agree" + (" where the sample resolves it" if open_ else ""))
                   if not differ else
                   "the methods disagree where the sample resolves it: treat the location as "
                   "uncertain" if differ > agree else "the methods partly agree")
        bullets.append(f"**Agreement between methods**: {agree} of {len(checks)} checks agree"
                       + (f", {open_} not resolved" if open_ else "") + f", so {verdict} "
                       "(two layer estimates agree when the ranges holding their peaks in 95% "
                       "of bootstrap resamples overlap; a range wider than a third of the model "
                       "is not resolved)."
                       + "".join(f"\n  - {c.question[0].upper()}{c.question[1:]}: "
                                 f"{c.verdict if c.verdict != DISAGREE else '**differs**'} "
                                 f"({c.detail})." for c in checks))
    found = claims(ev) if mechanism else []
    if found:
        bullets.append("**Claims and their tests**:" + "".join(f"\n  - {c}" for c in found))
    sizes = []
    lens, pa = ev.headline(logit_lens.METHOD), ev.headline(activation_patching.METHOD)
    tr, dla = ev.headline(causal_tracing.METHOD), ev.headline(attribution.METHOD)
    if lens.n_prompts is not None:
        sizes.append(f"{lens.n_prompts} prompts analysed")
    if pa.n_pairs is not None:
        sizes.append(f"{pa.n_pairs} patched pairs "
                     f"({pa.n_dropped_unequal or 0} left out for unequal "
                     f"token length)")
    samples = tr.noise_samples
    if samples is not None:
        sizes.append(f"{samples} noise samples per prompt in causal tracing"
                     + (f" (ROME used {ROME['noise_samples']})"
                        if samples < ROME["noise_samples"] else ""))
    if sizes:
        used = {"prompts analysed": lens.n_prompts or tr.n_prompts, "pairs patched": pa.n_pairs}
        bullets.append("**Sample sizes**: " + "; ".join(sizes) + ". Intervals of means are 95% "
                       "bootstrap intervals over prompts (1,000 resamples, seeded by the run's "
                       "seed); intervals of proportions are exact (Clopper–Pearson)."
                       + small_sample_note(used))
    err = dla.dla_sum_check_max_abs_error
    if err is not None:
        passes = dla.dla_sum_check_passes
        bullets.append(f"**Attribution check**: the components sum to the metric within "
                       f"{err:.1e} ({'passes' if passes else '**fails**'} the 1e-3 check).")
    return bullets
