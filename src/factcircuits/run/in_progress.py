"""Runs in progress: staging folders and the process that owns them, stale staging left by
dead processes, and one lock per run id (layout: `factcircuits.run.folders`)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from factcircuits.errors import UserError
from factcircuits.run.folders import LOCKS_DIR, OWNER_JSON, RUN_JSON, move_failed, save_run_record

# ------------------------------------------------------------------ staging and its owner
_HOST = socket.gethostname()
_STAGING = re.compile(r"^_staging-(?P<run_id>.+?)-(?P<stamp>\d{8}-\d{6})(?:-.*)?$")


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return fields[19] if len(fields) > 19 else None


def process_alive(pid: int, start: str | None = None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, someone else's
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state in ("Z", "X"):  # exited, not yet reaped
            return False
    except (OSError, IndexError):
        pass
    return start is None or _process_start(pid) in (None, start)


def owner_record(run_id: str) -> dict[str, Any]:
    return {"run_id": run_id, "pid": os.getpid(), "host": _HOST,
            "process_start": _process_start(os.getpid()),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def make_staging(runs_root: Path, run_id: str) -> Path:
    """A new, uniquely named staging folder holding OWNER_JSON (who is writing it). Names
    carry the second, the pid and a random part: two runs started in the same second on one
    or several machines never collide."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    while True:
        folder = runs_root / f"_staging-{run_id}-{stamp}-{os.getpid()}-{secrets.token_hex(2)}"
        try:
            folder.mkdir(parents=True)
            break
        except FileExistsError:
            continue
    tmp = folder / f".{OWNER_JSON}.tmp"
    tmp.write_text(json.dumps(owner_record(run_id)) + "\n")
    tmp.replace(folder / OWNER_JSON)  # readers see the whole record or none
    return folder


def read_owner(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / OWNER_JSON).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def failed_folder(runs_root: Path, run_id: str, stamp: str) -> Path:
    return Path(runs_root) / "_failed" / f"{run_id}-{stamp}"


def failed_folder_for(staging: Path) -> Path:
    """`_failed/<run-id>-<stamp>-…` for a staging folder (unique, like the staging name)."""
    failed = staging.parent / "_failed" / staging.name.removeprefix("_staging-")
    n = 1
    while failed.exists():
        n += 1
        failed = failed.with_name(f"{staging.name.removeprefix('_staging-')}-{n}")
    return failed


def staging_state(folder: Path, held_run_id: str | None = None) -> tuple[bool, str]:
    """(alive, description) of a staging folder. Alive means a process is still writing it:
    its recorded pid is running on this host, or (another host, or no record) its run id's
    lock is held. `held_run_id`: the run id whose lock the caller holds itself."""
    owner = read_owner(folder)
    match = _STAGING.match(folder.name)
    run_id = owner.get("run_id") or (match["run_id"] if match else folder.name)
    pid, host = owner.get("pid"), owner.get("host")
    who = f"process {pid} on {host}" if pid else "a process that recorded no owner"
    if pid and host == _HOST:
        alive = process_alive(int(pid), owner.get("process_start"))
    elif run_id == held_run_id:
        alive = False  # we hold its lock: no one else can be writing it
    else:
        alive = lock_is_held(folder.parent, run_id)
    return alive, (f"in progress ({who})" if alive else f"{who} ended without finishing it "
                   "(killed?)")


def list_staging(runs_root: Path, held_run_id: str | None = None) -> list[tuple[Path, bool, str]]:
    root = Path(runs_root)
    if not root.is_dir():
        return []
    return [(folder, *staging_state(folder, held_run_id))
            for folder in sorted(root.glob("_staging-*")) if folder.is_dir()]


