"""Notebook 06, ablation and attention knockout: ablate the components with the largest direct
effect by resampling (their outputs on counterfactual prompts with another answer: the
headline) and, off the model's distribution, by zero and by mean; block the last token's
attention to the subject or the relation over sliding windows of layers."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from factcircuits.errors import UserError
from factcircuits.methods import ablation as AB
from factcircuits.methods import attribution as A
from factcircuits.methods import intervals as I
from factcircuits.methods import knockout as KO
from factcircuits.methods.ablation import N_COMPONENTS
from factcircuits.methods.counterfactual_sets import N_COUNTERFACTUALS, with_counterfactuals
from factcircuits.methods.evaluate import PreparedTask
from factcircuits.methods.uncertainty import (
    paired_comparison,
    peak_difference,
    swap_test,
    with_interval,
)
from factcircuits.models import LoadedModel
from factcircuits.results.estimates import RELATION_READ, SUBJECT_READ, Estimate
from factcircuits.results.headlines import Headline, interval, number
from factcircuits.results.kinds import Table
from factcircuits.results.parameter_declarations import BATCH_SIZE, SEED
from factcircuits.results.registry import IN_SHORT, MOVES, Finding, Method
from factcircuits.results.run import Run
from factcircuits.results.summary import Options, Summary, estimates_of
from factcircuits.results.wording import change_text, interval_cell, window_text

CHANGE = "relative change of P(answer)"
HEADLINE_MODE = "resample"  # the ablation the headline reports; zero and mean are secondary
OFF_DISTRIBUTION = ("zero", "mean")


def _centre(role: str):
    return number(f"centre of the window where blocking the last token's attention to the {role} "
                  "hurts most", "layer")


P_THERE = "P(answer)'s change there"
CENTRES = "window centres holding that peak in 95% of resamples"


@dataclass
class AblationKnockoutHeadline(Headline):
    """Notebook 06's headline: the biggest ablation, knockouts."""

    ablation_biggest_drop: float | None = number("the largest mean drop of the metric when one "
                                                 "component is ablated", "metric")
    ablation_biggest_drop_ci: list[float] | None = interval("ablation_biggest_drop")
    ablation_biggest_component: str | None = number("the component ablated")
    ablation_biggest_mode: str | None = number("the ablation: resample (the default), or zero "
                                               "or mean where no prompt has a donor")
    ablation_joint_drop: float | None = number("the mean drop with every ablated component "
                                               "ablated together (the headline's ablation)",
                                               "metric")
    ablation_joint_drop_ci: list[float] | None = interval("ablation_joint_drop")
    ablation_resample_prompts: int | None = number(
        "prompts with at least one donor (a counterfactual prompt of equal token length)",
        "prompts")
    ablation_resample_donors: float | None = number("donors per such prompt, on average",
                                                    "donors")
    ablation_zero_biggest_drop: float | None = number(
        "zero ablation (off-distribution): the largest mean drop of one component", "metric")
    ablation_zero_biggest_component: str | None = number("that component")
    ablation_mean_biggest_drop: float | None = number(
        "mean ablation (off-distribution): the largest mean drop of one component", "metric")
    ablation_mean_biggest_component: str | None = number("that component")
    knockout_window: int | None = number("layers knocked out together", "layers")
    # per role (KO.ROLES), the window where blocking the last token's attention hurts most
    knockout_subject_peak_centre: int | None = _centre("subject")
    knockout_subject_peak_relative_p_change: float | None = number(P_THERE, CHANGE)
    knockout_subject_peak_relative_p_change_ci: list | None = interval(
        "knockout_subject_peak_relative_p_change")
    knockout_subject_peak_centre_range: list | None = number(CENTRES, "layers")
    knockout_subject_peak_first: int | None = number("first layer of that window", "layer")
    knockout_subject_peak_last: int | None = number("last layer of that window", "layer")
    knockout_subject_peak_metric_change: float | None = number("the metric's mean change there",
                                                                "metric")
    knockout_relation_peak_centre: int | None = _centre("relation")
    knockout_relation_peak_relative_p_change: float | None = number(P_THERE, CHANGE)
    knockout_relation_peak_relative_p_change_ci: list | None = interval(
        "knockout_relation_peak_relative_p_change")
    knockout_relation_peak_centre_range: list | None = number(CENTRES, "layers")
    knockout_relation_peak_first: int | None = number("first layer of that window", "layer")
    knockout_relation_peak_last: int | None = number("last layer of that window", "layer")
    knockout_relation_peak_metric_change: float | None = number(
        "the metric's mean change there", "metric")
    # relation against subject knockout, each at its own worst window, paired over prompts
    knockout_relation_minus_subject: float | None = number(
        "P(answer)'s change at the relation knockout's worst window minus at the subject's "
        "(mean over prompts; negative: blocking the relation hurts more)", CHANGE)
    knockout_relation_minus_subject_ci: list | None = interval(
        "knockout_relation_minus_subject")
    claim_subject_knockout_over_relation: dict | None = number(
        "test of 'blocking attention to the subject hurts more than to the relation tokens, each "
        "at its worst window' (exact permutation test, windows re-chosen on every swap)")


