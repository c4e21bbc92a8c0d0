"""Gemma-family models on the model side: tiny random-weight Gemma 1, 2 (soft-caps, sliding
window shorter than the prompt) and 3 built in memory. The bridge's logits are the raw
transformers model's; the frozen-scale readout reproduces them from the residual stream in
both processing modes."""

from __future__ import annotations

import pytest
import torch

from factcircuits.models import load_model
from factcircuits.models.forward import final_logits
from factcircuits.models.readout import final_readout, norm_affine, post_norm
from factcircuits.models.tiny import SLIDING_WINDOW
from factcircuits.models.tokens import encode

FAMILIES = ["tiny", "tiny-gemma", "tiny-gemma2", "tiny-gemma3"]
PROMPTS = ["The capital of France is", "Is Paris the capital of France?",
           "The Eiffel Tower is located in the city of Paris and the Louvre is a museum in"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one thread


@pytest.fixture(scope="module", params=[(f, p) for f in FAMILIES for p in ("none", "compat")],
                ids=lambda fp: f"{fp[0]}-{fp[1]}")
def lm(request):
    family, processing = request.param
    return load_model(family, processing=processing)


def raw_final_logits(lm, prompt):
    """The transformers model's own logits at the last token of one unpadded prompt. In
    compatibility mode the bridge folded the norms into the HF weights in place, so a fresh
    copy with the original weights is the reference there."""
    from factcircuits.models.tiny import tiny_hf_model

    family = lm.provenance["resolved_name"].removeprefix("tiny-")
    hf = tiny_hf_model(seed=lm.provenance["seed"], n_layers=lm.cfg.n_layers, family=family)
    ids = encode(lm.tokenizer, [prompt]).tokens
    with torch.no_grad():
        return hf(ids).logits[0, -1].float()


def test_longest_prompt_reaches_the_sliding_window(lm):
    assert encode(lm.tokenizer, PROMPTS[-1:]).tokens.shape[1] > 3 * SLIDING_WINDOW


def test_bridge_logits_are_the_raw_models_batched_and_padded(lm):
    batch = encode(lm.tokenizer, PROMPTS)
    assert len(set(batch.lengths.tolist())) == len(PROMPTS)  # really padded
    mine = final_logits(lm.model, batch, batch_size=len(PROMPTS))
    raw = torch.stack([raw_final_logits(lm, p) for p in PROMPTS])
    assert (mine - raw).abs().max() < 1e-4


def test_final_norm_gain_is_the_models_own(lm):
    from factcircuits.models.tiny import tiny_hf_model

    readout = final_readout(lm.model)
    family = lm.provenance["resolved_name"].removeprefix("tiny-")
    weight = tiny_hf_model(family=family, n_layers=lm.cfg.n_layers).model.norm.weight.float()
    own = (1 + weight) if family.startswith("gemma") else weight  # Gemma: x·(1 + w)
    assert (own - 1).abs().max() > 0.1  # the tiny models' gains are not trivially 1
    # Compatibility mode folded the gain into W_U.
    expected = torch.ones_like(own) if lm.provenance["processing"] == "compat" else own
    assert (readout.gain - expected).abs().max() < 1e-5
    assert readout.bias.abs().max() == 0


def test_frozen_scale_readout_reproduces_pre_cap_logits(lm):
    """(resid_final / scale) ⊙ gain @ W_U + b_U = the logits before any soft-cap."""
    tokens = encode(lm.tokenizer, PROMPTS[-1:]).tokens
    _, cache = lm.model.run_with_cache(tokens, names_filter=lambda n: n.startswith("ln_final"))
    resid, scale = cache["ln_final.hook_in"][0, -1], cache["ln_final.hook_scale"][0, -1]
    readout = final_readout(lm.model)
    pre_cap = readout.logits(resid / scale)
    raw = raw_final_logits(lm, PROMPTS[-1])
    if readout.soft_cap:
        assert (raw.abs() < readout.soft_cap).all()
        capped = readout.soft_cap * torch.tanh(pre_cap / readout.soft_cap)
        assert (capped - raw).abs().max() < 1e-4
        assert (pre_cap - raw).abs().max() > 0.1  # the cap is really active
    else:
        assert (pre_cap - raw).abs().max() < 1e-4
    ids = [3, 17, 42]
    columns = readout.columns(ids)
    by_columns = (resid / scale).float() @ columns + readout.bias_terms(ids)
    assert (by_columns - pre_cap[ids]).abs().max() < 1e-4


def test_post_norms_only_on_gemma2_and_3(lm):
    family = lm.provenance["resolved_name"]
    found = post_norm(lm.model, 0, "attn")
    assert (found is not None) == (family in ("tiny-gemma2", "tiny-gemma3"))
    if found is not None:
        gain, hook = found
        assert hook == "blocks.0.ln1_post.hook_scale"
        hf_norm = lm.model.original_model.model.layers[0].post_attention_layernorm
        assert (gain - (1 + hf_norm.weight.float())).abs().max() < 1e-5


@pytest.mark.parametrize("width", [6, 7])
def test_norm_affine_reads_layernorm_gain_and_bias(width):
    torch.manual_seed(0)
    norm = torch.nn.LayerNorm(width)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    gain, bias = norm_affine(norm, width)
    assert (gain - norm.weight).abs().max() < 1e-5
    assert (bias - norm.bias).abs().max() < 1e-5
