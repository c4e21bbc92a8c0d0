"""The circuit forward and exact faithfulness against the model's own forward and independent
hand computations (hooks on the model's own modules), on tiny Llama/Qwen 2/Gemma 1/2/3 (all with
grouped-query attention; Gemma 2/3 with post-sublayer norms and sliding windows shorter than
the prompts)."""

from __future__ import annotations

import pytest
import torch
from circuit_helpers import CLEAN, CORRUPT, hand_patched_logits, pairs, tokens, writer_outputs

from factcircuits.methods.circuits import faithfulness as F
from factcircuits.methods.circuits.forward import CircuitForward
from factcircuits.methods.circuits.graph import Graph
from factcircuits.methods.circuits.scores import edge_scores
from factcircuits.methods.circuits.single_edges import edge_effects
from factcircuits.models.tiny import FAMILIES, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")
POST_NORM_FAMILIES = ("llama", "gemma2", "gemma3")


@pytest.fixture(scope="module")
def models():
    return {f: tiny_model(family=f, seed=3) for f in FAMILIES}


def edge_index(graph: Graph, upstream: str, downstream: str, kind: str) -> int:
    table = graph.edge_table()
    hit = table.index[(table.upstream == upstream) & (table.downstream == downstream)
                      & (table.input == kind)]
    assert len(hit) == 1
    return int(hit[0])


@pytest.mark.parametrize("family", FAMILIES)
def test_every_edge_in_is_the_models_own_forward(models, family):
    lm = models[family]
    cf = CircuitForward(lm)
    toks = tokens(lm, CLEAN)
    with torch.no_grad():
        own = lm.model(toks)[:, -1]
        embeds = cf.embed(toks)
        run = cf.run(embeds, keep_writes=True)
        stacked = cf.run_circuits(embeds, run.writes, torch.ones(1, cf.graph.n_edges))[0]
    torch.testing.assert_close(run.logits, own, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stacked, own, atol=1e-5, rtol=1e-5)
    # the writes add up to the residual the final norm reads
    assert toks.shape[1] > 4  # longer than the sliding window: its mask really applies


@pytest.mark.parametrize("family", POST_NORM_FAMILIES)
@pytest.mark.parametrize("ablation", F.ABLATIONS)
def test_empty_and_full_circuits_give_the_corrupted_and_clean_metric(models, family, ablation):
    lm = models[family]
    task = pairs(lm)
    evaluator = F.Evaluator(lm, task, ablation)
    E = evaluator.graph.n_edges
    empty, full = evaluator.metrics(torch.stack([torch.zeros(E), torch.ones(E)]))
    index = torch.arange(len(CLEAN))
    with torch.no_grad():
        clean = task.metric(lm.model(tokens(lm, CLEAN))[:, -1], index)
        corrupt = task.metric(lm.model(tokens(lm, CORRUPT))[:, -1], index)
    torch.testing.assert_close(full, clean, atol=1e-5, rtol=1e-5)
    if ablation == "counterfactual":
        torch.testing.assert_close(empty, corrupt, atol=1e-5, rtol=1e-5)
    else:  # every reader reads the mean writes: not the corrupted run
        assert (empty - corrupt).abs().max() > 1e-3


def _readers(graph: Graph):
    """(reader for the hand patch, downstream name, kind, upstream writer key, its name)."""
    L = graph.n_layers - 1
    kv = graph.kv_name
    return [(("q", L, 1), f"L{L}H1", "q", ("head", 0, 2), "L0H2"),
            (("k", L, 1), kv(L, 1), "k", ("mlp", 0), "MLP 0"),
            (("v", 1, 0), kv(1, 0), "v", ("head", 0, 3), "L0H3"),
            (("mlp", 1), "MLP 1", "mlp", ("head", 1, 0), "L1H0"),
            (("logits",), "logits", "logits", ("mlp", L), f"MLP {L}"),
            (("q", 1, 3), "L1H3", "q", ("input",), "input")]


