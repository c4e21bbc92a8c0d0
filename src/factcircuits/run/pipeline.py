"""Execute the analysis notebooks with papermill into an atomic, versioned run folder.

A run is planned first (`plan_run`: every check of `preflight`, nothing written, no model
loaded), then executed: it takes the run id's lock (a second identical run is refused in one
line), sweeps staging folders that dead processes left, and executes `analysis/NN_*.py`
(jupytext percent) or `.ipynb` notebooks in order into a fresh staging folder, with the
kernel's cwd there and `run_dir="."` (so the executed notebooks carry no absolute paths). Only
when every notebook succeeded and the secret scan is clean does the staging folder replace
`<runs_root>/<run-id>/`; otherwise (a failure, Ctrl-C, SIGTERM) it moves to `_failed/` with
the reason in its run.json, and the last good run stays byte-identical.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factcircuits import __version__
from factcircuits.errors import UserError
from factcircuits.files import describe_fault, drop_empty_files, fault_of
from factcircuits.results.store import take_headlines
from factcircuits.run import folders, in_progress, parameters, preflight
from factcircuits.run.failures import failure_reason, tidy_after
from factcircuits.run.interrupts import reason_of, signals_as_interrupts, signals_deferred
from factcircuits.run.kernel import RunKernel
from factcircuits.run.notebooks import (
    Notebook,
    discover_notebooks,
    read_notebook,
)
from factcircuits.run.provenance import git_commit, package_versions, sha256_file, tidy_path
from factcircuits.run.runid import make_run_id
from factcircuits.run.secretscan import scan_folder
from factcircuits.run.threads import ThreadChoice, resolve_threads, thread_env

DATASET_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".json", ".parquet")


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
    notes: list[str] = field(default_factory=list)  # what the checks found worth saying
    checks: dict[str, Any] = field(default_factory=dict)  # what they measured (run.json)
    threads: ThreadChoice | None = None  # CPU threads of the kernels (not part of the run id)

    @property
    def run_dir(self) -> Path:
        return self.runs_root / self.run_id


def resolve_dataset(spec: str):
    """The dataset of a name or path, loaded and validated now so that a bad dataset is a
    one-line error before anything runs (not a failed notebook)."""
    from factcircuits.data import datasets
    from factcircuits.data.formats import FORMATS_READ

    path = Path(spec).expanduser()
    if path.suffix.lower() in DATASET_SUFFIXES or os.sep in spec:
        if path.is_dir():
            raise UserError(f"--dataset {spec}: is a folder; pass one dataset file "
                            f"({FORMATS_READ})")
        if not path.is_file():
            raise UserError(f"--dataset {spec}: no such file")
        return datasets.load_dataset(path.resolve())
    return datasets.load_dataset(spec)  # a shipped name (one-line DatasetError when unknown)


def default_dataset(task: str) -> str:
    """The shipped dataset for a task (`paris-<task>`), else the library's default."""
    from factcircuits.data import datasets

    shipped = getattr(datasets, "SHIPPED", {})
    name = f"paris-{task}"
    return name if name in shipped else getattr(datasets, "DEFAULT_DATASET", "paris-cloze")