@dataclass
class Ablation:
    components: list[tuple]  # the ablated components, largest mean |DLA| first
    table: pd.DataFrame  # ablation_table
    summary: pd.DataFrame  # mean per component × mode, largest drop first
    biggest: dict  # the single component and mode with the largest drop
    joint: pd.DataFrame  # rows of `summary` with every component ablated together
    headline: dict

    @property
    def clean_mean(self) -> float:
        """Mean clean metric over the prompts."""
        return float(self.table["clean"].mean())


def ablate_top_components(
        lm: LoadedModel,
        prepared: PreparedTask,
        *,
        reference: PreparedTask | None = None,
        n_components: int = N_COMPONENTS.default,
        batch_size: int = BATCH_SIZE.default,
        seed: int = SEED.default,
        progress: bool = False) -> Ablation:
    """Ablate the `n_components` components with the largest mean |DLA|, alone and together:
    by resampling from each prompt's counterfactual prompts (`prepared.counterfactual_draws`,
    else its corrupted prompt; the headline), by zero and by mean (means over `reference`'s
    prompts), the last two off the model's distribution."""
    if n_components < 1:  # a slice [:n] with n < 1 would ablate "all but -n", not n
        raise UserError(f"n_components={n_components}: use a whole number of at least 1")
    att = A.attribute_heads(lm, prepared, batch_size=batch_size, progress=progress)
    components = A.top_components(att.layers, att.heads, n_components)
    table = AB.ablation_table(lm, prepared, components, modes=(HEADLINE_MODE, *OFF_DISTRIBUTION),
                              batch_size=batch_size, reference=reference, progress=progress)
    summary = AB.summarise(table).dropna(subset=["drop"]).reset_index(drop=True)
    together = summary["component"].str.startswith("all")
    resampled = table[(table["mode"] == HEADLINE_MODE) & table["drop"].notna()]
    mode = HEADLINE_MODE if len(resampled) else "zero"  # no prompt has a donor
    singles = summary[~together]
    big = singles[singles["mode"] == mode].iloc[0]
    biggest = {"component": big["component"], "mode": big["mode"], "drop": big["drop"]}
    scored = table.dropna(subset=["drop"])
    headline = {"ablation_biggest_drop": big["drop"],
                "ablation_biggest_drop_ci": I.cell_interval(scored, "drop", seed,
                                                            component=big["component"],
                                                            mode=big["mode"]),
                "ablation_biggest_component": big["component"],
                "ablation_biggest_mode": big["mode"]}
    joint = summary[together & (summary["mode"] == mode)]
    if len(joint):
        label = joint["component"].iloc[0]
        headline.update(ablation_joint_drop=float(joint["drop"].iloc[0]),
                        ablation_joint_drop_ci=I.cell_interval(scored, "drop", seed,
                                                               component=label, mode=mode))
    donors = AB.resample_pairs(prepared, lm.tokenizer).rows["prompt_id"].value_counts()
    headline.update(ablation_resample_prompts=int(len(donors)),
                    ablation_resample_donors=float(donors.mean()) if len(donors) else None)
    for off in OFF_DISTRIBUTION:
        row = singles[singles["mode"] == off].iloc[0]
        headline[f"ablation_{off}_biggest_drop"] = float(row["drop"])
        headline[f"ablation_{off}_biggest_component"] = row["component"]
    return Ablation(components, table, summary, biggest, summary[together], headline)


@dataclass(frozen=True)
class WorstWindow:
    """The window of layers whose knockout of one role lowers P(answer) most (means over the
    prompts)."""

    role: str
    centre: int
    first: int
    last: int
    relative_p_change: float
    metric_change: float


@dataclass
class Knockout:
    table: pd.DataFrame  # knockout_sweep
    summary: pd.DataFrame  # mean per role × window
    peaks: dict[str, dict]  # per role: the window that lowers P(answer) most
    window: int
    headline: dict

    @property
    def worst_windows(self) -> list[WorstWindow]:
        """`peaks`, one per role in its order."""
        return [WorstWindow(role, p["centre"], p["first"], p["last"], p["relative_p_change"],
                            p["metric_change"]) for role, p in self.peaks.items()]


