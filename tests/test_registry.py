"""The method registry: declarations are enforced where results are saved and read, and a
method that exists only in the tests (fixtures/prompt_length.py, its notebook in
fixtures/plugin_notebooks/) reaches the write-up through its registry entry alone."""

from __future__ import annotations

import ast
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from factcircuits.chapters import causal_tracing, task_check
from factcircuits.report import render
from factcircuits.results.kinds import Arrays, Graph, ResultError, Table
from factcircuits.results.registry import Method, builtin_methods, methods
from factcircuits.results.run import Run
from factcircuits.results.store import Results
from factcircuits.run import pipeline
from factcircuits.run.folders import default_notebooks_dir

FIXTURES = Path(__file__).parent / "fixtures"


def test_every_builtin_method_has_its_notebook_and_every_notebook_its_method():
    builtin = {m.notebook for m in builtin_methods()}
    notebooks = {p.stem for p in default_notebooks_dir().glob("[0-9][0-9]_*.py")}
    assert builtin == notebooks


def test_a_renamed_field_fails_where_the_headline_is_built():
    with pytest.raises(TypeError, match="mlp_subject_last_peak_aiee"):
        causal_tracing.METHOD.headline(mlp_subject_last_peak_aiee=0.1)
    every = {f.name for f in dataclasses.fields(task_check.TaskCheckHeadline)}
    assert {"accuracy", "accuracy_ci", "n_kept"} <= every
    assert all(meaning for _, _, meaning in task_check.TaskCheckHeadline.describe())


def test_an_entry_naming_an_unknown_field_is_refused():
    with pytest.raises(ValueError, match="no_such_field"):
        Method("09_x", "X", "x", task_check.TaskCheckHeadline, key_numbers=("no_such_field",))


def test_saved_results_are_validated_against_the_entry(tmp_path):
    out = Results(tmp_path, task_check.METHOD)
    good = pd.DataFrame({"relation": ["a"], "rows": [3], "accuracy": [0.5],
                         "accuracy_low": [0.1], "accuracy_high": [0.9], "known": [2],
                         "analysed": [2], "p_vs_pooled": [float("nan")],
                         "p_vs_pooled_holm": [float("nan")], "differs_from_pooled": [False]})
    out.save("by_relation", good)
    assert out.load("by_relation").equals(good)
    with pytest.raises(ResultError, match="undeclared column.*extra"):
        out.save("by_relation", good.assign(extra=1))
    with pytest.raises(ResultError, match="column rows holds .*, declared int"):
        out.save("by_relation", good.assign(rows=["three"]))
    with pytest.raises(ResultError, match="'nope' is not declared"):
        out.save("nope", good)
    with pytest.raises(ResultError, match="expected TaskCheckHeadline"):
        out.headline(causal_tracing.METHOD.headline())


def test_graphs_and_arrays_have_a_home(tmp_path):
    graph = Graph({"layer": "int"}, {"score": "float"})
    nodes = pd.DataFrame({"name": ["input", "L0H1", "logits"], "layer": [-1, 0, 1]})
    edges = pd.DataFrame({"source": ["input", "L0H1"], "target": ["L0H1", "logits"],
                          "score": [0.5, -0.25]})
    graph.save(tmp_path, "circuit", (nodes, edges), "test")
    back = graph.load(tmp_path, "circuit")
    assert back[0].equals(nodes) and back[1].equals(edges)
    with pytest.raises(ResultError, match="MLP 9"):
        graph.save(tmp_path, "bad", (nodes, edges.assign(target=["L0H1", "MLP 9"])), "test")
    arrays = Arrays({"scores": ("layer", "head")})
    arrays.save(tmp_path, "grid", {"scores": [[1.0, 2.0], [3.0, 4.0]]}, "test")
    assert arrays.load(tmp_path, "grid")["scores"].tolist() == [[1.0, 2.0], [3.0, 4.0]]
    with pytest.raises(ResultError, match="declared numeric"):
        arrays.save(tmp_path, "grid", {"scores": [1.0, 2.0]}, "test")
    assert Table({"x": "int"}).load(tmp_path, "absent") is None


