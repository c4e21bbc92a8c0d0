"""Causal tracing, before and after: the tracer as it was against this checkout's, on the
default run's prompts, with the same seed and thread count.

The prompts are the default run's: the embedded model, the default cloze dataset, the prompts
the model answers correctly; the tracer's default kinds (hidden, MLP, attention, window 1 each),
`--samples` noise samples (ROME: 10), seed 0. Each measurement runs in its own process and
reports wall and CPU seconds; printed: both, the ratio, and max |difference| of every traced
value (identical noise: same seed). The baseline ("before") is by default this checkout with
the stacking budget the tracer had before issue 14 (48 MiB, `--before budget=48`: the only
thing issue 14 changed in the tracer, so the science is the same); `--before REV` runs the
library of `git archive REV src` instead (differences then include any change of method
between the revisions, e.g. how the noise scale is measured).

The arithmetic a trace needs (matmul FLOPs of the blocks it recomputes and of the unembedding)
is printed with the rate each run reached: the tracer is bound by float32 matrix multiplies,
which is what limits how much faster it can get at equal numbers. `--bf16` also runs this
checkout's tracer on a bfloat16 model and reports its difference from float32 (usable only if
within 1e-3).

`--mixed` measures cost against work on prompts of several lengths: one known prompt per
relation of the `relations-cloze` dataset (the first the model answers correctly), grouped by
token length; each group is traced on its own (`--prompts N`: its first N prompts) and the
report gives, per length group, CPU-s before and after, the group's float32 floor, the ratio
to it and max |difference|.

    python benchmarks/tracing.py [--json] [--threads N] [--samples 10] [--prompts 0]
                                 [--reps 1] [--before budget=48|REV] [--bf16] [--mixed]
                                 [--against saved.json]
    python benchmarks/tracing.py --samples 1 --prompts 1 --json      # smallest setting
    python benchmarks/tracing.py --mixed --samples 1 --prompts 1 --json  # smallest mixed
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
OLD_BUDGET = "budget=48"  # MiB: the CPU stacking budget before issue 14


# --------------------------------------------------------------------------- child process
def default_run_prompts(lm, n_prompts: int):
    """The default run's prompts: the default cloze dataset, those the model gets right."""
    import torch

    try:
        from factcircuits.data.datasets import load_dataset
        from factcircuits.methods.evaluate import prepare, score
    except ImportError:  # a library from before the stage folders (issue 9), for --before
        from factcircuits.datasets import load_dataset
        from factcircuits.evaluate import prepare, score

    prepared = prepare(lm, load_dataset("paris-cloze"))
    _, table = score(lm, prepared)
    known = prepared.subset(torch.as_tensor(table["correct"].to_numpy().copy()))
    return known.subset(list(range(n_prompts))) if n_prompts else known


def trace_flops(lm, prepared, samples: int, windows=None) -> float:
    """Matmul FLOPs of a trace: for every restored (kind, layer, position) and noise sample,
    the blocks from the window's first layer on over positions p.. , plus one unembedding.
    `windows`: one per restored state; default the tracer's own for its default kinds (window
    1 each since the windowed traces became kinds of their own)."""
    from factcircuits.methods.causal_tracing import KINDS, window_layers
    from factcircuits.methods.positions import task_positions

    if windows is None:
        windows = [1] * len(KINDS)

    cfg = lm.model.cfg
    n_kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    d_mlp = getattr(cfg, "d_mlp", None) or 4 * cfg.d_model
    block = 2 * cfg.d_model * (2 * cfg.n_heads * cfg.d_head + 2 * n_kv * cfg.d_head + 3 * d_mlp)
    unembed = 2 * cfg.d_model * cfg.d_vocab
    lengths = prepared.clean_batch(lm.tokenizer).lengths.tolist()
    total = 0.0
    for n, pos in zip(lengths, task_positions(prepared, lm.tokenizer)):
        for p in range(min(pos.subject) if pos.subject else n, n):
            for window in windows:
                for layer in range(cfg.n_layers):
                    start = min(window_layers(layer, window, cfg.n_layers))
                    total += samples * ((cfg.n_layers - start) * (n - p) * block + unembed)
    return total


