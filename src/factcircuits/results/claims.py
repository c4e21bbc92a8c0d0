"""The claims of a run, judged together: every `claim_*` field of every method's headline is one
claim; `uncertainty.judge_claims` gives each its exact test's Holm-adjusted p over the run's
tested claims and a verdict. Read by the findings of several methods (a chapter's own sentence
may say only what its claim's verdict supports) and by the write-up's 'How sure'."""

from __future__ import annotations

import dataclasses

from factcircuits.methods.uncertainty import judge_claims
from factcircuits.results.registry import methods
from factcircuits.results.run import Run


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
