"""`quarto render` on a copy of the project: one site and one PDF, in every state.

Skipped where Quarto is not installed (`.ci/run` tests the Quarto-free preview instead)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from plotly.offline import get_plotlyjs
from test_quarto_project import copy_project
from test_render import leaked_reprs, rendered_text

from factcircuits.report.offline import PLOTLY_DIR, external_assets
from factcircuits.run import pipeline
from factcircuits.run.display import static_export_available

FIXTURES = Path(__file__).parent / "fixtures"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("quarto") is None, reason="Quarto not installed")]


# A warning of the Quarto build used here, not of the project's pages: built from source
# without the typst-gather binary, typst renders say "staging all packages as fallback"
# (/work/shared/tools/QUARTO.md, known gaps); an installed Quarto ships it.
QUARTO_BUILD_WARNINGS = ("WARN: typst-gather analyze failed",)
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def log_problems(log: str) -> list[str]:
    """The lines of a render's log that say a Jupyter kernel started (the book's pages hold no
    code: report/page_files.py) or that warn, apart from the Quarto build's own."""
    lines = [ANSI.sub("", line).strip() for line in log.splitlines()]
    return [line for line in lines
            if "Kernel" in line or ("WARN" in line and not line.startswith(QUARTO_BUILD_WARNINGS))]


def quarto_render(project: Path) -> Path:
    env = dict(os.environ, QUARTO_PYTHON=sys.executable,
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run(["quarto", "render"], cwd=project, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert log_problems(proc.stdout + proc.stderr) == []
    return project / "report" / "_output"


def test_log_problems_keep_kernels_and_warnings_but_the_builds_own():
    log = ("Starting python3 kernel...[IPKernelApp] WARNING | Kernel is running over TCP\n"
           "\x1b[33mWARN: typst-gather analyze failed; staging all packages as fallback\n"
           "Run ./configure.sh to build and install it.\x1b[39m\n"
           "WARN (some-filter) Unable to resolve crossref @fig-x\nOutput created: index.html\n")
    assert log_problems(log) == [
        "Starting python3 kernel...[IPKernelApp] WARNING | Kernel is running over TCP",
        "WARN (some-filter) Unable to resolve crossref @fig-x"]


def pdf_text(pdf: Path) -> str:
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) not installed")
    return subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True,
                          check=True).stdout


def near_empty_pages(pdf: Path) -> list[int]:
    """Pages with no image and at most a running header and a page number: blank pages."""
    count = int(re.search(r"Pages:\s+(\d+)", subprocess.run(
        ["pdfinfo", str(pdf)], capture_output=True, text=True).stdout).group(1))
    listed = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True,
                            text=True).stdout.splitlines()[2:]
    with_images = {int(line.split()[0]) for line in listed if line.strip()}
    empty = []
    for number in range(1, count + 1):
        text = subprocess.run(["pdftotext", "-f", str(number), "-l", str(number), "-layout",
                               str(pdf), "-"], capture_output=True, text=True).stdout
        lines = [line for line in text.splitlines() if line.strip()]
        if number not in with_images and len(lines) <= 2:
            empty.append(number)
    return empty


def reachable(site: Path) -> set[Path]:
    """Pages reachable by following local links from index.html."""
    seen, todo = set(), [site / "index.html"]
    while todo:
        page = todo.pop().resolve()
        if page in seen or not page.is_file():
            continue
        seen.add(page)
        for href in re.findall(r'href="([^"#?]+\.html)', page.read_text(errors="replace")):
            if not href.startswith(("http:", "https:")):
                todo.append(page.parent / href)
    return seen


def test_fresh_clone_with_zero_runs(tmp_path):
    site = quarto_render(copy_project(tmp_path))
    assert "There are no runs yet" in (site / "index.html").read_text()
    assert len(list(site.rglob("*.pdf"))) == 1
    assert "There are no runs yet" in pdf_text(next(site.rglob("*.pdf")))