def knock_out(lm: LoadedModel, prepared: PreparedTask, *, window: int = 0,
              batch_size: int = BATCH_SIZE.default, seed: int = SEED.default,
              progress: bool = False) -> Knockout:
    """Attention knockout from the last position over sliding windows (`window` 0: the
    default, n_layers // 6)."""
    table = KO.knockout_sweep(lm, prepared, window or None, batch_size=batch_size,
                              progress=progress)
    peaks = KO.peak_windows(table)
    k = int(table["window"].iloc[0])
    headline = {"knockout_window": k,
                **{f"knockout_{role}_peak_centre": p["centre"] for role, p in peaks.items()},
                **{f"knockout_{role}_peak_relative_p_change": p["relative_p_change"]
                   for role, p in peaks.items()},
                **{f"knockout_{role}_peak_relative_p_change_ci": I.cell_interval(
                    table, "relative_p_change", seed, role=role, centre=p["centre"])
                   for role, p in peaks.items()},
                **{f"knockout_{role}_peak_centre_range": I.peak_window_range(table, role, seed)
                   for role in peaks},
                **{f"knockout_{role}_peak_{end}": p[end] for role, p in peaks.items()
                   for end in ("first", "last")},
                **{f"knockout_{role}_peak_metric_change": p["metric_change"]
                   for role, p in peaks.items()},
                **relation_against_subject(table, peaks, seed)}
    return Knockout(table, KO.summarise(table), peaks, k, headline)


def relation_against_subject(table: pd.DataFrame, peaks: dict[str, dict], seed: int) -> dict:
    """Per prompt, P(answer)'s relative change at the relation knockout's worst window minus
    at the subject knockout's: its mean and paired bootstrap interval (each window is chosen
    on the same prompts, so the interval is a little optimistic)."""
    if not {"subject", "relation"} <= set(peaks):
        return {}

    def at_peak(role):
        part = table[(table["role"] == role) & (table["centre"] == peaks[role]["centre"])]
        return part.set_index("prompt")["relative_p_change"].sort_index()

    subject, relation = at_peak("subject"), at_peak("relation")
    found = paired_comparison(relation.to_numpy(), subject.loc[relation.index].to_numpy(),
                              seed).difference
    # the same comparison as a claim of the run: the falls' curves over window centres,
    # swapped per prompt, each worst window re-chosen on every swap (the selection counted)
    falls = {role: -table[table["role"] == role].pivot_table(
        index="prompt", columns="centre", values="relative_p_change") for role in peaks}
    prompts = falls["subject"].index.intersection(falls["relation"].index)
    p = swap_test(falls["subject"].loc[prompts].to_numpy(),
                  falls["relation"].loc[prompts].to_numpy(), peak_difference, seed)
    return {"knockout_relation_minus_subject": found.value,
            "knockout_relation_minus_subject_ci": found.interval(),
            "claim_subject_knockout_over_relation": I.claim(
                "subject_knockout_over_relation", "blocking the last token's attention to the "
                "subject hurts more than blocking it to the relation tokens (each at its worst "
                "window; a total effect)", found, p,
                "exact paired permutation test over prompts (subject and relation curves "
                "swapped per prompt, each worst window re-chosen on every swap)")}


@dataclass(kw_only=True)
class AblationKnockoutSummary(Summary):
    ablation: Ablation
    knockout: Knockout

    @property
    def knockout_hurts_more(self) -> str | None:
        """Which knockout lowers P(answer) more, each at its worst window, by the paired 95%
        interval of relation − subject: "relation" (interval below 0), "subject" (above 0),
        None when the interval holds 0 or the two were not compared."""
        ci = self.headline.knockout_relation_minus_subject_ci
        if self.headline.knockout_relation_minus_subject is None or not ci:
            return None
        low, high = ci
        return "relation" if high < 0 else "subject" if low > 0 else None


def summarise(lm: LoadedModel, prepared: PreparedTask, *, options: Options
              ) -> AblationKnockoutSummary:
    """The top components ablated on each prompt's counterfactual draws (mean ablation over
    the run's every prompt), then the last token's attention knocked out."""
    from factcircuits.run.session import every_prompt

    seed, batch_size = options.seed, options.batch_size
    counterfactuals = with_counterfactuals(lm, prepared, options.n_counterfactuals, seed)
    ablation = ablate_top_components(lm, counterfactuals, reference=every_prompt(lm, options),
                                     n_components=options.n_components,
                                     batch_size=batch_size, seed=seed, progress=True)
    knockout = knock_out(lm, prepared, window=options.knockout_window, batch_size=batch_size,
                         seed=seed, progress=True)
    headline = AblationKnockoutHeadline(**ablation.headline, **knockout.headline)
    tables = {"ablation": ablation.table, "ablation_summary": ablation.summary,
              "knockout": knockout.table, "knockout_summary": knockout.summary}
    return AblationKnockoutSummary(headline=headline, tables=tables,
                                   estimates=estimates_of(METHOD, headline, tables),
                                   ablation=ablation, knockout=knockout)


