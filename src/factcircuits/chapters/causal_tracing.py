"""Notebook 05, causal tracing (ROME): noise the subject, restore one clean state (hidden, MLP
or attention output) at one position, and measure how much of P(answer) comes back: the
average indirect effect by layer and token class. MLP and attention are traced one layer at a
time (the curves peaks and claims are read from) and, as in ROME, in a window of layers scaled
to the depth (`causal_tracing.default_window`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from factcircuits.methods import by_relation as R
from factcircuits.methods import causal_tracing as CT
from factcircuits.methods import intervals as I
from factcircuits.methods import patching as P
from factcircuits.methods.engine import MAX_PATCHES
from factcircuits.methods.evaluate import PreparedTask, relations_of
from factcircuits.methods.positions import CLASS_TITLES, TOKEN_CLASSES, task_positions
from factcircuits.methods.uncertainty import ALPHA, layer_with_range, p_text, with_interval
from factcircuits.models import LoadedModel
from factcircuits.results.estimates import (
    ATTENTION_AT_LAST,
    ATTENTION_AT_SUBJECT,
    MLP_AT_SUBJECT,
    ROME_NOISE_SAMPLES,
    Estimate,
)
from factcircuits.results.headlines import Headline, interval, layer_range, number
from factcircuits.results.kinds import Table
from factcircuits.results.registry import BY_RELATION, WHERE, Finding, Method, Profile, Sample
from factcircuits.results.run import Run, depth_band
from factcircuits.results.summary import Options, Summary, estimates_of
from factcircuits.results.wording import (
    LAYER0_MLP,
    class_labels,
    layer_text,
    peak_cell,
    relation_peaks_text,
)

AIE = "P(answer) or the metric traced"
# The windowed traces are secondary (ROME's view): traced only where the headline's claims
# look, which costs a fraction of tracing every token
WINDOWED_CLASSES = ("subject_last", "last")
NAME = "causal tracing"  # the estimator, as sentences name it


@dataclass
class TracingHeadline(Headline):
    """Notebook 05's headline: sample, noise, window, the peaks by state and class (window 1
    and windowed) as Estimates, the layer-0 MLP, claims."""

    n_prompts: int | None = number("prompts traced", "prompts")
    noise_samples: int | None = number("noise samples per prompt", "samples")
    noise_scale: float | None = number("noise std in units of the embeddings' std", "std")
    noise_std: float | None = number("the noise's std", "embedding units")
    seed: int | None = number("the noise's and the resamples' seed")
    window: int | None = number("layers restored together in the windowed MLP and attention "
                                "traces", "layers")
    window_rule: str | None = number("how the window was chosen ('auto': ROME's 10 of 48 layers "
                                     "scaled to the depth, rounded half up, at least 1)")
    window_share: float | None = number("the window as a share of the model's layers",
                                        "fraction")
    metric: str | None = number("what is traced: P(answer) or the task's metric")
    clean_mean: float | None = number("mean of the traced quantity, clean run", AIE)
    noised_mean: float | None = number("mean with the subject noised", AIE)
    total_effect_mean: float | None = number("mean clean − noised", AIE)
    mlp_subject_last_layer0_aie: float | None = number(
        "AIE of restoring the layer-0 MLP alone at the last subject token (an embedding "
        "confound: left out of the MLP peaks)", AIE)
    mlp_subject_last_layer0_aie_ci: list | None = interval("mlp_subject_last_layer0_aie")
    claim_mlp_over_attn_subject_last: dict | None = number(
        "claim 'restoring MLPs at the last subject token recovers more than attention there' "
        "(window 1, each at its peak layer ≥ 1; exact paired permutation test, peaks re-chosen "
        "on every swap)")
    claim_mlp_before_attn_last: dict | None = number(
        "claim 'the MLP peak at the last subject token comes before attention's peak at the "
        "last token' (window 1, layers ≥ 1; exact paired permutation test of the peak layers' "
        "difference)")
    mlp_subject_before_attn_last_share: float | None = number(
        "share of resamples where the MLP peak at the last subject token comes before "
        "attention's at the last token (window 1, layers ≥ 1; descriptive)", "fraction")
    # the MLP peak at the last subject token again as numbers: the comparison's key numbers
    mlp_subject_last_peak_aie: float | None = number(
        "largest AIE of restoring the MLP at the last subject token one layer at a time "
        "(layers ≥ 1); also in `peaks`", AIE)
    mlp_subject_last_peak_aie_ci: list | None = interval("mlp_subject_last_peak_aie")
    mlp_subject_last_peak_layer: int | None = number("layer of that peak", "layer")
    mlp_subject_last_peak_layer_range: list | None = layer_range("mlp_subject_last_peak_layer")
    peaks: list[dict] | None = number(
        "every traced peak as an Estimate (`results.estimates`): per state kind (hidden, mlp, "
        "attn one layer at a time; windowed_mlp, windowed_attn in the window) and token class, "
        "the peak layer, the layers holding it in 95% of resamples, the largest AIE and its "
        "interval; MLP peaks over layers ≥ 1", AIE)
    windowed_peak_survives: dict[str, bool] | None = number(
        "per '<mlp|attn>_<class>': the windowed peak's layer lies within the layers holding the "
        "window-1 peak in 95% of resamples (only for a window above 1)")

    def peak(self, kind: str, token_class: str) -> Estimate | None:
        """The peak of restoring `kind` ('mlp', 'windowed_attn', …) at `token_class`."""
        return next((e for e in self.estimates()
                     if e.site == kind and e.token_class == token_class), None)

    def estimates(self) -> list[Estimate]:
        """Every traced peak (`peaks`); in runs from before window-1 traces the plain kinds'
        peaks were windowed, so they carry their window."""
        found = [Estimate.from_json(d) for d in self.peaks or []]
        window = int(self.window or 1)
        if self.window_rule is None and window > 1:  # a run from before window-1 traces
            found = [dataclasses.replace(e, window=(e.layer - window // 2,
                                                    e.layer - (-window // 2) - 1))
                     if e.site in CT.KINDS and e.layer is not None else e for e in found]
        return found

    def survives(self, kind: str, token_class: str) -> bool | None:
        return (self.windowed_peak_survives or {}).get(f"{kind}_{token_class}")

    @classmethod
    def from_json(cls, data: dict) -> TracingHeadline:
        """Runs written before the peaks were Estimates stored one field per peak
        (`mlp_subject_last_peak_layer`, …): read as Estimates."""
        if "peaks" not in data and any(k.endswith("_peak_layer") for k in data):
            data = {**data, **flat_peaks(data)}
        return super().from_json(data)


SHARED = {("mlp", "subject_last"): (MLP_AT_SUBJECT, "MLP peak at the last subject token "
                                    "(window centre)"),
          ("attn", "last"): (ATTENTION_AT_LAST, "attention peak at the last token"),
          ("attn", "subject_last"): (ATTENTION_AT_SUBJECT, "")}


def peak_estimate(kind: str, token_class: str, layer, layer_range, aie, aie_ci,
                  n: int | None) -> Estimate:
    """One traced peak as an Estimate: the shared quantity where one applies (window 1)."""
    quantity, why = SHARED.get((kind, token_class),
                               (f"restoring {kind} at {token_class} tokens", ""))
    return Estimate(quantity, NAME, site=kind, token_class=token_class,
                    layer=None if layer is None else int(layer), layer_range=layer_range,
                    value=aie, interval=aie_ci, unit="AIE", n=n, why=why)


def flat_peaks(flat: dict) -> dict:
    """The `peaks` and `windowed_peak_survives` of a headline from one-field-per-peak keys
    (`<kind>_<class>_peak_aie`, `_aie_ci`, `_layer`, `_layer_range`; `<kind>_<class>_windowed_
    peak_survives`), in the order of the kinds and token classes."""
    peaks = []
    for kind in CT.TRACE_KINDS:
        for cls in TOKEN_CLASSES:
            key = f"{kind}_{cls}_peak"
            if flat.get(f"{key}_layer") is None and flat.get(f"{key}_aie") is None:
                continue
            peaks.append(peak_estimate(kind, cls, flat.get(f"{key}_layer"),
                                       flat.get(f"{key}_layer_range"), flat.get(f"{key}_aie"),
                                       flat.get(f"{key}_aie_ci"), flat.get("n_prompts")
                                       ).to_json())
    survives = {k.removesuffix("_windowed_peak_survives"): bool(v) for k, v in flat.items()
                if k.endswith("_windowed_peak_survives") and v is not None}
    return {"peaks": peaks, **({"windowed_peak_survives": survives} if survives else {})}


@dataclass(kw_only=True)
class TracingSummary(Summary):
    traces: dict[str, CT.TraceResult]
    positions: pd.DataFrame  # patching.position_table
    long: pd.DataFrame  # every trace, tidy
    aie: pd.DataFrame  # average indirect effect per kind × layer × token class
    peaks: pd.DataFrame  # peak AIE per kind × token class
    window: int  # the windowed MLP / attention traces' window
    metric_name: str
    by_relation: pd.DataFrame | None = None  # MLP at the last subject token, per relation
    relation_curves: pd.DataFrame | None = None

    def peak(self, kind: str, token_class: str) -> dict | None:
        """{layer, peak_aie} of `kind` at `token_class`, None when no prompt has that class."""
        row = self.peaks[(self.peaks["kind"] == kind) & (self.peaks["token_class"] == token_class)]
        if not len(row):
            return None
        return {"layer": int(row["layer"].iloc[0]), "peak_aie": float(row["peak_aie"].iloc[0])}

    def class_curves(self, kind: str) -> tuple[pd.DataFrame, list[str]]:
        """The AIE of trace `kind` by layer for each traced token class present, with the
        class's label ('last token (n=4)') in column `class`, and the labels in reading
        order."""
        order = [c for c in CT.TRACED_CLASSES if c in set(self.aie["token_class"])]
        part = self.aie[(self.aie["kind"] == kind) & self.aie["token_class"].isin(order)].copy()
        named = class_labels(self.positions, CLASS_TITLES, order)
        part["class"] = part["token_class"].map(named)
        return part, [named[c] for c in order if c in named]

    def example_grid(self, kind: str, index: int = 0) -> tuple[np.ndarray, list[str]]:
        """One prompt's indirect effect [token × layer] of trace `kind`, and its tokens'
        labels (subject tokens marked *)."""
        n_tok = int(self.traces["hidden"].lengths[index])
        rows = self.positions[self.positions["prompt_id"] == index]
        labels = [f"{t!r}{'*' if c.startswith('subject') else ''}"
                  for t, c in zip(rows["token"], rows["token_class"])]
        return self.traces[kind].indirect_effect()[:, :n_tok, index].T.numpy(), labels


def summarise(lm: LoadedModel, prepared: PreparedTask, *, options: Options) -> TracingSummary:
    """ROME causal tracing of hidden states, MLP and attention outputs one layer at a time,
    and of MLP / attention outputs in a window of layers (`trace_window`; "auto":
    `causal_tracing.default_window`; a number is clamped to 1..n_layers) at the last subject
    token and the last token, averaged by token class, in one set of forwards."""
    noise_samples, noise_scale, seed = options.noise_samples, options.noise_scale, options.seed
    metric, window, max_patches = options.trace_metric, options.trace_window, options.max_patches
    n_layers = lm.model.cfg.n_layers
    rule = CT.window_rule(window, n_layers)
    window = CT.resolve_window(window, n_layers)
    where = [[i for c in WINDOWED_CLASSES for i in p.of_class(c)]
             for p in task_positions(prepared, lm.tokenizer)]
    traces = CT.trace(lm, prepared, CT.TRACE_KINDS, noise_samples=noise_samples,
                      noise_scale=noise_scale, seed=seed, metric=metric,
                      windows={k: window for k in CT.WINDOWED},
                      positions={k: where for k in CT.WINDOWED}, max_patches=max_patches,
                      progress=True)
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
        "window": window, "window_rule": rule, "window_share": window / n_layers,
        "metric": metric_name,
        "clean_mean": float(hidden.clean.mean()), "noised_mean": float(hidden.corrupted.mean()),
        "total_effect_mean": float(hidden.total_effect().mean()),
    }
    # One entry per (kind, token class), e.g. mlp_subject_last_peak_aie / _peak_layer (window
    # 1), windowed_mlp_subject_last_peak_aie (the windowed trace); MLP peaks over layers ≥ 1.
    flat = {}
    for _, row in peaks.iterrows():
        flat[f"{row['kind']}_{row['token_class']}_peak_aie"] = float(row["peak_aie"])
        flat[f"{row['kind']}_{row['token_class']}_peak_layer"] = int(row["layer"])
    # intervals over prompts (resamples seeded like the noise), peak ranges and the claims
    flat.update(I.tracing_intervals(long, n_layers, seed))
    flat["n_prompts"] = headline["n_prompts"]
    by_relation, curves = tracing_by_relation(long, prepared, flat, n_layers, seed)
    # the peaks become Estimates; the layer-0 MLP and the claims stay fields of their own
    names = set(TracingHeadline.__dataclass_fields__)
    headline.update({k: v for k, v in flat.items() if k in names}, **flat_peaks(flat))
    found = TracingHeadline(**headline)
    tables = {"trace_long": long, "aie_by_class": aie, "peaks": peaks}
    if by_relation is not None:
        tables["by_relation"] = by_relation
    return TracingSummary(headline=found, tables=tables,
                          estimates=estimates_of(METHOD, found, tables), traces=traces,
                          positions=positions, long=long, aie=aie, peaks=peaks, window=window,
                          metric_name=metric_name, by_relation=by_relation,
                          relation_curves=curves)


def tracing_by_relation(long, prepared, headline, n_layers, seed):
    """Restoring MLP outputs at the last subject token (window 1), per relation: peaks over
    layers ≥ 1 with their ranges and the curves with bands (None, None for one relation or no
    such token class)."""
    relations = relations_of(prepared)
    pooled = headline.get("mlp_subject_last_peak_layer")
    if relations is None or pooled is None:
        return None, None
    part = long[(long["kind"] == "mlp") & (long["token_class"] == "subject_last")]
    values, ids = I.prompt_curves(part, "indirect_effect", n_layers)
    names = relations.to_numpy()[ids]
    first = CT.first_peak_layer("mlp")  # the layer-0 MLP is an embedding confound
    return (R.relation_peaks(values[:, first:], names, pooled, n_layers, seed,
                             layers=range(first, n_layers)),
            R.relation_curves(values, names, seed))


def peak_text(h, kind: str, token_class: str) -> str:
    """'layer 5; 95% of resamples peak in layers 3–8, AIE 0.28 (95% CI …)'."""
    e = h.peak(kind, token_class) or Estimate("", NAME)
    return (f"{layer_with_range(e.layer, e.layer_range)}"
            f", AIE {with_interval(e.value, e.interval, '.3f')}")


def window_comparison(aie: pd.DataFrame, window: int) -> pd.DataFrame:
    """The AIE rows of the MLP at the last subject token and attention at the last subject
    token and the last token, window 1 and windowed, for a two-panel figure: columns state,
    restoration ('one layer at a time' / 'windows of N layers'), plus / minus (error bars)."""
    states = {("mlp", "subject_last"): "MLP, last subject token",
              ("attn", "subject_last"): "attention, last subject token",
              ("attn", "last"): "attention, last token"}
    rows = []
    for kind in ("mlp", "attn", *CT.WINDOWED):
        state, windowed = CT.state_of(kind), kind in CT.WINDOWED
        for (s, cls), name in states.items():
            part = aie[(aie["kind"] == kind) & (aie["token_class"] == cls)] if s == state else None
            if part is not None and len(part):
                rows.append(part.assign(state=name, restoration=(
                    f"windows of {window} layers" if windowed else "one layer at a time")))
    if not rows:
        return pd.DataFrame(columns=[*aie.columns, "state", "restoration", "plus", "minus"])
    out = pd.concat(rows, ignore_index=True)
    return out.assign(plus=out["high"] - out["aie"], minus=out["aie"] - out["low"])


def peaks_markdown(h) -> str:
    """Notebook 05's paragraph on the peaks: window 1 first, the layer-0 MLP on its own, each
    windowed peak and whether it survives window 1, the claims with their raw p-values."""
    if h.peak("mlp", "subject_last") is None:
        return "No prompt has a last subject token: no peak to report."
    parts = [f"One layer at a time, at the last subject token the MLP restoration (layers ≥ 1) "
             f"peaks at **{peak_text(h, 'mlp', 'subject_last')}** and attention at "
             f"**{peak_text(h, 'attn', 'subject_last')}**"
             + (f"; at the last token attention peaks at **{peak_text(h, 'attn', 'last')}**."
                if h.peak("attn", "last") is not None else ".")]
    if h.mlp_subject_last_layer0_aie is not None:
        parts.append("The layer-0 MLP alone at the last subject token recovers " + with_interval(
            h.mlp_subject_last_layer0_aie, h.mlp_subject_last_layer0_aie_ci, ".3f")
            + f" (left out of the peak: {LAYER0_MLP}).")
    if h.window == 1:
        parts.append(f"The window is 1 layer ({h.window_rule}): the windowed traces are the "
                     "single-layer ones.")
    for kind, cls, what in (("mlp", "subject_last", "The MLP at the last subject token"),
                            ("attn", "subject_last", "Attention at the last subject token"),
                            ("attn", "last", "Attention at the last token")):
        survival = survival_text(h, kind, cls)
        if survival:
            parts.append(f"{what}: {survival}.")
    parts.append("Claims on the window-1 curves (raw p-values: the verdicts, with Holm's "
                 "correction over the run's claims, are in the findings):")
    parts.append(f"*MLPs carry more than attention at the last subject token*: "
                 f"{claim_evidence_text(h.claim_mlp_over_attn_subject_last)}.")
    order = h.claim_mlp_before_attn_last
    share = h.mlp_subject_before_attn_last_share
    parts.append("*The MLP peak at the last subject token comes before attention's peak at the "
                 "last token* (attention's peak layer − the MLP's): "
                 f"{claim_evidence_text(order, '+.0f', ' layers')}"
                 + (f"; the MLP peak is earlier in {share:.0%} of bootstrap resamples."
                    if share is not None else "."))
    return " ".join(parts)


def claim_evidence_text(found: dict | None, spec: str = "+.3f", unit: str = "") -> str:
    """A claim's difference, test and raw p-value, without a verdict: the verdict is given
    with the run's other claims (Holm, in the findings). 'not computed' without a claim."""
    if not found:
        return "not computed (no prompt had both curves)"
    difference = with_interval(found.get("difference"), found.get("difference_ci"), spec)
    text = f"difference {difference}{unit}; {found.get('test', 'test')}, {p_text(found.get('p'))}"
    if not found.get("testable", True):
        text += (f" (with n = {found.get('n')} prompts no outcome can reach p ≤ {ALPHA:g}: not "
                 "tested)")
    n_pos, n_neg = found.get("n_positive"), found.get("n_negative")
    if n_pos is not None and n_neg is not None:
        text += f"; higher in {n_pos} of {n_pos + n_neg} prompts"
    return text + f"; n = {found.get('n')}"


