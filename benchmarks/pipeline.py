"""Wall time of the default pipeline, per notebook and in total.

Runs `factcircuits run --json --threads N` (default model, default dataset, default parameters
unless given after `--`), reads per-notebook durations and the thread count from the run's
run.json and prints a table with the machine's load (the machine may be shared: read the
times next to it). A comparison with a saved report made with another thread count is refused.

    python benchmarks/pipeline.py [--json] [--threads N] [--against saved.json]
                                  [-- extra run arguments, e.g. -p n_prompts=8]
    python benchmarks/pipeline.py --json -- --model tiny -p n_prompts=3 --notebooks 02
                                                                # smallest setting
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    sys.path.insert(0, str(Path(__file__).parent))
    from _common import add_common_arguments, choose_threads, compare_with_saved, machine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("run_args", nargs=argparse.REMAINDER,
                        help="after --: arguments passed to `factcircuits run`")
    args = parser.parse_args()
    threads = choose_threads(args)
    extra = [a for a in args.run_args if a != "--"]
    load_before = machine()
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "factcircuits.cli", "run", "--json",
                           "--threads", str(threads.count), *extra],
                          check=False, stdout=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["status"] != "ok":
        print(f"run failed: {result.get('reason')}", file=sys.stderr)
        return 1
    info = json.loads((Path(result["run_dir"]) / "run.json").read_text())
    rows = [(nb["name"], nb["duration_s"]) for nb in info["notebooks"]]
    recorded = (info.get("threads") or {}).get("count")
    if recorded != threads.count:
        print(f"the run recorded {recorded} threads, asked {threads.count}", file=sys.stderr)
        return 1
    report = {"run_id": info["run_id"], "wall_s": round(wall, 2),
              "notebooks_s": round(sum(d for _, d in rows), 2),
              "per_notebook_s": dict(rows), "threads": threads.count,
              "threads_source": threads.source, "machine_before": load_before,
              "machine_after": machine(), "packages": info["packages"]}
    if args.against:
        lines = compare_with_saved(args.against, report, [("wall_s",), ("notebooks_s",)] + [
            ("per_notebook_s", name) for name, _ in rows])
    if args.json:
        print(json.dumps(report))
        if args.against:
            print("\n".join(lines), file=sys.stderr)
        return 0
    load = (load_before["load_average_1_5_15"], report["machine_after"]["load_average_1_5_15"])
    print(f"run {info['run_id']}, {threads.count} thread(s) ({threads.source}); load "
          f"{load[0]} → {load[1]}")
    print(f"{'notebook':<32} {'seconds':>8}")
    for name, seconds in rows:
        print(f"{name:<32} {seconds:>8.1f}")
    print(f"{'total (notebooks)':<32} {report['notebooks_s']:>8.1f}")
    print(f"{'total (command wall time)':<32} {wall:>8.1f}")
    if args.against:
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
