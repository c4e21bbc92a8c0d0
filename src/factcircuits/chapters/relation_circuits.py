"""Notebook 09, circuits by relation: per-pair EAP-IG scores computed once, the run's circuit
over every pair and a circuit per relation with enough pairs (exact faithfulness out of sample,
the 80 % size, CPR and CMD with intervals), how stable each circuit is under bootstrap
resamples of its pairs (Méloux et al. 2025), and what the relations' circuits share: edge and
node Jaccard, a |score|-weighted overlap, and the shared core's faithfulness on each relation's
pairs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from factcircuits.methods.circuits.faithfulness import ABLATION
from factcircuits.methods.circuits.figures import MAX_EDGES_DRAWN, size_steps
from factcircuits.methods.circuits.relations import (
    MIN_PAIRS,
    POOLED,
    GroupCircuit,
    RelationStudy,
    relation_study,
)
from factcircuits.methods.circuits.roles import circuit_heads, head_roles
from factcircuits.methods.circuits.scores import IG_STEPS
from factcircuits.methods.circuits.stability import STABILITY_RESAMPLES, STABLE_MEDIAN
from factcircuits.methods.circuits.summary import edge_frame, node_frame
from factcircuits.methods.evaluate import PreparedTask
from factcircuits.methods.uncertainty import with_interval
from factcircuits.models import LoadedModel
from factcircuits.results.headlines import Headline, interval, number
from factcircuits.results.kinds import Graph, Table
from factcircuits.results.registry import CIRCUITS, Finding, Method
from factcircuits.results.run import Run
from factcircuits.results.summary import Options, Summary, estimates_of
from factcircuits.results.wording import interval_cells

FAITH = "fraction (0 = empty circuit, 1 = full model)"
AREA = "faithfulness × fraction of edges"
JACCARD = "Jaccard index (0 … 1)"


@dataclass
class RelationCircuitsHeadline(Headline):
    """Notebook 09's headline: the run's circuit over every pair (its 80 % size, faithfulness
    and stability), how many relations got a circuit of their own and how stable they are, and
    the shared core."""

    n_pairs: int | None = number("equal-length clean/corrupted pairs", "prompt pairs")
    n_relations: int | None = number("relations among the pairs", "relations")
    min_pairs: int | None = number("pairs a relation needs for a circuit of its own", "pairs")
    n_relations_searched: int | None = number("relations with at least min_pairs pairs (none "
                                              "when the pairs hold a single relation)",
                                              "relations")
    n_relations_with_circuit: int | None = number("of those, relations where some circuit on "
                                                  "the size grid reaches 0.8 faithfulness",
                                                  "relations")
    n_edges_total: int | None = number("edges in the model's graph", "edges")
    ig_steps: int | None = number("interpolation steps of EAP-IG", "steps")
    ablation: str | None = number("what an ablated edge's reader receives")
    stability_resamples: int | None = number("bootstrap resamples of the pairs behind each "
                                             "circuit's stability", "resamples")
    split: str | None = number("how the run's pairs chose and judged circuits (held-out, "
                               "cross-fitted or in-sample; `split.split_pairs`)")
    edges_for_80: int | None = number("edges in the smallest top-k circuit of every pair's "
                                      "EAP-IG scores reaching 0.8 faithfulness out of sample",
                                      "edges")
    size_for_80: float | None = number("that circuit's size", "percent of edges")
    faithfulness_for_80: float | None = number("its faithfulness on the evaluation pairs",
                                               FAITH)
    faithfulness_for_80_ci: list[float] | None = interval("faithfulness_for_80")
    cpr: float | None = number("area under the top-k faithfulness curve (MIB's CPR)", AREA)
    cpr_ci: list[float] | None = interval("cpr")
    cmd: float | None = number("area between that curve and 1 (MIB's CMD)", AREA)
    cmd_ci: list[float] | None = interval("cmd")
    stability_median: float | None = number("median over resamples of the Jaccard index "
                                            "between the run's 80 % circuit and that of a "
                                            "bootstrap resample of its pairs", JACCARD)
    stability_range: list[float] | None = number("the central 95 % of those Jaccard indices",
                                                 JACCARD)
    stability_chance: float | None = number("the Jaccard two random circuits of that size "
                                            "would share (about q / (2 − q), q the share of "
                                            "edges kept)", JACCARD)
    stable: bool | None = number(f"stability_median ≥ {STABLE_MEDIAN} (Méloux et al. 2025's "
                                 "bar)")
    n_relations_stable: int | None = number("relations whose 80 % circuit is stable",
                                            "relations")
    core_rule: str | None = number("the shared core: edges in every relation's circuit "
                                   "(every), or, when none is, in a majority of them")
    core_needed: int | None = number("circuits an edge must be in to belong to the core",
                                     "circuits")
    core_edges: int | None = number("edges in the shared core", "edges")
    n_relations_core_carries: int | None = number("relations where the core alone has a "
                                                  "faithfulness interval whose lower end is "
                                                  "≥ 0.8", "relations")
    mean_edge_jaccard: float | None = number("mean edge Jaccard over pairs of different "
                                             "relations' 80 % circuits (point values)", JACCARD)
    edge_jaccard_range: list[float] | None = number("lowest and highest of those", JACCARD)
    mean_weighted_overlap: float | None = number("mean |score|-weighted overlap (Σ min / Σ "
                                                 "max of each circuit's normalised |EAP-IG|) "
                                                 "over those pairs", JACCARD)


NEARLY_ALWAYS = 0.95  # inclusion frequency of an edge called nearly always kept
HALF = 0.5
_STEP_TOLERANCE = 1e-6  # far below 1 / resamples for any resample count in use


@dataclass(frozen=True)
class InclusionCounts:
    """How often a set of edges survives resampling: of `n_edges`, how many are in at least
    95 % of the resamples' circuits, how many in fewer than half (never included) and in fewer
    than half but some, and the median inclusion frequency."""

    n_edges: int
    n_in_95_percent: int
    n_in_under_half: int
    n_in_under_half_but_some: int
    median: float

    @classmethod
    def of(cls, inclusion) -> InclusionCounts:
        """From the edges' inclusion frequencies (a Series, an array or a tensor)."""
        v = pd.Series(np.asarray(inclusion, dtype=np.float64))
        # Frequencies are multiples of 1 / resamples; older runs stored them in float32, where
        # 19 / 20 reads 0.94999999: compare with a tolerance far below one resample's step.
        nearly_always, half = NEARLY_ALWAYS - _STEP_TOLERANCE, HALF - _STEP_TOLERANCE
        return cls(len(v), int((v >= nearly_always).sum()), int((v < half).sum()),
                   int(((v > 0) & (v < half)).sum()), float(v.median()))