def sweep_stale_staging(runs_root: Path, held_run_id: str | None = None,
                        keep: Path | None = None) -> list[tuple[Path, Path, str]]:
    """Move staging folders whose process is gone to `_failed/`, with the reason in their
    run.json; returns (staging, failed folder, reason) for each."""
    swept = []
    for folder, alive, description in list_staging(runs_root, held_run_id):
        if alive or folder == keep:
            continue
        reason = f"abandoned: {description}; swept by a later run on {_HOST}"
        record = _read_json(folder / RUN_JSON) or {}
        record |= {"run_id": record.get("run_id") or read_owner(folder).get("run_id"),
                   "status": "abandoned", "reason": reason}
        try:
            save_run_record(folder, record)
            target = failed_folder_for(folder)
            move_failed(folder, target)
        except FileNotFoundError:
            continue  # another run swept it first
        swept.append((folder, target, reason))
    _finish_swaps(Path(runs_root), held_run_id)
    return swept


def _finish_swaps(runs_root: Path, held_run_id: str | None) -> None:
    """A process killed inside `swap_into_place` leaves `_old-<run-id>-<ns>`: the previous
    run, put back when nothing replaced it, else the leftover copy of a replaced run."""
    for old in sorted(runs_root.glob("_old-*")):
        run_id = old.name.removeprefix("_old-").rsplit("-", 1)[0]
        if run_id != held_run_id and lock_is_held(runs_root, run_id):
            continue  # that run is swapping right now
        final = runs_root / run_id
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.rename(final)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------ one run per run id
class RunInProgress(UserError):
    """The same run id is being computed by another process."""


class RunLock:
    """An exclusive lock per run id (`_locks/<run-id>.lock`, flock): a second identical run
    is refused while the first is running; the kernel releases the lock when the holder dies,
    however it dies. The file names the holder; it is removed on release (while still held,
    and a taker checks that the file it locked is still the one at the path)."""

    def __init__(self, runs_root: Path, run_id: str):
        self.path = Path(runs_root) / LOCKS_DIR / f"{run_id}.lock"
        self.run_id = run_id
        self.handle = None
        self.supported = True

    def try_acquire(self) -> bool:
        while True:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                handle = open(self.path, "a+")  # held for the whole run
            except FileNotFoundError:
                continue  # the folder was removed by a releasing run just now
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                return False
            except OSError:  # no lock support on this file system: run unlocked
                self.supported = False
            try:
                same = os.stat(self.path).st_ino == os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same or not self.supported:
                self.handle = handle
                return True
            handle.close()  # we locked a file its holder has just removed: take the new one

    def acquire(self) -> None:
        if not self.try_acquire():
            holder = {}
            for _ in range(40):  # the holder writes its record just after taking the lock
                holder = _read_json(self.path) or {}
                if holder.get("pid"):
                    break
                time.sleep(0.05)
            who = (f" by process {holder['pid']} on {holder.get('host')} since "
                   f"{holder.get('started')}" if holder.get("pid") else "")
            raise RunInProgress(f"run {self.run_id} is already in progress{who}; wait for it "
                                "to finish (its result will be this run's), or change a "
                                "parameter")
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(json.dumps(owner_record(self.run_id)) + "\n")
        self.handle.flush()

    def release(self) -> None:
        if self.handle is None:
            return
        self.path.unlink(missing_ok=True)
        if self.supported:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()
        self.handle = None
        try:
            self.path.parent.rmdir()  # only when no other run holds a lock
        except OSError:
            pass


def lock_is_held(runs_root: Path, run_id: str) -> bool:
    """Whether some process holds `run_id`'s lock (acquires and releases it to find out)."""
    if not (Path(runs_root) / LOCKS_DIR / f"{run_id}.lock").is_file():
        return False
    probe = RunLock(runs_root, run_id)
    if not probe.try_acquire():
        return True
    probe.release()
    return False



def runs_root_error(exc: OSError, runs_root: Path) -> UserError:
    """An OS error while creating run folders, as one line."""
    return UserError(f"runs folder {runs_root}: {exc.strerror or exc} ({exc.filename}); pass "
                     "--runs-dir (or set FACTCIRCUITS_RUNS) to a writable folder")
