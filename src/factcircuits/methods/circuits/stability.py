"""How stable a circuit is under resampling of its prompt pairs (Méloux et al. 2025).

Each bootstrap resample draws the pairs with replacement (seeded by the run's seed); its edge
scores are the per-pair scores reweighted by the draw counts (`per_pair.PairScores`), its
circuit the top-k edges by |EAP-IG| with k the full sample's circuit size (the size rule of the
run's 80 % circuit: `faithfulness.top_k`). The resample's circuit is compared with the full
sample's by the Jaccard index of their edge sets; the median over resamples and its central
95 % range say how much the circuit depends on which pairs found it, and each edge's inclusion
frequency (the share of resamples whose circuit holds it) says which edges do. A circuit is
called stable only when the median Jaccard is ≥ `STABLE_MEDIAN` (Méloux et al.'s bar).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from factcircuits.methods.circuits.faithfulness import top_k
from factcircuits.methods.circuits.per_pair import PairScores
from factcircuits.methods.uncertainty import percentile_interval, resample_counts
from factcircuits.results.parameter_declarations import SEED, whole

STABLE_MEDIAN = 0.8  # median Jaccard a circuit needs to be called stable
STABILITY_RESAMPLES = whole("stability_resamples", 100, "bootstrap resamples of the pairs "
                            "behind each circuit's stability (Méloux et al.: at least 100)", 1)
RESAMPLES = STABILITY_RESAMPLES.default
# fewer pairs and many resamples repeat the full sample itself (all counts 1: n!/nⁿ of them,
# half at n = 2, 4 % at n = 5), which would make any circuit look stable
MIN_PAIRS_FOR_STABILITY = 5
_STREAM = 41  # the stability resamples' random stream, apart from the other bootstraps


def jaccard(a: Bool[Tensor, " n"], b: Bool[Tensor, " n"]) -> float:
    """|a ∩ b| / |a ∪ b| of two masks (1 when both are empty)."""
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def set_jaccard(a: set, b: set) -> float:
    """|a ∩ b| / |a ∪ b| of two sets (1 when both are empty)."""
    return 1.0 if not (a | b) else len(a & b) / len(a | b)


def weighted_jaccard(a: Float[Tensor, " n"], b: Float[Tensor, " n"]) -> float:
    """Σ min(a, b) / Σ max(a, b) of two non-negative weight vectors (Ruzicka): 1 when the
    weights agree everywhere, 0 when no edge carries weight in both."""
    top = float(torch.maximum(a, b).sum())
    return 1.0 if top == 0 else float(torch.minimum(a, b).sum()) / top


@dataclass
class Stability:
    k: int  # edges in each circuit (the full sample's size)
    n_pairs: int
    jaccards: np.ndarray  # [resamples] Jaccard of each resample's circuit with the full one
    inclusion: Float[Tensor, " n_edges"]  # share of resamples whose circuit holds each edge

    @property
    def n_resamples(self) -> int:
        return len(self.jaccards)

    @property
    def median(self) -> float:
        return float(np.median(self.jaccards))

    @property
    def interval(self) -> tuple[float, float]:
        """The central 95 % of the resamples' Jaccard indices."""
        return percentile_interval(self.jaccards)

    @property
    def stable(self) -> bool:
        return self.median >= STABLE_MEDIAN

    @property
    def chance(self) -> float:
        """The Jaccard two circuits of k edges drawn at random would share (about): with q =
        k / n_edges, E|A ∩ B| = q·k, so J ≈ q / (2 − q). A large circuit overlaps by chance."""
        q = self.k / len(self.inclusion)
        return q / (2 - q)


def resample_seed(seed: int) -> tuple[int, int]:
    return (int(seed), _STREAM)


def stability(scores: PairScores, k: int, rows=None, n_resamples: int = RESAMPLES,
              seed: int = SEED.default) -> Stability:
    """Jaccard of the top-k circuit (by |EAP-IG|) of each of `n_resamples` bootstrap resamples
    of the pairs `rows` (default every pair) with the top-k circuit of all of them, and each
    edge's inclusion frequency."""
    rows = np.arange(scores.n_pairs) if rows is None else np.asarray(rows)
    if n_resamples < 1:
        raise ValueError(f"n_resamples={n_resamples}: use 1 or more")
    full = top_k(scores.of(rows).eap_ig, k)  # the group's circuit, as `relations` keeps it
    rng_seed = int(np.random.SeedSequence(resample_seed(seed)).generate_state(1)[0])
    counts = resample_counts(len(rows), n_resamples, rng_seed)
    resampled = scores.reweighted(counts, rows)
    # float64: k / n_resamples must stay exact (19 / 20 in float32 is below 0.95)
    inclusion = torch.zeros(scores.graph.n_edges, dtype=torch.float64)
    jaccards = np.empty(n_resamples)
    for i, row in enumerate(resampled):
        mask = top_k(row, k)
        inclusion += mask.double()
        jaccards[i] = jaccard(mask, full)
    return Stability(k, len(rows), jaccards, inclusion / n_resamples)
