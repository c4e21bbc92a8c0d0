"""What notebook 08 narrates: edge scores, the faithfulness curve, the circuit at the 80 % size
and the headline numbers, from one call (`circuit_summary`)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import pandas as pd
import torch

from factcircuits.methods.circuits import faithfulness as F
from factcircuits.methods.circuits.forward import CircuitForward
from factcircuits.methods.circuits.graph import Graph
from factcircuits.methods.circuits.headline import CircuitHeadline, build_headline
from factcircuits.methods.circuits.scores import EdgeScores, edge_scores
from factcircuits.methods.evaluate import PreparedTask


@dataclass
class CircuitSummary:
    edges: pd.DataFrame  # every edge: names, input kind, eap, eap_ig, rank (by |eap_ig|)
    faithfulness: pd.DataFrame  # method, variant, size_percent, n_edges, metric, faithfulness
    nodes: pd.DataFrame  # the circuit at the 80 % size: node, kind, layer
    circuit_edges: pd.DataFrame  # its edges (rows of `edges`)
    headline: CircuitHeadline
    scores: EdgeScores


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


def circuit_summary(lm, pairs: PreparedTask, *, ig_steps: int = 5,
                    ablation: str = "counterfactual", sizes=F.MIB_SIZES, seed: int = 0,
                    progress: bool = True, compare_eap: bool = True,
                    metric=None) -> CircuitSummary:
    """EAP and EAP-IG edge scores over the prompt pairs of `pairs`, the exact faithfulness of
    the top-k (and greedy path-connected) circuits at `sizes` (percent of edges), the smallest
    circuit reaching 80 % faithfulness and the headline, whose intervals resample the prompt
    pairs (seeded by `seed`; the scores and circuits themselves are not random)."""
    cf = CircuitForward(lm)
    graph = cf.graph
    scores = edge_scores(lm, pairs, ig_steps=ig_steps, progress=progress, forward=cf,
                         metric=metric)
    start = time.perf_counter()
    evaluator = F.Evaluator(lm, pairs, ablation, forward=cf, metric=metric)
    table, base = F.curve(evaluator, scores.eap_ig, sizes, "EAP-IG", progress)
    eap_areas = (math.nan, math.nan)
    if compare_eap:
        eap_table, _ = F.curve(evaluator, scores.eap, sizes, "EAP", progress, greedy=False)
        table = pd.concat([table, eap_table], ignore_index=True)
        top = eap_table[eap_table["variant"] == "top-k"]
        eap_areas = F.areas(top["n_edges"] / graph.n_edges, top["faithfulness"])
    seconds_curve = time.perf_counter() - start
    top = table[(table["method"] == "EAP-IG") & (table["variant"] == "top-k")]
    per_prompt = base["circuits"].numpy()[top.index.to_numpy()]
    headline = build_headline(top, per_prompt, base, scores, graph.n_edges, ablation=ablation,
                              eap_areas=eap_areas, seconds_curve=seconds_curve, seed=seed)
    edges = edge_frame(graph, scores)
    size = headline.size_for_80
    keep = F.top_k(scores.eap_ig, F.n_for(size if size is not None else 100, graph.n_edges))
    circuit_edges = edges[keep.numpy()].sort_values("rank")
    return CircuitSummary(edges, table, node_frame(graph, circuit_edges), circuit_edges,
                          headline, scores)
