"""circuit_summary's tables, headline and figures on a tiny Gemma 2 (GQA, post-norms), and the
empty/full circuits of the embedded model (slow)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from circuit_helpers import pairs
from factcircuits.methods.circuits import faithfulness as F
from factcircuits.methods.circuits.figures import circuit_figure, faithfulness_figure
from factcircuits.methods.circuits.summary import CircuitHeadline, circuit_summary
from factcircuits.models.tiny import tiny_model

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


def test_every_headline_field_has_a_unit_and_a_meaning():
    for f in dataclasses.fields(CircuitHeadline):
        assert f.metadata["meaning"] and "unit" in f.metadata, f.name
    assert set(CircuitHeadline.units()["field"]) == {f.name for f in
                                                     dataclasses.fields(CircuitHeadline)}


def test_figures_name_the_nodes_and_say_how_many_edges_are_shown(summary):
    fig = circuit_figure(summary.nodes, summary.circuit_edges, max_edges=5)
    assert f"5 strongest of {len(summary.circuit_edges)}" in fig.layout.title.text
    labels = set(fig.data[-1].text)
    assert labels <= set(summary.nodes["node"]) and len(fig.data) == 6
    curve = faithfulness_figure(summary.faithfulness)
    assert len(curve.data) == 3  # EAP-IG top-k and greedy, EAP top-k


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
