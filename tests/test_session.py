"""Session.known and Session.patchable against hand-made expectations."""

from __future__ import annotations

import torch

from factcircuits.data.datasets import load_dataset
from factcircuits.methods.evaluate import prepare
from factcircuits.run.session import Session


def _session(lm, prepared, tmp_path):
    return Session(lm, None, prepared, tmp_path, batch_size=3)


def _own_top_token(lm, prompt):
    ids = lm.tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return int(lm.model(ids)[0, -1].argmax())


def test_known_keeps_exactly_the_prompts_whose_answer_is_the_top_token(tiny_lm, tmp_path):
    """Answers set by hand: prompts 0 and 2 get the model's own top token (one prompt at a
    time, unpadded), 1 and 3 another token, so exactly 0 and 2 are answered correctly."""
    prepared = prepare(tiny_lm, load_dataset("paris-cloze")).subset([0, 1, 2, 3])
    top = [_own_top_token(tiny_lm, p) for p in prepared.prompts]
    vocab = tiny_lm.model.cfg.d_vocab
    prepared.answer_ids = torch.tensor([top[0], (top[1] + 1) % vocab, top[2],
                                        (top[3] + 1) % vocab])
    prepared.cf_ids = torch.tensor([(t + 2) % vocab for t in top])
    kept, note = _session(tiny_lm, prepared, tmp_path).known()
    assert kept.prompts == [prepared.prompts[0], prepared.prompts[2]]
    assert kept.answer_ids.tolist() == [top[0], top[2]]
    assert note == ("2 of 4 prompts the model answers correctly (the answer is its top "
                    "token; `known=top1`)")

    prepared.answer_ids = torch.tensor([(t + 1) % vocab for t in top])  # none right
    kept, note = _session(tiny_lm, prepared, tmp_path).known()
    assert kept.prompts == prepared.prompts and "no prompt" in note


def test_patchable_keeps_equal_length_pairs_with_the_reason_for_the_rest(tiny_lm, tmp_path):
    prepared = prepare(tiny_lm, load_dataset("paris-cloze")).subset([0, 1, 2])
    clean = prepared.prompts
    prepared.corrupted_prompts = [clean[0], "", clean[2] + " and more words here"]
    pairs, dropped = _session(tiny_lm, prepared, tmp_path).patchable(prepared)
    assert pairs.prompts == [clean[0]]
    n_clean = len(tiny_lm.tokenizer(clean[2])["input_ids"])
    n_corrupt = len(tiny_lm.tokenizer(prepared.corrupted_prompts[2])["input_ids"])
    assert n_corrupt > n_clean
    assert dropped["reason"].tolist() == [
        "no corrupted prompt",
        f"token lengths differ ({n_clean} clean vs {n_corrupt} corrupted)"]
    assert dropped["prompt"].tolist() == prepared.rows["prompt"].iloc[[1, 2]].tolist()


def _own_ranking(lm, prompt):
    ids = lm.tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return lm.model(ids)[0, -1].argsort(descending=True).tolist()


def test_pairwise_known_keeps_a_second_ranked_answer_above_its_counterfactual(tiny_lm, tmp_path):
    """Prompt 0: answer = the model's 2nd token, counterfactual its last (kept by pairwise,
    not by top1); prompt 1: the reverse (kept by neither)."""
    prepared = prepare(tiny_lm, load_dataset("paris-cloze")).subset([0, 1])
    ranks = [_own_ranking(tiny_lm, p) for p in prepared.prompts]
    prepared.answer_ids = torch.tensor([ranks[0][1], ranks[1][-1]])
    prepared.cf_ids = torch.tensor([ranks[0][-1], ranks[1][1]])
    session = _session(tiny_lm, prepared, tmp_path)
    session.known_criterion = "pairwise"
    kept, note = session.known()
    assert kept.prompts == prepared.prompts[:1]
    assert note == ("1 of 2 prompts the model ranks above the counterfactual "
                    "(`known=pairwise`)")
    session.known_criterion = "top1"
    kept, note = session.known()
    assert kept.prompts == prepared.prompts and "no prompt" in note  # falls back to all


def test_an_empty_subset_is_an_empty_task(tiny_lm):
    """`subset([])` (every row dropped) gives a task of no prompts, not an IndexError."""
    from factcircuits.data.datasets import load_dataset
    from factcircuits.methods.evaluate import prepare

    prepared = prepare(tiny_lm, load_dataset("paris-cloze"))
    empty = prepared.subset([])
    assert empty.prompts == [] and len(empty.rows) == 0 and len(empty.signs) == 0
    assert len(prepared.subset([False] * len(prepared.prompts)).prompts) == 0
