"""Notebook 08, the circuit: edge attribution patching (EAP, and EAP-IG with integrated
gradients) on the discovery pairs, circuits of the top edges judged by their exact faithfulness
on the evaluation pairs (MIB's curve, CPR and CMD) beside random circuits of the same sizes,
the smallest circuit carrying 80 % of the metric, and which components the other chapters
singled out are inside it, beside the share of all components it holds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from factcircuits.methods.circuits.faithfulness import ABLATION
from factcircuits.methods.circuits.figures import MAX_EDGES_DRAWN, size_steps
from factcircuits.methods.circuits.roles import COLUMNS as ROLE_COLUMNS
from factcircuits.methods.circuits.roles import (
    MIXED_FLOOR,
    READS,
    circuit_heads,
    head_roles,
    role_counts,
)
from factcircuits.methods.circuits.scores import IG_STEPS
from factcircuits.methods.circuits.summary import (
    CircuitHeadline,
    CircuitSummary,
    circuit_summary,
    contains,
)
from factcircuits.methods.evaluate import PreparedTask
from factcircuits.methods.uncertainty import with_interval
from factcircuits.models import LoadedModel
from factcircuits.results.kinds import Graph, Table
from factcircuits.results.registry import (
    CIRCUITS,
    MOVES,
    CircuitResults,
    Finding,
    Method,
    Profile,
)
from factcircuits.results.run import Run
from factcircuits.results.summary import Options, Summary, estimates_of

TOP_EDGES = 30  # rows of the top-edges table
HEADS_SHOWN = 20  # rows of the notebook's table of head roles (the saved table has every head)
HEAD_COLUMNS_SHOWN = ["node", "role", "dla", "dla_low", "dla_high", "subject_share",
                      "relation_share", "attn_subject", "attn_relation", "attn_last"]


@dataclass(kw_only=True)
class CircuitChapterSummary(Summary):
    pairs: PreparedTask  # the equal-length pairs scored
    dropped: pd.DataFrame  # the pairs left out, with the reason
    circuit: CircuitSummary | None  # None: no prompt pair to score (nothing else to show)
    top_edges: pd.DataFrame
    roles: pd.DataFrame | None = None  # every circuit head's role (methods/circuits/roles.py)
    cross_check: pd.DataFrame | None = None

    @property
    def strongest_heads(self) -> pd.DataFrame:
        """The `HEADS_SHOWN` circuit heads with the largest mean DLA, largest first, in the
        columns the notebook shows."""
        return self.roles.sort_values("dla", ascending=False).head(HEADS_SHOWN)[
            HEAD_COLUMNS_SHOWN]

    @property
    def slider_steps(self) -> list[tuple[int, str]]:
        """The drawing's slider sizes: the grid's below the 80 % circuit's size, then it."""
        h = self.headline
        return size_steps(self.circuit.faithfulness, len(self.circuit.circuit_edges),
                          h.faithfulness_for_80 if h.edges_for_80 is not None else None)


def summarise(lm: LoadedModel, prepared: PreparedTask, *, options: Options
              ) -> CircuitChapterSummary:
    """The circuit of the prompts whose counterfactual has their token length, its heads'
    roles, and which components the run's earlier chapters (in `run_dir`) singled out are in
    it."""
    from factcircuits.run.session import patchable

    pairs, dropped = patchable(lm.tokenizer, prepared)
    if len(pairs.prompts) == 0:  # e.g. one relation whose known prompts all change length
        headline = CircuitHeadline(n_pairs=0)
        return CircuitChapterSummary(headline=headline,
                                     estimates=estimates_of(METHOD, headline, {}), pairs=pairs,
                                     dropped=dropped, circuit=None, top_edges=pd.DataFrame())
    circuit = circuit_summary(lm, pairs, ig_steps=options.ig_steps, ablation=options.ablation,
                              seed=options.seed, progress=True)
    cols = ["rank", "upstream", "downstream", "input", "eap_ig", "eap"]
    top = circuit.edges.sort_values("rank").head(TOP_EDGES)[cols].reset_index(drop=True)
    roles = head_roles(lm, pairs, circuit_heads(circuit.nodes), seed=options.seed,
                       batch_size=options.batch_size)
    graph = graph_of(circuit)
    check = cross_check(options.run_dir, graph[0], circuit.headline)
    tables = {"faithfulness": circuit.faithfulness, "circuit": graph, "top_edges": top,
              "cross_check": check, "head_roles": roles}
    return CircuitChapterSummary(headline=circuit.headline, tables=tables,
                                 estimates=estimates_of(METHOD, circuit.headline, tables),
                                 pairs=pairs, dropped=dropped, circuit=circuit, top_edges=top,
                                 roles=roles, cross_check=check)


