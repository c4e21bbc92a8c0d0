"""`factcircuits sweeps`: the sweeps submitted to Slurm and the state of each job; `--wait`
follows one to the end with a progress bar (Ctrl-C offers to cancel it)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from factcircuits.errors import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sweeps", help="list Slurm sweeps, or show each job's state in one",
        description="Without SWEEP_ID: every sweep with its job counts. With it: each job's "
                    "state (pending, running, done, failed with the reason).")
    parser.add_argument("sweep_id", nargs="?", metavar="SWEEP_ID",
                        help="a sweep id (default with --wait/--cancel/--render: the latest)")
    parser.add_argument("--wait", action="store_true",
                        help="wait until every job is done or failed (progress bar)")
    parser.add_argument("--render", action="store_true",
                        help="after waiting, render the write-up once")
    parser.add_argument("--cancel", action="store_true", help="cancel the unfinished jobs")
    parser.add_argument("--runs-dir", type=Path, help="default: report/runs/")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=handle)


def poll_seconds() -> float:
    return float(os.environ.get("FACTCIRCUITS_SWEEP_POLL_S") or 10)


def print_statuses(record: dict, statuses: list, stream=None) -> None:
    from factcircuits.run.sweep_status import summary

    stream = stream or sys.stdout
    print(f"sweep {record['sweep_id']}: {len(statuses)} job(s): {summary(statuses)}", file=stream)
    width = max([len(s.slurm_job_id or "-") for s in statuses] + [6])
    for s in statuses:
        detail = f"  {s.detail}" if s.detail else ""
        print(f"  {s.state:<8} {s.slurm_job_id or '-':<{width}} {s.run_id}{detail}", file=stream)


def wait_or_cancel(runs_root: Path, sweep_id: str, *, progress: bool = True):
    """Wait for the sweep; on Ctrl-C ask whether to cancel its unfinished jobs. Returns
    (record, statuses), or None when interrupted."""
    from factcircuits.run import slurm_executor, sweep_status

    try:
        return sweep_status.wait(runs_root, sweep_id, poll_s=poll_seconds(), progress=progress,
                                 stream=sys.stderr)
    except KeyboardInterrupt:
        _, statuses = sweep_status.collect(runs_root, sweep_id)
        unfinished = [s for s in statuses if s.state in ("pending", "running")]
        if not unfinished:
            return None
        print(f"\n{len(unfinished)} job(s) of sweep {sweep_id} are still queued or running. "
              "Cancel them (scancel)? [y/N] ", end="", file=sys.stderr, flush=True)
        try:
            answer = input()
        except (EOFError, KeyboardInterrupt):
            answer = ""
        if answer.strip().lower() in ("y", "yes"):
            ids = [s.slurm_job_id for s in unfinished]
            slurm_executor.cancel(sweep_id, ids)
            sweep_status.mark_cancelled(runs_root, sweep_id, ids)
            print(f"cancelled {len(unfinished)} job(s); `factcircuits sweep --resume "
                  f"{sweep_id}` submits them again", file=sys.stderr)
        else:
            print(f"left running; `factcircuits sweeps {sweep_id}` shows them",
                  file=sys.stderr)
        return None


def finish(runs_root: Path, sweep_id: str, *, render: bool, progress: bool,
           as_json: bool = False) -> int:
    """Wait, print each job's state, render once if asked; exit 1 if a job failed."""
    from factcircuits.run.sweep_status import counts

    waited = wait_or_cancel(runs_root, sweep_id, progress=progress)
    if waited is None:
        return 130
    record, statuses = waited
    if as_json:
        print(json.dumps({"sweep_id": sweep_id, "jobs": [s.as_dict() for s in statuses]}))
    else:
        print_statuses(record, statuses)
    if render:
        from factcircuits.report.render import render as render_report
        from factcircuits.run.folders import project_relative

        for path in render_report(to="html", runs_root=runs_root):
            print(project_relative(path))
    return 1 if counts(statuses).get("failed") else 0


def handle(args) -> int:
    from factcircuits.run import folders, slurm_executor, sweep_status, sweeps

    runs_root = Path(args.runs_dir or folders.default_runs_root())
    sweep_id = args.sweep_id
    if sweep_id is None and (args.wait or args.cancel or args.render):
        known = sweeps.list_sweeps(runs_root)
        if not known:
            raise UserError(f"no sweeps in {folders.project_relative(runs_root)}; submit one "
                            "with `factcircuits sweep --executor slurm`")
        sweep_id = known[-1]["sweep_id"]
    if sweep_id is None:
        rows = []
        for record in sweeps.list_sweeps(runs_root):
            _, statuses = sweep_status.collect(runs_root, record["sweep_id"])
            rows.append((record, statuses))
        if args.json:
            print(json.dumps([{"sweep_id": r["sweep_id"], "created": r["created"],
                               "counts": sweep_status.counts(s)} for r, s in rows]))
        elif not rows:
            print(f"no sweeps in {folders.project_relative(runs_root)}")
        for record, statuses in [] if args.json else rows:
            print(f"{record['sweep_id']}  {record['created']}  {len(statuses)} job(s): "
                  f"{sweep_status.summary(statuses)}")
        return 0
    if args.cancel:
        _, statuses = sweep_status.collect(runs_root, sweep_id)
        unfinished = [s.slurm_job_id for s in statuses if s.state in ("pending", "running")]
        slurm_executor.cancel(sweep_id, unfinished)
        sweep_status.mark_cancelled(runs_root, sweep_id, unfinished)
        print(f"sweep {sweep_id}: cancelled {len(unfinished)} job(s)")
        return 0
    if args.wait or args.render:
        return finish(runs_root, sweep_id, render=args.render, progress=not args.no_progress,
                      as_json=args.json)
    record, statuses = sweep_status.collect(runs_root, sweep_id)
    if args.json:
        print(json.dumps({"sweep_id": sweep_id, "jobs": [s.as_dict() for s in statuses]}))
    else:
        print_statuses(record, statuses)
        print(f"logs: {folders.project_relative(sweeps.sweep_dir(runs_root, sweep_id))}/logs/")
    return 0
