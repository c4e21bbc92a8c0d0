"""Plain `quarto render` after a run folder was deleted by hand (the command reviewers'
write-ups are built with): Quarto reads report/_generated/book.yml before its pre-render, so
the book's chapter list left there by the last render must never name a run that is gone.

Skipped where Quarto is not installed (`.ci/run` has none)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_quarto_project import copy_project

from factcircuits.run import pipeline

FIXTURES = Path(__file__).parent / "fixtures"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("quarto") is None, reason="Quarto not installed")]


def plain_quarto_render(project: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, QUARTO_PYTHON=sys.executable,
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    return subprocess.run(["quarto", "render", "--to", "html"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=900)


def test_quarto_render_after_a_run_folder_is_deleted_by_hand(tmp_path):
    project = copy_project(tmp_path / "project")
    runs = project / "report" / "runs"
    dataset = str(FIXTURES / "datasets" / "fixture.csv")
    kept, deleted = (pipeline.run("tiny", dataset, {"seed": seed},
                                  notebooks_dir=FIXTURES / "notebooks", runs_root=runs,
                                  progress=False) for seed in (0, 1))
    first = plain_quarto_render(project)
    assert first.returncode == 0, first.stderr[-2000:]
    site = project / "report" / "_output"
    assert (site / "report" / "runs" / deleted.run_id).is_dir()
    shutil.rmtree(deleted.run_dir)  # by hand, between two renders
    second = plain_quarto_render(project)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "not found" not in second.stderr
    index = (site / "index.html").read_text()
    assert kept.run_id in index and deleted.run_id not in index