@dataclass(kw_only=True)
class RelationCircuitsSummary(Summary):
    pairs: PreparedTask  # the equal-length pairs scored
    dropped: pd.DataFrame  # the pairs left out, with the reason
    study: RelationStudy
    relations: pd.DataFrame  # one row per group (the run's circuit first)
    faithfulness: pd.DataFrame  # the curves of every group
    stability: pd.DataFrame  # relation, resample, jaccard
    circuits: tuple[pd.DataFrame, pd.DataFrame]  # circuits_graph: every circuit at 80 %
    drawing: CircuitDrawing | None  # the run's circuit as drawn (None: no circuit)
    roles: pd.DataFrame | None  # the drawn circuit's heads' roles

    @property
    def relations_with_too_few_pairs(self) -> pd.DataFrame:
        """Rows of `study.relations` with fewer than `min_pairs` pairs (no circuit of their
        own)."""
        counts = self.study.relations
        return counts[~counts["searched"]]

    @property
    def pooled_faithfulness(self) -> pd.DataFrame:
        """The faithfulness curves of the run's circuit (every pair)."""
        return self.faithfulness[self.faithfulness["relation"] == self.study.pooled.name]

    @property
    def relation_faithfulness(self) -> pd.DataFrame:
        """The faithfulness curves of the circuits by relation."""
        return self.faithfulness[self.faithfulness["relation"] != POOLED]

    @property
    def pooled_inclusion(self) -> InclusionCounts | None:
        """How often each edge of the graph is in the run's circuit's resamples (None without
        stability)."""
        pooled = self.study.pooled
        if pooled is None or pooled.stability is None:
            return None
        return InclusionCounts.of(pooled.stability.inclusion.numpy())

    @property
    def why_pooled_not_resampled(self) -> str | None:
        """Why the run's circuit has no stability: "no circuit" (none reaches 80 %), "whole
        graph" (the 80 % circuit is every edge, the only circuit of its size) or "few pairs"
        (fewer than `MIN_PAIRS_FOR_STABILITY`); None when it has one, or there is no run's
        circuit."""
        pooled = self.study.pooled
        if pooled is None or pooled.stability is not None:
            return None
        if pooled.at_80 is None:
            return "no circuit"
        if pooled.edges_for_80 == self.headline.n_edges_total:
            return "whole graph"
        return "few pairs"

    def drawn_inclusion(self, drawn: pd.DataFrame) -> InclusionCounts:
        """How often the drawn edges (rows of `drawing.edges`) are in the resamples'
        circuits (the drawing must carry inclusion frequencies)."""
        return InclusionCounts.of(self.drawing.inclusion.loc[drawn.index])

    @property
    def resampled_circuits(self) -> pd.DataFrame:
        """Rows of `relations` whose circuit's stability was computed."""
        return self.relations.dropna(subset=["stability_median"])

    @property
    def n_stable_circuits(self) -> int:
        """Of `resampled_circuits`, how many are stable (median Jaccard ≥ 0.8)."""
        return int(self.resampled_circuits["stable"].astype(bool).sum())

    @property
    def inclusion_by_circuit(self) -> list[tuple[str, InclusionCounts]]:
        """Per resampled circuit (in `circuits` order), how often its edges are in its
        resamples' circuits."""
        edges = self.circuits[1].dropna(subset=["inclusion"])
        return [(name, InclusionCounts.of(v))
                for name, v in edges.groupby("relation", sort=False)["inclusion"]]


