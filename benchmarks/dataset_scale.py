"""Dataset validation and counterfactual filling at scale: `dataset validate` on 100,000 rows
(997 distinct answers, and again with 2 — most of a relation then shares the row's answer and
is excluded from its partners), and filling at 10,000 and 4 × 10,000 rows side by side
(linear work gives a ratio near 4, the quadratic filling of issue 22 gave 16 and more). Prints
seconds with the load average.

    python benchmarks/dataset_scale.py [--rows 100000] [--fill-rows 10000] [--json]
    python benchmarks/dataset_scale.py --rows 1000 --fill-rows 250 --json   # smallest setting
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from factcircuits.data.counterfactuals import make_counterfactual
from factcircuits.data.datasets import load_dataset, validate_file


def relation_rows(n: int, answers: int = 997) -> list[str]:
    """With few answers, the counterfactual is no row's answer, so every partner is drawn from
    the relation minus the subjects sharing the row's answer (the path that was quadratic)."""
    other = (lambda i: f"City{(i + 1) % answers}") if answers > 2 else (lambda i: "Nowhere")
    return [f"The capital of Land{i} is, City{i % answers}, {other(i)},Land{i},r{i % 5}"
            for i in range(n)]


def validate_seconds(n: int, answers: int = 997) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.csv"
        path.write_text("prompt,answer,counterfactual,subject,relation\n"
                        + "\n".join(relation_rows(n, answers)) + "\n")
        start = time.perf_counter()
        problems = validate_file(path)
        dataset = load_dataset(path)  # validation plus filling every counterfactual
        seconds = time.perf_counter() - start
    if problems or len(dataset) != n:
        raise SystemExit(f"validation failed: {problems[:3]}")
    return seconds


def fill_seconds(n: int) -> float:
    import pandas as pd

    from factcircuits.data.datasets import COLUMNS

    rows = pd.DataFrame([{"task": "cloze", "prompt": f"The capital of Land{i} is",
                          "label": True, "answer": f" City{i % 700}",
                          "counterfactual": f" City{(i + 1) % 700}", "subject": f"Land{i}",
                          "relation": f"r{i % 3}"} for i in range(n)])
    for column in COLUMNS:  # the columns a loaded dataset has
        if column not in rows:
            rows[column] = ""
    rows = rows[COLUMNS]
    start = time.perf_counter()
    make_counterfactual(rows, 0)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--fill-rows", type=int, default=10_000,
                        help="filling is timed at this many rows and at 4 times as many")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    n_small, n_large = args.fill_rows, 4 * args.fill_rows
    small, large = fill_seconds(n_small), fill_seconds(n_large)
    report = {"benchmark": "dataset_scale", "validate_rows": args.rows,
              "validate_seconds": validate_seconds(args.rows),
              "validate_two_answers_seconds": validate_seconds(args.rows, answers=2),
              "fill_rows_small": n_small, "fill_rows_large": n_large,
              "fill_small_seconds": small, "fill_large_seconds": large,
              "fill_ratio_large_over_small": large / small, "load_average": os.getloadavg()}
    if args.json:
        print(json.dumps(report))
        return
    print(f"dataset validate, {args.rows:,} rows: {report['validate_seconds']:.1f} s "
          f"(997 answers), {report['validate_two_answers_seconds']:.1f} s (2 answers)")
    print(f"filling counterfactuals: {n_small:,} rows {small:.2f} s, {n_large:,} rows "
          f"{large:.2f} s, ratio {large / small:.1f} (linear ≈ 4, quadratic ≈ 16)")
    print("load average: " + " ".join(f"{v:.2f}" for v in report["load_average"]))


if __name__ == "__main__":
    main()
