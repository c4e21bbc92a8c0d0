"""The forward pass with one residual stream per reader input: the one implementation behind
edge scores (gradients with respect to each reader input) and exact circuit evaluation (each
reader input rebuilt from in-circuit and ablated writes).

For a circuit with edge weights w(u, r) ∈ {0, 1}, reader input r of a run receives

    x_r = Σ_u  w(u, r) · a_u  +  (1 − w(u, r)) · ā_u

where a_u is writer u's output in this same run and ā_u its output in the reference run (the
corrupted prompt's run for counterfactual ablation, a mean for mean ablation). Each reader then
applies its own pre-norm to its own input: a query head's input goes through the block's input
norm, its query projection slice, Gemma 3's query norm and RoPE; a key/value head's inputs
likewise (one key input and one value input per key/value head under grouped-query attention);
attention is recomputed per query head with the model's own attention function
(`eager_attention_forward` of the model's transformers module: scaling, Gemma 2's logit
soft-capping) under a causal mask with the layer's sliding window; the MLP reads its own input.
With every w = 1 this is the model's own forward (tested to 1e-5 on every tiny family), with
every w = 0 it is the reference run.

Post-sublayer norms (Gemma 2/3): the norm's scale is the one the run itself computes on its
summed attention output (MLP output), so a head's write is o_h · gain / s and the writes of a
layer's heads sum exactly to what the block adds to its residual. The scale is read off the
model's own norm module (s from the least-squares fit of its output to input ⊙ gain), so the
norm's epsilon and gain convention are the model's.

Prompts of one token length only (no padding, no attention mask beyond the causal one).
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from factcircuits.errors import UserError
from factcircuits.methods.circuits.graph import Graph
from factcircuits.models.readout import norm_affine


def _raw(module):
    """The Hugging Face module a TransformerBridge component wraps (itself otherwise)."""
    return getattr(module, "original_component", None) or module


class _Stop(Exception):
    """Raised by a hook to end a forward once the first block's input is captured."""


@dataclass
class _Layer:
    attn: torch.nn.Module  # the HF attention module (for its attention function's settings)
    ln1: torch.nn.Module
    ln2: torch.nn.Module
    post_attn: torch.nn.Module | None
    post_mlp: torch.nn.Module | None
    post_attn_gain: Tensor | None
    post_mlp_gain: Tensor | None
    mlp: torch.nn.Module
    Wq: Tensor  # [H, d_head, d_model]
    Wk: Tensor  # [KV, d_head, d_model]
    Wv: Tensor
    bq: Tensor | None  # [H, d_head]
    bk: Tensor | None
    bv: Tensor | None
    Wo: Tensor  # [H, d_model, d_head]
    q_norm: torch.nn.Module | None
    k_norm: torch.nn.Module | None
    layer_type: str | None


@dataclass
class Run:
    """A forward's outputs: final-position logits, optionally every writer's output and every
    reader input (per block, in graph order: [N, pos, readers, d_model])."""

    logits: Float[Tensor, "batch vocab"]
    writes: Float[Tensor, "batch pos n_writers d_model"] | None = None
    inputs: list[Tensor] | None = None