def _group_row(c: GroupCircuit) -> dict:
    s = c.stability
    low, high = s.interval if s is not None else (np.nan, np.nan)
    at = c.at_80
    return {"relation": c.name, "n_pairs": len(c.rows), "split": c.split.kind,
            "edges_for_80": c.edges_for_80, "size_for_80": c.size_for_80,
            "faithfulness_for_80": np.nan if at is None else at.value,
            "faithfulness_low": np.nan if at is None else at.low,
            "faithfulness_high": np.nan if at is None else at.high,
            "cpr": c.cpr.value, "cpr_low": c.cpr.low, "cpr_high": c.cpr.high,
            "cmd": c.cmd.value, "cmd_low": c.cmd.low, "cmd_high": c.cmd.high,
            "stability_median": np.nan if s is None else s.median,
            "stability_low": low, "stability_high": high,
            "stability_chance": np.nan if s is None else s.chance,
            "stable": None if s is None else s.stable}


def circuits_graph(study: RelationStudy) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every group's 80 % circuit in one graph: nodes (name, relation, kind, layer) and edges
    (source, target, relation, input, eap, eap_ig, inclusion: the share of stability resamples
    whose circuit holds the edge)."""
    table = study.graph.edge_table()
    nodes, edges = [], []
    for c in [study.pooled, *study.circuits]:
        if c is None or c.mask is None:
            continue
        keep = c.mask.numpy()
        part = table[keep].assign(
            relation=c.name, eap=c.eap.numpy()[keep], eap_ig=c.eap_ig.numpy()[keep],
            inclusion=(c.stability.inclusion.numpy()[keep] if c.stability is not None
                       else np.nan))
        edges.append(part)
        nodes.append(node_frame(study.graph, part).assign(relation=c.name))
    if not edges:
        return (pd.DataFrame(columns=["name", "relation", "kind", "layer"]),
                pd.DataFrame(columns=["source", "target", "relation", "input", "eap",
                                      "eap_ig", "inclusion"]))
    nodes = pd.concat(nodes, ignore_index=True).rename(columns={"node": "name"})
    edges = pd.concat(edges, ignore_index=True).rename(columns={"upstream": "source",
                                                                "downstream": "target"})
    return (nodes[["name", "relation", "kind", "layer"]],
            edges[["source", "target", "relation", "input", "eap", "eap_ig", "inclusion"]])


@dataclass
class CircuitDrawing:
    """One group's circuit as chapter 08's figures draw it (`methods.circuits.figures`)."""

    edges: pd.DataFrame  # every edge (index: edge), ranked by the group's mean |EAP-IG|
    circuit_edges: pd.DataFrame  # its 80 % circuit: rows of `edges`
    nodes: pd.DataFrame  # the circuit's nodes: node, kind, layer
    inclusion: pd.Series | None  # per edge (indexed like `edges`): share of the stability
    # resamples' circuits holding it; None when stability was not computed
    steps: list[tuple[int, str]]  # the slider's sizes: the grid's below the 80 % size, then it


def circuit_drawing(study: RelationStudy, group: GroupCircuit) -> CircuitDrawing | None:
    """The group's 80 % circuit (top-k by the mean EAP-IG of all its pairs, the circuit that
    is resampled and saved) with each edge's inclusion frequency; None without a circuit."""
    if group.mask is None:
        return None
    edges = edge_frame(study.graph, group)  # the group's mean scores: its .eap and .eap_ig
    circuit = edges[group.mask.numpy()].sort_values("rank")
    inclusion = (pd.Series(group.stability.inclusion.numpy(), index=edges.index)
                 if group.stability is not None else None)
    # the group's curve is EAP-IG's top-k, as the steps read chapter 08's
    curve = group.faithfulness.assign(method="EAP-IG", variant="top-k")
    at_80 = group.at_80.value if group.at_80 is not None else None
    return CircuitDrawing(edges, circuit, node_frame(study.graph, circuit), inclusion,
                          size_steps(curve, len(circuit), at_80))


