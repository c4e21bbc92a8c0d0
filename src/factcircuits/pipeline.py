"""Execute the analysis notebooks with papermill into an atomic, versioned run folder.

A run executes `analysis/NN_*.py` (jupytext percent) or `.ipynb` notebooks in order into
`report/runs/_staging-<run-id>-<ts>/`, with the kernel's cwd there and `run_dir="."` (so the
executed notebooks carry no absolute paths). Only when every notebook succeeded and the secret
scan is clean does the staging folder replace `report/runs/<run-id>/`; otherwise it moves to
`report/runs/_failed/<run-id>-<ts>/` and the last good run stays byte-identical.
"""

from __future__ import annotations

import ast
import datetime as dt
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factcircuits import __version__
from factcircuits.errors import UserError
from factcircuits.provenance import git_commit, package_versions, sha256_file, tidy_path
from factcircuits.results import load_headlines
from factcircuits.runid import make_run_id
from factcircuits.secretscan import looks_secret, scan_folder

# Parameters every analysis notebook declares (the contract); used in error messages.
CORE_PARAMETERS = ("model", "dataset", "task", "prompt_format", "answer_map", "device", "dtype",
                   "batch_size", "n_prompts", "seed", "run_dir")
# Set by the pipeline, never by the user.
RESERVED = ("run_dir",)
_SECRETISH = ("key", "token", "secret", "password")
DATASET_SUFFIXES = (".csv", ".jsonl", ".json")


class RunFailed(UserError):
    """A notebook failed or the outputs did not pass the scan; message is the one-line reason."""

    def __init__(self, reason: str, failed_dir: Path | None = None):
        super().__init__(reason)
        self.failed_dir = failed_dir


def project_root() -> Path:
    """The checkout: $FACTCIRCUITS_ROOT, else the folder above src/ of this (editable) install,
    else the current directory."""
    if os.environ.get("FACTCIRCUITS_ROOT"):
        return Path(os.environ["FACTCIRCUITS_ROOT"]).resolve()
    candidate = Path(__file__).resolve().parents[2]
    if (candidate / "pyproject.toml").is_file() and (candidate / "analysis").is_dir():
        return candidate
    return Path.cwd().resolve()


def default_notebooks_dir() -> Path:
    return Path(os.environ.get("FACTCIRCUITS_NOTEBOOKS") or project_root() / "analysis")


def default_runs_root() -> Path:
    return Path(os.environ.get("FACTCIRCUITS_RUNS") or project_root() / "report" / "runs")


# --------------------------------------------------------------------------- notebooks
@dataclass
class Notebook:
    path: Path
    defaults: dict[str, Any]  # the parameters cell, literal values only

    @property
    def name(self) -> str:
        return self.path.stem


def read_notebook(path: Path):
    """An nbformat NotebookNode from a jupytext .py or an .ipynb."""
    import jupytext
    import nbformat

    if path.suffix == ".ipynb":
        return nbformat.read(path, as_version=4)
    return jupytext.read(path)


def parameters_cell_defaults(nb, path: Path) -> dict[str, Any]:
    """Names and literal values assigned in the `parameters`-tagged cell."""
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not cells:
        raise UserError(f"{path.name}: no cell tagged 'parameters'; tag the parameters cell")
    defaults: dict[str, Any] = {}
    for node in ast.parse(cells[0].source).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    try:
                        defaults[target.id] = ast.literal_eval(node.value)
                    except ValueError:
                        defaults[target.id] = None  # computed default: any value accepted
    return defaults


def discover_notebooks(folder: Path, select: list[str] | None = None) -> list[Notebook]:
    """`NN_*.py|ipynb` in name order; `select` keeps those whose name starts with a prefix."""
    folder = Path(folder)
    paths = sorted(p for p in folder.glob("[0-9][0-9]_*") if p.suffix in (".py", ".ipynb"))
    if not paths:
        raise UserError(f"no notebooks NN_*.py in {folder}; set --notebooks-dir")
    if select:
        names = [p.stem for p in paths]
        chosen = []
        for prefix in select:
            match = [p for p in paths if p.stem == prefix or p.stem.split("_")[0] == prefix]
            if not match:
                raise UserError(f"--notebooks: no notebook '{prefix}'; known: {', '.join(names)}")
            chosen += [p for p in match if p not in chosen]
        paths = sorted(chosen)
    return [Notebook(p, parameters_cell_defaults(read_notebook(p), p)) for p in paths]


def known_parameters(notebooks: list[Notebook]) -> dict[str, Any]:
    """Union of the notebooks' parameters; the first notebook's default wins."""
    known: dict[str, Any] = {}
    for nb in notebooks:
        for key, value in nb.defaults.items():
            known.setdefault(key, value)
    return known


