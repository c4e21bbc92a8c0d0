"""Circuits (EAP, EAP-IG, exact faithfulness): time, peak memory, and how well the scores rank
edges by their exact effect.

Per model (the embedded default and gemma3-270m), on the default run's patching pairs (default
cloze dataset, prompts the model answers correctly whose counterfactual has the same token
length, as `benchmarks/atp.py`): EAP-IG scores (5 steps; EAP comes with its first step), then
the whole faithfulness curve (empty, full, top-k and greedy circuits at the MIB sizes for
EAP-IG, top-k for EAP), then exact single-edge patching of sampled edges in both directions
(`circuits.single_edges`) and the Spearman correlation of each score with each: noising, the
clean run with one edge given its corrupted write, m(full) − m(full without the edge);
denoising, the corrupted run with one edge given its clean write, m(patched) − m(corrupted),
the quantity EAP and EAP-IG linearise.
Sampled edges (`--edges 100`): 100 uniformly at random (seeded), the 100 of largest |EAP-IG|
and the 50 of largest |EAP| (union). Peak memory is the process's resident peak (ru_maxrss),
also read after each phase (it only grows: the phase where it reaches its final value set it).

    python benchmarks/circuit.py [--models default,gemma3-270m] [--json] [--threads N]
                                 [--pairs N] [--ig-steps 5] [--edges 100]
    python benchmarks/circuit.py --models default --pairs 1 --ig-steps 1 --edges 10 --json
                                                             # smallest setting
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
sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, atp
TARGETS = {"eap_ig_s": 60.0, "curve_s": 60.0, "peak_gb": 2.5}


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def sample_edges(scores, n_random=100, n_top=100, n_top_eap=50, seed=0):
    import torch

    gen = torch.Generator().manual_seed(seed)
    rand = torch.randperm(len(scores.eap_ig), generator=gen)[:n_random]
    top = scores.eap_ig.abs().topk(n_top).indices
    top_eap = scores.eap.abs().topk(n_top_eap).indices
    return rand, torch.unique(torch.cat([rand, top, top_eap]))


def measure(spec: str, progress: bool, n_pairs: int = 0, ig_steps: int = 5,
            n_edges: int = 100) -> dict:
    import pandas as pd
    from atp import default_run_pairs

    from factcircuits.methods.atp_checks import spearman
    from factcircuits.methods.circuits import faithfulness as F
    from factcircuits.methods.circuits.forward import CircuitForward
    from factcircuits.methods.circuits.scores import edge_scores
    from factcircuits.methods.circuits.single_edges import edge_effects
    from factcircuits.models import load_model

    lm = load_model(spec)
    pairs = default_run_pairs(lm, n_pairs)
    loaded_gb = peak_gb()
    phases = {"load": loaded_gb}
    cf = CircuitForward(lm)
    start = time.perf_counter()
    scores = edge_scores(lm, pairs, ig_steps=ig_steps, progress=progress, forward=cf)
    eap_ig_s = time.perf_counter() - start
    phases["scores"] = peak_gb()
    start = time.perf_counter()
    evaluator = F.Evaluator(lm, pairs, forward=cf)
    phases["evaluator"] = peak_gb()
    table, base = F.curve(evaluator, scores.eap_ig, progress=progress)
    curve_s = time.perf_counter() - start
    phases["curve"] = peak_gb()
    eap_table, _ = F.curve(evaluator, scores.eap, method="EAP", greedy=False)
    phases["eap curve"] = peak_gb()
    table = pd.concat([table, eap_table], ignore_index=True)
    areas = {}
    for (method, variant), part in table.groupby(["method", "variant"]):
        cpr, cmd = F.areas(part["n_edges"] / cf.graph.n_edges, part["faithfulness"])
        best = F.smallest_reaching(part)
        areas[f"{method} {variant}"] = {
            "cpr": round(cpr, 4), "cmd": round(cmd, 4),
            "edges_for_80": None if best is None else int(best["n_edges"]),
            "faithfulness": {f"{p:g}%": round(f, 4) for p, f in
                             zip(part["size_percent"], part["faithfulness"])},
            "n_edges": [int(n) for n in part["n_edges"]]}
    rand, edges = sample_edges(scores, n_random=n_edges, n_top=n_edges,
                               n_top_eap=max(1, n_edges // 2))
    start = time.perf_counter()
    exact = edge_effects(lm, pairs, edges, forward=cf, progress=progress)
    noising, denoising = exact["noising"], exact["denoising"]
    single_s = time.perf_counter() - start
    phases["single edges"] = peak_gb()
    is_rand = (edges[:, None] == rand[None]).any(1)
    corr = {f"{name} vs {way}": {"all": round(spearman(s[edges], exact), 4),
                                 "uniform sample": round(spearman(s[edges][is_rand],
                                                                  exact[is_rand]), 4)}
            for name, s in (("EAP-IG", scores.eap_ig), ("EAP", scores.eap))
            for way, exact in (("noising", noising), ("denoising", denoising))}
    return {"model": spec, "n_pairs": len(pairs.prompts), "graph": str(cf.graph),
            "n_edges": cf.graph.n_edges,
            "clean_metric": round(float(base["full"].mean()), 4),
            "corrupted_metric": round(float(base["empty"].mean()), 4),
            "ig_steps": ig_steps, "eap_ig_s": round(eap_ig_s, 2), "curve_s": round(curve_s, 2),
            "n_circuits_in_curve": int(len(table[table["method"] == "EAP-IG"]) + 2),
            "single_edges": len(edges), "single_edges_s": round(single_s, 2),
            "spearman_vs_exact_single_edge": corr, "areas": areas,
            "peak_gb": round(peak_gb(), 3), "peak_gb_after_load": round(loaded_gb, 3),
            "peak_gb_after": {k: round(v, 3) for k, v in phases.items()}}


def main() -> int:
    from _common import add_common_arguments, choose_threads, machine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--models", default="default,gemma3-270m")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--pairs", type=int, default=0,
                        help="the first N of the default run's pairs (default 0: all)")
    parser.add_argument("--ig-steps", type=int, default=5, help="EAP-IG steps (default 5)")
    parser.add_argument("--edges", type=int, default=100,
                        help="edges patched exactly: N at random, the N of largest |EAP-IG|, "
                             "the N/2 of largest |EAP| (default 100)")
    args = parser.parse_args()
    threads = choose_threads(args)
    reports = []
    for spec in args.models.split(","):
        # one process per model: each peak is that model's own
        if len(args.models.split(",")) > 1:
            import subprocess

            cmd = [sys.executable, __file__, "--models", spec, "--json",
                   "--threads", str(threads.count), "--pairs", str(args.pairs),
                   "--ig-steps", str(args.ig_steps), "--edges", str(args.edges)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            reports.append(json.loads(out.strip().splitlines()[-1]))
        else:
            reports.append(measure(spec, args.progress, args.pairs, args.ig_steps,
                                   args.edges))
    if args.json:
        print(json.dumps(reports[0] if len(reports) == 1 else
                         {"benchmark": "circuit", "machine": machine(), "models": reports}))
        return 0
    print(f"circuit benchmark, {threads.count} thread(s), {machine()}")
    for r in reports:
        print(f"\n{r['model']}: {r['graph']}, {r['n_edges']} edges, {r['n_pairs']} pairs; "
              f"metric clean {r['clean_metric']} corrupted {r['corrupted_metric']}")
        for key, target in TARGETS.items():
            print(f"  {key:10s} {r[key]:8.2f}  target ≤ {target}  ratio {r[key] / target:.2f}")
        print(f"  peak GB after each phase {r['peak_gb_after']}; single-edge exact "
              f"patching of {r['single_edges']} edges (both ways) {r['single_edges_s']} s")
        for name, c in r["spearman_vs_exact_single_edge"].items():
            print(f"  Spearman {name} single-edge patching: {c}")
        for name, a in r["areas"].items():
            print(f"  {name}: CPR {a['cpr']} CMD {a['cmd']} edges for 80% {a['edges_for_80']}")
            print(f"    {a['faithfulness']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