def relations_view(relations: pd.DataFrame) -> pd.DataFrame:
    """The per-relation table as a page shows it: each number beside its 95 % interval, in
    columns that fit an A4 page (the saved `relations` table keeps every column)."""
    return pd.DataFrame({
        "relation": relations["relation"], "pairs": relations["n_pairs"],
        "chosen / judged": relations["split"], "edges (80 %)": relations["edges_for_80"],
        "faithfulness": interval_cells(relations, "faithfulness_for_80", "faithfulness_low",
                                       "faithfulness_high", ".2f"),
        "CPR": interval_cells(relations, "cpr", "cpr_low", "cpr_high", ".2f"),
        "stability (median Jaccard)": interval_cells(relations, "stability_median",
                                                     "stability_low", "stability_high", ".2f"),
        "stable": ["yes" if s is True else "no" if s is False else "—"
                   for s in relations["stable"]]})


def core_view(core: pd.DataFrame) -> pd.DataFrame:
    """The shared core's table as a page shows it (numbers beside their intervals)."""
    return pd.DataFrame({
        "relation": core["relation"], "pairs": core["n_pairs"],
        "circuit edges": core["circuit_edges"], "own edges": core["own_edges"],
        "in no other": core["unique_edges"],
        "core alone": interval_cells(core, "core_faithfulness", "core_low", "core_high", ".2f"),
        "whole circuit": interval_cells(core, "circuit_faithfulness", "circuit_low",
                                        "circuit_high", ".2f")})


def core_edges(study: RelationStudy) -> pd.DataFrame:
    """The shared core's edges and how many relations' circuits hold each."""
    cols = ["source", "target", "input", "n_circuits"]
    if study.core is None:
        return pd.DataFrame(columns=cols)
    table = study.graph.edge_table()
    keep = study.core.mask.numpy()
    return table[keep].assign(n_circuits=study.core.in_circuits.numpy()[keep]).rename(
        columns={"upstream": "source", "downstream": "target"})[cols].reset_index(drop=True)


