"""How sure a run's findings are: intervals in words, cross-method agreement decided by the
ranges of resampled peaks, and claims with their test. Reads typed headlines only (the
`_ci`, `_range` and `claim_` fields the methods store beside each number).

Agreement of two layer estimates: each comes with the range of layers holding its peak in 95 %
of bootstrap resamples over prompts. They *agree* when the ranges overlap, *disagree* when they
do not, and are *not resolved at this sample size* when a range spans more than a third of the
model (a peak that could be almost anywhere agrees with everything)."""

from __future__ import annotations

from dataclasses import dataclass

from factcircuits.chapters import activation_patching, attribution, causal_tracing, logit_lens
from factcircuits.chapters.ablation_knockout import METHOD as KNOCKOUT
from factcircuits.chapters.ablation_knockout import subject_knockout
from factcircuits.chapters.causal_tracing import tracing_window
from factcircuits.methods.uncertainty import SMALL_SAMPLE, claim_text
from factcircuits.report.readings import ROME, mlp_at_subject
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


def layer_ranges_agree(a: list[int] | None, b: list[int] | None, n_layers: int | None,
                       a_covers: list[int] | None = None) -> str:
    """The verdict for two peak ranges [first, last] (see the module docstring). `a_covers`:
    the layers estimate `a` speaks for when wider than its range (a traced window restores
    several layers together)."""
    if not a or not b or not all(isinstance(v, (int, float)) for v in (*a, *b)):
        return UNRESOLVED
    third = (n_layers or 0) / 3
    if n_layers and (a[1] - a[0] > third or b[1] - b[0] > third):
        return UNRESOLVED
    first, last = a_covers or a
    return AGREE if first <= b[1] and b[0] <= last else DISAGREE


def small_sample_note(n: int | None) -> str:
    if n is None or n >= SMALL_SAMPLE:
        return ""
    return (f" With n = {n} < {SMALL_SAMPLE} prompts, intervals are wide and only large "
            "differences are resolved.")


def checks(ev: Run) -> list[Check]:
    """Cross-method checks, decided by the ranges of resampled peaks (`sureness`)."""
    found = []
    mlp = mlp_at_subject(ev)
    tr, pa = ev.headline(causal_tracing.METHOD), ev.headline(activation_patching.METHOD)
    if {"tracing", "patching"} <= set(mlp):
        a, b = int(mlp["tracing"][0]), int(mlp["patching"][0])
        a_range = tr.mlp_subject_last_peak_layer_range
        b_range = pa.mlp_out_subject_last_peak_layer_range
        covers = None
        if a_range:  # a window restores layers around its centre together
            covers = [tracing_window(ev, a_range[0])[0], tracing_window(ev, a_range[1])[1]]
        window = (f", window {covers[0]}–{covers[1]}"
                  if covers and covers != list(a_range) else "")
        detail = (f"causal tracing layer {a} ({range_text(a_range)}{window}), activation "
                  f"patching layer {b} ({range_text(b_range)})")
        verdict = (CONFOUNDED if b == 0 else
                   layer_ranges_agree(a_range, b_range, ev.n_layers, covers))
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
        if centres:  # the layers the resampled peak windows cover
            half = (int(ko["last"]) - int(ko["first"])) // 2
            covered = [max(0, centres[0] - half), centres[1] + half]
            verdict = layer_ranges_agree([layer, layer], covered, None)
            if ev.n_layers and centres[1] - centres[0] > ev.n_layers / 3:
                verdict = UNRESOLVED  # the window's place itself is not located
            detail += (f"windows centred on layers {centres[0]}–{centres[1]} in 95% of "
                       f"resamples (covering layers {covered[0]}–{covered[1]})")
        else:
            verdict = UNRESOLVED
            detail += f"layers {int(ko['first'])}–{int(ko['last'])} (no resampled range)"
        found.append(Check("where attention reads the subject", verdict, detail))
    return found


def claims(ev: Run) -> list[str]:
    """Comparisons the findings make, each with its test."""
    bullets = []
    tr = ev.headline(causal_tracing.METHOD)
    found = tr.claim_mlp_over_attn_subject_last
    if isinstance(found, dict):
        bullets.append(f"*MLPs carry more than attention at the last subject token* (causal "
                       f"tracing, AIE at each kind's peak layer): {claim_text(found)}.")
    share = tr.mlp_subject_before_attn_last_share
    if share is not None:
        verdict = ("**supported**" if share >= 0.975 else "**contradicted**"
                   if share <= 0.025 else "**not resolved**")
        bullets.append(f"*The MLP peak at the last subject token comes before the attention "
                       f"peak at the last token* (causal tracing): {verdict}: it does in "
                       f"{share:.0%} of bootstrap resamples (paired, same prompts for both).")
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
        counts = [v for v in (lens.n_prompts, pa.n_pairs, tr.n_prompts) if v is not None]
        n = min(counts) if counts else None
        bullets.append("**Sample sizes**: " + "; ".join(sizes) + ". Intervals are 95% "
                       "bootstrap intervals over prompts (1,000 resamples, seeded by the run's "
                       "seed)." + small_sample_note(n))
    err = dla.dla_sum_check_max_abs_error
    if err is not None:
        passes = dla.dla_sum_check_passes
        bullets.append(f"**Attribution check**: the components sum to the metric within "
                       f"{err:.1e} ({'passes' if passes else '**fails**'} the 1e-3 check).")
    return bullets