def plan_run(model: str | None = None, dataset: str | None = None,
             overrides: dict[str, Any] | None = None, *, notebooks_dir: Path | None = None,
             select: list[str] | None = None, runs_root: Path | None = None,
             max_prompt_tokens: int | None = None,
             single_token_answers: bool = False,
             threads: ThreadChoice | None = None) -> RunPlan:
    """Validate everything up front (`preflight`); nothing is written, no model is loaded
    (only its tokenizer, to check prompts and answers)."""
    root = folders.project_root()
    limit = preflight.max_prompt_tokens(max_prompt_tokens)
    notebooks = discover_notebooks(notebooks_dir or folders.default_notebooks_dir(), select)
    given = dict(overrides or {})
    if model is not None:
        given["model"] = model
    if dataset is not None:
        given["dataset"] = dataset
    given = parameters.validate_given(given, notebooks)
    params = parameters.core_values(notebooks) | given
    preflight.check_values(params)
    if not params.get("dataset"):  # empty = the task's default dataset; name it explicitly
        params["dataset"] = default_dataset(str(params.get("task") or ""))
    runs_root = Path(runs_root or folders.default_runs_root())
    folders.check_runs_root(runs_root)
    model_spec, dataset_spec = str(params.get("model")), str(params.get("dataset"))
    from factcircuits.data import datasets
    from factcircuits.models import check_available  # imports torch: only when planning a run
    from factcircuits.models.loading import load_tokenizer

    check_available(model_spec)
    data = datasets.of_relation(resolve_dataset(dataset_spec), str(params.get("relation") or ""))
    preflight.check_task(params, given, data)
    answer_map = preflight.check_answer_map(params, given)
    from factcircuits.models.context import model_context
    from factcircuits.models.tokens import with_bos_choice
    from factcircuits.results.parameter_declarations import PREPEND_BOS

    tokenizer = with_bos_choice(load_tokenizer(model_spec),
                                str(params.get("prepend_bos", PREPEND_BOS.default)))
    checked = preflight.check_with_tokenizer(tokenizer, data, params, answer_map, limit=limit,
                                             single_token_answers=single_token_answers,
                                             context=model_context(model_spec, tokenizer))
    # Identity = model, the dataset's content (its sha256: two files of one name, or a file
    # edited since, are different runs; where it lies is provenance, not identity), what
    # differs from the notebooks' defaults (stable when notebooks gain new parameters), plus
    # the notebook subset if one was chosen.
    identity = {"model": model_spec, "dataset": data.name, "dataset_sha256": data.sha256}
    identity |= {k: v for k, v in parameters.differs_from_defaults(given, notebooks).items()
                 if k != "dataset"}  # the path as typed is not identity (its content is)
    if select:
        identity["notebooks"] = [nb.name for nb in notebooks]
    notes = [f"dataset {data.name}: {n}" for n in datasets.notes(data.rows)
             if "multi-word" not in n] + checked.notes  # the tokenizer's note is the exact one
    return RunPlan(make_run_id(model_spec, dataset_spec, identity), params, notebooks,
                   runs_root, root, data.path.resolve(), select, given, notes, checked.facts,
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
    folder) so no absolute path leaks, and a path the user gave relative to their own
    directory still resolves from the kernel's."""
    params = parameters.for_notebook(nb, plan.parameters, plan.given)
    for key, path in _local_paths(plan).items():
        if key in params:
            params[key] = os.path.relpath(path, cwd_depth_dir)
    if "run_dir" in nb.defaults:
        params["run_dir"] = "."
    return params


def _local_paths(plan: RunPlan) -> dict[str, Path]:
    """The parameters that name local files or folders, resolved: dataset, model, answer_map."""
    from factcircuits.data.datasets import SHIPPED

    found: dict[str, Path] = {}
    dataset = str(plan.parameters.get("dataset", ""))
    if plan.dataset_file is not None and dataset not in SHIPPED and \
            Path(dataset).expanduser().exists():
        found["dataset"] = plan.dataset_file
    model = Path(str(plan.parameters.get("model", ""))).expanduser()
    if str(model) not in ("", ".") and model.is_dir():
        found["model"] = model.resolve()
    answer_map = Path(str(plan.parameters.get("answer_map", ""))).expanduser()
    if "answer_map" in plan.parameters and answer_map.is_file():
        found["answer_map"] = answer_map.resolve()
    return found


def _record_parts(folder: Path, parts: dict[str, Any]) -> dict[str, Any]:
    """The model and headlines the notebooks wrote, moved into the run's record (first call:
    the files are read and removed, so run.json holds them once)."""
    if not parts:
        parts["model"] = folders.take_model_provenance(folder)
        parts["headline"] = take_headlines(folder)
    return parts


