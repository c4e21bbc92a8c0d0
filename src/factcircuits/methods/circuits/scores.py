"""Edge scores: EAP (Syed et al. 2023) and EAP-IG "inputs" (Hanna et al. 2024).

For an edge u → r (writer u, reader input r) and one prompt pair:

    score(u → r) = Σ_pos (a_u(clean) − a_u(corrupted)) · ḡ_r

with ḡ_r the gradient of the task's metric (`PreparedTask.metric`: cloze logit difference,
yes/no label-signed log-odds) with respect to reader input r, summed over positions, then
averaged over prompt pairs, signs kept.
- EAP: ḡ_r is the gradient on the corrupted run (one step).
- EAP-IG: ḡ_r is the mean of the gradients on runs whose input embeddings are interpolated,
  e_k = ẽ + (k / steps)(e − ẽ) for k = 0 … steps − 1 (ẽ corrupted, e clean: the left Riemann
  sum of Hanna et al.'s code); with steps = 1 it is EAP. Every other writer then takes the
  value its interpolated inputs give it (the "inputs" variant).

Sign convention (denoising, as `attribution_patching` and TransformerLens): the score
estimates m(corrupted with the edge restored to its clean value) − m(corrupted), so a positive
score means the edge carries the clean answer. The issue's (a_u(corrupted) − a_u(clean)) · ∂m/∂r
(Hanna et al.'s code, with a loss-like metric) is the same number with the opposite sign.
Gradients are those of `CircuitForward.run`, the forward the circuits are evaluated with.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm import tqdm

from factcircuits.methods.circuits.forward import CircuitForward
from factcircuits.methods.circuits.graph import Graph
from factcircuits.methods.engine import groups_by
from factcircuits.methods.evaluate import PreparedTask
from factcircuits.results.parameter_declarations import whole

IG_STEPS = whole("ig_steps", 5, "EAP-IG interpolation steps (1: plain EAP)", 1,
                 allowed="use a whole number of at least 1 (EAP-IG steps; 1 is plain EAP)")


@dataclass
class EdgeScores:
    graph: Graph
    eap: Float[Tensor, " n_edges"]  # mean over pairs, denoising sign
    eap_ig: Float[Tensor, " n_edges"]
    clean: Float[Tensor, " n_prompts"]  # the task metric per prompt, clean run
    corrupted: Float[Tensor, " n_prompts"]
    ig_steps: int
    seconds: float = math.nan


def pair_batches(lm, prepared: PreparedTask):
    """Clean and corrupted token batches of `prepared`, checked to pair up, and the prompt
    groups of one token length ([prompt indices], length)."""
    clean, corrupt = prepared.pairs(lm.tokenizer)
    groups = [(idx, int(clean.lengths[idx[0]])) for idx in groups_by(clean.lengths)]
    return clean, corrupt, groups


def _block_scores(graph: Graph, delta: Tensor, grads: list[Tensor]) -> Tensor:
    """Σ over prompts and positions of delta_u · grad_r, per edge: [n_edges]."""
    out = []
    for (_, _, _, n_u, _), g in zip(graph.blocks, grads):
        d = delta[:, -1:, :n_u] if g.shape[1] == 1 else delta[:, :, :n_u]
        out.append(torch.einsum("bpud,bprd->ru", d.float(), g.float()).flatten())
    return torch.cat(out)


@dataclass
class ScoredGroup:
    """One group of equal-length pairs, through the forwards and backwards every edge score
    needs: its prompt indices, the writers' clean − corrupted difference, and the reader
    inputs' gradients for EAP (the corrupted run) and EAP-IG (their mean over the steps)."""

    index: Tensor
    delta: Tensor
    eap_grads: list[Tensor]
    ig_grads: list[Tensor]


def scored_groups(cf: CircuitForward, lm, prepared: PreparedTask, metric, ig_steps: int,
                  clean_m: Tensor, corrupt_m: Tensor, bar):
    """Yield each `ScoredGroup` of `prepared`'s pairs, writing the clean and corrupted metric
    per prompt into `clean_m` and `corrupt_m`: the one loop behind the mean scores
    (`edge_scores`) and the per-pair ones (`per_pair.pair_edge_scores`)."""
    if ig_steps < 1:
        raise ValueError(f"ig_steps={ig_steps}: use 1 or more")
    clean, corrupt, groups = pair_batches(lm, prepared)
    for idx, length in groups:
        index = torch.as_tensor(idx)
        e_clean = cf.embed(clean.tokens[idx, :length])
        e_corr = cf.embed(corrupt.tokens[idx, :length])
        with torch.no_grad():
            run_clean = cf.run(e_clean, keep_writes=True)
            run_corr = cf.run(e_corr, keep_writes=True)
            delta = run_clean.writes - run_corr.writes
        clean_m[index] = metric(run_clean.logits, index).float().cpu()
        corrupt_m[index] = metric(run_corr.logits, index).float().cpu()
        total, first = None, None
        for k in range(ig_steps):
            x = (e_corr + (k / ig_steps) * (e_clean - e_corr)).requires_grad_(True)
            with torch.enable_grad():
                run = cf.run(x, keep_inputs=True)
                m = metric(run.logits, index).sum()
                grads = list(torch.autograd.grad(m, run.inputs))
            grads[-1] = grads[-1][:, -1:]  # the logits read the last position only
            first = grads if k == 0 else first
            total = grads if total is None else [t + g for t, g in zip(total, grads)]
            bar.update()
        yield ScoredGroup(index, delta, first, [t / ig_steps for t in total])


def n_groups(lm, prepared: PreparedTask) -> int:
    return len(pair_batches(lm, prepared)[2])


def edge_scores(lm, prepared: PreparedTask, *, ig_steps: int = IG_STEPS.default,
                progress: bool = True, forward: CircuitForward | None = None,
                metric=None) -> EdgeScores:
    """EAP and EAP-IG scores of every edge of the graph of `lm` for the prompt pairs of
    `prepared` (equal-length clean/corrupted pairs), averaged over pairs."""
    start = time.perf_counter()
    cf = forward or CircuitForward(lm)
    graph, metric = cf.graph, metric or prepared.metric
    n_prompts = len(prepared.prompts)
    eap = torch.zeros(graph.n_edges)
    ig = torch.zeros(graph.n_edges)
    clean_m, corrupt_m = torch.zeros(n_prompts), torch.zeros(n_prompts)
    bar = tqdm(total=n_groups(lm, prepared) * ig_steps, desc="edge scores (EAP-IG)",
               disable=not progress, leave=False, mininterval=1.0)
    for group in scored_groups(cf, lm, prepared, metric, ig_steps, clean_m, corrupt_m, bar):
        eap += _block_scores(graph, group.delta, group.eap_grads).cpu()
        ig += _block_scores(graph, group.delta, group.ig_grads).cpu()
    bar.close()
    return EdgeScores(graph, eap / n_prompts, ig / n_prompts, clean_m, corrupt_m, ig_steps,
                      time.perf_counter() - start)