class CircuitForward:
    """The model's decoder rebuilt from its own modules, with per-reader-input residuals."""

    def __init__(self, lm):
        self.model = model = lm.model
        self.hf = hf = getattr(model, "original_model", None)
        if hf is None:
            raise UserError("circuits need a TransformerBridge over a Hugging Face model")
        self.graph = Graph.of(model)
        self.decoder = getattr(hf, "model", hf)
        self.rotary = _raw(self.decoder.rotary_emb)
        self.rotary_typed = "layer_type" in inspect.signature(self.rotary.forward).parameters
        self.softcap = getattr(hf.config, "final_logit_softcapping", None)
        d = model.cfg.d_model
        self.layers = [self._layer(block, d) for block in model.blocks]
        attn = self.layers[0].attn
        modeling = sys.modules[type(attn).__module__]
        self.attention_fn = modeling.eager_attention_forward
        self.apply_rotary = modeling.apply_rotary_pos_emb
        self.ln_final = _raw(model.ln_final)

    def _layer(self, block, d_model: int) -> _Layer:
        g = self.graph
        attn = _raw(block.attn)
        dh = attn.head_dim

        def heads(linear, n):
            w = linear.weight.detach().view(n, dh, d_model)
            b = linear.bias
            return w, None if b is None else b.detach().view(n, dh)

        if getattr(attn.o_proj, "bias", None) is not None:
            raise UserError("circuits: attention output biases are not supported (they belong "
                            "to no head)")
        Wq, bq = heads(attn.q_proj, g.n_heads)
        Wk, bk = heads(attn.k_proj, g.n_kv_heads)
        Wv, bv = heads(attn.v_proj, g.n_kv_heads)
        Wo = attn.o_proj.weight.detach().view(d_model, g.n_heads, dh).permute(1, 0, 2)
        post_attn = getattr(block, "ln1_post", None)
        post_mlp = getattr(block, "ln2_post", None)
        gain = lambda m: None if m is None else norm_affine(m, d_model)[0].to(Wq)  # noqa: E731
        qn, kn = getattr(attn, "q_norm", None), getattr(attn, "k_norm", None)
        return _Layer(attn, _raw(block.ln1), _raw(block.ln2),
                      None if post_attn is None else _raw(post_attn),
                      None if post_mlp is None else _raw(post_mlp), gain(post_attn),
                      gain(post_mlp), _raw(block.mlp), Wq, Wk, Wv, bq, bk, bv, Wo.contiguous(),
                      None if qn is None else _raw(qn), None if kn is None else _raw(kn),
                      getattr(attn, "layer_type", None))

    # ------------------------------------------------------------------ pieces
    @torch.no_grad()
    def embed(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        """The input node's write: what the model feeds its first block (Gemma's √d_model
        scaling included, whichever module applies it)."""
        kept = []

        def stop(_module, args, kwargs):
            kept.append(args[0] if args else kwargs["hidden_states"])
            raise _Stop

        handle = self.model.blocks[0].register_forward_pre_hook(stop, with_kwargs=True)
        try:
            self.decoder(input_ids=tokens.to(self.model.cfg.device))
        except _Stop:
            pass
        finally:
            handle.remove()
        return kept[0].detach()

    def _positions(self, x: Tensor):
        n = x.shape[1]
        pos = torch.arange(n, device=x.device).unsqueeze(0)
        rope = {}
        for layer in self.layers:
            key = layer.layer_type if self.rotary_typed else None
            if key not in rope:
                args = (key,) if self.rotary_typed else ()
                rope[key] = self.rotary(x, pos, *args)
        i, j = pos[0].view(-1, 1), pos[0].view(1, -1)
        masks = {}
        for layer in self.layers:
            window = getattr(layer.attn, "sliding_window", None)
            if window not in masks:
                allowed = (j <= i) if window is None else (j <= i) & (j > i - window)
                masks[window] = torch.zeros(n, n, dtype=x.dtype, device=x.device).masked_fill(
                    ~allowed, torch.finfo(x.dtype).min).view(1, 1, n, n)
        return rope, masks

    def attention(self, index: int, xq, xk, xv, rope, masks):
        """Head writes [N, pos, H, d_model] of layer `index` for query inputs [N, pos, H, d]
        and key/value inputs [N, pos, KV, d]."""
        L = self.layers[index]

        def project(x, W, b, norm):
            out = torch.einsum("nphd,hed->nphe", L.ln1(x), W)
            if b is not None:
                out = out + b
            return out if norm is None else norm(out)

        q = project(xq, L.Wq, L.bq, L.q_norm).transpose(1, 2)
        k = project(xk, L.Wk, L.bk, L.k_norm).transpose(1, 2)
        v = project(xv, L.Wv, L.bv, None).transpose(1, 2)
        cos, sin = rope[L.layer_type if self.rotary_typed else None]
        q, k = self.apply_rotary(q, k, cos, sin)
        window = getattr(L.attn, "sliding_window", None)
        z, _ = self.attention_fn(L.attn, q, k, v, masks[window], dropout=0.0,
                                 scaling=L.attn.scaling,
                                 softcap=getattr(L.attn, "attn_logit_softcapping", None),
                                 sliding_window=window)
        o = torch.einsum("nphe,hde->nphd", z, L.Wo)
        return o if L.post_attn is None else _post_normed(o, L.post_attn, L.post_attn_gain, 2)

    def mlp(self, index: int, x: Float[Tensor, "N pos d_model"]) -> Tensor:
        L = self.layers[index]
        out = L.mlp(L.ln2(x))
        return out if L.post_mlp is None else L.post_mlp(out)

    def unembed(self, x: Float[Tensor, "N d_model"]) -> Float[Tensor, "N vocab"]:
        logits = self.model.unembed(self.ln_final(x))
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    # ------------------------------------------------------------------ runs
    def run(self, embeds: Float[Tensor, "N pos d_model"], keep_writes: bool = False,
            keep_inputs: bool = False, edit=None) -> Run:
        """Every edge in: the model's forward from `embeds` (the input node's write). With
        `keep_inputs` every reader input is its own tensor (views of the residual), so
        gradients with respect to them are each reader's own. `edit(block, x)`, if given,
        returns the reader inputs x [N, pos, readers, d_model] of each edge block (graph
        order) to use instead (single-edge patching)."""
        g = self.graph
        N, n, d = embeds.shape
        rope, masks = self._positions(embeds)
        writes = [embeds] if keep_writes else None
        inputs = [] if keep_inputs else None
        resid = embeds
        for layer in range(g.n_layers):
            x = resid.unsqueeze(2).expand(N, n, g.n_attn_readers, d)
            if edit is not None:
                x = edit(2 * layer, x)
            if keep_inputs:
                inputs.append(x)
            H, KV = g.n_heads, g.n_kv_heads
            heads = self.attention(layer, x[:, :, :H], x[:, :, H:H + KV], x[:, :, H + KV:],
                                   rope, masks)
            resid = resid + heads.sum(2)
            xm = resid.unsqueeze(2)
            if edit is not None:
                xm = edit(2 * layer + 1, xm)
            if keep_inputs:
                xm = xm.expand(N, n, 1, d)
                inputs.append(xm)
            out = self.mlp(layer, xm[:, :, 0])
            resid = resid + out
            if keep_writes:
                writes += [heads.unbind(2), [out]]
        xf = resid.unsqueeze(2)
        if edit is not None:
            xf = edit(2 * g.n_layers, xf)
        if keep_inputs:
            xf = xf.expand(N, n, 1, d)
            inputs.append(xf)
        logits = self.unembed(xf[:, -1, 0])
        stacked = None
        if keep_writes:
            flat = [writes[0]] + [t for part in writes[1:] for t in part]
            stacked = torch.stack(flat, 2)
        return Run(logits, stacked, inputs)

    @torch.no_grad()
    def run_circuits(self, embeds: Float[Tensor, "batch pos d_model"],
                     reference: Float[Tensor, "batch pos n_writers d_model"],
                     weights: Float[Tensor, "circuits n_edges"]
                     ) -> Float[Tensor, "circuits batch vocab"]:
        """Final-position logits of the prompts `embeds` for each circuit of `weights` (1 =
        edge kept, 0 = its reader gets the reference write; fractions interpolate), with the
        reference run's writes `reference` (broadcastable: a mean write per writer is
        [1, 1, n_writers, d])."""
        g = self.graph
        B, n, d = embeds.shape
        C = weights.shape[0]
        weights = weights.to(embeds)
        blocks = g.split(weights)
        reference = reference.to(embeds).expand(B, n, g.n_writers, d)
        rope, masks = self._positions(embeds)
        writes = embeds.new_zeros(C, B, n, g.n_writers, d)
        writes[:, :, :, 0] = embeds
        H, KV = g.n_heads, g.n_kv_heads

        def mix(W, n_u, last_only=False):
            # a strided view of the writes into one broadcast matmul: an einsum would first
            # copy them (as large as the writes themselves, the peak of the evaluation)
            a, ref = writes[:, :, :, :n_u], reference[:, :, :n_u]
            if last_only:
                a, ref = a[:, :, -1:], ref[:, -1:]
            own = torch.matmul(W[:, None], a.flatten(1, 2)).view(C, B, a.shape[2], -1, d)
            return own + torch.einsum("bpud,cru->cbprd", ref, 1 - W)

        for layer in range(g.n_layers):
            (_, _, _, n_a, _), (_, _, _, n_m, _) = g.blocks[2 * layer], g.blocks[2 * layer + 1]
            x = mix(blocks[2 * layer], n_a).reshape(C * B, n, g.n_attn_readers, d)
            heads = self.attention(layer, x[:, :, :H], x[:, :, H:H + KV], x[:, :, H + KV:],
                                   rope, masks)
            first = g.head_writer(layer, 0)
            writes[:, :, :, first:first + H] = heads.view(C, B, n, H, d)
            xm = mix(blocks[2 * layer + 1], n_m).reshape(C * B, n, d)
            writes[:, :, :, g.mlp_writer(layer)] = self.mlp(layer, xm).view(C, B, n, d)
        xf = mix(blocks[-1], g.n_writers, last_only=True).reshape(C * B, d)
        return self.unembed(xf).view(C, B, -1)


def _post_normed(o: Tensor, norm, gain: Tensor, axis: int) -> Tensor:
    """Per-writer parts of norm(o.sum(axis)): o · gain / s, with s the norm's scale on the sum,
    read off the norm module's own output (least squares of y against sum ⊙ gain)."""
    total = o.sum(axis)
    y = norm(total)
    tg = total * gain
    c = (y * tg).sum(-1, keepdim=True) / (tg * tg).sum(-1, keepdim=True).clamp_min(1e-30)
    return o * (c.unsqueeze(axis) * gain)
