"""`factcircuits sweep`: every (model, dataset, parameter set) of a grid, each one exactly a
`factcircuits run`: as local processes (default), or as one Slurm job array (submitit)."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factcircuits.commands.run import add_run_arguments, parse_assignments
from factcircuits.errors import UserError
from factcircuits.run.parameters import as_command_line

LATEST = "latest"  # --resume without an id: the newest sweep of the same grid


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sweep", help="run every model × dataset combination (locally or on Slurm)",
        description="Runs `factcircuits run` for each model × dataset (× --grid parameter set) "
                    "as local processes, or with --executor slurm as one Slurm job array "
                    "(prints the sweep id and job ids and returns; `factcircuits sweeps ID` "
                    "shows the jobs). Runs land in their usual folders; `render` collects them.")
    parser.add_argument("--models", help="comma-separated model specs")
    parser.add_argument("--datasets", help="comma-separated dataset names/paths")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        help="one parameter set per combination of values (repeatable)")
    parser.add_argument("--executor", choices=("local", "slurm"), default="local",
                        help="local processes (default) or a Slurm job array")
    parser.add_argument("--jobs", type=int, default=1, help="local: runs in parallel (default 1)")
    parser.add_argument("--resume", nargs="?", const=LATEST, metavar="SWEEP_ID",
                        help="run only what is missing or failed (Slurm: in the given sweep, "
                             "or the newest sweep of the same grid)")
    parser.add_argument("--force", action="store_true",
                        help="with --resume: also rerun runs that are already complete")
    parser.add_argument("--wait", action="store_true",
                        help="slurm: wait for every job with a progress bar")
    parser.add_argument("--render", action="store_true",
                        help="render the write-up once every run is done (waits on Slurm)")
    parser.add_argument("--json", action="store_true", help="last line: one JSON object")
    slurm = parser.add_argument_group(
        "Slurm resources per job (--executor slurm; flags override the config file "
        "factcircuits-slurm.yaml or --slurm-config)")
    slurm.add_argument("--partition", help="partition (default: the cluster's default)")
    slurm.add_argument("--gpus", type=int, help="GPUs per job (default 0)")
    slurm.add_argument("--cpus", type=int, help="CPUs per job, also torch threads (default 2)")
    slurm.add_argument("--mem", help="memory per job, e.g. 32G (default 16G)")
    slurm.add_argument("--time", help="time limit per job: minutes or [D-]HH:MM:SS "
                                      "(default 2:00:00)")
    slurm.add_argument("--parallel", type=int, help="at most this many jobs at once "
                                                    "(default 16)")
    slurm.add_argument("--account", help="sbatch --account")
    slurm.add_argument("--qos", help="sbatch --qos")
    slurm.add_argument("--constraint", help="sbatch --constraint")
    slurm.add_argument("--sbatch", action="append", default=[], metavar="--OPTION=VALUE",
                       help="any other sbatch option (repeatable), e.g. --sbatch=--gres=gpu:1")
    slurm.add_argument("--slurm-config", metavar="FILE", help="YAML file of the above")
    add_run_arguments(parser)
    parser.set_defaults(handler=handle)


# ------------------------------------------------------------------ the grid
@dataclass
class Cell:
    model: str
    dataset: str
    params: dict[str, Any]
    run_id: str = ""
    run_args: list[str] = field(default_factory=list)  # `factcircuits run`'s, run locally
    run: dict[str, Any] = field(default_factory=dict)  # `pipeline.plan_run`'s, on Slurm


def _split(text: str | None, flag: str) -> list[str]:
    items = [s.strip() for s in (text or "").split(",") if s.strip()]
    if not items:
        raise UserError(f"{flag}: give at least one value, comma-separated")
    if len(set(items)) != len(items):
        raise UserError(f"{flag}: {', '.join(sorted({i for i in items if items.count(i) > 1}))} "
                        "given twice")
    return items


def parameter_sets(grid: list[str], overrides: dict[str, Any]) -> list[dict[str, Any]]:
    """-p values for all, times every combination of the --grid values."""
    axes: dict[str, list[Any]] = {}
    for item in grid:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise UserError(f"--grid {item!r}: expected key=v1,v2, e.g. --grid n_prompts=8,16")
        if key in overrides or key in axes:
            raise UserError(f"--grid {key}: set once, either with -p or with --grid")
        axes[key] = [parse_assignments([f"{key}={v}"])[key] for v in values.split(",")]
    return [overrides | dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


def plan_cells(args) -> list[Cell]:
    """Every cell validated (one-line error) and given its run id before anything runs."""
    from factcircuits.commands.run import overrides_from_args
    from factcircuits.run import pipeline
    from factcircuits.run.folders import given_runs_dir

    args.runs_dir = given_runs_dir(args.runs_dir)
    models, datasets = _split(args.models, "--models"), _split(args.datasets, "--datasets")
    sets = parameter_sets(args.grid, overrides_from_args(args))
    select = [s.strip() for s in args.notebooks.split(",") if s.strip()] if args.notebooks else None
    cells = []
    for model, dataset, params in itertools.product(models, datasets, sets):
        plan = pipeline.plan_run(model, dataset, params, notebooks_dir=args.notebooks_dir,
                                 select=select, runs_root=args.runs_dir)
        params = {k: plan.given.get(k, v) for k, v in params.items()}  # as typed by the run
        run_args = ["--model", model, "--dataset", dataset]
        run_args += [a for k, v in params.items() for a in ("-p", f"{k}={as_command_line(v)}")]
        if args.notebooks:
            run_args += ["--notebooks", args.notebooks]
        if args.notebooks_dir:
            run_args += ["--notebooks-dir", str(Path(args.notebooks_dir).resolve())]
        run_args += ["--runs-dir", str(plan.runs_root.resolve())]
        run = {"model": model, "dataset": dataset, "overrides": params, "notebooks": select,
               "notebooks_dir": str(Path(args.notebooks_dir).resolve())
               if args.notebooks_dir else None, "runs_root": str(plan.runs_root.resolve())}
        cells.append(Cell(model, dataset, params, plan.run_id, run_args, run))
    return cells


def run_complete(runs_root: Path, run_id: str) -> bool:
    path = Path(runs_root) / run_id / "run.json"
    try:
        return json.loads(path.read_text()).get("status") == "ok"
    except (OSError, json.JSONDecodeError):
        return False


def runs_root_of(args) -> Path:
    from factcircuits.run import folders

    return Path(folders.given_runs_dir(args.runs_dir) or folders.default_runs_root())


# ------------------------------------------------------------------ local
def run_local(args) -> int:
    from factcircuits.run.threads import resolve_threads

    if args.jobs < 1:
        raise UserError(f"--jobs {args.jobs}: must be at least 1")
    if args.resume not in (None, LATEST):
        raise UserError(f"--resume {args.resume}: sweep ids are Slurm sweeps; locally, "
                        "--resume alone skips the runs already complete")
    cells = plan_cells(args)
    runs_root = runs_root_of(args)
    if args.render:
        from factcircuits.report.render import check_renderable

        check_renderable(runs_root)
    if args.resume and not args.force:
        done = [c for c in cells if run_complete(runs_root, c.run_id)]
        for c in done:
            print(f"skip    {c.run_id} (already complete)", file=sys.stderr)
        cells = [c for c in cells if c not in done]
    # Local jobs running at once share the cores: one thread each unless told otherwise.
    threads = resolve_threads(args.threads, jobs=min(args.jobs, max(1, len(cells))))
    for cell in cells:
        cell.run_args += ["--threads", str(threads.count)]

    def one(cell: Cell) -> dict:
        cmd = [sys.executable, "-m", "factcircuits.cli", "run", *cell.run_args, "--json",
               "--no-progress"]
        proc = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, text=True)
        lines = proc.stdout.strip().splitlines()
        try:
            result = json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError):
            result = {"run_dir": None, "status": "failed", "reason": f"exit {proc.returncode}"}
        print(f"{cell.model} × {cell.dataset}: {result['status']} {result.get('run_dir') or ''}",
              file=sys.stderr, flush=True)
        return {"model": cell.model, "dataset": cell.dataset, **result}

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(one, cells))
    for r in results:
        print(f"{r['status']:<7} {r['model']} × {r['dataset']}  "
              f"{r.get('run_dir') or r.get('reason', '')}")
    failed = [r for r in results if r["status"] != "ok"]
    if args.render:  # once, after every run, with the runs that completed
        from factcircuits.report.render import render
        from factcircuits.run.folders import project_relative

        for path in render(to="html", runs_root=runs_root):
            print(project_relative(path))
    return 1 if failed else 0


# ------------------------------------------------------------------ slurm
def _resource_flags(args) -> dict[str, Any]:
    keys = ("partition", "gpus", "cpus", "mem", "time", "parallel", "account", "qos",
            "constraint", "sbatch")
    return {k: getattr(args, k) for k in keys}


def _new_record(sweep_id: str, cells: list[Cell], args) -> dict[str, Any]:
    from factcircuits.run import sweeps

    return {"sweep_id": sweep_id, "created": sweeps.now(), "executor": "slurm",
            "notebooks": args.notebooks, "submissions": [],
            "jobs": [{"run_id": c.run_id, "model": c.model, "dataset": c.dataset,
                      "parameters": c.params, "attempts": []} for c in cells]}


def run_slurm(args) -> int:
    from factcircuits.run import slurm_executor, sweep_status, sweeps
    from factcircuits.run.slurm_resources import check_partition, require_slurm, resolve_resources

    partitions = require_slurm()  # first: without Slurm, nothing else matters
    runs_root = runs_root_of(args)
    if args.render:
        from factcircuits.report.render import check_renderable

        check_renderable(runs_root)
    by_id = args.resume not in (None, LATEST)
    if by_id and not args.models and not args.datasets:
        record = sweeps.load_sweep(runs_root, args.resume)
        specs = slurm_executor.load_request(args.resume)
        base = record["submissions"][-1]["resources"] if record["submissions"] else None
    else:
        cells = plan_cells(args)
        record = None
        if by_id:
            record = sweeps.load_sweep(runs_root, args.resume)
        elif args.resume:
            record = sweeps.latest_sweep_for(runs_root, [c.run_id for c in cells])
        planned = sorted(c.run_id for c in cells)
        if record and sorted(j["run_id"] for j in record["jobs"]) != planned:
            raise UserError(f"--resume {record['sweep_id']}: that sweep ran other runs; give "
                            "its id alone, or the same models, datasets and parameters")
        record = record or _new_record(sweeps.new_sweep_id(), cells, args)
        folder = sweeps.sweep_dir(runs_root, record["sweep_id"]).resolve()
        specs = {c.run_id: slurm_executor.JobSpec(str(folder), c.run_id, tuple(c.run_args), c.run)
                 for c in cells}
        base = None
    resources = resolve_resources(_resource_flags(args), args.slurm_config, base=base)
    check_partition(resources, partitions)
    sweep_id = record["sweep_id"]
    new = not record["submissions"]

    to_submit = [j["run_id"] for j in record["jobs"]]
    if args.resume:
        _, statuses = sweep_status.collect(runs_root, sweep_id) if not new else (None, [])
        busy = {s.run_id for s in statuses if s.state in ("pending", "running")}
        complete = {r for r in to_submit if run_complete(runs_root, r) and not args.force}
        keep = busy | complete
        to_submit = [r for r in to_submit if r not in keep]
        if not to_submit:
            print(f"sweep {sweep_id}: nothing to resubmit ({len(busy)} queued or running, "
                  f"{len(complete - busy)} complete; --force reruns complete ones)")
            return _after_submit(args, runs_root, sweep_id) if not new else 0
    slurm_executor.save_request(sweep_id, specs)
    try:
        job_ids = slurm_executor.submit_jobs(sweep_id, [specs[r] for r in to_submit], resources)
    except BaseException:
        if new:  # nothing partial: a sweep that was never submitted leaves no trace
            shutil.rmtree(sweeps.submitit_folder(sweep_id), ignore_errors=True)
        raise
    record["submissions"].append({"submitted": sweeps.now(), "resources": resources.as_dict(),
                                  "array_job_id": job_ids[0].split("_")[0],
                                  "run_ids": to_submit})
    index = len(record["submissions"]) - 1
    jobs = {j["run_id"]: j for j in record["jobs"]}
    for run_id, job_id in zip(to_submit, job_ids):
        jobs[run_id]["attempts"].append({"slurm_job_id": job_id, "submitted": sweeps.now(),
                                         "submission": index})
    folder = sweeps.sweep_dir(runs_root, sweep_id)
    sweeps.save_sweep(folder, record)

    print(f"sweep {sweep_id}: {len(to_submit)} job(s) submitted to Slurm as array "
          f"{job_ids[0].split('_')[0]} ({resources.describe()})")
    for run_id, job_id in zip(to_submit, job_ids):
        print(f"  {job_id:<10} {run_id}")
    if not (args.wait or args.render):
        print(f"status: factcircuits sweeps {sweep_id}   (add --wait to follow it)")
        if args.json:
            print(json.dumps({"sweep_id": sweep_id, "jobs": dict(zip(to_submit, job_ids))}))
        return 0
    return _after_submit(args, runs_root, sweep_id)


def _after_submit(args, runs_root: Path, sweep_id: str) -> int:
    if not (args.wait or args.render):
        return 0
    from factcircuits.commands.sweeps import finish

    return finish(runs_root, sweep_id, render=args.render, progress=True, as_json=args.json)


def handle(args) -> int:
    if args.force and not args.resume:
        raise UserError("--force: only with --resume (a new sweep runs every job anyway)")
    if args.executor == "slurm":
        return run_slurm(args)
    return run_local(args)
