"""The loaded-model type and the one way to wrap a Hugging Face model in a TransformerBridge
(BOS handling, padding side, compatibility mode) with its provenance description."""

from __future__ import annotations

import importlib.metadata
import platform
from dataclasses import dataclass, field
from typing import Any

import torch

from factcircuits.models.tokens import adds_bos


@dataclass
class LoadedModel:
    model: Any  # transformer_lens.model_bridge.TransformerBridge
    # The model's own tokenizer. TransformerLens may swap the bridge's for one that always
    # adds BOS; all tokenization here goes through this one (see factcircuits.models.tokens).
    tokenizer: Any
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def cfg(self) -> Any:
        return self.model.cfg


_UNSET = object()


def boot_bridge(name, hf_model, tokenizer, device, dtype, processing):
    """Wrap a loaded HF model in a TransformerBridge with BOS handling matched to the tokenizer."""
    from transformer_lens.model_bridge import TransformerBridge

    if not getattr(hf_model.config, "architectures", None):
        hf_model.config.architectures = [type(hf_model).__name__]
    # TransformerLens reloads the tokenizer from its name unless the tokenizer declares that it
    # adds BOS (get_tokenizer_with_bos): a second full load (~10 s for Gemma's 262k vocabulary)
    # of a tokenizer nothing here uses. Declare it for the boot only; BOS handling below
    # follows what the tokenizer really does.
    declared = tokenizer.init_kwargs.get("add_bos_token", _UNSET)
    tokenizer.init_kwargs["add_bos_token"] = True
    try:
        bridge = TransformerBridge.boot_transformers(
            name, hf_model=hf_model.to(device), tokenizer=tokenizer, device=device, dtype=dtype
        )
    finally:
        if declared is _UNSET:
            tokenizer.init_kwargs.pop("add_bos_token", None)
        else:
            tokenizer.init_kwargs["add_bos_token"] = declared
    if processing == "compat":
        # No unembedding centring: it shifts every logit of a row by the same amount, which
        # changes what users read as logits (and the summed logit difference over answer sets
        # of unequal sizes) but no logit difference.
        bridge.enable_compatibility_mode(disable_warnings=True, center_unembed=False)
    else:
        bridge.enable_compatibility_mode(disable_warnings=True, no_processing=True)
    # TransformerLens prepends BOS by default; match what the tokenizer itself does, otherwise
    # SmolLM2 gets <|im_start|> before every prompt (cf. TL issue 1418, double BOS).
    bridge.cfg.default_prepend_bos = adds_bos(tokenizer)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"  # right padding keeps positions of real tokens unchanged
    bridge.eval()
    return bridge


def describe(bridge, device: str, dtype: torch.dtype, processing: str) -> dict[str, Any]:
    cfg = bridge.cfg
    return {
        "dtype": str(dtype).removeprefix("torch."),
        "device": device,
        "processing": processing,
        # Direct logit attribution is exact in both modes (models.readout); kept for readers
        # of older run.json files, where only "compat" was.
        "dla_grade": True,
        "n_layers": cfg.n_layers,
        "n_heads": cfg.n_heads,
        "n_key_value_heads": getattr(cfg, "n_key_value_heads", None) or cfg.n_heads,
        "d_model": cfg.d_model,
        "d_mlp": getattr(cfg, "d_mlp", None),
        "d_vocab": cfg.d_vocab,
        "prepend_bos": bool(cfg.default_prepend_bos),
        "versions": library_versions(),
    }


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in ("torch", "transformers", "transformer-lens", "factcircuits"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions
