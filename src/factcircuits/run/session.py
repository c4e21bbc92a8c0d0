"""What every analysis notebook does first: load the model and dataset named by its parameters,
prepare the task, and keep the prompts the model knows (`known`) for the mechanistic analyses.

Notebooks call `open_session(**parameters)` and then only use the library and `Session`."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from factcircuits.data.datasets import load_dataset, of_relation
from factcircuits.errors import UserError
from factcircuits.methods.evaluate import (
    PreparedTask,
    check_known,
    known_prompts,
    prepare,
    score,
)
from factcircuits.methods.sampling import per_relation_sample, sample_note
from factcircuits.models import LoadedModel, load_model
from factcircuits.results import parameter_declarations as declared
from factcircuits.run.folders import save_model_provenance

DEFAULT_DATASET_FOR_TASK = {"cloze": "paris-cloze", "yesno": "paris-yesno"}
_MODELS: dict[tuple, LoadedModel] = {}  # one load per kernel, whatever the notebook asks


@dataclass
class Session:
    lm: LoadedModel
    dataset: Any  # FactDataset
    task: PreparedTask  # every usable row (capped by n_prompts)
    run_dir: Path
    batch_size: int
    known_criterion: str = declared.KNOWN_CRITERION.default  # which prompts `known` keeps
    seed: int = declared.SEED.default  # noise draws, bootstrap resamples, per-relation samples
    per_relation: int = declared.PER_RELATION.default  # > 0: at most this many per relation

    @property
    def model(self):
        return self.lm.model

    @property
    def tokenizer(self):
        return self.lm.tokenizer

    def score(self, prepared: PreparedTask | None = None, progress: bool = False):
        return score(self.lm, prepared or self.task, batch_size=self.batch_size,
                     progress=progress)

    def known(self) -> tuple[PreparedTask, str]:
        """The prompts the model knows by the session's criterion (`known_criterion`: top1 =
        the answer is the top token, pairwise = above the counterfactual), and a sentence
        saying what was kept. Falls back to every prompt when none is known (at chance)."""
        _, table = self.score()
        known = known_prompts(self.task, table, self.known_criterion)
        relations = known.task.rows.get("relation")
        if self.per_relation <= 0 or relations is None or len(known.task.prompts) == 0:
            return known.task, known.note
        keep = per_relation_sample(relations, self.per_relation, self.seed)
        note = f"{known.note}, {sample_note(relations, keep, self.per_relation)}"
        return known.task.subset(torch.as_tensor(keep)), note

    def patchable(self, prepared: PreparedTask) -> tuple[PreparedTask, pd.DataFrame]:
        return patchable(self.tokenizer, prepared)


def patchable(tokenizer, prepared: PreparedTask) -> tuple[PreparedTask, pd.DataFrame]:
    """Rows whose corrupted prompt has the same token length as the clean one (activation
    patching compares the same positions); the others are returned with the reason."""
    reasons = prepared.pair_problems(tokenizer) if prepared.prompts else []  # none to encode
    ok = torch.tensor([not r for r in reasons], dtype=torch.bool)
    dropped = prepared.rows.assign(reason=reasons).loc[(~ok).numpy()]
    return prepared.subset(ok), dropped


def open_session(
        model: str = declared.MODEL.default,
        dataset: str = declared.DATASET.default,
        task: str = declared.TASK.default,
        prompt_format: str = declared.PROMPT_FORMAT.default,
        answer_map: str = declared.ANSWER_MAP.default,
        device: str = declared.DEVICE.default,
        dtype: str = declared.DTYPE.default,
        batch_size: int = declared.BATCH_SIZE.default,
        n_prompts: int = declared.N_PROMPTS.default,
        seed: int = declared.SEED.default,
        run_dir: str = ".", drop_multi_token_answers: bool = True,
        known: str = declared.KNOWN_CRITERION.default,
        per_relation: int = declared.PER_RELATION.default,
        relation: str = declared.RELATION.default,
        prepend_bos: str = declared.PREPEND_BOS.default,
        **_ignored: Any) -> Session:
    """The core parameters (declared in `results.parameter_declarations`, defaults there):
    `dataset=""` means the default dataset of `task`; `relation` keeps one relation's rows;
    `known` picks the prompts the mechanistic analyses keep (`Session.known`); `prepend_bos`
    the model's beginning-of-sequence token (`models.tokens.with_bos_choice`). Extra
    notebook-specific parameters are ignored here; `drop_multi_token_answers` is a library
    option, not a run parameter (the run's preflight refuses such answers on request)."""
    if task not in DEFAULT_DATASET_FOR_TASK:
        raise UserError(f"task={task!r}: use 'cloze' or 'yesno'")
    check_known(known)
    seed_everything(seed)
    key = (model, device, dtype or "", prepend_bos)
    if key not in _MODELS:
        _MODELS[key] = load_model(model, device=device, dtype=dtype or None,
                                  prepend_bos=prepend_bos)
    lm = _MODELS[key]
    data = analysed_dataset(dataset, task, relation)
    if data.task != task:
        raise UserError(f"dataset {data.name!r} is a {data.task} dataset but task={task!r}: "
                        f"pass task={data.task!r} or a {task} dataset")
    prepared = prepare(lm, data, prompt_format, answer_map, n_prompts or None,
                       drop_multi_token=drop_multi_token_answers)
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_model_provenance(out, lm.provenance)
    return Session(lm, data, prepared, out, batch_size, known, int(seed), int(per_relation))


def analysed_dataset(dataset: str, task: str, relation: str = declared.RELATION.default):
    """The dataset a run analyses: `dataset` ("" is the task's default), one `relation`'s
    rows when set."""
    return of_relation(load_dataset(dataset or DEFAULT_DATASET_FOR_TASK[task]), relation)


def every_prompt(lm: LoadedModel, options) -> PreparedTask:
    """A run's every usable prompt (its session's `task`, before the `known` filter), from
    its core parameters (`results.summary.Options`)."""
    data = analysed_dataset(options["dataset"], options["task"], options["relation"])
    return prepare(lm, data, options["prompt_format"], options["answer_map"],
                   options["n_prompts"] or None, drop_multi_token=True)


def open_session_from(namespace: dict[str, Any]) -> Session:
    """`open_session` with the standard parameters taken from a notebook's namespace
    (`open_session_from(globals())` after the papermill parameters cell)."""
    import inspect

    names = [n for n in inspect.signature(open_session).parameters if n != "_ignored"]
    return open_session(**{n: namespace[n] for n in names if n in namespace})


def start_analysis(namespace: dict[str, Any]) -> tuple[Session, PreparedTask, str]:
    """What a mechanistic-analysis notebook does first, after its parameters cell: set up the
    notebook display, open the session from its parameters (`open_session_from`) and keep the
    prompts the model knows (the `known` parameter). Returns (session, those prompts, a
    sentence saying what was kept)."""
    from factcircuits.run.display import init_notebook

    init_notebook()
    session = open_session_from(namespace)
    prepared, note = session.known()
    return session, prepared, note


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
