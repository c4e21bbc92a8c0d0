"""Wall time of the test suite, per test file, with the slowest tests and the CPU time.

Runs the README's test command (`python -m pytest`, plus any pytest arguments after `--`) with a
JUnit XML report, then prints the seconds spent per test file (setup + call + teardown, so a
module's shared run counts once, in its file), the 15 slowest tests, the whole command's wall
and CPU time (user + sys of pytest and everything it started) and the load average before and
after: on a shared machine read the wall time next to the load and the CPU time.

    python benchmarks/suite.py [--json] [--against saved.json] [-- pytest arguments]
    python benchmarks/suite.py -- -m "not slow and not embedded"     # the quick loop
    python benchmarks/suite.py --json -- -n 0 -k shadows_an_installed tests/test_benchmarks_run.py
                                                                     # smallest setting
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def read_junit(path: Path) -> tuple[dict[str, float], list[tuple[str, float]], dict[str, int]]:
    """Seconds per test file, (test id, seconds) per test, and the outcome counts."""
    per_file: dict[str, float] = defaultdict(float)
    tests, counts = [], defaultdict(int)
    for case in ET.parse(path).iter("testcase"):
        module = case.get("classname", "")
        # classname is "tests.test_x" or "tests.test_x.TestClass"
        parts = module.split(".")
        cut = next((i for i, p in enumerate(parts) if p.startswith("test_")), len(parts) - 1)
        file = "/".join(parts[: cut + 1]) + ".py"
        seconds = float(case.get("time", 0))
        per_file[file] += seconds
        tests.append((f"{file}::{case.get('name')}", seconds))
        outcome = next((child.tag for child in case
                        if child.tag in ("skipped", "failure", "error")), "passed")
        counts[outcome] += 1
    return dict(per_file), tests, dict(counts)


def main() -> int:
    sys.path.insert(0, str(Path(__file__).parent))
    from _common import machine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--against", metavar="REPORT.json",
                        help="also print a saved --json report's times beside this run's")
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER,
                        help="after --: arguments passed to pytest")
    args = parser.parse_args()
    extra = [a for a in args.pytest_args if a != "--"]
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        before, cpu0 = machine(), resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               f"--junitxml={junit}", *extra], cwd=ROOT, check=False,
                              stdout=subprocess.DEVNULL if args.json else None)
        wall = time.perf_counter() - start
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if not junit.is_file():
            print(f"pytest wrote no report (exit {proc.returncode})", file=sys.stderr)
            return proc.returncode or 1
        per_file, tests, counts = read_junit(junit)
    report = {
        "command": " ".join(["python -m pytest", *extra]),
        "exit_code": proc.returncode,
        "wall_s": round(wall, 1),
        "cpu_user_sys_s": round((cpu1.ru_utime - cpu0.ru_utime)
                                + (cpu1.ru_stime - cpu0.ru_stime), 1),
        "outcomes": counts,
        "per_file_s": {f: round(s, 1) for f, s in sorted(per_file.items(),
                                                          key=lambda kv: -kv[1])},
        "slowest_tests_s": [[t, round(s, 1)] for t, s in
                            sorted(tests, key=lambda ts: -ts[1])[:15]],
        "machine_before": before,
        "machine_after": machine(),
        "cores": os.cpu_count(),
    }
    saved = json.loads(Path(args.against).read_text()) if args.against else None
    if args.json:
        print(json.dumps(report))
    out = sys.stderr if args.json else sys.stdout
    old = (saved or {}).get("per_file_s", {})
    head = f"{'seconds per test file':<48} {'this run':>9}" + (f" {'saved':>9}" if saved else "")
    lines = [head]
    for name in sorted(set(report["per_file_s"]) | set(old),
                       key=lambda n: -report["per_file_s"].get(n, 0)):
        now = report["per_file_s"].get(name)
        row = f"{name:<48} {now if now is not None else '-':>9}"
        lines.append(row + (f" {old.get(name, '-'):>9}" if saved else ""))
    for key in ("wall_s", "cpu_user_sys_s"):
        lines.append(f"{key:<48} {report[key]:>9}"
                     + (f" {saved.get(key, '-'):>9}" if saved else ""))
    lines.append(f"{'load average (1 min) before / after':<48} "
                 f"{before['load_average_1_5_15'][0]:>4} / "
                 f"{report['machine_after']['load_average_1_5_15'][0]}"
                 + (f"   saved: {saved['machine_before']['load_average_1_5_15'][0]} / "
                    f"{saved['machine_after']['load_average_1_5_15'][0]}" if saved else ""))
    lines.append(f"outcomes: {counts}; exit {proc.returncode}")
    lines.append("slowest tests:")
    lines += [f"  {s:8.1f}s  {t}" for t, s in report["slowest_tests_s"]]
    print("\n".join(lines), file=out)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