def role_knockout(run: Run, role: str) -> dict | None:
    """The window where blocking the last token's attention to `role` ("subject" or
    "relation") lowers P(answer) most."""
    table = run.result(METHOD, "knockout_summary")
    if table is None or "relative_p_change" not in table.columns:
        return None
    part = table[table["role"] == role].dropna(subset=["relative_p_change"])
    if part.empty:
        return None
    return part.loc[part["relative_p_change"].idxmin()].to_dict()


def subject_knockout(run: Run) -> dict | None:
    """The window where blocking attention to the subject lowers P(answer) most."""
    return role_knockout(run, "subject")


ROLE_WORDS = {"subject": "the subject", "relation": "the relation tokens"}
NAME = "attention knockout"  # the estimator, as sentences name it


def worst_window(h: AblationKnockoutHeadline, role: str) -> tuple[list | None, list | None]:
    """(the window centres holding the worst window in 95% of resamples, the interval of
    P(answer)'s change there) of blocking attention to `role`."""
    if role == "subject":
        return (h.knockout_subject_peak_centre_range,
                h.knockout_subject_peak_relative_p_change_ci)
    return h.knockout_relation_peak_centre_range, h.knockout_relation_peak_relative_p_change_ci


def knockout_notes(run: Run) -> list[Finding]:
    """Its clause of the run's summary: the windows where blocking the last token's attention
    to the subject (and to the relation) hurts most."""
    ko, relation = subject_knockout(run), role_knockout(run, "relation")
    if ko is None:
        return []
    text = (f"blocking the last token's attention to the subject hurts most in layers "
            f"{int(ko['first'])}–{int(ko['last'])}")
    if relation is not None:
        text += (f", to the relation tokens in layers {int(relation['first'])}–"
                 f"{int(relation['last'])}")
    return [Finding(IN_SHORT, text + " (total effects)", 30)]


def overview(run: Run) -> dict[str, str]:
    """Its cell of the table of several runs: the subject knockout's worst window."""
    ko = subject_knockout(run)
    ci = run.headline(METHOD).knockout_subject_peak_relative_p_change_ci
    return {"subject knockout": "—" if ko is None else
            f"L{int(ko['first'])}–{int(ko['last'])}: "
            + interval_cell(ko["relative_p_change"], ci, "+.0%")}


def knockout_estimates(run: Run) -> list[Estimate]:
    """Where blocking the last token's attention to the subject (the relation) hurts most: the
    window's centre with the centres holding it in 95% of resamples, and the window itself."""
    h = run.headline(METHOD)
    found = []
    for role, quantity, centre in (("subject", SUBJECT_READ, h.knockout_subject_peak_centre),
                                   ("relation", RELATION_READ, h.knockout_relation_peak_centre)):
        centres, ci = worst_window(h, role)
        ko = role_knockout(run, role)
        if ko is None and centre is None:
            continue
        window = None if ko is None else (int(ko["first"]), int(ko["last"]))
        found.append(Estimate(
            quantity, NAME, site="attn", layer=int(ko["centre"] if centre is None else centre),
            layer_range=centres, window=window,
            value=None if ko is None else float(ko["relative_p_change"]), interval=ci,
            unit=CHANGE, how=f"{role} knockout",
            why=("centre of the window where blocking attention to the subject hurts most"
                 if role == "subject" else "")))
    return found


