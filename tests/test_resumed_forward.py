"""A forward resumed at any layer is the full forward, on every model family (issue 18).

Causal tracing, activation patching and AtP*'s pattern probe resume the decoder at a block on
a stored residual. Gemma 2/3 pick each layer's attention type (RoPE base, sliding or global
mask) by its index in the layer list, so a resume that renumbers layers gives wrong numbers
that one-prompt, one-sample tests never see (every stacked forward then starts at layer 0).
Here every start layer is exercised: directly, and through tracing and patching with
`max_patches=1` (one start per forward), against one plain full forward per cell."""

from __future__ import annotations

import contextlib

import pytest
import torch
import transformer_lens.patching as tlp

from factcircuits.data.datasets import load_dataset
from factcircuits.errors import UnsupportedArchitectureError
from factcircuits.methods import causal_tracing as CT
from factcircuits.methods import engine
from factcircuits.methods import patching as P
from factcircuits.methods.evaluate import prepare
from factcircuits.methods.hooks import hook_name
from factcircuits.models import load_model
from factcircuits.models.tiny import SLIDING_WINDOW, tiny_model
from factcircuits.models.tokens import encode

FAMILIES = ["tiny", "tiny-gemma", "tiny-gemma2", "tiny-gemma3", "tiny-qwen2"]
TOL = 1e-5

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one thread

_MODELS: dict = {}


def model(spec: str):
    if spec not in _MODELS:
        _MODELS[spec] = load_model(spec)
    return _MODELS[spec]


def same_length_prompts(lm, n_tokens: int = 9):
    """The paris-cloze prompts of one token length (several prompts in one group), longer
    than the sliding window so that local and global layers really differ."""
    prepared = prepare(lm, load_dataset("paris-cloze"))
    lengths = encode(lm.tokenizer, prepared.prompts).lengths
    keep = (lengths == n_tokens).nonzero().flatten()
    assert len(keep) >= 3 and n_tokens > 2 * SLIDING_WINDOW
    return prepared.subset(keep)


def equal_length_pairs(lm):
    """Clean/corrupted pairs of equal token length (what patching needs), several lengths."""
    prepared = prepare(lm, load_dataset("paris-cloze"))
    clean = encode(lm.tokenizer, prepared.prompts).lengths
    corrupt = encode(lm.tokenizer, prepared.corrupted_prompts).lengths
    keep = (clean == corrupt).nonzero().flatten()
    assert len(keep) >= 3 and int(clean[keep].max()) > 2 * SLIDING_WINDOW
    return prepared.subset(keep)


# --------------------------------------------------------------------------- the resume itself
@pytest.mark.parametrize("spec", FAMILIES)
def test_a_resumed_forward_is_the_full_forward_at_every_start_and_past(spec):
    """Six layers (Gemma 3's period of 3 and Gemma 2's alternation both misalign when the
    start is renumbered), three prompts, every start layer, with and without a KV prefix:
    the last position's logits and the start block's attention pattern equal the full
    forward's."""
    family = "llama" if spec == "tiny" else spec.removeprefix("tiny-")
    lm = tiny_model(n_layers=6, family=family)
    tokens = encode(lm.tokenizer, same_length_prompts(lm).prompts).tokens
    n_layers = lm.cfg.n_layers
    names = [hook_name(layer, "resid_pre") for layer in range(n_layers)]
    patterns = [hook_name(layer, "pattern") for layer in range(n_layers)]
    with torch.no_grad():
        full_logits, cache = lm.model.run_with_cache(tokens, return_cache_object=False)
    full = full_logits[:, -1]
    runner = engine.Resumable(lm.model)
    _, resid, kv = engine.capture_reference(runner, lm.model, tokens)
    for layer in range(n_layers):  # the capture keeps what the full forward computes
        assert (resid[layer] - cache[names[layer]]).abs().max() <= TOL
    for start in range(n_layers):
        for past in (0, 3, tokens.shape[1] - 1):
            seen = {}

            def keep(act, hook, seen=seen):
                seen.setdefault(hook.name, act.detach().clone())
                return act

            prefix = [(k[:, :, :past], v[:, :, :past]) for k, v in kv]
            with torch.no_grad(), lm.model.hooks(fwd_hooks=[(patterns[start], keep)]):
                logits = runner.run(start, resid[start][:, past:], prefix, past)
            assert (logits - full).abs().max() <= TOL, (start, past)
            pattern = next(iter(seen.values()))  # queries past.., keys 0..
            expected = cache[patterns[start]][:, :, past:]
            assert (pattern - expected).abs().max() <= TOL, (start, past)


