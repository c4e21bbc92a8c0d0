"""Scan run outputs for tokens and absolute home paths before a run is accepted.

Findings name the file and the kind of leak, never the secret itself.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

# Environment variables whose values must never appear in an output.
SECRET_ENV = ("OPENAI_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_TOKEN",
              "ANTHROPIC_API_KEY", "WANDB_API_KEY")
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD)", re.IGNORECASE)

PATTERNS = {
    "OpenAI-style key (sk-...)": re.compile(r"(?<![A-Za-z0-9_-])sk-(?:proj-)?[A-Za-z0-9_-]{20,}"),
    "Hugging Face token (hf_...)": re.compile(r"(?<![A-Za-z0-9_])hf_[A-Za-z0-9]{30,}"),
    "home path (/home/<user>/)": re.compile(r"/home/[A-Za-z0-9._-]+/"),
    "home path (/Users/<user>/)": re.compile(r"/Users/[A-Za-z0-9._-]+/"),
    "home path (/root/)": re.compile(r"(?<![A-Za-z0-9_.-])/root/"),
}


@dataclass(frozen=True)
class Finding:
    file: str
    kind: str

    def __str__(self) -> str:
        return f"{self.file}: {self.kind}"


def secret_values(environ: dict[str, str] | None = None) -> dict[str, str]:
    """name -> value of the secrets present in the environment (values of 8+ characters)."""
    env = os.environ if environ is None else environ
    names = set(SECRET_ENV) | {n for n in env if _SECRET_NAME.search(n)}
    return {n: env[n] for n in sorted(names) if len(env.get(n, "")) >= 8}


def looks_secret(text: str) -> str | None:
    """The kind of secret `text` contains (for parameter values), else None."""
    for name, value in secret_values().items():
        if value in text:
            return f"value of ${name}"
    for kind, pattern in list(PATTERNS.items())[:2]:
        if pattern.search(text):
            return kind
    return None


def scan_text(text: str, home: str | None = None) -> list[str]:
    kinds = [f"value of ${n}" for n, v in secret_values().items() if v in text]
    kinds += [kind for kind, pattern in PATTERNS.items() if pattern.search(text)]
    home = home if home is not None else str(Path.home())
    if home not in ("", "/") and (home.rstrip("/") + "/") in text:
        kinds.append(f"the home folder path ({'~'})")
    return kinds


def scan_folder(folder: Path) -> list[Finding]:
    """Every file under `folder` (text read leniently; binary files scanned as bytes-as-text)."""
    findings = []
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        text = path.read_bytes().decode("utf-8", errors="ignore")
        rel = path.relative_to(folder).as_posix()
        findings += [Finding(rel, kind) for kind in dict.fromkeys(scan_text(text))]
    return findings
