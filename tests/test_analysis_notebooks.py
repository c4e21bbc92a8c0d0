"""The seven analysis notebooks, executed by the real pipeline on the embedded model, for both
tasks (the analysis issue's acceptance): no error cell, every headline written, every figure
carrying interactive HTML, and the numbers in run.json agreeing with the library."""

from __future__ import annotations

import json

import nbformat
import pytest

from factcircuits.data.datasets import from_frame, load_dataset
from factcircuits.methods.evaluate import score_dataset
from factcircuits.run import folders, pipeline

NOTEBOOKS = sorted(p.stem for p in folders.default_notebooks_dir().glob("[0-9][0-9]_*.py"))


@pytest.fixture(scope="module", params=["cloze", "yesno"])
def run(request, tmp_path_factory):
    runs = tmp_path_factory.mktemp(f"runs-{request.param}")
    return request.param, pipeline.run("default", None, {"task": request.param, "n_prompts": 8,
                                                          "noise_samples": 1},
                                       runs_root=runs, progress=False)


@pytest.mark.embedded
@pytest.mark.slow
def test_every_notebook_runs_without_error_and_writes_headlines(run):
    task, result = run
    assert len(NOTEBOOKS) == 7 and result.status == "ok"
    info = json.loads((result.run_dir / "run.json").read_text())
    assert [nb["name"] for nb in info["notebooks"]] == NOTEBOOKS
    assert set(info["headline"]) == set(NOTEBOOKS)
    assert info["model"]["weights_sha256"] and info["model"]["n_layers"] == 30
    for name in NOTEBOOKS:
        nb = nbformat.read(result.run_dir / f"{name}.ipynb", as_version=4)
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
        assert not [o for o in outputs if o.output_type == "error"], name
        figures = [o for o in outputs if "plotly-graph-div" in str(o.get("data", {}))]
        assert figures, f"{name} shows no figure"


@pytest.mark.embedded
@pytest.mark.slow
def test_task_check_headline_agrees_with_the_library(run, embedded_lm):
    task, result = run
    headline = json.loads((result.run_dir / "headline" / "01_task_check.json").read_text())
    rows = load_dataset(f"paris-{task}").rows.head(8)
    table = score_dataset(embedded_lm, from_frame(rows), drop_multi_token=True)
    assert headline["n_prompts"] == len(table) == 8
    assert headline["accuracy"] == pytest.approx(table["correct"].mean())
    assert headline["mean_metric"] == pytest.approx(table["metric"].mean(), abs=1e-4)
