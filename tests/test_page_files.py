"""The book's own pages hold no code: the pre-render writes what they show of the runs as
markdown (report/page_files.py) and report/generated.lua reads it in, so Quarto starts no
Jupyter kernel. Quarto is not needed here (the filter is checked with Quarto's pandoc when
it is installed)."""

from __future__ import annotations

import re
import shutil
import subprocess

import plotly.graph_objects as go
import pytest
from plotly.offline import get_plotlyjs
from test_findings import make_run
from test_quarto_project import ROOT, config, copy_project, pre_render, project_pages

from factcircuits.report import page_files
from factcircuits.report.evidence import scan_evidence
from factcircuits.report.pages import version_info
from factcircuits.run.display import static_export_available

GENERATED_DIV = re.compile(r'::: \{\.generated file="([^"]+)"\}')


def test_no_page_of_the_book_executes_code():
    for page in project_pages():
        text = page.read_text()
        assert not re.search(r"```\s*\{(python|r|julia|ojs)", text), page.name
    # every generated file a page names is one the pre-render writes
    named = {target for page in project_pages()
             for target in GENERATED_DIV.findall(page.read_text())}
    written = {page_files.page_markdown_path(name).as_posix()
               for name in ("front", "comparison", "provenance", "head-roles",
                            "models-as-loaded")}
    assert named == written
    assert {"path": "report/generated.lua", "at": "pre-ast"} in config()["filters"]


def test_pre_render_writes_each_pages_markdown_from_the_runs(tmp_path):
    project = copy_project(tmp_path / "copy")
    runs = project / "report" / "runs"
    pre_render(project)
    pages = project / page_files.PAGES
    assert "There are no runs yet" in (pages / "front.md").read_text()
    assert "nothing to compare" in (pages / "comparison.md").read_text()
    assert not list(pages.glob("figures/*"))
    for run_id in ("a__x__1", "b__y__2"):
        make_run(runs, run_id)
    pre_render(project)
    front = (pages / "front.md").read_text()
    assert "**Runs:** `a__x__1`, `b__y__2`" in front and "**2 runs.**" in front
    # the glance figure first, interactive for HTML with plotly.js once per page
    assert front.index("Where the methods locate the fact") < front.index("**Runs:**")
    marker = get_plotlyjs()[:60]
    comparison = (pages / "comparison.md").read_text()
    assert front.count(marker) == 1 and comparison.count(marker) == 1
    # the key numbers as a table with one column per run, then the figures
    assert "| headline number | Run 1 | Run 2 |" in comparison
    assert comparison.count("Plotly.newPlot") >= 1
    provenance = (pages / "provenance.md").read_text()
    assert "| 01_task_check | ok | 1.5 |" in provenance
    assert "org/toy-model" in (pages / "models-as-loaded.md").read_text()
    roles = (pages / "head-roles.md").read_text()
    assert re.search(r"lies above \d+%", roles) and "{READS" not in roles
    # every figure has its PDF version: an image next to the page, or the note saying why not
    for name, text in (("index.qmd", front), ("report/comparison.qmd", comparison)):
        images = re.findall(r"!\[\]\(([^)]+)\)\{width=100%\}", text)
        if static_export_available():
            assert len(images) == text.count("Plotly.newPlot")
            assert "Figure not available" not in text
            for image in images:
                png = (project / name).parent / image
                assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        else:
            assert not images
            assert text.count("Figure not available as an image") == text.count("Plotly.newPlot")
    # one run left: the comparison says so and its figures are gone
    shutil.rmtree(runs / "b__y__2")
    pre_render(project)
    assert "nothing to compare yet" in (pages / "comparison.md").read_text()
    assert not list((project / page_files.FIGURES).glob("comparison-*.png"))


def test_figure_markdown_for_html_and_for_other_formats(tmp_path):
    writer = page_files.FigureWriter(tmp_path, "comparison", static=False)
    figures = [go.Figure(go.Scatter(x=[0, 1], y=[1, 2]), layout={"title": f"fig {i}"})
               for i in (1, 2)]
    first, second = (writer.markdown(fig) for fig in figures)
    # plotly.js before the page's first figure only; the figure's own script in both
    assert get_plotlyjs()[:60] in first and get_plotlyjs()[:60] not in second
    assert first.startswith("```{=html}\n") and "Plotly.newPlot" in second
    # formats without HTML: the note naming the figure, inside a block HTML leaves out
    assert ('::: {.content-visible unless-format="html"}\n> **Figure not available as an '
            "image:** *fig 2*") in second


