"""circuit_summary's tables, headline and figures on a tiny Gemma 2 (GQA, post-norms), and the
empty/full circuits of the embedded model (slow)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from circuit_helpers import pairs

from factcircuits.methods.circuits import faithfulness as F
from factcircuits.methods.circuits.figures import (
    faithfulness_figure,
    interactive_circuit_figure,
    static_circuit_figure,
)
from factcircuits.methods.circuits.summary import CircuitHeadline, circuit_summary
from factcircuits.methods.uncertainty import resample_counts
from factcircuits.models.tiny import tiny_model
from factcircuits.results.headlines import Headline
from factcircuits.results.registry import Method
from factcircuits.results.store import Results

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def summary():
    lm = tiny_model(family="gemma2", seed=3)
    return circuit_summary(lm, pairs(lm), progress=False)


def test_summary_tables_agree_with_each_other(summary):
    h, edges, table = summary.headline, summary.edges, summary.faithfulness
    assert len(edges) == h.n_edges_total == summary.scores.graph.n_edges
    assert sorted(edges["rank"]) == list(range(1, len(edges) + 1))
    first = edges.loc[edges["rank"] == 1].iloc[0]
    assert abs(first["eap_ig"]) == edges["eap_ig"].abs().max()
    top = table[(table.method == "EAP-IG") & (table.variant == "top-k")]
    assert list(top.size_percent) == list(F.MIB_SIZES)
    assert top.faithfulness.iloc[-1] == pytest.approx(1.0)
    reach = top[top.faithfulness >= 0.8]
    assert h.edges_for_80 == int(reach.n_edges.min())
    assert len(summary.circuit_edges) == h.edges_for_80
    assert set(summary.circuit_edges["rank"]) == set(range(1, h.edges_for_80 + 1))
    assert h.corrupted_metric == pytest.approx(h.empty_metric, abs=1e-5)
    greedy = table[table.variant == "greedy, path-connected"]
    assert (greedy.n_edges.to_numpy() <= top.n_edges.to_numpy()).all()
    # three pairs: cross-fitted, every pair evaluated once
    assert (h.split, h.n_pairs, h.n_evaluation_pairs, sum(h.fold_pairs)) == (
        "cross-fitted", 3, 3, 3)
    random = table[table.method == "random"]
    assert list(random.size_percent) == list(F.MIB_SIZES) and h.random_draws == F.RANDOM_DRAWS
    assert h.random_faithfulness_for_80 == pytest.approx(
        random.loc[random.size_percent == h.size_for_80, "faithfulness"].iloc[0])
    assert h.faithfulness_for_80_lower_bound_clears == (h.faithfulness_for_80_ci[0] >= 0.8)
    heads = {n for n in summary.nodes["node"] if n.startswith("L") and "KV" not in n}
    graph = summary.scores.graph
    assert h.heads_in_circuit_share == len(heads) / (graph.n_layers * graph.n_heads)


def test_every_headline_field_has_a_unit_and_a_meaning():
    for f in dataclasses.fields(CircuitHeadline):
        assert f.metadata["meaning"] and "unit" in f.metadata, f.name
        assert f.default is None, f.name
    assert set(CircuitHeadline.units()["field"]) == {f.name for f in
                                                     dataclasses.fields(CircuitHeadline)}


def test_headline_saves_and_reads_back_through_the_registry(summary, tmp_path):
    h = summary.headline
    assert isinstance(h, Headline)
    method = Method("08_circuit_test", "Circuit", "circuit", CircuitHeadline)
    path = Results(tmp_path, method).headline(h)
    back = Results(tmp_path, method).load_headline()
    assert back == CircuitHeadline.from_json(json.loads(path.read_text())) == h
    top = summary.faithfulness.query("method == 'EAP-IG' and variant == 'top-k'")
    assert back.faithfulness_at_0_1pct == top.faithfulness.iloc[0]
    assert back.faithfulness_at_100pct == pytest.approx(1.0)
    assert back.faithfulness_at == {f"{p:g}": f for p, f in zip(top.size_percent,
                                                                top.faithfulness)}
    for name in ("cpr", "cmd", "faithfulness_for_80", "clean_metric", "corrupted_metric",
                 "random_cpr", "random_faithfulness_for_80", "eap_cpr", "cpr_minus_random"):
        low, high = getattr(back, f"{name}_ci")
        assert low <= high and not math.isnan(low), name


def test_resampled_faithfulness_equals_faithfulness_of_the_drawn_prompts():
    gen = torch.Generator().manual_seed(0)
    values, empty, full = (torch.randn(4, 6, generator=gen), torch.randn(6, generator=gen),
                           torch.randn(6, generator=gen) + 5)
    counts = resample_counts(6, 3, seed=1)
    got = F.resampled_faithfulness(values.numpy(), empty.numpy(), full.numpy(), counts)
    for r, row in enumerate(counts):
        drawn = torch.as_tensor(np.repeat(np.arange(6), row.astype(int)))
        want = F.faithfulness(values[:, drawn], empty[drawn], full[drawn])
        np.testing.assert_allclose(got[r], want.numpy(), rtol=1e-5)
    x = np.array([0.5, 0.1, 1.0, 0.2])
    cpr, cmd = F.areas(x, got)
    for r in range(3):
        assert (cpr[r], cmd[r]) == pytest.approx(F.areas(x, got[r]))


def test_figures_name_the_nodes_and_say_how_many_edges_are_shown(summary):
    fig = static_circuit_figure(summary.nodes, summary.circuit_edges, max_edges=5)
    assert f"the 5 strongest of {len(summary.circuit_edges)}" in fig.layout.title.text
    labels = {a.text for a in fig.layout.annotations}
    assert labels <= set(summary.nodes["node"])
    assert len([t for t in fig.data if t.mode == "lines"]) == 5
    k = len(summary.circuit_edges)
    sizes = [(n, f"{n} edges") for n in sorted({min(3, k), k})]
    live = interactive_circuit_figure(summary.edges, summary.nodes, sizes)
    assert len(live.layout.sliders[0].steps) == len(sizes)
    curve = faithfulness_figure(summary.faithfulness, random_draws=5)
    assert len(curve.data) == 4  # EAP-IG top-k and greedy, EAP top-k, the random baseline
    baseline = curve.data[-1]
    assert baseline.name == "random circuits (mean of 5 draws)" and baseline.line.dash == "dash"


@pytest.mark.slow
def test_embedded_model_empty_and_full_circuits(embedded_lm):
    from factcircuits.data.datasets import load_dataset
    from factcircuits.methods.evaluate import prepare
    from factcircuits.models.tokens import encode

    prepared = prepare(embedded_lm, load_dataset("paris-cloze"))
    clean = encode(embedded_lm.tokenizer, prepared.prompts).lengths
    corrupt = encode(embedded_lm.tokenizer, prepared.corrupted_prompts).lengths
    same = clean[clean == corrupt]
    task = prepared.subset((clean == corrupt) & (clean == torch.mode(same).values))
    assert len(task.prompts) >= 2  # several prompts of one shared length
    evaluator = F.Evaluator(embedded_lm, task)
    E = evaluator.graph.n_edges
    assert E == 70651
    empty, full = evaluator.metrics(torch.stack([torch.zeros(E), torch.ones(E)]))
    with torch.no_grad():
        ids = encode(embedded_lm.tokenizer, task.prompts).tokens
        ids_c = encode(embedded_lm.tokenizer, task.corrupted_prompts).tokens
        index = torch.arange(len(task.prompts))
        want_full = task.metric(embedded_lm.model(ids)[:, -1], index)
        want_empty = task.metric(embedded_lm.model(ids_c)[:, -1], index)
    torch.testing.assert_close(full, want_full, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(empty, want_empty, atol=1e-4, rtol=1e-5)
