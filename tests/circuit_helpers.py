"""Independent plain computations for the circuit tests: prompt pairs of one token length on the
tiny models, every writer's output read off the model's own modules by hooks, and one edge
patched by hand (its reader's input rebuilt inside the model's own forward)."""

from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F

from factcircuits.methods.evaluate import PreparedTask

CLEAN = ["The capital of France is", "The capital of Italy is", "The capital of Germany is"]
CORRUPT = ["The capital of Spain is", "The capital of France is", "The capital of Italy is"]
ANSWERS, COUNTER = [" Paris", " Rome", " Berlin"], [" Madrid", " Paris", " Rome"]


def pairs(lm, answers=ANSWERS, counter=COUNTER) -> PreparedTask:
    tok = lm.tokenizer
    first = lambda w: tok.encode(w, add_special_tokens=False)[0]  # noqa: E731
    task = PreparedTask("cloze", "raw", pd.DataFrame(index=range(len(CLEAN))), list(CLEAN),
                        list(CORRUPT), torch.ones(len(CLEAN)),
                        answer_ids=torch.tensor([first(w) for w in answers]),
                        cf_ids=torch.tensor([first(w) for w in counter]))
    lengths = {len(tok(p)["input_ids"]) for p in CLEAN + CORRUPT}
    assert len(lengths) == 1, "the test prompts must share one token length"
    return task


def tokens(lm, prompts):
    return lm.tokenizer(prompts, return_tensors="pt")["input_ids"]


def _raw(m):
    return getattr(m, "original_component", None) or m


def writer_outputs(lm, toks) -> dict:
    """{("input",) | ("head", l, h) | ("mlp", l): [B, n, d]} of one plain forward, with
    Gemma 2/3's post-norm written out: o_h · (1 + w) / sqrt(mean(attn_out²) + eps)."""
    model = lm.model
    eps = model.original_model.config.rms_norm_eps
    got, handles = {}, []
    handles.append(model.blocks[0].register_forward_pre_hook(
        lambda m, a, k: got.__setitem__("input", (a[0] if a else k["hidden_states"]).clone()),
        with_kwargs=True))
    for layer, block in enumerate(model.blocks):
        attn = _raw(block.attn)
        handles.append(attn.o_proj.register_forward_pre_hook(
            lambda m, a, layer=layer: got.__setitem__(("z", layer), a[0].clone())))
        handles.append(attn.o_proj.register_forward_hook(
            lambda m, a, o, layer=layer: got.__setitem__(("attn_out", layer), o.clone())))
        target = getattr(block, "ln2_post", None) or block.mlp
        handles.append(target.register_forward_hook(
            lambda m, a, o, layer=layer: got.__setitem__(("mlp", layer), o.clone())))
    try:
        with torch.no_grad():
            model(toks)
    finally:
        for h in handles:
            h.remove()
    out = {("input",): got["input"]}
    for layer, block in enumerate(model.blocks):
        attn = _raw(block.attn)
        dh, W = attn.head_dim, attn.o_proj.weight
        total = got[("attn_out", layer)]
        post = getattr(block, "ln1_post", None)
        for h in range(model.cfg.n_heads):
            sl = slice(h * dh, (h + 1) * dh)
            o = got[("z", layer)][..., sl] @ W[:, sl].T
            if post is not None:
                scale = torch.rsqrt(total.pow(2).mean(-1, keepdim=True) + eps)
                o = o * scale * (1 + _raw(post).weight)
            out[("head", layer, h)] = o
        out[("mlp", layer)] = got[("mlp", layer)]
    return out


def hand_patched_logits(lm, toks, reader, old, new):
    """Final-position logits of `toks` with reader input `reader` (("q"|"k"|"v", layer,
    head) | ("mlp", layer) | ("logits",)) rebuilt as its residual − old + new; no other reader
    changes."""
    model = lm.model
    handles, resid = [], {}

    def shift(x):
        return x - old + new

    if reader[0] == "logits":
        handles.append(model.ln_final.register_forward_pre_hook(
            lambda m, a: (shift(a[0]),) + a[1:]))
    elif reader[0] == "mlp":
        handles.append(model.blocks[reader[1]].ln2.register_forward_pre_hook(
            lambda m, a: (shift(a[0]),) + a[1:]))
    else:
        kind, layer, index = reader
        block = model.blocks[layer]
        attn = _raw(block.attn)
        proj = {"q": attn.q_proj, "k": attn.k_proj, "v": attn.v_proj}[kind]
        handles.append(block.ln1.register_forward_pre_hook(
            lambda m, a: resid.__setitem__("x", a[0])))

        def replace(m, a, out):
            x = _raw(block.ln1)(shift(resid["x"]))
            mine = F.linear(x, proj.weight, proj.bias)
            sl = slice(index * attn.head_dim, (index + 1) * attn.head_dim)
            out = out.clone()
            out[..., sl] = mine[..., sl]
            return out

        handles.append(proj.register_forward_hook(replace))
    try:
        return model(toks)[:, -1]
    finally:
        for h in handles:
            h.remove()
