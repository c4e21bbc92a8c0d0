"""Run folders: the one owner of where runs live and what a run folder holds.

The runner writes run folders and the report reads them; both go through this module.

  <runs_root>/<run-id>/                       an accepted run
      NN_name.ipynb                           executed notebooks
      run.json                                parameters, provenance, per-notebook status
      model.json                              the loaded model's provenance (written by the session)
      results/<notebook>/<table>.csv          tidy tables
      headline/<notebook>.json                a few headline numbers per notebook
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

import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd

from factcircuits.errors import UserError
from factcircuits.files import atomic_write
from factcircuits.run.provenance import tidy_path

RUN_JSON = "run.json"
MODEL_JSON = "model.json"
OWNER_JSON = ".owner.json"
LOCKS_DIR = "_locks"


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


def is_run_folder(folder: Path) -> bool:
    """Folders starting with '_' or '.' (staging, failed, sweeps) are not runs."""
    return not folder.name.startswith(("_", ".")) and (folder / RUN_JSON).is_file()


def scan_runs(runs_root: Path | None = None) -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
    """(runs, damaged): run.json of every accepted run with `run_dir` added, and the run
    folders whose run.json cannot be read, with the reason. A damaged run never breaks the
    listing of the others."""
    root = Path(runs_root or default_runs_root())
    runs, damaged = [], []
    if not root.is_dir():
        return runs, damaged
    for folder in sorted(root.glob("*")):
        if not is_run_folder(folder):
            continue
        try:
            info = json.loads((folder / RUN_JSON).read_text())
            if not isinstance(info, dict) or "run_id" not in info:
                raise ValueError("no run_id")
        except (OSError, ValueError) as exc:  # JSONDecodeError, UnicodeDecodeError too
            damaged.append((folder, f"{RUN_JSON} unreadable ({str(exc).splitlines()[0][:80]})"))
            continue
        info["run_dir"] = folder
        runs.append(info)
    return runs, damaged


def list_runs(runs_root: Path | None = None) -> list[dict[str, Any]]:
    """run.json of every readable accepted run, each with `run_dir` added (damaged runs are
    left out: see `scan_runs`)."""
    return scan_runs(runs_root)[0]


# ------------------------------------------------------------------ results and headlines
NOT_COMPUTED = "not_computed"


def not_computed(value: float) -> dict[str, str]:
    """What a headline holds instead of NaN/inf (strict JSON has neither, and a bare null
    says nothing): an explicit marker with the reason."""
    what = "NaN" if math.isnan(value) else "infinite"
    return {NOT_COMPUTED: f"the computation gave {what} (e.g. no prompt qualified for it)"}


def _clean(value: Any) -> Any:
    """JSON-safe scalars: numpy/torch numbers become floats, NaN and inf a not-computed
    marker."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return not_computed(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def strict_json(value: Any) -> Any:
    """`value` with every NaN/inf (at any depth) replaced by the not-computed marker."""
    if isinstance(value, float) and not math.isfinite(value):
        return not_computed(value)
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def save_headline(run_dir: str | Path, notebook: str, numbers: dict[str, Any]) -> Path:
    path = Path(run_dir) / "headline" / f"{notebook}.json"
    return atomic_write(path, json.dumps(_clean(numbers), indent=2, sort_keys=True,
                                         allow_nan=False) + "\n")


def save_table(run_dir: str | Path, notebook: str, name: str, table: pd.DataFrame) -> Path:
    path = Path(run_dir) / "results" / notebook / f"{name}.csv"
    return atomic_write(path, table.to_csv(index=False))


def load_headlines(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """All headline numbers of a run, keyed by notebook."""
    folder = Path(run_dir) / "headline"
    if not folder.is_dir():
        return {}
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def load_table(run_dir: str | Path, notebook: str, name: str) -> pd.DataFrame:
    return pd.read_csv(Path(run_dir) / "results" / notebook / f"{name}.csv")


# ------------------------------------------------------------------ provenance files
def save_model_provenance(run_dir: str | Path, provenance: dict[str, Any]) -> Path:
    return atomic_write(Path(run_dir) / MODEL_JSON, json.dumps(provenance, indent=2) + "\n")


def load_model_provenance(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / MODEL_JSON
    return json.loads(path.read_text()) if path.is_file() else None


def save_run_record(run_dir: str | Path, record: dict[str, Any]) -> Path:
    text = json.dumps(strict_json(record), indent=2, default=str, allow_nan=False)
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
def check_runs_root(runs_root: Path) -> None:
    """Before a run: `runs_root` is a folder we can write into, or can be created."""
    runs_root = Path(runs_root)
    fix = "pass --runs-dir (or set FACTCIRCUITS_RUNS) to a writable folder"
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