def ablation_findings(run: Run) -> list[Finding]:
    """The headline ablation (resample) and, labelled off-distribution, zero and mean."""
    h = run.headline(METHOD)
    if h.ablation_biggest_drop is None or h.ablation_biggest_mode is None:
        return []
    if h.ablation_biggest_mode == HEADLINE_MODE and h.ablation_resample_donors:
        how = ("resampling (each component's outputs replaced by its outputs on the prompt's "
               f"counterfactual prompts, another answer, {h.ablation_resample_donors:.1f} "
               f"donors on average for {h.ablation_resample_prompts} prompts)")
    elif h.ablation_resample_prompts == 0:
        how = (f"{h.ablation_biggest_mode} ablation (no prompt has a counterfactual of equal "
               "token length to resample from)")
    else:  # a run from before resample ablation: its one ablation, named
        how = f"{h.ablation_biggest_mode} ablation"
    text = (f"**Ablation** of the components with the largest direct effect, by {how}: "
            f"ablating **{h.ablation_biggest_component}** alone lowers the metric most, by "
            f"{with_interval(h.ablation_biggest_drop, h.ablation_biggest_drop_ci)}")
    if h.ablation_joint_drop is not None:
        text += (f"; all of them together by "
                 f"{with_interval(h.ablation_joint_drop, h.ablation_joint_drop_ci)}")
    off = [f"{mode} ablation's largest single drop is {drop:.2f} ({component})"
           for mode, drop, component in (
               ("zero", h.ablation_zero_biggest_drop, h.ablation_zero_biggest_component),
               ("mean", h.ablation_mean_biggest_drop, h.ablation_mean_biggest_component))
           if drop is not None and mode != h.ablation_biggest_mode]
    if off:
        text += (". Off the model's distribution (activations no prompt produces), "
                 + " and ".join(off))
    return [Finding(MOVES, text + ".", 20)]


def knockout_findings(run: Run) -> list[Finding]:
    """Both knockouts' worst windows, as total effects, and which hurts more when a paired
    interval says so."""
    h = run.headline(METHOD)
    parts = []
    for role in KO.ROLES:
        ko = role_knockout(run, role)
        if ko is None:
            continue
        centres, ci = worst_window(h, role)
        lead = "blocking it to" if parts else "blocking the last token's attention to"
        parts.append(f"{lead} {ROLE_WORDS[role]} hurts most in "
                     f"{window_text(run, ko['first'], ko['last'])}"
                     + (f" (in 95% of resamples the worst window is centred on layers "
                        f"{centres[0]}–{centres[1]})" if centres else "")
                     + f": P(answer) {change_text(ko['relative_p_change'], ci)}")
    if not parts:
        return []
    text = ("**Attention knockout** (total effects: the last token's attention is blocked and "
            "every later computation reacts): " + "; ".join(parts) + ".")
    diff, ci = h.knockout_relation_minus_subject, h.knockout_relation_minus_subject_ci
    if diff is not None and ci and all(v == v for v in ci):
        spread = f"{diff:+.0%} (95% CI {ci[0]:+.0%} to {ci[1]:+.0%})"
        # the interval alone; the claim's corrected test is judged with the run's others
        checked = (" (its exact test, corrected for the run's other claims, is under How sure)"
                   if isinstance(h.claim_subject_knockout_over_relation, dict) else "")
        if ci[1] < 0:
            text += (f" By its interval, blocking the relation tokens hurts **more** than "
                     f"blocking the subject, each at its worst window: P(answer)'s change "
                     f"differs by {spread}{checked}.")
        elif ci[0] > 0:
            text += (f" By its interval, blocking the subject hurts **more** than blocking the "
                     f"relation tokens, each at its worst window: P(answer)'s change differs by "
                     f"{spread}{checked}.")
        else:
            text += (f" Which of the two hurts more is not resolved (relation minus subject "
                     f"{spread}).")
    return [Finding(MOVES, text, 10)]


METHOD = Method(
    notebook="06_ablation_knockout", title="Ablation and attention knockout",
    short="ablation/knockout", headline=AblationKnockoutHeadline,
    results={
        "ablation": Table({"prompt": "int", "component": "str", "mode": "str", "clean": "float",
                           "ablated": "float", "drop": "float"}, "every ablation, per prompt"),
        "ablation_summary": Table({"component": "str", "mode": "str", "clean": "float",
                                   "ablated": "float", "drop": "float"},
                                  "mean per component and mode"),
        "knockout": Table({"prompt": "int", "role": "str", "window": "int", "centre": "int",
                           "first": "int", "last": "int", "clean_metric": "float",
                           "metric": "float", "metric_change": "float", "clean_p": "float",
                           "p": "float", "relative_p_change": "float"},
                          "every knockout window, per prompt"),
        "knockout_summary": Table({"role": "str", "centre": "int", "first": "int",
                                   "last": "int", "relative_p_change": "float",
                                   "metric_change": "float"}, "mean per role and window"),
    },
    findings=lambda run: knockout_findings(run) + ablation_findings(run) + knockout_notes(run),
    key_numbers=("ablation_biggest_drop", "knockout_subject_peak_centre_depth",
                 "knockout_relation_peak_centre_depth"),
    quantities=(SUBJECT_READ, RELATION_READ),
    estimates=knockout_estimates,
    overview=overview,
    parameters=(AB.N_COMPONENTS, KO.KNOCKOUT_WINDOW, N_COUNTERFACTUALS),
)