# ------------------------------------------------------------------ findings
def tracing_window(run: Run, layer: int) -> tuple[int, int]:
    """First and last layer restored together around `layer` in the run's windowed traces
    (ROME's window, clipped). The run's `*_peak_layer` fields are window-1 peaks (a layer
    alone) in runs that record `window_rule`; in older runs they are windowed."""
    window = int(run.headline(METHOD).window or 1)
    last_layer = (run.n_layers or layer + window) - 1
    return max(0, layer - window // 2), min(last_layer, layer - (-window // 2) - 1)


def survival_text(h, kind: str, token_class: str) -> str | None:
    """'restored in windows of 6 layers (20% of the depth) as ROME did, it peaks at the window
    centred on layer 5, inside the layers 4–6 holding the window-1 peak in 95% of resamples:
    it survives window 1' (None when the run has no windowed trace of `kind` at the class or
    the window is 1 layer)."""
    windowed, window_1 = h.peak(f"windowed_{kind}", token_class), h.peak(kind, token_class)
    layer = None if windowed is None else windowed.layer
    survives = h.survives(kind, token_class)
    single = None if window_1 is None else window_1.layer_range
    if layer is None or survives is None or not single or h.window == 1:
        return None
    where = "inside" if survives else "outside"
    verdict = "it survives window 1" if survives else "it does not survive window 1"
    share = f" ({h.window_share:.0%} of the depth)" if h.window_share is not None else ""
    return (f"restored in windows of {h.window} layers{share} as ROME did, it peaks at the "
            f"window centred on layer {int(layer)}, {where} the layers {int(single[0])}–"
            f"{int(single[1])} holding the window-1 peak in 95% of resamples: {verdict}")


def tracing_findings(run: Run) -> list[Finding]:
    h = run.headline(METHOD)
    found = []
    mlp, attn, attn_last = (h.peak("mlp", "subject_last"), h.peak("attn", "subject_last"),
                            h.peak("attn", "last"))
    layer = None if mlp is None else mlp.layer
    if layer is not None:
        aie = with_interval(mlp.value, mlp.interval, ".3f")
        if h.window_rule is None:  # a run from before window-1 traces: its peak is windowed
            first, last = tracing_window(run, int(layer))
            restored = (f"layers {first}–{last}, the window centred on " if last > first else "")
            how = ""
        else:
            restored, how = "", ", one layer at a time (layers ≥ 1),"
        text = (f"**Causal tracing** ({h.n_prompts} prompts): restoring the MLP outputs at "
                f"the last subject token{how} recovers the most for {restored}"
                f"{layer_text(run, layer, mlp.layer_range)}, "
                f"{depth_band(run.depth(layer))} layers: AIE {aie} on "
                f"{h.metric or 'the metric'}")
        if attn is not None and attn.value is not None:
            text += (f", against {with_interval(attn.value, attn.interval, '.3f')} at most for "
                     "attention at that token")
        text += "."
        if h.mlp_subject_last_layer0_aie is not None:
            text += (" The layer-0 MLP alone recovers " + with_interval(
                h.mlp_subject_last_layer0_aie, h.mlp_subject_last_layer0_aie_ci, ".3f")
                + f", left out of the peak: {LAYER0_MLP}.")
        windowed = survival_text(h, "mlp", "subject_last")
        if windowed:
            text += f" Secondary: {windowed}."
        if attn_last is not None and attn_last.layer is not None and h.window_rule is not None:
            said = survival_text(h, "attn", "last")
            text += (" Attention at the last token peaks, one layer at a time, at "
                     f"{layer_text(run, attn_last.layer, attn_last.layer_range)}"
                     + (f"; {said}." if said else "."))
        found.append(Finding(WHERE, text, 10))
    relations = relation_peaks_text(run.result(METHOD, "by_relation"),
                                    "causal tracing's MLP peak at the last subject token")
    if relations:
        found.append(Finding(BY_RELATION, relations, 20))
    return found


def overview(run: Run) -> dict[str, str]:
    """Its cell of the table of several runs: the MLP peak at the last subject token."""
    e = run.headline(METHOD).peak("mlp", "subject_last")
    return {"tracing: MLP peak": "—" if e is None else
            peak_cell(e.layer, e.layer_range, e.value, e.interval, ".3f")}


def tracing_samples(run: Run) -> list[Sample]:
    """Noise samples per prompt (beside ROME's), and the prompts traced."""
    h = run.headline(METHOD)
    samples = h.noise_samples
    text = None if samples is None else (
        f"{samples} noise samples per prompt in causal tracing"
        + (f" (ROME used {ROME_NOISE_SAMPLES})" if samples < ROME_NOISE_SAMPLES else ""))
    return [Sample(text, "prompts analysed", h.n_prompts)]


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
    samples=tracing_samples,
    overview=overview,
    quantities=(MLP_AT_SUBJECT, ATTENTION_AT_LAST, ATTENTION_AT_SUBJECT),
    key_numbers=("total_effect_mean", "mlp_subject_last_peak_aie",
                 "mlp_subject_last_peak_layer_depth"),
    profiles=(Profile("aie_by_class", aie_profile, "aie", "state",
                      "Causal tracing: average indirect effect<br><sup>P(answer) restored by one "
                      "clean state in the noised run</sup>", "AIE"),),
    parameters=(CT.NOISE_SAMPLES, CT.NOISE_SCALE, CT.TRACE_WINDOW, CT.TRACE_METRIC,
                MAX_PATCHES),
)
