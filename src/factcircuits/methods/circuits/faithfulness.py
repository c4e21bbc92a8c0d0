"""Circuits chosen from edge scores, and their exact faithfulness.

A circuit is a set of edges; every edge outside it is ablated: its reader input receives the
writer's reference output instead of the writer's output in the circuit's own run
(`CircuitForward.run_circuits`). Reference: the corrupted prompt's run (counterfactual, the
default) or the writer's mean output over every position of every clean and corrupted prompt
(mean ablation).

Faithfulness f(C) = (m(C) − m(∅)) / (m(full) − m(∅)), on the metric averaged over prompt pairs:
0 = the empty circuit (the corrupted metric under counterfactual ablation), 1 = the full model
(the clean metric).

Circuits at the MIB sizes (percent of the graph's edges, `MIB_SIZES`):
- top-k: the round(p · E) edges of largest |score| (ties: lower edge index first);
- greedy, path-connected (Hanna et al. 2024's greedy, then MIB's pruning): starting from the
  logits, repeatedly add the largest-|score| edge whose reader belongs to a node already in the
  circuit (a key/value input belongs to every head of its group), then keep only the edges on a
  path from the input to the logits; its `n_edges` is the count after pruning.

Random baseline: at each size below 100 %, `RANDOM_DRAWS` circuits of the same number of edges
drawn uniformly (`random_circuits`); their faithfulness is the mean over the draws (the mean of
the metric, as f is linear in it); at 100 % the only circuit is the full graph (f = 1).

Area measures (MIB, Mueller et al. 2025): with x = n_edges / E (the fraction of edges, not a log
scale) at each evaluated size in increasing order, CPR = Σ trapezoids of f, CMD = Σ trapezoids
of |1 − f|, over x from the smallest to the largest size (0.001 … 1 for `MIB_SIZES`).
"""

from __future__ import annotations

import heapq

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor
from tqdm import tqdm

from factcircuits.methods.circuits.forward import CircuitForward
from factcircuits.methods.circuits.graph import Graph
from factcircuits.methods.circuits.scores import pair_batches
from factcircuits.methods.uncertainty import resampled_means
from factcircuits.results.parameter_declarations import SEED, choice

MIB_SIZES = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)  # percent of edges
ABLATIONS = ("counterfactual", "mean")
THRESHOLD = 0.8  # the faithfulness the headline's smallest circuit must reach
RANDOM_DRAWS = 5  # random circuits per size: the baseline's curve is their mean
BUDGET_BYTES = 512 * 2**20  # this-run writes of the circuits stacked in one forward


ABLATION = choice("ablation", "counterfactual", 'what an ablated edge\'s reader gets: '
                  '"counterfactual" or "mean"', ("counterfactual", "mean"),
                  "use 'counterfactual' (the corrupted run's write) or 'mean' (the writer's "
                  "mean write)")


# --------------------------------------------------------------------------- circuits
def n_for(percent: float, n_edges: int) -> int:
    return max(1, min(n_edges, round(percent / 100 * n_edges)))


def random_circuits(n_edges: int, k: int, n_draws: int, seed: int = SEED.default
                    ) -> Bool[Tensor, "n_draws n_edges"]:
    """`n_draws` circuits of k edges each, every k-subset of the edges equally likely (the
    first k of a seeded random permutation per draw): the baseline a chosen circuit of the
    same size has to beat."""
    gen = torch.Generator().manual_seed(int(seed))
    masks = torch.zeros(n_draws, n_edges, dtype=torch.bool)
    for row in masks:
        row[torch.randperm(n_edges, generator=gen)[:k]] = True
    return masks


def top_k(scores: Float[Tensor, " n_edges"], k: int) -> Bool[Tensor, " n_edges"]:
    """The k edges of largest |score| (stable: ties keep the lower edge index)."""
    order = torch.sort(scores.abs(), descending=True, stable=True).indices
    mask = torch.zeros(len(scores), dtype=torch.bool)
    mask[order[:k]] = True
    return mask


def _reader_owner(graph: Graph) -> list[list[int]]:
    """Per edge block, per reader: the writer indices of the nodes the reader belongs to
    (logits: [-1])."""
    owners = []
    for layer, sub, _, _, _ in graph.blocks:
        if sub == "logits":
            owners.append([[-1]])
        elif sub == "mlp":
            owners.append([[graph.mlp_writer(layer)]])
        else:
            q = [[graph.head_writer(layer, h)] for h in range(graph.n_heads)]
            kv = [[graph.head_writer(layer, h) for h in
                   range(g * graph.group, (g + 1) * graph.group)]
                  for g in range(graph.n_kv_heads)]
            owners.append(q + kv + kv)
    return owners


