"""The beginning-of-sequence token: how activation patching's maps change with and without it.

Runs the same known prompts and equal-length pairs as notebook 04 once per `prepend_bos`
choice (default: "auto", the model's own tokenizer, against "on") and reports, per choice,
whether BOS was prepended, the pairs patched, and where denoising peaks: the residual stream
(layer and token class) and the MLP output at the last subject token (layers ≥ 1), with the
normalized effect there. With BOS, every position shifts by one and the first position is the
same token in both runs, so nothing is patched there.

    python benchmarks/bos_maps.py [--model default] [--dataset paris-cloze] [--json]
    python benchmarks/bos_maps.py --model tiny --choices auto off --json   # smallest setting
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common


def measure(model: str, dataset: str, choice: str, seed: int) -> dict:
    import pandas as pd

    from factcircuits.methods import patching as P
    from factcircuits.methods.counterfactual_spread import class_peak
    from factcircuits.run.session import open_session

    start = time.perf_counter()
    session = open_session(model, dataset, seed=seed, prepend_bos=choice)
    prepared, _ = session.known()
    pairs, _ = session.patchable(prepared)
    lm = session.lm
    positions = P.position_table(lm, pairs)
    long = pd.concat([P.tidy(P.patch(lm, pairs, c, progress=False), positions)
                      for c in ("resid_pre", "mlp_out")], ignore_index=True)
    classes = P.by_class(long, "token_class")
    resid_layer, resid_effect = class_peak(classes, "resid_pre", None)
    resid = classes[(classes["component"] == "resid_pre") & (classes["layer"] == resid_layer)]
    mlp_layer, mlp_effect = class_peak(classes, "mlp_out", "subject_last", 1)
    return {"prepend_bos": choice, "bos_prepended": bool(lm.provenance["prepend_bos"]),
            "n_known": len(prepared.prompts), "n_pairs": len(pairs.prompts),
            "resid_pre_peak_layer": resid_layer, "resid_pre_peak_effect": resid_effect,
            "resid_pre_peak_class": str(resid.loc[resid["normalized"].idxmax(), "token_class"]),
            "mlp_out_subject_last_peak_layer": mlp_layer,
            "mlp_out_subject_last_peak_effect": mlp_effect,
            "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--dataset", default="paris-cloze")
    parser.add_argument("--choices", nargs="+", default=["auto", "on"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [measure(args.model, args.dataset, c, args.seed) for c in args.choices]
    if args.json:
        print(json.dumps({"rows": rows}))
        return
    for row in rows:
        print(", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in row.items()))


if __name__ == "__main__":
    main()
