"""Exact single-edge patching: what the edge scores are checked against.

For an edge u → r and one prompt pair (a_u: writer u's output in the clean run, ã_u in the
corrupted run), one ordinary forward with only reader input r changed:
- noising: the clean run with r receiving ã_u instead of a_u; effect m(clean) − m(patched).
  This is exactly m(full) − m(full without the edge) of the circuit evaluation (u's own inputs
  are all kept, so its output in that run is a_u).
- denoising: the corrupted run with r receiving a_u instead of ã_u; effect
  m(patched) − m(corrupted). This is what EAP linearises (its score is the derivative of this
  patch at the corrupted run) and EAP-IG integrates along the input path. It is *not* the
  circuit ∅ + edge: in that circuit u's inputs are all ablated, so u writes ã_u and the edge
  changes nothing unless u is the input node.
Effects are means over prompt pairs, signed like the scores (positive: the edge carries the
clean answer). One plain forward per edge and prompt, not a circuit evaluation: about ten
times cheaper than `Evaluator.metrics` on the same masks.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm import tqdm

from factcircuits.methods.circuits.forward import CircuitForward
from factcircuits.methods.circuits.scores import pair_batches

DIRECTIONS = ("noising", "denoising")
POSITIONS_PER_FORWARD = 2048  # prompt positions (edges × prompts × tokens) in one forward
ROWS_PER_FORWARD = 64  # edges × prompts: final logits are rows × vocab (Gemma 3: 262k)


def _locate(graph, edges: Tensor) -> list[tuple[int, int, int]]:
    """(block, reader, writer) of each edge index."""
    out = []
    for e in edges.tolist():
        for b, (_, _, n_r, n_u, start) in enumerate(graph.blocks):
            if start <= e < start + n_r * n_u:
                out.append((b, (e - start) // n_u, (e - start) % n_u))
                break
        else:
            raise IndexError(f"edge {e} is not in the graph ({graph.n_edges} edges)")
    return out


def _editor(where: list[tuple[int, int, int]], shift: Tensor, B: int):
    """`CircuitForward.run`'s edit adding shift[:, :, writer] of the batch's prompts to reader
    input r of copy k (edge k of `where`) of the prompts."""
    by_block: dict[int, list[tuple[int, int, int]]] = {}
    for k, (b, r, u) in enumerate(where):
        by_block.setdefault(b, []).append((k, r, u))

    def edit(block: int, x: Tensor) -> Tensor:
        if block not in by_block:
            return x
        x = x.clone()
        for k, r, u in by_block[block]:
            x[k * B:(k + 1) * B, :, r] += shift[:, :, u]
        return x

    return edit


@torch.no_grad()
def edge_effects(lm, prepared, edges: Int[Tensor, " k"], *, forward: CircuitForward | None = None,
                 metric=None, progress: bool = False) -> dict[str, Float[Tensor, " k"]]:
    """{"noising": [k], "denoising": [k]}: the exact single-edge effects of `edges` (edge
    indices of the graph), means over the prompt pairs of `prepared`."""
    cf = forward or CircuitForward(lm)
    metric = metric or prepared.metric
    where = _locate(cf.graph, torch.as_tensor(edges))
    clean, corrupt, groups = pair_batches(lm, prepared)
    total = {d: torch.zeros(len(where)) for d in DIRECTIONS}
    bar = tqdm(total=len(groups) * len(where), desc="single edges", disable=not progress,
               leave=False, mininterval=1.0)
    for idx, n in groups:
        index, B = torch.as_tensor(idx), len(idx)
        e_clean = cf.embed(clean.tokens[idx, :n])
        e_corr = cf.embed(corrupt.tokens[idx, :n])
        run_clean = cf.run(e_clean, keep_writes=True)
        run_corr = cf.run(e_corr, keep_writes=True)
        delta = run_clean.writes - run_corr.writes
        per = max(1, min(POSITIONS_PER_FORWARD // (B * n), ROWS_PER_FORWARD // B))
        for s in range(0, len(where), per):
            chunk = where[s:s + per]
            K = len(chunk)
            for direction, e, base, sign in (("noising", e_clean, run_clean, -1.0),
                                             ("denoising", e_corr, run_corr, 1.0)):
                run = cf.run(e.repeat(K, 1, 1), edit=_editor(chunk, sign * delta, B))
                patched = metric(run.logits, index.repeat(K)).float().cpu().view(K, B)
                reference = metric(base.logits, index).float().cpu()
                # signed like the scores: positive = the edge carries the clean answer
                total[direction][s:s + K] += (-sign * (reference - patched)).sum(1)
            bar.update(K)
    bar.close()
    n_prompts = len(prepared.prompts)
    return {d: t / n_prompts for d, t in total.items()}
