"""Fast activation patching equals TransformerLens's one-forward-per-cell patching."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import transformer_lens.patching as tlp

from factcircuits.data.datasets import load_dataset
from factcircuits.methods import patching as P
from factcircuits.methods.evaluate import prepare
from factcircuits.models.tokens import encode

TOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")


def _equal_length_pairs(lm, n_max=4):
    """Cloze pairs whose clean and corrupted prompts have the same token length (prompts of
    different lengths: TransformerLens gets them right-padded, which causal attention makes
    exact at each prompt's last real token)."""
    prepared = prepare(lm, load_dataset("paris-cloze"))
    clean = encode(lm.tokenizer, prepared.prompts).lengths
    corrupt = encode(lm.tokenizer, prepared.corrupted_prompts).lengths
    keep = (clean == corrupt).nonzero().flatten()[:n_max]
    return prepared.subset(keep)


def _tl_inputs(lm, prepared):
    clean = encode(lm.tokenizer, prepared.prompts)
    corrupt = encode(lm.tokenizer, prepared.corrupted_prompts)
    _, cache = lm.model.run_with_cache(clean.tokens)
    rows = torch.arange(len(clean.tokens))

    def metric(logits):
        return prepared.metric(logits[rows, clean.last_index]).mean()

    return corrupt.tokens, cache, metric


@pytest.fixture(scope="module")
def tiny_setup(tiny_lm):
    prepared = _equal_length_pairs(tiny_lm)
    return tiny_lm, prepared, _tl_inputs(tiny_lm, prepared)


@pytest.mark.parametrize("component,tl_fn", [
    ("resid_pre", tlp.get_act_patch_resid_pre),
    ("attn_out", tlp.get_act_patch_attn_out),
    ("mlp_out", tlp.get_act_patch_mlp_out),
])
def test_layer_pos_matches_transformer_lens(tiny_setup, component, tl_fn):
    lm, prepared, (tokens, cache, metric) = tiny_setup
    ref = tl_fn(lm.model, tokens, cache, metric).cpu()
    mine = P.patch(lm, prepared, component, progress=False)
    assert mine.mean().shape == ref.shape
    assert (mine.mean() - ref).abs().max() <= TOL


def test_heads_match_transformer_lens(tiny_setup):
    lm, prepared, (tokens, cache, metric) = tiny_setup
    ref = tlp.get_act_patch_attn_head_out_all_pos(lm.model, tokens, cache, metric).cpu()
    mine = P.patch_heads(lm, prepared, progress=False)
    assert mine.mean().shape == ref.shape == (lm.cfg.n_layers, lm.cfg.n_heads)
    assert (mine.mean() - ref).abs().max() <= TOL


def test_heads_by_pos_match_transformer_lens(tiny_setup):
    lm, prepared, (tokens, cache, metric) = tiny_setup
    ref = tlp.get_act_patch_attn_head_out_by_pos(lm.model, tokens, cache, metric).cpu()
    mine = P.patch_heads_by_pos(lm, prepared, progress=False)
    assert (mine.mean() - ref).abs().max() <= TOL


def _self_patch(prepared, use_clean: bool):
    prompts = prepared.prompts if use_clean else prepared.corrupted_prompts
    twin = prepared.subset(list(range(len(prompts))))
    twin.prompts, twin.corrupted_prompts = list(prompts), list(prompts)
    return twin


@pytest.mark.parametrize("component", ["resid_pre", "attn_out", "mlp_out"])
def test_clean_into_clean_is_one_and_corrupted_into_corrupted_is_zero(tiny_setup, component):
    lm, prepared, _ = tiny_setup
    result = P.patch(lm, prepared, component, progress=False)
    # clean into clean: the "corrupted" run is the clean run, every cell gives the clean metric
    same = P.patch(lm, _self_patch(prepared, True), component, progress=False)
    assert torch.allclose(same.values, result.clean.expand_as(same.values), atol=TOL)
    norm = P.normalized_effect(same.values, result.clean, result.corrupted)
    assert torch.allclose(norm, torch.ones_like(norm), atol=1e-3)
    # corrupted into corrupted: nothing changes, every cell gives the corrupted metric
    same = P.patch(lm, _self_patch(prepared, False), component, progress=False)
    norm = P.normalized_effect(same.values, result.clean, result.corrupted)
    assert torch.allclose(norm, torch.zeros_like(norm), atol=1e-3)


def test_stacking_independent_of_memory_cap(tiny_setup):
    lm, prepared, _ = tiny_setup
    auto = P.patch(lm, prepared, "resid_pre", progress=False)
    one = P.patch(lm, prepared, "resid_pre", progress=False, max_patches=1)
    assert (auto.values - one.values).abs().max() <= TOL


def test_mixed_lengths_and_tidy_table(tiny_lm):
    prepared = prepare(tiny_lm, load_dataset("paris-cloze"))
    clean = encode(tiny_lm.tokenizer, prepared.prompts).lengths
    corrupt = encode(tiny_lm.tokenizer, prepared.corrupted_prompts).lengths
    prepared = prepared.subset(clean == corrupt)
    result = P.patch(tiny_lm, prepared, "resid_pre", progress=False)
    lengths = encode(tiny_lm.tokenizer, prepared.prompts).lengths
    # each prompt equals its own single-prompt run (groups by length are independent)
    for i in range(len(prepared.prompts)):
        alone = P.patch(tiny_lm, prepared.subset([i]), "resid_pre", progress=False)
        n = int(lengths[i])
        assert (alone.values[:, :n, 0] - result.values[:, :n, i]).abs().max() <= TOL
        # past the prompt's end patching changes nothing
        assert torch.all(result.values[:, n:, i] == result.corrupted[i])
    positions = P.position_table(tiny_lm, prepared)
    table = P.tidy(result, positions)
    assert len(table) == tiny_lm.cfg.n_layers * int(lengths.sum())
    assert {"token", "token_class", "role", "normalized"} <= set(table.columns)
    assert set(table["role"]) <= {"subject", "relation", "last", "prefix"}


def test_mismatched_lengths_are_refused(tiny_lm):
    prepared = prepare(tiny_lm, load_dataset("paris-cloze"))
    clean = encode(tiny_lm.tokenizer, prepared.prompts).lengths
    corrupt = encode(tiny_lm.tokenizer, prepared.corrupted_prompts).lengths
    if bool((clean == corrupt).all()):
        pytest.skip("every pair has equal length for this tokenizer")
    from factcircuits.errors import UserError

    with pytest.raises(UserError, match="token length"):
        P.patch(tiny_lm, prepared, "resid_pre", progress=False)


@pytest.mark.embedded
def test_embedded_cells_match_transformer_lens(embedded_lm):
    """A sample of cells on the real model (a full TL grid takes minutes)."""
    lm = embedded_lm
    prepared = _equal_length_pairs(lm, n_max=3)
    tokens, cache, metric = _tl_inputs(lm, prepared)
    n_layers, n_pos = lm.cfg.n_layers, tokens.shape[1]
    cells = pd.DataFrame({"layer": [0, 3, n_layers // 2, n_layers - 1, n_layers - 1, 7],
                          "pos": [0, n_pos - 1, 2, n_pos - 1, 1, n_pos - 2]})
    for component in ("resid_pre", "attn_out", "mlp_out"):
        ref = tlp.generic_activation_patch(
            lm.model, tokens, cache, metric, patch_setter=tlp.layer_pos_patch_setter,
            activation_name=component, index_df=cells).cpu()
        mine = P.patch(lm, prepared, component, progress=False,
                       layers=sorted(set(cells["layer"]))).mean()
        got = mine[cells["layer"].tolist(), cells["pos"].tolist()]
        assert (got - ref).abs().max() <= TOL, component
    heads = pd.DataFrame({"layer": [0, 10, n_layers - 1], "head": [0, 4, lm.cfg.n_heads - 1]})
    ref = tlp.generic_activation_patch(
        lm.model, tokens, cache, metric, patch_setter=tlp.layer_head_vector_patch_setter,
        activation_name="z", index_df=heads).cpu()
    mine = P.patch_heads(lm, prepared, progress=False, layers=sorted(set(heads["layer"]))).mean()
    assert (mine[heads["layer"].tolist(), heads["head"].tolist()] - ref).abs().max() <= TOL


def test_normalization_caveat_only_when_corruption_does_not_flip():
    from factcircuits.methods.patching import normalization_caveat

    assert normalization_caveat(4.6, -3.9, "logit_diff") == ""
    assert "do not flip" in normalization_caveat(0.79, 1.08, "log_odds")
    assert "do not flip" in normalization_caveat(0.3, 0.2, "log_odds")
