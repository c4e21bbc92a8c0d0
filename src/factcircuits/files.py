"""Writing output files so that a fault never leaves a half-written one, and naming the fault.

Every output (run folder files, the preview, archive copies, datasets) is written to a temporary
file in the same folder, flushed to disk, then renamed over its target: a reader sees the old
file or the whole new one, never a truncated or 0-byte one — even when the disk fills up.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

# What the file system said, in the words a user searches for, and what to do about it.
FAULTS = {
    errno.ENOSPC: ("no space left on device", "free some space or write elsewhere"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or write elsewhere"),
    errno.EROFS: ("read-only file system", "write to a writable folder"),
    errno.EACCES: ("permission denied", "write to a folder you own, or fix its permissions"),
    errno.EPERM: ("operation not permitted", "write to a folder you own"),
}


def fault_of(exc: BaseException) -> OSError | None:
    """The file-system fault (an OSError with a known errno) in `exc` or what caused it."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in FAULTS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def describe_fault(exc: OSError, path: str | os.PathLike | None = None) -> str:
    """One line: what happened, where, what to do ('no space left on device writing
    report/runs/x/run.json; free some space or write elsewhere')."""
    what, fix = FAULTS.get(exc.errno, (exc.strerror or str(exc), "check the folder"))
    where = path or exc.filename
    return f"{what}{f' writing {where}' if where else ''}; {fix}"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write `data` to `path` through a synced temporary file and a rename; on any error the
    target is untouched and no temporary file is left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())  # a full disk may only say so here
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs are shared
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # fsync's error names no file: say which one
        raise
    return path


def atomic_create(path: Path, data: bytes) -> bool:
    """Write `path` atomically only if it does not exist (archives are append-only): True if
    written, False if something is there already."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        try:
            os.link(tmp, path)  # atomic and exclusive: fails if the target exists
        except FileExistsError:
            return False
        return True
    finally:
        Path(tmp).unlink(missing_ok=True)


def drop_empty_files(folder: Path) -> list[Path]:
    """Remove 0-byte files a fault left under `folder` (a notebook a full disk truncated):
    an empty file says nothing and reads as damage."""
    gone = []
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file() and not path.is_symlink() and path.stat().st_size == 0:
            path.unlink(missing_ok=True)
            gone.append(path)
    return gone
