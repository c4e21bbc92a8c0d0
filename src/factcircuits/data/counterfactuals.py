"""Counterfactual (corrupted) prompts: swap the subject for another subject of the same
relation with a different answer, preferring one of the same word count (so that token
lengths match for activation patching), and say when they cannot match."""

from __future__ import annotations

import random

import pandas as pd


def length_note(subject: str, other: str) -> str:
    same_words = len(subject.split()) == len(other.split())
    words = "same word count" if same_words else (
        f"word count differs {len(subject.split())} vs {len(other.split())}")
    chars = "same length" if len(subject) == len(other) else (
        f"chars {len(subject)} vs {len(other)}")
    return f"{words}, {chars}; token lengths are tokenizer-dependent"


def pick_partner(subject: str, candidates: list[str], rng: random.Random) -> str:
    """Prefer a subject with the same word count and a close character length, so that the
    corrupted prompt usually tokenizes to the same length; ties broken by the seeded rng."""
    words = len(subject.split())
    same = [c for c in candidates if len(c.split()) == words] or candidates
    best = min(abs(len(c) - len(subject)) for c in same)
    close = sorted(c for c in same if abs(len(c) - len(subject)) <= best + 2)
    return rng.choice(close)


def make_counterfactual(rows: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Fill empty `corrupted_prompt`/`corrupted_subject` of cloze rows by swapping the subject
    for another subject of the same relation whose answer differs (preferring the row whose
    answer is this row's counterfactual, so the patching metric flips sign). Rows that cannot
    be filled keep empty fields and say why in `corruption_note`. Returns a copy."""
    rows = rows.copy()
    rng = random.Random(seed)
    for c in ("corrupted_prompt", "corrupted_subject", "corruption_note"):
        if c not in rows.columns:
            rows[c] = ""
    for i in rows.index:
        if rows.at[i, "corrupted_prompt"].strip():
            continue
        note = _fill_one(rows, i, rng)
        if note and not rows.at[i, "corruption_note"].strip():
            rows.at[i, "corruption_note"] = note
    return rows


def _fill_one(rows: pd.DataFrame, i, rng: random.Random) -> str:
    row = rows.loc[i]
    subject, relation = row["subject"].strip(), row["relation"].strip()
    if row["task"] != "cloze":
        return "not filled: yes/no rows need a derived or hand-written corrupted prompt"
    if not subject or subject not in row["prompt"]:
        return "not filled: subject missing or not in the prompt"
    if not relation:
        return "not filled: no relation, so no same-relation subject to swap in"
    same_rel = rows[(rows["relation"].str.strip() == relation) & (rows["task"] == "cloze")]
    ans = row["answer"].strip().casefold()
    others = same_rel[(same_rel["answer"].str.strip().str.casefold() != ans)
                      & (same_rel["subject"].str.strip() != subject)
                      & (same_rel["subject"].str.strip() != "")]
    if others.empty:
        return "not filled: no other subject of this relation with a different answer"
    matching = others[others["answer"].str.strip() == row["counterfactual"].strip()]
    pool = matching if not matching.empty else others
    partner = pick_partner(subject, sorted(set(pool["subject"].str.strip())), rng)
    rows.at[i, "corrupted_subject"] = partner
    rows.at[i, "corrupted_prompt"] = row["prompt"].replace(subject, partner, 1)
    which = "its answer is the counterfactual" if not matching.empty else "different answer"
    return f"subject swapped: {subject}→{partner} (same relation, {which}); " + length_note(
        subject, partner)
