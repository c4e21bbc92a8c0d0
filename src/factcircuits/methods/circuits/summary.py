"""What notebook 08 narrates: edge scores on the discovery pairs, the faithfulness curve on the
evaluation pairs beside random circuits of the same sizes, the circuit at the 80 % size, the
share of all components it holds, and the headline numbers, from one call (`circuit_summary`)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from factcircuits.methods.circuits import faithfulness as F
from factcircuits.methods.circuits.faithfulness import ABLATION
from factcircuits.methods.circuits.forward import CircuitForward
from factcircuits.methods.circuits.graph import Graph
from factcircuits.methods.circuits.headline import CircuitHeadline, build_headline
from factcircuits.methods.circuits.scores import IG_STEPS, EdgeScores, edge_scores
from factcircuits.methods.circuits.split import MIN_PAIRS_PER_HALF, PairSplit, split_pairs
from factcircuits.methods.evaluate import PreparedTask
from factcircuits.results.parameter_declarations import SEED


@dataclass
class CircuitSummary:
    edges: pd.DataFrame  # every edge: names, input kind, eap, eap_ig, rank (by |eap_ig|)
    faithfulness: pd.DataFrame  # method, variant, size_percent, n_edges, metric, faithfulness
    nodes: pd.DataFrame  # the circuit at the 80 % size: node, kind, layer
    circuit_edges: pd.DataFrame  # its edges (rows of `edges`)
    headline: CircuitHeadline
    scores: EdgeScores  # of the discovery pairs (held-out), or of every pair (cross-fitted)
    split: PairSplit  # which pairs chose the circuits and which judged them


def edge_frame(graph: Graph, scores: EdgeScores) -> pd.DataFrame:
    table = graph.edge_table()
    table["eap"] = scores.eap.numpy()
    table["eap_ig"] = scores.eap_ig.numpy()
    order = torch.sort(scores.eap_ig.abs(), descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(1, len(order) + 1)
    table["rank"] = rank.numpy()
    table.index.name = "edge"
    return table


def node_frame(graph: Graph, edges: pd.DataFrame) -> pd.DataFrame:
    """The nodes an edge set touches: node, kind (input, head, kv (a key/value head feeding
    several query heads), mlp, logits), layer (input −1, logits n_layers)."""
    rows = {}
    for name, layer in zip(edges["upstream"], edges["upstream_layer"]):
        rows[name] = layer
    for name, layer in zip(edges["downstream"], edges["downstream_layer"]):
        rows[name] = layer

    def kind(name):
        if name in ("input", "logits"):
            return name
        return "mlp" if name.startswith("MLP") else "kv" if "KV" in name else "head"

    return pd.DataFrame([{"node": n, "kind": kind(n), "layer": int(layer)}
                         for n, layer in rows.items()]).sort_values(["layer", "node"],
                                                                     ignore_index=True)


def contains(nodes: set[str], label: str) -> bool:
    """Whether a circuit with node names `nodes` holds component `label`: 'L23H4' (that node),
    'MLP 5', or a layer's attention 'attention L7' (any head or key/value head of layer 7)."""
    if label.startswith("attention L"):
        layer = label.split("L", 1)[1]
        return any(n.startswith(f"L{layer}H") or n.startswith(f"L{layer}KV") for n in nodes)
    return label in nodes


def component_shares(graph: Graph, nodes: set[str]) -> dict[str, float]:
    """The share of all query heads, all MLPs and all layers' attention that the circuit holds
    (by `contains`, the cross-check's rule): the base rate a component found "in the circuit"
    is read against."""
    L, H = graph.n_layers, graph.n_heads
    heads = [f"L{layer}H{h}" for layer in range(L) for h in range(H)]
    share = lambda labels: sum(contains(nodes, x) for x in labels) / len(labels)  # noqa: E731
    return {"head": share(heads), "mlp": share([f"MLP {layer}" for layer in range(L)]),
            "attention": share([f"attention L{layer}" for layer in range(L)])}


def _metric_on(metric, rows):
    """A metric of prompt indices into `pairs`, for a subset holding the pairs `rows`."""
    if metric is None:
        return None
    rows = torch.as_tensor(rows)
    return lambda logits, index: metric(logits, rows[torch.as_tensor(index)])


def _pooled_scores(split: PairSplit, fold_scores: list[EdgeScores]) -> EdgeScores:
    """The edge scores of every pair: a fold's scores are means over its pairs, so the folds'
    scores weighted by their sizes are the scores of all pairs (cross-fitting); otherwise the
    one discovery set's scores."""
    if split.kind != "cross-fitted":
        return fold_scores[0]
    n = split.n_pairs
    weights = [len(f.discovery) / n for f in split.folds]
    clean, corrupted = torch.zeros(n), torch.zeros(n)
    for fold, s in zip(split.folds, fold_scores):
        clean[torch.as_tensor(fold.discovery)] = s.clean
        corrupted[torch.as_tensor(fold.discovery)] = s.corrupted
    first = fold_scores[0]
    return EdgeScores(first.graph, sum(w * s.eap for w, s in zip(weights, fold_scores)),
                      sum(w * s.eap_ig for w, s in zip(weights, fold_scores)), clean,
                      corrupted, first.ig_steps, sum(s.seconds for s in fold_scores))


