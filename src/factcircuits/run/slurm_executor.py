"""Sweeps on Slurm through submitit: one job array per submission, each job running exactly
`factcircuits run` for one (model, dataset, parameter set) into the same atomic run folder
(same run id) as the local executor would.

Submission side (login node): `submit` writes `_sweeps/<id>/sweep.json` and the exact command
of every job to the cache folder (it holds absolute paths), then one `map_array` call.
Job side (compute node): `run_job` runs `python -m factcircuits.run.slurm_executor <run JSON>`
(the pipeline itself, `plan_run` then `execute_run`, with Slurm's SIGTERM turned into an
interrupt so a killed run's partial folder moves to `_failed/` as on Ctrl-C; its last line is
the JSON result), streams its output into the sweep's log and writes the job's record
(`jobs/<run-id>.json`: running, then ok/failed with the run's reason).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from factcircuits.errors import UserError
from factcircuits.run import sweeps
from factcircuits.run.slurm_resources import SlurmResources

REQUEST_JSON = "request.json"


@dataclass(frozen=True)
class JobSpec:
    """What one job needs: where its sweep folder is and the arguments of `factcircuits run`
    (absolute paths: the job may start in another folder on another node)."""

    sweep_dir: str
    run_id: str
    run_args: tuple[str, ...]  # as `factcircuits run` takes them: the log names the command
    run: dict[str, Any] = field(default_factory=dict)  # `pipeline.plan_run`'s arguments


class JobFailed(RuntimeError):
    """Raised in the job so that Slurm, too, records the job as FAILED."""


# ------------------------------------------------------------------ job side
def slurm_job_id() -> str | None:
    """`<array>_<index>` inside an array task, else the plain job id (what submitit reports)."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def _reason_from_output(lines: list[str], code: int) -> str:
    for line in reversed(lines):
        if "error:" in line or line.startswith("factcircuits run:"):
            return line.split("error:", 1)[-1].strip() or line.strip()
    tail = next((line.strip() for line in reversed(lines) if line.strip()), "")
    return f"exit code {code}" + (f": {tail[:200]}" if tail else "")


def run_job(spec: JobSpec) -> dict[str, Any]:
    """The body of one Slurm job (runs on the compute node, called by submitit)."""
    folder = Path(spec.sweep_dir)
    record: dict[str, Any] = {"run_id": spec.run_id, "slurm_job_id": slurm_job_id(),
                              "host": socket.gethostname(), "state": "running",
                              "started": sweeps.now(), "events": []}
    sweeps.save_job_record(folder, spec.run_id, record)

    def note(event: str) -> None:
        record["events"].append(f"{sweeps.now()} {event}")
        sweeps.save_job_record(folder, spec.run_id, record)
        sweeps.append_log(folder, spec.run_id, f"== {event}\n")

    # submitit only logs SIGTERM; record why the job is being stopped instead.
    signal.signal(signal.SIGURG, lambda *_: note("Slurm: time limit near"))
    signal.signal(signal.SIGTERM, lambda *_: note("Slurm sent SIGTERM (time limit, scancel or "
                                                  "preemption)"))
    env = dict(os.environ)
    if env.get("SLURM_CPUS_PER_TASK"):  # torch threads = the CPUs Slurm gave this job
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = env["SLURM_CPUS_PER_TASK"]
    command = [sys.executable, "-m", "factcircuits.run.slurm_executor", json.dumps(spec.run)]
    sweeps.append_log(folder, spec.run_id,
                      f"== {record['started']} Slurm job {record['slurm_job_id']} on "
                      f"{record['host']}: factcircuits run {' '.join(spec.run_args)}\n")
    lines: list[str] = []
    result: dict[str, Any] | None = None
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:
        sweeps.append_log(folder, spec.run_id, line)
        lines.append(line.rstrip("\n"))
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                result = json.loads(line)
    code = proc.wait()
    ok = code == 0 and bool(result) and result.get("status") == "ok"
    reason = None if ok else ((result or {}).get("reason") or _reason_from_output(lines, code))
    record.update(state="ok" if ok else "failed", reason=reason, exit_code=code,
                  run_dir=(result or {}).get("run_dir"), finished=sweeps.now())
    sweeps.save_job_record(folder, spec.run_id, record)
    sweeps.append_log(folder, spec.run_id, f"== {record['finished']} {record['state']}"
                                           f"{': ' + reason if reason else ''}\n")
    if not ok:
        raise JobFailed(sweeps.scrub(str(reason)))
    return {"run_id": spec.run_id, "run_dir": record["run_dir"], "status": "ok"}


