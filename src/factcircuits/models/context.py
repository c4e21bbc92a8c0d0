"""A model's context (how many positions it has), read from its config without loading
weights, so that a prompt longer than the model can see is refused before a run or an
`inspect` starts: past its positions a model's numbers are not its behaviour."""

from __future__ import annotations

import json
import os
from pathlib import Path

# Config keys that state the context, by model family (Llama/Gemma/Qwen, GPT-2, others).
_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len", "seq_length")


def _from_config(config: dict) -> int | None:
    for source in (config, config.get("text_config") or {}):
        for key in _KEYS:
            value = source.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def _from_tokenizer(tokenizer) -> int | None:
    """Tokenizers state a length too, but often a placeholder (1e30) when none was set."""
    value = getattr(tokenizer, "model_max_length", None)
    return value if isinstance(value, int) and 0 < value < 10**7 else None


def model_context(spec: str, tokenizer=None) -> int | None:
    """The number of positions of `spec`'s model, or None when no config says it here."""
    from factcircuits.models import packaged, specs
    from factcircuits.models.loading import DEFAULT_MODEL, is_tiny

    spec = (spec or DEFAULT_MODEL).strip()
    if is_tiny(spec):
        from factcircuits.models.tiny import MAX_POSITIONS

        return MAX_POSITIONS
    folder = Path(spec).expanduser()
    entry = specs.find(spec)
    if entry is not None:
        folder = packaged.checkpoint_folder(entry) if packaged.is_cached(entry) else None
    config = None
    if folder is not None and (folder / "config.json").is_file():
        try:
            config = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError):
            config = None
    elif entry is None and not folder.exists():  # a hub name: its cached or fetched config
        try:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(spec, token=os.environ.get("HF_TOKEN")).to_dict()
        except Exception:  # noqa: BLE001 -- offline, gated, unknown: the load will say
            config = None
    found = _from_config(config) if isinstance(config, dict) else None
    return found or (_from_tokenizer(tokenizer) if tokenizer is not None else None)
