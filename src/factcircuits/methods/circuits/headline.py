"""Notebook 08's headline (`CircuitHeadline`, a registry `Headline`) and its 95 % bootstrap
intervals over prompt pairs.

Every circuit is evaluated once per evaluation pair (`Evaluator.metrics` gives [circuits,
n_pairs]; under cross-fitting each pair by the circuits of the fold that did not score it);
a resample reweights the prompts, so each resampled faithfulness is a ratio of resampled means
(`faithfulness.resampled_faithfulness`) and each resampled CPR/CMD the areas of that resampled
curve: no circuit is evaluated again. The circuits are held fixed, so an interval covers which
pairs judged them, not which pairs chose them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from factcircuits.methods import uncertainty as U
from factcircuits.methods.circuits import faithfulness as F
from factcircuits.results.headlines import Headline, interval, number
from factcircuits.results.parameter_declarations import SEED

AREA = "faithfulness × fraction of edges"
FAITH = "fraction (0 = empty circuit, 1 = full model)"
METRIC = "task metric (logit difference or log-odds)"


def size_field(percent: float) -> str:
    """The headline field of the faithfulness at one MIB size: 0.1 → faithfulness_at_0_1pct."""
    return f"faithfulness_at_{percent:g}pct".replace(".", "_")


def _at_size(percent: float):
    """The field of the faithfulness at one MIB size (`size_field(percent)` names it)."""
    return number(f"faithfulness of the EAP-IG top-k circuit of {percent:g} % of the edges",
                  FAITH)


@dataclass
class CircuitHeadline(Headline):
    """Notebook 08's headline: CPR/CMD, the smallest 80 % circuit, the faithfulness at each MIB
    size, the metrics, with intervals."""

    n_pairs: int | None = number("equal-length clean/corrupted pairs, discovery and evaluation "
                                 "together", "prompt pairs")
    split: str | None = number("how the pairs were used (`split.split_pairs`): held-out (edges "
                               "scored on one seeded half, circuits evaluated on the other), "
                               "cross-fitted (two folds, each fold's circuits evaluated on the "
                               "other fold; fewer than 2 × 10 pairs) or in-sample (one pair)")
    n_discovery_pairs: int | None = number("pairs whose edge scores chose each evaluated "
                                           "circuit; None when cross-fitted (see fold_pairs)",
                                           "prompt pairs")
    n_evaluation_pairs: int | None = number("pairs every faithfulness, CPR and CMD is measured "
                                            "on (each once, by circuits not chosen on it "
                                            "unless in-sample)", "prompt pairs")
    fold_pairs: list[int] | None = number("cross-fitted: the pairs in each of the two folds",
                                          "prompt pairs")
    n_edges_total: int | None = number("edges in the model's graph (GQA key/value inputs "
                                       "once)", "edges")
    ig_steps: int | None = number("interpolation steps of EAP-IG", "steps")
    ablation: str | None = number("what an ablated edge's reader receives: the corrupted "
                                  "run's write (counterfactual) or the writer's mean write "
                                  "(mean)")
    cpr: float | None = number("area under the faithfulness curve of the EAP-IG top-k "
                               "circuits on the evaluation pairs (MIB's CPR; trapezoids over "
                               "x = fraction of edges, 0.001 … 1); 1 would be full "
                               "faithfulness at every size", AREA)
    cpr_ci: list[float] | None = interval("cpr")
    cmd: float | None = number("area between that curve and 1 (MIB's CMD); 0 = every circuit "
                               "behaves like the full model", "|1 − faithfulness| × fraction "
                               "of edges")
    cmd_ci: list[float] | None = interval("cmd")
    edges_for_80: int | None = number("edges in the smallest EAP-IG top-k circuit of the grid "
                                      "whose faithfulness on the evaluation pairs is ≥ 0.8 "
                                      "(point estimate); None when none reaches it", "edges")
    size_for_80: float | None = number("that circuit's size on the grid; None when none "
                                       "reaches 0.8", "percent of edges")
    faithfulness_for_80: float | None = number("that circuit's faithfulness on the "
                                               "evaluation pairs", FAITH)
    faithfulness_for_80_ci: list[float] | None = interval("faithfulness_for_80")
    faithfulness_for_80_lower_bound_clears: bool | None = number(
        "the lower end of faithfulness_for_80_ci is ≥ 0.8 (the size rule holds beyond the "
        "point estimate)")
    random_draws: int | None = number("random circuits drawn per size (edges uniformly at "
                                      "random, seeded by the run's seed)", "circuits")
    random_faithfulness_for_80: float | None = number(
        "mean faithfulness on the evaluation pairs of the random circuits of the 80 % "
        "circuit's size", FAITH)
    random_faithfulness_for_80_ci: list[float] | None = interval("random_faithfulness_for_80")
    random_cpr: float | None = number("CPR of the random circuits' mean curve, on the same "
                                      "sizes and pairs as cpr", AREA)
    random_cpr_ci: list[float] | None = interval("random_cpr")
    cpr_minus_random: float | None = number("cpr − random_cpr (paired: the same resamples of "
                                            "the evaluation pairs)", AREA)
    cpr_minus_random_ci: list[float] | None = interval("cpr_minus_random")
    heads_in_circuit_share: float | None = number(
        "share of all query heads that are nodes of the circuit shown (the cross-check's "
        "base rate for a head)", "fraction of heads")
    mlps_in_circuit_share: float | None = number("share of all MLPs that are nodes of the "
                                                 "circuit shown", "fraction of MLPs")
    attention_layers_in_circuit_share: float | None = number(
        "share of layers with any head (or key/value head) in the circuit shown",
        "fraction of layers")
    clean_metric: float | None = number("mean over the evaluation pairs of the metric on the "
                                        "clean prompts (the full circuit)", METRIC)
    clean_metric_ci: list[float] | None = interval("clean_metric")
    corrupted_metric: float | None = number("mean over the evaluation pairs of the metric on "
                                            "the corrupted prompts", METRIC)
    corrupted_metric_ci: list[float] | None = interval("corrupted_metric")
    empty_metric: float | None = number("mean metric of the empty circuit (= corrupted under "
                                        "counterfactual ablation)", METRIC)
    eap_cpr: float | None = number("CPR of the one-step EAP top-k circuits, for comparison",
                                   AREA)
    eap_cpr_ci: list[float] | None = interval("eap_cpr")
    cpr_minus_eap: float | None = number("cpr − eap_cpr (paired: the same resamples of the "
                                         "evaluation pairs); negative: one-step EAP's circuits "
                                         "did better", AREA)
    cpr_minus_eap_ci: list[float] | None = interval("cpr_minus_eap")
    eap_cmd: float | None = number("CMD of the EAP top-k circuits", "|1 − faithfulness| × "
                                   "fraction of edges")
    seconds_scores: float | None = number("wall time of the EAP and EAP-IG scores", "seconds")
    seconds_curve: float | None = number("wall time of the EAP-IG and EAP circuits' exact "
                                         "evaluation", "seconds")
    seconds_random: float | None = number("wall time of the random circuits' exact evaluation",
                                          "seconds")
    faithfulness_at_0_1pct: float | None = _at_size(0.1)
    faithfulness_at_0_2pct: float | None = _at_size(0.2)
    faithfulness_at_0_5pct: float | None = _at_size(0.5)
    faithfulness_at_1pct: float | None = _at_size(1)
    faithfulness_at_2pct: float | None = _at_size(2)
    faithfulness_at_5pct: float | None = _at_size(5)
    faithfulness_at_10pct: float | None = _at_size(10)
    faithfulness_at_20pct: float | None = _at_size(20)
    faithfulness_at_50pct: float | None = _at_size(50)
    faithfulness_at_100pct: float | None = _at_size(100)

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


_MISSING_SIZES = [p for p in F.MIB_SIZES
                  if size_field(p) not in {f.name for f in dataclasses.fields(CircuitHeadline)}]
if _MISSING_SIZES:  # a size added to the grid needs its field above
    raise TypeError(f"CircuitHeadline lacks the faithfulness fields of sizes {_MISSING_SIZES}")


def build_headline(top: pd.DataFrame, per_prompt: np.ndarray, base: dict, scores, n_edges: int,
                   *, ablation: str, eap=None, random=None, split=None, shares=None,
                   seconds_curve=float("nan"), seconds_random=float("nan"),
                   seed: int = SEED.default) -> CircuitHeadline:
    """The headline of the EAP-IG top-k rows `top` of the faithfulness table (in order of
    `per_prompt`, their metric per evaluation pair [circuits, n_pairs]), the empty/full/
    corrupted metrics per pair `base` and the edge scores; `eap` = (EAP's top-k rows, their
    metrics per pair), `random` = (the random circuits' rows at the same sizes, their mean
    metric per pair, draws per size); `split` (`PairSplit`), `shares` (`component_shares`).
    Every interval comes from one set of resamples of the evaluation pairs (`seed`), so
    differences between curves are paired."""
    fraction = top["n_edges"].to_numpy() / n_edges
    cpr, cmd = F.areas(fraction, top["faithfulness"])
    counts = U.resample_counts(per_prompt.shape[1], seed=seed)
    resampled = lambda values: F.resampled_faithfulness(  # noqa: E731
        values, base["empty"], base["full"], counts)
    samples = resampled(per_prompt)
    cpr_s, cmd_s = F.areas(fraction, samples)
    best = F.smallest_reaching(top)
    at_80, row = {}, None
    if best is not None:
        row = int(np.flatnonzero(top.index == best.name)[0])
        ci = list(U.percentile_interval(samples[:, row]))
        at_80 = {"edges_for_80": int(best["n_edges"]), "size_for_80": float(best["size_percent"]),
                 "faithfulness_for_80": float(best["faithfulness"]),
                 "faithfulness_for_80_ci": ci,
                 "faithfulness_for_80_lower_bound_clears": bool(ci[0] >= F.THRESHOLD)}
    names = {f.name for f in dataclasses.fields(CircuitHeadline)}
    at_size = {size_field(p): float(f) for p, f in zip(top["size_percent"], top["faithfulness"])
               if size_field(p) in names}
    extra = {}
    if eap is not None:
        eap_top, eap_values = eap
        x = eap_top["n_edges"].to_numpy() / n_edges
        eap_cpr, eap_cmd = F.areas(x, eap_top["faithfulness"])
        eap_cpr_s = F.areas(x, resampled(eap_values))[0]
        extra |= {"eap_cpr": eap_cpr, "eap_cmd": eap_cmd,
                  "eap_cpr_ci": list(U.percentile_interval(eap_cpr_s)),
                  "cpr_minus_eap": cpr - eap_cpr,
                  "cpr_minus_eap_ci": list(U.percentile_interval(cpr_s - eap_cpr_s))}
    if random is not None:
        random_top, random_values, draws = random
        if list(random_top["size_percent"]) != list(top["size_percent"]):
            raise ValueError("the random baseline must be evaluated at the EAP-IG sizes")
        random_samples = resampled(random_values)
        random_cpr = F.areas(fraction, random_top["faithfulness"])[0]
        random_cpr_s = F.areas(fraction, random_samples)[0]
        extra |= {"random_draws": int(draws), "random_cpr": random_cpr,
                  "random_cpr_ci": list(U.percentile_interval(random_cpr_s)),
                  "cpr_minus_random": cpr - random_cpr,
                  "cpr_minus_random_ci": list(U.percentile_interval(cpr_s - random_cpr_s))}
        if row is not None:
            extra |= {"random_faithfulness_for_80": float(random_top["faithfulness"].iloc[row]),
                      "random_faithfulness_for_80_ci": list(
                          U.percentile_interval(random_samples[:, row]))}
    if split is not None:
        extra |= {"split": split.kind, "n_discovery_pairs": split.n_discovery,
                  "n_evaluation_pairs": int(len(split.evaluation)),
                  "fold_pairs": split.fold_sizes}
    if shares is not None:
        extra |= {"heads_in_circuit_share": shares["head"],
                  "mlps_in_circuit_share": shares["mlp"],
                  "attention_layers_in_circuit_share": shares["attention"]}
    clean = U.mean_estimate(base["full"], seed)
    corrupted = U.mean_estimate(base["corrupted"], seed)
    return CircuitHeadline(
        n_pairs=int(len(scores.clean)) if split is None else split.n_pairs,
        n_edges_total=n_edges, ig_steps=scores.ig_steps,
        ablation=ablation, cpr=cpr, cpr_ci=list(U.percentile_interval(cpr_s)), cmd=cmd,
        cmd_ci=list(U.percentile_interval(cmd_s)), **at_80, **at_size, **extra,
        clean_metric=clean.value, clean_metric_ci=clean.interval(),
        corrupted_metric=corrupted.value, corrupted_metric_ci=corrupted.interval(),
        empty_metric=float(np.mean(base["empty"])), seconds_scores=scores.seconds,
        seconds_curve=seconds_curve, seconds_random=seconds_random)
