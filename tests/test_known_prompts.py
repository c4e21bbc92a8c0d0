"""The one "keep the prompts the model knows" filter (task_check and Session.known), under
both criteria of the `known` parameter."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from factcircuits.data.datasets import load_dataset
from factcircuits.errors import UserError
from factcircuits.methods.evaluate import check_known, known_mask, known_prompts, prepare
from factcircuits.methods.metrics import cloze_metrics

# Five-token vocabulary; token 4 plays " the". Answer = token 0, counterfactual = token 1.
# row 0: answer on top                          -> top1 yes, pairwise yes
# row 1: " the" first, answer second, cf third  -> top1 no,  pairwise yes (gemma3's case)
# row 2: cf above the answer                    -> top1 no,  pairwise no
# row 3: answer and cf tied, " the" first       -> top1 no,  pairwise no (a tie is not above)
LOGITS = torch.tensor([[3.0, 1.0, 0.0, 0.0, 2.0],
                       [2.0, 1.5, 0.0, 0.0, 4.0],
                       [1.0, 2.0, 0.0, 0.0, 0.5],
                       [1.0, 1.0, 0.0, 0.0, 3.0]])
ANSWER, CF = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)


def test_top1_and_pairwise_differ_where_an_article_comes_first():
    table = cloze_metrics(LOGITS, ANSWER, CF)
    assert known_mask(table, "cloze", "top1").tolist() == [True, False, False, False]
    assert known_mask(table, "cloze", "pairwise").tolist() == [True, True, False, False]
    # yes/no keeps its one meaning (the label's answer set outweighs the other) under both
    yesno = pd.DataFrame({"correct": [True, False, True], "log_odds": [1.0, -2.0, 0.5]})
    for criterion in ("top1", "pairwise"):
        assert known_mask(yesno, "yesno", criterion).tolist() == [True, False, True]


def test_pairwise_keeps_the_rows_above_the_counterfactual_and_says_so(tiny_lm):
    prepared = prepare(tiny_lm, load_dataset("paris-cloze")).subset([0, 1, 2, 3])
    table = pd.concat([prepared.rows, cloze_metrics(LOGITS, ANSWER, CF)], axis=1)
    known = known_prompts(prepared, table, "pairwise")
    assert known.task.prompts == prepared.prompts[:2]
    assert known.wrong["prompt"].tolist() == prepared.rows["prompt"].iloc[[2, 3]].tolist()
    assert set(known.wrong["reason"]) == {"counterfactual ranked at or above the answer"}
    assert known.note == ("2 of 4 prompts the model ranks above the counterfactual "
                          "(`known=pairwise`)")
    top1 = known_prompts(prepared, table, "top1")
    assert top1.task.prompts == prepared.prompts[:1]
    assert top1.note == ("1 of 4 prompts the model answers correctly (the answer is its top "
                         "token; `known=top1`)")

    none = known_prompts(prepared, table.assign(logit_diff=-1.0), "pairwise")
    assert none.task.prompts == prepared.prompts and none.kept.empty
    assert "ranks no answer above its counterfactual" in none.note


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
    assert known.note == ("2 of 4 prompts the model answers correctly (the answer is its top "
                          "token; `known=top1`)")

    none = known_prompts(prepared, table.assign(correct=False))
    assert none.task.prompts == prepared.prompts  # every prompt, and the note says why
    assert "answers no prompt correctly" in none.note and none.kept.empty


def test_an_unknown_criterion_is_one_line_naming_it_and_the_accepted_ones():
    with pytest.raises(UserError) as err:
        check_known("top-1")
    message = str(err.value)
    assert "\n" not in message and "known='top-1'" in message
    assert "'top1'" in message and "'pairwise'" in message