def graph_of(summary: CircuitSummary) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The circuit at the 80 % size as the run saves it: nodes (name, kind, layer) and edges
    (source, target, input, scores)."""
    nodes = summary.nodes.rename(columns={"node": "name"})
    edges = summary.circuit_edges.rename(columns={"upstream": "source",
                                                  "downstream": "target"})
    return nodes, edges[["source", "target", "input", "eap", "eap_ig", "rank"]]


# ------------------------------------------------------------------ the cross-check
def _in_circuit(nodes: set[str], label: str) -> bool:
    """'L23H4' (that head's node), 'MLP 5', or a layer's attention 'attention L7' (any of its
    heads or key/value heads)."""
    return contains(nodes, label)


def base_rate(h: CircuitHeadline, label: str) -> float | None:
    """The share of all components of `label`'s kind (heads, MLPs, layers' attention) that the
    circuit holds: how often a component picked blindly would be "in the circuit"."""
    if label.startswith("attention L"):
        return h.attention_layers_in_circuit_share
    return h.mlps_in_circuit_share if label.startswith("MLP") else h.heads_in_circuit_share


def singled_out(run: Run) -> list[tuple[str, str, str]]:
    """(method, component, why) of every component a method of the run singles out: its
    Estimates with a component and a reason (`Estimate.why`), each (method, component) once."""
    rows, seen = [], set()
    for e in run.estimates():
        if e.why and e.component and (e.method, e.component) not in seen:
            seen.add((e.method, e.component))
            rows.append((e.method, e.component, e.why))
    return rows


def cross_check(run_dir, nodes: pd.DataFrame, headline: CircuitHeadline | None = None
                ) -> pd.DataFrame:
    """Which components the other methods of this run (in progress in `run_dir`) singled out
    (`singled_out`) are nodes of the circuit: method, component, why it was singled out,
    in_circuit, and base_rate: the share of all components of its kind in the circuit (from
    `headline`; NaN without one)."""
    rows = singled_out(Run.in_progress(run_dir))
    present = set(nodes["name"] if "name" in nodes else nodes["node"])
    rate = lambda c: (base_rate(headline, c) if headline is not None else None)  # noqa: E731
    return pd.DataFrame([{"method": m, "component": c, "why": w,
                          "in_circuit": _in_circuit(present, c),
                          "base_rate": float("nan") if rate(c) is None else rate(c)}
                         for m, c, w in rows],
                        columns=["method", "component", "why", "in_circuit", "base_rate"])


# ------------------------------------------------------------------ findings
def split_phrase(h: CircuitHeadline) -> str:
    """How the pairs chose and judged the circuits, for the findings and notebook 08."""
    if h.split == "held-out":
        return (f"edges scored on {h.n_discovery_pairs} of the {h.n_pairs} prompt pairs, "
                f"circuits evaluated on the other {h.n_evaluation_pairs}")
    if h.split == "cross-fitted":
        a, b = h.fold_pairs
        return (f"{h.n_pairs} prompt pairs, cross-fitted: two folds of {a} and {b} pairs, each "
                "fold's circuits evaluated on the other fold, the curves pooled over all pairs")
    return f"{h.n_pairs} prompt pairs, circuits evaluated on the pairs that chose them"


def _shares(h: CircuitHeadline) -> str:
    parts = [(h.heads_in_circuit_share, "heads"), (h.mlps_in_circuit_share, "MLPs"),
             (h.attention_layers_in_circuit_share, "layers' attention")]
    said = [f"{v:.0%} of all {what}" for v, what in parts if v is not None]
    return ", ".join(said)


def eap_note(h: CircuitHeadline) -> str:
    """A sentence when one-step EAP's circuits score a higher CPR than EAP-IG's, else ''; it
    says whether the paired difference's interval excludes 0."""
    if h.eap_cpr is None or h.cpr is None or not h.eap_cpr > h.cpr:
        return ""
    ci = h.cpr_minus_eap_ci
    resolved = ci is not None and ci[1] < 0
    return (f"One-step EAP's top-k circuits score a higher CPR than EAP-IG's here: EAP-IG − "
            f"EAP = {with_interval(h.cpr_minus_eap, ci)}, "
            + ("an interval below 0, so on these pairs the integrated gradients picked worse "
               "circuits." if resolved else
               "an interval that does not exclude 0, so the two are not told apart on these "
               "pairs."))


