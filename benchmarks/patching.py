"""Activation patching: TransformerLens's `get_act_patch_*` against factcircuits' fast path.

Same model (embedded default), same 16 prompt pairs (equal-token-length pairs from the shipped
paris-cloze set, topped up from relations-cloze), same grid (every layer × every position of
the right-padded batch). Each measurement runs in its own process (TL and ours alternately,
`--reps` each): the process loads the model, resets its peak-RSS mark (/proc/self/clear_refs),
runs one patching call (TL's timing includes the clean `run_with_cache` it needs; ours
includes its own clean and corrupted runs) and reports wall time and peak RSS. Printed: median
wall time of each, the ratio, max |difference| of the [layer, pos] results, peak RSS of each
(absolute, and above the RSS after loading the model).

    python benchmarks/patching.py [--json] [--components resid_pre,attn_out,mlp_out]
                                  [--reps 3] [--pairs 16] [--threads N] [--profile]
                                  [--model default]
    python benchmarks/patching.py --model tiny --pairs 2 --reps 1 --json   # smallest setting

Both methods always run with the same thread count (`--threads`, default: see
`factcircuits.run.threads`); it is printed, and a comparison of measurements made with
different counts is refused. On a busy 2-core machine pass `--threads 1`: two OpenMP threads
competing with other load make both methods slower and the timings noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TL_FUNCTIONS = {"resid_pre": "get_act_patch_resid_pre", "attn_out": "get_act_patch_attn_out",
                "mlp_out": "get_act_patch_mlp_out"}


def select_pairs(lm, n_pairs: int):
    """The first `n_pairs` equal-token-length cloze pairs: paris-cloze, then relations-cloze."""
    from factcircuits.data.datasets import load_dataset
    from factcircuits.methods.evaluate import prepare
    chosen = []
    for name in ("paris-cloze", "relations-cloze"):
        prepared = prepare(lm, load_dataset(name))
        ok = [i for i, p in enumerate(prepared.pair_problems(lm.tokenizer)) if not p]
        chosen.append(prepared.subset(ok[: n_pairs - sum(len(c.prompts) for c in chosen)]))
        if sum(len(c.prompts) for c in chosen) >= n_pairs:
            break
    return merge(chosen)


def merge(parts):
    import pandas as pd
    import torch

    from factcircuits.methods.evaluate import PreparedTask

    first = parts[0]
    return PreparedTask(
        first.task, first.prompt_format,
        pd.concat([p.rows for p in parts], ignore_index=True),
        [x for p in parts for x in p.prompts], [x for p in parts for x in p.corrupted_prompts],
        torch.cat([p.signs for p in parts]), None,
        torch.cat([p.answer_ids for p in parts]), torch.cat([p.cf_ids for p in parts]))


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def child(method: str, component: str, n_pairs: int, out: str, threads: int,
          profile: bool, model: str) -> None:
    """One measurement (runs in its own process)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    from factcircuits.models import load_model
    lm = load_model(model)
    prepared = select_pairs(lm, n_pairs)
    clean, corrupt = prepared.pairs(lm.tokenizer)
    import gc

    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark
    except OSError:
        pass
    rss_start = _rss_kib("VmRSS")
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    start, cpu_start = time.perf_counter(), time.process_time()
    if method == "tl":
        import transformer_lens.patching as tlp

        name = f"blocks.{{}}.hook_{component}"
        wanted = {name.format(layer) for layer in range(lm.cfg.n_layers)}
        _, cache = lm.model.run_with_cache(clean.tokens, names_filter=lambda n: n in wanted)
        rows = torch.arange(len(clean.tokens))

        def metric(logits):
            return prepared.metric(logits[rows, clean.last_index]).mean()

        with torch.inference_mode():
            grid = getattr(tlp, TL_FUNCTIONS[component])(lm.model, corrupt.tokens, cache,
                                                         metric)
    else:
        from factcircuits.methods.patching import patch

        grid = patch(lm, prepared, component, progress=False).mean()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    if profiler is not None:
        import pstats

        profiler.disable()
        stats = pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime")
        stats.print_stats(15)
    torch.save(grid.detach().cpu().float(), out)
    info = {"wall_s": wall, "cpu_s": cpu, "peak_rss_mib": _rss_kib("VmHWM") / 1024,
            "rss_after_load_mib": rss_start / 1024,
            "peak_above_load_mib": (_rss_kib("VmHWM") - rss_start) / 1024,
            "n_pairs": len(prepared.prompts), "grid": list(grid.shape),
            "threads": torch.get_num_threads()}
    Path(out + ".json").write_text(json.dumps(info))


