"""The one "keep the prompts the model gets right" filter (task_check and Session.known)."""

from __future__ import annotations

import pandas as pd
import torch

from factcircuits.data.datasets import load_dataset
from factcircuits.methods.evaluate import known_prompts, prepare


def test_keeps_correct_rows_and_falls_back_to_all(tiny_lm):
    prepared = prepare(tiny_lm, load_dataset("paris-cloze")).subset([0, 1, 2, 3])
    table = pd.concat([prepared.rows, pd.DataFrame({"correct": [True, False, False, True]})],
                      axis=1)
    known = known_prompts(prepared, table)
    assert known.task.prompts == [prepared.prompts[0], prepared.prompts[3]]
    assert torch.equal(known.task.answer_ids, prepared.answer_ids[[0, 3]])
    assert known.kept["prompt"].tolist() == prepared.rows["prompt"].iloc[[0, 3]].tolist()
    assert known.wrong["prompt"].tolist() == prepared.rows["prompt"].iloc[[1, 2]].tolist()
    assert set(known.wrong["reason"]) == {"answered incorrectly"}
    assert known.note == "2 of 4 prompts the model answers correctly"

    none = known_prompts(prepared, table.assign(correct=False))
    assert none.task.prompts == prepared.prompts  # every prompt, and the note says why
    assert "answers no prompt correctly" in none.note and none.kept.empty
