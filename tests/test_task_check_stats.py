"""The statistics behind "is the model at chance": AUC and the exact binomial test, against
values computed by hand."""

from __future__ import annotations

import math

import pytest

from factcircuits.methods.task_check import auc
from factcircuits.methods.uncertainty import binomial_two_sided_p


@pytest.mark.parametrize("successes, n, expected", [
    (5, 10, 1.0),                      # the most likely outcome: every outcome is as likely
    (6, 10, 1 - 252 / 1024),           # all but k=5 (C(10,5)=252) are at most as likely
    (8, 10, 2 * (45 + 10 + 1) / 1024),  # k ≤ 2 or k ≥ 8
    (10, 10, 2 / 1024),                # all right or all wrong
    (0, 3, 2 / 8),
    (0, 0, 1.0),                       # no prompts: no evidence either way
])
def test_binomial_two_sided_p_by_hand(successes, n, expected):
    assert binomial_two_sided_p(successes, n) == pytest.approx(expected, abs=1e-12)


def test_binomial_is_symmetric_and_skewed_p_works():
    assert binomial_two_sided_p(2, 10) == pytest.approx(binomial_two_sided_p(8, 10))
    # p = 0.2, n = 5, 3 successes: pmf(3)=0.0512; outcomes at most as likely: k = 3, 4, 5
    pmf = [math.comb(5, k) * 0.2**k * 0.8 ** (5 - k) for k in range(6)]
    assert binomial_two_sided_p(3, 5, p=0.2) == pytest.approx(pmf[3] + pmf[4] + pmf[5])


@pytest.mark.parametrize("scores, labels, expected", [
    ([3, 2, 1, 0], [True, True, False, False], 1.0),   # perfect separation
    ([0, 1, 2, 3], [True, True, False, False], 0.0),   # perfectly inverted
    ([0.9, 0.8, 0.3], [True, False, True], 0.5),       # 1 of 2 true-false pairs ordered
    ([1.0, 1.0], [True, False], 0.5),                  # a tie counts one half
    ([5, 1, 4, 2, 3], [True, False, True, False, False], 1.0),
    ([5, 4, 1, 3, 2], [True, False, True, False, False], 3 / 6),  # 5 beats all 3; 1 none
])
def test_auc_by_hand(scores, labels, expected):
    assert auc(scores, labels) == pytest.approx(expected)


def test_auc_needs_both_classes():
    assert math.isnan(auc([1, 2], [True, True]))
