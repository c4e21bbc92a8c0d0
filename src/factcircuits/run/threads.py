"""How many CPU threads a run, a sweep job or a benchmark uses, and applying that choice.

On a shared CPU, OpenMP threads beyond the cores a process may actually use compete with each
other (two processes with 2 threads each on 2 cores ran 5–10× slower than one thread each).
The count is, in order of precedence:

1. an explicit `--threads N`;
2. `$FACTCIRCUITS_THREADS`;
3. `$OMP_NUM_THREADS`, when the caller already chose one for the OpenMP runtime;
4. the cores this process may use — its CPU affinity, capped by a cgroup CPU quota
   (`cpu.max` in cgroup v2, `cpu.cfs_quota_us` in v1) — divided by the jobs that run at once.

`apply_threads` sets it for torch in this process and, through the environment, for every
process started afterwards (papermill's kernels read `OMP_NUM_THREADS`/`MKL_NUM_THREADS` when
torch initialises).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from factcircuits.errors import UserError

ENV_VAR = "FACTCIRCUITS_THREADS"
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", ENV_VAR)


@dataclass(frozen=True)
class ThreadChoice:
    count: int
    source: str  # "--threads" | "$FACTCIRCUITS_THREADS" | "$OMP_NUM_THREADS" | "cores"
    available_cores: int
    jobs: int = 1

    def record(self) -> dict:
        """What run.json keeps."""
        return asdict(self)


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by the cgroup CPU quota of this process (None: no quota found)."""
    rel = ""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            hierarchy, controllers, path = line.split(":", 2)
            if hierarchy == "0" or "cpu" in controllers.split(","):
                rel = path.lstrip("/")
                break
    except (OSError, ValueError):
        pass
    v1, v1_own = root / "cpu", root / "cpu" / rel
    candidates = [(root / rel / "cpu.max", None), (root / "cpu.max", None),
                  (v1_own / "cpu.cfs_quota_us", v1_own / "cpu.cfs_period_us"),
                  (v1 / "cpu.cfs_quota_us", v1 / "cpu.cfs_period_us")]
    for quota_file, period_file in candidates:
        try:
            if period_file is None:  # v2: "max 100000" or "<quota> <period>"
                quota, period = quota_file.read_text().split()[:2]
            else:  # v1: quota −1 means no limit
                quota, period = quota_file.read_text().strip(), period_file.read_text().strip()
        except (OSError, ValueError):
            continue
        if quota in ("max", "-1"):
            return None
        try:
            return int(quota) / int(period)
        except (ValueError, ZeroDivisionError):
            continue
    return None


def available_cores() -> int:
    """Cores this process may use: its affinity set, capped by a cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def _positive(value, where: str) -> int:
    try:
        count = int(str(value).strip())
    except ValueError:
        count = 0
    if count < 1:
        raise UserError(f"{where}={value!r}: the thread count must be a whole number ≥ 1 "
                        f"(e.g. {where}=1)")
    return count


def resolve_threads(requested: int | None = None, jobs: int = 1) -> ThreadChoice:
    """The thread count for one process when `jobs` such processes run at once."""
    cores, jobs = available_cores(), max(1, int(jobs))
    if requested is not None:
        return ThreadChoice(_positive(requested, "--threads"), "--threads", cores, jobs)
    for var in (ENV_VAR, "OMP_NUM_THREADS"):
        if os.environ.get(var, "").strip():
            return ThreadChoice(_positive(os.environ[var], f"${var}"), f"${var}", cores, jobs)
    return ThreadChoice(max(1, cores // jobs), "cores", cores, jobs)


def thread_env(count: int) -> dict[str, str]:
    """Environment variables that give a child process `count` threads."""
    return {var: str(count) for var in THREAD_ENV_VARS}


def apply_threads(count: int) -> None:
    """Use `count` threads in this process (torch, if loaded or loadable) and its children."""
    os.environ.update(thread_env(count))
    import torch

    torch.set_num_threads(count)


def add_threads_argument(parser) -> None:
    parser.add_argument(
        "--threads", type=int, default=None, metavar="N",
        help=f"CPU threads per process (default: ${ENV_VAR}, else $OMP_NUM_THREADS, else the "
             "cores this process may use, divided by the jobs running at once)")