def test_a_method_registered_only_in_the_tests_reaches_the_write_up(tmp_path, monkeypatch):
    """Its module, notebook and registry entry are all there is: the run saves its table and
    headline, the preview shows its chapter, its table and its findings sentence."""
    import prompt_length  # registers the method in this process

    monkeypatch.setenv("FACTCIRCUITS_METHODS", "toy_methods,prompt_length")  # the kernels'
    monkeypatch.setattr(shutil, "which", lambda name: None)  # the Quarto-free preview
    runs = tmp_path / "runs"
    dataset = str(FIXTURES / "datasets" / "fixture.csv")
    result = pipeline.run(None, dataset, {}, notebooks_dir=FIXTURES / "plugin_notebooks",
                          runs_root=runs, progress=False)
    record = json.loads((result.run_dir / "run.json").read_text())
    mean = record["headline"]["01_prompt_length"]["mean_words"]
    table = pd.read_csv(result.run_dir / "results" / "01_prompt_length" / "lengths.csv")
    assert mean == pytest.approx(table["words"].mean())
    page, *_ = render.render(to="html", root=tmp_path, runs_root=runs)
    text = page.read_text()
    assert '<h2 id="Prompt-length">Prompt length' in text  # the chapter
    assert table["prompt"][0] in text  # its table
    assert f"<strong>Prompt length</strong>: the {len(table)} prompts have {mean:.2f} words" \
        in text  # its findings sentence
    assert prompt_length.METHOD in methods()


def test_a_plugin_estimate_of_a_shared_quantity_joins_the_checks_and_the_cross_check(
        tmp_path, monkeypatch):
    """The test-only method declares an Estimate of the MLP peak at the last subject token
    (fixtures/prompt_length.py): with no other file changed, the rendered How sure list
    compares it with causal tracing's and activation patching's, and the circuit's
    cross-check asks whether its MLP is in the circuit."""
    import prompt_length
    from test_findings import make_run

    from factcircuits.chapters import circuit
    from factcircuits.report.findings import run_findings

    monkeypatch.setattr(shutil, "which", lambda name: None)  # the Quarto-free preview
    runs = tmp_path / "runs"
    folder = make_run(runs)  # tracing peaks at layer 3 (2–4), patching at 4 (3–5)
    headline = prompt_length.PromptLengthHeadline(n_prompts=16, mean_words=6.5,
                                                  shortest_words=9)  # layers 8–10
    record = json.loads((folder / "run.json").read_text())
    record["headline"][prompt_length.METHOD.notebook] = headline.to_json()
    (folder / "run.json").write_text(json.dumps(record))
    ev = Run.load(folder)
    mlp = [c for c in run_findings(ev).checks if c.question == "MLP peak at the last subject "
           "token"]
    # three methods, three pairs (tracing, as ROME measured it, first): the toy's range 8–10
    # overlaps neither tracing's 2–4 nor patching's 3–5, which overlap each other
    assert [c.verdict for c in mlp] == ["differs", "agrees", "differs"]
    assert mlp[0].detail == ("causal tracing layer 3 (95% of resamples in layers 2–4), "
                             "prompt length layer 9 (95% of resamples in layers 8–10)")
    page, *_ = render.render(to="html", root=tmp_path, runs_root=runs)
    text = page.read_text()
    assert "prompt length layer 9 (95% of resamples in layers 8–10)" in text
    assert "3 of 5 checks agree" in text  # and the head and the subject's, as before
    # the circuit's cross-check of a run in progress (headline files, no run.json yet)
    Results(tmp_path / "staging", prompt_length.METHOD).headline(headline)
    nodes = pd.DataFrame({"name": ["input", "MLP 9", "logits"]})
    check = circuit.cross_check(tmp_path / "staging", nodes)
    assert check[["method", "component", "why", "in_circuit"]].to_dict("records") == [
        {"method": "prompt length", "component": "MLP 9",
         "why": "the toy's MLP (shortest prompt)", "in_circuit": True}]
    assert np.isnan(check["base_rate"][0])  # no circuit headline: no base rate


def test_report_reads_no_chapter_and_no_headline_is_generated():
    """report/ knows methods only through the registry and their Estimates; every headline
    field is written out by hand (findable by search)."""
    src = Path(__file__).parents[1] / "src" / "factcircuits"
    for path in sorted((src / "report").glob("*.py")):
        tree = ast.parse(path.read_text())
        imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import)
                     for a in n.names]
        assert not [m for m in imported if m.startswith("factcircuits.chapters")], path.name
    generated = [p.name for p in src.rglob("*.py") if "make_dataclass" in p.read_text()]
    assert generated == []