def matmul_ceiling(cfg, rows: int = 1024, reps: int = 5) -> float:
    """GFLOP/s of this process's float32 matrix multiplies at the model's block shapes (the
    attention projections, the MLP's up/gate and down), `rows` rows: the rate the tracer's
    arithmetic cannot beat at equal numbers."""
    import torch

    d_mlp = getattr(cfg, "d_mlp", None) or 4 * cfg.d_model
    shapes = [(cfg.d_model, cfg.n_heads * cfg.d_head), (cfg.d_model, d_mlp), (d_mlp, cfg.d_model)]
    seconds, flops = 0.0, 0.0
    for k, n in shapes:
        x, w = torch.randn(rows, k), torch.randn(n, k)
        torch.nn.functional.linear(x, w)  # warm-up
        start = time.process_time()  # CPU seconds, as the tracer's rate is measured
        for _ in range(reps):
            torch.nn.functional.linear(x, w)
        seconds += time.process_time() - start
        flops += 2 * rows * k * n * reps
    return flops / seconds / 1e9


def mixed_length_groups(lm, n_prompts: int) -> dict[int, object]:
    """One known prompt per relation of `relations-cloze` (the first the model answers
    correctly), grouped by token length: {length: prepared prompts}, `n_prompts` per group
    at most (0: all)."""
    import torch

    from factcircuits.data.datasets import load_dataset
    from factcircuits.methods.evaluate import prepare, score

    prepared = prepare(lm, load_dataset("relations-cloze"))
    _, table = score(lm, prepared)
    known = prepared.subset(torch.as_tensor(table["correct"].to_numpy().copy()))
    first = [int(i) for i in known.rows["relation"].astype(str).drop_duplicates().index]
    one_each = known.subset(first)
    lengths = one_each.clean_batch(lm.tokenizer).lengths.tolist()
    groups = {}
    for length in sorted(set(lengths)):
        members = [i for i, n in enumerate(lengths) if n == length]
        groups[length] = one_each.subset(members[:n_prompts] if n_prompts else members)
    return groups


def child_mixed(lm, out: str, samples: int, n_prompts: int, seed: int, budget_bytes) -> None:
    """Each length group traced on its own: CPU and wall seconds and FLOPs per group."""
    import torch

    from factcircuits.methods import causal_tracing as CT

    groups = mixed_length_groups(lm, n_prompts)
    CT.trace(lm, next(iter(groups.values())).subset([0]), noise_samples=1, seed=seed,
             progress=False)  # warm-up: the resume check and first-call costs, not timed
    results, info = {}, {"threads": torch.get_num_threads(), "dtype": str(lm.model.cfg.dtype),
                         "groups": []}
    for length, prepared in groups.items():
        wall, cpu = time.perf_counter(), time.process_time()
        traces = CT.trace(lm, prepared, noise_samples=samples, seed=seed, progress=False,
                          budget_bytes=budget_bytes)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        results[length] = {k: {"values": t.values.float(), "clean": t.clean,
                               "corrupted": t.corrupted} for k, t in traces.items()}
        info["groups"].append({"length": length, "n_prompts": len(prepared.prompts),
                               "relations": sorted(set(prepared.rows["relation"].astype(str))),
                               "wall_s": wall, "cpu_s": cpu,
                               "flops": trace_flops(lm, prepared, samples)})
    info["n_prompts"] = sum(g["n_prompts"] for g in info["groups"])
    info["matmul_ceiling_gflops"] = matmul_ceiling(lm.model.cfg)
    torch.save(results, out)
    Path(out + ".json").write_text(json.dumps(info))


