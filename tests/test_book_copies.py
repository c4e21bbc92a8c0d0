"""`factcircuits render`'s Quarto renders in copies of the book's inputs (report/book_copies.py),
driven here by a stand-in `quarto` that records where it ran and writes what Quarto would:
no Quarto needed, so this runs in CI."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest
from test_quarto_project import copy_project

from factcircuits.errors import UserError
from factcircuits.report import book_copies
from factcircuits.report.book_copies import (
    OUTPUT,
    PAGES_WRITTEN_ENV,
    book_copy,
    book_inputs,
    pages_written,
    render_in_copies,
)

# Writes what `quarto render --to <fmt>` writes into report/_output/ of the folder it runs in,
# records that folder and the files it saw, and fails when told to for that format.
FAKE_QUARTO = """#!{python}
import os, sys, time
from pathlib import Path
fmt = sys.argv[sys.argv.index("--to") + 1]
here = Path.cwd()
with open(os.environ["FAKE_QUARTO_LOG"], "a") as log:
    log.write(f"{{fmt}} {{here}} {{time.time()}}\\n")
time.sleep(0.5)
if os.environ.get("FAKE_QUARTO_FAIL") == fmt:
    print(f"{{fmt}} broke"); sys.exit(3)
out = here / "report" / "_output"
out.mkdir(parents=True, exist_ok=True)
if fmt == "html":
    pages = here / "report" / "_generated" / "pages" / "x.md"
    (out / "index.html").write_text("new site " + pages.read_text())
else:
    (out / "factcircuits.pdf").write_bytes(b"%PDF new")
print(f"rendered {{fmt}}")
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    root = copy_project(tmp_path / "project")
    run = root / "report" / "runs" / "run-a"
    run.mkdir(parents=True)
    (run / "01_x.ipynb").write_text("{}")
    for unfinished in ("_staging-run-b-1", "_failed/run-c-1"):
        (root / "report" / "runs" / unfinished).mkdir(parents=True)
    (root / "report" / "_generated" / "pages").mkdir(parents=True)
    (root / "report" / "_generated" / "pages" / "x.md").write_text("pages v1")
    (root / "report" / "versions" / "v0").mkdir(parents=True)
    (root / OUTPUT).mkdir(parents=True)
    (root / OUTPUT / "index.html").write_text("old site")
    (root / ".venv" / "lib").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "quarto"
    fake.write_text(FAKE_QUARTO.format(python=sys.executable))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "quarto.log"
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               FAKE_QUARTO_LOG=str(log))
    return root, env, log


def calls(log: Path) -> list[tuple[str, Path, float]]:
    rows = [line.split() for line in log.read_text().splitlines()]
    return [(fmt, Path(where), float(at)) for fmt, where, at in rows]


def test_the_copy_holds_the_book_inputs_and_links_the_notebooks(project):
    root, _, _ = project
    copy = book_copy(root, "html")
    assert copy.parent == root / "report" and copy.name.startswith(".render-html-")
    for name in book_inputs(root):
        assert (copy / name).read_bytes() == (root / name).read_bytes(), name
    notebook = copy / "report" / "runs" / "run-a" / "01_x.ipynb"
    assert os.path.samefile(notebook, root / "report" / "runs" / "run-a" / "01_x.ipynb")
    assert (copy / "report" / "_generated" / "pages" / "x.md").read_text() == "pages v1"
    # outputs of earlier renders and the project's other folders stay out
    for absent in ("report/_output", "report/versions", ".venv", "report/runs/_failed",
                   "report/runs/_staging-run-b-1"):
        assert not (copy / absent).exists(), absent
    assert {"_quarto.yml", "index.qmd", "report/_prerender.py"} <= set(book_inputs(root))


def test_site_and_pdf_render_at_once_in_copies_and_replace_the_output(project):
    root, env, log = project
    render_in_copies(root, ["html", "typst"], env)
    (html, html_dir, html_at), (pdf, pdf_dir, pdf_at) = sorted(calls(log))
    assert (html, pdf) == ("html", "typst") and html_dir != pdf_dir
    assert html_dir.parent == pdf_dir.parent == root / "report"
    assert abs(html_at - pdf_at) < 0.5  # both started before either finished (0.5 s each)
    assert (root / OUTPUT / "index.html").read_text() == "new site pages v1"
    assert (root / OUTPUT / "factcircuits.pdf").read_bytes() == b"%PDF new"
    assert not list((root / "report").glob(".*"))  # copies and the old site removed
    assert not (root / "report" / "runs" / "run-a" / "01_x_files").exists()


def test_pdf_only_keeps_the_site(project):
    root, env, _ = project
    render_in_copies(root, ["typst"], env)
    assert (root / OUTPUT / "index.html").read_text() == "old site"
    assert (root / OUTPUT / "factcircuits.pdf").read_bytes() == b"%PDF new"


@pytest.mark.parametrize("broken", ["html", "typst"])
def test_a_failing_format_leaves_the_last_write_up_whole(project, broken, capsys):
    root, env, _ = project
    with pytest.raises(UserError, match=rf"--to {broken} \(exit 3\).*unchanged"):
        render_in_copies(root, ["html", "typst"], dict(env, FAKE_QUARTO_FAIL=broken))
    assert sorted(p.name for p in (root / OUTPUT).iterdir()) == ["index.html"]
    assert (root / OUTPUT / "index.html").read_text() == "old site"
    assert not list((root / "report").glob(".*"))
    if broken == "typst":  # the second format's log is shown after the first's
        assert "typst broke" in capsys.readouterr().out


def test_the_prerender_skips_only_projects_whose_pages_were_written(project, monkeypatch):
    root, _, _ = project
    monkeypatch.setenv(PAGES_WRITTEN_ENV, os.pathsep.join(["/elsewhere", str(root)]))
    assert pages_written(root) and not pages_written(root / "report")
    monkeypatch.setenv("QUARTO_PROJECT_DIR", str(root))
    wrote = []
    monkeypatch.setattr("factcircuits.report.pages.main", lambda: wrote.append(1))
    book_copies.prerender()
    assert wrote == []
    monkeypatch.delenv(PAGES_WRITTEN_ENV)
    book_copies.prerender()
    assert wrote == [1]


def test_copies_of_a_killed_render_are_removed_and_a_live_ones_kept(project):
    root, env, _ = project
    dead = root / "report" / ".render-html-99999999-x1"  # above any pid_max: no such process
    live = root / "report" / f".render-typst-{os.getpid()}-x2"  # this process: alive
    for folder in (dead, live):
        (folder / "report").mkdir(parents=True)
    render_in_copies(root, ["html"], env)
    assert not dead.exists() and live.is_dir()
