"""Attribution patching (AtP, AtP*) against exact activation patching: time and agreement.

The default run's patching pairs (embedded model, default cloze dataset, prompts the model
answers correctly whose counterfactual has the same token length). One process: the model is
loaded once, then timed (wall and CPU seconds) are the AtP scan of every grid at once
(residual stream, attention and MLP outputs by position, heads by position; with AtP*'s QK fix)
and exact patching of the residual, attention and MLP grids and of the heads (all positions).
Printed side by side: times, their ratio, and per grid the Spearman correlation of estimate and
exact effect over every cell patching can change, and the share of each prompt's top-5 exact
cells among the scan's top-10.

    python benchmarks/atp.py [--json] [--threads N] [--against saved.json] [--pairs N]
    python benchmarks/atp.py --pairs 2 --json          # smallest setting
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def default_run_pairs(lm, n_pairs: int = 0):
    """The default run's patching pairs (the first `n_pairs` of them; 0: all)."""
    import torch

    from factcircuits.data.datasets import load_dataset
    from factcircuits.methods.evaluate import prepare, score

    prepared = prepare(lm, load_dataset("paris-cloze"))
    _, table = score(lm, prepared)
    known = prepared.subset(torch.as_tensor(table["correct"].to_numpy().copy()))
    usable = [i for i, p in enumerate(known.pair_problems(lm.tokenizer)) if not p]
    return known.subset(usable[:n_pairs] if n_pairs else usable)


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> int:
    sys.path.insert(0, str(Path(__file__).parent))
    from _common import add_common_arguments, choose_threads, compare_with_saved, machine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--pairs", type=int, default=0,
                        help="the first N of the default run's pairs (default 0: all)")
    args = parser.parse_args()
    threads = choose_threads(args)
    import torch

    from factcircuits.methods import atp_checks as AC
    from factcircuits.methods import attribution_patching as AP
    from factcircuits.methods import patching as P
    from factcircuits.models import load_model

    report = {"benchmark": "atp", "threads": threads.count, "threads_source": threads.source,
              "machine_before": machine()}
    lm = load_model("default")
    pairs = default_run_pairs(lm, args.pairs)
    scan, scan_wall, scan_cpu = timed(lambda: AP.scan(lm, pairs, progress=False))

    def exact_all():
        grids = {c: P.patch(lm, pairs, c, progress=False)
                 for c in ("resid_pre", "attn_out", "mlp_out")}
        grids["z"] = P.patch_heads(lm, pairs, progress=False)
        return grids

    exact, exact_wall, exact_cpu = timed(exact_all)
    rows = [AC.agreement(scan[c], exact[c], star=star)
            for c in ("resid_pre", "attn_out", "mlp_out") for star in (False, True)]
    rows.append(AC.agreement(scan["z"], exact["z"]))
    report |= {"n_pairs": len(pairs.prompts), "threads_torch": torch.get_num_threads(),
               "atp": {"wall_s": round(scan_wall, 2), "cpu_s": round(scan_cpu, 2)},
               "exact": {"wall_s": round(exact_wall, 2), "cpu_s": round(exact_cpu, 2)},
               "speedup_wall": round(exact_wall / scan_wall, 1),
               "speedup_cpu": round(exact_cpu / scan_cpu, 1),
               "agreement": rows, "machine_after": machine()}
    if args.json:
        print(json.dumps(report))
    else:
        load = (report["machine_before"]["load_average_1_5_15"],
                report["machine_after"]["load_average_1_5_15"])
        print(f"AtP scan vs exact patching, {len(pairs.prompts)} pairs, {threads.count} "
              f"thread(s) ({threads.source}); load {load[0]} → {load[1]}")
        print(f"{'':<10} {'AtP scan':>10} {'exact':>10} {'ratio':>8}")
        for key in ("wall_s", "cpu_s"):
            a, e = report["atp"][key], report["exact"][key]
            print(f"{key:<10} {a:>10.1f} {e:>10.1f} {e / a:>7.1f}x")
        print(f"\n{'grid':<20} {'method':<6} {'cells':>6} {'Spearman':>9} {'median/prompt':>14} "
              f"{'top5 in top10':>14}")
        for r in rows:
            print(f"{r['component']:<20} {r['method']:<6} {r['n_cells']:>6} {r['spearman']:>9.3f} "
                  f"{r['spearman_median']:>14.3f} {r['recall_top5_in_top10']:>14.2f}")
    if args.against:
        print("\n".join(compare_with_saved(args.against, report, [
            ("atp", "wall_s"), ("exact", "wall_s"), ("speedup_cpu",)])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
