"""The analysis notebooks (one per registered method), executed by the real pipeline for both
tasks (the analysis issue's acceptance): no error cell, every headline written, every figure
carrying interactive HTML, and the numbers in run.json agreeing with the library.

One small run per task, shared by its file's tests; the two tasks are two files
(test_analysis_notebooks_cloze.py, test_analysis_notebooks_yesno.py) so that the suite's two
workers run them side by side.

Cloze runs on the embedded model (the main job's configuration: a model that knows the facts,
so the mechanistic notebooks analyse real known prompts). Yes/no runs on the tiny model: the
embedded one is at chance on yes/no questions, so it proves nothing more there, and a run on it
cost minutes of the suite."""

from __future__ import annotations

import json

import nbformat
import pytest

from factcircuits.data.datasets import from_frame, load_dataset
from factcircuits.methods.evaluate import score_dataset
from factcircuits.results.registry import builtin_methods
from factcircuits.run import folders, pipeline

NOTEBOOKS = sorted(p.stem for p in folders.default_notebooks_dir().glob("[0-9][0-9]_*.py"))

MODEL = {"cloze": "default", "yesno": "tiny"}
N_LAYERS = {"default": 30, "tiny": 3}
# The embedded model's run dominates: it knows the first 3 prompts, 3 patchable pairs (every
# interval and per-pair path needs at least 2).
N_PROMPTS = {"cloze": 3, "yesno": 8}
# Every code path at its smallest cost: one noise sample, two EAP-IG steps (the integrated
# path, not plain EAP), two exact cells per prompt for AtP's check.
SMALL = {"noise_samples": 1, "ig_steps": 2, "scan_top_k": 2}


def small_run(task: str, tmp_path_factory) -> tuple[str, pipeline.RunResult]:
    runs = tmp_path_factory.mktemp(f"runs-{task}")
    return task, pipeline.run(MODEL[task], None,
                              {"task": task, "n_prompts": N_PROMPTS[task], **SMALL},
                              runs_root=runs, progress=False)


def check_every_notebook_ran_and_wrote_its_headline(run) -> None:
    task, result = run
    assert set(NOTEBOOKS) == {m.notebook for m in builtin_methods()}
    assert result.status == "ok"
    info = json.loads((result.run_dir / "run.json").read_text())
    assert [nb["name"] for nb in info["notebooks"]] == NOTEBOOKS
    assert set(info["headline"]) == set(NOTEBOOKS)
    model = info["model"]
    assert model["n_layers"] == N_LAYERS[MODEL[task]]
    assert model["weights_sha256"] if MODEL[task] == "default" else model["source"] == "random"
    for name in NOTEBOOKS:
        nb = nbformat.read(result.run_dir / f"{name}.ipynb", as_version=4)
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
        assert not [o for o in outputs if o.output_type == "error"], name
        figures = [o for o in outputs if "plotly-graph-div" in str(o.get("data", {}))]
        assert figures, f"{name} shows no figure"


def check_task_check_headline_agrees_with_the_library(run, lm) -> None:
    task, result = run
    headline = json.loads((result.run_dir / "run.json").read_text())["headline"]["01_task_check"]
    rows = load_dataset(f"paris-{task}").rows.head(N_PROMPTS[task])
    table = score_dataset(lm, from_frame(rows), drop_multi_token=True)
    assert headline["n_prompts"] == len(table) == N_PROMPTS[task]
    assert headline["accuracy"] == pytest.approx(table["correct"].mean())
    assert headline["mean_metric"] == pytest.approx(table["metric"].mean(), abs=1e-4)
