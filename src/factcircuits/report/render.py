"""The write-up: `quarto render` when Quarto is installed, else a single preview HTML.

Quarto path: the book of `_quarto.yml`, its run-dependent parts written first
(`pages.write_generated`), rendered by Quarto in copies of its inputs (`book_copies`: the site
and the PDF at once): an HTML site in `report/_output/` and, with `--to pdf|all`, one PDF of
the whole write-up. `quarto render` at the root renders the same book, its pre-render writing
those parts. Every render (the preview too) is kept as a
version in `report/versions/` (`versions.py`), which `factcircuits publish` puts online.
Preview path (no Quarto): `report/_preview/index.html`, one self-contained file with the same
structure: the findings first, one section per run with its notebooks (results only, no
code), the comparison, then parameters and provenance; plotly.js inline once.
Archived as `report/archive/factcircuits-preview-<version>.html`.
"""

from __future__ import annotations

import html
import os
import shutil
import sys
from pathlib import Path

from factcircuits.errors import UserError
from factcircuits.files import atomic_create, atomic_write

PLOTLYJS_MARK = "factcircuits"  # output metadata set by display.init_notebook

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:auto;padding:1em 2em;color:#222}
.preview-banner{background:#fff3cd;border:1px solid #e0c36a;padding:.6em 1em;border-radius:4px}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:.2em .5em}
pre{background:#f6f8fa;padding:.5em;overflow-x:auto}
.jp-InputArea,.input_area{background:#f6f8fa}.notebook{border-top:1px solid #bbb;margin-top:2em}
section.run,#comparison,#provenance{border-top:3px solid #555;margin-top:3em}
nav.contents{background:#f6f8fa;padding:.5em 1em;border-radius:4px}
blockquote{border-left:4px solid #e0c36a;margin-left:0;padding-left:1em;color:#555}
"""


def render(to: str = "html", root: Path | None = None, runs_root: Path | None = None) -> list[Path]:
    """Render the write-up; returns the files written (rendered outputs and archived copies)."""
    from factcircuits.run.folders import project_root

    if to not in ("html", "pdf", "all"):
        raise UserError(f"--to {to}: choose html, pdf or all")
    root = Path(root or project_root())
    if shutil.which("quarto"):
        check_renderable(runs_root, root)
        return render_quarto(to, root)
    print(f"Quarto is not installed: writing a preview HTML with nbconvert instead"
          f"{' (no PDF without Quarto)' if to != 'html' else ''}; install Quarto for the "
          "full write-up")
    runs = _runs(root, runs_root)
    paths = list(write_preview(root, runs_root))
    return paths + [_record(paths[0].parent, root, runs, "preview")]


def _runs(root: Path, runs_root: Path | None) -> list:
    """The runs a render shows, read before it starts (a run finishing meanwhile is not in
    this version)."""
    from factcircuits.report.evidence import load_runs

    return load_runs(runs_root or root / "report" / "runs")


def _record(site: Path, root: Path, runs: list, kind: str) -> Path:
    """Keep this render as a version (report/versions/<id>/) for `factcircuits publish`."""
    from factcircuits.report.pages import version_info
    from factcircuits.report.versions import record_version

    return record_version(site, root, version_info(root, [ev.run_id for ev in runs]), runs,
                          kind)


def check_renderable(runs_root: Path | None, root: Path | None = None) -> None:
    """With Quarto, the book takes its chapters from the project's own `report/runs/`, so a
    runs folder elsewhere (--runs-dir, $FACTCIRCUITS_RUNS) would be silently left out: refused
    in one line (commands call this before a run, so the refusal comes first). The preview
    (no Quarto) reads any folder."""
    from factcircuits.run.folders import default_runs_root, project_root

    if not shutil.which("quarto"):
        return
    root = Path(root or project_root())
    wanted = Path(runs_root or default_runs_root()).resolve()
    inside = (root / "report" / "runs").resolve()
    if wanted != inside:
        raise UserError(f"runs folder {wanted}: Quarto renders only the runs in the project's "
                        f"{inside}; move the runs there, or render a copy of the project "
                        "whose report/runs/ holds them (FACTCIRCUITS_ROOT=<copy>)")


def render_quarto(to: str, root: Path) -> list[Path]:
    from factcircuits.report.book_copies import OUTPUT, render_in_copies
    from factcircuits.report.pages import write_generated

    # Quarto runs the pre-render script with `python` from PATH: it must be this
    # environment's Python, which has factcircuits.
    env = dict(os.environ, QUARTO_PYTHON=sys.executable,
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    runs = _runs(root, None)
    # The generated pages are written here, once, before Quarto starts: the copies that
    # Quarto renders (book_copies: the site and the PDF at once, without walking the
    # project's .venv) take them from the project, so both formats show the same version.
    write_generated(root)
    render_in_copies(root, {"html": ["html"], "pdf": ["typst"], "all": ["html", "typst"]}[to],
                     env)
    output = root / OUTPUT
    return [output, _record(output, root, runs, "quarto")]


def archive_copy(source: Path, archive: Path, stem: str) -> Path:
    """Copy `source` into the archive as `<stem><suffix>`; append-only: an archived file is
    never overwritten (a different render of the same version gets `-2`, `-3`, …; the same
    bytes again reuse the existing copy)."""
    archive.mkdir(parents=True, exist_ok=True)
    data = source.read_bytes()
    n = 1
    while True:
        target = archive / f"{stem}{'' if n == 1 else f'-{n}'}{source.suffix}"
        if atomic_create(target, data):  # whole or absent, never overwriting
            shutil.copystat(source, target)
            return target
        if target.read_bytes() == data:
            return target
        n += 1


def bibliography(root: Path) -> dict:
    """The works `[@key]` citations name: the project's `report/references.bib` (the
    checkout's when the project rendered has none, as a test's copy)."""
    from factcircuits.report.citations import BIB_FILE, read_bib
    from factcircuits.run.folders import project_root

    path = root / BIB_FILE
    return read_bib(path if path.is_file() else Path(project_root()) / BIB_FILE)


def _front_matter_to_heading(nb) -> None:
    """A run's notebooks carry Quarto's front matter once a Quarto render has given it
    (`report.pages.give_front_matter`); nbconvert drops raw cells, so show its title as a
    heading instead."""
    import nbformat
    import yaml

    first = nb.cells[0] if nb.cells else None
    if first is not None and first.cell_type == "raw" and first.source.startswith("---"):
        meta = yaml.safe_load(first.source.strip().strip("-")) or {}
        nb.cells[0] = nbformat.v4.new_markdown_cell(f"# {meta.get('title', '')}")
    # In the preview each notebook sits inside its run's section: one heading level down.
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = "\n".join("#" + line if line.startswith("#") else line
                                     for line in cell.source.splitlines())


def _notebook_body(path: Path, works: dict | None = None,
                   cited: list[str] | None = None) -> str:
    """One executed notebook as an HTML fragment, without its own copy of plotly.js; its
    markdown's citations as author–year text (`citations.cite_text`; keys met go to
    `cited`)."""
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    from factcircuits.report.citations import cite_text

    nb = nbformat.read(path, as_version=4)
    _front_matter_to_heading(nb)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = cite_text(cell.source, works or {}, cited)
    for cell in nb.cells:
        cell["outputs"] = [o for o in cell.get("outputs", [])
                           if o.get("metadata", {}).get(PLOTLYJS_MARK) != "plotlyjs"]
    # Reviewers read results: code is left out of the preview (the notebooks keep it), and
    # the parameters cells are replaced by the run's parameter table.
    tags = TagRemovePreprocessor(remove_input_tags={"remove-input", "hide-input"},
                                 remove_cell_tags={"remove-cell", "parameters",
                                                   "injected-parameters"},
                                 remove_all_outputs_tags={"remove-output"})
    exporter = HTMLExporter(template_name="basic", exclude_input=True,
                            exclude_input_prompt=True, exclude_output_prompt=True)
    exporter.register_preprocessor(tags, enabled=True)
    body, _ = exporter.from_notebook_node(nb)
    return body


def markdown_html(text: str) -> str:
    """Markdown (with tables) as an HTML fragment, for the preview."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


def write_preview(root: Path, runs_root: Path | None = None) -> tuple[Path, Path]:
    """Write report/_preview/index.html and its archived copy; returns both paths."""
    from plotly.offline import get_plotlyjs

    from factcircuits.report.citations import cite_text, references_markdown
    from factcircuits.report.compare import (
        comparison_figures,
        comparison_table,
        key_numbers_table,
        profile_figures,
    )
    from factcircuits.report.evidence import damaged_markdown, scan_evidence
    from factcircuits.report.glance import glance_figure
    from factcircuits.report.pages import (
        comparison_intro,
        part_title,
        provenance,
        run_part_markdown,
        version_info,
        version_markdown,
        write_up_title,
    )
    from factcircuits.report.synthesis import front_page_markdown

    runs_root = Path(runs_root or root / "report" / "runs")
    works, cited = bibliography(root), []
    runs, damaged = scan_evidence(runs_root)
    info = version_info(root, [ev.run_id for ev in runs])
    esc = html.escape
    titles = [(f"run-{ev.anchor}", part_title(i, ev)) for i, ev in enumerate(runs, 1)]
    contents = [("findings", "Findings"), *titles, ("comparison", "Comparison across runs"),
                ("provenance", "Appendix: parameters and provenance")]
    if works:
        contents.append(("references", "References"))
    book_title, book_subtitle = write_up_title(runs)
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>factcircuits write-up (preview) {esc(info['version'])}</title>",
        f"<style>{_CSS}</style>",
        f"<script type='text/javascript'>{get_plotlyjs()}</script>",  # the only copy
        "</head><body>",
        ("<div class='preview-banner'><strong>PREVIEW</strong>: rendered without Quarto "
         "(nbconvert), HTML only. The full write-up (a navigable site and one PDF) needs "
         "<code>quarto render</code>.</div>"),
        f"<h1>{esc(book_title)}</h1>", f"<p class='subtitle'><em>{esc(book_subtitle)}</em></p>",
        f"<div class='version'>{markdown_html(version_markdown(info))}</div>",
        "<nav class='contents'><strong>Contents</strong><ol>"
        + "".join(f"<li><a href='#{a}'>{esc(t)}</a></li>" for a, t in contents) + "</ol></nav>",
        "<section id='findings'><h1>Findings</h1>",
        *([glance.to_html(full_html=False, include_plotlyjs=False, include_mathjax=False)]
          if (glance := glance_figure(runs)) is not None else []),
        markdown_html(cite_text(damaged_markdown(damaged)
                                + front_page_markdown(runs, anchors=False), works, cited)),
        "</section>",
    ]
    for (anchor, title), ev in zip(titles, runs):
        parts.append(f"<section id='{anchor}' class='run'><h1>{esc(title)}</h1>"
                     f"<p>Run <code>{esc(ev.run_id)}</code>.</p>")
        if len(runs) > 1:  # the front page has the runs' table; the details open the run
            parts.append(markdown_html(cite_text(run_part_markdown(ev, anchors=False),
                                                 works, cited)))
        for nb in ev.record.get("notebooks", []):
            path = ev.folder / f"{nb['name']}.ipynb"
            if path.is_file():
                parts.append(f"<section class='notebook'>{_notebook_body(path, works, cited)}"
                             "</section>")
        parts.append("</section>")
    parts += ["<section id='comparison'><h1>Comparison across runs</h1>",
              markdown_html(comparison_intro(runs))]
    if len(runs) > 1:
        table = comparison_table(runs)
        parts.append("<div id='comparison-table'>" + key_numbers_table(table, runs).to_html(
            classes="comparison") + "</div>")
        for fig in comparison_figures(table, runs) + profile_figures(runs):
            parts.append(fig.to_html(full_html=False, include_plotlyjs=False,
                                     include_mathjax=False))
        # circuits across models by relative depth (issue 33.6)
        from factcircuits.report.circuit_depth import depth_markdown

        text, depth_fig = depth_markdown(runs)
        parts.append(markdown_html(text))
        if depth_fig is not None:
            parts.append(depth_fig.to_html(full_html=False, include_plotlyjs=False,
                                           include_mathjax=False))
    parts += ["</section>", "<section id='provenance'><h1>Appendix: parameters and "
              "provenance</h1>", markdown_html(provenance(runs=runs, level=2)), "</section>"]
    if works:
        parts += ["<section id='references'><h1>References</h1>",
                  markdown_html(references_markdown(cited, works) if cited else
                                "No work is cited in the parts shown here.\n"),
                  "</section>"]
    parts.append("</body></html>")
    out_dir = root / "report" / "_preview"
    out_dir.mkdir(parents=True, exist_ok=True)
    # Atomic: a fault (a full disk) leaves the last good preview, never a truncated one.
    page = atomic_write(out_dir / "index.html", "\n".join(parts))
    archive = archive_copy(page, root / "report" / "archive",
                           f"factcircuits-preview-{info['version']}")
    return page, archive
