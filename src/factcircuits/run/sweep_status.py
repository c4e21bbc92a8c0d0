"""The state of each job of a sweep: pending / running / done / failed, with the reason.

Sources, most trusted first: the job's own record (`jobs/<run-id>.json`: the run's status and
its one-line reason), Slurm's state (squeue while Slurm remembers the job, else sacct), and the
messages slurmstepd leaves in Slurm's log of the job ("CANCELLED ... DUE TO TIME LIMIT",
"exceeded memory limit"). A job's final state is written into sweep.json once known, so the
status survives Slurm forgetting the job (a cluster without accounting forgets it within
minutes).
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from factcircuits.errors import UserError
from factcircuits.run import sweeps
from factcircuits.run.slurm_resources import run_slurm

PENDING_STATES = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
                  "RESV_DEL_HOLD", "SUSPENDED"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "RESIZING"}
# A job Slurm does not know yet (just submitted) is pending for this long, then lost.
GRACE_S = 120


@dataclass
class JobStatus:
    run_id: str
    model: str
    dataset: str
    slurm_job_id: str | None
    state: str  # pending, running, done, failed
    detail: str = ""
    slurm_state: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------ asking Slurm
def parse_job_states(lines: list[str]) -> dict[str, tuple[str, str]]:
    """'12_3|TIMEOUT|TimeLimit' lines → {'12_3': ('TIMEOUT', 'TimeLimit')}; states like
    'CANCELLED by 0' keep their first word; sacct's '12_[4-6]' ranges expand."""
    from submitit.slurm.slurm import read_job_id

    out: dict[str, tuple[str, str]] = {}
    for line in lines:
        parts = line.strip().split("|")
        if len(parts) < 2 or not parts[0] or "." in parts[0]:
            continue
        state, reason = parts[1].split(" ")[0].rstrip("+"), (parts[2] if len(parts) > 2 else "")
        for ids in read_job_id(parts[0]):
            if len(ids) == 3:
                for index in range(int(ids[1]), int(ids[2]) + 1):
                    out[f"{ids[0]}_{index}"] = (state, reason)
            else:
                out["_".join(ids[:2])] = (state, reason)
    return out


def slurm_states(job_ids: list[str]) -> dict[str, tuple[str, str]] | None:
    """State and reason of each job Slurm still knows; None when Slurm is not reachable."""
    if not job_ids:
        return {}
    if shutil.which("squeue") is None:
        return None
    arrays = sorted({j.split("_")[0] for j in job_ids})
    found: dict[str, tuple[str, str]] = {}
    for array in arrays:  # one call each: squeue fails as a whole on a forgotten id
        proc = run_slurm(["squeue", "--noheader", "--array", "--states=all", f"--jobs={array}",
                          "--format=%i|%T|%r"], "sweep status")
        if proc.returncode == 0:
            found |= parse_job_states(proc.stdout.splitlines())
    missing = sorted({j.split("_")[0] for j in job_ids if j not in found})
    if missing and shutil.which("sacct"):  # finished long ago: Slurm's accounting, if kept
        proc = run_slurm(["sacct", "--noheader", "--parsable2", "--allocations",
                          "--format=JobID,State", f"--jobs={','.join(missing)}"], "sweep status")
        if proc.returncode == 0:
            found |= {k: v for k, v in parse_job_states(proc.stdout.splitlines()).items()
                      if k not in found}
    return found


def slurm_messages(sweep_id: str, job_id: str) -> list[str]:
    """What slurmstepd and srun said about the job in Slurm's log of it (kept by submitit)."""
    path = sweeps.submitit_folder(sweep_id) / job_id / f"{job_id}_0_log.err"
    try:
        text = path.read_text(errors="ignore")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.startswith(("slurmstepd", "srun:"))]


def slurm_log_hint(sweep_id: str, job_id: str) -> str | None:
    """'time', 'memory' or 'cancelled' from slurmstepd's messages in Slurm's log of the job."""
    lowered = "\n".join(slurm_messages(sweep_id, job_id)).lower()
    if "due to time limit" in lowered:
        return "time"
    if any(k in lowered for k in ("exceeded memory limit", "oom-kill", "oom_kill",
                                  "out of memory", "out_of_memory")):
        return "memory"
    if "cancelled at" in lowered:
        return "cancelled"
    return None


