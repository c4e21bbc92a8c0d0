"""Sweep folders: the record of a sweep submitted to a cluster, and the jobs' own records.

  <runs_root>/_sweeps/<sweep-id>/
      sweep.json              what was asked (grid, resources), each job and its Slurm attempts
      jobs/<run-id>.json      written by the job itself: running, then ok/failed with the reason
      logs/<run-id>.log       the job's output (`factcircuits run`), one section per attempt

Everything here is written through `scrub`, so a sweep folder carries neither secrets nor home
paths, like a run folder. Submission files (pickles, batch scripts, Slurm's raw logs) hold
absolute paths and live in the cache folder instead (`submitit_folder`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
from pathlib import Path
from typing import Any

from factcircuits.errors import UserError
from factcircuits.run.secretscan import PATTERNS, secret_values

SWEEPS_DIR = "_sweeps"
SWEEP_JSON = "sweep.json"


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def new_sweep_id() -> str:
    """Sortable by time, unique across users submitting in the same second."""
    return f"{dt.datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def sweeps_root(runs_root: Path) -> Path:
    return Path(runs_root) / SWEEPS_DIR


def sweep_dir(runs_root: Path, sweep_id: str) -> Path:
    return sweeps_root(runs_root) / sweep_id


def submitit_folder(sweep_id: str) -> Path:
    """Where submitit keeps pickles, batch scripts and Slurm's own logs for a sweep. They name
    absolute paths, so they stay out of the report tree; the cache folder is shared on a
    cluster (FACTCIRCUITS_CACHE_DIR), as the compute nodes must read them."""
    from factcircuits.models.embedded import cache_root

    return cache_root() / "sweeps" / sweep_id


# ------------------------------------------------------------------ scrubbing
def scrub(text: str) -> str:
    """`text` without secret values, tokens or the home folder path (shown as `~`)."""
    for name, value in secret_values().items():
        text = text.replace(value, f"[${name}]")
    for pattern in list(PATTERNS.values())[:2]:  # token shapes (sk-…, hf_…)
        text = pattern.sub("[token]", text)
    home = str(Path.home()).rstrip("/")
    if home not in ("", "/"):
        text = re.sub(re.escape(home) + r"(?=/|$|\s)", "~", text)
    for pattern in list(PATTERNS.values())[2:]:  # other users' home folders
        text = pattern.sub("~other/", text)
    return text


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic: readers on other nodes never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(scrub(json.dumps(data, indent=2, default=str)) + "\n")
    tmp.replace(path)


# ------------------------------------------------------------------ the sweep record
def save_sweep(folder: Path, record: dict[str, Any]) -> None:
    _write_json(Path(folder) / SWEEP_JSON, record)


def load_sweep(runs_root: Path, sweep_id: str) -> dict[str, Any]:
    path = sweep_dir(runs_root, sweep_id) / SWEEP_JSON
    if not path.is_file():
        known = [s["sweep_id"] for s in list_sweeps(runs_root)[-5:]]
        hint = f" (recent: {', '.join(known)})" if known else " (no sweeps there yet)"
        raise UserError(f"sweep {sweep_id!r}: not found in "
                        f"{sweeps_root(runs_root).as_posix()}{hint}")
    return json.loads(path.read_text())


def list_sweeps(runs_root: Path) -> list[dict[str, Any]]:
    """Every sweep record under `runs_root`, oldest first."""
    root = sweeps_root(runs_root)
    if not root.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(root.glob(f"*/{SWEEP_JSON}"))]


def latest_sweep_for(runs_root: Path, run_ids: list[str]) -> dict[str, Any] | None:
    """The newest sweep whose jobs are exactly these runs (what `--resume` continues)."""
    wanted = sorted(run_ids)
    for record in reversed(list_sweeps(runs_root)):
        if sorted(j["run_id"] for j in record["jobs"]) == wanted:
            return record
    return None


def current_attempt(job: dict[str, Any]) -> dict[str, Any] | None:
    return job["attempts"][-1] if job.get("attempts") else None


# ------------------------------------------------------------------ job records and logs
def job_record_path(folder: Path, run_id: str) -> Path:
    return Path(folder) / "jobs" / f"{run_id}.json"


def log_path(folder: Path, run_id: str) -> Path:
    return Path(folder) / "logs" / f"{run_id}.log"


def load_job_record(folder: Path, run_id: str) -> dict[str, Any] | None:
    path = job_record_path(folder, run_id)
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def save_job_record(folder: Path, run_id: str, record: dict[str, Any]) -> None:
    _write_json(job_record_path(folder, run_id), record)


def append_log(folder: Path, run_id: str, text: str) -> None:
    path = log_path(folder, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(scrub(text))
        fh.flush()
