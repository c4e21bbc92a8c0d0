"""Notebook 08's headline (`CircuitHeadline`, a registry `Headline`) and its 95 % bootstrap
intervals over prompt pairs.

Every circuit is evaluated once per prompt (`Evaluator.metrics` gives [circuits, n_prompts]);
a resample reweights the prompts, so each resampled faithfulness is a ratio of resampled means
(`faithfulness.resampled_faithfulness`) and each resampled CPR/CMD the areas of that resampled
curve: no circuit is evaluated again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from factcircuits.methods import uncertainty as U
from factcircuits.methods.circuits import faithfulness as F
from factcircuits.results.headlines import Headline, interval, number

AREA = "faithfulness × fraction of edges"
FAITH = "fraction (0 = empty circuit, 1 = full model)"
METRIC = "task metric (logit difference or log-odds)"


def size_field(percent: float) -> str:
    """The headline field of the faithfulness at one MIB size: 0.1 → faithfulness_at_0_1pct."""
    return f"faithfulness_at_{percent:g}pct".replace(".", "_")


@dataclass
class _CircuitCore(Headline):
    n_pairs: int | None = number("equal-length clean/corrupted pairs scored and evaluated",
                                 "prompt pairs")
    n_edges_total: int | None = number("edges in the model's graph (GQA key/value inputs "
                                       "once)", "edges")
    ig_steps: int | None = number("interpolation steps of EAP-IG", "steps")
    ablation: str | None = number("what an ablated edge's reader receives: the corrupted "
                                  "run's write (counterfactual) or the writer's mean write "
                                  "(mean)")
    cpr: float | None = number("area under the faithfulness curve of the EAP-IG top-k "
                               "circuits (MIB's CPR; trapezoids over x = fraction of edges, "
                               "0.001 … 1); 1 would be full faithfulness at every size", AREA)
    cpr_ci: list[float] | None = interval("cpr")
    cmd: float | None = number("area between that curve and 1 (MIB's CMD); 0 = every circuit "
                               "behaves like the full model", "|1 − faithfulness| × fraction "
                               "of edges")
    cmd_ci: list[float] | None = interval("cmd")
    edges_for_80: int | None = number("edges in the smallest EAP-IG top-k circuit of the grid "
                                      "with faithfulness ≥ 0.8; None when none reaches it",
                                      "edges")
    size_for_80: float | None = number("that circuit's size on the grid; None when none "
                                       "reaches 0.8", "percent of edges")
    faithfulness_for_80: float | None = number("that circuit's faithfulness", FAITH)
    faithfulness_for_80_ci: list[float] | None = interval("faithfulness_for_80")
    clean_metric: float | None = number("mean over pairs of the metric on the clean prompts "
                                        "(the full circuit)", METRIC)
    clean_metric_ci: list[float] | None = interval("clean_metric")
    corrupted_metric: float | None = number("mean over pairs of the metric on the corrupted "
                                            "prompts", METRIC)
    corrupted_metric_ci: list[float] | None = interval("corrupted_metric")
    empty_metric: float | None = number("mean metric of the empty circuit (= corrupted under "
                                        "counterfactual ablation)", METRIC)
    eap_cpr: float | None = number("CPR of the one-step EAP top-k circuits, for comparison",
                                   AREA)
    eap_cmd: float | None = number("CMD of the EAP top-k circuits", "|1 − faithfulness| × "
                                   "fraction of edges")
    seconds_scores: float | None = number("wall time of the EAP and EAP-IG scores", "seconds")
    seconds_curve: float | None = number("wall time of every circuit's exact evaluation",
                                         "seconds")

    @property
    def faithfulness_at(self) -> dict[str, float]:
        """{size percent as text ("0.1" … "100"): faithfulness} of the sizes evaluated."""
        return {f"{p:g}": getattr(self, size_field(p)) for p in F.MIB_SIZES
                if getattr(self, size_field(p)) is not None}

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def units(cls) -> pd.DataFrame:
        """field, unit, meaning: the headline's legend."""
        return pd.DataFrame(cls.describe(), columns=["field", "unit", "meaning"])


CircuitHeadline = dataclasses.make_dataclass(
    "CircuitHeadline",
    [(size_field(p), float | None,
      number(f"faithfulness of the EAP-IG top-k circuit of {p:g} % of the edges", FAITH))
     for p in F.MIB_SIZES],
    bases=(_CircuitCore,), namespace={"__module__": __name__})
CircuitHeadline.__doc__ = ("Notebook 08's headline: CPR/CMD, the smallest 80 % circuit, the "
                           "faithfulness at each MIB size, the metrics, with intervals.")


def build_headline(top: pd.DataFrame, per_prompt: np.ndarray, base: dict, scores, n_edges: int,
                   *, ablation: str, eap_areas=(float("nan"),) * 2, seconds_curve=float("nan"),
                   seed: int = 0) -> CircuitHeadline:
    """The headline of the EAP-IG top-k rows `top` of the faithfulness table (in order of
    `per_prompt`, their metric per prompt [circuits, n_prompts]), the empty/full baselines
    `base` and the edge scores; intervals from one set of prompt resamples (`seed`)."""
    fraction = top["n_edges"].to_numpy() / n_edges
    cpr, cmd = F.areas(fraction, top["faithfulness"])
    counts = U.resample_counts(per_prompt.shape[1], seed=seed)
    samples = F.resampled_faithfulness(per_prompt, base["empty"], base["full"], counts)
    cpr_s, cmd_s = F.areas(fraction, samples)
    best = F.smallest_reaching(top)
    at_80 = {}
    if best is not None:
        row = int(np.flatnonzero(top.index == best.name)[0])
        at_80 = {"edges_for_80": int(best["n_edges"]), "size_for_80": float(best["size_percent"]),
                 "faithfulness_for_80": float(best["faithfulness"]),
                 "faithfulness_for_80_ci": list(U.percentile_interval(samples[:, row]))}
    names = {f.name for f in dataclasses.fields(CircuitHeadline)}
    at_size = {size_field(p): float(f) for p, f in zip(top["size_percent"], top["faithfulness"])
               if size_field(p) in names}
    clean = U.mean_estimate(scores.clean.numpy(), seed)
    corrupted = U.mean_estimate(scores.corrupted.numpy(), seed)
    return CircuitHeadline(
        n_pairs=int(per_prompt.shape[1]), n_edges_total=n_edges, ig_steps=scores.ig_steps,
        ablation=ablation, cpr=cpr, cpr_ci=list(U.percentile_interval(cpr_s)), cmd=cmd,
        cmd_ci=list(U.percentile_interval(cmd_s)), **at_80, **at_size,
        clean_metric=clean.value, clean_metric_ci=clean.interval(),
        corrupted_metric=corrupted.value, corrupted_metric_ci=corrupted.interval(),
        empty_metric=float(base["empty"].mean()), eap_cpr=eap_areas[0], eap_cmd=eap_areas[1],
        seconds_scores=scores.seconds, seconds_curve=seconds_curve)
