"""Preview rendering (no Quarto here): every figure, plotly.js once and offline, the
comparison table, version stamp and archive copy."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from plotly.offline import get_plotlyjs

from factcircuits.report import render
from factcircuits.run import pipeline

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    dataset = str(FIXTURES / "datasets" / "fixture.csv")
    results = [pipeline.run(None, dataset, {"seed": seed}, notebooks_dir=FIXTURES / "notebooks",
                            runs_root=runs, progress=False) for seed in (0, 1)]
    return runs, results


def test_preview_has_every_figure_plotlyjs_once_and_comparison(two_runs, tmp_path, monkeypatch,
                                                               capsys):
    runs, results = two_runs
    monkeypatch.setattr(shutil, "which", lambda name: None)  # as on a machine without Quarto
    paths = render.render(to="html", root=tmp_path, runs_root=runs)
    assert capsys.readouterr().out.startswith("Quarto is not installed")
    page, archive = paths
    text = page.read_text()
    assert "PREVIEW" in text and archive.read_bytes() == page.read_bytes()
    assert archive.name.startswith("factcircuits-preview-0.1.0+")
    # plotly.js inline exactly once, nothing fetched from the network
    marker = get_plotlyjs()[:40]
    assert text.count(marker) == 1
    # (plotly.js itself names a CDN only as the default topojson URL for geo maps)
    assert text.count("cdn.plot.ly") == get_plotlyjs().count("cdn.plot.ly")
    assert 'src="http' not in text and "src='http" not in text
    # every figure of every run's notebooks, plus the comparison figure with a panel for each
    # headline number (01_first.score, 01_first.n_prompts, 02_second.effect)
    for title in ("fixture-one-figure", "fixture-two-figure"):
        assert text.count(title) >= len(results), title
    assert text.count('class="plotly-graph-div"') == 2 * len(results) + 1
    for panel in ("score", "n_prompts", "effect"):
        assert f'"text":"{panel}"' in text, panel
    assert 'id="comparison-table"' in text
    for result in results:
        assert result.run_id in text
    assert '<h1 id="Fixture-notebook-one">' in text  # front matter title as a heading
    assert "01_first.score" in text and "1.5" in text  # seed=1 run's score
    # inputs tagged remove-input are hidden
    assert "init_notebook()" not in text


def test_preview_with_no_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    page, _ = render.render(to="all", root=tmp_path, runs_root=tmp_path / "none")
    assert "No runs yet" in page.read_text()