class RenumberingResume(engine.Resumable):
    """The resume before issue 18: blocks before `start` cut from the layer list, so the
    decoder numbers the remaining blocks from 0."""

    @contextlib.contextmanager
    def _sliced(self, start, residual):
        blocks = getattr(self.decoder, self.attr)
        first = self.model.blocks[start]
        first._start_at_layer_idx, first._start_residual = start, residual
        setattr(self.decoder, self.attr, torch.nn.ModuleList(list(blocks)[start:]))
        try:
            with self._cache_kwarg():
                yield
        finally:
            setattr(self.decoder, self.attr, blocks)
            first._start_at_layer_idx, first._start_residual = None, None


@pytest.mark.parametrize("family", ["gemma2", "gemma3"])
def test_a_resume_that_renumbers_layers_is_refused(family):
    """The run-time check catches the old renumbering resume on models whose layers differ
    by index, in one line, instead of letting it give wrong numbers; uniform models pass."""
    lm = tiny_model(n_layers=6, family=family, seed=1)
    assert engine.Resumable(lm.model).check_resumes() <= TOL
    with pytest.raises(UnsupportedArchitectureError,
                       match=r"ForCausalLM: a forward resumed at layer [1-5] differs"):
        RenumberingResume(lm.model).check_resumes()
    uniform = tiny_model(n_layers=6, family="llama", seed=1)
    assert RenumberingResume(uniform.model).check_resumes() <= TOL


# --------------------------------------------------------------------------- causal tracing
def traced_by_hand(lm, prepared, subjects, kinds, windows, noise_samples, seed, std):
    """ROME's trace with one full forward per (kind, layer, position): noise at hook_embed
    drawn in the tracer's documented order (sample, then prompt), every clean state of the
    window restored at that position; P(answer) averaged over noise samples."""
    tokens = encode(lm.tokenizer, prepared.prompts).tokens
    G, n = tokens.shape
    generator = torch.Generator().manual_seed(seed)
    noise = torch.zeros(noise_samples * G, n, lm.cfg.d_model)
    for s in range(noise_samples):
        for g in range(G):
            noise[s * G + g, subjects[g]] = 3.0 * std * torch.randn(
                len(subjects[g]), lm.cfg.d_model, generator=generator)
    rows = torch.arange(G).repeat(noise_samples)
    batch = tokens.repeat(noise_samples, 1)
    _, clean = lm.model.run_with_cache(batch, return_cache_object=False)
    hook_of = {"hidden": "resid_post", "mlp": "mlp_out", "attn": "attn_out"}
    out = {}
    for kind in kinds:
        out[kind] = torch.zeros(lm.cfg.n_layers, n, G)
        for layer in range(lm.cfg.n_layers):
            window = CT.window_layers(layer, windows[kind], lm.cfg.n_layers)
            for pos in range(min(subjects[0]), n):
                def restore(act, hook, pos=pos):
                    act[:, pos] = clean[hook.name][:, pos]
                    return act

                hooks = [("hook_embed", lambda act, hook: act + noise.to(act.dtype))]
                hooks += [(f"blocks.{w}.hook_{hook_of[kind]}", restore) for w in window]
                with torch.no_grad():
                    logits = lm.model.run_with_hooks(batch, fwd_hooks=hooks)[:, -1]
                p = prepared.answer_probability(logits, rows).float()
                out[kind][layer, pos] = p.view(noise_samples, G).mean(0)
    return out


