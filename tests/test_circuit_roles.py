"""Head roles (methods/circuits/roles.py): the role table's source parts add up to the head's
DLA on every tiny family; a tiny model built so that one head reads the subject (or the
relation tokens) and writes the answer is classified mover (relation); the rule on hand-made
numbers."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from factcircuits.data.datasets import load_dataset
from factcircuits.methods import attribution as A
from factcircuits.methods.circuits import roles as R
from factcircuits.methods.evaluate import prepare
from factcircuits.methods.positions import task_positions
from factcircuits.models.tiny import FAMILIES, tiny_hf_model, tiny_model, tiny_tokenizer


@pytest.mark.parametrize("family", FAMILIES)
def test_role_table_parts_add_up_to_each_heads_dla(family):
    """The table's `dla` is `head_dla`'s mean over prompts (computed separately, from hook_z)
    and its `dla_<source>` parts add up to it: the shared capture of patterns and values
    (`inputs=`) splits the same DLA as a fresh one."""
    lm = tiny_model(family=family, seed=3)
    pr = prepare(lm, load_dataset("paris-cloze")).subset(range(6))
    heads = [(ly, h) for ly in range(lm.model.cfg.n_layers) for h in range(4)]
    roles = R.head_roles(lm, pr, heads, seed=0, batch_size=4)
    dec = A.decompose(lm, pr, batch_size=4)
    own = A.head_dla(lm, dec, A.answer_direction(lm, pr, dec.pre_cap_logits))
    means = own[own["head"] >= 0].groupby(["layer", "head"])["dla"].mean()
    expected = means.loc[list(zip(roles["layer"], roles["head"]))].to_numpy()
    assert roles["dla"].to_numpy() == pytest.approx(expected, abs=1e-5)
    parts = roles[[f"dla_{s}" for s in A.SOURCES]].sum(axis=1).to_numpy()
    assert parts == pytest.approx(roles["dla"].to_numpy(), abs=1e-5)
    attention = roles[[f"attn_{s}" for s in A.SOURCES]].sum(axis=1).to_numpy()
    assert attention == pytest.approx(1.0, abs=1e-5)  # every key position has a class
    assert (roles["dla_low"] <= roles["dla"]).all() and (roles["dla"] <= roles["dla_high"]).all()
    assert roles["dla"].abs().max() > 0.05  # real contributions


# ------------------------------------------------------------------ a head built to read
ROWS = [0, 1, 2, 3, 5, 6, 8, 9, 10]  # paris-cloze prompts whose subjects are whole tokens
C, S, ANSWER = 0, 1, 2  # residual dimensions: constant, the feature keys read, answer
HEAD, HEAD_DIM = 0, 16  # the built head (layer 0; key/value head 0) and the tiny head size


def _prepared(lm):
    data = load_dataset("paris-cloze")
    data.rows = data.rows.iloc[ROWS].reset_index(drop=True)
    return prepare(lm, data)


def _token_ids(pr, tokenizer) -> tuple[list[list[int]], list]:
    ids = [tokenizer(p)["input_ids"] for p in pr.prompts]
    return ids, task_positions(pr, tokenizer)


def _feature_tokens(role: str) -> set[int]:
    """Token ids that occur only in `role`'s positions (subject or relation) of every prompt,
    and at least once in each prompt."""
    tokenizer = tiny_tokenizer()
    pr = _prepared(SimpleNamespace(tokenizer=tokenizer))  # preparing needs the tokenizer only
    ids, positions = _token_ids(pr, tokenizer)
    inside = {t for row, pos in zip(ids, positions) for t in (row[i] for i in getattr(pos, role))}
    outside = {t for row, pos in zip(ids, positions)
               for i, t in enumerate(row) if i not in getattr(pos, role)}
    chosen = inside - outside
    for row, pos in zip(ids, positions):
        assert any(row[i] in chosen for i in getattr(pos, role))
    answers, cfs = set(pr.answer_ids.tolist()), set(pr.cf_ids.tolist())
    assert not answers & cfs  # the answer direction below is positive on every prompt
    return chosen


def _built(role: str):
    """A tiny Llama whose head 0 of layer 0 attends from every position to the tokens of
    `_feature_tokens(role)` (its query reads a constant residual dimension, its key a feature
    only those tokens carry, both in the slowest rotary pair, so position barely turns them),
    reads that feature as its value and writes it along a dimension that only the answers'
    unembedding columns read."""
    from factcircuits.models.bridge import LoadedModel, boot_bridge, describe

    hf = tiny_hf_model(seed=0, n_layers=2)
    features = sorted(_feature_tokens(role))
    slow = HEAD_DIM // 2 - 1  # the rotary pair with the lowest frequency (Llama rotate_half)
    block = hf.model.layers[0]
    with torch.no_grad():
        embed = hf.model.embed_tokens.weight
        embed[:, [C, S, ANSWER]] = 0.0
        embed[:, C] = 1.0
        embed[features, S] = 4.0
        block.input_layernorm.weight[[C, S]] = 1.0
        q, k, v, o = (block.self_attn.q_proj.weight, block.self_attn.k_proj.weight,
                      block.self_attn.v_proj.weight, block.self_attn.o_proj.weight)
        rows = slice(HEAD * HEAD_DIM, (HEAD + 1) * HEAD_DIM)
        q[rows], k[rows], v[rows], o[:, rows] = 0.0, 0.0, 0.0, 0.0
        q[HEAD * HEAD_DIM + slow, C] = 3.0
        k[HEAD * HEAD_DIM + slow, S] = 3.0
        v[HEAD * HEAD_DIM, S] = 1.0
        o[ANSWER, HEAD * HEAD_DIM] = 1.0
        hf.lm_head.weight[:, ANSWER] = 0.0
        hf.model.norm.weight[ANSWER] = 1.0
    tokenizer = tiny_tokenizer()
    lm = LoadedModel(model=boot_bridge("tiny-llama", hf, tokenizer, "cpu", torch.float32,
                                       "none"), tokenizer=tokenizer, provenance={})
    pr = _prepared(lm)
    with torch.no_grad():
        hf.lm_head.weight[pr.answer_ids.unique(), ANSWER] = 5.0
    lm.provenance = {"spec": "tiny", "source": "built", **describe(lm.model, "cpu",
                                                                   torch.float32, "none")}
    return lm, pr


@pytest.mark.parametrize("role,source", [("mover", "subject"), ("relation", "relation")])
def test_a_head_built_to_read_a_token_class_gets_its_role(role, source):
    lm, pr = _built(source)
    heads = [(0, h) for h in range(4)] + [(1, h) for h in range(4)]
    roles = R.head_roles(lm, pr, heads, seed=0).set_index("node")
    built = roles.loc[f"L0H{HEAD}"]
    assert built["role"] == role
    assert built[f"attn_{source}"] > 0.99  # the last token attends to those tokens
    assert built["dla_low"] > 0  # and the head writes the answer
    assert built[f"{source}_share_low"] > 0.99
    other = "relation" if source == "subject" else "subject"
    assert built[f"attn_{other}"] < 0.01
    assert set(roles["role"]) <= set(R.ROLES)


def test_the_unbuilt_model_has_no_such_head():
    """The same random model before the edit: its head 0 reads no class on purpose, so the
    test above can fail."""
    lm = tiny_model(seed=0, n_layers=2)
    roles = R.head_roles(lm, _prepared(lm), [(0, HEAD)], seed=0)
    assert roles["attn_subject"].iloc[0] < 0.9 and roles["attn_relation"].iloc[0] < 0.9


@pytest.mark.parametrize("numbers,role", [
    # dla, dla_low, subject share, its low end, relation share, its low end
    ((1.0, 0.5, 0.8, 0.6, 0.1, 0.0), "mover"),
    ((1.0, 0.5, 0.8, 0.45, 0.1, 0.0), "other"),  # a subject majority not resolved
    ((1.0, -0.1, 0.9, 0.8, 0.1, 0.0), "other"),  # no resolved direct effect
    ((-1.0, -1.5, 0.9, 0.8, 0.1, 0.0), "other"),  # pushes against the answer
    ((1.0, 0.5, 0.1, 0.0, 0.8, 0.7), "relation"),
    ((1.0, 0.5, 0.4, 0.2, 0.4, 0.2), "mixed"),
    ((1.0, 0.5, 0.4, 0.2, 0.2, 0.1), "other"),  # relation below the mixed floor
])
def test_classify_by_hand(numbers, role):
    assert R.classify(*numbers) == role


def test_circuit_heads_are_the_query_head_nodes():
    nodes = pd.DataFrame({"node": ["input", "L0H1", "L2KV1", "MLP 3", "L10H12", "logits"]})
    assert R.circuit_heads(nodes) == [(0, 1), (10, 12)]


def test_role_table_by_hand():
    """Two prompts, one head: means, shares (ratio of means) and the attention by source."""
    parts = {"subject": [2.0, 4.0], "relation": [1.0, 1.0], "last": [0.0, 1.0],
             "other": [1.0, 0.0]}
    sources = pd.DataFrame([{"prompt": i, "layer": 0, "head": 1, "source": s, "dla": v}
                            for s, values in parts.items() for i, v in enumerate(values)])
    attention = torch.zeros(2, 1, 2, len(A.SOURCES))
    attention[:, 0, 1] = torch.tensor([[0.5, 0.2, 0.1, 0.2], [0.7, 0.1, 0.1, 0.1]])
    [row] = R.role_table(sources, attention, [(0, 1)], seed=0).to_dict("records")
    assert row["dla"] == pytest.approx(5.0)
    assert row["dla_subject"] == pytest.approx(3.0)
    assert row["subject_share"] == pytest.approx(3.0 / 5.0)
    assert row["relation_share"] == pytest.approx(1.0 / 5.0)
    assert row["attn_subject"] == pytest.approx(0.6)
    assert row["attn_relation"] == pytest.approx(0.15)


def _roles(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    """A head_roles table from (node, role, dla) rows; the other columns fixed by hand."""
    table = pd.DataFrame([{"node": n, "layer": int(n[1:].split("H")[0]), "head":
                           int(n.split("H")[1]), "role": r, "dla": d, "dla_low": d - 0.5,
                           "dla_high": d + 0.5, "subject_share": 0.8,
                           "subject_share_low": 0.6, "subject_share_high": 0.95}
                          for n, r, d in rows])
    return table


def test_roles_phrase_and_the_findings_sentence():
    from factcircuits.chapters import circuit as chapter

    roles = _roles([("L9H1", "mover", 0.8), ("L3H0", "mover", 2.0), ("L5H2", "relation", 0.4),
                    ("L1H1", "other", 0.0), ("L2H2", "other", -0.3)])
    assert chapter.roles_phrase(roles) == ("2 movers (L3H0, L9H1), 1 relation head (L5H2), "
                                           "0 mixed heads and 2 other")
    run = SimpleNamespace(result=lambda method, name: roles if name == "head_roles" else None)
    [finding] = chapter.role_findings(run)
    assert "the circuit's 5 heads" in finding.text
    assert ("The strongest mover, L3H0, writes a DLA of 2.00 (95% CI 1.50 to 2.50), 80% "
            "(95% CI 60% to 95%) of it through the subject tokens") in finding.text
    assert f"above {R.READS:.0%}" in finding.text
    no_roles = SimpleNamespace(result=lambda method, name: None)
    assert chapter.role_findings(no_roles) == []
