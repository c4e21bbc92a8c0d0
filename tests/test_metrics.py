"""Metrics against values computed by hand with `math` on a fixed logit tensor."""

import math

import pytest
import torch

from factcircuits.methods import metrics

LOGITS = torch.tensor([[2.0, 0.0, 1.0, -1.0, 0.5, 3.0]])
TRUE_IDS, FALSE_IDS = [0, 1], [2, 3]


def _by_hand(row):
    z = sum(math.exp(x) for x in row)
    p_true = (math.exp(row[0]) + math.exp(row[1])) / z
    p_false = (math.exp(row[2]) + math.exp(row[3])) / z
    summed = (row[0] + row[1]) - (row[2] + row[3])
    log_odds = math.log(math.exp(row[0]) + math.exp(row[1])) - math.log(
        math.exp(row[2]) + math.exp(row[3]))
    return summed, p_true - p_false, log_odds


@pytest.mark.parametrize("label,sign", [(True, 1.0), (False, -1.0)])
def test_yesno_metrics_match_hand_computation_and_flip_with_label(label, sign):
    summed, mass, log_odds = _by_hand(LOGITS[0].tolist())
    table = metrics.yesno_metrics(LOGITS, TRUE_IDS, FALSE_IDS, [label])
    assert table.loc[0, "logit_diff_sum"] == pytest.approx(sign * summed, abs=1e-5)
    assert table.loc[0, "prob_mass_diff"] == pytest.approx(sign * mass, abs=1e-6)
    assert table.loc[0, "log_odds"] == pytest.approx(sign * log_odds, abs=1e-5)
    # (e² + 1)/(e + e⁻¹) = e, so the log-odds of this row is exactly 1.
    assert log_odds == pytest.approx(1.0)
    # The model prefers the True set: right for a true statement, wrong for a false one.
    assert bool(table.loc[0, "correct"]) is label


def test_cloze_metrics_logit_diff_probability_and_rank():
    logits = LOGITS.repeat(2, 1)
    table = metrics.cloze_metrics(logits, answer_ids=[5, 4], cf_ids=[0, 5])
    z = sum(math.exp(x) for x in LOGITS[0].tolist())
    assert table["logit_diff"].tolist() == pytest.approx([3.0 - 2.0, 0.5 - 3.0])
    assert table["p_answer"].tolist() == pytest.approx([math.exp(3) / z, math.exp(0.5) / z])
    assert table["rank"].tolist() == [1, 4]  # 0.5 is beaten by 3, 2 and 1
    assert table["correct"].tolist() == [True, False]


def test_tensor_metrics_agree_with_tables():
    logits = torch.randn(5, 11, generator=torch.Generator().manual_seed(0))
    answer, cf = torch.tensor([1, 2, 3, 4, 5]), torch.tensor([6, 7, 8, 9, 10])
    table = metrics.cloze_metrics(logits, answer, cf)
    assert metrics.logit_diff(logits, answer, cf).tolist() == pytest.approx(
        table["logit_diff"].tolist(), abs=1e-6)
    signs = metrics.label_signs([True, False, True, False, True])
    yesno = metrics.yesno_metrics(logits, [0, 1], [2, 3], [True, False, True, False, True])
    assert (signs * metrics.log_odds(logits, [0, 1], [2, 3])).tolist() == pytest.approx(
        yesno["log_odds"].tolist(), abs=1e-6)


def test_summarize_reports_means_and_accuracy():
    table = metrics.cloze_metrics(LOGITS.repeat(2, 1), [5, 4], [0, 5])
    summary = metrics.summarize(table, "cloze")
    assert summary["accuracy"] == 0.5
    assert summary["mean_logit_diff"] == pytest.approx((1.0 - 2.5) / 2)
    assert summary["n_prompts"] == 2
