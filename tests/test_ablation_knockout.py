"""Ablation and attention knockout: null operations change nothing, real ones do."""

from __future__ import annotations

import pytest
import torch

from factcircuits.data.datasets import load_dataset
from factcircuits.methods import ablation as AB
from factcircuits.methods import knockout as KO
from factcircuits.methods.evaluate import prepare
from factcircuits.models import load_model
from factcircuits.models.forward import final_logits


@pytest.fixture(scope="module")
def setup():
    lm = load_model("tiny")
    pr = prepare(lm, load_dataset("paris-cloze"), "raw", None, None, drop_multi_token=True)
    batch = pr.clean_batch(lm.tokenizer)
    clean = pr.metric(final_logits(lm.model, batch, 4))
    return lm, pr, batch, clean


def test_ablating_nothing_changes_nothing(setup):
    lm, pr, batch, clean = setup
    logits = final_logits(lm.model, batch, 4, hooks_for=AB.ablation_hooks([], "zero"))
    assert torch.allclose(pr.metric(logits), clean)


def test_zero_ablating_a_layer_equals_zeroing_all_its_heads(setup):
    lm, _pr, batch, _ = setup
    H = lm.model.cfg.n_heads
    attn = final_logits(lm.model, batch, 4, hooks_for=AB.ablation_hooks([("attn", 1)], "zero"))
    heads = final_logits(lm.model, batch, 4,
                         hooks_for=AB.ablation_hooks([("head", 1, h) for h in range(H)], "zero"))
    assert torch.allclose(attn, heads, atol=1e-4)


def test_mean_ablation_with_one_prompt_is_identity(setup):
    lm, pr, _, _ = setup
    one = pr.subset([0])
    table = AB.ablation_table(lm.model, lm.tokenizer, one, [("mlp", 0), ("head", 1, 2)],
                              modes=("mean",))
    assert table["drop"].abs().max() < 1e-4  # the mean over one prompt is the prompt itself


def test_ablation_table_shape(setup):
    lm, pr, _, clean = setup
    table = AB.ablation_table(lm.model, lm.tokenizer, pr, [("mlp", 1), ("head", 0, 2)])
    assert set(table["mode"]) == {"zero", "mean"}
    assert table["component"].nunique() == 3  # two alone + together
    assert table["drop"].abs().max() > 0
    first = table[(table["mode"] == "zero") & (table["component"] == "mlp L1")]
    assert first["clean"].to_numpy() == pytest.approx(clean.numpy(), abs=1e-5)


def test_empty_knockout_changes_nothing(setup):
    lm, pr, batch, clean = setup
    none = torch.zeros_like(batch.tokens, dtype=torch.bool)
    L = lm.model.cfg.n_layers
    assert torch.equal(pr.metric(KO.knockout(lm.model, lm.tokenizer, pr, none, range(L), 4)),
                       clean)
    everything = batch.attention_mask.bool()
    assert torch.equal(pr.metric(KO.knockout(lm.model, lm.tokenizer, pr, everything, [], 4)),
                       clean)


def test_full_knockout_changes_the_metric(setup):
    lm, pr, batch, clean = setup
    everything = batch.attention_mask.bool()
    L = lm.model.cfg.n_layers
    knocked = pr.metric(KO.knockout(lm.model, lm.tokenizer, pr, everything, range(L), 4))
    assert (knocked - clean).abs().min() > 1e-3


def test_knockout_equals_renormalised_pattern(setup):
    """Independent check: −inf scores = zeroing the pattern at those keys and renormalising."""
    lm, pr, batch, _ = setup
    layer = 1
    block = torch.zeros_like(batch.tokens, dtype=torch.bool)
    block[:, 1:3] = True
    ko = KO.knockout(lm.model, lm.tokenizer, pr, block, [layer], 64)

    def pattern_hook(part, last, mask):
        def fn(p, hook):
            p = p.clone()
            rows = torch.arange(p.shape[0])
            cut = block[part][:, : p.shape[-1]].clone()
            cut[rows, last] = False
            sel = p[rows, :, last].masked_fill(cut[:, None, :], 0.0)
            p[rows, :, last] = sel / sel.sum(-1, keepdim=True)
            return p
        return [(f"blocks.{layer}.attn.hook_pattern", fn)]

    ref = final_logits(lm.model, batch, 64, hooks_for=pattern_hook)
    assert torch.allclose(ko, ref, atol=1e-4)


def test_sweep_and_peaks(setup):
    lm, pr, _, _ = setup
    table = KO.knockout_sweep(lm.model, lm.tokenizer, pr, window=2)
    L = lm.model.cfg.n_layers
    assert len(table) == 2 * L * len(pr.prompts)
    assert (table["last"] - table["first"] == 1).all()
    peaks = KO.peak_windows(table)
    assert set(peaks) == {"subject", "relation"}


def test_windows_clip():
    assert KO.windows(6, 3)[0] == (0, 0, 2) and KO.windows(6, 3)[-1] == (5, 3, 5)
    assert KO.default_window(30) == 5