def child(out: str, samples: int, n_prompts: int, seed: int, dtype: str, budget: str,
          mixed: bool = False) -> None:
    import torch

    from factcircuits.methods import causal_tracing as CT
    from factcircuits.models import load_model

    lm = load_model("default", dtype=dtype or None)
    if mixed:
        child_mixed(lm, out, samples, n_prompts, seed,
                    int(budget) * 2**20 if budget else "auto")
        return
    prepared = default_run_prompts(lm, n_prompts)
    wall, cpu = time.perf_counter(), time.process_time()
    budget_bytes = int(budget) * 2**20 if budget else "auto"
    traces = CT.trace(lm, prepared, noise_samples=samples, seed=seed, progress=False,
                      budget_bytes=budget_bytes)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    torch.save({k: {"values": t.values.float(), "clean": t.clean, "corrupted": t.corrupted}
                for k, t in traces.items()}, out)
    info = {"wall_s": wall, "cpu_s": cpu, "threads": torch.get_num_threads(),
            "n_prompts": len(prepared.prompts), "dtype": str(lm.model.cfg.dtype)}
    try:
        info["flops"] = trace_flops(lm, prepared, samples)
        info["matmul_ceiling_gflops"] = matmul_ceiling(lm.model.cfg)
    except ImportError:  # a baseline library without positions.task_positions
        pass
    Path(out + ".json").write_text(json.dumps(info))


# --------------------------------------------------------------------------- parent
def baseline_source(rev: str, workdir: Path) -> Path:
    """This repository's `src` at `rev`, unpacked under `workdir`."""
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], check=True,
                                 capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        sys.exit(f"--before {rev}: cannot read that revision from git "
                 f"({detail.decode().strip() or exc}); pass a commit this clone has")
    target = workdir / "baseline"
    target.mkdir()
    tar = target / "src.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as handle:
        handle.extractall(target, filter="data")
    return target / "src"


def run_child(label, src: Path, threads: int, workdir: Path, rep: int, args, dtype="",
              budget=""):
    from _common import child_env, run_quietly

    out = str(workdir / f"{label}_{rep}.pt")
    cmd = [sys.executable, __file__, "--child", out, str(args.samples), str(args.prompts),
           str(args.seed), dtype, budget, "mixed" if args.mixed else ""]
    env = child_env(threads, PYTHONPATH=str(src))
    run_quietly(cmd, env=env, cwd=ROOT)
    return out, json.loads(Path(out + ".json").read_text())


def max_abs_diff(a: dict, b: dict) -> tuple[float, bool]:
    import torch

    diffs, identical = [], True
    for kind in a:
        for key in ("values", "clean", "corrupted"):
            x, y = torch.nan_to_num(a[kind][key]), torch.nan_to_num(b[kind][key])
            diffs.append(float((x - y).abs().max()))
            identical &= torch.equal(x, y)
    return max(diffs), identical


def json_or_header(report: dict, args, threads, what: str = "", prompts: str = "",
                   tail: str = "") -> bool:
    """Stamp the load after the measurements, then print the JSON report (True: nothing more to
    print) or the text report's first line (False: the caller prints its table)."""
    from _common import load_change, machine

    report["machine_after"] = machine()
    if args.json:
        print(json.dumps(report))
        return True
    print(f"causal tracing{what}, {report['n_prompts']} prompts{prompts} × {args.samples} noise "
          f"samples, seed {args.seed}, {threads.count} thread(s) ({threads.source}); "
          f"{load_change(report)}{tail}")
    return False


