"""Run folders: the one owner of where runs live and what a run folder holds.

The runner writes run folders and the report reads them; both go through this module.

  <runs_root>/<run-id>/                       an accepted run
      NN_name.ipynb                           executed notebooks
      run.json                                the run's record: parameters, provenance, the
                                              model, per-notebook status, each method's headline
      results/<notebook>/<name>.csv|/|.npz    each method's tables, graphs and arrays
                                              (declared in its registry entry: results.kinds)
  While a run is in progress its notebooks write model.json and headline/<notebook>.json;
  the runner moves both into run.json when the run ends.
  <runs_root>/_staging-<run-id>-<stamp>-<pid>-<rand>/
                                              a run in progress (becomes <run-id>/); its
                                              .owner.json names the process writing it
  <runs_root>/_failed/<run-id>-<stamp>-…/     a failed, interrupted or abandoned attempt,
                                              kept for debugging (run.json says why)
  <runs_root>/_locks/<run-id>.lock            exists, locked (flock), while a run of that id runs

Runs in progress (staging folders, their owners, stale staging, locks) are handled by
`factcircuits.run.in_progress`: a staging folder whose process has died (SIGKILL, a lost node)
is moved to _failed/ by the next run in the same runs folder; `factcircuits runs` lists it
meanwhile.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from factcircuits.errors import UserError
from factcircuits.files import atomic_write
from factcircuits.results.jsonsafe import json_safe
from factcircuits.run.provenance import tidy_path

RUN_JSON = "run.json"
MODEL_JSON = "model.json"
OWNER_JSON = ".owner.json"
LOCKS_DIR = "_locks"
LOGS_DIR = "_logs"  # each run's kernel process output (run/kernel.py)


# ------------------------------------------------------------------ where things are
def project_root() -> Path:
    """The checkout: $FACTCIRCUITS_ROOT, else the folder above src/ of this (editable) install,
    else the current directory."""
    if os.environ.get("FACTCIRCUITS_ROOT"):
        return Path(os.environ["FACTCIRCUITS_ROOT"]).resolve()
    candidate = Path(__file__).resolve().parents[3]
    if (candidate / "pyproject.toml").is_file() and (candidate / "analysis").is_dir():
        return candidate
    return Path.cwd().resolve()


def default_notebooks_dir() -> Path:
    return Path(os.environ.get("FACTCIRCUITS_NOTEBOOKS") or project_root() / "analysis")


def default_runs_root() -> Path:
    return Path(os.environ.get("FACTCIRCUITS_RUNS") or project_root() / "report" / "runs")


def project_relative(path: Path) -> str:
    """A path as shown to the user: relative to the project when inside it."""
    return tidy_path(Path(path), project_root())


# What every reader of run.json relies on: a field of another type is damage, said once here,
# not a traceback in `runs`, render or publish.
RECORD_TYPES: dict[str, type | tuple[type, ...]] = {
    "run_id": str, "status": str, "parameters": dict, "notebooks": list, "model": dict,
    "headline": dict, "git": dict, "started": str, "finished": str}


def record_problem(record: Any) -> str | None:
    """What is wrong with a run.json's shape (field types, timestamps), or None."""
    if not isinstance(record, dict):
        return f"{RUN_JSON} is not a JSON object"
    if "run_id" not in record:
        return f"{RUN_JSON} has no run_id"
    for key, kind in RECORD_TYPES.items():
        value = record.get(key)
        if value is not None and not isinstance(value, kind):
            return (f"{RUN_JSON}: {key!r} is a {type(value).__name__}, expected "
                    f"{getattr(kind, '__name__', kind)}")
    if not all(isinstance(nb, dict) for nb in record.get("notebooks") or []):
        return f"{RUN_JSON}: 'notebooks' holds an entry that is not an object"
    for key in ("started", "finished"):
        if record.get(key):
            try:
                stamp = dt.datetime.fromisoformat(record[key])
            except ValueError:
                return f"{RUN_JSON}: {key!r} = {record[key]!r} is not an ISO time"
            if stamp.tzinfo is None:
                return f"{RUN_JSON}: {key!r} = {record[key]!r} has no time zone"
    return None


