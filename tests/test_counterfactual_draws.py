"""Several counterfactuals per prompt: draws are seeded, within the relation, with a different
answer, equal token length first; each draw becomes a task of patchable pairs."""

from __future__ import annotations

import pandas as pd
import pytest

from factcircuits.data.counterfactuals import draw_counterfactuals, subject_pool
from factcircuits.data.datasets import load_dataset
from factcircuits.methods.counterfactual_sets import (
    counterfactual_tasks,
    default_pool,
    with_counterfactuals,
)
from factcircuits.methods.evaluate import prepare

# A relation with many subjects: one-word and two-word names, so that a word count (the token
# length below) separates equal-length partners from the others. Two share the answer " X".
CITIES = {"Alpha": " A", "Beta": " B", "Gamma": " C", "Delta": " D", "Epsilon": " E",
          "Zeta": " X", "Eta": " X", "New Theta": " T", "Old Iota": " I", "Big Kappa": " K"}


def _rows() -> pd.DataFrame:
    rows = [{"task": "cloze", "prompt": f"The capital of {s} is", "label": True, "answer": a,
             "counterfactual": " A" if a != " A" else " B", "subject": s,
             "relation": "capital", "corrupted_prompt": "", "corrupted_subject": "",
             "clue": ""} for s, a in CITIES.items()]
    rows.append({"task": "cloze", "prompt": "Bread comes from Gaul", "label": True,
                 "answer": " G", "counterfactual": " A", "subject": "Bread",
                 "relation": "food", "corrupted_prompt": "", "corrupted_subject": "",
                 "clue": ""})
    return pd.DataFrame(rows)


def word_count(text: str) -> int:
    return len(text.split())


def test_draws_are_seeded_within_relation_with_a_different_answer_equal_length_first():
    rows = _rows()
    draws = draw_counterfactuals(rows, 3, seed=7, token_length=word_count)
    again = draw_counterfactuals(rows, 3, seed=7, token_length=word_count)
    pd.testing.assert_frame_equal(draws, again)
    answer_of = dict(zip(rows["subject"], rows["answer"]))
    for i, part in draws.groupby("prompt_id"):
        row = rows.iloc[i]
        assert list(part["draw"]) == list(range(len(part)))
        assert len(set(part["corrupted_subject"])) == len(part)
        for subject, answer in zip(part["corrupted_subject"], part["corrupted_answer"]):
            assert subject != row["subject"]
            assert answer_of[subject] == answer  # a subject of the same relation, its answer
            assert answer.strip() != row["answer"].strip()
        # "Zeta" and "Eta" share " X": neither is drawn for the other
        if row["subject"] in ("Zeta", "Eta"):
            assert not set(part["corrupted_subject"]) & {"Zeta", "Eta"}
        # seven one-word subjects: a one-word subject's draws all have its prompt's length
        same = [word_count(p) == word_count(row["prompt"]) for p in part["corrupted_prompt"]]
        assert same == list(part["equal_length"])
        if " " not in row["subject"]:
            assert all(same)
    # the food relation has one subject: nothing to draw from, nothing drawn
    assert 10 not in set(draws["prompt_id"])
    assert draws.groupby("prompt_id").size().min() == 3
    # another seed draws other partners somewhere
    other = draw_counterfactuals(rows, 3, seed=8, token_length=word_count)
    assert list(other["corrupted_subject"]) != list(draws["corrupted_subject"])


def test_a_rows_draws_do_not_depend_on_the_other_rows():
    rows = _rows()
    pool = subject_pool(rows)
    alone = draw_counterfactuals(rows.iloc[[3]], 3, seed=1, pool=pool, token_length=word_count)
    full = draw_counterfactuals(rows, 3, seed=1, pool=pool, token_length=word_count)
    # a row's rng is seeded by its position: the same position gives the same draws
    first = draw_counterfactuals(rows.iloc[:4], 3, seed=1, pool=pool, token_length=word_count)
    pd.testing.assert_frame_equal(first[first["prompt_id"] == 3].reset_index(drop=True),
                                  full[full["prompt_id"] == 3].reset_index(drop=True))
    assert set(alone["corrupted_subject"]) <= set(pool["subject"])


def test_unequal_lengths_only_when_equal_ones_run_out():
    rows = _rows()
    two_words = rows.index[rows["subject"] == "New Theta"][0]
    draws = draw_counterfactuals(rows, 4, seed=0, token_length=word_count)
    part = draws[draws["prompt_id"] == two_words]
    # two other two-word subjects exist: they come first, then one-word ones
    assert list(part["equal_length"]) == [True, True, False, False]
    assert set(part["corrupted_subject"][:2]) == {"Old Iota", "Big Kappa"}


