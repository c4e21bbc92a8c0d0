"""Counterfactual (corrupted) prompts: swap the subject for another subject of the same
relation with a different answer, preferring one of the same word count (so that token
lengths match for activation patching), and say when they cannot match."""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence

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


class _Without(Sequence):
    """A sorted list minus the items at `gaps` (sorted indices), indexable without copying it,
    so that `rng.choice` draws exactly as it would from the filtered list. Indexing is a
    bisection: the k-th kept item is items[k + (gaps before it)], and a gap g[j] comes before
    it exactly when the kept items before g[j], g[j] − j, are at most k."""

    def __init__(self, items: list[str], gaps: list[int]):
        self.items, self.gaps = items, gaps
        self.kept_before = [g - j for j, g in enumerate(gaps)]

    def __len__(self) -> int:
        return len(self.items) - len(self.gaps)

    def __getitem__(self, k: int) -> str:
        return self.items[k + bisect.bisect_right(self.kept_before, k)]

    def rank(self, i: int) -> int:
        """Position among the kept items of items[i] (itself kept)."""
        return i - bisect.bisect_left(self.gaps, i)


class _Skip(Sequence):
    """A sequence minus its item at position `r`."""

    def __init__(self, seq: Sequence, r: int):
        self.seq, self.r = seq, r

    def __len__(self) -> int:
        return len(self.seq) - 1

    def __getitem__(self, k: int) -> str:
        return self.seq[k + (k >= self.r)]


class SubjectPool:
    """The subjects of one relation (or of one answer within it), bucketed by word count and
    character length, so that `pick` does what `pick_partner` does over the pool minus
    `invalid` without scanning the pool: filling N rows stays O(N), not O(N²)."""

    def __init__(self, subjects):
        self.by_words: dict[int | None, dict[int, set[str]]] = {}
        for s in set(subjects) - {""}:
            for key in (len(s.split()), None):  # None: every word count
                self.by_words.setdefault(key, {}).setdefault(len(s), set()).add(s)
        self._windows: dict[tuple, list[str]] = {}
        self._valid: dict[tuple, dict[int, int]] = {}
        self._without: dict[tuple, _Without] = {}

    def _counts(self, words, base: frozenset[str]) -> dict[int, int]:
        """Per character length, the subjects of a word-count group not in `base` (cached:
        many rows share a relation and an answer, hence a `base`)."""
        key = (words, base)
        if key not in self._valid:
            group = self.by_words.get(words, {})
            self._valid[key] = {n: len(b) - sum(s in b for s in base) for n, b in group.items()}
        return self._valid[key]

    def pick(self, subject: str, base: frozenset[str], rng: random.Random) -> str | None:
        """`pick_partner(subject, pool − base − {subject}, rng)`, or None if that is empty."""
        for words in (len(subject.split()), None):
            counts = dict(self._counts(words, base))
            if subject not in base and subject in self.by_words.get(words, {}).get(
                    len(subject), ()):
                counts[len(subject)] -= 1
            lengths = [n for n, c in counts.items() if c > 0]
            if lengths:
                break
        else:
            return None
        best = min(abs(n - len(subject)) for n in lengths)
        key = (words, len(subject), best)
        if key not in self._windows:
            self._windows[key] = sorted(s for n, b in self.by_words[words].items()
                                        if abs(n - len(subject)) <= best + 2 for s in b)
        window = self._windows[key]
        # the window minus `base`, built once per (window, base): many rows share an answer,
        # hence a base, and a base can hold most of the relation (two distinct answers)
        if (key, base) not in self._without:
            gaps = sorted(i for s in base for i in [bisect.bisect_left(window, s)]
                          if i < len(window) and window[i] == s)
            self._without[key, base] = _Without(window, gaps)
        kept = self._without[key, base]
        i = bisect.bisect_left(window, subject)
        if i < len(window) and window[i] == subject and subject not in base:
            return rng.choice(_Skip(kept, kept.rank(i)))
        return rng.choice(kept)


