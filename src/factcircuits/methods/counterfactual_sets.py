"""Several counterfactual prompts per clean prompt, and one patchable task per draw.

One corrupted partner per prompt leaves open how much a map depends on the partner (Zhang &
Nanda 2023): here each clean prompt gets up to `n_counterfactuals` partners of its relation
(`data.counterfactuals.draw_counterfactuals`: draw 0 is the dataset's own corrupted prompt,
the others other subjects of the relation with a different answer, equal token length first,
seeded), and `counterfactual_tasks` turns draw d into an ordinary `PreparedTask` whose pairs
are patchable (equal token length), so every method that takes pairs runs unchanged on each
draw. Subjects come from the dataset and, for relations it shares with the shipped relation
set (Hernandez et al. 2024), from that set too.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from factcircuits.data.answers import first_token_id
from factcircuits.data.counterfactuals import draw_counterfactuals, subject_pool
from factcircuits.methods.evaluate import PreparedTask
from factcircuits.models import LoadedModel
from factcircuits.models.tokens import format_prompt
from factcircuits.results.parameter_declarations import SEED, whole

N_COUNTERFACTUALS = whole("n_counterfactuals", 3, "counterfactuals per prompt: same relation, "
                          "other answer, equal length first", 1)

#: the shipped relation set whose subjects widen each relation's pool
POOL_DATASET = "relations-cloze"


def default_pool(rows: pd.DataFrame) -> pd.DataFrame:
    """The subjects of the dataset's relations: the dataset's own (first, so its answers win)
    then the shipped relation set's, for the relations the dataset has."""
    from factcircuits.data.datasets import load_dataset

    own = subject_pool(rows)
    shipped = subject_pool(load_dataset(POOL_DATASET).rows)
    shipped = shipped[shipped["relation"].isin(set(own["relation"]))]
    pool = pd.concat([own, shipped], ignore_index=True)
    return pool.drop_duplicates(["relation", "subject"]).reset_index(drop=True)


def with_counterfactuals(lm: LoadedModel, prepared: PreparedTask,
                         n: int = N_COUNTERFACTUALS.default, seed: int = SEED.default,
                         pool: pd.DataFrame | None = None) -> PreparedTask:
    """`prepared` with up to `n` counterfactual prompts per prompt (formatted as its prompts)
    in `counterfactual_draws`; equal token length is judged with the model's tokenizer as
    `PreparedTask.pairs` encodes (`equal_length`)."""
    tokenizer, fmt = lm.tokenizer, prepared.prompt_format

    def formatted(text: str) -> str:
        return format_prompt(text, fmt, tokenizer, prepared.task)

    def token_length(text: str) -> int:
        return len(tokenizer(formatted(text), add_special_tokens=fmt != "chat")["input_ids"])

    rows = prepared.rows
    draws = draw_counterfactuals(rows, n, seed, default_pool(rows) if pool is None else pool,
                                 token_length)
    draws["corrupted_prompt"] = [formatted(t) for t in draws["corrupted_prompt"]]
    out = prepared.subset(list(range(len(prepared.prompts))))
    out.counterfactual_draws = draws
    return out


@dataclass
class DrawTask:
    """Draw `draw` of the counterfactuals as a task of patchable pairs: `task`'s row r is
    prompt `prompt_ids[r]` of the task the draws belong to."""

    draw: int
    prompt_ids: list[int]
    task: PreparedTask


def counterfactual_tasks(prepared: PreparedTask, tokenizer) -> list[DrawTask]:
    """One task per draw, of the prompts whose draw is patchable: equal token length and (cloze)
    a corrupted answer whose first token differs from the answer's, which becomes the metric's
    counterfactual token (the logit difference between the two runs' answers). Draws left
    with no prompt are left out; a task without `counterfactual_draws` is its own draw 0."""
    draws = prepared.counterfactual_draws
    if draws is None:
        ok = [i for i, p in enumerate(prepared.pair_problems(tokenizer)) if not p]
        return [DrawTask(0, ok, prepared.subset(ok))] if ok else []
    out = []
    for d, part in draws.groupby("draw", sort=True):
        ids = part["prompt_id"].tolist()
        task = prepared.subset(ids)
        task.corrupted_prompts = part["corrupted_prompt"].tolist()
        if task.task == "cloze":
            cf = [first_token_id(tokenizer, a)[0] for a in part["corrupted_answer"]]
            task.cf_ids = torch.tensor(cf)
        problems = task.pair_problems(tokenizer)
        keep = [r for r, p in enumerate(problems) if not p and (
            task.task != "cloze" or int(task.cf_ids[r]) != int(task.answer_ids[r]))]
        if keep:
            task = task.subset(keep)
            task.counterfactual_draws = None
            out.append(DrawTask(int(d), [ids[r] for r in keep], task))
    return out