def circuit_findings(run: Run) -> list[Finding]:
    h: CircuitHeadline = run.headline(METHOD)
    if h.n_edges_total is None:
        return []
    random_cpr = (f", random circuits of the same sizes "
                  f"{with_interval(h.random_cpr, h.random_cpr_ci)}"
                  if h.random_cpr is not None else "")
    if h.edges_for_80 is None:
        text = (f"**Circuit** (EAP-IG; {split_phrase(h)}): no circuit up to the full "
                f"graph's {h.n_edges_total:,} edges on the size grid carries 80% of the "
                f"metric gap (CPR {with_interval(h.cpr, h.cpr_ci)}{random_cpr}).")
        return [Finding(MOVES, text, 30)]
    carried = with_interval(h.faithfulness_for_80, h.faithfulness_for_80_ci)
    where = ("on pairs it was not chosen on" if h.split in ("held-out", "cross-fitted")
             else "on the pairs it was chosen on")
    text = (f"**Circuit** (EAP-IG; {split_phrase(h)}): the smallest circuit on MIB's size "
            f"grid whose faithfulness is above 0.8, {h.edges_for_80:,} edges "
            f"({h.size_for_80:g}% of the graph's {h.n_edges_total:,}), carries {carried} of "
            f"the clean−corrupted metric gap {where} when every other edge is ablated")
    if h.faithfulness_for_80_lower_bound_clears is not None:
        text += (" (the interval's lower end clears 0.8)"
                 if h.faithfulness_for_80_lower_bound_clears else
                 " (the interval's lower end does not clear 0.8)")
    if h.random_faithfulness_for_80 is not None:
        chance = with_interval(h.random_faithfulness_for_80, h.random_faithfulness_for_80_ci)
        text += f", against {chance} for {h.random_draws} random circuits of that size"
    text += (f"; CPR {with_interval(h.cpr, h.cpr_ci)}{random_cpr}, CMD "
             f"{with_interval(h.cmd, h.cmd_ci)}")
    check = run.result(METHOD, "cross_check")
    if check is not None and len(check):
        inside = sorted(set(check.loc[check["in_circuit"].astype(bool), "component"]))
        outside = sorted(set(check.loc[~check["in_circuit"].astype(bool), "component"]))
        text += (f"; it contains {', '.join(inside) or 'none'} of the components the other "
                 "methods single out" + (f", not {', '.join(outside)}" if outside else ""))
        if _shares(h):
            text += f", while holding {_shares(h)}"
    text += "."
    return [Finding(MOVES, text, 30)] + role_findings(run)


# ------------------------------------------------------------------ head roles (issue 33.4)
_ROLE_NAMES = {"mover": ("mover", "movers"), "relation": ("relation head", "relation heads"),
               "mixed": ("mixed head", "mixed heads"), "other": ("other", "other")}


