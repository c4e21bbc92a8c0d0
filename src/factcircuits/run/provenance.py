"""Provenance facts for run.json: package versions, git commit, file checksums, tidy paths."""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import subprocess
from pathlib import Path

PACKAGES = ("torch", "transformers", "transformer-lens", "papermill", "factcircuits")


def package_versions() -> dict[str, str | None]:
    """Versions from installed metadata (no heavy imports)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(root: Path) -> dict[str, object]:
    """{'commit': full sha or None, 'dirty': bool} of the project checkout."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], check=False, cwd=root, capture_output=True,
                                 text=True,
                                 timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tidy_path(path: Path, root: Path) -> str:
    """Relative to the project when inside it, '~/...' when in the home folder: run.json must
    not carry the user's absolute home path."""
    path = Path(path).resolve()
    try:
        return path.relative_to(root.resolve()).as_posix()
    except ValueError:
        pass
    try:
        return "~/" + path.relative_to(Path.home().resolve()).as_posix()
    except ValueError:
        return path.as_posix()