def _headline(study: RelationStudy, ig_steps: int, ablation: str,
              resamples: int) -> RelationCircuitsHeadline:
    h = RelationCircuitsHeadline(
        n_pairs=int(study.relations["n_pairs"].sum()), n_relations=len(study.relations),
        min_pairs=study.min_pairs, n_relations_searched=len(study.circuits),
        n_relations_with_circuit=len(study.with_circuit), n_edges_total=study.graph.n_edges,
        ig_steps=ig_steps, ablation=ablation, stability_resamples=resamples)
    p = study.pooled
    if p is None:
        return h
    h.split, h.cpr, h.cpr_ci = p.split.kind, p.cpr.value, p.cpr.interval()
    h.cmd, h.cmd_ci = p.cmd.value, p.cmd.interval()
    if p.at_80 is not None:
        h.edges_for_80, h.size_for_80 = p.edges_for_80, p.size_for_80
        h.faithfulness_for_80, h.faithfulness_for_80_ci = p.at_80.value, p.at_80.interval()
    if p.stability is not None:
        h.stability_median, h.stable = p.stability.median, p.stability.stable
        h.stability_range = list(p.stability.interval)
        h.stability_chance = p.stability.chance
    stab = [c.stability for c in study.circuits if c.stability is not None]
    h.n_relations_stable = sum(s.stable for s in stab) if study.circuits else None
    if study.core is not None:
        h.core_rule, h.core_needed = study.core.rule, study.core.needed
        h.core_edges = study.core.n_edges
        h.n_relations_core_carries = int((study.core_table["core_low"] >= 0.8).sum())
        off = study.overlap[study.overlap.relation_a < study.overlap.relation_b]
        h.mean_edge_jaccard = float(off["edge_jaccard"].mean())
        h.edge_jaccard_range = [float(off["edge_jaccard"].min()),
                                float(off["edge_jaccard"].max())]
        h.mean_weighted_overlap = float(off["weighted_overlap"].mean())
    return h


def summarise(lm: LoadedModel, prepared: PreparedTask, *, options: Options
              ) -> RelationCircuitsSummary:
    """The run's circuit and each relation's (with at least `min_pairs` equal-length pairs),
    their stability over resampled pairs, and what the relations' circuits share."""
    from factcircuits.run.session import patchable

    pairs, dropped = patchable(lm.tokenizer, prepared)
    ig_steps, ablation, seed = options.ig_steps, options.ablation, options.seed
    resamples = options.stability_resamples
    study = relation_study(lm, pairs, min_pairs=options.min_pairs, ig_steps=ig_steps,
                           ablation=ablation, seed=seed, stability_resamples=resamples,
                           progress=True)
    groups = [c for c in [study.pooled, *study.circuits] if c is not None]
    relations = pd.DataFrame([_group_row(c) for c in groups], columns=list(RELATIONS_COLUMNS))
    curves = pd.concat([c.faithfulness.assign(relation=c.name) for c in groups],
                       ignore_index=True) if groups else pd.DataFrame(
        columns=list(FAITHFULNESS_COLUMNS))
    stability = pd.DataFrame([{"relation": c.name, "resample": i, "jaccard": float(j)}
                              for c in groups if c.stability is not None
                              for i, j in enumerate(c.stability.jaccards)],
                             columns=["relation", "resample", "jaccard"])
    drawing = circuit_drawing(study, study.pooled) if study.pooled is not None else None
    roles = (None if drawing is None else
             head_roles(lm, pairs, circuit_heads(drawing.nodes), seed=seed,
                        batch_size=options.batch_size))
    headline = _headline(study, ig_steps, ablation, resamples)
    faithfulness = curves[list(FAITHFULNESS_COLUMNS)]
    graph = circuits_graph(study)
    tables = {"relations": relations, "pairs_per_relation": study.relations,
              "faithfulness": faithfulness, "stability": stability, "circuits": graph}
    if study.overlap is not None:
        tables.update(overlap=study.overlap, core=study.core_table,
                      core_edges=core_edges(study))
    return RelationCircuitsSummary(
        headline=headline, tables=tables, estimates=estimates_of(METHOD, headline, tables),
        pairs=pairs, dropped=dropped, study=study, relations=relations,
        faithfulness=faithfulness, stability=stability, circuits=graph, drawing=drawing,
        roles=roles)


# ------------------------------------------------------------------ findings
def stability_phrase(median, low, high, n_pairs, resamples, chance=None) -> str:
    verdict = ("stable by Méloux et al.'s bar (median ≥ 0.8)" if median >= STABLE_MEDIAN
               else "not stable at this sample size (median below 0.8)")
    by_chance = (f"; two random circuits of that size share about {chance:.2f}"
                 if chance is not None else "")
    return (f"median Jaccard {median:.2f} with the full sample's circuit over {resamples} "
            f"bootstrap resamples of its {n_pairs} pairs (95% of resamples "
            f"{low:.2f}–{high:.2f}{by_chance}): {verdict}")