def test_one_run_with_leftover_staging_and_failed_folders(tmp_path):
    project = copy_project(tmp_path)
    runs = project / "report" / "runs"
    result = pipeline.run(None, str(FIXTURES / "datasets" / "fixture.csv"), {},
                          notebooks_dir=FIXTURES / "notebooks", runs_root=runs, progress=False)
    for leftover in (f"_staging-{result.run_id}-1", f"_failed/{result.run_id}-2"):
        shutil.copytree(result.run_dir, runs / leftover)
    site = quarto_render(project)
    pages = {p.relative_to(site.resolve()).as_posix() for p in reachable(site)}
    run_pages = {f"report/runs/{result.run_id}/{name}.html" for name in ("01_first", "02_second")}
    assert run_pages | {"index.html", "report/comparison.html"} <= pages
    assert not any("_staging" in p or "_failed" in p for p in pages)
    comparison = (site / "report" / "comparison.html").read_text()
    assert "nothing to compare yet" in comparison
    # the figures draw offline: plotly.js is in the page, no CDN script
    page = (site / "report" / "runs" / result.run_id / "01_first.html").read_text()
    assert "fixture-one-figure" in page and "Plotly.newPlot" in page
    assert not re.search(r'<script[^>]+src="https?://[^"]*plot', page)
    # ... from the site's one copy, loaded by relative path; nothing from a CDN on any page
    lib, = (site / PLOTLY_DIR).glob("plotly-*.min.js")
    assert f'src="../../../site_libs/plotly/{lib.name}"' in page
    assert get_plotlyjs()[:60] not in page and "require.min.js" not in page
    assert 'type="module"' not in page  # refused from file://
    assert external_assets(site) == []
    pdfs = list(site.rglob("*.pdf"))
    assert len(pdfs) == 1
    text = pdf_text(pdfs[0])
    for forbidden in ("IPython.core", "open_session_from", "import ", "init_notebook"):
        assert forbidden not in text, forbidden
    # no value's repr: the fixture notebook's last cell returns the headline's path
    assert leaked_reprs(text) == []
    for name in ("01_first", "02_second"):
        assert leaked_reprs(rendered_text((site / "report" / "runs" / result.run_id
                                           / f"{name}.html").read_text())) == []
    # citations resolved, with the References appendix in the site and the PDF; the model as
    # loaded in the methods appendix; the title scoped to the run
    assert "[@" not in text and "@meng2022rome" not in text
    references = " ".join(text[text.rindex("References"):].split())  # lines rejoined
    assert "Locating and Editing Factual Associations in GPT" in references
    assert "Meng, Kevin" in references or "Meng, K." in references
    methods = (site / "report" / "methods.html").read_text()
    assert "Meng et al." in methods and "as loaded" in rendered_text(methods)
    assert "Locating and Editing" in (site / "report" / "references.html").read_text()
    assert "Fact recall in default" in " ".join(text.split())
    assert text.index("Findings") < text.index("Fixture notebook one")
    assert near_empty_pages(pdfs[0]) == []  # chapters start on the next page, not an odd one
    if static_export_available():  # each of the run's two figures is an image in the PDF
        images = subprocess.run(["pdfimages", "-list", str(pdfs[0])], capture_output=True,
                                text=True, check=True).stdout.splitlines()[2:]
        assert len([i for i in images if " image " in i]) >= 2
    else:
        assert text.count("Figure not available as an image") == 2


def test_factcircuits_render_site_and_pdf_at_once_outside_the_project_folder(tmp_path,
                                                                              monkeypatch,
                                                                              capfd):
    """`factcircuits render --to all`: both formats rendered in copies of the book's inputs
    (report/book_copies.py), the site and its PDF in report/_output/, no copy left behind, no
    kernel or warning in the log, and a .venv in the project never walked (it is not in the
    copies)."""
    from factcircuits.report import render

    project = copy_project(tmp_path)
    monkeypatch.setenv("FACTCIRCUITS_ROOT", str(project))
    monkeypatch.delenv("FACTCIRCUITS_RUNS", raising=False)
    result = pipeline.run(None, str(FIXTURES / "datasets" / "fixture.csv"), {},
                          notebooks_dir=FIXTURES / "notebooks",
                          runs_root=project / "report" / "runs", progress=False)
    (project / ".venv" / "lib").mkdir(parents=True)
    before = sorted(p.name for p in (project / "report" / "runs" / result.run_id).iterdir())
    render.render(to="all", root=project)
    log = capfd.readouterr()
    assert log_problems(log.out + log.err) == []
    site = project / "report" / "_output"
    page = site / "report" / "runs" / result.run_id / "01_first.html"
    assert "fixture-one-figure" in page.read_text()
    assert "Fixture notebook one" in pdf_text(site / "factcircuits.pdf")
    assert not [p for p in (project / "report").iterdir() if p.name.startswith(".")]
    # Quarto wrote nothing next to the run's notebooks (it rendered hard-linked copies)
    assert sorted(p.name for p in (project / "report" / "runs" / result.run_id).iterdir()) \
        == before
