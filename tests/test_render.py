"""Preview rendering (no Quarto here): the write-up's structure in one HTML file (findings,
one section per run, comparison, provenance), every figure, plotly.js once and offline,
version stamp and archive copy."""

from __future__ import annotations

import json
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


@pytest.fixture
def no_quarto(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)  # as on a machine without Quarto


def test_preview_has_the_write_ups_structure_and_every_figure(two_runs, tmp_path, no_quarto,
                                                             capsys):
    runs, results = two_runs
    paths = render.render(to="html", root=tmp_path, runs_root=runs)
    assert capsys.readouterr().out.startswith("Quarto is not installed")
    page, archive, version = paths
    text = page.read_text()
    assert "PREVIEW" in text and archive.read_bytes() == page.read_bytes()
    assert archive.name.startswith("factcircuits-preview-0.1.0+")
    # the render is kept as a version for `factcircuits publish`
    assert (version / "site" / "index.html").read_bytes() == page.read_bytes()
    assert [r["run_id"] for r in json.loads((version / "version.json").read_text())["runs"]] \
        == sorted(r.run_id for r in results)
    # plotly.js inline exactly once, nothing fetched from the network
    marker = get_plotlyjs()[:40]
    assert text.count(marker) == 1
    # (plotly.js itself names a CDN only as the default topojson URL for geo maps)
    assert text.count("cdn.plot.ly") == get_plotlyjs().count("cdn.plot.ly")
    assert 'src="http' not in text and "src='http" not in text
    # the order of the book: findings, one section per run, comparison, provenance
    anchors = ["id='findings'", *(f"id='run-{r.run_id.lower().replace('_', '-')}'"
                                  for r in sorted(results, key=lambda r: r.run_id)),
               "id='comparison'", "id='provenance'"]
    positions = [text.index(a) for a in anchors]
    assert positions == sorted(positions)
    assert text.count("<h1>Run ") == 2 and "Run 1: default on fixture" in text
    # every figure of every run's notebooks, plus the comparison figure with a panel for each
    # headline number (01_first.score, 01_first.n_prompts, 02_second.effect)
    for title in ("fixture-one-figure", "fixture-two-figure"):
        assert text.count(title) >= len(results), title
    assert text.count('class="plotly-graph-div"') == 2 * len(results) + 1
    for panel in ("first \\u00b7 score", "first \\u00b7 n prompts",
                  "second \\u00b7 effect"):  # method · number, as plotly's JSON has it
        assert f'"text":"{panel}"' in text, panel
    table = text[text.index("id='comparison-table'"):]
    table = table[:table.index("</table>")]
    assert ">Run 1<" in table and ">Run 2<" in table  # seed=1: 1.5, no interval
    assert ">1.5 (no interval stored)<" in table
    assert '<h2 id="Fixture-notebook-one">' in text  # front matter title, one level down
    # code is left out: inputs, the parameters cell, the session setup
    assert "init_notebook()" not in text and "leak = " not in text
    # provenance: each run's parameters
    provenance = text[text.index("id='provenance'"):]
    assert all(r.run_id in provenance for r in results) and "<td>seed</td>" in provenance


def test_preview_with_one_run_says_there_is_nothing_to_compare(two_runs, tmp_path, no_quarto):
    runs, results = two_runs
    one = tmp_path / "one"
    shutil.copytree(results[0].run_dir, one / results[0].run_id)
    page, *_ = render.render(to="html", root=tmp_path, runs_root=one)
    text = page.read_text()
    comparison = text[text.index("id='comparison'"):text.index("id='provenance'")]
    assert "nothing to compare yet" in comparison
    assert "plotly-graph-div" not in comparison and "<table" not in comparison


def test_preview_with_no_runs(tmp_path, no_quarto):
    page, *_ = render.render(to="all", root=tmp_path, runs_root=tmp_path / "none")
    text = page.read_text()
    assert "There are no runs yet" in text
    assert "nothing to compare" in text


# What a value's plain-text repr looks like when it leaks into the write-up: a cell's last
# expression (`out.save(...)`'s paths, an array, a matplotlib figure, a display object) or a
# print of one.
REPRS = ("PosixPath(", "WindowsPath(", "<Figure", "dtype=", "dtype:", "object at 0x",
         "<IPython.core.display", "<matplotlib.", "tensor(", "array([", "Name: ")


def rendered_text(page: str) -> str:
    """What a reader sees on a rendered page: scripts (plotly.js, figure data) and styles
    removed, tags stripped, entities decoded."""
    import html as html_lib
    import re

    page = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", page)
    return html_lib.unescape(re.sub(r"(?s)<[^>]+>", " ", page))


def leaked_reprs(text: str) -> list[str]:
    return [r for r in REPRS if r in text]


def test_no_repr_leaks_into_the_preview(two_runs, tmp_path, no_quarto):
    """The fixture notebook's last cell ends in `out.headline(...)`, which returns the path it
    wrote: the notebook display shows only rich values, so the path is not in the write-up."""
    runs, results = two_runs
    page, *_ = render.render(to="html", root=tmp_path, runs_root=runs)
    text = rendered_text(page.read_text())
    assert "Fixture notebook one" in text  # the notebooks are there
    assert leaked_reprs(text) == []
    assert "[@" not in text


def test_the_repr_check_sees_a_leak():
    page = ("<p>[PosixPath('results/02_logit_lens/logit_lens_mean.csv')]</p>"
            "<script>var a = {dtype: 1}</script><pre>&lt;Figure size 640x480 with 1 Axes&gt;"
            "</pre>")
    assert leaked_reprs(rendered_text(page)) == ["PosixPath(", "<Figure"]


@pytest.mark.slow
def test_a_real_run_previews_without_reprs_and_with_citations(tmp_path_factory, no_quarto):
    """Every analysis notebook on the tiny model, previewed: no repr of any value, the
    notebooks' citations as author–year text with a References section, the weights as
    loaded in the provenance, the interactive figure's note for the site, not the PDF's."""
    runs = tmp_path_factory.mktemp("runs")
    pipeline.run("tiny", None, {"task": "cloze", "n_prompts": 4, "noise_samples": 1,
                                "ig_steps": 2, "scan_top_k": 2}, runs_root=runs,
                 progress=False)
    root = tmp_path_factory.mktemp("project")
    page, *_ = render.render(to="html", root=root, runs_root=runs)
    text = rendered_text(page.read_text())
    assert leaked_reprs(text) == []
    assert "[@" not in text and "@meng2022rome" not in text
    assert "Meng et al. (2022)" in text and "(Geva et al. 2023)" in text
    references = text[text.index("References", text.index("Appendix: parameters")):]
    assert "Locating and Editing Factual Associations in GPT" in references
    assert "tiny-llama, as loaded: random weights (seed 0), in float32" in text
    assert "Pick a head from the menu" in text and "The image shows" not in text