@pytest.mark.parametrize("family", POST_NORM_FAMILIES)
def test_ablating_one_edge_equals_patching_it_by_hand(models, family):
    lm = models[family]
    task = pairs(lm)
    evaluator = F.Evaluator(lm, task)
    graph = evaluator.graph
    clean_t, corrupt_t = tokens(lm, CLEAN), tokens(lm, CORRUPT)
    clean_w, corrupt_w = writer_outputs(lm, clean_t), writer_outputs(lm, corrupt_t)
    index = torch.arange(len(CLEAN))
    masks, expected = [], []
    for reader, down, kind, writer, up in _readers(graph):
        mask = torch.ones(graph.n_edges)
        mask[edge_index(graph, up, down, kind)] = 0  # every edge but this one: clean run
        masks.append(mask)
        with torch.no_grad():
            logits = hand_patched_logits(lm, clean_t, reader, clean_w[writer], corrupt_w[writer])
        expected.append(task.metric(logits, index))
    # one-edge circuits: input → logits is the corrupted run whose final residual holds the
    # clean embedding; any other single edge leaves the corrupted run (its writer's inputs are
    # all ablated, or its reader's output reaches nothing kept)
    mask = torch.zeros(graph.n_edges)
    mask[edge_index(graph, "input", "logits", "logits")] = 1
    masks.append(mask)
    with torch.no_grad():
        logits = hand_patched_logits(lm, corrupt_t, ("logits",), corrupt_w[("input",)],
                                     clean_w[("input",)])
        expected.append(task.metric(logits, index))
        mask = torch.zeros(graph.n_edges)
        mask[edge_index(graph, "L0H2", f"L{graph.n_layers - 1}H1", "q")] = 1
        masks.append(mask)
        expected.append(task.metric(lm.model(corrupt_t)[:, -1], index))
    got = evaluator.metrics(torch.stack(masks))
    torch.testing.assert_close(got, torch.stack(expected), atol=1e-5, rtol=1e-5)
    assert (got[:-1] - got[-1]).abs().max() > 1e-4  # the patches really moved the metric


def test_eap_is_the_derivative_of_restoring_one_edge(models):
    """EAP(u → r) = d/dα of the mean metric of the corrupted run whose reader r gets
    a_u(corrupted) + α (a_u(clean) − a_u(corrupted)), at α = 0 (autograd through a hand hook)."""
    lm = models["gemma2"]
    task = pairs(lm)
    scores = edge_scores(lm, task, ig_steps=2, progress=False)
    graph = scores.graph
    clean_w = writer_outputs(lm, tokens(lm, CLEAN))
    corrupt_t = tokens(lm, CORRUPT)
    corrupt_w = writer_outputs(lm, corrupt_t)
    for reader, down, kind, writer, up in _readers(graph):
        alpha = torch.zeros((), requires_grad=True)
        old = corrupt_w[writer]
        logits = hand_patched_logits(lm, corrupt_t, reader, old,
                                     old + alpha * (clean_w[writer] - old))
        value = task.metric(logits, torch.arange(len(CLEAN))).mean()
        expected = float(torch.autograd.grad(value, alpha)[0])
        got = float(scores.eap[edge_index(graph, up, down, kind)])
        assert got == pytest.approx(expected, abs=1e-5, rel=1e-4)
    assert scores.eap.abs().max() > 1e-3 and not torch.equal(scores.eap, scores.eap_ig)


