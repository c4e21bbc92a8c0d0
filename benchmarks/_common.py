"""What every benchmark shares: one thread count for everything it compares (printed, and
refused when two measurements disagree), the machine's load, and comparison with a saved
`--json` report.

On a shared 2-core machine, OpenMP threads of concurrent processes compete: two processes with
2 threads each ran 5–10× slower than with one each, so timings are only comparable at the same
thread count and should be read next to the load average printed with them."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from factcircuits.run.threads import (
    ThreadChoice,
    add_threads_argument,
    apply_threads,
    available_cores,
    resolve_threads,
    thread_env,
)


def add_common_arguments(parser) -> None:
    add_threads_argument(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--against", metavar="REPORT.json",
                        help="also compare with a saved --json report (refused when it was made "
                             "with another thread count)")


def choose_threads(args) -> ThreadChoice:
    """The thread count of this benchmark, applied here and to every child it starts."""
    choice = resolve_threads(args.threads)
    apply_threads(choice.count)
    return choice


def child_env(threads: int, **extra: str) -> dict[str, str]:
    return {**os.environ, **thread_env(threads), **extra}


def run_quietly(cmd: list[str], **kwargs) -> None:
    """Run a measurement's child process with its stderr (warnings, progress) hidden, unless it
    fails: then exit with its command and the end of its stderr, not a bare exit status."""
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          check=False, **kwargs)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-20:])
        sys.exit(f"child process failed (exit {done.returncode}): {' '.join(cmd)}\n{tail}")


def machine() -> dict:
    """The machine and its load when the measurement ran."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores_available": available_cores(),
            "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()]}


def load_change(report: dict) -> str:
    """'load [1, 5, 15 min] → [...]' from a report's `machine_before` and `machine_after`."""
    return (f"load {report['machine_before']['load_average_1_5_15']} → "
            f"{report['machine_after']['load_average_1_5_15']}")


def refuse_mixed_threads(counts: dict[str, int]) -> None:
    """Exit (status 2) when the measurements to compare ran with different thread counts."""
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"{name}: {n}" for name, n in counts.items())
        sys.exit(f"refusing to compare runs made with different thread counts ({detail}); "
                 "rerun with the same --threads")


def _cell(value) -> str:
    return f"{value:>12.4g}" if isinstance(value, int | float) else f"{value!s:>12}"


def compare_with_saved(path: str, report: dict, keys: list[tuple[str, ...]]) -> list[str]:
    """Side-by-side lines of `keys` (paths into the reports) for a saved report and this one;
    refuses (exit 2) when the saved one ran with another thread count."""
    saved = json.loads(Path(path).read_text())
    refuse_mixed_threads({path: saved.get("threads"), "this run": report["threads"]})
    lines = [f"{'':<40} {'saved':>12} {'this run':>12}"]
    for key in keys:
        a, b = saved, report
        for part in key:
            a = a.get(part) if isinstance(a, dict) else None
            b = b.get(part) if isinstance(b, dict) else None
        lines.append(f"{'.'.join(key):<40} {_cell(a)} {_cell(b)}")
    return lines
