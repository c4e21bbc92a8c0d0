"""Attribute rate (Geva et al. 2023): the objects a dataset pairs with each subject; a tiny
model with attribute tokens planted at the last subject token reads them there (rate 0.5 when
one of two is planted) and the controls do not; an unplanted model reads ~0; the last layer's
lens is the model's own prediction at that position, on every tiny family."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from factcircuits.data.datasets import load_dataset
from factcircuits.methods import attribute_rate as AR
from factcircuits.methods.evaluate import prepare
from factcircuits.methods.positions import task_positions
from factcircuits.models.tiny import FAMILIES, tiny_model
from factcircuits.models.tokens import encode

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one thread

# Two objects per subject of paris-cloze, every first token distinct (single tokens of the
# tiny vocabulary); only the first of each pair is planted.
OBJECTS = {"France": ("Rome", "Berlin"), "Eiffel Tower": ("Madrid", "Italy"),
           "Louvre": ("Germany", "Spain"), "Notre Dame Cathedral": ("museum", "river"),
           "Seine": ("language", "currency"), "Paris": ("official", "located"),
           "Baguette": ("country", "flows")}


def test_subject_objects_reads_cloze_answers_and_true_yesno_clues():
    rows = pd.DataFrame([
        {"task": "cloze", "subject": "France", "answer": " Paris", "label": True, "clue": ""},
        {"task": "cloze", "subject": "France", "answer": " Paris", "label": True, "clue": ""},
        {"task": "cloze", "subject": "France", "answer": " Euro", "label": True, "clue": ""},
        {"task": "yesno", "subject": "Peru", "answer": "", "label": True,
         "clue": "object: Lima"},
        {"task": "yesno", "subject": "Peru", "answer": "", "label": False,
         "clue": "object: Paris"},  # a false statement's object is no attribute
    ])
    assert AR.subject_objects(rows) == {"France": ["Paris", "Euro"], "Peru": ["Lima"]}


def one_prompt_per_subject(lm):
    prepared = prepare(lm, load_dataset("paris-cloze"))
    first = prepared.rows.reset_index().groupby("subject")["index"].min().sort_values()
    return prepared.subset(first.to_list())


def planted_rows():
    return pd.DataFrame([{"task": "cloze", "subject": s, "answer": " " + o, "label": True,
                          "clue": ""} for s, objs in OBJECTS.items() for o in objs])


@torch.no_grad()
def final_hidden(lm, prepared, positions):
    """The last hidden state (after the final norm: what lm_head reads) at one position per
    prompt, from the transformers model itself."""
    hf = lm.model.original_model
    rows = []
    for prompt, pos in zip(prepared.prompts, positions):
        ids = encode(lm.tokenizer, [prompt]).tokens
        rows.append(hf.model(ids).last_hidden_state[0, pos].float())
    return torch.stack(rows)


@pytest.fixture(scope="module")
def planted():
    """A tiny Llama whose unembedding gives each subject's first object token a logit of +50
    at that subject's last token and −50 at every other subject's last token and at every
    prompt's first relation token, and each second object token −50 everywhere (solved
    exactly: 14 positions < d_model)."""
    lm = tiny_model(seed=11)
    prepared = one_prompt_per_subject(lm)
    rows = planted_rows()
    tokens = AR.attribute_tokens(lm.tokenizer, rows)
    assert len({t for ids in tokens.values() for t in ids}) == 2 * len(OBJECTS)
    positions = task_positions(prepared, lm.tokenizer)
    subject_last = [p.of_class("subject_last")[0] for p in positions]
    relation = [p.relation[0] for p in positions]
    hidden = torch.cat([final_hidden(lm, prepared, subject_last),
                        final_hidden(lm, prepared, relation)])  # [2n, d]
    n = len(prepared.prompts)
    target = torch.full((2 * n, n), -50.0)
    target[torch.arange(n), torch.arange(n)] = 50.0
    columns = torch.linalg.pinv(hidden) @ target  # [d, n]
    never = torch.linalg.pinv(hidden) @ torch.full((2 * n,), -50.0)
    weight = lm.model.original_model.lm_head.weight
    with torch.no_grad():
        for i, subject in enumerate(prepared.rows["subject"]):
            weight[tokens[subject][0]] = columns[:, i]
            weight[tokens[subject][1]] = never
    return lm, prepared, rows


def test_planted_attribute_is_read_at_the_last_subject_token(planted):
    lm, prepared, rows = planted
    rate = AR.attribute_rate(lm, prepared, rows, k=3)
    last = lm.model.cfg.n_layers - 1
    assert np.allclose(rate.per_prompt("subject")[:, last], 0.5)  # one planted of two
    assert np.allclose(rate.per_prompt("other_subjects")[:, last], 0.0)
    assert np.allclose(rate.per_prompt("first_relation")[:, last], 0.0)
    h = rate.headline(seed=0)
    # the residual of a 3-layer model is close to its final state from layer 0 on: every layer
    # reads the planted token, and the peak is the first of them
    assert h["attribute_rate_peak"] == 0.5 and h["attribute_rate_peak_ci"] == [0.5, 0.5]
    control = rate.curves().set_index(["read", "layer"])["rate"]
    at = h["attribute_rate_peak_layer"]
    assert h["attribute_rate_control"] == max(control["other_subjects", at],
                                              control["first_relation", at]) < 0.2
    assert h["attribute_rate_enriched"] is True
    assert h["attribute_rate_excess_ci"][0] > 0


def test_unplanted_model_reads_no_attribute():
    lm = tiny_model(seed=11)
    prepared = one_prompt_per_subject(lm)
    rate = AR.attribute_rate(lm, prepared, planted_rows(), k=3)
    # 3 of 473 tokens: chance alone puts an attribute in the top 3 well under 5% of the time
    assert np.nanmean(rate.per_prompt("subject")) < 0.05
    assert rate.headline(seed=0)["attribute_rate_enriched"] is False


@pytest.mark.parametrize("family", FAMILIES)
def test_last_layer_is_the_models_own_top_k_at_the_subject(family):
    """The lens after the last layer, at the last subject token, counts the attribute tokens
    among the top k of the logits the model itself outputs at that position (a soft-cap is
    monotone: the same top k)."""
    lm = tiny_model(family=family, seed=2)
    prepared = prepare(lm, load_dataset("paris-cloze")).subset(range(6))
    rows = load_dataset("paris-cloze").rows
    k = 40  # a tenth of the vocabulary: some attribute tokens are in, some not
    rate = AR.attribute_rate(lm, prepared, rows, k=k, batch_size=4)
    tokens = AR.attribute_tokens(lm.tokenizer, rows)
    positions = task_positions(prepared, lm.tokenizer)
    expected = []
    with torch.no_grad():
        for prompt, subject, pos in zip(prepared.prompts, prepared.rows["subject"], positions):
            logits = lm.model(encode(lm.tokenizer, [prompt]).tokens)[0]
            top = logits[pos.of_class("subject_last")[0]].topk(k).indices.tolist()
            expected.append(sum(t in top for t in tokens[subject]))
    got = rate.table[(rate.table["read"] == "subject")
                     & (rate.table["layer"] == lm.cfg.n_layers - 1)].sort_values("prompt")
    assert got["count"].to_list() == expected
    assert 0 < sum(expected)  # the comparison is not all zeros


def test_enriched_needs_both_controls_below():
    """A rate above the other subjects' control but equal to the first-relation control is not
    enriched; above both, it is (3 prompts, 2 layers, hand-made shares)."""
    def table(first_relation):
        rows = []
        for prompt in range(3):
            for layer, own, other in ((0, 0.0, 0.0), (1, 0.5 + 0.1 * prompt, 0.0)):
                for read, share in (("subject", own), ("other_subjects", other),
                                    ("first_relation", first_relation(own))):
                    rows.append({"prompt": prompt, "read": read, "layer": layer,
                                 "share": share, "count": share * 2, "n_tokens": 2})
        return pd.DataFrame(rows)

    same = AR.AttributeRate(table(lambda own: own), k=5, n_layers=2).headline()
    assert same["attribute_rate_peak_layer"] == 1
    assert same["attribute_rate_peak"] == pytest.approx(0.6)
    assert same["attribute_rate_excess_over_other_subjects_ci"][0] > 0
    assert same["attribute_rate_control"] == pytest.approx(0.6)  # the larger control
    assert same["attribute_rate_excess"] == pytest.approx(0.0)
    assert same["attribute_rate_enriched"] is False
    below = AR.AttributeRate(table(lambda own: 0.0), k=5, n_layers=2).headline()
    assert below["attribute_rate_enriched"] is True
    assert below["attribute_rate_excess"] == pytest.approx(0.6)
    # the same comparison as a claim for Holm: 3 prompts, all above → every swap pattern but
    # the identity gives a smaller statistic (the full swap's peak layer is re-chosen on the
    # control's flat curve: 0), p = 1 / 2**3; n = 3 is too few for the run's claims
    found = below["claim_attribute_rate_above_other_subjects"]
    assert found["p"] == pytest.approx(1 / 8) and found["testable"] is False
    assert found["difference"] == pytest.approx(0.6)
    tie = same["claim_attribute_rate_above_first_relation"]
    assert tie["p"] == pytest.approx(1.0)  # identical curves: every swap reaches |0|