def report_mixed(report: dict, runs: dict, args, threads) -> int:
    """Per length group: CPU-s before and after (median over reps), the group's float32 floor
    (its matmul FLOPs at this process's model-shaped matmul rate), the ratios to it and
    max |difference| of the traced values."""
    from _common import compare_with_saved

    ceiling = runs["after"][0]["matmul_ceiling_gflops"]
    report["matmul_ceiling_gflops"] = round(ceiling, 1)
    report["n_prompts"] = runs["after"][0]["n_prompts"]
    groups = []
    for i, group in enumerate(runs["after"][0]["groups"]):
        length = group["length"]
        floor = group["flops"] / 1e9 / ceiling
        row = {"length": length, "n_prompts": group["n_prompts"],
               "relations": group["relations"], "tflop": round(group["flops"] / 1e12, 3),
               "floor_cpu_s": round(floor, 2)}
        for label, items in runs.items():
            cpu = statistics.median(r["groups"][i]["cpu_s"] for r in items)
            row[label] = {"cpu_s": round(cpu, 2), "ratio_to_floor": round(cpu / floor, 2),
                          "wall_s": round(statistics.median(r["groups"][i]["wall_s"]
                                                            for r in items), 2)}
        row["max_abs_diff"], row["identical"] = max_abs_diff(
            runs["before"][0]["result"][length], runs["after"][0]["result"][length])
        groups.append(row)
    report |= {"mixed": True, "groups": groups,
               "max_abs_diff": max(g["max_abs_diff"] for g in groups),
               "worst_ratio_to_floor": max(g["after"]["ratio_to_floor"] for g in groups)}
    for label in runs:
        report[label] = {"cpu_s": round(sum(g[label]["cpu_s"] for g in groups), 2),
                         "wall_s": round(sum(g[label]["wall_s"] for g in groups), 2)}
    if not json_or_header(report, args, threads, " by prompt length",
                          " (one per relation of relations-cloze)",
                          f"; float32 floor at {report['matmul_ceiling_gflops']} GFLOP/s"):
        print(f"{'tokens':>6} {'prompts':>7} {'floor s':>8} {'before s':>9} {'÷floor':>7} "
              f"{'after s':>8} {'÷floor':>7} {'max|diff|':>10}")
        for g in groups:
            print(f"{g['length']:>6} {g['n_prompts']:>7} {g['floor_cpu_s']:>8.2f} "
                  f"{g['before']['cpu_s']:>9.2f} {g['before']['ratio_to_floor']:>6.2f}x "
                  f"{g['after']['cpu_s']:>8.2f} {g['after']['ratio_to_floor']:>6.2f}x "
                  f"{g['max_abs_diff']:>10.2e}")
    if args.against:
        print("\n".join(compare_with_saved(args.against, report, [
            ("after", "cpu_s"), ("worst_ratio_to_floor",), ("max_abs_diff",)])))
    return 0


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        out, samples, n_prompts, seed, dtype, budget, mixed = (sys.argv[2:9] + ["", "", ""])[:7]
        child(out, int(samples), int(n_prompts), int(seed), dtype, budget, mixed == "mixed")
        return 0
    sys.path.insert(0, str(Path(__file__).parent))
    from _common import (
        add_common_arguments,
        choose_threads,
        compare_with_saved,
        machine,
        refuse_mixed_threads,
    )

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--samples", type=int, default=10, help="noise samples (ROME: 10)")
    parser.add_argument("--prompts", type=int, default=0, help="first N prompts (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--before", default=OLD_BUDGET,
                        help="baseline: budget=MIB (this checkout with that stacking budget; "
                             "default: the budget before issue 14) or a git revision")
    parser.add_argument("--bf16", action="store_true",
                        help="also trace with a bfloat16 model and report its difference")
    parser.add_argument("--mixed", action="store_true",
                        help="one known prompt per relation of relations-cloze, by token "
                             "length: CPU-s against each length group's float32 floor")
    args = parser.parse_args()
    if args.mixed and args.bf16:
        parser.error("--bf16 compares the default run's prompts; leave out --mixed")
    threads = choose_threads(args)
    import torch

    report = {"benchmark": "tracing", "threads": threads.count, "threads_source": threads.source,
              "samples": args.samples, "seed": args.seed, "baseline": args.before,
              "machine_before": machine()}
    runs = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        old_budget = args.before.startswith("budget=")
        sources = {"before": ROOT / "src" if old_budget else baseline_source(args.before, workdir),
                   "after": ROOT / "src"}
        budgets = {"before": args.before.split("=", 1)[1] if old_budget else "", "after": ""}
        for rep in range(args.reps):
            for label in ("before", "after"):
                out, info = run_child(label, sources[label], threads.count, workdir, rep, args,
                                      budget=budgets[label])
                info["result"] = torch.load(out)
                if args.mixed:
                    info["wall_s"] = sum(g["wall_s"] for g in info["groups"])
                    info["cpu_s"] = sum(g["cpu_s"] for g in info["groups"])
                runs[label].append(info)
                if not args.json:
                    print(f"rep {rep} {label}: {info['wall_s']:.1f} s wall, "
                          f"{info['cpu_s']:.1f} s CPU", file=sys.stderr)
        refuse_mixed_threads({f"{label} #{i}": r["threads"] for label in runs
                              for i, r in enumerate(runs[label])} | {"asked": threads.count})
        if args.mixed:
            return report_mixed(report, runs, args, threads)
        diff, identical = max_abs_diff(runs["before"][0]["result"], runs["after"][0]["result"])
        side = {}
        for label, items in runs.items():
            side[label] = {"wall_s": round(statistics.median(r["wall_s"] for r in items), 2),
                           "cpu_s": round(statistics.median(r["cpu_s"] for r in items), 2)}
        flops = runs["after"][0].get("flops")
        if flops:
            report["tflop"] = round(flops / 1e12, 2)
            for label in side:
                side[label]["gflop_per_cpu_s"] = round(flops / 1e9 / side[label]["cpu_s"], 1)
            ceiling = runs["after"][0].get("matmul_ceiling_gflops")
            if ceiling:  # the fastest an exact float32 trace could be on this machine
                report["matmul_ceiling_gflops"] = round(ceiling, 1)
                report["floor_cpu_s"] = round(flops / 1e9 / ceiling, 1)
                report["max_speedup_at_fp32"] = round(side["before"]["cpu_s"]
                                                      / report["floor_cpu_s"], 2)
        report |= {"n_prompts": runs["after"][0]["n_prompts"], **side,
                   "speedup_wall": round(side["before"]["wall_s"] / side["after"]["wall_s"], 2),
                   "speedup_cpu": round(side["before"]["cpu_s"] / side["after"]["cpu_s"], 2),
                   "max_abs_diff": diff, "identical": identical}
        if args.bf16:
            out, info = run_child("bf16", sources["after"], threads.count, workdir, 0, args,
                                  dtype="bfloat16")
            bf_diff, _ = max_abs_diff(runs["after"][0]["result"], torch.load(out))
            report["bf16"] = {"wall_s": round(info["wall_s"], 2), "cpu_s": round(info["cpu_s"], 2),
                              "max_abs_diff_vs_float32": bf_diff,
                              "within_1e-3": bf_diff <= 1e-3}
    if not json_or_header(report, args, threads):
        print(f"{'':<14} {'before':>10} {'after':>10} {'ratio':>8}")
        for key in ("wall_s", "cpu_s"):
            print(f"{key:<14} {side['before'][key]:>10.1f} {side['after'][key]:>10.1f} "
                  f"{side['before'][key] / side['after'][key]:>7.2f}x")
        if flops:
            print(f"arithmetic     {report['tflop']:.1f} TFLOP of matmuls: "
                  f"{side['before']['gflop_per_cpu_s']} → {side['after']['gflop_per_cpu_s']} "
                  "GFLOP per CPU-second")
        if "floor_cpu_s" in report:
            print(f"fp32 ceiling   {report['matmul_ceiling_gflops']} GFLOP/s (model-shaped matmuls "
                  f"here): an exact trace needs ≥ {report['floor_cpu_s']} CPU-s, at most "
                  f"{report['max_speedup_at_fp32']}x faster than before")
        print(f"max |diff|     {diff:.2e} (same seed{', bitwise identical' if identical else ''})")
        if "bf16" in report:
            b = report["bf16"]
            print(f"bfloat16       {b['cpu_s']:.1f} s CPU, max |diff| vs float32 "
                  f"{b['max_abs_diff_vs_float32']:.2e} "
                  f"({'within' if b['within_1e-3'] else 'NOT within'} 1e-3)")
    if args.against:
        print("\n".join(compare_with_saved(args.against, report, [
            ("after", "wall_s"), ("after", "cpu_s"), ("max_abs_diff",)])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