def _write_run_json(plan: RunPlan, folder: Path, status: str, started: str,
                    records: list[dict[str, Any]], reason: str | None = None,
                    parts: dict[str, Any] | None = None) -> dict[str, Any]:
    parts = _record_parts(folder, {} if parts is None else parts)
    dataset: dict[str, Any] = {"spec": plan.parameters.get("dataset")}
    if plan.dataset_file is not None:
        dataset |= {"path": tidy_path(plan.dataset_file, plan.root),
                    "sha256": sha256_file(plan.dataset_file)}
    local = _local_paths(plan)
    info = {
        "run_id": plan.run_id,
        "status": status,
        "reason": reason,
        # paths as the project sees them (relative, or ~/…), never the user's absolute ones
        "parameters": plan.parameters | {k: tidy_path(p, plan.root) for k, p in local.items()},
        "parameters_set": sorted(plan.given),  # the names the user chose (values above)
        "notebooks_selected": plan.selected,
        "model": parts["model"],
        "dataset": dataset,
        "packages": package_versions(),
        "git": git_commit(plan.root),
        "threads": plan.threads.record() if plan.threads else None,
        "started": started,
        "finished": _now(),
        "duration_s": round(sum(r["duration_s"] for r in records), 3),
        "notebooks": records,
        "headline": parts["headline"],
        "checks": plan.checks,
        "factcircuits_version": __version__,
    }
    if "answer_map" in local:
        info["answer_map"] = {"path": tidy_path(local["answer_map"], plan.root),
                              "sha256": sha256_file(local["answer_map"])}
    folders.save_run_record(folder, info)
    return info


class _WithoutBars:
    """A kernel's stderr without progress bars (tqdm redraws its line with '\\r'): what
    --no-progress shows of it. Warnings and errors pass through."""

    _BAR = re.compile(r"\d+%\||\d+(?:/\d+|it)?\s*\[\d+:\d\d")

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        lines = []
        for line in text.split("\n"):
            if "\r" in line:
                line = line.rsplit("\r", 1)[1]
            if not self._BAR.search(line):
                lines.append(line)
        kept = "\n".join(lines)
        if kept.strip():
            self.stream.write(kept if kept.endswith("\n") or not text.endswith("\n")
                              else kept + "\n")

    def flush(self) -> None:
        self.stream.flush()


def execute_run(plan: RunPlan, *, progress: bool = True, stream=None) -> RunResult:
    """Run every notebook of `plan`; raise RunFailed (one-line reason) on any failure,
    RunInProgress when the same run id is running elsewhere, RunInterrupted on a signal."""
    stream = stream or sys.stderr
    lock = in_progress.RunLock(plan.runs_root, plan.run_id)
    try:
        plan.runs_root.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except OSError as exc:
        raise in_progress.runs_root_error(exc, plan.runs_root) from None
    try:
        for old, new, reason in in_progress.sweep_stale_staging(plan.runs_root, plan.run_id):
            print(f"note: moved the stale {old.name} to {tidy_path(new, plan.root)} ({reason})",
                  file=stream)
        try:
            staging = in_progress.make_staging(plan.runs_root, plan.run_id)
        except OSError as exc:
            raise in_progress.runs_root_error(exc, plan.runs_root) from None
        return _execute_in(plan, staging, progress, stream)
    finally:
        lock.release()


