"""The task check behind notebook 01: score every prompt with every metric, top-k tokens,
accuracy against chance, and the prompts kept for the mechanistic analyses."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from factcircuits.methods.sampling import per_relation_sample
from factcircuits.methods.uncertainty import (
    ALPHA,
    binomial_two_sided_p,
    holm,
    proportion_estimate,
)
from factcircuits.results.parameter_declarations import PER_RELATION, SEED
from factcircuits.results.wording import MIN_PROMPTS

FILTERED_FILE = "filtered_dataset.csv"
MAX_ROWS_SHOWN = 40  # per-prompt tables longer than this show their head and where the rest is


def shown_rows(table: pd.DataFrame, path: str,
               limit: int = MAX_ROWS_SHOWN) -> tuple[pd.DataFrame, str]:
    """(the rows to show, a note saying where the full table is when some are left out)."""
    if len(table) <= limit:
        return table, ""
    return table.head(limit), (f"The first {limit} of {len(table)} rows; the full table is "
                               f"`{path}` in the run folder.")


def metric_explanation(prepared) -> str:
    """Why the task's metrics exist side by side (set sizes come from the answer sets)."""
    if prepared.task == "cloze":
        return (
            "**Metrics.** *Logit difference* logit(correct) − logit(counterfactual) compares "
            "the fact with a plausible alternative of the same relation and is linear in the "
            "residual stream (the metric for attribution and patching); *P(correct)* and the "
            "*rank* of the correct token say how confidently the model actually produces it."
        )
    n_true, n_false = len(prepared.answer_sets.true_ids), len(prepared.answer_sets.false_ids)
    return (
        f"**Why three metrics.** The *summed logit difference* (the original study's first "
        f"metric) adds {n_true} True logits and subtracts {n_false} False ones, so it is biased "
        "by the set sizes and moves with logit shifts that change no probability. The "
        "*probability-mass difference* P(True set) − P(False set) fixes that but saturates "
        "near ±1. The *log-odds* log P(True set)/P(False set) = logsumexp(True) − "
        "logsumexp(False) is unbiased by set sizes, unbounded, and close to linear in the "
        "residual stream, so it is the metric the attribution and patching notebooks use."
    )


def auc(scores, labels) -> float:
    """Probability that a random true statement scores above a random false one."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        return float("nan")
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def relation_table(table: pd.DataFrame, known_index, per_relation: int = PER_RELATION.default,
                   seed: int = SEED.default) -> pd.DataFrame | None:
    """Per relation: rows scored, accuracy with its exact (Clopper–Pearson) 95% interval,
    prompts known, and prompts analysed (all known, or the `per_relation` sample); the exact
    binomial test of its accuracy against the pooled accuracy, Holm-adjusted over the relations
    tested (those with at least MIN_PROMPTS rows; the others are not compared), and whether
    that adjusted p is ≤ 0.05. None for a dataset of one relation."""
    if "relation" not in table or table["relation"].nunique() < 2:
        return None
    known = table.index.isin(known_index)
    analysed = known.copy()
    if per_relation > 0:
        sample = per_relation_sample(table.loc[known, "relation"], per_relation, seed)
        analysed[np.flatnonzero(known)[~sample]] = False
    pooled = float(table["correct"].mean())
    rows = []
    for relation, part in table.groupby("relation"):
        where = (table["relation"] == relation).to_numpy()
        estimate = proportion_estimate(part["correct"].astype(float))
        correct = int(part["correct"].sum())
        rows.append({"relation": relation, "rows": len(part), "accuracy": estimate.value,
                     "accuracy_low": estimate.low, "accuracy_high": estimate.high,
                     "known": int(known[where].sum()), "analysed": int(analysed[where].sum()),
                     "p_vs_pooled": (binomial_two_sided_p(correct, len(part), pooled)
                                     if len(part) >= MIN_PROMPTS else math.nan)})
    out = pd.DataFrame(rows)
    out["p_vs_pooled_holm"] = holm(out["p_vs_pooled"])
    out["differs_from_pooled"] = out["p_vs_pooled_holm"] <= ALPHA
    return out
