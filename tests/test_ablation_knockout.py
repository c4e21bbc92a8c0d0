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
    table = AB.ablation_table(lm, one, [("mlp", 0), ("head", 1, 2)],
                              modes=("mean",))
    assert table["drop"].abs().max() < 1e-4  # the mean over one prompt is the prompt itself


def test_ablation_table_matches_hand_ablation(setup):
    """Zero ablation recomputed with plain run_with_hooks on one prompt at a time (no padding,
    no sub-batches): an MLP output set to zero, a head's z slice set to zero, and both."""
    lm, pr, _, clean = setup
    table = AB.ablation_table(lm, pr, [("mlp", 1), ("head", 0, 2)], modes=("zero",))

    def zero(act, hook):
        return torch.zeros_like(act)

    def zero_head(act, hook):
        act = act.clone()
        act[:, :, 2] = 0
        return act

    hooks = {"mlp L1": [("blocks.1.hook_mlp_out", zero)],
             "L0H2": [("blocks.0.attn.hook_z", zero_head)]}
    hooks["all 2 together"] = hooks["mlp L1"] + hooks["L0H2"]
    assert sorted(table["component"].unique()) == sorted(hooks)
    for label, fwd_hooks in hooks.items():
        rows = table[table["component"] == label].sort_values("prompt")
        expected = []
        for i, prompt in enumerate(pr.prompts):
            ids = lm.tokenizer(prompt, return_tensors="pt")["input_ids"]
            with torch.no_grad():
                logits = lm.model.run_with_hooks(ids, fwd_hooks=fwd_hooks)[:, -1]
            expected.append(float(pr.metric(logits.float(), [i])[0]))
        assert rows["ablated"].to_numpy() == pytest.approx(expected, abs=1e-4)
        assert rows["clean"].to_numpy() == pytest.approx(clean.numpy(), abs=1e-5)
        assert rows["drop"].to_numpy() == pytest.approx(clean.numpy() - expected, abs=1e-4)


def test_empty_knockout_changes_nothing(setup):
    lm, pr, batch, clean = setup
    none = torch.zeros_like(batch.tokens, dtype=torch.bool)
    L = lm.model.cfg.n_layers
    assert torch.equal(pr.metric(KO.knockout(lm, pr, none, range(L), batch_size=4)),
                       clean)
    everything = batch.attention_mask.bool()
    assert torch.equal(pr.metric(KO.knockout(lm, pr, everything, [], batch_size=4)),
                       clean)


def test_full_knockout_changes_the_metric(setup):
    lm, pr, batch, clean = setup
    everything = batch.attention_mask.bool()
    L = lm.model.cfg.n_layers
    knocked = pr.metric(KO.knockout(lm, pr, everything, range(L), batch_size=4))
    assert (knocked - clean).abs().min() > 1e-3


def test_knockout_equals_renormalised_pattern(setup):
    """Independent check: −inf scores = zeroing the pattern at those keys and renormalising."""
    lm, pr, batch, _ = setup
    layer = 1
    block = torch.zeros_like(batch.tokens, dtype=torch.bool)
    block[:, 1:3] = True
    ko = KO.knockout(lm, pr, block, [layer], batch_size=64)

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
    """Each sweep row equals a knockout of the same window recomputed with `knockout`, and the
    peak is the window with the lowest mean relative change of P(answer)."""
    from factcircuits.methods.positions import position_mask, task_positions

    lm, pr, batch, clean = setup
    table = KO.knockout_sweep(lm, pr, window=2, roles=("subject",))
    mask = position_mask(task_positions(pr, lm.tokenizer), "subject", batch.tokens.shape[1])
    clean_p = pr.answer_probability(final_logits(lm.model, batch, 4))
    means = {}
    for centre, first, last in KO.windows(lm.model.cfg.n_layers, 2):
        logits = KO.knockout(lm, pr, mask, range(first, last + 1), batch_size=4)
        change = (pr.answer_probability(logits) - clean_p) / clean_p
        rows = table[table["centre"] == centre].sort_values("prompt")
        assert rows["relative_p_change"].to_numpy() == pytest.approx(change.numpy(), abs=1e-5)
        assert rows["metric_change"].to_numpy() == pytest.approx(
            (pr.metric(logits) - clean).numpy(), abs=1e-4)
        means[centre] = float(change.mean())
    peak = KO.peak_windows(table)["subject"]
    assert peak["centre"] == min(means, key=means.get)
    assert peak["relative_p_change"] == pytest.approx(min(means.values()), abs=1e-5)


def test_windows_clip():
    assert KO.windows(6, 3)[0] == (0, 0, 2) and KO.windows(6, 3)[-1] == (5, 3, 5)
    assert KO.default_window(30) == 5
