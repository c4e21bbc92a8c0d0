"""The task check behind notebook 01: score every prompt with every metric, top-k tokens,
accuracy against chance, and the prompts kept for the mechanistic analyses."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from factcircuits.methods.by_relation import MIN_PROMPTS
from factcircuits.methods.evaluate import known_phrase, known_prompts
from factcircuits.methods.sampling import per_relation_sample
from factcircuits.methods.topk import top_k_table
from factcircuits.methods.uncertainty import (
    binomial_two_sided_p,
    mean_estimate,
    with_interval,
)

FILTERED_FILE = "filtered_dataset.csv"
MAX_ROWS_SHOWN = 40  # per-prompt tables longer than this show their head and where the rest is


def shown_rows(table: pd.DataFrame, path: str,
               limit: int = MAX_ROWS_SHOWN) -> tuple[pd.DataFrame, str]:
    """(the rows to show, a note saying where the full table is when some are left out)."""
    if len(table) <= limit:
        return table, ""
    return table.head(limit), (f"The first {limit} of {len(table)} rows; the full table is "
                               f"`{path}` in the run folder.")


def relation_markdown(table: pd.DataFrame, pooled: float) -> str:
    """Which relations' accuracy intervals exclude the pooled accuracy."""
    differ = table[table["differs_from_pooled"]]
    if differ.empty:
        return (f"No relation's interval excludes the pooled accuracy ({pooled:.0%}) at these "
                "sample sizes.")
    names = ", ".join(f"{r.relation} ({r.accuracy:.0%}, 95% CI {r.accuracy_low:.0%} to "
                      f"{r.accuracy_high:.0%})" for r in differ.itertuples())
    return f"Relations whose interval excludes the pooled accuracy ({pooled:.0%}): {names}."

def metric_explanation(prepared) -> str:
    """Why the task's metrics exist side by side (set sizes come from the answer sets)."""
    if prepared.task == "cloze":
        return (
            "**Metrics.** *Logit difference* logit(correct) − logit(counterfactual) compares "
            "the fact with a plausible alternative of the same relation and is linear in the "
            "residual stream (the metric for attribution and patching); *P(correct)* and the "
            "*rank* of the correct token say how confidently the model actually produces it."
        )
    n_true, n_false = len(prepared.answer_sets.true_ids), len(prepared.answer_sets.false_ids)
    return (
        f"**Why three metrics.** The *summed logit difference* (the original study's first "
        f"metric) adds {n_true} True logits and subtracts {n_false} False ones, so it is biased "
        "by the set sizes and moves with logit shifts that change no probability. The "
        "*probability-mass difference* P(True set) − P(False set) fixes that but saturates "
        "near ±1. The *log-odds* log P(True set)/P(False set) = logsumexp(True) − "
        "logsumexp(False) is unbiased by set sizes, unbounded, and close to linear in the "
        "residual stream, so it is the metric the attribution and patching notebooks use."
    )


