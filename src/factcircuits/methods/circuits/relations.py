"""A circuit per relation, and the run's circuit over every pair, from one set of per-pair edge
scores (`per_pair.pair_edge_scores`): each group's EAP-IG top-k circuits at the MIB sizes, judged
by their exact faithfulness on pairs that did not choose them (`split.split_pairs`: held-out
from 20 pairs, cross-fitted below), the smallest reaching 80 %, CPR and CMD with bootstrap
intervals over the evaluation pairs, and the circuit's stability (`stability`).

The circuit a group keeps (saved, compared, resampled) is the top-k by the mean EAP-IG of all
of its pairs, with k the 80 % size its split found; a group where no size on the grid reaches
0.8 keeps no circuit and is left out of the overlap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool
from torch import Tensor

from factcircuits.methods.circuits import faithfulness as F
from factcircuits.methods.circuits.faithfulness import ABLATION
from factcircuits.methods.circuits.forward import CircuitForward
from factcircuits.methods.circuits.graph import Graph
from factcircuits.methods.circuits.per_pair import PairScores
from factcircuits.methods.circuits.scores import IG_STEPS
from factcircuits.methods.circuits.split import PairSplit, split_pairs
from factcircuits.methods.circuits.stability import (
    MIN_PAIRS_FOR_STABILITY,
    RESAMPLES,
    Stability,
    jaccard,
    set_jaccard,
    stability,
    weighted_jaccard,
)
from factcircuits.methods.evaluate import PreparedTask
from factcircuits.methods.uncertainty import (
    N_RESAMPLES,
    Estimate,
    percentile_interval,
    resample_counts,
)
from factcircuits.results.parameter_declarations import SEED, whole

POOLED = "(all relations)"  # the name of the group of every pair
MIN_PAIRS = whole("min_pairs", 5, "patchable pairs a relation needs for a circuit of its own",
                  1)


def estimate(value: float, samples: np.ndarray, n: int) -> Estimate:
    return Estimate(float(value), *percentile_interval(samples), int(n))


@dataclass
class GroupCircuit:
    """One group of pairs (a relation, or every pair) and its circuit."""

    name: str
    rows: np.ndarray  # indices of its pairs among the run's pairs
    split: PairSplit
    faithfulness: pd.DataFrame  # size_percent, n_edges, faithfulness, low, high
    cpr: Estimate
    cmd: Estimate
    at_80: Estimate | None  # faithfulness of the smallest circuit reaching 0.8 (None: none)
    size_for_80: float | None  # percent of edges
    edges_for_80: int | None
    eap: Tensor  # mean scores over the group's pairs [n_edges]
    eap_ig: Tensor
    stability: Stability | None  # None: no circuit below the whole graph reaches 0.8, or
    # too few pairs

    @property
    def mask(self) -> Bool[Tensor, " n_edges"] | None:
        """The group's 80 % circuit: top-k by the mean |EAP-IG| of all its pairs."""
        return None if self.edges_for_80 is None else F.top_k(self.eap_ig, self.edges_for_80)


def group_circuit(lm, pairs: PreparedTask, scores: PairScores, rows, name: str, *,
                  forward: CircuitForward, ablation: str = ABLATION.default,
                  sizes=F.MIB_SIZES, seed: int = SEED.default,
                  stability_resamples: int = RESAMPLES, progress: bool = False) -> GroupCircuit:
    """The faithfulness curve of the group's EAP-IG top-k circuits on its evaluation pairs
    (each fold's circuits chosen by the mean per-pair scores of its discovery pairs), the 80 %
    circuit and its stability."""
    rows = np.asarray(rows)
    graph = forward.graph
    E = graph.n_edges
    split = split_pairs(len(rows), seed)
    ks = [F.n_for(p, E) for p in sizes]
    values, empty, full = [], [], []
    for fold in split.folds:
        chooser = scores.eap_ig[torch.as_tensor(rows[fold.discovery]).long()].mean(0)
        evaluator = F.Evaluator(lm, pairs.subset(rows[fold.evaluation].tolist()), ablation,
                                forward=forward)
        masks = torch.stack([torch.zeros(E), torch.ones(E)]
                            + [F.top_k(chooser, k).float() for k in ks])
        got = evaluator.metrics(masks, progress, desc=f"faithfulness ({name})").numpy()
        empty.append(got[0])
        full.append(got[1])
        values.append(got[2:])
    empty, full, values = np.concatenate(empty), np.concatenate(full), np.concatenate(values, 1)
    n_eval = len(empty)
    faith = np.array([float(F.faithfulness(torch.as_tensor(v), torch.as_tensor(empty),
                                           torch.as_tensor(full))) for v in values])
    counts = resample_counts(n_eval, N_RESAMPLES, seed)
    samples = F.resampled_faithfulness(values, empty, full, counts)  # [resamples, sizes]
    x = np.asarray(ks, float) / E
    table = pd.DataFrame({"size_percent": [float(p) for p in sizes], "n_edges": ks,
                          "faithfulness": faith,
                          "low": [percentile_interval(samples[:, i])[0] for i in range(len(ks))],
                          "high": [percentile_interval(samples[:, i])[1]
                                   for i in range(len(ks))]})
    cpr, cmd = F.areas(x, faith)
    cpr_s, cmd_s = F.areas(x, samples)
    best = F.smallest_reaching(table)
    mean = scores.of(rows)
    at_80 = size = k = stab = None
    if best is not None:
        i = int(best.name)
        at_80 = estimate(faith[i], samples[:, i], n_eval)
        size, k = float(best["size_percent"]), int(best["n_edges"])
        # the whole graph is the only circuit of its size: nothing to resample
        if len(rows) >= MIN_PAIRS_FOR_STABILITY and k < E:
            stab = stability(scores, k, rows, stability_resamples, seed)
    return GroupCircuit(name, rows, split, table, estimate(cpr, cpr_s, n_eval),
                        estimate(cmd, cmd_s, n_eval), at_80, size, k, mean.eap, mean.eap_ig,
                        stab)


