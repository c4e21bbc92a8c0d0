"""What several findings sentences read across methods: a run's estimates of one quantity
(`results.estimates`), and the one of them comparable with a published value."""

from __future__ import annotations

from factcircuits.results.estimates import MLP_AT_SUBJECT, PUBLISHED, ROME, Estimate, of
from factcircuits.results.run import Run


def by_method(estimates: list[Estimate], quantity: str) -> list[Estimate]:
    """The first estimate of `quantity` by each method, in chapter order."""
    seen, found = set(), []
    for e in of(estimates, quantity):
        if e.method not in seen:
            seen.add(e.method)
            found.append(e)
    return found


def comparable(estimates: list[Estimate], quantity: str, study: str) -> Estimate | None:
    """The run's estimate of `quantity` measured as the study measured it (the same unit),
    or None."""
    ref = next((p for p in PUBLISHED if p.quantity == quantity and p.method == study), None)
    return next((e for e in by_method(estimates, quantity)
                 if ref is not None and e.unit == ref.unit), None)


def mlp_at_subject(run: Run) -> Estimate | None:
    """Where restoring MLP outputs at the last subject token matters most: the estimate
    comparable with ROME's (causal tracing's AIE) when the run has one, else the first."""
    estimates = run.estimates()
    found = by_method(estimates, MLP_AT_SUBJECT)
    return comparable(estimates, MLP_AT_SUBJECT, ROME) or (found[0] if found else None)
