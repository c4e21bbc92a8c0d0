"""The beginning-of-sequence token per model: "auto" as the tokenizer does, "on" exactly one BOS
in front of every prompt (chat templates included, with or without their own BOS), "off"
none; the choice reaches every tokenization and the provenance."""

from __future__ import annotations

import copy

import pytest

from factcircuits.errors import UserError
from factcircuits.models.tiny import tiny_tokenizer
from factcircuits.models.tokens import adds_bos, encode, format_prompt, with_bos_choice

PROMPTS = ["The capital of France is", "Paris is located in the country of"]
CHAT_WITH_BOS = ("{{ bos_token }}{% for m in messages %}<|user|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")
CHAT_WITHOUT_BOS = CHAT_WITH_BOS.removeprefix("{{ bos_token }}")


def _tokenizer(template: str | None, adds: bool):
    """The tiny tokenizer (which adds BOS) or a copy that does not, with a chat template."""
    tok = copy.deepcopy(tiny_tokenizer()) if adds else with_bos_choice(tiny_tokenizer(), "off")
    if not adds:
        del tok.factcircuits_bos  # a tokenizer that adds no BOS of its own, choice unset
    tok.chat_template = template
    return tok


def _bos_counts(tok, fmt: str) -> list[tuple[int, bool]]:
    """Per prompt: how many BOS tokens its encoding holds, and whether it starts with one."""
    texts = [format_prompt(p, fmt, tok, "cloze") for p in PROMPTS]
    batch = encode(tok, texts, fmt)
    out = []
    for row, n in zip(batch.tokens, batch.lengths):
        ids = row[:n].tolist()
        out.append((ids.count(tok.bos_token_id), ids[0] == tok.bos_token_id))
    return out


@pytest.mark.parametrize("fmt", ["raw", "fewshot", "chat"])
@pytest.mark.parametrize("template", [CHAT_WITH_BOS, CHAT_WITHOUT_BOS])
@pytest.mark.parametrize("adds", [True, False])
def test_on_prepends_exactly_one_bos_and_off_none(fmt, template, adds):
    base = _tokenizer(template, adds)
    assert adds_bos(base) == adds
    assert _bos_counts(with_bos_choice(base, "on"), fmt) == [(1, True)] * len(PROMPTS)
    assert _bos_counts(with_bos_choice(base, "off"), fmt) == [(0, False)] * len(PROMPTS)
    # auto: what the tokenizer (raw, fewshot) or the chat template does, unchanged
    auto = with_bos_choice(base, "auto")
    assert auto is base
    bos = (template == CHAT_WITH_BOS) if fmt == "chat" else adds
    assert _bos_counts(auto, fmt) == [(int(bos), bos)] * len(PROMPTS)


def test_the_choice_leaves_the_rest_of_the_encoding_alone():
    base = tiny_tokenizer()
    on, off = with_bos_choice(base, "on"), with_bos_choice(base, "off")
    for text in PROMPTS:
        ids = base(text)["input_ids"]
        assert on(text)["input_ids"] == ids
        assert off(text)["input_ids"] == ids[1:]
    assert adds_bos(base), "the shared tiny tokenizer itself is never changed"


def test_unknown_choice_and_missing_bos_are_refused():
    with pytest.raises(UserError, match="prepend_bos"):
        with_bos_choice(tiny_tokenizer(), "sometimes")
    tok = copy.deepcopy(tiny_tokenizer())
    tok.bos_token = None
    with pytest.raises(UserError, match="no BOS token"):
        with_bos_choice(tok, "on")


@pytest.mark.usefixtures("one_thread")
def test_load_model_follows_the_choice_and_records_it():
    from factcircuits.data.datasets import load_dataset
    from factcircuits.methods.evaluate import prepare
    from factcircuits.methods.positions import task_positions
    from factcircuits.models import load_model

    auto = load_model("tiny")
    assert auto.provenance["bos_choice"] == "auto" and auto.provenance["prepend_bos"] is True
    lm = load_model("tiny", prepend_bos="off")
    assert lm.provenance["bos_choice"] == "off" and lm.provenance["prepend_bos"] is False
    assert lm.model.cfg.default_prepend_bos is False
    prepared = prepare(lm, load_dataset("paris-cloze"))
    batch = prepared.clean_batch(lm.tokenizer)
    assert int((batch.tokens == lm.tokenizer.bos_token_id).sum()) == 0
    # token positions (subject, relation, last) are read from the same tokenization
    positions = task_positions(prepared, lm.tokenizer)
    assert [len(p.tokens) for p in positions] == batch.lengths.tolist()
    with_bos = prepare(auto, load_dataset("paris-cloze")).clean_batch(auto.tokenizer)
    assert (with_bos.lengths - batch.lengths).tolist() == [1] * len(batch.lengths)
