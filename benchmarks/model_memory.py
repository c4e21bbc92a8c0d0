"""Loading a model and running direct logit attribution: the unprocessed bridge (raw weights,
the default) against compatibility mode (folded copy), side by side.

Each measurement runs in its own process: load the model (wall and CPU seconds), then decompose
`--prompts` prompts of relations-cloze and compute layer, head and neuron DLA; report the
process's peak RSS. Printed: load time, DLA time and peak RSS of each mode and their ratios,
plus the largest |difference| between the two modes' layer-DLA tables.

    python benchmarks/model_memory.py --model gemma3-270m [--modes none,compat] [--prompts 8]
                                      [--json]
    python benchmarks/model_memory.py --model tiny --prompts 4 --json   # smallest setting

A mode that runs out of memory is reported as such (compatibility mode on a 1.5B model on a
24 GB machine). Pass `--modes none` to measure one mode alone.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def measure(model: str, processing: str, n_prompts: int) -> dict:
    import torch

    from factcircuits.data.datasets import load_dataset
    from factcircuits.methods import attribution as A
    from factcircuits.methods.evaluate import prepare
    from factcircuits.models import load_model

    torch.set_num_threads(1)
    wall, cpu = time.perf_counter(), time.process_time()
    lm = load_model(model, processing=processing)
    load = {"load_wall_s": time.perf_counter() - wall, "load_cpu_s": time.process_time() - cpu}
    prepared = prepare(lm, load_dataset("relations-cloze"), n_prompts=n_prompts)
    wall, cpu = time.perf_counter(), time.process_time()
    dec = A.decompose(lm, prepared, batch_size=4)
    direction = A.answer_direction(lm, prepared, dec.pre_cap_logits)
    layers = A.layer_dla(dec, direction)
    A.head_dla(lm, dec, direction)
    A.neuron_dla(lm, prepared, lm.cfg.n_layers // 2, direction, batch_size=4)
    return {**load, "dla_wall_s": time.perf_counter() - wall,
            "dla_cpu_s": time.process_time() - cpu,
            "sum_check_max_error": float(A.sum_check(dec, direction)["error"].abs().max()),
            "layer_dla": layers["dla"].tolist(),
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--modes", default="none,compat")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.model, args.child, args.prompts)))
        return
    results = {}
    for mode in args.modes.split(","):
        done = subprocess.run([sys.executable, __file__, "--model", args.model, "--prompts",
                               str(args.prompts), "--child", mode], capture_output=True, text=True)
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            killed = done.returncode in (-9, 137)
            results[mode] = {"error": "out of memory (killed)" if killed else
                             (done.stderr.strip().splitlines() or ["failed"])[-1]}
        else:
            results[mode] = json.loads(lines[-1])
    modes = list(results)
    layer_diff = None
    if len(modes) == 2 and all("layer_dla" in results[m] for m in modes):
        a, b = (results[m]["layer_dla"] for m in modes)
        layer_diff = max(abs(x - y) for x, y in zip(a, b))
    if args.json:
        print(json.dumps({"benchmark": "model_memory", "model": args.model,
                          "prompts": args.prompts, "threads": 1, "modes": results,
                          "max_abs_layer_dla_diff": layer_diff}))
        return
    print(f"model {args.model}, {args.prompts} prompts, 1 thread")
    keys = ["load_wall_s", "load_cpu_s", "dla_wall_s", "dla_cpu_s", "peak_rss_gb",
            "sum_check_max_error"]
    print(f"{'':22}" + "".join(f"{m:>14}" for m in modes) + ("      ratio" if len(modes) == 2
                                                              else ""))
    for key in keys:
        values = [results[m].get(key) for m in modes]
        cells = "".join(f"{v:>14.4g}" if isinstance(v, float) else f"{'—':>14}"
                        for v in values)
        ratio = ""
        if len(values) == 2 and all(isinstance(v, float) and v for v in values):
            ratio = f"{values[0] / values[1]:>11.2f}"
        print(f"{key:22}{cells}{ratio}")
    for mode in modes:
        if "error" in results[mode]:
            print(f"{mode}: {results[mode]['error']}")
    if layer_diff is not None:
        print(f"max |layer DLA {modes[0]} − {modes[1]}|: {layer_diff:.2e}")


if __name__ == "__main__":
    main()