def scan_runs(runs_root: Path | None = None) -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
    """(runs, damaged): run.json of every accepted run with `run_dir` added, and the run
    folders whose run.json cannot be read, with the reason. A damaged run never breaks the
    listing of the others."""
    root = Path(runs_root or default_runs_root())
    runs, damaged = [], []
    if not root.is_dir():
        return runs, damaged
    for folder in sorted(root.glob("*")):
        if folder.name.startswith(("_", ".")) or not folder.is_dir():
            continue
        if not (folder / RUN_JSON).is_file():  # listed, never silently dropped
            damaged.append((folder, f"no {RUN_JSON} (not a finished run)"))
            continue
        try:
            info = json.loads((folder / RUN_JSON).read_text())
        except (OSError, ValueError) as exc:  # JSONDecodeError, UnicodeDecodeError too
            damaged.append((folder, f"{RUN_JSON} unreadable ({str(exc).splitlines()[0][:80]})"))
            continue
        problem = record_problem(info)
        if problem:
            damaged.append((folder, problem))
            continue
        info["run_dir"] = folder
        runs.append(info)
    return runs, damaged


# ------------------------------------------------------------------ provenance files
def save_model_provenance(run_dir: str | Path, provenance: dict[str, Any]) -> Path:
    return atomic_write(Path(run_dir) / MODEL_JSON, json.dumps(provenance, indent=2) + "\n")


def take_model_provenance(run_dir: str | Path) -> dict[str, Any] | None:
    """The session's model.json, removed: the runner keeps it in run.json."""
    path = Path(run_dir) / MODEL_JSON
    if not path.is_file():
        return None
    found = json.loads(path.read_text())
    path.unlink()
    return found


def save_run_record(run_dir: str | Path, record: dict[str, Any]) -> Path:
    text = json.dumps(json_safe(record), indent=2, default=str, allow_nan=False)
    return atomic_write(Path(run_dir) / RUN_JSON, text + "\n")


# ------------------------------------------------------------------ atomic replacement
def swap_into_place(staging: Path, final: Path) -> None:
    """Replace `final` by `staging`; the old run is removed only after the new one is in place."""
    old = final.with_name(f"_old-{final.name}-{time.time_ns()}")
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def move_failed(staging: Path, failed_dir: Path) -> None:
    if staging.exists():
        failed_dir.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(failed_dir)


# ------------------------------------------------------------------ the runs folder itself
def given_runs_dir(text: str | None, must_exist: bool = False) -> Path | None:
    """`--runs-dir` as typed: None when not given; '' is refused (Path('') is the current
    folder, never what was meant); with `must_exist` (render, runs) a missing folder is
    refused rather than read as no runs."""
    if text is None:
        return None
    if not str(text).strip():
        raise UserError("--runs-dir '': empty; name the folder that holds the runs (or leave "
                        "the option out for report/runs/)")
    path = Path(text).expanduser()
    if must_exist and not path.exists():
        raise UserError(f"--runs-dir {text}: no such folder; name the folder that holds the "
                        "runs")
    return path


def check_runs_root(runs_root: Path) -> None:
    """Before a run: `runs_root` is a folder we can write into, or can be created."""
    runs_root = Path(runs_root)
    fix = "pass --runs-dir (or set FACTCIRCUITS_RUNS) to a writable folder"
    if runs_root.is_symlink() and not runs_root.exists():
        raise UserError(f"runs folder {runs_root} is a link to {os.readlink(runs_root)}, which "
                        f"does not exist; {fix}")
    existing = runs_root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing == runs_root and not runs_root.is_dir():
        raise UserError(f"runs folder {runs_root} is a file, not a folder; {fix}")
    if not existing.is_dir():
        raise UserError(f"runs folder {runs_root} cannot be created: {existing} is a file; "
                        f"{fix}")
    if not os.access(existing, os.W_OK | os.X_OK):
        state = "is read-only" if existing == runs_root else f"cannot be created in {existing}"
        raise UserError(f"runs folder {runs_root} {state}; {fix}")