# ------------------------------------------------------------------ deciding
def _age_s(iso: str | None) -> float:
    if not iso:
        return float("inf")
    return (dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(iso)).total_seconds()


def _killed(kind: str, resources: dict[str, Any]) -> str:
    if kind == "time":
        return f"Slurm killed the job at its time limit (time={resources.get('time')})"
    if kind == "memory":
        return f"Slurm killed the job for exceeding its memory limit (mem={resources.get('mem')})"
    return "cancelled (scancel)"


def decide(record: dict[str, Any] | None, slurm: tuple[str, str] | None, hint: str | None,
           attempt: dict[str, Any], resources: dict[str, Any], log: str) -> tuple[str, str]:
    """(state, detail) of one job attempt from what its record, Slurm and Slurm's log say."""
    state, reason = slurm or (None, "")
    if record and record.get("state") == "ok":
        return "done", record.get("run_dir") or ""
    if state in PENDING_STATES:
        return "pending", reason if reason not in ("", "None") else ""
    if state in RUNNING_STATES:
        return "running", ""
    events = " ".join((record or {}).get("events", []))
    if state == "TIMEOUT" or hint == "time" or (state is None and "time limit near" in events):
        return "failed", _killed("time", resources)
    if state == "OUT_OF_MEMORY" or hint == "memory":
        return "failed", _killed("memory", resources)
    if state == "CANCELLED" or hint == "cancelled":
        return "failed", _killed("cancelled", resources)
    if state is None and attempt.get("cancelled"):  # Slurm forgot a job we cancelled
        return "failed", _killed("cancelled", resources) + ("" if record else
                                                            " before it started")
    if record and record.get("state") == "failed":
        return "failed", record.get("reason") or f"failed; see {log}"
    if state is not None:
        return "failed", f"Slurm state {state}{f' ({reason})' if reason else ''}; see {log}"
    if record is None and _age_s(attempt.get("submitted")) < GRACE_S:
        return "pending", "submitted"
    if record and "SIGTERM" in events:
        return "failed", f"stopped by Slurm (SIGTERM); see {log}"
    return "failed", (f"Slurm no longer knows job {attempt.get('slurm_job_id')} and it left no "
                      f"result; see {log}")


def _attempt_status(folder: Path, record: dict[str, Any], job: dict[str, Any],
                    attempt: dict[str, Any], states: dict[str, tuple[str, str]] | None
                    ) -> JobStatus:
    job_id = attempt["slurm_job_id"]
    status = JobStatus(job["run_id"], job["model"], job["dataset"], job_id, "unknown")
    job_record = sweeps.load_job_record(folder, job["run_id"])
    if job_record and job_record.get("slurm_job_id") != job_id:
        job_record = None  # an earlier attempt's record
    if states is None and not (job_record and job_record.get("state") in ("ok", "failed")):
        status.detail = "Slurm is not reachable from here"
        return status
    slurm = (states or {}).get(job_id)
    hint = None
    if slurm is None or slurm[0] not in PENDING_STATES | RUNNING_STATES:
        hint = slurm_log_hint(record["sweep_id"], job_id)
    resources = record["submissions"][attempt["submission"]]["resources"]
    log = sweeps.log_path(folder, job["run_id"]).relative_to(folder.parent.parent).as_posix()
    status.state, status.detail = decide(job_record, slurm, hint, attempt, resources, log)
    status.slurm_state = slurm[0] if slurm else None
    if status.slurm_state in PENDING_STATES | RUNNING_STATES:  # finished before Slurm noticed
        status.slurm_state = None
    return status


def _move_partial_runs(runs_root: Path, run_id: str) -> None:
    """A job killed outright (SIGKILL after a memory overrun, a node lost) cannot move its
    run's staging folder aside itself; the sweep owned that run id, so it does it now."""
    from factcircuits.run import folders, in_progress

    for staging in Path(runs_root).glob(f"_staging-{run_id}-*"):
        stamp = staging.name[len(f"_staging-{run_id}-"):]
        folders.move_failed(staging, in_progress.failed_folder(Path(runs_root), run_id, stamp))


