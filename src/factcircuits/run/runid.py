"""Run ids: `<model-slug>__<dataset-slug>__<short hash of the parameters>`, readable and stable."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import PurePath
from typing import Any


def slug(spec: str, max_len: int = 40) -> str:
    """'HuggingFaceTB/SmolLM2-135M' -> 'huggingfacetb-smollm2-135m'; a file path -> its stem."""
    text = str(spec)
    if "/" in text and (text.startswith((".", "/", "~")) or PurePath(text).suffix):
        text = PurePath(text).stem or PurePath(text).name  # a path: its own name is enough
    text = re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.")
    return text[:max_len].rstrip("-.") or "x"


def params_hash(params: dict[str, Any], length: int = 8) -> str:
    blob = json.dumps(params, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def make_run_id(model: str, dataset: str, params: dict[str, Any]) -> str:
    """`params` should hold what identifies the run (model, dataset and every override)."""
    return f"{slug(model)}__{slug(dataset)}__{params_hash(params)}"
