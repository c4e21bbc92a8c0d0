"""How sure a run's findings are: intervals in words, cross-method agreement decided by the
ranges of resampled peaks, and claims with their test. Reads what the methods declare: their
Estimates (`results.estimates`), claims (`claim_*` headline fields) and sample sizes
(`Method.samples`); it names no method.

Any two methods that estimate the same located quantity are compared. Agreement of two layer
estimates: each comes with the range of layers holding its peak in 95 %
of bootstrap resamples over prompts. They *agree* when the ranges overlap, *disagree* when they
do not, and are *not resolved at this sample size* when a range spans more than a third of the
model (a peak that could be almost anywhere agrees with everything). Ranges are compared as
they are: never widened by a method's window (a window restores several layers at once, so
widening by it would let any nearby peak agree).

Claims: every `claim_*` field of every method's headline is one claim of the run; they are
judged together (`uncertainty.judge_claims`: exact tests, Holm-adjusted over the run's tested
claims, "not tested" below the sample that could reach α)."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

from factcircuits.methods.uncertainty import ALPHA, SMALL_SAMPLE, claim_text
from factcircuits.report.readings import by_method
from factcircuits.results.claims import run_claims
from factcircuits.results.estimates import HEAD_QUANTITIES, LOCATED, PUBLISHED, Estimate
from factcircuits.results.registry import SURE, methods
from factcircuits.results.run import Run
from factcircuits.results.wording import LAYER0_MLP, range_text

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


def as_published(e: Estimate) -> bool:
    """The estimate is measured as a published estimate of its quantity is (the same unit)."""
    return any(p.quantity == e.quantity and p.unit == e.unit for p in PUBLISHED)


def said(e: Estimate) -> str:
    """One estimate as a check's detail names it: 'causal tracing layer 5 (layers 4–6)',
    'head patching L7H2', 'top DLA head in layer 7', 'subject knockout peaks in windows of
    layers 6–8; their centres lie in layers 6–8 in 95% of resamples'."""
    if e.quantity in HEAD_QUANTITIES:
        return f"{e.by} {e.component}"
    if e.window is not None:
        first, last = e.window
        if e.layer_range is None:
            return f"{e.by} peaks in layers {first}–{last} (no resampled range)"
        low, high = e.layer_range
        return (f"{e.by} peaks in windows of layers {first}–{last}; their centres lie in "
                f"layers {low}–{high} in 95% of resamples")
    if e.layer_range is None and e.peak_range is not None:  # a head's layer: exact
        return f"{e.by} in layer {e.layer}"
    return f"{e.by} layer {e.layer} ({range_text(e.layer_range)})"


def compare(a: Estimate, b: Estimate, n_layers: int | None) -> Check:
    """Two methods' estimates of one quantity (see the module docstring): a head by its
    identity, a layer by the ranges of resampled peaks, never a layer-0 MLP."""
    detail = f"{said(a)}, {said(b)}"
    if a.quantity in HEAD_QUANTITIES:
        return Check(a.quantity, AGREE if a.component == b.component else DISAGREE, detail)
    if any(e.site == "mlp" and e.layer == 0 for e in (a, b)):
        return Check(a.quantity, CONFOUNDED, f"{detail}; {LAYER0_MLP}")
    # compared as they are: a window centre's range is never widened by the window
    return Check(a.quantity, layer_ranges_agree(a.peak_range, b.peak_range, n_layers), detail)


def checks(ev: Run) -> list[Check]:
    """Every two methods that estimate the same located quantity, compared (`compare`): in
    chapter order, an estimate measured as a published one (ROME's AIE) first."""
    estimates = ev.estimates()
    found = []
    for quantity in LOCATED:
        ranked = sorted(by_method(estimates, quantity), key=lambda e: not as_published(e))
        found += [compare(a, b, ev.n_layers) for a, b in combinations(ranked, 2)]
    return found


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
    samples = [x for m in methods() for x in m.samples_of(ev)]
    sizes = [x.text for x in samples if x.text]
    if sizes:
        used = {}
        for x in samples:  # the first count of each kind stated, in chapter order
            if x.text and x.what and used.get(x.what) is None:
                used[x.what] = x.n
        bullets.append("**Sample sizes**: " + "; ".join(sizes) + ". Intervals of means are 95% "
                       "bootstrap intervals over prompts (1,000 resamples, seeded by the run's "
                       "seed); intervals of proportions are exact (Clopper–Pearson)."
                       + small_sample_note(used))
    # each method's own notes on how sure it is (e.g. attribution's sum check)
    notes = sorted((f for m in methods() for f in m.findings_for(ev) if f.section == SURE),
                   key=lambda f: f.order)
    return bullets + [f.text for f in notes]