class _Relation:
    """What filling needs of one relation's rows, gathered once."""

    def __init__(self, rows: pd.DataFrame):
        subjects = rows["subject"].str.strip()
        answers = rows["answer"].str.strip()
        self.answers_of: dict[str, set[str]] = {}
        self.subjects_of: dict[str, set[str]] = {}  # casefolded answer → subjects
        self.exact: dict[str, set[str]] = {}  # answer as written → subjects
        for s, a in zip(subjects, answers):
            self.answers_of.setdefault(s, set()).add(a.casefold())
            self.subjects_of.setdefault(a.casefold(), set()).add(s)
            self.exact.setdefault(a, set()).add(s)
        self.all = SubjectPool(subjects)
        self.by_answer: dict[str, SubjectPool] = {}
        self._invalid: dict[str, frozenset[str]] = {}

    def invalid(self, answer: str) -> frozenset[str]:
        """Subjects whose only answer is `answer` (casefolded): none can replace a subject
        with that answer."""
        if answer not in self._invalid:
            self._invalid[answer] = frozenset(s for s in self.subjects_of.get(answer, ())
                                              if self.answers_of[s] == {answer})
        return self._invalid[answer]

    def matching(self, answer: str) -> SubjectPool:
        if answer not in self.by_answer:
            self.by_answer[answer] = SubjectPool(self.exact.get(answer, ()))
        return self.by_answer[answer]


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
    cloze = rows[rows["task"] == "cloze"]
    relations = {name: _Relation(part) for name, part in
                 cloze.groupby(cloze["relation"].str.strip(), sort=False)}
    # Plain lists: a pandas cell write copies an arrow-backed column (quadratic in rows).
    cols = {c: rows[c].tolist() for c in ("task", "prompt", "answer", "counterfactual",
                                          "subject", "relation", "corrupted_prompt",
                                          "corrupted_subject", "corruption_note")}
    for i in range(len(rows)):
        if cols["corrupted_prompt"][i].strip():
            continue
        note = _fill_one(cols, i, rng, relations)
        if note and not cols["corruption_note"][i].strip():
            cols["corruption_note"][i] = note
    for c in ("corrupted_prompt", "corrupted_subject", "corruption_note"):
        rows[c] = pd.Series(cols[c], index=rows.index, dtype=rows[c].dtype)
    return rows


def _fill_one(cols: dict[str, list], i: int, rng: random.Random, relations: dict) -> str:
    subject, relation = cols["subject"][i].strip(), cols["relation"][i].strip()
    if cols["task"][i] != "cloze":
        return "not filled: yes/no rows need a derived or hand-written corrupted prompt"
    if not subject or subject not in cols["prompt"][i]:
        return "not filled: subject missing or not in the prompt"
    if not relation:
        return "not filled: no relation, so no same-relation subject to swap in"
    rel = relations[relation]
    ans = cols["answer"][i].strip().casefold()
    target = cols["counterfactual"][i].strip()
    partner = None  # first choice: a subject whose answer is this row's counterfactual
    if target.casefold() != ans:
        partner = rel.matching(target).pick(subject, frozenset(), rng)
    which = "its answer is the counterfactual" if partner else "different answer"
    partner = partner or rel.all.pick(subject, rel.invalid(ans), rng)
    if partner is None:
        return "not filled: no other subject of this relation with a different answer"
    cols["corrupted_subject"][i] = partner
    cols["corrupted_prompt"][i] = cols["prompt"][i].replace(subject, partner, 1)
    return f"subject swapped: {subject}→{partner} (same relation, {which}); " + length_note(
        subject, partner)


# --------------------------------------------------------------------------- several per prompt
DRAW_COLUMNS = ["prompt_id", "draw", "corrupted_prompt", "corrupted_subject", "corrupted_answer",
                "equal_length", "note"]


