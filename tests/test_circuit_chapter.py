"""Notebook 08's entry: what it saves is valid (the circuit as a graph), the cross-check reads
the other chapters of the same run, and the findings sentence says what the headline holds."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
import torch
from circuit_helpers import pairs

from factcircuits.chapters import (
    ablation_knockout,
    activation_patching,
    attribution,
    causal_tracing,
)
from factcircuits.chapters import circuit as C
from factcircuits.methods.circuits import roles as R
from factcircuits.models.tiny import tiny_model
from factcircuits.report.findings import run_findings
from factcircuits.results.run import Run
from factcircuits.results.store import Results
from factcircuits.results.summary import Options

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def found(tmp_path_factory):
    lm = tiny_model(family="gemma2", seed=3)
    run_dir = str(tmp_path_factory.mktemp("run"))  # no earlier chapter: an empty cross-check
    return C.summarise(lm, with_subjects(pairs(lm)), options=Options(C.METHOD, run_dir=run_dir))


def with_subjects(task):
    """The helper's pairs with the rows the heads' roles read (subject, prompt)."""
    rows = pd.DataFrame({"prompt": task.prompts,
                         "subject": [p.split()[-2] for p in task.prompts]})
    return dataclasses.replace(task, rows=rows)


def test_the_chapter_saves_a_valid_graph_and_its_tables(found, tmp_path):
    out = Results(tmp_path, C.METHOD)
    found.save(out)
    assert set(found.tables) == {"circuit", "faithfulness", "top_edges", "cross_check",
                                 "head_roles"}
    assert found.cross_check.empty
    assert set(zip(found.roles["layer"], found.roles["head"])) == set(
        R.circuit_heads(found.circuit.nodes))
    back_nodes, back_edges = out.load("circuit")
    assert len(back_edges) == found.headline.edges_for_80
    assert set(back_edges["source"]) | set(back_edges["target"]) <= set(back_nodes["name"])
    ranked = found.circuit.edges.sort_values("rank")
    assert list(found.top_edges["eap_ig"]) == list(ranked["eap_ig"].head(C.TOP_EDGES))
    assert out.load_headline().cpr == pytest.approx(found.headline.cpr)


def test_cross_check_reads_the_other_chapters_of_the_run(tmp_path):
    Results(tmp_path, attribution.METHOD).save("top_heads", pd.DataFrame(
        {"layer": [2, 0], "head": [1, 3], "dla": [1.0, -0.5], "abs_dla": [1.0, 0.5]}))
    Results(tmp_path, attribution.METHOD).headline(attribution.METHOD.headline(key_mlp_layer=1))
    Results(tmp_path, activation_patching.METHOD).headline(activation_patching.METHOD.headline(
        top_head_layer=0, top_head=3, mlp_out_subject_last_peak_layer=0))
    Results(tmp_path, causal_tracing.METHOD).headline(causal_tracing.METHOD.headline.from_json(
        {"mlp_subject_last_peak_layer": 1, "attn_last_peak_layer": 2}))
    Results(tmp_path, ablation_knockout.METHOD).headline(ablation_knockout.METHOD.headline(
        knockout_subject_peak_centre=3))
    nodes = pd.DataFrame({"name": ["input", "L2H1", "L2KV0", "MLP 1", "logits"]})
    h = C.METHOD.headline(heads_in_circuit_share=0.25, mlps_in_circuit_share=0.5,
                          attention_layers_in_circuit_share=0.75)
    check = C.cross_check(tmp_path, nodes, h)
    found = dict(zip(check["component"] + " / " + check["method"], check["in_circuit"]))
    assert found == {
        "L2H1 / direct logit attribution": True, "L0H3 / direct logit attribution": False,
        "MLP 1 / direct logit attribution": True, "L0H3 / activation patching": False,
        "MLP 0 / activation patching": False, "MLP 1 / causal tracing": True,
        "attention L2 / causal tracing": True, "attention L3 / attention knockout": False}
    rate = dict(zip(check["component"], check["base_rate"]))
    assert rate == {"L2H1": 0.25, "L0H3": 0.25, "MLP 1": 0.5, "MLP 0": 0.5,
                    "attention L2": 0.75, "attention L3": 0.75}
    Results(tmp_path, C.METHOD).save("cross_check", check)  # the declared table
    assert C.cross_check(tmp_path, nodes)["base_rate"].isna().all()  # no headline: unknown


def _findings(tmp_path, h, check=None):
    folder = tmp_path / "run"
    folder.mkdir()
    record = {"run_id": "run", "parameters": {"model": "m", "dataset": "d", "task": "cloze"},
              "model": {"n_layers": 30}, "headline": {C.METHOD.notebook: h.to_json()}}
    (folder / "run.json").write_text(json.dumps(record))
    if check is not None:
        Results(folder, C.METHOD).save("cross_check", check)
    return run_findings(Run.load(folder)).sections["How it reaches the last token"]


def test_the_findings_sentence_states_the_80_percent_circuit(tmp_path):
    h = C.METHOD.headline(cpr=0.9, cmd=0.1, n_edges_total=70651, edges_for_80=1413,
                          size_for_80=2.0, n_pairs=7, faithfulness_for_80=0.83,
                          faithfulness_for_80_ci=[0.7, 0.95], cpr_ci=[0.85, 0.95],
                          faithfulness_for_80_lower_bound_clears=False, split="cross-fitted",
                          fold_pairs=[3, 4], n_evaluation_pairs=7, random_draws=5,
                          random_faithfulness_for_80=0.04,
                          random_faithfulness_for_80_ci=[0.01, 0.08], random_cpr=0.41,
                          random_cpr_ci=[0.35, 0.47], heads_in_circuit_share=0.6,
                          mlps_in_circuit_share=0.9, attention_layers_in_circuit_share=1.0)
    check = pd.DataFrame({"method": ["a", "b"], "component": ["L23H4", "MLP 5"],
                          "why": ["x", "y"], "in_circuit": [True, False],
                          "base_rate": [0.6, 0.9]})
    assert ("**Circuit** (EAP-IG; 7 prompt pairs, cross-fitted: two folds of 3 and 4 pairs, "
            "each fold's circuits evaluated on the other fold, the curves pooled over all "
            "pairs): the smallest circuit on MIB's size grid whose faithfulness is above 0.8, "
            "1,413 edges (2% of the graph's 70,651), carries 0.83 (95% CI 0.70 to 0.95) of the "
            "clean−corrupted metric gap on pairs it was not chosen on when every other edge "
            "is ablated (the interval's lower end does not clear 0.8), against 0.04 (95% CI "
            "0.01 to 0.08) for 5 random circuits of that size; CPR 0.90 (95% CI 0.85 to "
            "0.95), random circuits of the same sizes 0.41 (95% CI 0.35 to 0.47), CMD 0.10; "
            "it contains L23H4 of the components the other methods single out, not MLP 5, "
            "while holding 60% of all heads, 90% of all MLPs, 100% of all layers' "
            "attention.") in _findings(tmp_path, h, check)


def test_the_findings_say_when_no_circuit_reaches_80_percent(tmp_path):
    h = C.METHOD.headline(cpr=0.5, cmd=0.5, n_edges_total=343, n_pairs=40, cpr_ci=[0.4, 0.6],
                          split="held-out", n_discovery_pairs=20, n_evaluation_pairs=20,
                          random_cpr=0.3, random_cpr_ci=[0.2, 0.4])
    assert ("**Circuit** (EAP-IG; edges scored on 20 of the 40 prompt pairs, circuits "
            "evaluated on the other 20): no circuit up to the full graph's 343 edges on the "
            "size grid carries 80% of the metric gap (CPR 0.50 (95% CI 0.40 to 0.60), random "
            "circuits of the same sizes 0.30 (95% CI 0.20 to 0.40)).") in _findings(tmp_path, h)


def test_the_notebook_notes_when_one_step_eap_beats_eap_ig():
    h = C.METHOD.headline(cpr=0.90, eap_cpr=0.96, cpr_minus_eap=-0.06,
                          cpr_minus_eap_ci=[-0.1, 0.02])
    assert C.eap_note(h) == (
        "One-step EAP's top-k circuits score a higher CPR than EAP-IG's here: EAP-IG − EAP = "
        "-0.06 (95% CI -0.10 to 0.02), an interval that does not exclude 0, so the two are not "
        "told apart on these pairs.")
    below = C.METHOD.headline(cpr=0.90, eap_cpr=0.96, cpr_minus_eap=-0.06,
                              cpr_minus_eap_ci=[-0.1, -0.01])
    assert "an interval below 0" in C.eap_note(below)
    assert C.eap_note(C.METHOD.headline(cpr=0.96, eap_cpr=0.90)) == ""
    assert C.eap_note(C.METHOD.headline(cpr=0.96)) == ""


def test_runs_on_one_dataset_overlay_their_faithfulness_curves(tmp_path):
    """The comparison page draws each run's EAP-IG top-k curve against log10(% of edges)."""
    from factcircuits.report.compare import profile_figures
    from factcircuits.report.evidence import load_runs

    sizes = [0.1, 1.0, 10.0, 100.0]
    for i, model in enumerate(("org/small", "org/deep")):
        folder = tmp_path / f"run{i}"
        folder.mkdir()
        h = C.METHOD.headline(cpr=0.9, cmd=0.1, n_edges_total=100, n_pairs=3)
        record = {"run_id": f"run{i}", "parameters": {"model": model, "dataset": "d",
                                                     "task": "cloze"},
                  "model": {"resolved_name": model, "n_layers": 4 + 2 * i},
                  "headline": {C.METHOD.notebook: h.to_json()}}
        (folder / "run.json").write_text(json.dumps(record))
        rows = [{"method": m, "variant": "top-k", "size_percent": s, "n_edges": int(s),
                 "metric": 1.0, "faithfulness": s / 100 + i / 10} for m in ("EAP-IG", "EAP")
                for s in sizes]
        Results(folder, C.METHOD).save("faithfulness", pd.DataFrame(rows))
    figures = [f for f in profile_figures(load_runs(tmp_path))
               if f.layout.title.text.startswith("Circuit faithfulness")]
    assert len(figures) == 1
    lines = {t.name: t for t in figures[0].data}
    assert set(lines) == {"small", "deep"}  # EAP-IG only, one line per run
    assert list(lines["small"].x) == pytest.approx([-1.0, 0.0, 1.0, 2.0])
    assert list(lines["deep"].y) == pytest.approx([0.101, 0.11, 0.2, 1.1])


def test_no_prompt_pair_gives_an_empty_chapter_and_no_finding(tmp_path):
    """A run restricted to one relation may keep no equal-length pair: the notebook then says
    so and saves only the headline (n_pairs 0), and the findings say nothing of a circuit."""
    lm = tiny_model(family="gemma2", seed=3)
    none = pairs(lm).subset(torch.zeros(0, dtype=torch.long))
    found = C.summarise(lm, none, options=Options(C.METHOD, run_dir=str(tmp_path)))
    assert found.circuit is None and found.headline.n_pairs == 0 and found.tables == {}
    assert found.headline.cpr is None and found.headline.n_edges_total is None
    folder = tmp_path / "run"
    Results(folder, C.METHOD).headline(found.headline)
    record = {"run_id": "run", "parameters": {"model": "m", "dataset": "d", "task": "cloze"},
              "model": {"n_layers": 3}, "headline": {C.METHOD.notebook: found.headline.to_json()}}
    (folder / "run.json").write_text(json.dumps(record))
    bullets = run_findings(Run.load(folder)).sections.get("How it reaches the last token", [])
    assert not [b for b in bullets if "Circuit" in b]