def job_main(argv: list[str]) -> int:
    """One run inside a job: `plan_run(**run)` and `execute_run` for the JSON `run` in argv[0].
    The last line printed is the JSON result `run_job` reads (status, run_dir, reason); the
    exit code is the CLI's (0 ok, 1 file system, 2 refused or failed, 130 interrupted). Slurm
    stops a job with SIGTERM (time limit, scancel): as an interrupt, the pipeline moves the
    partial run to `_failed/` like on Ctrl-C."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    result: dict[str, Any] = {"run_id": None, "run_dir": None, "status": "failed",
                              "headline": {}}
    from factcircuits.files import describe_fault

    try:
        from factcircuits.run import folders, pipeline
        from factcircuits.run.threads import resolve_threads

        run = json.loads(argv[0])
        plan = pipeline.plan_run(
            run["model"], run["dataset"], run.get("overrides") or {},
            notebooks_dir=Path(run["notebooks_dir"]) if run.get("notebooks_dir") else None,
            select=run.get("notebooks"), runs_root=Path(run["runs_root"]),
            threads=resolve_threads(None))
        result["run_id"] = plan.run_id
        out = pipeline.execute_run(plan, progress=False)
        result.update(run_dir=folders.project_relative(out.run_dir), status=out.status,
                      headline=out.headline)
        return 0
    except KeyboardInterrupt as exc:  # SIGTERM, or before the run started (still importing)
        result["reason"] = why = getattr(exc, "reason", "interrupted")
        code = getattr(exc, "exit_code", 130)
    except UserError as exc:  # refused before the run, or a notebook failed (RunFailed)
        result["reason"], code = str(exc), 2
        why = f"error: {exc}"
    except OSError as exc:  # the file system said no: one line
        result["reason"], code = describe_fault(exc), 1
        why = f"error: {result['reason']}"
    finally:
        print(json.dumps(result), flush=True)
    print(f"factcircuits run: {why}", file=sys.stderr)
    return code


# ------------------------------------------------------------------ submission side
def save_request(sweep_id: str, specs: dict[str, JobSpec]) -> None:
    """The exact job commands, kept beside submitit's files (they may hold absolute paths)."""
    path = sweeps.submitit_folder(sweep_id) / REQUEST_JSON
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({k: asdict(v) for k, v in specs.items()}, indent=2) + "\n")


def load_request(sweep_id: str) -> dict[str, JobSpec]:
    path = sweeps.submitit_folder(sweep_id) / REQUEST_JSON
    if not path.is_file():
        raise UserError(f"--resume {sweep_id}: its job commands are not in "
                        f"{sweeps.scrub(str(path.parent))} (another machine or a cleared "
                        "cache); repeat the sweep's command with --resume instead")
    return {k: JobSpec(v["sweep_dir"], v["run_id"], tuple(v["run_args"]), v.get("run", {}))
            for k, v in json.loads(path.read_text()).items()}


def _sbatch_message(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    line = next((x for x in lines if "error:" in x), lines[0] if lines else type(exc).__name__)
    return line.split("error:", 1)[-1].strip()


def submit_jobs(sweep_id: str, specs: list[JobSpec], resources: SlurmResources) -> list[str]:
    """Submit `specs` as one job array; returns the Slurm job ids in order."""
    import submitit
    from submitit.core.utils import FailedJobError

    executor = submitit.AutoExecutor(folder=sweeps.submitit_folder(sweep_id) / "%j",
                                     cluster="slurm")
    executor.update_parameters(**resources.submitit_parameters(f"fc-{sweep_id}"))
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):  # submitit prints sbatch's error as well
            jobs = executor.map_array(run_job, specs)
    except (FailedJobError, subprocess.CalledProcessError, OSError) as exc:
        raise UserError(f"sbatch refused the jobs: {_sbatch_message(exc)} "
                        f"({resources.describe()})") from None
    return [job.job_id for job in jobs]


def cancel(sweep_id: str, job_ids: list[str]) -> None:
    """scancel through submitit, one call per job id (`123` cancels a whole array)."""
    from submitit.slurm.slurm import SlurmJob

    folder = sweeps.submitit_folder(sweep_id) / "%j"
    for job_id in job_ids:
        SlurmJob(folder=folder, job_id=job_id).cancel(check=False)


if __name__ == "__main__":
    sys.exit(job_main(sys.argv[1:]))
