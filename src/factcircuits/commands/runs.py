"""`factcircuits runs`: list runs with status, age and headline numbers."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser("runs", help="list runs with status, age and headline numbers")
    parser.add_argument("--runs-dir", help="default: report/runs/")
    parser.add_argument("--json", action="store_true", help="one JSON list")
    parser.set_defaults(handler=handle)


def _age(iso: str | None) -> str:
    if not iso:
        return "?"
    seconds = (dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(iso)).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _number(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "not computed" if value is None or isinstance(value, dict) else str(value)
    return f"{value:.3g}" if value == value else "not computed"  # NaN: an older run's


def handle(args) -> int:
    from factcircuits.errors import UserError
    from factcircuits.report.compare import flat_numbers, key_columns
    from factcircuits.results.jsonsafe import json_safe
    from factcircuits.run import folders, in_progress

    runs_root = Path(folders.given_runs_dir(args.runs_dir, must_exist=True)
                     or folders.default_runs_root())
    if runs_root.exists() and not runs_root.is_dir():
        raise UserError(f"runs folder {runs_root} is a file, not a folder; pass --runs-dir "
                        "with the folder that holds the runs")
    from factcircuits.report.evidence import scan_evidence

    # damaged as the write-up sees it: run.json, but also headlines and notebooks
    damaged = [(runs_root / name, why) for name, why in scan_evidence(runs_root)[1]]
    runs = [r for r in folders.scan_runs(runs_root)[0]
            if r["run_dir"].name not in {f.name for f, _ in damaged}]
    staging = in_progress.list_staging(runs_root)
    failed = sorted((runs_root / "_failed").glob("*")) if (runs_root / "_failed").is_dir() else []
    if args.json:  # strict JSON: a NaN an older run.json holds becomes a not-computed marker
        print(json.dumps(json_safe(
            [{"run_id": r["run_id"], "status": r["status"], "finished": r.get("finished"),
              "headline": r.get("headline", {})} for r in runs]
            + [{"run_id": f.name, "status": "damaged", "reason": why} for f, why in damaged]
            + [{"run_id": f.name, "status": "running" if alive else "stale", "reason": why}
               for f, alive, why in staging]), allow_nan=False))
        return 0
    if not runs and not damaged:
        print(f"no runs in {folders.project_relative(runs_root)}; try `factcircuits run`")
    for r in runs:
        flat = flat_numbers(r.get("headline") or {}, (r.get("model") or {}).get("n_layers"))
        keys = [k for k in key_columns() if k in flat] or list(flat)[:6]
        numbers = ", ".join(f"{k.split('.', 1)[1]}={_number(flat[k])}" for k in keys[:6])
        print(f"{r['run_id']:<48} {r['status']:<6} {_age(r.get('finished')):>5}  {numbers}")
    for folder, why in damaged:
        print(f"{folder.name:<48} damaged: {why}; rerun it or delete the folder")
    for folder, alive, why in staging:
        state = "running" if alive else "stale"
        then = "" if alive else "; the next run moves it to _failed/"
        print(f"{folder.name:<48} {state}: {why}{then}")
    if failed:
        print(f"({len(failed)} failed attempt(s) kept in "
              f"{folders.project_relative(runs_root / '_failed')})")
    return 0