# ------------------------------------------------------------------------ what they share
def node_names(graph: Graph, mask: Tensor, table: pd.DataFrame | None = None) -> set[str]:
    """The nodes a set of edges touches (upstream and downstream names)."""
    table = graph.edge_table() if table is None else table
    picked = table[mask.numpy()]
    return set(picked["upstream"]) | set(picked["downstream"])


def weights(circuit: GroupCircuit) -> Tensor:
    """|EAP-IG| on the circuit's edges (0 elsewhere), normalised to sum 1, so that relations
    with larger metric gaps do not outweigh the others."""
    w = circuit.eap_ig.abs() * circuit.mask.float()
    total = float(w.sum())
    return w / total if total > 0 else w


@dataclass
class Core:
    rule: str  # "every": edges in every relation's circuit; "majority": in more than half
    needed: int  # circuits an edge must be in
    n_circuits: int
    mask: Bool[Tensor, " n_edges"]
    in_circuits: Tensor  # [n_edges] how many circuits hold each edge

    @property
    def n_edges(self) -> int:
        return int(self.mask.sum())


def shared_core(masks: dict[str, Tensor]) -> Core:
    """The edges every circuit holds; when no edge is in every one, those in a majority (more
    than half of them; the rule is named in `rule`)."""
    stacked = torch.stack([m.bool() for m in masks.values()])
    n = len(stacked)
    counts = stacked.sum(0)
    every = counts == n
    if bool(every.any()):
        return Core("every", n, n, every, counts)
    needed = n // 2 + 1
    return Core("majority", needed, n, counts >= needed, counts)


def overlap_table(graph: Graph, circuits: list[GroupCircuit]) -> pd.DataFrame:
    """Every ordered pair of relations' 80 % circuits: edge Jaccard, node Jaccard and the
    |score|-weighted overlap (Σ min / Σ max of the normalised weights)."""
    table = graph.edge_table()
    nodes = {c.name: node_names(graph, c.mask, table) for c in circuits}
    w = {c.name: weights(c) for c in circuits}
    rows = []
    for a in circuits:
        for b in circuits:
            rows.append({"relation_a": a.name, "relation_b": b.name,
                         "edge_jaccard": jaccard(a.mask, b.mask),
                         "node_jaccard": set_jaccard(nodes[a.name], nodes[b.name]),
                         "weighted_overlap": weighted_jaccard(w[a.name], w[b.name])})
    return pd.DataFrame(rows)