# --------------------------------------------------------------------------- planning
@dataclass
class RunPlan:
    run_id: str
    parameters: dict[str, Any]  # effective values, as given to the notebooks (minus run_dir)
    notebooks: list[Notebook]
    runs_root: Path
    root: Path
    dataset_file: Path | None
    selected: list[str] | None = None

    @property
    def run_dir(self) -> Path:
        return self.runs_root / self.run_id


def _check_type(key: str, value: Any, default: Any) -> Any:
    """Coerce/verify a user value against the notebook default's type."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, str):
        return value if isinstance(value, str) else str(value)
    else:
        return value
    raise UserError(f"parameter {key}={value!r}: expected {type(default).__name__} "
                    f"like the default {default!r}")


def resolve_dataset(spec: str) -> Path:
    """The dataset file of a name or path, validated now so that a bad dataset is a one-line
    error before anything runs (not a failed notebook)."""
    from factcircuits import datasets

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
    from factcircuits import datasets

    shipped = getattr(datasets, "SHIPPED", {})
    name = f"paris-{task}"
    return name if name in shipped else getattr(datasets, "DEFAULT_DATASET", "paris-cloze")


def plan_run(model: str | None = None, dataset: str | None = None,
             overrides: dict[str, Any] | None = None, *, notebooks_dir: Path | None = None,
             select: list[str] | None = None, runs_root: Path | None = None) -> RunPlan:
    """Validate everything up front; nothing is written."""
    root = project_root()
    notebooks = discover_notebooks(notebooks_dir or default_notebooks_dir(), select)
    known = known_parameters(notebooks)
    given = dict(overrides or {})
    if model is not None:
        given["model"] = model
    if dataset is not None:
        given["dataset"] = dataset
    for key, value in given.items():
        if key in RESERVED:
            raise UserError(f"parameter {key} is set by the pipeline; remove it")
        if any(word in key.lower() for word in _SECRETISH):
            raise UserError(f"parameter {key}: secrets are read from the environment, "
                            "never passed as parameters")
        if key not in known:
            raise UserError(f"unknown parameter {key!r}; known: "
                            f"{', '.join(k for k in known if k not in RESERVED)}")
        if isinstance(value, str) and (kind := looks_secret(value)):
            raise UserError(f"parameter {key} holds a {kind}; secrets come from the environment")
        given[key] = _check_type(key, value, known[key])
    params = {k: v for k, v in known.items() if k not in RESERVED} | given
    if not params.get("dataset"):  # empty = the task's default dataset; name it explicitly
        params["dataset"] = default_dataset(str(params.get("task") or ""))
    model_spec, dataset_spec = str(params.get("model")), str(params.get("dataset"))
    from factcircuits.models import check_available  # imports torch: only when planning a run

    check_available(model_spec)
    dataset_file = resolve_dataset(dataset_spec)
    # Identity = model, dataset and what differs from the notebooks' defaults (stable when
    # notebooks gain new parameters), plus the notebook subset if one was chosen.
    identity = {"model": model_spec, "dataset": dataset_spec}
    identity |= {k: v for k, v in given.items() if known.get(k) != v}
    if select:
        identity["notebooks"] = [nb.name for nb in notebooks]
    runs_root = Path(runs_root or default_runs_root())
    return RunPlan(make_run_id(model_spec, dataset_spec, identity), params, notebooks,
                   runs_root, root, dataset_file, select)


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
    """What papermill injects: only the keys this notebook declares; local paths relative to
    the run folder (same depth for staging and final folder) so no absolute path leaks."""
    params = {k: v for k, v in plan.parameters.items() if k in nb.defaults}
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


def add_front_matter(nb, subtitle: str) -> None:
    """Give an executed notebook the YAML front matter Quarto reads (first raw cell): its title
    from the first `# heading` (removed there, so the title is not shown twice) and a subtitle
    naming the run."""
    import json as _json

    import nbformat

    if nb.cells and nb.cells[0].cell_type == "raw" and nb.cells[0].source.startswith("---"):
        return
    title = None
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            lines = cell.source.splitlines()
            if lines and lines[0].startswith("# "):
                title = lines[0][2:].strip()
                cell.source = "\n".join(lines[1:]).lstrip("\n")
            break
    if title is None:
        return
    # JSON strings are valid YAML scalars: quotes and colons in titles stay safe.
    yaml = f"---\ntitle: {_json.dumps(title)}\nsubtitle: {_json.dumps(subtitle)}\n---"
    nb.cells.insert(0, nbformat.v4.new_raw_cell(yaml))


def _tidy_papermill_metadata(path: Path, source: str, keep_stderr: bool = False,
                             subtitle: str | None = None) -> None:
    """papermill records absolute input/output paths; keep names only. Progress bars and
    warnings (stderr) went to the terminal log already; a write-up reader does not need
    them, so accepted notebooks drop them (a failed one keeps them for debugging)."""
    import nbformat

    if not path.is_file():
        return
    nb = nbformat.read(path, as_version=4)
    meta = nb.metadata.get("papermill", {})
    meta["input_path"], meta["output_path"] = source, path.name
    if subtitle:
        add_front_matter(nb, subtitle)
    if not keep_stderr:
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs = [o for o in cell.outputs
                                if not (o.output_type == "stream" and o.name == "stderr")]
    nbformat.write(nb, path)


def _failure_reason(nb: Notebook, exc: BaseException) -> str:
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        value = (str(exc.evalue).strip().splitlines() or [""])[0][:200]
        return (f"notebook {nb.name} failed in cell {exc.cell_index} "
                f"(execution count {exc.exec_count}): {exc.ename}: {value}")
    text = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"notebook {nb.name} failed: {type(exc).__name__}: {text}"


def _model_provenance(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "model.json"
    return json.loads(path.read_text()) if path.is_file() else None


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
        "model": _model_provenance(folder),
        "dataset": dataset,
        "packages": package_versions(),
        "git": git_commit(plan.root),
        "started": started,
        "finished": _now(),
        "duration_s": round(sum(r["duration_s"] for r in records), 3),
        "notebooks": records,
        "headline": load_headlines(folder),
        "factcircuits_version": __version__,
    }
    (folder / "run.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    return info


def _swap_into_place(staging: Path, final: Path) -> None:
    """Replace `final` by `staging`; the old run is removed only after the new one is in place."""
    old = final.with_name(f"_old-{final.name}-{time.time_ns()}")
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def execute_run(plan: RunPlan, *, progress: bool = True, stream=None) -> RunResult:
    """Run every notebook of `plan`; raise RunFailed (one-line reason) on any failure."""
    import papermill as pm
    from tqdm.auto import tqdm

    from factcircuits.display import static_export_available

    stream = stream or sys.stderr
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    plan.runs_root.mkdir(parents=True, exist_ok=True)
    staging = plan.runs_root / f"_staging-{plan.run_id}-{stamp}"
    staging.mkdir()
    failed_dir = plan.runs_root / "_failed" / f"{plan.run_id}-{stamp}"
    # The kernel must be this environment's python, and know it runs under the pipeline.
    env_backup = {k: os.environ.get(k) for k in ("PATH", "FACTCIRCUITS_PIPELINE")}
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    os.environ["FACTCIRCUITS_PIPELINE"] = "1"
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
            t0, record = time.perf_counter(), {"name": nb.name, "source": source,
                                               "started": _now()}
            try:
                pm.execute_notebook(
                    node, str(out), parameters=_notebook_params(plan, nb, staging),
                    kernel_name=spec.get("name", "python3"),
                    language=spec.get("language", "python"), cwd=str(staging),
                    progress_bar=False, stdout_file=stream, stderr_file=stream)
            except Exception as exc:  # noqa: BLE001 -- papermill raises many kinds; all = failed
                reason = _failure_reason(nb, exc)
            finally:
                record |= {"duration_s": round(time.perf_counter() - t0, 3),
                           "status": "failed" if reason else "ok"}
                records.append(record)
                _tidy_papermill_metadata(out, source, keep_stderr=bool(reason),
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
        _move_failed(staging, failed_dir)
        raise
    finally:
        bar.close()
        for key, value in env_backup.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if reason:
        _move_failed(staging, failed_dir)
        raise RunFailed(f"{reason} [kept in {tidy_path(failed_dir, plan.root)}]", failed_dir)
    _swap_into_place(staging, plan.run_dir)
    return RunResult(plan.run_id, plan.run_dir, "ok", info["headline"])


def _move_failed(staging: Path, failed_dir: Path) -> None:
    if staging.exists():
        failed_dir.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(failed_dir)


def run(model: str | None = None, dataset: str | None = None,
        overrides: dict[str, Any] | None = None, **kwargs) -> RunResult:
    """Plan and execute one run (see `plan_run` for the keyword arguments)."""
    progress = kwargs.pop("progress", True)
    return execute_run(plan_run(model, dataset, overrides, **kwargs), progress=progress)


def project_relative(path: Path) -> str:
    """A path as shown to the user: relative to the project when inside it."""
    return tidy_path(Path(path), project_root())


def list_runs(runs_root: Path | None = None) -> list[dict[str, Any]]:
    """run.json of every accepted run (folders starting with '_' or '.' are not runs)."""
    root = Path(runs_root or default_runs_root())
    runs = []
    for folder in sorted(root.glob("*")):
        if folder.name.startswith(("_", ".")) or not (folder / "run.json").is_file():
            continue
        info = json.loads((folder / "run.json").read_text())
        info["run_dir"] = folder
        runs.append(info)
    return runs
