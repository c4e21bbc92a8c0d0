"""Execute the analysis notebooks with papermill into an atomic, versioned run folder.

A run executes `analysis/NN_*.py` (jupytext percent) or `.ipynb` notebooks in order into
`<runs_root>/_staging-<run-id>-<ts>/`, with the kernel's cwd there and `run_dir="."` (so the
executed notebooks carry no absolute paths). Only when every notebook succeeded and the secret
scan is clean does the staging folder replace `<runs_root>/<run-id>/`; otherwise it moves to
`<runs_root>/_failed/<run-id>-<ts>/` and the last good run stays byte-identical.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factcircuits import __version__
from factcircuits.errors import UserError
from factcircuits.run import folders, parameters
from factcircuits.run.notebooks import (
    Notebook,
    discover_notebooks,
    read_notebook,
    tidy_executed_notebook,
)
from factcircuits.run.provenance import git_commit, package_versions, sha256_file, tidy_path
from factcircuits.run.runid import make_run_id
from factcircuits.run.secretscan import scan_folder
from factcircuits.run.threads import ThreadChoice, resolve_threads, thread_env

DATASET_SUFFIXES = (".csv", ".jsonl", ".json")


class RunFailed(UserError):
    """A notebook failed or the outputs did not pass the scan; message is the one-line reason."""

    def __init__(self, reason: str, failed_dir: Path | None = None):
        super().__init__(reason)
        self.failed_dir = failed_dir


# --------------------------------------------------------------------------- planning
@dataclass
class RunPlan:
    run_id: str
    parameters: dict[str, Any]  # the core parameters and what the user set (minus run_dir)
    notebooks: list[Notebook]
    runs_root: Path
    root: Path
    dataset_file: Path | None
    selected: list[str] | None = None
    given: dict[str, Any] = field(default_factory=dict)  # what the user set, checked
    threads: ThreadChoice | None = None  # CPU threads of the kernels (not part of the run id)

    @property
    def run_dir(self) -> Path:
        return self.runs_root / self.run_id


def resolve_dataset(spec: str) -> Path:
    """The dataset file of a name or path, validated now so that a bad dataset is a one-line
    error before anything runs (not a failed notebook)."""
    from factcircuits.data import datasets

    path = Path(spec).expanduser()
    if path.suffix in DATASET_SUFFIXES or os.sep in spec:
        if not path.is_file():
            raise UserError(f"--dataset {spec}: no such file")
        found = path.resolve()
    else:
        found = datasets.resolve(spec)[1].resolve()  # one-line DatasetError when unknown
    problems = datasets.validate_file(found)
    if problems:
        datasets.raise_first(problems, spec)
    return found


def default_dataset(task: str) -> str:
    """The shipped dataset for a task (`paris-<task>`), else the library's default."""
    from factcircuits.data import datasets

    shipped = getattr(datasets, "SHIPPED", {})
    name = f"paris-{task}"
    return name if name in shipped else getattr(datasets, "DEFAULT_DATASET", "paris-cloze")


def plan_run(model: str | None = None, dataset: str | None = None,
             overrides: dict[str, Any] | None = None, *, notebooks_dir: Path | None = None,
             select: list[str] | None = None, runs_root: Path | None = None,
             threads: ThreadChoice | None = None) -> RunPlan:
    """Validate everything up front; nothing is written."""
    root = folders.project_root()
    notebooks = discover_notebooks(notebooks_dir or folders.default_notebooks_dir(), select)
    given = dict(overrides or {})
    if model is not None:
        given["model"] = model
    if dataset is not None:
        given["dataset"] = dataset
    given = parameters.validate_given(given, notebooks)
    params = parameters.core_values(notebooks) | given
    if not params.get("dataset"):  # empty = the task's default dataset; name it explicitly
        params["dataset"] = default_dataset(str(params.get("task") or ""))
    model_spec, dataset_spec = str(params.get("model")), str(params.get("dataset"))
    from factcircuits.models import check_available  # imports torch: only when planning a run

    check_available(model_spec)
    dataset_file = resolve_dataset(dataset_spec)
    # Identity = model, dataset and what differs from the notebooks' defaults (stable when
    # notebooks gain new parameters), plus the notebook subset if one was chosen.
    identity = {"model": model_spec, "dataset": dataset_spec}
    identity |= parameters.differs_from_defaults(given, notebooks)
    if select:
        identity["notebooks"] = [nb.name for nb in notebooks]
    runs_root = Path(runs_root or folders.default_runs_root())
    return RunPlan(make_run_id(model_spec, dataset_spec, identity), params, notebooks,
                   runs_root, root, dataset_file, select, given,
                   threads or resolve_threads())


# --------------------------------------------------------------------------- execution
@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    status: str
    headline: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _notebook_params(plan: RunPlan, nb: Notebook, cwd_depth_dir: Path) -> dict[str, Any]:
    """What papermill injects: the core values and the user's, for the names this notebook
    declares; local paths relative to the run folder (same depth for staging and final
    folder) so no absolute path leaks."""
    params = parameters.for_notebook(nb, plan.parameters, plan.given)
    if "dataset" in params and plan.dataset_file is not None and (
        Path(str(plan.parameters["dataset"])).expanduser().exists()
    ):
        params["dataset"] = os.path.relpath(plan.dataset_file, cwd_depth_dir)
    model = Path(str(plan.parameters.get("model", ""))).expanduser()
    if "model" in params and str(model) not in ("", ".") and model.is_dir():
        params["model"] = os.path.relpath(model.resolve(), cwd_depth_dir)
    if "run_dir" in nb.defaults:
        params["run_dir"] = "."
    return params


