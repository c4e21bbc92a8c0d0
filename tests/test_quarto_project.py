"""The Quarto book renders in every state of a checkout: fresh (no generated files), zero
runs, runs with leftover staging and failed folders. Quarto is not needed here: this checks
the project statically, in Quarto's order (config and includes are read before the
pre-render script runs), and runs the pre-render on a copy of the project."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from test_findings import make_run

ROOT = Path(__file__).resolve().parents[1]
SHORTCODE = re.compile(r"\{\{<\s*(include|embed)\s+([^\s>]+)")
LINK = re.compile(r"\]\((?!https?:|#|mailto:)([^)#\s]+)")


def config() -> dict:
    return yaml.safe_load((ROOT / "_quarto.yml").read_text())


def project_pages(root: Path = ROOT) -> list[Path]:
    return [root / entry for entry in config()["project"]["render"]]


def copy_project(target: Path) -> Path:
    """The files Quarto reads, as in a fresh clone (no report/_generated, no runs)."""
    project = config()["project"]
    filters = [f["path"] if isinstance(f, dict) else f for f in config().get("filters", [])]
    for page in ["_quarto.yml", project["pre-render"], project["post-render"], *project["render"],
                 config()["bibliography"], *filters]:
        (target / page).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / page, target / page)
    return target


def pre_render(project: Path) -> dict:
    """Run the pre-render as Quarto does (QUARTO_PROJECT_DIR set, cwd = project) and return
    the generated metadata file."""
    env = dict(os.environ, QUARTO_PROJECT_DIR=str(project))
    subprocess.run([sys.executable, config()["project"]["pre-render"]], cwd=project, env=env,
                   check=True)
    return yaml.safe_load((project / "report" / "_generated" / "book.yml").read_text())


def test_book_with_one_pdf_and_static_pages_that_exist():
    project = config()["project"]
    assert project["type"] == "book" and (ROOT / project["pre-render"]).is_file()
    for page in project_pages():
        assert page.is_file(), page
    book = config()["book"]
    assert book["chapters"][0] == "index.qmd"  # the findings come first
    assert set(book["appendices"]) <= set(project["render"])
    assert config()["metadata-files"] == ["report/_generated/book.yml"]
    assert config()["format"]["typst"]["echo"] is False  # no code in the PDF
    assert config()["format"]["html"]["code-fold"] is True  # folded in the HTML


def test_pages_never_include_a_generated_file():
    # Quarto expands includes while it lists the project, before the pre-render runs: a page
    # that includes report/_generated/* fails on a fresh clone.
    for page in project_pages():
        for kind, target in SHORTCODE.findall(page.read_text()):
            assert "_generated" not in target, f"{page.name} {kind}s {target}"
            assert (page.parent / target.split("#")[0]).exists(), f"{page.name} -> {target}"
        for link in LINK.findall(page.read_text()):
            assert (page.parent / link).exists(), f"{page.name} -> {link}"


def test_pre_render_writes_into_the_rendered_project_not_the_checkout(tmp_path):
    generated = ROOT / "report" / "_generated" / "book.yml"
    before = generated.stat().st_mtime_ns if generated.exists() else None
    project = copy_project(tmp_path / "copy")
    book = pre_render(project)
    after = generated.stat().st_mtime_ns if generated.exists() else None
    assert before == after  # the checkout was not touched
    # zero runs: no part, nothing extra to render, the title page says so
    assert "chapters" not in book["book"] or book["book"]["chapters"] == []
    assert "project" not in book
    assert "No runs yet" in book["book"]["subtitle"]


def test_pre_render_with_runs_and_leftovers(tmp_path):
    project = copy_project(tmp_path / "copy")
    runs = project / "report" / "runs"
    for run_id in ("b__y__2", "a__x__1"):
        folder = make_run(runs, run_id)
        for name in ("01_task_check", "02_logit_lens"):
            (folder / f"{name}.ipynb").write_text("{}")
    record = (runs / "a__x__1" / "run.json")
    record.write_text(record.read_text().replace(
        '[{"name": "01_task_check"', '[{"name": "02_logit_lens"}, {"name": "01_task_check"'))
    # an interrupted run and a failed attempt hold notebooks too: never part of the book
    for leftover in ("_staging-c__z__3-20250101", "_failed/c__z__3-20250101"):
        (runs / leftover).mkdir(parents=True)
        (runs / leftover / "01_task_check.ipynb").write_text("{}")
    book = pre_render(project)
    parts = book["book"]["chapters"]
    # several runs: each part opens with a page of the run's detailed findings, titled by it
    pages = ["report/_generated/run-a--x--1.qmd", "report/_generated/run-b--y--2.qmd"]
    assert [p["part"] for p in parts] == pages
    for page, title in zip(pages, ("Run 1: toy-model on toy-facts",
                                   "Run 2: toy-model on toy-facts")):
        text = (project / page).read_text()
        assert text.startswith(f"# {title}") and "**In short.**" in text
        # in the PDF the findings start after the part page (its contents at the foot), in a
        # raw typst block the site drops
        head, body = text.split("```{=typst}\n#pagebreak(weak: true)\n```\n", 1)
        assert "**In short.**" in body and "**In short.**" not in head
        assert "## toy-model on toy-facts" not in text  # the part title is the heading
    # notebooks in the order run.json lists them (01 only for b: the only one it records)
    assert parts[0]["chapters"] == ["report/runs/a__x__1/02_logit_lens.ipynb",
                                    "report/runs/a__x__1/01_task_check.ipynb"]
    assert parts[1]["chapters"] == ["report/runs/b__y__2/01_task_check.ipynb"]
    assert book["project"]["render"] == ([pages[0]] + parts[0]["chapters"] + [pages[1]]
                                         + parts[1]["chapters"])
    # title and subtitle scoped to what the runs can test: model, dataset, prompts scored
    assert book["book"]["title"] == "Fact recall in toy-model: a case study on 20 cloze prompts"
    assert book["book"]["subtitle"].startswith("toy-facts (20 prompts) · what these prompts "
                                               "show about this model, not how")
    assert "version 0.1.0+" in book["book"]["subtitle"]
    # a run deleted since: its part page goes with it
    shutil.rmtree(runs / "b__y__2")
    book = pre_render(project)
    assert [p["part"] for p in book["book"]["chapters"]] == ["Run 1: toy-model on toy-facts"]
    assert not list((project / "report" / "_generated").glob("run-*.qmd"))


def test_front_page_and_provenance_read_the_rendered_project(tmp_path, monkeypatch):
    from factcircuits.report import pages

    project = copy_project(tmp_path / "copy")
    monkeypatch.setenv("QUARTO_PROJECT_DIR", str(project))
    assert "There are no runs yet" in pages.front_page()
    make_run(project / "report" / "runs", "a__x__1")
    front = pages.front_page()
    assert "**Runs:** `a__x__1`" in front and "**In short.**" in front
    appendix = pages.provenance()
    assert "| seed | 0 |" in appendix and "| weights_sha256 | ffffffffffffffff… |" in appendix
    assert "| 01_task_check | ok | 1.5 |" in appendix
