"""Notebook 01, the task check: does the model know the facts? Every prompt scored with every
metric, top-k tokens, accuracy against chance, and the prompts kept for the mechanistic
analyses (the `known` criterion)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from factcircuits.methods.evaluate import PreparedTask, known_phrase, known_prompts, score
from factcircuits.methods.task_check import auc, relation_table
from factcircuits.methods.topk import TOP_K, top_k_table
from factcircuits.methods.uncertainty import (
    binomial_two_sided_p,
    mean_estimate,
    proportion_estimate,
    with_interval,
)
from factcircuits.models import LoadedModel
from factcircuits.results.headlines import Headline, exact_interval, interval, number
from factcircuits.results.kinds import Table
from factcircuits.results.registry import (
    BY_RELATION,
    KNOWLEDGE,
    PROMPTS_SCORED,
    Finding,
    Method,
    Sample,
)
from factcircuits.results.run import Run
from factcircuits.results.summary import Options, Summary, estimates_of
from factcircuits.results.wording import (
    MIN_PROMPTS,
    interval_cell,
    interval_cells,
    metric_name,
    not_tested_text,
)

FRACTION = "fraction of prompts"


@dataclass
class TaskCheckHeadline(Headline):
    task: str | None = number("the task: cloze recall or yes/no verification")
    n_prompts: int | None = number("prompts scored", "prompts")
    accuracy: float | None = number("cloze: the answer is the top token; yes/no: the label's "
                                    "answer set outweighs the other", FRACTION)
    accuracy_ci: list[float] | None = exact_interval("accuracy")
    mean_metric: float | None = number("mean of the task's main metric (positive = right)",
                                       "main metric")
    mean_metric_ci: list[float] | None = interval("mean_metric")
    main_metric: str | None = number("the task's main metric (logit_diff, log_odds, …)")
    known: str | None = number("the criterion picking the prompts the later notebooks analyse")
    known_phrase: str | None = number("that criterion in words")
    n_kept: int | None = number("prompts the model knows, analysed later", "prompts")
    n_dropped: int | None = number("prompts left out (not known, or not scorable)", "prompts")
    mean_log_odds: float | None = number("mean log-odds of the answer sets", "nats")
    mean_prob_mass_diff: float | None = number("mean P(true set) − P(false set)", "probability")
    mean_logit_diff_sum: float | None = number("mean summed logit difference of the answer "
                                               "sets", "logits")
    mean_logit_diff: float | None = number("mean logit(answer) − logit(counterfactual)",
                                           "logits")
    mean_p_answer: float | None = number("mean probability of the correct answer",
                                         "probability")
    mean_p_answer_ci: list[float] | None = interval("mean_p_answer")
    auc: float | None = number("yes/no: AUC of the log-odds against the labels", "AUC")
    p_vs_chance: float | None = number("yes/no: two-sided binomial test of the accuracy "
                                       "against 50%", "p-value")
    at_chance: bool | None = number("the model does not know the facts (yes/no: p > 0.05; "
                                    "cloze: no prompt known)")
    dropped_answer_words: list[str] | None = number("answer-map words that are not one token")
    pairwise_accuracy: float | None = number("cloze: the answer's logit is above the "
                                             "counterfactual's", FRACTION)
    pairwise_accuracy_ci: list[float] | None = exact_interval("pairwise_accuracy")

@dataclass(kw_only=True)
class TaskCheckSummary(Summary):
    task: str
    main_metric: str
    model_table: pd.DataFrame
    per_prompt: pd.DataFrame
    top_tokens: pd.DataFrame
    dropped: pd.DataFrame
    filtered_rows: pd.DataFrame  # the prompts kept, written beside the results (FILTERED_FILE)
    by_relation: pd.DataFrame | None = None  # datasets with several relations

    @property
    def per_prompt_display(self) -> pd.DataFrame:
        cols = ["prompt", "label", "answer", "counterfactual", "metric", "log_odds",
                "prob_mass_diff", "logit_diff_sum", "p_true_set", "p_false_set", "logit_diff",
                "p_answer", "rank", "correct"]
        shown = [c for c in cols if c in self.per_prompt.columns
                 and not (self.task == "yesno" and c in ("answer", "counterfactual"))]
        return self.per_prompt[shown].round(4)

    @property
    def top_tokens_wide(self) -> pd.DataFrame:
        table = self.top_tokens.assign(
            cell=lambda t: t["token"].map(repr) + " " + t["prob"].map("{:.2f}".format))
        wide = table.pivot(index="prompt_index", columns="rank", values="cell")
        wide.columns = [f"#{c}" for c in wide.columns]
        wide.insert(0, "prompt", self.per_prompt["short_prompt"].to_numpy())
        return wide.reset_index(drop=True)

    def summary_markdown(self) -> str:
        h = self.headline
        # the accuracy's interval is exact (Clopper–Pearson), the mean's a bootstrap
        accuracy = with_interval(h.accuracy, h.accuracy_ci, ".0%", "exact 95% CI")
        mean = with_interval(h.mean_metric, h.mean_metric_ci, "+.3f",
                             "95% bootstrap CI over prompts")
        text = (f"**{h.n_prompts} prompts**, accuracy **{accuracy}**, mean "
                f"{self.main_metric} **{mean}**.")
        if self.task == "yesno":
            text += (f" AUC of the log-odds against the labels: **{h.auc:.2f}**; two-sided "
                     f"binomial test against 50%: p = {h.p_vs_chance:.3g}.")
            if h.at_chance:
                text += (" **The model is at chance on this task**: it does not separate true "
                         "from false statements, so the later notebooks describe how it "
                         "produces its (uninformed) answer, not how it verifies a fact.")
        return text

    def filter_markdown(self) -> str:
        h = self.headline
        if h.n_kept == 0:
            return (f"No prompt is one the model {h.known_phrase}; the later notebooks fall "
                    "back to all prompts and say so.")
        return (f"Kept **{h.n_kept}** of {h.n_prompts} prompts the model "
                f"{h.known_phrase}; {h.n_dropped} dropped (listed below with the "
                "reason).")



def summarise(lm: LoadedModel, prepared: PreparedTask, *, options: Options
              ) -> TaskCheckSummary:
    """Every prompt of `prepared` (the run's usable rows) scored, and the ones kept."""
    from factcircuits.run.session import analysed_dataset

    seed = options.seed
    logits, table = score(lm, prepared, batch_size=options.batch_size, progress=True)
    table["short_prompt"] = table["prompt"].str.strip().str.slice(0, 48)
    table["label_text"] = table["label"].map({True: "true", False: "false"})
    if prepared.task == "cloze":
        table["label_text"] = "fact"
    top = top_k_table(logits, lm.tokenizer, options.top_k,
                      prompts=table["short_prompt"].tolist())
    criterion = options.known
    known = known_prompts(prepared, table, criterion)
    unscorable = prepared.dropped
    dropped = (pd.concat([known.wrong, unscorable], ignore_index=True) if len(unscorable)
               else known.wrong)
    kept = known.kept

    n, correct = len(table), int(table["correct"].sum())
    headline = {
        "task": prepared.task, "n_prompts": n, "accuracy": correct / n,
        "mean_metric": float(table["metric"].mean()), "main_metric": prepared.main_metric,
        "known": criterion, "known_phrase": known_phrase(prepared.task, criterion),
        "n_kept": int(len(kept)), "n_dropped": int(len(dropped)),
        **{f"mean_{c}": float(table[c].mean()) for c in
           ("log_odds", "prob_mass_diff", "logit_diff_sum", "logit_diff", "p_answer")
           if c in table},
    }
    # exact (Clopper–Pearson) intervals for proportions, 95 % bootstrap intervals for means
    headline["accuracy_ci"] = proportion_estimate(table["correct"]).interval()
    for key, column in (("mean_metric", "metric"), ("mean_p_answer", "p_answer")):
        if column in table:
            headline[f"{key}_ci"] = mean_estimate(table[column], seed=seed).interval()
    if prepared.task == "yesno":
        raw = table["metric"] * prepared.signs.numpy()  # unsigned log-odds
        headline["auc"] = auc(raw.tolist(), table["label"].tolist())
        headline["p_vs_chance"] = binomial_two_sided_p(correct, n)
        headline["at_chance"] = bool(headline["p_vs_chance"] > 0.05)
        if prepared.answer_sets.dropped:
            headline["dropped_answer_words"] = sorted(prepared.answer_sets.dropped)
    else:
        headline["at_chance"] = len(kept) == 0  # the analyses fall back to every prompt
        # answer above the counterfactual, whichever criterion picked the prompts
        pairwise = (table["logit_diff"] > 0).astype(float)
        headline["pairwise_accuracy"] = float(pairwise.mean())
        headline["pairwise_accuracy_ci"] = proportion_estimate(pairwise).interval()
    by_relation = relation_table(table, known.kept.index, options.per_relation, seed)
    dataset = analysed_dataset(options.dataset, options.task, options.relation)
    model_table = pd.DataFrame(
        [{"field": k, "value": str(v)} for k, v in lm.provenance.items() if k != "versions"]
        + [{"field": "dataset", "value": f"{dataset.name} ({len(dataset)} rows, "
            f"sha256 {dataset.sha256[:12]})"},
           {"field": "prompt format", "value": prepared.prompt_format}]
    )
    tables = {"per_prompt": table, "top_tokens": top, "dropped": dropped}
    if by_relation is not None:
        tables["by_relation"] = by_relation
    found = TaskCheckHeadline(**headline)
    return TaskCheckSummary(headline=found, tables=tables,
                            estimates=estimates_of(METHOD, found, tables),
                            task=prepared.task, main_metric=prepared.main_metric,
                            model_table=model_table, per_prompt=table, top_tokens=top,
                            dropped=dropped, filtered_rows=kept, by_relation=by_relation)


def knowledge(run: Run) -> list[Finding]:
    h: TaskCheckHeadline = run.headline(METHOD)
    n = h.n_prompts
    correct = round(h.accuracy * n)  # top-1 (cloze) or the label's answer set (yes/no)
    pairwise = h.pairwise_accuracy  # cloze runs
    top1 = " (the answer is its top token)" if pairwise is not None else ""
    text = (f"The model answers **{correct} of {n}** prompts correctly{top1}: "
            f"{with_interval(h.accuracy, h.accuracy_ci, '.0%', 'exact 95% CI')}; mean "
            f"{metric_name(h.main_metric or 'metric')} "
            f"{with_interval(h.mean_metric, h.mean_metric_ci, '+.2f')}")
    if h.mean_p_answer is not None:
        text += f", mean P(correct answer) {with_interval(h.mean_p_answer, h.mean_p_answer_ci)}"
    text += "."
    if pairwise is not None:
        text += (f" It ranks the answer above the counterfactual for {round(pairwise * n)} "
                 f"({pairwise:.0%}).")
    if h.auc is not None:
        text += (f" AUC of true against false statements {h.auc:.2f}; "
                 f"binomial test against 50%: p = {h.p_vs_chance:.2g}.")
    kept = h.n_kept
    if h.at_chance:
        text += (" **The model is at chance on this task**: the later analyses describe how it "
                 "produces an uninformed answer, so the mechanism is not interpreted here.")
    elif kept is not None and (kept < n or h.known not in (None, "top1")):
        phrase = h.known_phrase or "answers correctly"
        if h.known and f"known={h.known}" not in phrase:
            phrase += f" (`known={h.known}`)"
        which = (f"the {kept} prompts it {phrase}" if kept < n
                 else f"all {n} prompts, each one it {phrase}")
        text += f" The mechanistic analyses use {which}."
    found = [Finding(KNOWLEDGE, text)]
    accuracy = run.result(METHOD, "by_relation")
    if accuracy is not None and not accuracy.empty:
        found.append(Finding(BY_RELATION, relation_accuracy_text(accuracy), 10))
    return found


def relation_accuracy_text(accuracy: pd.DataFrame) -> str:
    """Which relations' accuracy differs from the pooled accuracy (exact binomial tests,
    Holm-adjusted over the relations with enough prompts to be tested)."""
    head = f"**Accuracy by relation** ({len(accuracy)} relations)"
    if "p_vs_pooled_holm" in accuracy:
        tested = accuracy[accuracy["p_vs_pooled_holm"].notna()]
    else:  # a run from before the exact tests
        tested = accuracy[accuracy["rows"] >= MIN_PROMPTS]
    untested = not_tested_text(len(accuracy) - len(tested), len(accuracy))
    if tested.empty:
        return f"{head}: not tested: {untested}."
    differ = tested[tested["differs_from_pooled"].astype(bool)]
    names = ", ".join(f"{r.relation} {r.accuracy:.0%} (exact 95% CI {r.accuracy_low:.0%} to "
                      f"{r.accuracy_high:.0%}, {r.rows} prompts)" for r in differ.itertuples())
    text = (f"{head}: " + (f"{names} differ from the pooled accuracy" if names else
                           f"none of the {len(tested)} relations tested differs from the pooled "
                           "accuracy")
            + " (exact binomial tests, Holm-adjusted over the relations tested)")
    return text + (f"; {untested}." if len(tested) < len(accuracy) else ".")


def relation_view(accuracy: pd.DataFrame) -> pd.DataFrame:
    """The accuracy-by-relation table as a page shows it: the accuracy beside its exact 95 %
    interval, the Holm-adjusted p of the exact test against the pooled accuracy and its
    verdict, in columns that fit an A4 page (the saved table keeps every column). A relation
    with too few prompts to be tested (or a run from before the tests) says so."""
    holm_p = accuracy.get("p_vs_pooled_holm", pd.Series(float("nan"), index=accuracy.index))
    differs = accuracy.get("differs_from_pooled", pd.Series(False, index=accuracy.index))
    tested = holm_p.notna()
    return pd.DataFrame({
        "relation": accuracy["relation"].to_numpy(),
        "prompts": accuracy["rows"].to_numpy(),
        "accuracy [exact 95% CI]": interval_cells(accuracy, "accuracy", "accuracy_low",
                                                  "accuracy_high", ".2f"),
        "known": accuracy["known"].to_numpy(),
        "analysed": accuracy["analysed"].to_numpy(),
        "p vs pooled (Holm)": [f"{v:.2g}" if t else "not tested"
                               for v, t in zip(holm_p, tested)],
        "differs from pooled": [("yes" if bool(d) else "no") if t else "—"
                                for d, t in zip(differs, tested)]})


# The columns of a dropped prompt that say which prompt and why: the saved table keeps all 20
# (corrupted prompt, clue, metric...), which wrapped into narrow cells on an A4 page.
DROPPED_SHOWN = ("relation", "prompt", "label", "answer", "counterfactual", "rank", "p_answer",
                 "reason")


def dropped_view(dropped: pd.DataFrame) -> pd.DataFrame:
    """The dropped prompts as a page shows them: `DROPPED_SHOWN` where present, the relation
    and the label only when they vary (one relation, or a cloze task's label, say nothing)."""
    varying = ("relation", "label")
    return dropped[[c for c in DROPPED_SHOWN if c in dropped
                    and (c not in varying or dropped[c].nunique(dropna=False) > 1)]]


def at_chance(run: Run) -> bool:
    """The model does not know the facts: the findings do not interpret a mechanism."""
    return bool(run.headline(METHOD).at_chance)


def analysed_note(run: Run) -> str:
    """'known=pairwise (13 of 13 prompts kept)': the prompts a run analysed."""
    h: TaskCheckHeadline = run.headline(METHOD)
    known = f"known={run.parameters.get('known', 'top1')}"
    if h.n_kept is not None and h.n_prompts:
        known += f" ({h.n_kept} of {h.n_prompts} prompts kept)"
    return known


def overview(run: Run) -> dict[str, str]:
    """Its cells of the table of several runs: the prompts scored (those kept) and accuracy."""
    h: TaskCheckHeadline = run.headline(METHOD)
    sample = "—" if h.n_prompts is None else (
        f"{h.n_prompts}" + (f" ({h.n_kept})" if h.n_kept is not None else ""))
    return {"prompts (analysed)": sample,
            "accuracy": interval_cell(h.accuracy, h.accuracy_ci, ".0%")
            + (" (chance)" if at_chance(run) else "")}


METHOD = Method(
    notebook="01_task_check", title="Task check: does the model know the facts?",
    short="task check", headline=TaskCheckHeadline,
    results={
        "per_prompt": Table({}, "every prompt with every metric", open_columns=True),
        "by_relation": Table({"relation": "str", "rows": "int", "accuracy": "float",
                              "accuracy_low": "float", "accuracy_high": "float", "known": "int",
                              "analysed": "int", "p_vs_pooled": "float",
                              "p_vs_pooled_holm": "float", "differs_from_pooled": "bool"},
                             "accuracy per relation with its exact interval and its test "
                             "against the pooled accuracy"),
        "top_tokens": Table({"prompt_index": "int", "prompt": "str", "rank": "int",
                             "token": "str", "token_id": "int", "logit": "float",
                             "prob": "float"},
                            "the top next tokens per prompt"),
        "dropped": Table({}, "prompts left out, with the reason", open_columns=True),
    },
    findings=knowledge,
    key_numbers=("accuracy", "pairwise_accuracy", "n_kept", "auc", "mean_metric"),
    at_chance=at_chance,
    analysed_note=analysed_note,
    overview=overview,
    samples=lambda run: [Sample(None, PROMPTS_SCORED, run.headline(METHOD).n_prompts)],
    number_labels={"pairwise_accuracy": "answer above counterfactual",
                   "n_kept": "prompts analysed", "accuracy": "accuracy (top-1)"},
    parameters=(TOP_K,),
)
