"""How the residual stream becomes logits, read off the bridge in either processing mode, so
attributions can be exact on the unprocessed bridge (no folded copy of the weights).

With the final norm's scale frozen at its value on the final residual, the pre-cap logits are
linear in the residual stream:

    logits = ((resid − centre) / scale ⊙ gain + bias) @ W_U + b_U

`gain` and `bias` are the final norm's affine part. In compatibility mode TransformerLens has
folded them into W_U (gain 1, bias 0); on the unprocessed bridge they are the model's own (for
Gemma: 1 + w). They are measured by running the bridge's own norm component on a probe vector,
so every convention (w, 1 + w, LayerNorm's bias) is covered without knowing it.

Gemma 2/3 also normalise each sublayer's output before adding it to the residual
(`post_attention_layernorm`, `post_feedforward_layernorm`): the attention output is then
gain ⊙ (Σ heads + b_O) / scale, linear in the heads with that scale frozen (hook
`blocks.L.ln1_post.hook_scale`; MLP: `ln2_post`). `post_norm` gives that gain.

Only columns of W_U are ever gathered (the answer tokens), never a second full matrix: a
262k-token vocabulary in float32 is 0.7 GB on Gemma 3.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PROBE_SCALE = 1e3  # large RMS: the norm's eps (≤ 1e-5) changes the probe by < 1e-11


@torch.no_grad()
def norm_affine(component, d_model: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(gain, bias) [d_model] of a norm component: out = normalised(x) ⊙ gain + bias.

    Probed with x = ±PROBE_SCALE alternating (mean 0, so RMSNorm and LayerNorm normalise it
    alike to x / RMS(x)): f(x) and f(−x) give the bias as their mean and the gain as their
    half-difference. With an odd width the last entry is 0 (keeping the mean 0), so a second
    probe, rolled by one, reads it."""
    param = next(component.parameters(), None)
    device = param.device if param is not None else "cpu"
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    signs = torch.ones(d_model)
    signs[1::2] = -1.0
    if d_model % 2:
        signs[-1] = 0.0
    gain, bias = torch.zeros(d_model), torch.zeros(d_model)
    for pattern in (signs, signs.roll(1)) if d_model % 2 else (signs,):
        probe = (pattern * PROBE_SCALE).reshape(1, 1, d_model).to(device, dtype)
        plus = component(probe).float().reshape(-1).cpu()
        minus = component(-probe).float().reshape(-1).cpu()
        rms = float(pattern.pow(2).mean().sqrt())
        seen = pattern != 0
        gain[seen] = ((plus - minus) / 2 * rms / torch.where(seen, pattern, 1.0))[seen]
        bias[seen] = ((plus + minus) / 2)[seen]
    return gain, bias


def _norm_type(model) -> str:
    return str(getattr(model.cfg, "normalization_type", "RMS") or "RMS")


@dataclass
class Readout:
    """The final norm's affine part and the unembedding, for exact frozen-scale readouts."""

    model: object  # the TransformerBridge
    gain: torch.Tensor  # [d_model]
    bias: torch.Tensor  # [d_model]
    centre: bool  # LayerNorm-type final norm: the residual is centred before scaling
    soft_cap: float | None  # final-logit soft-capping (Gemma 2), applied after these logits

    def columns(self, ids) -> torch.Tensor:
        """[d_model, k]: the directions in the normalised residual whose dot product is the
        pre-cap logit of each token id (gain folded in), float32 on CPU."""
        ids = torch.as_tensor(ids, dtype=torch.long)
        W_U = self.model.W_U.detach()
        cols = W_U[:, ids.to(W_U.device)].float().cpu()
        return self.gain[:, None] * cols

    def bias_terms(self, ids) -> torch.Tensor:
        """[k]: the constant part of each token's pre-cap logit (b_U and the norm's bias)."""
        ids = torch.as_tensor(ids, dtype=torch.long)
        W_U = self.model.W_U.detach()
        out = self.bias @ W_U[:, ids.to(W_U.device)].float().cpu()
        b_U = getattr(self.model, "b_U", None)
        if b_U is not None:
            out = out + b_U.detach()[ids.to(b_U.device)].float().cpu()
        return out

    def logits(self, normalised: torch.Tensor) -> torch.Tensor:
        """Pre-cap logits [..., vocab] of residuals already divided by their scale (and
        centred for LayerNorm), in float32 on CPU, computed in the model's dtype on its
        device."""
        W_U = self.model.W_U.detach()
        x = (normalised.float() * self.gain + self.bias).to(W_U.device, W_U.dtype)
        out = x @ W_U
        b_U = getattr(self.model, "b_U", None)
        if b_U is not None:
            out = out + b_U.detach()
        return out.float().cpu()

    def normalise(self, resid: torch.Tensor, eps: float) -> torch.Tensor:
        """Each residual normalised with its own scale (the ordinary logit lens), before the
        gain."""
        x = resid.float()
        if self.centre:
            x = x - x.mean(-1, keepdim=True)
        return x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()


def final_readout(model) -> Readout:
    gain, bias = norm_affine(model.ln_final, model.cfg.d_model)
    cap = getattr(model.cfg, "output_logits_soft_cap", -1.0) or -1.0
    return Readout(model, gain, bias, _norm_type(model).startswith("LN"),
                   float(cap) if cap > 0 else None)


POST_NORMS = {"attn": "ln1_post", "mlp": "ln2_post"}


def post_norm(model, layer: int, sublayer: str):
    """(gain [d_model], scale hook name) of the norm applied to `sublayer`'s ("attn" or "mlp")
    output of `layer` before it joins the residual stream, or None where there is none."""
    component = getattr(model.blocks[layer], POST_NORMS[sublayer], None)
    if component is None:
        return None
    gain, bias = norm_affine(component, model.cfg.d_model)
    if bias.abs().max() > 0:
        raise NotImplementedError("post-sublayer norms with a bias are not supported")
    return gain, f"blocks.{layer}.{POST_NORMS[sublayer]}.hook_scale"


