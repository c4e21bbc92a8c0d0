"""Every analysis notebook on the yesno task, run by the real pipeline on the tiny model
(the checks and why this model: notebook_runs.py)."""

from __future__ import annotations

import pytest
from notebook_runs import (
    check_every_notebook_ran_and_wrote_its_headline,
    check_task_check_headline_agrees_with_the_library,
    small_run,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return small_run("yesno", tmp_path_factory)


def test_every_notebook_runs_without_error_and_writes_headlines(run):
    check_every_notebook_ran_and_wrote_its_headline(run)


def test_task_check_headline_agrees_with_the_library(run, tiny_lm):
    check_task_check_headline_agrees_with_the_library(run, tiny_lm)