def stability_sentence(rel: pd.DataFrame, resamples: int | None) -> str:
    """' Stability over 100 resamples of each relation's pairs (median Jaccard with its
    circuit, 95% of resamples): a 0.46 (0.36–1.00), b 0.85 (0.70–0.95); 1 of 2 are stable
    (median ≥ 0.8), the others not stable at this sample size.' ('' when none was
    resampled)."""
    rows = rel.dropna(subset=["stability_median"])
    if not len(rows):
        return ""
    each = ", ".join(f"{r.relation} {r.stability_median:.2f} ({r.stability_low:.2f}–"
                     f"{r.stability_high:.2f})" for r in rows.itertuples())
    n, stable = len(rows), int((rows["stable"].astype(str) == "True").sum())
    verdict = ("it is stable (median ≥ 0.8)" if n == stable == 1 else
               "it is not stable at this sample size" if n == 1 else
               f"all {n} are stable (median ≥ 0.8)" if stable == n else
               f"none of the {n} is stable: not stable at this sample size" if not stable else
               f"{stable} of {n} are stable (median ≥ 0.8), the others not stable at this "
               "sample size")
    return (f" Stability over {resamples} resamples of each relation's pairs (median Jaccard "
            f"with its circuit, 95% of resamples): {each}; {verdict}.")


def relation_findings(run: Run) -> list[Finding]:
    h: RelationCircuitsHeadline = run.headline(METHOD)
    if h.split is None:
        return []
    out = []
    if h.edges_for_80 is not None and h.stability_median is not None:
        lo, hi = h.stability_range
        said = stability_phrase(h.stability_median, lo, hi, h.n_pairs, h.stability_resamples,
                                h.stability_chance)
        out.append(Finding(CIRCUITS, (
            f"**Stability of the run's circuit** (top-k by every pair's EAP-IG, "
            f"{h.edges_for_80:,} edges, the 80% size): {said}."), 10))
    table = run.result(METHOD, "relations")
    if table is None or not h.n_relations_searched:
        if h.n_relations is not None and h.n_relations <= 1:
            out.append(Finding(CIRCUITS, "**Circuits by relation**: the pairs hold one "
                               "relation, so there is no per-relation circuit or overlap.",
                               20))
        elif h.n_relations is not None:
            out.append(Finding(CIRCUITS, (
                f"**Circuits by relation**: none of the {h.n_relations} relations has "
                f"{h.min_pairs} patchable pairs, so no relation got a circuit of its own."), 20))
        return out
    rel = table[table["relation"] != POOLED]
    parts = []
    for r in rel.itertuples():
        if pd.isna(r.edges_for_80):
            parts.append(f"{r.relation} ({r.n_pairs} pairs) none reaches 0.8")
        else:
            parts.append(f"{r.relation} ({r.n_pairs} pairs) {int(r.edges_for_80):,} edges, "
                         + with_interval(r.faithfulness_for_80,
                                         [r.faithfulness_low, r.faithfulness_high]))
    text = (f"**Circuits by relation** ({h.n_relations_searched} of {h.n_relations} relations "
            f"have ≥ {h.min_pairs} pairs; faithfulness of the smallest circuit reaching 0.8, on "
            f"pairs that did not choose it): {'; '.join(parts)}.")
    found = rel.dropna(subset=["edges_for_80", "faithfulness_low"])
    if len(found):  # reaching 0.8 is the point estimate's; say where the interval clears it
        clears = int((found["faithfulness_low"] >= 0.8).sum())
        text += (f" The interval's lower end clears 0.8 for {clears} of these {len(found)}."
                 if len(found) > 1 else " Its interval's lower end "
                 + ("clears 0.8." if clears else "does not clear 0.8."))
    text += stability_sentence(rel, h.stability_resamples)
    out.append(Finding(CIRCUITS, text, 20))
    if h.core_rule is not None:
        lo, hi = h.edge_jaccard_range
        where = ("in every relation's circuit" if h.core_rule == "every" else
                 f"in at least {h.core_needed} of the {h.n_relations_with_circuit} relations' "
                 "circuits (no edge is in all of them)")
        core = run.result(METHOD, "core")
        said = ""
        if core is not None and len(core) and h.core_edges:
            ranged = core.sort_values("core_faithfulness")
            said = ("; alone, on each relation's pairs (in sample), it carries "
                    + ", ".join(f"{r.relation} "
                                + with_interval(r.core_faithfulness, [r.core_low, r.core_high])
                                for r in ranged.itertuples())
                    + f": its interval's lower end clears 0.8 for "
                    f"{h.n_relations_core_carries} of {len(core)} relations")
        out.append(Finding(CIRCUITS, (
            f"**What relations share**: their 80% circuits overlap by edge Jaccard "
            f"{lo:.2f}–{hi:.2f} (mean {h.mean_edge_jaccard:.2f}; |score|-weighted "
            f"{h.mean_weighted_overlap:.2f}; point values of circuits that are themselves "
            f"resampled above); {h.core_edges:,} edges are {where}{said}."), 30))
    return out


