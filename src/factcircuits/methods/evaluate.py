"""A dataset made ready for one model: formatted prompts, answer token ids, label signs, and the
task's main metric as a function of final-position logits. Every analysis starts from this."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from factcircuits.data.answers import AnswerSets, answer_sets, first_token_id, load_answer_map
from factcircuits.data.datasets import FactDataset
from factcircuits.errors import UserError
from factcircuits.methods import metrics
from factcircuits.models import LoadedModel
from factcircuits.models.forward import final_logits
from factcircuits.models.tokens import Batch, encode, format_prompt
from factcircuits.results.parameter_declarations import BATCH_SIZE, PROMPT_FORMAT


@dataclass
class PreparedTask:
    task: str  # "yesno" | "cloze"
    prompt_format: str
    rows: pd.DataFrame  # the dataset rows kept, index 0..n-1
    prompts: list[str]  # formatted clean prompts
    corrupted_prompts: list[str]  # formatted counterfactual prompts ("" where none)
    signs: torch.Tensor  # [n] +1 true statement / cloze, −1 false statement
    answer_sets: AnswerSets | None = None  # yes/no
    answer_ids: torch.Tensor | None = None  # cloze [n]
    cf_ids: torch.Tensor | None = None  # cloze [n]
    dropped: pd.DataFrame = field(default_factory=pd.DataFrame)  # rows left out, with reason
    # several counterfactuals per prompt (`methods.counterfactual_sets.with_counterfactuals`):
    # one row per (prompt_id, draw), formatted prompts, `data.counterfactuals.DRAW_COLUMNS`
    counterfactual_draws: pd.DataFrame | None = None

    @property
    def main_metric(self) -> str:
        return metrics.MAIN_METRIC[self.task]

    def metric(self, logits: torch.Tensor, index=None) -> torch.Tensor:
        """The task's main metric, label-signed, for final-position logits [batch, vocab] of
        prompts `index` (default: all, in order) → [batch]."""
        index = slice(None) if index is None else index
        if self.task == "yesno":
            raw = metrics.log_odds(logits, self.answer_sets.true_ids, self.answer_sets.false_ids)
            return raw * self.signs[index].to(raw.device)
        return metrics.logit_diff(logits, self.answer_ids[index], self.cf_ids[index])

    def answer_probability(self, logits: torch.Tensor, index=None) -> torch.Tensor:
        """P(answer) for final-position logits [batch, vocab] of prompts `index` (default: all,
        in order) → [batch]: cloze P(correct object); yes/no the probability mass of the
        answer set matching the label (P(True set) for a true statement, P(False set) for a
        false one)."""
        index = slice(None) if index is None else index
        probs = logits.float().softmax(-1)
        if self.task == "yesno":
            sets = self.answer_sets
            p_true = probs[:, sets.true_ids].sum(-1)
            p_false = probs[:, sets.false_ids].sum(-1)
            return torch.where(self.signs[index].to(probs.device) > 0, p_true, p_false)
        rows = torch.arange(len(probs), device=probs.device)
        return probs[rows, self.answer_ids[index].to(probs.device)]

    def metric_table(self, logits: torch.Tensor) -> pd.DataFrame:
        if self.task == "yesno":
            sets = self.answer_sets
            table = metrics.yesno_metrics(logits, sets.true_ids, sets.false_ids, self.signs > 0)
        else:
            table = metrics.cloze_metrics(logits, self.answer_ids, self.cf_ids)
        table.insert(0, "metric", table[self.main_metric])
        return table

    def clean_batch(self, tokenizer) -> Batch:
        return encode(tokenizer, self.prompts, self.prompt_format)

    def corrupted_batch(self, tokenizer) -> Batch:
        return encode(tokenizer, self.corrupted_prompts, self.prompt_format)

    def pair_problems(self, tokenizer) -> list[str]:
        """Per prompt pair, why activation patching cannot compare it ("" when it can): no
        corrupted prompt, or token lengths that differ (patching compares the same positions)."""
        clean = self.clean_batch(tokenizer).lengths.tolist()
        corrupt = self.corrupted_batch(tokenizer).lengths.tolist()
        return ["no corrupted prompt" if not cf else
                f"token lengths differ ({a} clean vs {b} corrupted)" if a != b else ""
                for cf, a, b in zip(self.corrupted_prompts, clean, corrupt)]

    def pairs(self, tokenizer) -> tuple[Batch, Batch]:
        """The clean and corrupted batches, once every pair is patchable (`pair_problems`):
        the one encoding of prompt pairs that patching, tracing and AtP share."""
        problems = self.pair_problems(tokenizer)
        bad = [i for i, p in enumerate(problems) if p]
        if bad:
            raise UserError(f"{len(bad)} prompt pair(s) cannot be patched (first: #{bad[0]}, "
                            f"{problems[bad[0]]}); activation patching compares the same "
                            "positions: keep equal-length pairs (Session.patchable)")
        return self.clean_batch(tokenizer), self.corrupted_batch(tokenizer)

    def subset(self, keep) -> PreparedTask:
        """Only the rows at positions `keep` (a list of ints or a boolean mask)."""
        keep = torch.as_tensor(keep)
        if keep.numel() == 0:  # [] would be a float tensor, which cannot index
            keep = keep.long()
        if keep.dtype == torch.bool:
            keep = keep.nonzero().flatten()
        idx = keep.tolist()
        pick = lambda t: None if t is None else t[keep]  # noqa: E731
        draws = self.counterfactual_draws
        if draws is not None:  # the kept prompts' draws, renumbered like the prompts
            kept = pd.DataFrame({"prompt_id": idx, "new_id": range(len(idx))})
            draws = (kept.merge(draws, on="prompt_id").drop(columns="prompt_id")
                     .rename(columns={"new_id": "prompt_id"})[draws.columns]
                     .sort_values(["prompt_id", "draw"]).reset_index(drop=True))
        return PreparedTask(
            self.task, self.prompt_format, self.rows.iloc[idx].reset_index(drop=True),
            [self.prompts[i] for i in idx], [self.corrupted_prompts[i] for i in idx],
            self.signs[keep], self.answer_sets, pick(self.answer_ids), pick(self.cf_ids),
            self.dropped, draws,
        )


def prepare(lm: LoadedModel, dataset: FactDataset, prompt_format: str = PROMPT_FORMAT.default,
            answer_map: str | None = None, n_prompts: int | None = None,
            drop_multi_token: bool = False) -> PreparedTask:
    """Format prompts, map answers to token ids, and drop rows that cannot be scored (reported
    in `.dropped`). `n_prompts` caps the rows (the first n, for quick runs)."""
    tokenizer = lm.tokenizer
    rows = dataset.rows.reset_index(drop=True)
    if n_prompts:
        rows = rows.head(int(n_prompts))
    task = dataset.task
    fmt = lambda text: format_prompt(text, prompt_format, tokenizer, task)  # noqa: E731
    prompts = [fmt(p) for p in rows["prompt"]]
    corrupted = [fmt(p) if p else "" for p in rows["corrupted_prompt"].fillna("")]
    signs = metrics.label_signs(rows["label"])
    if task == "yesno":
        sets = answer_sets(tokenizer, load_answer_map(answer_map or "yesno_default"),
                           drop_multi_token=drop_multi_token)
        return PreparedTask(task, prompt_format, rows, prompts, corrupted, signs, answer_sets=sets)

    answer, cf, reasons = [], [], []
    for a, c in zip(rows["answer"], rows["counterfactual"]):
        (a_id, _), (c_id, _) = first_token_id(tokenizer, a), first_token_id(tokenizer, c)
        answer.append(a_id)
        cf.append(c_id)
        reasons.append("answer and counterfactual share their first token" if a_id == c_id
                       else "")
    prepared = PreparedTask(task, prompt_format, rows, prompts, corrupted, signs,
                            answer_ids=torch.tensor(answer), cf_ids=torch.tensor(cf))
    keep = [i for i, r in enumerate(reasons) if not r]
    if len(keep) == len(rows):
        return prepared
    dropped = rows.assign(reason=reasons).loc[[bool(r) for r in reasons]]
    prepared = prepared.subset(keep)
    prepared.dropped = dropped
    return prepared


def score(lm: LoadedModel, prepared: PreparedTask, *, batch_size: int = BATCH_SIZE.default,
          progress: bool = False) -> tuple[Float[Tensor, "n_prompts vocab"], pd.DataFrame]:
    """Final-position logits and the per-prompt metric table (rows + all metrics)."""
    logits = final_logits(lm.model, prepared.clean_batch(lm.tokenizer), batch_size, progress)
    table = pd.concat([prepared.rows, prepared.metric_table(logits)], axis=1)
    return logits, table


# Which prompts count as known, for the mechanistic analyses (the `known` parameter).
KNOWN_CRITERIA = ("top1", "pairwise")


def check_known(criterion: str) -> str:
    """`criterion` when it is one of KNOWN_CRITERIA, else a one-line error naming it."""
    if criterion not in KNOWN_CRITERIA:
        raise UserError(f"known={criterion!r}: use 'top1' (the answer is the model's top token) "
                        "or 'pairwise' (the answer's logit is above the counterfactual's)")
    return criterion


def known_mask(table: pd.DataFrame, task: str, criterion: str = "top1") -> np.ndarray:
    """Which rows of a `score` table count as known. Cloze: `top1` = the answer is the top
    token (`correct`), `pairwise` = logit(answer) > logit(counterfactual) (`logit_diff` > 0).
    Yes/no has one meaning under both: the answer set matching the label outweighs the other
    (`correct`)."""
    check_known(criterion)
    if task == "cloze" and criterion == "pairwise":
        return (table["logit_diff"] > 0).to_numpy()
    return table["correct"].to_numpy().astype(bool)


def known_phrase(task: str, criterion: str = "top1") -> str:
    """How the kept prompts are described, naming the criterion: 'prompts the model …'."""
    if task == "cloze" and criterion == "pairwise":
        return "ranks above the counterfactual (`known=pairwise`)"
    if task == "cloze":
        return "answers correctly (the answer is its top token; `known=top1`)"
    if criterion == "pairwise":
        return "answers correctly (`known=pairwise`, for yes/no the same as top1)"
    return "answers correctly (`known=top1`)"


@dataclass
class KnownPrompts:
    """The "keep the prompts the model knows" filter of the mechanistic analyses."""

    task: PreparedTask  # the known prompts; every prompt when none is
    kept: pd.DataFrame  # dataset rows known (empty when none is)
    wrong: pd.DataFrame  # scored rows not known, with a `reason` column
    note: str  # a sentence saying what was kept, and by which criterion
    criterion: str = "top1"


def known_prompts(prepared: PreparedTask, table: pd.DataFrame,
                  criterion: str = "top1") -> KnownPrompts:
    """Split `prepared` by `known_mask` of its `score` table. Falls back to every prompt when
    none is known (at chance), and says so in `note`."""
    known = known_mask(table, prepared.task, criterion)
    pairwise_cloze = prepared.task == "cloze" and criterion == "pairwise"
    kept = table.loc[known, prepared.rows.columns]
    wrong = table.loc[~known].assign(
        reason="counterfactual ranked at or above the answer" if pairwise_cloze
        else "answered incorrectly")
    phrase = known_phrase(prepared.task, criterion)
    if known.sum() == 0:
        none = ("ranks no answer above its counterfactual" if pairwise_cloze
                else "answers no prompt correctly")
        note = (f"the model {none}, so the analyses below use all prompts: they describe how "
                "it computes a wrong answer")
        return KnownPrompts(prepared, kept, wrong, note, criterion)
    note = f"{int(known.sum())} of {len(known)} prompts the model {phrase}"
    return KnownPrompts(prepared.subset(torch.as_tensor(known.copy())), kept, wrong, note,
                        criterion)


def score_dataset(lm: LoadedModel, dataset: FactDataset, prompt_format: str = PROMPT_FORMAT.default,
                  answer_map: str | None = None, batch_size: int = BATCH_SIZE.default,
                  drop_multi_token: bool = False) -> pd.DataFrame:
    """One row per scorable dataset row: its columns plus every metric of the task, `metric`
    (the main one, positive = right) and `correct`."""
    prepared = prepare(lm, dataset, prompt_format, answer_map, drop_multi_token=drop_multi_token)
    _, table = score(lm, prepared, batch_size=batch_size)
    return table


def relations_of(prepared: PreparedTask) -> pd.Series | None:
    """Each prompt's relation, when the prompts span several relations."""
    relations = prepared.rows.get("relation")
    if relations is None or relations.nunique() < 2:
        return None
    return relations.reset_index(drop=True).astype(str)