def roles_phrase(roles: pd.DataFrame, listed: int = 8) -> str:
    """'2 movers (L20H1, L23H4), 1 relation head (L15H2), 0 mixed heads and 40 other'."""
    parts = []
    for role, names in role_counts(roles).items():
        one, many = _ROLE_NAMES[role]
        said = f"{len(names)} {one if len(names) == 1 else many}"
        if names and role != "other":
            more = f" and {len(names) - listed} more" if len(names) > listed else ""
            said += f" ({', '.join(names[:listed])}{more})"
        parts.append(said)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def role_findings(run: Run) -> list[Finding]:
    """One sentence: the roles of the circuit's heads, and the strongest mover's (else the
    strongest head's) direct effect with its subject share, each with its interval."""
    roles = run.result(METHOD, "head_roles")
    if roles is None or not len(roles):
        return []
    movers = roles[roles["role"] == "mover"]
    top = (movers if len(movers) else roles).sort_values("dla", ascending=False).iloc[0]
    which = "the strongest mover" if len(movers) else "the head with the largest direct effect"
    text = (f"**Head roles** (the circuit's {len(roles)} heads; each head's direct effect on "
            "the answer split by the source position it reads): "
            f"{roles_phrase(roles)}. {which.capitalize()}, {top['node']}, writes a DLA of "
            f"{with_interval(top['dla'], [top['dla_low'], top['dla_high']])}, "
            f"{with_interval(top['subject_share'], [top['subject_share_low'], top['subject_share_high']], '.0%')} "  # noqa: E501
            "of it through the subject tokens. A mover writes the answer (DLA interval above 0) "
            f"with a subject share whose interval lies above {READS:.0%}, a relation head "
            f"likewise through the relation tokens, a mixed head with each carrying at least "
            f"{MIXED_FLOOR:.0%}.")
    return [Finding(CIRCUITS, text, 40)]


def size_axis(table: pd.DataFrame, n_layers: int) -> pd.Series:
    """Circuit size on a log scale (the MIB sizes span 0.1–100 % of edges)."""
    return np.log10(table["size_percent"].astype(float))


def top_k_curve(t: pd.DataFrame) -> pd.DataFrame:
    return t[(t["method"] == "EAP-IG") & (t["variant"] == "top-k")].assign(
        layer=lambda d: d["size_percent"])


METHOD = Method(
    notebook="08_circuit", title="The circuit", short="circuit", headline=CircuitHeadline,
    results={
        "faithfulness": Table({"method": "str", "variant": "str", "size_percent": "float",
                               "n_edges": "int", "metric": "float", "faithfulness": "float"},
                              "exact faithfulness on the evaluation pairs of each circuit "
                              "size, method and variant (method random: the mean of random "
                              "circuits of that size)"),
        "circuit": Graph({"kind": "str", "layer": "int"},
                         {"input": "str", "eap": "float", "eap_ig": "float", "rank": "int"},
                         "the smallest circuit reaching 80% faithfulness (top-k by the "
                         "discovery pairs' EAP-IG scores; by every pair's when cross-fitted)"),
        "top_edges": Table({"rank": "int", "upstream": "str", "downstream": "str",
                            "input": "str", "eap_ig": "float", "eap": "float"},
                           "the edges with the largest |EAP-IG|"),
        "head_roles": Table(ROLE_COLUMNS,
                            "every circuit head's direct effect (DLA) split by the source "
                            "position it reads, its last-token attention by token class and "
                            "its role (methods/circuits/roles.py)"),
        "cross_check": Table({"method": "str", "component": "str", "why": "str",
                              "in_circuit": "bool", "base_rate": "float"},
                             "components other chapters single out, in the circuit or not, "
                             "beside the share of all components of that kind in it"),
    },
    findings=circuit_findings,
    key_numbers=("cpr", "edges_for_80"),
    number_labels={"cpr": "CPR (area under faithfulness)", "edges_for_80": "edges for 80%"},
    profiles=(Profile("faithfulness", top_k_curve, "faithfulness", None,
                      "Circuit faithfulness (EAP-IG top-k circuits)<br><sup>exact metric of "
                      "the circuit with every other edge ablated, 0 = empty, 1 = full model"
                      "</sup>", "faithfulness", "circuit size, log10(% of edges)", size_axis),),
    parameters=(IG_STEPS, ABLATION, MAX_EDGES_DRAWN),
    circuit=CircuitResults(graph="circuit", roles="head_roles"),
)