@pytest.mark.parametrize("spec", FAMILIES)
def test_causal_tracing_resumed_at_every_layer_equals_full_forwards(spec):
    """Three prompts, two noise samples, every kind with windows of 1 and 3 layers: one start
    per forward (`max_patches=1`) and the default stacking both equal one plain full forward
    per cell."""
    lm = model(spec)
    prepared = same_length_prompts(lm)
    subjects = [[2, 3, 4]] * len(prepared.prompts)
    kinds, windows, seed, samples = ("hidden", "mlp", "attn"), {"mlp": 1, "attn": 3}, 5, 2
    traces = {max_patches: CT.trace(lm, prepared, kinds=kinds, windows=windows,
                                    noise_samples=samples, seed=seed, progress=False,
                                    subject_positions=subjects, max_patches=max_patches)
              for max_patches in (1, "auto")}
    std = traces[1]["hidden"].noise_std
    expected = traced_by_hand(lm, prepared, subjects, kinds, {"hidden": 1, **windows},
                              samples, seed, std)
    first = min(subjects[0])
    for kind in kinds:
        for max_patches, trace in traces.items():
            got = trace[kind].values[:, first:]
            diff = (got - expected[kind][:, first:]).abs().max()
            assert diff <= TOL, (kind, max_patches, float(diff))


# --------------------------------------------------------------------------- patching
@pytest.mark.slow  # TransformerLens's reference is one forward per cell (~10 s a family)
@pytest.mark.parametrize("spec", FAMILIES)
def test_patching_resumed_at_every_layer_equals_transformer_lens(spec):
    """Positions (resid_pre, attention and MLP outputs) and heads (all positions; by position
    for the first pair) for pairs of several lengths patched in one call: one start per
    forward (`max_patches=1`) and the default stacking both equal, pair by pair,
    TransformerLens's one-full-forward-per-cell patching; so does noising, against TL's
    patching of the corrupted cache into the clean run."""
    lm = model(spec)
    prepared = equal_length_pairs(lm)
    clean = encode(lm.tokenizer, prepared.prompts)
    corrupt = encode(lm.tokenizer, prepared.corrupted_prompts)
    assert len(set(clean.lengths.tolist())) > 1  # several groups
    reference = {"resid_pre": tlp.get_act_patch_resid_pre,
                 "attn_out": tlp.get_act_patch_attn_out,
                 "mlp_out": tlp.get_act_patch_mlp_out,
                 "heads": tlp.get_act_patch_attn_head_out_all_pos,
                 "heads_by_pos": tlp.get_act_patch_attn_head_out_by_pos}
    ours = {"heads": P.patch_heads, "heads_by_pos": P.patch_heads_by_pos}
    # noising (corrupted into clean) is TL's patching with the runs swapped; checked with the
    # default stacking, beside denoising with both
    runs = [(1, "denoising"), ("auto", "denoising"), ("auto", "noising")]
    for max_patches, direction in runs:
        kw = dict(max_patches=max_patches, progress=False, direction=direction)
        results = {c: (ours[c](lm, prepared, **kw) if c in ours else
                       P.patch(lm, prepared, c, **kw)) for c in reference}
        for i in range(len(prepared.prompts)):  # TL patches one length at a time: per pair
            n = int(clean.lengths[i])
            clean_tokens, corrupt_tokens = clean.tokens[[i], :n], corrupt.tokens[[i], :n]
            source, target = ((clean_tokens, corrupt_tokens) if direction == "denoising"
                              else (corrupt_tokens, clean_tokens))
            _, cache = lm.model.run_with_cache(source)

            def metric(logits, i=i):
                return prepared.metric(logits[:, -1], torch.tensor([i])).mean()

            for component, tl_fn in reference.items():
                if component == "heads_by_pos" and i:  # one pair: TL runs layers × pos × heads
                    continue
                ref = tl_fn(lm.model, target, cache, metric).cpu()
                mine = results[component].values[..., i]
                if component != "heads":  # [layer, pos(, head)]: this pair's positions
                    mine = mine[:, :n]
                # float32 rounding grows with the metric's size: 1e-5 of it, at least 1e-5
                tol = TOL * max(1.0, float(ref.abs().max()))
                diff = (mine - ref).abs().max()
                assert diff <= tol, (component, i, max_patches, direction, float(diff), tol)