def core_on_relation(lm, pairs: PreparedTask, circuit: GroupCircuit, core: Core, *,
                     forward: CircuitForward, ablation: str = ABLATION.default,
                     seed: int = SEED.default) -> dict:
    """Faithfulness of the shared core alone and of the relation's own 80 % circuit, on all
    of the relation's pairs (in sample: both were chosen with these pairs among others), with
    bootstrap intervals over those pairs."""
    E = forward.graph.n_edges
    evaluator = F.Evaluator(lm, pairs.subset(circuit.rows.tolist()), ablation, forward=forward)
    masks = torch.stack([torch.zeros(E), torch.ones(E), core.mask.float(),
                         circuit.mask.float()])
    got = evaluator.metrics(masks).numpy()
    counts = resample_counts(len(circuit.rows), N_RESAMPLES, seed)
    samples = F.resampled_faithfulness(got[2:], got[0], got[1], counts)
    n = len(circuit.rows)
    f = [float(F.faithfulness(torch.as_tensor(v), torch.as_tensor(got[0]),
                              torch.as_tensor(got[1]))) for v in got[2:]]
    in_others = core.in_circuits - circuit.mask.long()  # other circuits holding each edge
    return {"core": estimate(f[0], samples[:, 0], n),
            "own_circuit": estimate(f[1], samples[:, 1], n),
            "own_edges": int((circuit.mask & ~core.mask).sum()),
            "unique_edges": int((circuit.mask & (in_others == 0)).sum())}


# ------------------------------------------------------------------------ the whole study
@dataclass
class RelationStudy:
    graph: Graph
    scores: PairScores | None  # None: no pair to score
    relations: pd.DataFrame  # relation, n_pairs, searched (≥ min_pairs and ≥ 2 relations)
    min_pairs: int
    pooled: GroupCircuit | None  # every pair: the run's circuit
    circuits: list[GroupCircuit]  # the searched relations, by name
    overlap: pd.DataFrame | None  # with ≥ 2 relations holding an 80 % circuit
    core: Core | None
    core_table: pd.DataFrame | None  # per relation: the core's and its own circuit's faithfulness

    @property
    def with_circuit(self) -> list[GroupCircuit]:
        return [c for c in self.circuits if c.mask is not None]


def relation_labels(pairs: PreparedTask) -> np.ndarray:
    rows = pairs.rows
    if "relation" not in rows or not len(rows):
        return np.array(["(none)"] * len(pairs.prompts))
    return rows["relation"].fillna("(none)").astype(str).to_numpy()


def relation_study(lm, pairs: PreparedTask, *, min_pairs: int = MIN_PAIRS.default,
                   ig_steps: int = IG_STEPS.default, ablation: str = ABLATION.default,
                   seed: int = SEED.default,
                   stability_resamples: int = RESAMPLES, sizes=F.MIB_SIZES,
                   progress: bool = True) -> RelationStudy:
    """Per-pair scores once; the run's circuit over every pair; with two or more relations, a
    circuit for each relation with at least `min_pairs` pairs, their overlap, the shared core
    and its faithfulness on each relation's pairs."""
    from factcircuits.methods.circuits.per_pair import pair_edge_scores

    cf = CircuitForward(lm)
    labels = relation_labels(pairs)
    names, counts = np.unique(labels, return_counts=True)
    several = len(names) >= 2
    table = pd.DataFrame({"relation": names.astype(str), "n_pairs": counts.astype(int),
                          "searched": several & (counts >= min_pairs)})
    table = table.sort_values(["n_pairs", "relation"], ascending=[False, True],
                              ignore_index=True)
    if not len(labels):
        return RelationStudy(cf.graph, None, table, min_pairs, None, [], None, None, None)
    scores = pair_edge_scores(lm, pairs, ig_steps=ig_steps, progress=progress, forward=cf)
    kw = dict(forward=cf, ablation=ablation, sizes=sizes, seed=seed,
              stability_resamples=stability_resamples, progress=progress)
    pooled = group_circuit(lm, pairs, scores, np.arange(len(labels)), POOLED, **kw)
    circuits = [group_circuit(lm, pairs, scores, np.flatnonzero(labels == r), r, **kw)
                for r in sorted(table.loc[table["searched"], "relation"])]
    study = RelationStudy(cf.graph, scores, table, min_pairs, pooled, circuits, None, None,
                          None)
    found = study.with_circuit
    if len(found) >= 2:
        study.overlap = overlap_table(cf.graph, found)
        study.core = shared_core({c.name: c.mask for c in found})
        rows = []
        for c in found:
            got = core_on_relation(lm, pairs, c, study.core, forward=cf, ablation=ablation,
                                   seed=seed)
            core, own = got["core"], got["own_circuit"]
            rows.append({"relation": c.name, "n_pairs": len(c.rows),
                         "circuit_edges": c.edges_for_80, "own_edges": got["own_edges"],
                         "unique_edges": got["unique_edges"],
                         "core_faithfulness": core.value, "core_low": core.low,
                         "core_high": core.high, "circuit_faithfulness": own.value,
                         "circuit_low": own.low, "circuit_high": own.high})
        study.core_table = pd.DataFrame(rows)
    return study
