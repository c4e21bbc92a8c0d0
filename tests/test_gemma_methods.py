"""Methods on tiny random-weight Gemma 1, 2 and 3 models (and the Llama one) built in memory:
DLA sums to the pre-cap metric and heads/neurons add up to their layer (post-sublayer norms),
the unprocessed bridge gives the compatibility path's tables, causal tracing equals a
plain-hook reference, and the tracing noise is 3× the std of the embeddings it is added to.
Fast patching and tracing resumed at every layer: test_resumed_forward.py."""

from __future__ import annotations

import math

import pytest
import torch

from factcircuits.data.datasets import load_dataset
from factcircuits.methods import attribution as A
from factcircuits.methods import causal_tracing as CT
from factcircuits.methods import logit_lens as LL
from factcircuits.methods.evaluate import prepare
from factcircuits.models import load_model
from factcircuits.models.tiny import tiny_hf_model
from factcircuits.models.tokens import encode

FAMILIES = ["tiny", "tiny-gemma", "tiny-gemma2", "tiny-gemma3"]
TOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one thread


_MODELS: dict = {}


def model(spec: str, processing: str = "none"):
    if (spec, processing) not in _MODELS:
        _MODELS[spec, processing] = load_model(spec, processing=processing)
    return _MODELS[spec, processing]


def equal_length_pairs(lm, n_max=3):
    """Cloze pairs with equal clean/corrupted token lengths, longest first: the prompts reach
    past the sliding window."""
    prepared = prepare(lm, load_dataset("paris-cloze"))
    clean = encode(lm.tokenizer, prepared.prompts).lengths
    corrupt = encode(lm.tokenizer, prepared.corrupted_prompts).lengths
    keep = (clean == corrupt).nonzero().flatten()
    keep = keep[clean[keep].argsort(descending=True)][:n_max]
    return prepared.subset(keep)


def raw_pre_cap_logits(lm, prompts):
    """Logits before the soft-cap from a fresh transformers model with the original weights:
    the final norm's output (last hidden state) through lm_head."""
    family = lm.provenance["resolved_name"].removeprefix("tiny-")
    hf = tiny_hf_model(seed=lm.provenance["seed"], n_layers=lm.cfg.n_layers, family=family)
    rows = []
    for prompt in prompts:
        ids = encode(lm.tokenizer, [prompt]).tokens
        with torch.no_grad():
            hidden = hf.model(ids).last_hidden_state[0, -1]
            rows.append(hf.lm_head(hidden).float())
    return torch.stack(rows)


# --------------------------------------------------------------------------- DLA
@pytest.mark.parametrize("processing", ["none", "compat"])
@pytest.mark.parametrize("spec", FAMILIES)
def test_dla_sums_to_the_pre_cap_metric(spec, processing):
    lm = model(spec, processing)
    prepared = prepare(lm, load_dataset("paris-cloze")).subset([0, 1, 2, 3])
    dec = A.decompose(lm, prepared)
    raw = raw_pre_cap_logits(lm, prepared.prompts)
    assert (dec.pre_cap_logits - raw).abs().max() < TOL
    if spec == "tiny-gemma2":  # the cap is active: capped and pre-cap logits really differ
        assert (dec.logits - dec.pre_cap_logits).abs().max() > 0.1
        assert "before the cap" in A.soft_cap_note(lm)
    direction = A.answer_direction(lm, prepared, dec.pre_cap_logits)
    assert torch.allclose(direction.target, prepared.metric(raw), atol=TOL)
    assert A.sum_check(dec, direction)["error"].abs().max() < 1e-3


@pytest.mark.parametrize("processing", ["none", "compat"])
@pytest.mark.parametrize("spec", FAMILIES)
def test_heads_and_neurons_add_up_to_their_layer(spec, processing):
    """Bias-free models: the heads of a layer sum to its attention DLA with nothing left over,
    and the neurons to its MLP DLA, also through Gemma 2/3's post-sublayer norms."""
    lm = model(spec, processing)
    prepared = prepare(lm, load_dataset("paris-cloze")).subset([0, 1, 2])
    dec = A.decompose(lm, prepared)
    direction = A.answer_direction(lm, prepared, dec.pre_cap_logits)
    layers = A.layer_dla(dec, direction)
    heads = A.head_dla(lm, dec, direction)
    assert heads.loc[heads["head"] == -1, "dla"].abs().max() < TOL  # nothing outside the heads
    by_layer = heads.groupby(["prompt", "layer"])["dla"].sum()
    attn = layers[layers.component == "attn"].set_index(["prompt", "layer"])["dla"]
    assert (by_layer - attn).abs().max() < TOL
    layer = lm.cfg.n_layers - 1
    neurons = A.neuron_dla(lm, prepared, layer, direction)
    mlp = layers[(layers.component == "mlp") & (layers.layer == layer)].set_index("prompt")["dla"]
    assert (neurons.groupby("prompt")["dla"].sum() - mlp).abs().max() < TOL