def greedy_order(graph: Graph, scores: Float[Tensor, " n_edges"]) -> np.ndarray:
    """Every edge in the order the greedy search adds it (the circuit of size n is the first
    n): the largest-|score| edge whose reader's node is already in the circuit, from the
    logits back."""
    owners = _reader_owner(graph)
    by_node: dict[int, list[tuple[int, int]]] = {}  # node → (block, reader) it opens
    for b, block_owners in enumerate(owners):
        for r, nodes in enumerate(block_owners):
            for node in nodes:
                by_node.setdefault(node, []).append((b, r))
    mag = scores.abs().double().numpy()
    heap: list[tuple[float, int, int]] = []
    opened: set[tuple[int, int]] = set()
    in_circuit: set[int] = set()

    def open_node(node):
        if node in in_circuit:
            return
        in_circuit.add(node)
        for b, r in by_node.get(node, []):
            if (b, r) in opened:
                continue
            opened.add((b, r))
            _, _, _, n_u, start = graph.blocks[b]
            first = start + r * n_u
            for e in range(first, first + n_u):
                heapq.heappush(heap, (-mag[e], e, e - first))

    open_node(-1)
    order = []
    while heap:
        _, e, writer = heapq.heappop(heap)
        order.append(e)
        open_node(writer)
    return np.asarray(order)


def on_paths(graph: Graph, mask: Bool[Tensor, " n_edges"]) -> Bool[Tensor, " n_edges"]:
    """The edges of `mask` on some path from the input to the logits."""
    blocks = graph.split(mask)
    owners = _reader_owner(graph)
    reach = torch.zeros(graph.n_writers, dtype=torch.bool)
    reach[0] = True
    for b, (_, sub, _, n_u, _) in enumerate(graph.blocks):
        if sub == "logits":
            break
        fed = (blocks[b] & reach[:n_u]).any(-1)
        for r, nodes in enumerate(owners[b]):
            if fed[r]:
                reach[nodes] = True
    live = torch.zeros(graph.n_writers + 1, dtype=torch.bool)  # last slot: the logits
    live[-1] = True
    keep = []
    for b in reversed(range(len(graph.blocks))):
        n_u = graph.blocks[b][3]
        reader_live = torch.tensor([bool(live[nodes].any()) for nodes in owners[b]])
        kept = blocks[b] & reach[:n_u] & reader_live[:, None]
        live[:n_u] |= kept.any(0)
        keep.append(kept)
    return graph.join(keep[::-1])


