"""Circuits by relation and circuit stability (notebook 09): the time and peak memory they add.

On the run's patching pairs of a dataset (default `relations-cloze` with `per_relation=8`: at
most 8 known prompts per relation, seeded, the prompts whose counterfactual has the same token
length), as `relation_circuits.relation_study` computes them: per-pair EAP and EAP-IG scores
(5 steps) in one pass, the run's circuit over every pair and one per relation with at least
`--min-pairs` pairs (exact faithfulness at the MIB sizes on held-out or cross-fitted pairs),
`--resamples` bootstrap resamples of each circuit's pairs (stability), and with two or more
relations the overlap and the shared core's faithfulness on each relation's pairs. Times are
wall seconds per phase on this machine; read them beside the load average printed with them.
Peak memory is the process's resident peak (ru_maxrss); `total_cpu` is the process's CPU time
for the whole study (with one thread, close to its wall time on an idle core).

    python benchmarks/relation_circuits.py [--model default] [--dataset relations-cloze]
                                           [--per-relation 8] [--resamples 100] [--json]
    python benchmarks/relation_circuits.py --model tiny --dataset paris-cloze --per-relation 0 \
        --n-prompts 3 --ig-steps 1 --resamples 5 --min-pairs 1 --json   # smallest setting
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common
TARGETS = {"total_s": 300.0, "peak_gb": 3.0}


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def run_pairs(model: str, dataset: str, per_relation: int, n_prompts: int, seed: int):
    """The model and the pairs notebook 09 analyses: known prompts, then the patchable ones."""
    from factcircuits.run.session import open_session

    session = open_session(model, dataset, n_prompts=n_prompts, per_relation=per_relation,
                           seed=seed)
    prepared, _ = session.known()
    pairs, _ = session.patchable(prepared)
    return session.lm, pairs


def measure(model: str, dataset: str, per_relation: int, n_prompts: int, ig_steps: int,
            resamples: int, min_pairs: int, seed: int, progress: bool) -> dict:
    import numpy as np

    from factcircuits.methods.circuits import relations as R
    from factcircuits.methods.circuits.stability import stability

    lm, pairs = run_pairs(model, dataset, per_relation, n_prompts, seed)
    phases = {"load": peak_gb()}
    seconds = {}
    start, cpu = time.perf_counter(), time.process_time()
    study = R.relation_study(lm, pairs, min_pairs=min_pairs, ig_steps=ig_steps, seed=seed,
                             stability_resamples=resamples, progress=progress)
    seconds["total"] = time.perf_counter() - start
    seconds["total_cpu"] = time.process_time() - cpu  # this process's CPU: less load-bound
    phases["study"] = peak_gb()
    # the parts: the per-pair scores (timed inside the study), one stability pass again
    seconds["per_pair_scores"] = study.scores.seconds if study.scores is not None else 0.0
    k = study.pooled.edges_for_80 if study.pooled and study.pooled.edges_for_80 else 1
    start = time.perf_counter()
    if study.scores is not None:
        stability(study.scores, k, n_resamples=resamples, seed=seed)
    seconds["one_stability"] = time.perf_counter() - start

    def group(c):
        s = c.stability
        return {"relation": c.name, "n_pairs": len(c.rows), "split": c.split.kind,
                "edges_for_80": c.edges_for_80,
                "faithfulness_for_80": None if c.at_80 is None else
                [round(c.at_80.value, 4), round(c.at_80.low, 4), round(c.at_80.high, 4)],
                "cpr": [round(c.cpr.value, 4), round(c.cpr.low, 4), round(c.cpr.high, 4)],
                # the full graph is the full model: 1 at any size of the run
                "faithfulness_at_100": round(float(c.faithfulness["faithfulness"].iloc[-1]), 6),
                "stability_median": None if s is None else round(s.median, 4),
                "stability_range": None if s is None else [round(v, 4) for v in s.interval],
                "stable": None if s is None else s.stable}

    overlap = None
    if study.overlap is not None:
        off = study.overlap[study.overlap.relation_a != study.overlap.relation_b]
        overlap = {k: round(float(np.mean(off[k])), 4)
                   for k in ("edge_jaccard", "node_jaccard", "weighted_overlap")}
    core = None if study.core is None else {
        "rule": study.core.rule, "needed": study.core.needed, "n_edges": study.core.n_edges,
        "per_relation": study.core_table.round(4).to_dict("records")}
    return {"benchmark": "relation_circuits", "model": model, "dataset": dataset,
            "per_relation": per_relation,
            "n_pairs": len(pairs.prompts), "n_edges": study.graph.n_edges, "ig_steps": ig_steps,
            "resamples": resamples, "min_pairs": min_pairs,
            "relations": study.relations.to_dict("records"),
            "total_s": round(seconds["total"], 2),
            "seconds": {k: round(v, 2) for k, v in seconds.items()},
            "pooled": None if study.pooled is None else group(study.pooled),
            "circuits": [group(c) for c in study.circuits], "mean_overlap": overlap,
            "core": core, "peak_gb": round(peak_gb(), 3),
            "peak_gb_after": {k: round(v, 3) for k, v in phases.items()}}


def main() -> int:
    from _common import add_common_arguments, choose_threads, machine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--model", default="default")
    parser.add_argument("--dataset", default="relations-cloze")
    parser.add_argument("--per-relation", type=int, default=8)
    parser.add_argument("--n-prompts", type=int, default=0)
    parser.add_argument("--ig-steps", type=int, default=5)
    parser.add_argument("--resamples", type=int, default=100)
    parser.add_argument("--min-pairs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    threads = choose_threads(args)
    report = measure(args.model, args.dataset, args.per_relation, args.n_prompts,
                     args.ig_steps, args.resamples, args.min_pairs, args.seed, args.progress)
    report["machine"] = machine()
    report["threads"] = threads.count
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"relation circuits benchmark, {threads.count} thread(s), {report['machine']}")
    print(f"{report['model']} on {report['dataset']} (per_relation={report['per_relation']}): "
          f"{report['n_pairs']} pairs, {report['n_edges']} edges")
    for key, target in TARGETS.items():
        print(f"  {key:10s} {report[key]:8.2f}  target ≤ {target}  ratio "
              f"{report[key] / target:.2f}")
    print(f"  seconds {report['seconds']}; peak GB after each phase {report['peak_gb_after']}")
    for c in [report["pooled"], *report["circuits"]]:
        if c:
            print(f"  {c}")
    print(f"  mean overlap between relations {report['mean_overlap']}")
    print(f"  core {report['core']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