def _pool(rows_per_fold: list[list[tuple]], values_per_fold: list[np.ndarray],
          empty: np.ndarray, full: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    """One faithfulness table over every evaluation pair from the folds' tables (the same rows,
    (method, variant, size_percent, n_edges), in each fold): each row's metric per pair is
    that of the circuit its own fold chose; n_edges is the folds' mean (greedy circuits differ
    in size after pruning)."""
    values = np.concatenate(values_per_fold, axis=1)
    rows = []
    for i, labels in enumerate(zip(*rows_per_fold)):
        method, variant, size, _ = labels[0]
        n_edges = int(round(np.mean([r[3] for r in labels])))
        rows.append({"method": method, "variant": variant, "size_percent": size,
                     "n_edges": n_edges, "metric": float(values[i].mean()),
                     "faithfulness": float(F.faithfulness(torch.as_tensor(values[i]),
                                                          torch.as_tensor(empty),
                                                          torch.as_tensor(full)))})
    return pd.DataFrame(rows), values


def circuit_summary(lm, pairs: PreparedTask, *, ig_steps: int = IG_STEPS.default,
                    ablation: str = ABLATION.default, sizes=F.MIB_SIZES, seed: int = SEED.default,
                    progress: bool = True, compare_eap: bool = True, metric=None,
                    random_draws: int = F.RANDOM_DRAWS,
                    min_per_half: int = MIN_PAIRS_PER_HALF) -> CircuitSummary:
    """EAP and EAP-IG edge scores on the discovery pairs, the exact faithfulness on the
    evaluation pairs (`split.split_pairs`, seeded by `seed`) of the top-k (and greedy
    path-connected) circuits at `sizes` (percent of edges) and of `random_draws` uniformly
    random circuits per size, the smallest EAP-IG circuit reaching 80 % faithfulness and the
    headline, whose intervals resample the evaluation pairs (seeded by `seed`; the circuits
    are held fixed). The circuit shown (`circuit_edges`) is the top-k circuit of that size by
    the discovery scores (held-out) or by every pair's scores (cross-fitted)."""
    cf = CircuitForward(lm)
    graph, E = cf.graph, cf.graph.n_edges
    split = split_pairs(len(pairs.prompts), seed, min_per_half)
    random_sizes = [p for p in sizes if F.n_for(p, E) < E]
    random_masks = [F.random_circuits(E, F.n_for(p, E), random_draws, seed + i)
                    for i, p in enumerate(random_sizes)] if random_draws else []
    fold_scores, rows, values, random_values = [], [], [], []
    base = {"empty": [], "full": [], "corrupted": []}
    seconds_curve = seconds_random = 0.0
    for fold in split.folds:
        scores = edge_scores(lm, pairs.subset(fold.discovery), ig_steps=ig_steps,
                             progress=progress, forward=cf,
                             metric=_metric_on(metric, fold.discovery))
        fold_scores.append(scores)
        start = time.perf_counter()
        evaluator = F.Evaluator(lm, pairs.subset(fold.evaluation), ablation, forward=cf,
                                metric=_metric_on(metric, fold.evaluation))
        chosen = [("EAP-IG", v, p, m) for v, p, m in F.circuit_masks(graph, scores.eap_ig,
                                                                      sizes)]
        if compare_eap:
            chosen += [("EAP", "top-k", p, F.top_k(scores.eap, F.n_for(p, E))) for p in sizes]
        masks = torch.stack([torch.zeros(E), torch.ones(E)] + [m.float() for *_, m in chosen])
        got = evaluator.metrics(masks, progress, desc="faithfulness (EAP-IG, EAP)").numpy()
        seconds_curve += time.perf_counter() - start
        base["empty"].append(got[0])
        base["full"].append(got[1])
        base["corrupted"].append(evaluator.corrupted.numpy())
        rows.append([(method, v, p, int(m.sum())) for method, v, p, m in chosen])
        values.append(got[2:])
        start = time.perf_counter()
        per_size = np.zeros((0, got.shape[1]))
        if random_masks:
            drawn = evaluator.metrics(torch.cat(random_masks).float(), progress,
                                      desc="faithfulness (random circuits)").numpy()
            # mean over the draws of each size (faithfulness is linear in the metric)
            per_size = drawn.reshape(len(random_sizes), random_draws, -1).mean(1)
        # the circuit of every edge is the full model: no draw to make
        full_rows = np.repeat(got[1][None], len(sizes) - len(random_sizes), axis=0)
        random_values.append(np.concatenate([per_size, full_rows]))
        seconds_random += time.perf_counter() - start
    base = {k: np.concatenate(v) for k, v in base.items()}
    table, per_prompt = _pool(rows, values, base["empty"], base["full"])
    random = None
    if random_draws:
        in_order = random_sizes + [p for p in sizes if p not in random_sizes]
        labels = [("random", "uniform", p, F.n_for(p, E)) for p in in_order]
        random_table, random_per_prompt = _pool([labels] * len(split.folds), random_values,
                                                base["empty"], base["full"])
        order = np.argsort(in_order, kind="stable")
        random_table = random_table.iloc[order].reset_index(drop=True)
        table = pd.concat([table, random_table], ignore_index=True)
        random = (random_table, random_per_prompt[order], random_draws)
    scores = _pooled_scores(split, fold_scores)
    edges = edge_frame(graph, scores)
    pick = lambda method: (table["method"] == method) & (table["variant"] == "top-k")  # noqa
    top = table[pick("EAP-IG")]
    size = F.smallest_reaching(top)
    k = F.n_for(float(size["size_percent"]) if size is not None else 100, E)
    circuit_edges = edges[F.top_k(scores.eap_ig, k).numpy()].sort_values("rank")
    nodes = node_frame(graph, circuit_edges)
    eap = table[pick("EAP")]
    headline = build_headline(
        top, per_prompt[top.index.to_numpy()], base, scores, E, ablation=ablation,
        eap=(eap, per_prompt[eap.index.to_numpy()]) if compare_eap else None,
        random=random,
        split=split, shares=component_shares(graph, set(nodes["node"])),
        seconds_curve=seconds_curve, seconds_random=seconds_random, seed=seed)
    return CircuitSummary(edges, table, nodes, circuit_edges, headline, scores, split)