def subject_pool(rows: pd.DataFrame) -> pd.DataFrame:
    """(relation, subject, answer) of every cloze row, and of every filled corrupted subject
    whose answer is known: the row's counterfactual, when the corruption note says so
    (`make_counterfactual`, `derive`) or the pair was hand-written (no note: a hand-written
    pair swaps in a subject whose answer is the counterfactual).
    Answers keep their leading space; duplicates removed."""
    cloze = rows[rows["task"] == "cloze"]
    own = pd.DataFrame({"relation": cloze["relation"].str.strip(),
                        "subject": cloze["subject"].str.strip(), "answer": cloze["answer"]})
    note = cloze.get("corruption_note", pd.Series("", index=cloze.index)).fillna("")
    known = (cloze["corrupted_subject"].fillna("").str.strip() != "") & (
        ~note.str.startswith("subject swapped")
        | note.str.contains(r"answer is the counterfactual|= counterfactual\)"))
    partners = pd.DataFrame({"relation": cloze.loc[known, "relation"].str.strip(),
                             "subject": cloze.loc[known, "corrupted_subject"].str.strip(),
                             "answer": cloze.loc[known, "counterfactual"]})
    pool = pd.concat([own, partners], ignore_index=True)
    return pool.drop_duplicates(["relation", "subject"]).reset_index(drop=True)


def draw_counterfactuals(rows: pd.DataFrame, n: int, seed: int = 0, pool: pd.DataFrame | None
                         = None, token_length=None) -> pd.DataFrame:
    """Up to `n` counterfactual prompts per row: draw 0 is the row's own corrupted prompt (its
    answer the row's counterfactual), draws 1.. swap the subject for another subject of the
    same relation (from `pool`, default `subject_pool(rows)`) whose answer differs from the
    row's (a row without its own corrupted prompt starts at draw 0 with a drawn one).

    `token_length(text) -> int`, when given, is the model's token count of a prompt: partners
    whose prompt has the clean prompt's token length come first (random order among them),
    then the others by closeness (`equal_length` says which). Seeded per row
    (`random.Random(f"{seed}:{row}")`), so a row's draws do not depend on the other rows.
    Rows without a subject in the prompt, or of a relation with no other answer, get only
    what they have. One row per (prompt_id, draw), columns `DRAW_COLUMNS`."""
    pool = subject_pool(rows) if pool is None else pool
    by_relation = {name: part for name, part in pool.groupby("relation", sort=False)}
    out = []
    for i, row in enumerate(rows.itertuples(index=False)):
        prompt, subject = row.prompt, str(row.subject).strip()
        length = token_length(prompt) if token_length else None
        used, drawn = {subject}, []
        own = str(getattr(row, "corrupted_prompt", "") or "")
        if own.strip():
            partner = str(row.corrupted_subject).strip()
            used.add(partner)
            drawn.append((own, partner, row.counterfactual, "the dataset's corrupted prompt"))
        if row.task == "cloze" and subject and subject in prompt:
            drawn += _draw_partners(row, by_relation, used, n - len(drawn),
                                    random.Random(f"{seed}:{i}"), token_length, length)
        out += [(i, d, text, s, a, None if length is None else token_length(text) == length,
                 note) for d, (text, s, a, note) in enumerate(drawn[:n])]
    return pd.DataFrame(out, columns=DRAW_COLUMNS)


def _draw_partners(row, by_relation: dict, used: set, n: int, rng: random.Random,
                   token_length, length) -> list[tuple]:
    """Up to `n` (prompt, subject, answer, note) of other subjects of the row's relation whose
    answer differs from the row's, equal token length first."""
    prompt, subject = row.prompt, str(row.subject).strip()
    if n <= 0:
        return []
    candidates = by_relation.get(str(row.relation).strip())
    if candidates is None:
        return []
    answer = str(row.answer).strip().casefold()
    candidates = candidates[(candidates["answer"].str.strip().str.casefold() != answer)
                            & ~candidates["subject"].isin(used)]
    options = sorted((s, a, prompt.replace(subject, s, 1)) for s, a in
                     zip(candidates["subject"], candidates["answer"]))
    rng.shuffle(options)
    if length is not None:  # equal token length first, then the closest (a stable sort)
        options.sort(key=lambda o: abs(token_length(o[2]) - length))
    return [(text, s, a, f"subject swapped: {subject}→{s} (same relation, answer "
             f"{a.strip()!r})") for s, a, text in options[:n]]
