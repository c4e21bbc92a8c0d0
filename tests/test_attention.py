"""methods.attention: the patterns are the model's own (run_with_cache), causal, rows summing
to 1; the last-token table is the pattern's last row."""

from __future__ import annotations

import pytest
import torch

from factcircuits.data.datasets import load_dataset
from factcircuits.methods import attention as AT
from factcircuits.methods.evaluate import prepare

HEADS = [(0, 1), (2, 3), (2, 0)]


@pytest.fixture(scope="module")
def patterns(tiny_lm):
    prepared = prepare(tiny_lm, load_dataset("paris-cloze")).subset([1, 4])
    tokens, pats = AT.head_patterns(tiny_lm, prepared, HEADS, example=1)
    return prepared, tokens, pats


def test_patterns_equal_the_models_own_hook_pattern(tiny_lm, patterns):
    prepared, tokens, pats = patterns
    ids = tiny_lm.tokenizer(prepared.prompts[1], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        _, cache = tiny_lm.model.run_with_cache(ids)
    assert tokens == [tiny_lm.tokenizer.decode([t]) for t in ids[0].tolist()]
    assert list(pats) == HEADS
    for (layer, head), p in pats.items():
        ref = cache[f"blocks.{layer}.attn.hook_pattern"][0, head].float()
        assert torch.allclose(p, ref, atol=1e-6)


def test_patterns_are_causal_distributions(patterns):
    _, tokens, pats = patterns
    for p in pats.values():
        assert p.shape == (len(tokens), len(tokens))
        assert torch.allclose(p.sum(-1), torch.ones(len(tokens)), atol=1e-5)
        assert p.triu(1).abs().max() == 0  # no query attends to a later key


def test_last_token_table_is_the_last_row(patterns):
    _, tokens, pats = patterns
    table = AT.last_token_attention(tokens, pats)
    assert len(table) == len(HEADS) * len(tokens)
    for (layer, head), p in pats.items():
        rows = table[(table["layer"] == layer) & (table["head"] == head)].sort_values("key")
        assert rows["token"].tolist() == tokens
        assert torch.allclose(torch.tensor(rows["attention"].to_numpy()).float(), p[-1])