def test_the_datasets_own_corrupted_prompt_is_draw_zero():
    rows = load_dataset("paris-cloze").rows
    draws = draw_counterfactuals(rows, 3, seed=0)
    zero = draws[draws["draw"] == 0].set_index("prompt_id")
    assert list(zero["corrupted_prompt"]) == list(rows["corrupted_prompt"])
    assert list(zero["corrupted_answer"]) == list(rows["counterfactual"])
    assert draws["equal_length"].isna().all()  # no tokenizer given: unknown


@pytest.mark.usefixtures("one_thread")
def test_each_draw_is_a_task_of_patchable_pairs(tiny_lm):
    prepared = prepare(tiny_lm, load_dataset("paris-cloze"))
    rows = prepared.rows
    pool = default_pool(rows)
    # the shipped relation set widens the relations the dataset has, and only those
    assert set(pool["relation"]) == set(rows["relation"].str.strip())
    assert len(pool) > len(subject_pool(rows))
    many = with_counterfactuals(tiny_lm, prepared, 3, seed=0)
    tasks = counterfactual_tasks(many, tiny_lm.tokenizer)
    assert [t.draw for t in tasks] == sorted({t.draw for t in tasks})
    assert len(tasks) >= 2
    for t in tasks:
        t.task.pairs(tiny_lm.tokenizer)  # raises unless every pair has equal token length
        draws = many.counterfactual_draws
        for r, i in enumerate(t.prompt_ids):
            row = draws[(draws["prompt_id"] == i) & (draws["draw"] == t.draw)].iloc[0]
            assert t.task.prompts[r] == prepared.prompts[i]
            assert t.task.corrupted_prompts[r] == row["corrupted_prompt"]
            want = tiny_lm.tokenizer.encode(row["corrupted_answer"], add_special_tokens=False)[0]
            assert int(t.task.cf_ids[r]) == want != int(t.task.answer_ids[r])
    # draw 0 is the dataset's pairing: the prompts `pairs` accepts today, same metric
    zero = tasks[0]
    assert zero.draw == 0
    ok = [i for i, p in enumerate(prepared.pair_problems(tiny_lm.tokenizer)) if not p]
    assert zero.prompt_ids == ok
    assert zero.task.cf_ids.tolist() == prepared.cf_ids[ok].tolist()


@pytest.mark.usefixtures("one_thread")
def test_maps_over_draws_agree_with_patching_each_draw(tiny_lm):
    from factcircuits.methods import patching as P
    from factcircuits.methods.counterfactual_spread import (
        patch_over_counterfactuals,
        sensitivity_sentence,
    )

    many = with_counterfactuals(tiny_lm, prepare(tiny_lm, load_dataset("paris-cloze")), 3,
                                seed=0)
    spread = patch_over_counterfactuals(tiny_lm, many, ("resid_pre", "mlp_out"))
    tasks = counterfactual_tasks(many, tiny_lm.tokenizer)
    assert sorted(spread.n_pairs) == [t.draw for t in tasks]
    # draw 0's map is today's map of the dataset's own pairs, cell for cell
    zero = tasks[0].task
    long = P.tidy(P.patch(tiny_lm, zero, "mlp_out", progress=False), P.position_table(tiny_lm,
                                                                                      zero))
    want = P.by_class(long, "token_class").set_index(["layer", "token_class"])["normalized"]
    got = spread.classes[(spread.classes["draw"] == 0) & (spread.classes["component"] ==
                                                          "mlp_out")]
    got = got.set_index(["layer", "token_class"])["normalized"]
    pd.testing.assert_series_equal(got.sort_index(), want.sort_index(), atol=1e-5)
    # the averaged map lies between its draws; a peak's shift is the spread of its layers
    avg = spread.averaged
    assert ((avg["low"] <= avg["mean"] + 1e-9) & (avg["mean"] <= avg["high"] + 1e-9)).all()
    layers = spread.layers("mlp_out_subject_last")
    assert len(layers) == len(tasks) >= 2
    assert min(layers) >= 1  # the layer-0 MLP is left out, as in the headline
    assert spread.shift("mlp_out_subject_last") == max(layers) - min(layers)
    sentence = sensitivity_sentence(spread, "mlp_out_subject_last", "the MLP output")
    assert f"moves by at most {max(layers) - min(layers)} layer" in sentence