RELATIONS_COLUMNS = {
    "relation": "str", "n_pairs": "int", "split": "str", "edges_for_80": "int",
    "size_for_80": "float", "faithfulness_for_80": "float", "faithfulness_low": "float",
    "faithfulness_high": "float", "cpr": "float", "cpr_low": "float", "cpr_high": "float",
    "cmd": "float", "cmd_low": "float", "cmd_high": "float", "stability_median": "float",
    "stability_low": "float", "stability_high": "float", "stability_chance": "float",
    "stable": "bool"}
FAITHFULNESS_COLUMNS = {"relation": "str", "size_percent": "float", "n_edges": "int",
                        "faithfulness": "float", "low": "float", "high": "float"}

METHOD = Method(
    notebook="09_relation_circuits", title="Circuits by relation", short="relation circuits",
    headline=RelationCircuitsHeadline,
    results={
        "relations": Table(RELATIONS_COLUMNS, f"the run's circuit ({POOLED}) and each "
                           "relation's: 80 % size, faithfulness, CPR, CMD with intervals, "
                           "stability (median Jaccard and its 95 % range)"),
        "pairs_per_relation": Table({"relation": "str", "n_pairs": "int", "searched": "bool"},
                                    "patchable pairs per relation; searched: a circuit of its "
                                    "own was looked for"),
        "faithfulness": Table(FAITHFULNESS_COLUMNS, "each group's EAP-IG top-k faithfulness "
                              "curve on its evaluation pairs, with intervals"),
        "stability": Table({"relation": "str", "resample": "int", "jaccard": "float"},
                           "Jaccard of each bootstrap resample's circuit with the full "
                           "sample's"),
        "circuits": Graph({"relation": "str", "kind": "str", "layer": "int"},
                          {"relation": "str", "input": "str", "eap": "float", "eap_ig": "float",
                           "inclusion": "float"},
                          "each group's 80 % circuit (top-k by the mean EAP-IG of its pairs); "
                          "inclusion: the share of stability resamples holding the edge"),
        "overlap": Table({"relation_a": "str", "relation_b": "str", "edge_jaccard": "float",
                          "node_jaccard": "float", "weighted_overlap": "float"},
                         "every pair of relations' 80 % circuits"),
        "core": Table({"relation": "str", "n_pairs": "int", "circuit_edges": "int",
                       "own_edges": "int", "unique_edges": "int",
                       "core_faithfulness": "float", "core_low": "float", "core_high": "float",
                       "circuit_faithfulness": "float", "circuit_low": "float",
                       "circuit_high": "float"},
                      "the shared core's and each relation's own circuit's faithfulness on "
                      "its pairs (in sample), and the relation's edges outside the core "
                      "(own) and in no other relation's circuit (unique)"),
        "core_edges": Table({"source": "str", "target": "str", "input": "str",
                             "n_circuits": "int"}, "the shared core's edges"),
    },
    findings=relation_findings,
    key_numbers=("stability_median", "edges_for_80"),
    number_labels={"stability_median": "median Jaccard under resampling",
                   "edges_for_80": "edges for 80% (all pairs)"},
    parameters=(IG_STEPS, ABLATION, MIN_PAIRS, STABILITY_RESAMPLES, MAX_EDGES_DRAWN),
)