def _note_end_in_log(folder: Path, sweep_id: str, run_id: str, status: JobStatus) -> None:
    """A job stopped by Slurm could not write its end: the sweep's log says it, with
    Slurm's own words about the job."""
    job_record = sweeps.load_job_record(folder, run_id) or {}
    if job_record.get("slurm_job_id") == status.slurm_job_id and job_record.get("finished"):
        return
    lines = slurm_messages(sweep_id, status.slurm_job_id or "")
    sweeps.append_log(folder, run_id, "".join(f"{line}\n" for line in lines)
                      + f"== {sweeps.now()} failed: {status.detail}\n")


def collect(runs_root: Path, sweep_id: str) -> tuple[dict[str, Any], list[JobStatus]]:
    """The sweep record and each job's status; newly final states are saved in sweep.json."""
    folder = sweeps.sweep_dir(runs_root, sweep_id)
    record = sweeps.load_sweep(runs_root, sweep_id)
    open_ids = [a["slurm_job_id"] for j in record["jobs"]
                if (a := sweeps.current_attempt(j)) and not a.get("final")]
    states = slurm_states(open_ids)
    statuses, changed = [], False
    for job in record["jobs"]:
        attempt = sweeps.current_attempt(job)
        if attempt is None:
            statuses.append(JobStatus(job["run_id"], job["model"], job["dataset"], None, "done",
                                      "already complete, not submitted"))
        elif attempt.get("final"):
            final = attempt["final"]
            statuses.append(JobStatus(job["run_id"], job["model"], job["dataset"],
                                      attempt["slurm_job_id"], final["state"], final["detail"],
                                      final.get("slurm_state")))
        else:
            status = _attempt_status(folder, record, job, attempt, states)
            if status.state == "failed":
                _move_partial_runs(runs_root, job["run_id"])
                _note_end_in_log(folder, record["sweep_id"], job["run_id"], status)
            if status.state in ("done", "failed"):
                attempt["final"] = {"state": status.state, "detail": status.detail,
                                    "slurm_state": status.slurm_state}
                changed = True
            statuses.append(status)
    if changed:
        sweeps.save_sweep(folder, record)
    return record, statuses


def mark_cancelled(runs_root: Path, sweep_id: str, job_ids: list[str]) -> None:
    """Note in sweep.json that these attempts were cancelled by us (`sweeps --cancel`, or
    Ctrl-C while waiting), so that a task cancelled before it started is said to be, not
    "Slurm no longer knows" it."""
    folder = sweeps.sweep_dir(runs_root, sweep_id)
    record = sweeps.load_sweep(runs_root, sweep_id)
    for job in record["jobs"]:
        attempt = sweeps.current_attempt(job)
        if attempt and attempt["slurm_job_id"] in job_ids and not attempt.get("final"):
            attempt["cancelled"] = sweeps.now()
    sweeps.save_sweep(folder, record)


def counts(statuses: list[JobStatus]) -> dict[str, int]:
    out = {k: 0 for k in ("done", "failed", "running", "pending", "unknown")}
    for s in statuses:
        out[s.state] = out.get(s.state, 0) + 1
    return {k: v for k, v in out.items() if v or k in ("done", "failed")}


def summary(statuses: list[JobStatus]) -> str:
    return ", ".join(f"{v} {k}" for k, v in counts(statuses).items())


def finished(statuses: list[JobStatus]) -> bool:
    return all(s.state in ("done", "failed") for s in statuses)


def wait(runs_root: Path, sweep_id: str, *, poll_s: float = 10.0, progress: bool = True,
         stream=None) -> tuple[dict[str, Any], list[JobStatus]]:
    """Poll until every job is done or failed, with a progress bar of finished jobs."""
    from tqdm.auto import tqdm

    record, statuses = collect(runs_root, sweep_id)
    if any(s.state == "unknown" for s in statuses):
        raise UserError(f"sweep {sweep_id}: Slurm is not reachable from here; wait for it on "
                        "the cluster's login node")
    bar = tqdm(total=len(statuses), desc=f"sweep {sweep_id}", unit="job", file=stream,
               disable=not progress, dynamic_ncols=True)
    try:
        while True:
            bar.n = sum(s.state in ("done", "failed") for s in statuses)
            bar.set_postfix_str(summary(statuses), refresh=True)
            if finished(statuses):
                return record, statuses
            time.sleep(poll_s)
            record, statuses = collect(runs_root, sweep_id)
    finally:
        bar.close()
