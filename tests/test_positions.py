"""Token positions of prompts: subject tokens from character offsets, relation tokens, classes."""

from __future__ import annotations

import pytest

from factcircuits.errors import UserError
from factcircuits.methods import positions as P
from factcircuits.models.tiny import tiny_tokenizer
from factcircuits.models.tokens import encode, format_prompt


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_subject_positions_multi_token(tok):
    prompt = "The Eiffel Tower is located in the city of"
    pos = P.subject_token_positions(tok, prompt, "Eiffel Tower")
    strs = [tok.decode([t]) for t in encode(tok, [prompt]).tokens[0].tolist()]
    assert "".join(strs[i] for i in pos).strip() == "Eiffel Tower"
    assert strs[0] == "<bos>" and 0 not in pos


def test_classes_and_relation(tok):
    prompt = "The Eiffel Tower is located in the city of"
    pp = P.prompt_positions(tok, prompt, "Eiffel Tower", "raw", prompt)
    assert pp.last == len(encode(tok, [prompt]).tokens[0]) - 1
    assert pp.classes[pp.subject[0]] == "subject_first"
    assert pp.classes[pp.subject[-1]] == "subject_last"
    assert pp.classes[pp.subject[-1] + 1] == "first_subsequent"
    assert pp.classes[-1] == "last" and pp.classes[0] == "prefix"
    # relation = question tokens that are neither subject nor last; BOS excluded
    assert 0 not in pp.relation and pp.last not in pp.relation
    assert not set(pp.relation) & set(pp.subject)
    assert len(pp.relation) + len(pp.subject) + 1 == len(pp.classes) - 1


def test_single_token_subject_is_last_class(tok):
    prompt = "Is Paris the capital of France?\n"
    pp = P.prompt_positions(tok, prompt, "France", "raw", prompt)
    assert len(pp.subject) == 1 and pp.classes[pp.subject[0]] == "subject_last"


def test_fewshot_prefix_mention_is_skipped(tok):
    question = "Is Berlin in Spain?\n"  # the few-shot prefix mentions Berlin too
    prompt = format_prompt(question, "fewshot", tok, "yesno")
    pp = P.prompt_positions(tok, prompt, "Berlin", "fewshot", question)
    n = len(encode(tok, [prompt], "fewshot").tokens[0])
    assert pp.subject[0] > n - 8  # the question's Berlin, not the prefix's
    assert min(pp.relation) > n - 8  # relation tokens are inside the question only


def test_missing_subject_is_an_error(tok):
    with pytest.raises(UserError, match="does not occur"):
        P.subject_token_positions(tok, "The capital of France is", "Germany")


def test_position_mask(tok):
    prompts = ["The capital of France is", "The Eiffel Tower is located in the city of"]
    subjects = ["France", "Eiffel Tower"]
    pps = [P.prompt_positions(tok, p, s, "raw", p) for p, s in zip(prompts, subjects)]
    batch = encode(tok, prompts)
    mask = P.position_mask(pps, "last", batch.tokens.shape[1])
    assert mask.nonzero()[:, 1].tolist() == batch.last_index.tolist()
    sub = P.position_mask(pps, "subject", batch.tokens.shape[1])
    assert sub.sum(1).tolist() == [len(p.subject) for p in pps]
