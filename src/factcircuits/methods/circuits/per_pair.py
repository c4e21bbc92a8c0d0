"""Edge scores kept per prompt pair, so that any reweighting of the pairs (a relation's pairs, a
fold, a bootstrap resample) is a matrix product, not a rerun.

EAP and EAP-IG scores (`scores.edge_scores`) are means over pairs of one number per pair and
edge: (a_u(clean) − a_u(corrupted)) · ḡ_r summed over positions. The same forwards and
backwards give that number for every pair separately ([n_pairs, n_edges]); the scores of any
set of pairs drawn with counts c (one resample: c sums to n) are c @ per_pair / Σc. Sign and
gradient conventions are those of `scores` (denoising: positive carries the clean answer).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm import tqdm

from factcircuits.methods.circuits.forward import CircuitForward
from factcircuits.methods.circuits.graph import Graph
from factcircuits.methods.circuits.scores import IG_STEPS, EdgeScores, n_groups, scored_groups
from factcircuits.methods.evaluate import PreparedTask


@dataclass
class PairScores:
    graph: Graph
    eap: Float[Tensor, "n_pairs n_edges"]  # one row per pair (float64), denoising sign
    eap_ig: Float[Tensor, "n_pairs n_edges"]
    clean: Float[Tensor, " n_pairs"]  # the task metric per pair, clean run
    corrupted: Float[Tensor, " n_pairs"]
    ig_steps: int
    seconds: float = math.nan

    @property
    def n_pairs(self) -> int:
        return len(self.clean)

    def of(self, rows=None) -> EdgeScores:
        """The mean scores of the pairs `rows` (default: every pair), as `edge_scores` gives
        them for those pairs."""
        rows = torch.arange(self.n_pairs) if rows is None else torch.as_tensor(rows).long()
        return EdgeScores(self.graph, self.eap[rows].mean(0).float(),
                          self.eap_ig[rows].mean(0).float(),
                          self.clean[rows], self.corrupted[rows], self.ig_steps, self.seconds)

    def reweighted(self, counts, rows=None, method: str = "eap_ig"
                   ) -> Float[Tensor, "resamples n_edges"]:
        """The mean scores of each resample: `counts` [resamples, len(rows)] (how often each
        pair of `rows` is drawn, e.g. `uncertainty.resample_counts`) @ per-pair rows / Σ
        counts."""
        table = getattr(self, method)
        if rows is not None:
            table = table[torch.as_tensor(rows).long()]
        c = torch.as_tensor(np.asarray(counts), dtype=table.dtype)
        return (c @ table) / c.sum(1, keepdim=True)


def _per_pair_block_scores(graph: Graph, delta: Tensor, grads: list[Tensor]) -> Tensor:
    """Σ over positions of delta_u · grad_r, per prompt and edge: [batch, n_edges], summed in
    float64 so that means and reweightings of the rows lose nothing to rounding."""
    out = []
    for (_, _, _, n_u, _), g in zip(graph.blocks, grads):
        d = delta[:, -1:, :n_u] if g.shape[1] == 1 else delta[:, :, :n_u]
        out.append(torch.einsum("bpud,bprd->bru", d.double(), g.double()).flatten(1))
    return torch.cat(out, 1)


def pair_edge_scores(lm, prepared: PreparedTask, *, ig_steps: int = IG_STEPS.default,
                     progress: bool = True, forward: CircuitForward | None = None,
                     metric=None) -> PairScores:
    """EAP and EAP-IG scores of every edge for each prompt pair of `prepared` (equal-length
    clean/corrupted pairs): the forwards and backwards of `scores.edge_scores`, keeping one
    row per pair instead of their mean."""
    start = time.perf_counter()
    cf = forward or CircuitForward(lm)
    graph, metric = cf.graph, metric or prepared.metric
    n = len(prepared.prompts)
    eap = torch.zeros(n, graph.n_edges, dtype=torch.float64)
    ig = torch.zeros(n, graph.n_edges, dtype=torch.float64)
    clean_m, corrupt_m = torch.zeros(n), torch.zeros(n)
    bar = tqdm(total=n_groups(lm, prepared) * ig_steps, desc="edge scores per pair (EAP-IG)",
               disable=not progress, leave=False, mininterval=1.0)
    for group in scored_groups(cf, lm, prepared, metric, ig_steps, clean_m, corrupt_m, bar):
        eap[group.index] = _per_pair_block_scores(graph, group.delta, group.eap_grads).cpu()
        ig[group.index] = _per_pair_block_scores(graph, group.delta, group.ig_grads).cpu()
    bar.close()
    return PairScores(graph, eap, ig, clean_m, corrupt_m, ig_steps,
                      time.perf_counter() - start)