def auc(scores, labels) -> float:
    """Probability that a random true statement scores above a random false one."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        return float("nan")
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


@dataclass
class TaskCheckReport:
    task: str
    main_metric: str
    model_table: pd.DataFrame
    per_prompt: pd.DataFrame
    top_tokens: pd.DataFrame
    dropped: pd.DataFrame
    filtered_rows: pd.DataFrame
    headline: dict
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
        accuracy = with_interval(h["accuracy"], h.get("accuracy_ci"), ".0%")
        mean = with_interval(h["mean_metric"], h.get("mean_metric_ci"), "+.3f")
        text = (f"**{h['n_prompts']} prompts**, accuracy **{accuracy}**, mean "
                f"{self.main_metric} **{mean}** (95% bootstrap intervals over prompts).")
        if self.task == "yesno":
            text += (f" AUC of the log-odds against the labels: **{h['auc']:.2f}**; two-sided "
                     f"binomial test against 50%: p = {h['p_vs_chance']:.3g}.")
            if h["at_chance"]:
                text += (" **The model is at chance on this task**: it does not separate true "
                         "from false statements, so the later notebooks describe how it "
                         "produces its (uninformed) answer, not how it verifies a fact.")
        return text

    def filter_markdown(self) -> str:
        h = self.headline
        if h["n_kept"] == 0:
            return (f"No prompt is one the model {h['known_phrase']}; the later notebooks fall "
                    "back to all prompts and say so.")
        return (f"Kept **{h['n_kept']}** of {h['n_prompts']} prompts the model "
                f"{h['known_phrase']}; {h['n_dropped']} dropped (listed below with the "
                "reason).")


def relation_table(table: pd.DataFrame, known_index, per_relation: int = 0,
                   seed: int = 0) -> pd.DataFrame | None:
    """Per relation: rows scored, accuracy with its 95% bootstrap interval, prompts known, and
    prompts analysed (all known, or the `per_relation` sample); whether the accuracy interval
    excludes the pooled accuracy. None for a dataset of one relation."""
    if "relation" not in table or table["relation"].nunique() < 2:
        return None
    known = table.index.isin(known_index)
    analysed = known.copy()
    if per_relation > 0:
        sample = per_relation_sample(table.loc[known, "relation"], per_relation, seed)
        analysed[np.flatnonzero(known)[~sample]] = False
    pooled = float(table["correct"].mean())
    rows = []
    for relation, part in table.groupby("relation"):
        where = (table["relation"] == relation).to_numpy()
        estimate = mean_estimate(part["correct"].astype(float), seed=seed)
        rows.append({"relation": relation, "rows": len(part), "accuracy": estimate.value,
                     "accuracy_low": estimate.low, "accuracy_high": estimate.high,
                     "known": int(known[where].sum()), "analysed": int(analysed[where].sum()),
                     "differs_from_pooled": len(part) >= MIN_PROMPTS and
                     bool(estimate.low > pooled or estimate.high < pooled)})
    return pd.DataFrame(rows)


def check(session, top_k: int = 5) -> TaskCheckReport:
    prepared = session.task
    logits, table = session.score(progress=True)
    table["short_prompt"] = table["prompt"].str.strip().str.slice(0, 48)
    table["label_text"] = table["label"].map({True: "true", False: "false"})
    if prepared.task == "cloze":
        table["label_text"] = "fact"
    top = top_k_table(logits, session.tokenizer, top_k, prompts=table["short_prompt"].tolist())
    criterion = session.known_criterion
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
    # 95 % bootstrap intervals over prompts, stored beside each number
    for key, column in (("accuracy", "correct"), ("mean_metric", "metric"),
                        ("mean_p_answer", "p_answer")):
        if column in table:
            headline[f"{key}_ci"] = mean_estimate(table[column], seed=session.seed).interval()
    if prepared.task == "yesno":
        raw = table["metric"] * prepared.signs.numpy()  # unsigned log-odds
        headline["auc"] = auc(raw.tolist(), table["label"].tolist())
        headline["p_vs_chance"] = binomial_two_sided_p(correct, n)
        headline["at_chance"] = bool(headline["p_vs_chance"] > 0.05)
        if session.task.answer_sets.dropped:
            headline["dropped_answer_words"] = sorted(session.task.answer_sets.dropped)
    else:
        headline["at_chance"] = len(kept) == 0  # the analyses fall back to every prompt
        # answer above the counterfactual, whichever criterion picked the prompts
        pairwise = (table["logit_diff"] > 0).astype(float)
        headline["pairwise_accuracy"] = float(pairwise.mean())
        headline["pairwise_accuracy_ci"] = mean_estimate(pairwise, seed=session.seed).interval()
    by_relation = relation_table(table, known.kept.index, session.per_relation, session.seed)
    model_table = pd.DataFrame(
        [{"field": k, "value": str(v)} for k, v in session.lm.provenance.items()
         if k != "versions"]
        + [{"field": "dataset", "value": f"{session.dataset.name} ({len(session.dataset)} rows, "
            f"sha256 {session.dataset.sha256[:12]})"},
           {"field": "prompt format", "value": prepared.prompt_format}]
    )
    return TaskCheckReport(prepared.task, prepared.main_metric, model_table, table, top,
                           dropped, kept, headline, by_relation)