@pytest.mark.parametrize("spec", FAMILIES)
def test_unprocessed_bridge_gives_the_compatibility_tables(spec):
    tables = {}
    for processing in ("none", "compat"):
        lm = model(spec, processing)
        prepared = prepare(lm, load_dataset("paris-cloze")).subset([0, 1, 2])
        dec = A.decompose(lm, prepared)
        direction = A.answer_direction(lm, prepared, dec.pre_cap_logits)
        lens = LL.logit_lens(lm, prepared, dec=dec)
        top = LL.top_tokens(lm, dec, k=3,
                            answer_ids=[int(prepared.answer_ids[0])])
        tables[processing] = {
            "layer": A.layer_dla(dec, direction)["dla"],
            "head": A.head_dla(lm, dec, direction)["dla"],
            "neuron": A.neuron_dla(lm, prepared, 1, direction)["dla"],
            "lens": lens.table["value"], "top": top.drop(columns=["top_probs"]),
            "top_probs": top["top_probs"],
        }
    none, compat = tables["none"], tables["compat"]
    for key in ("layer", "head", "neuron", "lens"):
        assert (none[key] - compat[key]).abs().max() < TOL, key
    assert none["top"].equals(compat["top"])


@pytest.mark.parametrize("spec", FAMILIES)
def test_logit_lens_last_step_is_the_models_prediction(spec):
    lm = model(spec)
    prepared = prepare(lm, load_dataset("paris-cloze")).subset([0])
    dec = A.decompose(lm, prepared, heads=False)
    top = LL.top_tokens(lm, dec, k=3)
    probs = dec.logits[0].softmax(-1).topk(3)
    expected = " | ".join(repr(lm.tokenizer.decode([int(t)])) for t in probs.indices)
    assert top["top_tokens"].iloc[-1] == expected
    assert top["top_probs"].iloc[-1] == " | ".join(f"{float(p):.3f}" for p in probs.values)


# --------------------------------------------------------------------------- causal tracing
def subject_of(lm, prompt):
    """Positions of the tokens 'Eiffel Tower'-style subject: here the first two tokens after
    BOS and 'The' (any fixed span works for the reference)."""
    return [2, 3, 4]


@pytest.mark.parametrize("spec", ["tiny", "tiny-gemma", "tiny-gemma2", "tiny-gemma3"])
def test_noise_is_three_times_the_std_of_the_embeddings_it_is_added_to(spec):
    lm = model(spec)
    prepared = equal_length_pairs(lm, n_max=2)
    subjects = [subject_of(lm, p) for p in prepared.prompts]
    trace = CT.trace(lm, prepared, kinds=("hidden",), noise_samples=1, progress=False,
                     subject_positions=subjects)["hidden"]
    # Independent expectation: the embedding rows of the subject tokens, times √d_model where
    # the architecture scales embeddings (every Gemma), never the std of W_E alone.
    W_E = lm.model.original_model.get_input_embeddings().weight.detach().float()
    scale = math.sqrt(lm.cfg.d_model) if "gemma" in spec else 1.0
    batch = encode(lm.tokenizer, prepared.prompts)
    rows = torch.cat([W_E[batch.tokens[i, s]] for i, s in enumerate(subjects)]) * scale
    assert trace.noise_std == pytest.approx(float(rows.std()), rel=1e-4)
    assert trace.noise_scale == 3.0
    if "gemma" in spec:
        assert trace.noise_std > 4 * float(W_E.std())


@pytest.mark.parametrize("spec", ["tiny-gemma2", "tiny-gemma3"])
def test_causal_tracing_equals_a_plain_hook_reference(spec):
    """One prompt, one noise sample: the noise is the generator's first draw, so a reference
    with TransformerLens hooks (noise at hook_embed, restore one clean state) is exact."""
    lm = model(spec)
    prepared = equal_length_pairs(lm, n_max=1)
    subjects = [subject_of(lm, prepared.prompts[0])]
    seed, kinds = 3, ("hidden", "mlp")
    traces = CT.trace(lm, prepared, kinds=kinds, windows={"mlp": 1}, noise_samples=1,
                      seed=seed, progress=False, subject_positions=subjects)
    std = traces["hidden"].noise_std
    tokens = encode(lm.tokenizer, prepared.prompts).tokens
    n = tokens.shape[1]
    noise = torch.zeros(1, n, lm.cfg.d_model)
    generator = torch.Generator().manual_seed(seed)
    noise[0, subjects[0]] = 3.0 * std * torch.randn(len(subjects[0]), lm.cfg.d_model,
                                                    generator=generator)
    _, clean = lm.model.run_with_cache(tokens)

    def add_noise(act, hook):
        return act + noise.to(act.dtype)

    def restore(pos):
        def hook(act, hook):
            act[:, pos] = clean[hook.name][:, pos]
            return act
        return hook

    names = {"hidden": "blocks.{}.hook_resid_post", "mlp": "blocks.{}.hook_mlp_out"}
    for kind in kinds:
        for layer in range(lm.cfg.n_layers):
            for pos in range(min(subjects[0]), n):
                logits = lm.model.run_with_hooks(tokens, fwd_hooks=[
                    ("hook_embed", add_noise), (names[kind].format(layer), restore(pos))])
                expected = prepared.answer_probability(logits[:, -1].detach())[0]
                got = traces[kind].values[layer, pos, 0].detach()
                assert abs(float(got) - float(expected)) < TOL, (kind, layer, pos)
