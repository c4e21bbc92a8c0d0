"""Studies at scale: K known prompts per relation, drawn with the run's seed.

Stratifying by relation keeps a relation with few known facts in the study and stops a
relation with many from dominating the pooled numbers; drawing with the run's seed makes the
same parameters analyse the same prompts."""

from __future__ import annotations

import numpy as np
import pandas as pd

from factcircuits.results.parameter_declarations import SEED


def per_relation_sample(relations: pd.Series, k: int, seed: int = SEED.default) -> np.ndarray:
    """Boolean mask over `relations` keeping at most `k` rows of each relation, drawn without
    replacement with `seed`; rows keep their order. k = 0 keeps every row."""
    relations = relations.fillna("").astype(str).reset_index(drop=True)
    if k <= 0:
        return np.ones(len(relations), dtype=bool)
    rng = np.random.default_rng(seed)
    keep = np.zeros(len(relations), dtype=bool)
    for relation in sorted(relations.unique()):  # sorted: the draw does not depend on row order
        rows = np.flatnonzero((relations == relation).to_numpy())
        chosen = rows if len(rows) <= k else rng.choice(rows, size=k, replace=False)
        keep[chosen] = True
    return keep


def sample_note(relations: pd.Series, keep: np.ndarray, k: int) -> str:
    """'8 per relation over 10 relations (3 relations have fewer known prompts)'."""
    counts = relations[keep].value_counts()
    short = int((counts < k).sum()) + len(set(relations) - set(counts.index))
    extra = f" ({short} relations have fewer known prompts)" if short else ""
    return f"sampled {k} per relation, seeded, over {len(counts)} relations{extra}"
