"""Wall time of the default pipeline, per notebook and in total.

Runs `factcircuits run --json` (default model, default dataset, default parameters unless
given after `--`), reads per-notebook durations from the run's run.json and prints a table.

    python benchmarks/pipeline.py [--json] [-- extra run arguments, e.g. -p n_prompts=8]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("run_args", nargs=argparse.REMAINDER,
                        help="after --: arguments passed to `factcircuits run`")
    args = parser.parse_args()
    extra = [a for a in args.run_args if a != "--"]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "factcircuits.cli", "run", "--json", *extra],
                          check=False, stdout=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["status"] != "ok":
        print(f"run failed: {result.get('reason')}", file=sys.stderr)
        return 1
    info = json.loads((Path(result["run_dir"]) / "run.json").read_text())
    rows = [(nb["name"], nb["duration_s"]) for nb in info["notebooks"]]
    report = {"run_id": info["run_id"], "wall_s": round(wall, 2),
              "notebooks_s": round(sum(d for _, d in rows), 2),
              "per_notebook_s": dict(rows), "packages": info["packages"]}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"run {info['run_id']}")
    print(f"{'notebook':<32} {'seconds':>8}")
    for name, seconds in rows:
        print(f"{name:<32} {seconds:>8.1f}")
    print(f"{'total (notebooks)':<32} {report['notebooks_s']:>8.1f}")
    print(f"{'total (command wall time)':<32} {wall:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