def _failure_reason(nb: Notebook, exc: BaseException) -> str:
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        value = (str(exc.evalue).strip().splitlines() or [""])[0][:200]
        return (f"notebook {nb.name} failed in cell {exc.cell_index} "
                f"(execution count {exc.exec_count}): {exc.ename}: {value}")
    text = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"notebook {nb.name} failed: {type(exc).__name__}: {text}"


def _write_run_json(plan: RunPlan, folder: Path, status: str, started: str,
                    records: list[dict[str, Any]], reason: str | None = None) -> dict[str, Any]:
    dataset: dict[str, Any] = {"spec": plan.parameters.get("dataset")}
    if plan.dataset_file is not None:
        dataset |= {"path": tidy_path(plan.dataset_file, plan.root),
                    "sha256": sha256_file(plan.dataset_file)}
    info = {
        "run_id": plan.run_id,
        "status": status,
        "reason": reason,
        "parameters": plan.parameters,
        "notebooks_selected": plan.selected,
        "model": folders.load_model_provenance(folder),
        "dataset": dataset,
        "packages": package_versions(),
        "git": git_commit(plan.root),
        "threads": plan.threads.record() if plan.threads else None,
        "started": started,
        "finished": _now(),
        "duration_s": round(sum(r["duration_s"] for r in records), 3),
        "notebooks": records,
        "headline": folders.load_headlines(folder),
        "factcircuits_version": __version__,
    }
    folders.save_run_record(folder, info)
    return info


def execute_run(plan: RunPlan, *, progress: bool = True, stream=None) -> RunResult:
    """Run every notebook of `plan`; raise RunFailed (one-line reason) on any failure."""
    import papermill as pm
    from tqdm.auto import tqdm

    from factcircuits.run.display import static_export_available

    stream = stream or sys.stderr
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    plan.runs_root.mkdir(parents=True, exist_ok=True)
    staging = folders.staging_folder(plan.runs_root, plan.run_id, stamp)
    staging.mkdir()
    failed_dir = folders.failed_folder(plan.runs_root, plan.run_id, stamp)
    # The kernel must be this environment's python, and know it runs under the pipeline.
    threads = thread_env(plan.threads.count) if plan.threads else {}
    env_backup = {k: os.environ.get(k) for k in ("PATH", "FACTCIRCUITS_PIPELINE", *threads)}
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    os.environ["FACTCIRCUITS_PIPELINE"] = "1"
    os.environ.update(threads)  # the kernels' torch reads OMP/MKL_NUM_THREADS at start
    if not static_export_available():
        print("note: no Chromium for kaleido: figures are interactive HTML only, the PDF will "
              "lack them (apt-get install chromium)", file=stream)
    started, records = _now(), []
    bar = tqdm(plan.notebooks, desc=plan.run_id, unit="notebook", file=stream,
               disable=not progress)
    reason = None
    try:
        for nb in bar:
            bar.set_postfix_str(nb.name)
            node = read_notebook(nb.path)
            spec = node.metadata.get("kernelspec", {})
            out = staging / f"{nb.name}.ipynb"
            source = tidy_path(nb.path, plan.root)
            injected = _notebook_params(plan, nb, staging)
            t0, record = time.perf_counter(), {"name": nb.name, "source": source,
                                               "started": _now(),
                                               "parameters": parameters.effective(nb, injected)}
            try:
                pm.execute_notebook(
                    node, str(out), parameters=injected,
                    kernel_name=spec.get("name", "python3"),
                    language=spec.get("language", "python"), cwd=str(staging),
                    progress_bar=False, stdout_file=stream, stderr_file=stream)
            except Exception as exc:  # noqa: BLE001 -- papermill raises many kinds; all = failed
                reason = _failure_reason(nb, exc)
            finally:
                record |= {"duration_s": round(time.perf_counter() - t0, 3),
                           "status": "failed" if reason else "ok"}
                records.append(record)
                tidy_executed_notebook(out, source, keep_stderr=bool(reason),
                                         subtitle=f"run {plan.run_id}")
            if reason:
                break
        info = _write_run_json(plan, staging, "failed" if reason else "ok", started, records,
                               reason)
        if not reason:
            findings = scan_folder(staging)
            if findings:
                reason = (f"secret scan refused the run: {findings[0]}"
                          + (f" (+{len(findings) - 1} more)" if len(findings) > 1 else "")
                          + "; remove the secret or path from the notebook output")
                info = _write_run_json(plan, staging, "refused", started, records, reason)
    except BaseException:
        folders.move_failed(staging, failed_dir)
        raise
    finally:
        bar.close()
        for key, value in env_backup.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if reason:
        folders.move_failed(staging, failed_dir)
        raise RunFailed(f"{reason} [kept in {tidy_path(failed_dir, plan.root)}]", failed_dir)
    folders.swap_into_place(staging, plan.run_dir)
    return RunResult(plan.run_id, plan.run_dir, "ok", info["headline"])


def run(model: str | None = None, dataset: str | None = None,
        overrides: dict[str, Any] | None = None, **kwargs) -> RunResult:
    """Plan and execute one run (see `plan_run` for the keyword arguments)."""
    progress = kwargs.pop("progress", True)
    return execute_run(plan_run(model, dataset, overrides, **kwargs), progress=progress)