def test_single_edge_effects_equal_circuits_and_hand_patching(models):
    """Noising = m(full) − m(full without the edge) of the circuit evaluation; denoising = the
    corrupted run with the reader given the clean write (a hook), minus the corrupted run."""
    lm = models["gemma3"]
    task = pairs(lm)
    evaluator = F.Evaluator(lm, task)
    graph = evaluator.graph
    clean_w = writer_outputs(lm, tokens(lm, CLEAN))
    corrupt_t = tokens(lm, CORRUPT)
    corrupt_w = writer_outputs(lm, corrupt_t)
    index = torch.arange(len(CLEAN))
    edges, denoise = [], []
    with torch.no_grad():
        corrupted = task.metric(lm.model(corrupt_t)[:, -1], index).mean()
        for reader, down, kind, writer, up in _readers(graph):
            edges.append(edge_index(graph, up, down, kind))
            logits = hand_patched_logits(lm, corrupt_t, reader, corrupt_w[writer],
                                         clean_w[writer])
            denoise.append(task.metric(logits, index).mean() - corrupted)
    edges = torch.tensor(edges)
    masks = torch.ones(len(edges) + 1, graph.n_edges)
    masks[torch.arange(len(edges)), edges] = 0
    values = evaluator.metrics(masks).mean(-1)
    got = edge_effects(lm, task, edges)
    torch.testing.assert_close(got["noising"], values[-1] - values[:-1], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got["denoising"], torch.stack(denoise), atol=1e-5, rtol=1e-4)
    assert got["denoising"].abs().min() > 1e-5  # every patch moved the metric


def _count_by_loops(L, H, KV):
    n = 0
    for layer in range(L):
        writers = 1 + layer * (H + 1)
        n += (H + 2 * KV) * writers + writers + H
    return n + 1 + L * (H + 1)


def test_edge_counts():
    assert Graph(30, 9, 3).n_edges == _count_by_loops(30, 9, 3) == 70651  # SmolLM2-135M
    assert Graph(18, 4, 1).n_edges == _count_by_loops(18, 4, 1) == 5644  # gemma-3-270m
    g = Graph(3, 4, 2)
    table = g.edge_table()
    assert len(table) == g.n_edges == len(table.drop_duplicates(
        ["upstream", "downstream", "input"]))
    # no edge runs backwards: a writer of layer l feeds attention from layer l + 1 on
    attn = table[table.input.isin(["q", "k", "v"])]
    assert (attn.upstream_layer < attn.downstream_layer).all()
    assert set(table[table.downstream == "L1KV0"].downstream_heads) == {"L1H0,L1H1"}


def test_path_pruning_and_greedy_order():
    g = Graph(2, 2, 1)
    head_to_logits = edge_index(g, "L1H0", "logits", "logits")
    mask = torch.zeros(g.n_edges, dtype=torch.bool)
    mask[head_to_logits] = True
    assert not F.on_paths(g, mask).any()  # nothing reaches L1H0 from the input
    mask[edge_index(g, "input", "L1KV0", "k")] = True  # its key input (shared by L1H1 too)
    assert F.on_paths(g, mask).sum() == 2
    dead_end = edge_index(g, "input", "MLP 0", "mlp")  # MLP 0 writes nowhere kept
    mask[dead_end] = True
    assert not F.on_paths(g, mask)[dead_end]
    scores = torch.randn(g.n_edges, generator=torch.Generator().manual_seed(0))
    order = F.greedy_order(g, scores)
    assert sorted(order.tolist()) == list(range(g.n_edges))
    table = g.edge_table()
    assert table.downstream[order[0]] == "logits"
    # every edge's reader belongs to a node an earlier edge brought in
    seen = {"logits"}
    for e in order:
        heads = table.downstream_heads[e].split(",") if table.downstream_heads[e] else []
        assert table.downstream[e] in seen or seen & set(heads)
        seen.add(table.upstream[e])


def test_areas_follow_mib():
    x = [0.001, 0.01, 0.1, 1.0]
    assert F.areas(x, [1, 1, 1, 1]) == pytest.approx((0.999, 0.0))
    cpr, cmd = F.areas(x, [0, 0, 0, 1])
    assert cpr == pytest.approx(0.45) and cmd == pytest.approx(0.999 - 0.45)