@pytest.mark.skipif(not static_export_available(), reason="no kaleido/Chromium")
def test_figure_png_is_written_relative_to_its_page_and_reused(tmp_path, monkeypatch):
    from factcircuits.run import display

    fig = go.Figure(go.Bar(x=["a"], y=[1]))
    writer = page_files.FigureWriter(tmp_path, "comparison", static=True)
    text = writer.markdown(fig)
    png, = writer.written
    assert png.parent == tmp_path / "report/_generated/pages/figures"
    assert re.fullmatch(r"comparison-[0-9a-f]{16}\.png", png.name)
    assert f"![](_generated/pages/figures/{png.name}){{width=100%}}" in text
    assert png.read_bytes()[:4] == b"\x89PNG"
    # the same figure again (a render of the same runs): the PNG is reused, no export
    monkeypatch.setattr(display, "figure_bundle", lambda *a, **k: pytest.fail("exported"))
    again = page_files.FigureWriter(tmp_path, "comparison", static=True)
    reused = again.markdown(fig)
    assert again.written == [png] and f"figures/{png.name})" in reused
    # another figure: another file
    other = go.Figure(go.Bar(x=["a"], y=[2]))
    assert page_files.figure_key(other) != page_files.figure_key(fig)


def test_raw_html_fence_is_longer_than_any_backticks_inside():
    assert page_files.raw_html("<p>a</p>") == "```{=html}\n<p>a</p>\n```\n"
    assert page_files.raw_html("<p>````x</p>") == "`````{=html}\n<p>````x</p>\n`````\n"


def test_markdown_table_escapes_pipes_and_keeps_the_index():
    import pandas as pd

    frame = pd.DataFrame({"Run 1": ["0.5 [0.4, 0.6]", "a|b"]}, index=["x", "y"])
    frame.index.name = "headline number"
    assert page_files.markdown_table(frame) == (
        "| headline number | Run 1 |\n|---|---|\n| x | 0.5 [0.4, 0.6] |\n| y | a\\|b |\n")


@pytest.mark.skipif(shutil.which("quarto") is None, reason="Quarto not installed")
def test_lua_filter_reads_the_generated_file_in(tmp_path):
    (tmp_path / "gen.md").write_text("## From the file {#sec-file}\n\nText with **bold**.\n")
    (tmp_path / "page.md").write_text('Before.\n\n::: {.generated file="gen.md"}\n:::\n\n'
                                      '::: {.generated file="absent.md"}\n:::\n')
    proc = subprocess.run(["quarto", "pandoc", "page.md", "-t", "markdown", "--lua-filter",
                           str(ROOT / "report" / "generated.lua")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "## From the file {#sec-file}" in proc.stdout and "**bold**" in proc.stdout
    assert ".generated" not in proc.stdout
    assert "**Not generated: absent.md**" in proc.stdout
    assert "absent.md is missing" in proc.stderr


def test_version_line_is_on_the_front_page(tmp_path):
    make_run(tmp_path / "report" / "runs", "a__x__1")
    runs, damaged = scan_evidence(tmp_path / "report" / "runs")
    text = page_files.front_markdown(tmp_path, runs, damaged,
                                     page_files.FigureWriter(tmp_path, "front", static=False))
    assert f"**Version** {version_info(tmp_path, ['a__x__1'])['version']}" in text


def test_has_front_matter_reads_the_first_cell(tmp_path):
    import nbformat

    from factcircuits.report.pages import add_front_matter, has_front_matter

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Title\n\nText")])
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    assert not has_front_matter(path)
    assert add_front_matter(nb, "run x")
    nbformat.write(nb, path)
    assert has_front_matter(path)
    path.write_text("{}")  # not a notebook: left to Quarto to name
    assert not has_front_matter(path)