# --------------------------------------------------------------------------- evaluation
class Evaluator:
    """Exact metric of circuits on the prompt pairs of a task: per length group, the clean
    inputs and the reference writes, prepared once."""

    def __init__(self, lm, prepared, ablation: str = ABLATION.default,
                 forward: CircuitForward | None = None, metric=None,
                 budget_bytes: int = BUDGET_BYTES):
        if ablation not in ABLATIONS:
            raise ValueError(f"ablation={ablation!r}: use one of {', '.join(ABLATIONS)}")
        self.cf = forward or CircuitForward(lm)
        self.graph, self.metric = self.cf.graph, metric or prepared.metric
        self.budget = budget_bytes
        clean, corrupt, groups = pair_batches(lm, prepared)
        self.n_prompts = len(prepared.prompts)
        self.corrupted = torch.zeros(self.n_prompts)  # the metric of the corrupted prompts
        self.groups = []
        with torch.no_grad():
            for idx, n in groups:
                index = torch.as_tensor(idx)
                e = self.cf.embed(clean.tokens[idx, :n])
                ref = self.cf.run(self.cf.embed(corrupt.tokens[idx, :n]), keep_writes=True)
                self.corrupted[index] = self.metric(ref.logits, index).float().cpu()
                self.groups.append((index, e, ref.writes))
            if ablation == "mean":
                total, count = 0.0, 0
                for _, e, ref in self.groups:
                    own = self.cf.run(e, keep_writes=True).writes
                    total = total + own.sum((0, 1)) + ref.sum((0, 1))
                    count += 2 * own.shape[0] * own.shape[1]
                mean = (total / count)[None, None]
                self.groups = [(i, e, mean) for i, e, _ in self.groups]

    def metrics(self, masks: Float[Tensor, "circuits n_edges"], progress: bool = False,
                desc: str = "circuits") -> Float[Tensor, "circuits n_prompts"]:
        """The task metric of every prompt under each circuit (1 = edge kept)."""
        masks = masks.float()
        out = torch.zeros(len(masks), self.n_prompts)
        d = self.graph.n_writers * self.cf.model.cfg.d_model * 4
        steps = []
        for index, e, ref in self.groups:
            per = max(1, self.budget // (d * e.shape[0] * e.shape[1]))
            steps += [(index, e, ref, s, min(s + per, len(masks)))
                      for s in range(0, len(masks), per)]
        for index, e, ref, s, t in tqdm(steps, desc=desc, disable=not progress, leave=False,
                                        mininterval=1.0):
            logits = self.cf.run_circuits(e, ref, masks[s:t])
            C, B = logits.shape[:2]
            values = self.metric(logits.reshape(C * B, -1), index.repeat(C))
            out[s:t, index] = values.float().cpu().view(C, B)
        return out


def faithfulness(metric: Tensor, empty: Tensor, full: Tensor) -> Tensor:
    """(m(C) − m(∅)) / (m(full) − m(∅)) of metrics averaged over prompts (last axis)."""
    m, lo, hi = metric.mean(-1), empty.mean(-1), full.mean(-1)
    gap = hi - lo
    return (m - lo) / gap if float(gap.abs()) > 1e-12 else torch.full_like(m, float("nan"))


def resampled_faithfulness(values, empty, full, counts: np.ndarray) -> np.ndarray:
    """Faithfulness of each circuit in each bootstrap resample of the prompts: [resamples,
    circuits], from the metrics per prompt `values` [circuits, n_prompts], `empty` and `full`
    [n_prompts] and `counts` [resamples, n_prompts] (`uncertainty.resample_counts`)."""
    mean = lambda v: resampled_means(np.asarray(v, float), counts)  # noqa: E731
    lo, hi = mean(empty), mean(full)
    gap = hi - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (mean(np.asarray(values, float).T) - lo[:, None]) / gap[:, None]
    return np.where(np.abs(gap)[:, None] > 1e-12, out, np.nan)


def areas(fraction, faith):
    """(CPR, CMD): trapezoid areas of f and of |1 − f| over x = fraction of edges (MIB);
    `faith` [..., sizes] gives arrays [...] (e.g. one area per bootstrap resample)."""
    x, f = np.asarray(fraction, float), np.asarray(faith, float)
    order = np.argsort(x, kind="stable")
    x, f = x[order], f[..., order]
    dx = x[1:] - x[:-1]
    trap = lambda y: np.sum(dx * (y[..., 1:] + y[..., :-1]) / 2, axis=-1)  # noqa: E731
    cpr, cmd = trap(f), trap(np.abs(1 - f))
    return (float(cpr), float(cmd)) if f.ndim == 1 else (cpr, cmd)


def circuit_masks(graph: Graph, scores: Tensor, sizes=MIB_SIZES
                  ) -> list[tuple[str, float, Tensor]]:
    """(variant, size percent, mask) for the top-k and greedy path-connected circuits."""
    out = [("top-k", p, top_k(scores, n_for(p, graph.n_edges))) for p in sizes]
    order = torch.as_tensor(greedy_order(graph, scores))
    for p in sizes:
        mask = torch.zeros(graph.n_edges, dtype=torch.bool)
        mask[order[:n_for(p, graph.n_edges)]] = True
        out.append(("greedy, path-connected", p, on_paths(graph, mask)))
    return out


def curve(evaluator: Evaluator, scores: Tensor, sizes=MIB_SIZES, method: str = "EAP-IG",
          progress: bool = False, greedy: bool = True) -> tuple[pd.DataFrame, dict]:
    """The faithfulness table of the circuits chosen by `scores` (columns method, variant,
    size_percent, n_edges, metric, faithfulness) and the metrics per prompt {"empty":
    [n_prompts], "full": [n_prompts], "circuits": [rows of the table, n_prompts]}."""
    g = evaluator.graph
    chosen = circuit_masks(g, scores, sizes)
    if not greedy:
        chosen = [c for c in chosen if c[0] == "top-k"]
    masks = torch.stack([torch.zeros(g.n_edges), torch.ones(g.n_edges)]
                        + [m.float() for _, _, m in chosen])
    values = evaluator.metrics(masks, progress, desc=f"faithfulness ({method})")
    empty, full = values[0], values[1]
    rows = [{"method": method, "variant": v, "size_percent": p, "n_edges": int(m.sum()),
             "metric": float(values[2 + i].mean()),
             "faithfulness": float(faithfulness(values[2 + i], empty, full))}
            for i, (v, p, m) in enumerate(chosen)]
    return pd.DataFrame(rows), {"empty": empty, "full": full, "circuits": values[2:]}


def smallest_reaching(table: pd.DataFrame, threshold: float = THRESHOLD):
    """The row of the smallest circuit with faithfulness ≥ threshold, or None."""
    ok = table[table["faithfulness"] >= threshold]
    return None if ok.empty else ok.sort_values("n_edges").iloc[0]