def run_child(method, component, n_pairs, threads, workdir, rep, model, profile=False):
    from _common import child_env, run_quietly

    out = str(Path(workdir) / f"{method}_{component}_{rep}.pt")
    cmd = [sys.executable, __file__, "--child", method, component, str(n_pairs), out,
           str(threads), model] + (["--profile"] if profile else [])
    if profile:
        subprocess.run(cmd, check=True, env=child_env(threads))
    else:
        run_quietly(cmd, env=child_env(threads))
    return out, json.loads(Path(out + ".json").read_text())


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        method, component, n_pairs, out, threads, model = sys.argv[2:8]
        child(method, component, int(n_pairs), out, int(threads), "--profile" in sys.argv, model)
        return 0
    sys.path.insert(0, str(Path(__file__).parent))
    from _common import (
        add_common_arguments,
        choose_threads,
        compare_with_saved,
        load_change,
        machine,
        refuse_mixed_threads,
    )

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--components", default="resid_pre",
                        help="comma-separated: resid_pre,attn_out,mlp_out (default resid_pre)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--profile", action="store_true",
                        help="also profile one run of ours (cProfile, to stderr)")
    parser.add_argument("--model", default="default",
                        help="model spec (default: the embedded SmolLM2; tiny: the smallest run)")
    args = parser.parse_args()
    threads = choose_threads(args)
    args.threads = threads.count
    import torch

    report = {"model": ("default (SmolLM2-135M-Instruct, embedded)" if args.model == "default"
                        else args.model), "reps": args.reps,
              "threads": threads.count, "threads_source": threads.source,
              "machine_before": machine(), "components": {}}
    with tempfile.TemporaryDirectory() as workdir:
        for component in args.components.split(","):
            runs = {"tl": [], "ours": []}
            for rep in range(args.reps):
                for method in ("tl", "ours"):
                    out, info = run_child(method, component, args.pairs, args.threads,
                                          workdir, rep, args.model)
                    info["grid_tensor"] = torch.load(out)
                    runs[method].append(info)
                    if not args.json:
                        print(f"{component} rep {rep} {method}: {info['wall_s']:.2f} s, "
                              f"peak RSS {info['peak_rss_mib']:.0f} MiB", file=sys.stderr)
            refuse_mixed_threads({f"{m} #{i}": r["threads"] for m in runs
                                  for i, r in enumerate(runs[m])} | {"asked": threads.count})
            tl = statistics.median(r["wall_s"] for r in runs["tl"])
            ours = statistics.median(r["wall_s"] for r in runs["ours"])
            tl_cpu = statistics.median(r["cpu_s"] for r in runs["tl"])
            ours_cpu = statistics.median(r["cpu_s"] for r in runs["ours"])
            diff = max(float((a["grid_tensor"] - b["grid_tensor"]).abs().max())
                       for a in runs["tl"] for b in runs["ours"])
            report["components"][component] = {
                "tl_median_s": round(tl, 3), "ours_median_s": round(ours, 3),
                "ratio": round(tl / ours, 2), "tl_median_cpu_s": round(tl_cpu, 3),
                "ours_median_cpu_s": round(ours_cpu, 3), "ratio_cpu": round(tl_cpu / ours_cpu, 2),
                "max_abs_diff": diff,
                "tl_peak_rss_mib": round(max(r["peak_rss_mib"] for r in runs["tl"]), 1),
                "ours_peak_rss_mib": round(max(r["peak_rss_mib"] for r in runs["ours"]), 1),
                "tl_peak_above_load_mib": round(max(r["peak_above_load_mib"]
                                                    for r in runs["tl"]), 1),
                "ours_peak_above_load_mib": round(max(r["peak_above_load_mib"]
                                                      for r in runs["ours"]), 1),
                "grid": runs["ours"][0]["grid"], "n_pairs": runs["ours"][0]["n_pairs"],
                "threads": runs["ours"][0]["threads"],
            }
        if args.profile:
            run_child("ours", args.components.split(",")[0], args.pairs, args.threads,
                      workdir, "profile", args.model, profile=True)
    report["machine_after"] = machine()
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{threads.count} thread(s) ({threads.source}); "
              f"{load_change(report)}")
        for component, r in report["components"].items():
            print(f"{component}: grid {r['grid']} on {r['n_pairs']} pairs, {r['threads']} threads")
            print(f"  median wall  TL {r['tl_median_s']:.2f} s   ours {r['ours_median_s']:.2f} s"
                  f"   ratio {r['ratio']:.1f}x")
            print(f"  median CPU   TL {r['tl_median_cpu_s']:.2f} s   ours "
                  f"{r['ours_median_cpu_s']:.2f} s   ratio {r['ratio_cpu']:.1f}x")
            print(f"  max |diff|   {r['max_abs_diff']:.2e}")
            print(f"  peak RSS     TL {r['tl_peak_rss_mib']:.0f} MiB   ours "
                  f"{r['ours_peak_rss_mib']:.0f} MiB   (above load: TL "
                  f"{r['tl_peak_above_load_mib']:.0f}, ours {r['ours_peak_above_load_mib']:.0f})")
    if args.against:
        first = next(iter(report["components"]))
        print("\n".join(compare_with_saved(args.against, report, [
            ("components", first, "tl_median_s"), ("components", first, "ours_median_s"),
            ("components", first, "ratio"), ("components", first, "max_abs_diff")])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
