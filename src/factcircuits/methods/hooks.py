"""The one place that spells TransformerLens hook names: (layer, kind) → hook name, as ROME's
`layername(model, num, kind)`.

Kinds (TransformerLens names) and the short aliases the methods use:
  resid_pre    blocks.{l}.hook_resid_pre        residual entering block l
  resid_post   blocks.{l}.hook_resid_post       block output ("hidden" in ROME)
  attn_out     blocks.{l}.hook_attn_out         attention output ("attn")
  mlp_out      blocks.{l}.hook_mlp_out          MLP output ("mlp")
  z            blocks.{l}.attn.hook_z           per-head attention output before W_O ("head")
  pattern      blocks.{l}.attn.hook_pattern     attention pattern [batch, head, query, key]
  attn_scores  blocks.{l}.attn.hook_attn_scores pre-softmax attention scores
  mlp_post     blocks.{l}.mlp.hook_post         MLP neuron activations
Layer-free hooks: `EMBED` (token embeddings), `FINAL_NORM_SCALE` (the final norm's scale) and
`PRE_CAP_LOGITS` (the unembedding's output: the logits before any final soft-cap).
"""

from __future__ import annotations

from collections.abc import Iterable

from factcircuits.errors import UserError

HOOK_NAMES = {
    "resid_pre": "blocks.{layer}.hook_resid_pre",
    "resid_post": "blocks.{layer}.hook_resid_post",
    "attn_out": "blocks.{layer}.hook_attn_out",
    "mlp_out": "blocks.{layer}.hook_mlp_out",
    "z": "blocks.{layer}.attn.hook_z",
    "pattern": "blocks.{layer}.attn.hook_pattern",
    "attn_scores": "blocks.{layer}.attn.hook_attn_scores",
    "mlp_post": "blocks.{layer}.mlp.hook_post",
}
ALIASES = {"hidden": "resid_post", "attn": "attn_out", "mlp": "mlp_out", "head": "z"}
EMBED = "hook_embed"
FINAL_NORM_SCALE = "ln_final.hook_scale"
PRE_CAP_LOGITS = "unembed.hook_out"


def hook_name(layer: int, kind: str) -> str:
    """The hook name of `kind` (a TransformerLens kind or an alias, see above) in `layer`."""
    kind = ALIASES.get(kind, kind)
    if kind not in HOOK_NAMES:
        raise UserError(f"hook kind {kind!r}: use one of {', '.join([*HOOK_NAMES, *ALIASES])}")
    return HOOK_NAMES[kind].format(layer=int(layer))


def hook_names(kind: str, layers: Iterable[int]) -> list[str]:
    """`hook_name(layer, kind)` for each of `layers`, in order."""
    return [hook_name(layer, kind) for layer in layers]
