"""`factcircuits sweep`: the model × dataset grid as local processes (one `run` each)."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from factcircuits.commands.run import add_run_arguments
from factcircuits.errors import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sweep", help="run every model × dataset combination",
        description="Runs `factcircuits run` for each model × dataset pair as a local process. "
                    "On a cluster, submit one `factcircuits run --model M --dataset D` job per "
                    "pair instead; runs land in separate folders and `render` collects them.")
    parser.add_argument("--models", required=True, help="comma-separated model specs")
    parser.add_argument("--datasets", required=True, help="comma-separated dataset names/paths")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (default 1)")
    add_run_arguments(parser)
    parser.set_defaults(handler=handle)


def _split(text: str, flag: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise UserError(f"{flag}: give at least one value, comma-separated")
    return items


def handle(args) -> int:
    from factcircuits.commands.run import overrides_from_args
    from factcircuits.run import pipeline
    from factcircuits.run.threads import resolve_threads

    if args.jobs < 1:
        raise UserError(f"--jobs {args.jobs}: must be at least 1")
    models, datasets = _split(args.models, "--models"), _split(args.datasets, "--datasets")
    overrides = overrides_from_args(args)
    select = [s.strip() for s in args.notebooks.split(",")] if args.notebooks else None
    # Validate every cell of the grid before starting any of it.
    for model in models:
        for dataset in datasets:
            pipeline.plan_run(model, dataset, overrides, notebooks_dir=args.notebooks_dir,
                              select=select, runs_root=args.runs_dir)
    passthrough = [a for k, v in overrides.items() for a in ("-p", f"{k}={json.dumps(v)}")]
    # Jobs running at once share the cores: one thread each unless told otherwise.
    threads = resolve_threads(args.threads, jobs=min(args.jobs, len(models) * len(datasets)))
    passthrough += ["--threads", str(threads.count)]
    for flag, value in (("--notebooks", args.notebooks), ("--notebooks-dir", args.notebooks_dir),
                        ("--runs-dir", args.runs_dir)):
        if value:
            passthrough += [flag, str(value)]

    def one(pair: tuple[str, str]) -> dict:
        model, dataset = pair
        cmd = [sys.executable, "-m", "factcircuits.cli", "run", "--model", model, "--dataset",
               dataset, "--json", "--no-progress", *passthrough]
        proc = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, text=True)
        lines = proc.stdout.strip().splitlines()
        try:
            result = json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError):
            result = {"run_dir": None, "status": "failed", "reason": f"exit {proc.returncode}"}
        print(f"{model} × {dataset}: {result['status']} {result.get('run_dir') or ''}",
              file=sys.stderr, flush=True)
        return {"model": model, "dataset": dataset, **result}

    pairs = [(m, d) for m in models for d in datasets]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(one, pairs))
    for r in results:
        print(f"{r['status']:<7} {r['model']} × {r['dataset']}  "
              f"{r.get('run_dir') or r.get('reason', '')}")
    failed = [r for r in results if r["status"] != "ok"]
    return 1 if failed else 0
