"""Which prompt pairs choose a circuit (discovery) and which judge it (evaluation).

Edge scores rank the edges by how much they matter on the pairs they were computed on, so a
circuit judged on those same pairs looks better than it is. The pairs are split, seeded by the
run's seed (MIB, Mueller et al. 2025, keeps discovery and evaluation data apart likewise):

- held-out: with at least 2 × `MIN_PAIRS_PER_HALF` pairs, half the pairs (a seeded random half,
  the smaller one when n is odd) score the edges and the circuits are evaluated on the rest;
- cross-fitted: with 2 … 2 × `MIN_PAIRS_PER_HALF` − 1 pairs a single split would leave too few
  pairs on either side, so the pairs form two seeded folds A and B: A's scores choose circuits
  evaluated on B, and B's scores circuits evaluated on A. Every pair is evaluated once, by a
  circuit that never saw it;
- in-sample: one pair cannot be split; it both chooses and judges (said wherever reported).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from factcircuits.results.parameter_declarations import SEED

MIN_PAIRS_PER_HALF = 10  # fewer than twice this many pairs: cross-fitting instead of one split
SPLITS = ("held-out", "cross-fitted", "in-sample")
_STREAM = 29  # the split's random stream, apart from the bootstrap's (both seeded by the seed)


@dataclass(frozen=True)
class Fold:
    discovery: np.ndarray  # indices of the pairs whose edge scores choose the circuits
    evaluation: np.ndarray  # indices of the pairs the circuits are evaluated on


@dataclass(frozen=True)
class PairSplit:
    kind: str  # one of SPLITS
    folds: tuple[Fold, ...]
    n_pairs: int

    @property
    def evaluation(self) -> np.ndarray:
        """Every evaluated pair, in fold order (each pair at most once)."""
        return np.concatenate([f.evaluation for f in self.folds])

    @property
    def n_discovery(self) -> int | None:
        """Pairs behind each evaluated circuit: None under cross-fitting (two folds)."""
        return None if self.kind == "cross-fitted" else len(self.folds[0].discovery)

    @property
    def fold_sizes(self) -> list[int] | None:
        return [len(f.discovery) for f in self.folds] if self.kind == "cross-fitted" else None


def split_pairs(n: int, seed: int = SEED.default,
                min_per_half: int = MIN_PAIRS_PER_HALF) -> PairSplit:
    """The discovery/evaluation split of n pairs (see the module docstring for the rule)."""
    if n < 1:
        raise ValueError("a split needs at least one pair")
    order = np.random.default_rng((seed, _STREAM)).permutation(n)
    first, second = np.sort(order[:n // 2]), np.sort(order[n // 2:])
    if n >= 2 * min_per_half:
        return PairSplit("held-out", (Fold(first, second),), n)
    if n >= 2:
        return PairSplit("cross-fitted", (Fold(first, second), Fold(second, first)), n)
    every = np.arange(n)
    return PairSplit("in-sample", (Fold(every, every),), n)
