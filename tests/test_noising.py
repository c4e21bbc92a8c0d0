"""Noising (corrupted into clean) beside denoising (clean into corrupted) in activation patching:
the same numbers as TransformerLens's patching with the runs swapped, and noising = 1 −
denoising (on the 0 = corrupted, 1 = clean scale) on a model that is affine in every patched
activation."""

from __future__ import annotations

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
    prepared = prepare(lm, load_dataset("paris-cloze"))
    clean = encode(lm.tokenizer, prepared.prompts).lengths
    corrupt = encode(lm.tokenizer, prepared.corrupted_prompts).lengths
    return prepared.subset((clean == corrupt).nonzero().flatten()[:n_max])


def linear_tiny_model():
    """A tiny Llama made affine in every activation that patching replaces, so that patching
    one activation a moves the metric by J·(a_new − a_old) with one J for every run; then
    denoising gives corrupted + J·Δ and noising clean − J·Δ, hence normalized noising =
    1 − normalized denoising exactly. Made affine by:
    - query and key weights zero: every attention score is 0, so each head's pattern is the
      uniform causal average whatever the input (softmax of a constant), and attention is
      linear in the values;
    - MLP down-projections zero: Llama's gated MLP (silu(gate·x) · up·x) is not linear, so
      it contributes nothing (its cells patch a zero into a zero);
    - every RMSNorm's epsilon 1e12: x / sqrt(mean(x²) + 1e12) divides by exactly 1e6 in
      float32 (mean(x²) is far below the float32 spacing at 1e12, 65,536), a fixed scaling;
      the gains are multiplied by 1e6 to keep the scale;
    - the metric, a logit difference, is linear in the logits."""
    from factcircuits.models.bridge import LoadedModel, boot_bridge, describe
    from factcircuits.models.tiny import _config, _randomise_norms, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    config, model_class = _config("llama", 3, 64, len(tokenizer))
    config.architectures = [model_class.__name__]
    config.rms_norm_eps = 1e12
    torch.manual_seed(0)
    model = model_class(config).eval()
    _randomise_norms(model)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.zero_()
            layer.self_attn.k_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        for module in model.modules():
            if "norm" in type(module).__name__.lower():
                module.weight.mul_(1e6)
    bridge = boot_bridge("tiny-llama", model, tokenizer, "cpu", torch.float32, "none")
    return LoadedModel(bridge, tokenizer, {"spec": "tiny-linear",
                                           **describe(bridge, "cpu", torch.float32, "none")})


CASES = [("resid_pre", "pos"), ("attn_out", "pos"), ("z", "head"), ("z", "pos_head")]


def _both(lm, prepared, component, by):
    return [P.patch(lm, prepared, component, by, direction=d, progress=False)
            for d in ("denoising", "noising")]


@pytest.mark.parametrize("component,by", CASES)
def test_noising_is_one_minus_denoising_on_an_affine_model(component, by):
    lm = linear_tiny_model()
    prepared = _equal_length_pairs(lm)
    denoise, noise = _both(lm, prepared, component, by)
    assert noise.direction == "noising" and denoise.direction == "denoising"
    # both runs' baselines are the same two numbers, whichever run the copies go into
    assert torch.allclose(denoise.clean, noise.clean) and torch.allclose(
        denoise.corrupted, noise.corrupted)
    gap = (denoise.clean - denoise.corrupted).abs()
    assert bool((gap > 0.05).all()), "the pairs must move the metric for the identity to say much"
    d, n = denoise.normalized_mean(), noise.normalized_mean()
    assert (n - (1 - d)).abs().max() <= 1e-3
    assert torch.allclose(noise.effect(), denoise.normalized(), atol=1e-3, equal_nan=True)
    # not vacuous: some cells restore part of the gap, neither none nor all of it
    assert bool(((d > 0.05) & (d < 0.95)).any())


def test_noising_is_not_one_minus_denoising_on_a_nonlinear_model(tiny_lm):
    """The identity is a property of the affine model, not of the code: on the ordinary tiny
    model (softmax attention, gated MLPs, norms) it fails somewhere."""
    prepared = _equal_length_pairs(tiny_lm)
    denoise, noise = _both(tiny_lm, prepared, "resid_pre", "pos")
    assert (noise.normalized_mean() - (1 - denoise.normalized_mean())).abs().max() > 1e-2
    # the mirrored view measures the share lost with the denoising code (tables, peaks)
    lost = noise.as_effect()
    assert torch.allclose(lost.normalized(), noise.effect(), atol=1e-5, equal_nan=True)
    assert torch.allclose(lost.effect(), noise.effect(), atol=1e-5, equal_nan=True)
    assert denoise.as_effect() is denoise


@pytest.mark.parametrize("component,tl_fn", [
    ("resid_pre", tlp.get_act_patch_resid_pre),
    ("attn_out", tlp.get_act_patch_attn_out),
    ("mlp_out", tlp.get_act_patch_mlp_out),
])
def test_noising_matches_transformer_lens_with_runs_swapped(tiny_lm, component, tl_fn):
    """TransformerLens patches a cache into a run: the corrupted cache into the clean tokens
    is noising."""
    prepared = _equal_length_pairs(tiny_lm)
    clean = encode(tiny_lm.tokenizer, prepared.prompts)
    corrupt = encode(tiny_lm.tokenizer, prepared.corrupted_prompts)
    _, corrupted_cache = tiny_lm.model.run_with_cache(corrupt.tokens)
    rows = torch.arange(len(clean.tokens))

    def metric(logits):
        return prepared.metric(logits[rows, clean.last_index]).mean()

    ref = tl_fn(tiny_lm.model, clean.tokens, corrupted_cache, metric).cpu()
    mine = P.patch(tiny_lm, prepared, component, direction="noising", progress=False)
    assert (mine.mean() - ref).abs().max() <= TOL


def test_noising_heads_match_transformer_lens(tiny_lm):
    prepared = _equal_length_pairs(tiny_lm)
    clean = encode(tiny_lm.tokenizer, prepared.prompts)
    corrupt = encode(tiny_lm.tokenizer, prepared.corrupted_prompts)
    _, corrupted_cache = tiny_lm.model.run_with_cache(corrupt.tokens)
    rows = torch.arange(len(clean.tokens))

    def metric(logits):
        return prepared.metric(logits[rows, clean.last_index]).mean()

    ref = tlp.get_act_patch_attn_head_out_all_pos(tiny_lm.model, clean.tokens, corrupted_cache,
                                                  metric).cpu()
    mine = P.patch_heads(tiny_lm, prepared, direction="noising", progress=False)
    assert (mine.mean() - ref).abs().max() <= TOL


def test_unknown_direction_is_refused(tiny_lm):
    from factcircuits.errors import UserError

    with pytest.raises(UserError, match="direction"):
        P.patch(tiny_lm, _equal_length_pairs(tiny_lm), direction="sideways", progress=False)
