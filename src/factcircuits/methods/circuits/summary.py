"""What notebook 08 narrates: edge scores, the faithfulness curve, the circuit at the 80 % size
and the headline numbers, from one call (`circuit_summary`)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields

import pandas as pd
import torch

from factcircuits.methods.circuits import faithfulness as F
from factcircuits.methods.circuits.forward import CircuitForward
from factcircuits.methods.circuits.graph import Graph
from factcircuits.methods.circuits.scores import EdgeScores, edge_scores
from factcircuits.methods.evaluate import PreparedTask


def _f(unit: str, meaning: str, default=None):
    return field(default=default, metadata={"unit": unit, "meaning": meaning})


@dataclass
class CircuitHeadline:
    cpr: float = _f("faithfulness × fraction of edges", "area under the faithfulness curve of "
                    "the EAP-IG top-k circuits (MIB's CPR; trapezoids over x = fraction of "
                    "edges, 0.001 … 1); 1 would be full faithfulness at every size")
    cmd: float = _f("|1 − faithfulness| × fraction of edges", "area between that curve and 1 "
                    "(MIB's CMD); 0 = every circuit behaves like the full model")
    n_edges_total: int = _f("edges", "edges in the model's graph (GQA key/value inputs once)")
    edges_for_80: int | None = _f("edges", "edges in the smallest EAP-IG top-k circuit of the "
                                  "grid with faithfulness ≥ 0.8; None when none reaches it")
    size_for_80: float | None = _f("percent of edges", "that circuit's size on the grid; "
                                   "None when none reaches 0.8")
    faithfulness_at: dict = _f("fraction (0 = empty circuit, 1 = full model)", "faithfulness "
                               "of the EAP-IG top-k circuit at each size, keyed by percent "
                               "of edges")
    clean_metric: float = _f("task metric (logit difference or log-odds)", "mean over pairs "
                             "of the metric on the clean prompts (the full circuit)")
    corrupted_metric: float = _f("task metric", "mean over pairs of the metric on the "
                                 "corrupted prompts")
    empty_metric: float = _f("task metric", "mean metric of the empty circuit (= corrupted "
                             "under counterfactual ablation)")
    n_pairs: int = _f("prompt pairs", "equal-length clean/corrupted pairs scored and evaluated")
    ig_steps: int = _f("steps", "interpolation steps of EAP-IG")
    ablation: str = _f("", "what an ablated edge's reader receives: the corrupted run's write "
                       "(counterfactual) or the writer's mean write (mean)")
    eap_cpr: float = _f("faithfulness × fraction of edges", "CPR of the one-step EAP top-k "
                        "circuits, for comparison", math.nan)
    eap_cmd: float = _f("|1 − faithfulness| × fraction of edges", "CMD of the EAP top-k "
                        "circuits", math.nan)
    seconds_scores: float = _f("seconds", "wall time of the EAP and EAP-IG scores", math.nan)
    seconds_curve: float = _f("seconds", "wall time of every circuit's exact evaluation",
                              math.nan)

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def units(cls) -> pd.DataFrame:
        """field, unit, meaning: the headline's legend."""
        return pd.DataFrame([{"field": f.name, **f.metadata} for f in fields(cls)])


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
    circuit reaching 80 % faithfulness and the headline. Nothing here is random: `seed` is
    accepted for the common signature of the methods and changes nothing."""
    del seed
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
    cpr, cmd = F.areas(top["n_edges"] / graph.n_edges, top["faithfulness"])
    best = F.smallest_reaching(top)
    edges = edge_frame(graph, scores)
    size = None if best is None else float(best["size_percent"])
    keep = F.top_k(scores.eap_ig, F.n_for(size if size is not None else 100, graph.n_edges))
    circuit_edges = edges[keep.numpy()].sort_values("rank")
    headline = CircuitHeadline(
        cpr=cpr, cmd=cmd, n_edges_total=graph.n_edges,
        edges_for_80=None if best is None else int(best["n_edges"]), size_for_80=size,
        faithfulness_at={f"{p:g}": float(f) for p, f in zip(top["size_percent"],
                                                            top["faithfulness"])},
        clean_metric=float(scores.clean.mean()), corrupted_metric=float(scores.corrupted.mean()),
        empty_metric=float(base["empty"].mean()), n_pairs=len(pairs.prompts),
        ig_steps=ig_steps, ablation=ablation, eap_cpr=eap_areas[0], eap_cmd=eap_areas[1],
        seconds_scores=scores.seconds, seconds_curve=seconds_curve)
    return CircuitSummary(edges, table, node_frame(graph, circuit_edges), circuit_edges,
                          headline, scores)