def _execute_in(plan: RunPlan, staging: Path, progress: bool, stream) -> RunResult:
    import papermill as pm
    from tqdm.auto import tqdm

    from factcircuits.run.display import static_export_available

    failed_dir = in_progress.failed_folder_for(staging)
    # The kernel must be this environment's python, and know it runs under the pipeline.
    threads = thread_env(plan.threads.count) if plan.threads else {}
    env_keys = ("PATH", "FACTCIRCUITS_PIPELINE", "TQDM_DISABLE", *threads)
    env_backup = {k: os.environ.get(k) for k in env_keys}
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    os.environ["FACTCIRCUITS_PIPELINE"] = "1"
    os.environ.update(threads)  # the kernels' torch reads OMP/MKL_NUM_THREADS at start
    if not progress:
        os.environ["TQDM_DISABLE"] = "1"  # bars that do not set `disable` themselves
    kernel_err = stream if progress else _WithoutBars(stream)
    if not static_export_available():
        print("note: no Chromium for kaleido: figures are interactive HTML only, the PDF will "
              "lack them (apt-get install chromium)", file=stream)
    started, records, parts = _now(), [], {}
    bar = tqdm(plan.notebooks, desc=plan.run_id, unit="notebook", file=stream,
               disable=not progress)
    reason = None
    # one kernel for every notebook of the run; its process's own output goes to a log
    kernel = RunKernel(log=plan.runs_root / folders.LOGS_DIR / f"{plan.run_id}.kernel.log")
    with signals_as_interrupts():
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
                                                   "parameters": parameters.effective(nb,
                                                                                      injected)}
                finished = False
                try:
                    kernel_name = spec.get("name", "python3")
                    pm.execute_notebook(
                        node, str(out), parameters=injected, kernel_name=kernel_name,
                        language=spec.get("language", "python"), cwd=str(staging),
                        progress_bar=False, stdout_file=stream, stderr_file=kernel_err,
                        **kernel.options(kernel_name, str(staging)))
                    finished = True
                except Exception as exc:  # noqa: BLE001 -- papermill raises many kinds
                    reason = failure_reason(nb, exc)
                finally:
                    status = "failed" if reason else "ok" if finished else "interrupted"
                    record |= {"duration_s": round(time.perf_counter() - t0, 3),
                               "status": status}
                    records.append(record)
                    tidy_after(out, source, status)
                if reason:
                    break
            kernel.shutdown()
            (staging / folders.OWNER_JSON).unlink(missing_ok=True)
            info = _write_run_json(plan, staging, "failed" if reason else "ok", started,
                                   records, reason, parts)
            if not reason:
                findings = scan_folder(staging)
                if findings:
                    reason = (f"secret scan refused the run: {findings[0]}"
                              + (f" (+{len(findings) - 1} more)" if len(findings) > 1 else "")
                              + "; remove the secret or path from the notebook output")
                    info = _write_run_json(plan, staging, "refused", started, records, reason,
                                           parts)
        except BaseException as exc:
            # Ctrl-C, SIGTERM/SIGHUP, a full disk or a bug: keep what was done, say why, leave
            # no staging (and no 0-byte file: it says nothing and reads as damage).
            why = describe_fault(fault) if (fault := fault_of(exc)) else reason_of(exc)
            try:
                kernel.shutdown()  # interrupted mid-cell: interrupt, then end it
            except Exception:  # noqa: BLE001 -- keeping the partial results matters more
                pass
            drop_empty_files(staging)
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            if status == "interrupted":
                # nbclient's kernel-alive poll fails once the kernel is gone; asyncio would print
                # that task's traceback at exit, after the one line that says what happened.
                logging.getLogger("asyncio").setLevel(logging.CRITICAL)
            try:
                _write_run_json(plan, staging, status, started, records, why, parts)
            except Exception:  # noqa: BLE001 -- the move below matters more than the record
                pass
            folders.move_failed(staging, failed_dir)
            print(f"run {plan.run_id} {status}: {why}; partial results kept in "
                  f"{tidy_path(failed_dir, plan.root)}", file=stream)
            raise
        finally:
            bar.close()
            for key, value in env_backup.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    with signals_deferred():  # a signal now waits until the folder is where it belongs
        if reason:
            drop_empty_files(staging)
            folders.move_failed(staging, failed_dir)
        else:
            folders.swap_into_place(staging, plan.run_dir)
    if reason:
        raise RunFailed(f"{reason} [kept in {tidy_path(failed_dir, plan.root)}]", failed_dir)
    return RunResult(plan.run_id, plan.run_dir, "ok", info["headline"])


def run(model: str | None = None, dataset: str | None = None,
        overrides: dict[str, Any] | None = None, **kwargs) -> RunResult:
    """Plan and execute one run (see `plan_run` for the keyword arguments)."""
    progress = kwargs.pop("progress", True)
    return execute_run(plan_run(model, dataset, overrides, **kwargs), progress=progress)
