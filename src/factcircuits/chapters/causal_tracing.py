"""Notebook 05, causal tracing (ROME): noise the subject, restore one clean state (hidden, MLP
or attention output, in a window of layers) at one position, and measure how much of
P(answer) comes back: the average indirect effect by layer and token class."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pandas as pd

from factcircuits.methods import by_relation as R
from factcircuits.methods import causal_tracing as CT
from factcircuits.methods import intervals as I
from factcircuits.methods import patching as P
from factcircuits.methods.evaluate import PreparedTask, relations_of
from factcircuits.methods.positions import TOKEN_CLASSES
from factcircuits.methods.uncertainty import layer_with_range, with_interval
from factcircuits.models import LoadedModel
from factcircuits.results.headlines import Headline, interval, layer_range, number
from factcircuits.results.kinds import Table
from factcircuits.results.registry import BY_RELATION, WHERE, Finding, Method, Profile
from factcircuits.results.run import Run, depth_band
from factcircuits.results.wording import layer_text, relation_peaks_text

AIE = "P(answer) or the metric traced"


@dataclass
class _TracingCore(Headline):
    n_prompts: int | None = number("prompts traced", "prompts")
    noise_samples: int | None = number("noise samples per prompt", "samples")
    noise_scale: float | None = number("noise std in units of the embeddings' std", "std")
    noise_std: float | None = number("the noise's std", "embedding units")
    seed: int | None = number("the noise's and the resamples' seed")
    window: int | None = number("layers restored together for MLP and attention", "layers")
    metric: str | None = number("what is traced: P(answer) or the task's metric")
    clean_mean: float | None = number("mean of the traced quantity, clean run", AIE)
    noised_mean: float | None = number("mean with the subject noised", AIE)
    total_effect_mean: float | None = number("mean clean − noised", AIE)
    claim_mlp_over_attn_subject_last: dict | None = number(
        "test of 'restoring MLPs at the last subject token recovers more than attention "
        "there' (paired bootstrap and sign test over prompts)")
    mlp_subject_before_attn_last_share: float | None = number(
        "share of resamples where the MLP peak at the last subject token comes before "
        "attention's at the last token", "fraction")


def _peak(kind: str, cls: str) -> list:
    key, what = f"{kind}_{cls}_peak", f"restoring {kind} at {cls} tokens"
    return [(f"{key}_aie", float | None, number(f"largest AIE of {what}", AIE)),
            (f"{key}_aie_ci", list | None, interval(f"{key}_aie")),
            (f"{key}_layer", int | None, number("layer of that peak", "layer")),
            (f"{key}_layer_range", list | None, layer_range(f"{key}_layer")),
            (f"{key}_layer_resolved", bool | None,
             number("that range spans at most a third of the model"))]


TracingHeadline = dataclasses.make_dataclass(
    "TracingHeadline", [f for kind in CT.KINDS for cls in TOKEN_CLASSES for f in _peak(kind, cls)],
    bases=(_TracingCore,), namespace={"__module__": __name__})
TracingHeadline.__doc__ = "Notebook 05's headline: sample, noise, peaks by state and class."


@dataclass
class TracingSummary:
    traces: dict[str, CT.TraceResult]
    positions: pd.DataFrame  # patching.position_table
    long: pd.DataFrame  # every trace, tidy
    aie: pd.DataFrame  # average indirect effect per kind × layer × token class
    peaks: pd.DataFrame  # peak AIE per kind × token class
    window: int  # MLP / attention window actually used
    metric_name: str
    headline: TracingHeadline
    by_relation: pd.DataFrame | None = None  # MLP at the last subject token, per relation
    relation_curves: pd.DataFrame | None = None

    def peak(self, kind: str, token_class: str) -> dict | None:
        """{layer, peak_aie} of `kind` at `token_class`, None when no prompt has that class."""
        row = self.peaks[(self.peaks["kind"] == kind) & (self.peaks["token_class"] == token_class)]
        if not len(row):
            return None
        return {"layer": int(row["layer"].iloc[0]), "peak_aie": float(row["peak_aie"].iloc[0])}


def tracing_summary(lm: LoadedModel, prepared: PreparedTask, *, noise_samples: int = 2,
                    noise_scale: float = 3.0, seed: int = 0, metric: str = "prob",
                    window: int = 10, max_patches="auto",
                    progress: bool = True) -> TracingSummary:
    """ROME causal tracing of hidden states (window 1) and MLP / attention outputs (`window`,
    clamped to 1..n_layers), averaged by token class."""
    window = max(1, min(int(window), lm.model.cfg.n_layers))
    traces = CT.trace(lm, prepared, noise_samples=noise_samples, noise_scale=noise_scale,
                      seed=seed, metric=metric, windows={"hidden": 1, "mlp": window,
                                                         "attn": window},
                      max_patches=max_patches, progress=progress)
    positions = P.position_table(lm, prepared)
    long = pd.concat([t.tidy(positions) for t in traces.values()], ignore_index=True)
    aie = CT.average_indirect_effect(long).merge(I.aie_bands(long, seed),
                                                  on=["kind", "layer", "token_class"], how="left")
    peaks = CT.peak_by_class(aie)
    hidden = traces["hidden"]
    metric_name = "P(answer)" if metric == "prob" else prepared.main_metric
    headline = {
        "n_prompts": len(prepared.prompts), "noise_samples": noise_samples,
        "noise_scale": noise_scale, "noise_std": hidden.noise_std, "seed": seed,
        "window": window, "metric": metric_name,
        "clean_mean": float(hidden.clean.mean()), "noised_mean": float(hidden.corrupted.mean()),
        "total_effect_mean": float(hidden.total_effect().mean()),
    }
    # One entry per (state kind, token class), e.g. mlp_subject_last_peak_aie / _peak_layer.
    for _, row in peaks.iterrows():
        headline[f"{row['kind']}_{row['token_class']}_peak_aie"] = float(row["peak_aie"])
        headline[f"{row['kind']}_{row['token_class']}_peak_layer"] = int(row["layer"])
    # intervals over prompts (resamples seeded like the noise), peak ranges and the claims
    headline.update(I.tracing_intervals(long, lm.model.cfg.n_layers, seed))
    by_relation, curves = tracing_by_relation(long, prepared, headline, lm.model.cfg.n_layers,
                                              seed)
    return TracingSummary(traces, positions, long, aie, peaks, window, metric_name,
                          TracingHeadline(**headline), by_relation, curves)


def tracing_by_relation(long, prepared, headline, n_layers, seed):
    """Restoring MLP outputs at the last subject token, per relation: peaks with their ranges
    and the curves with bands (None, None for one relation or no such token class)."""
    relations = relations_of(prepared)
    pooled = headline.get("mlp_subject_last_peak_layer")
    if relations is None or pooled is None:
        return None, None
    part = long[(long["kind"] == "mlp") & (long["token_class"] == "subject_last")]
    values, ids = I.prompt_curves(part, "indirect_effect", n_layers)
    names = relations.to_numpy()[ids]
    return (R.relation_peaks(values, names, pooled, n_layers, seed),
            R.relation_curves(values, names, seed))


def peak_text(h, kind: str, token_class: str) -> str:
    """'layer 5; 95% of resamples peak in layers 3–8, AIE 0.28 (95% CI …)'."""
    key = f"{kind}_{token_class}_peak"
    return (f"{layer_with_range(getattr(h, key + '_layer'), getattr(h, key + '_layer_range'))}"
            f", AIE {with_interval(getattr(h, key + '_aie'), getattr(h, key + '_aie_ci'), '.3f')}")


# ------------------------------------------------------------------ findings
def tracing_window(run: Run, layer: int) -> tuple[int, int]:
    """First and last layer restored together around `layer` (ROME's window, clipped)."""
    window = int(run.headline(METHOD).window or 1)
    last_layer = (run.n_layers or layer + window) - 1
    return max(0, layer - window // 2), min(last_layer, layer - (-window // 2) - 1)


def tracing_findings(run: Run) -> list[Finding]:
    h = run.headline(METHOD)
    found = []
    layer = h.mlp_subject_last_peak_layer
    if layer is not None:
        first, last = tracing_window(run, int(layer))
        aie = with_interval(h.mlp_subject_last_peak_aie, h.mlp_subject_last_peak_aie_ci, ".3f")
        restored = (f"layers {first}–{last}, the window centred on " if last > first else "")
        text = (f"**Causal tracing** ({h.n_prompts} prompts): restoring the MLP outputs at "
                f"the last subject token recovers the most for {restored}"
                f"{layer_text(run, layer, h.mlp_subject_last_peak_layer_range)}, "
                f"{depth_band(run.depth(layer))} layers: AIE {aie} on "
                f"{h.metric or 'the metric'}")
        if h.attn_subject_last_peak_aie is not None:
            attn = with_interval(h.attn_subject_last_peak_aie, h.attn_subject_last_peak_aie_ci,
                                 ".3f")
            text += f", against {attn} at most for attention at that token"
        found.append(Finding(WHERE, text + ".", 10))
    relations = relation_peaks_text(run.result(METHOD, "by_relation"),
                                    "causal tracing's MLP peak at the last subject token")
    if relations:
        found.append(Finding(BY_RELATION, relations, 20))
    return found


STATES = {"mlp": "MLP, last subject token", "attn": "attention, last token"}


def aie_profile(t: pd.DataFrame) -> pd.DataFrame:
    return (t[((t["kind"] == "mlp") & (t["token_class"] == "subject_last"))
              | ((t["kind"] == "attn") & (t["token_class"] == "last"))]
            .assign(state=lambda d: d["kind"].map(STATES)))


RELATION_PEAKS = {"relation": "str", "n": "int", "peak_layer": "int", "layer_low": "int",
                  "layer_high": "int", "value": "float", "value_low": "float",
                  "value_high": "float", "differs_from_pooled": "bool"}
METHOD = Method(
    notebook="05_causal_tracing", title="Causal tracing", short="tracing",
    headline=TracingHeadline,
    results={
        "trace_long": Table({"kind": "str", "window": "int", "layer": "int", "pos": "int",
                             "prompt_id": "int", "restored": "float", "indirect_effect": "float",
                             "clean": "float", "corrupted": "float", "token": "str",
                             "token_class": "str", "role": "str"},
                            "every restored state, per prompt"),
        "aie_by_class": Table({"kind": "str", "layer": "int", "token_class": "str",
                               "aie": "float", "low": "float", "high": "float"},
                              "average indirect effect by layer and token class, with bands"),
        "peaks": Table({"kind": "str", "layer": "int", "token_class": "str",
                        "peak_aie": "float", "low": "float", "high": "float"},
                       "the peak per state kind and token class"),
        "by_relation": Table(RELATION_PEAKS, "the MLP peak at the last subject token per "
                             "relation"),
    },
    findings=tracing_findings,
    key_numbers=("total_effect_mean", "mlp_subject_last_peak_aie",
                 "mlp_subject_last_peak_layer_depth"),
    profiles=(Profile("aie_by_class", aie_profile, "aie", "state",
                      "Causal tracing: average indirect effect<br><sup>P(answer) restored by one "
                      "clean state in the noised run</sup>", "AIE"),),
)
