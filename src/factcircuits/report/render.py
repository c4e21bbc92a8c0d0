"""The write-up: `quarto render` when Quarto is installed, else a single preview HTML.

Quarto path: `quarto render [--to html|typst]` at the project root (its pre-render writes the
generated pages), then copies of the outputs go to `report/archive/<version>/` so earlier
versions stay available.
Preview path (no Quarto): `report/_preview/index.html`, one self-contained file: a banner
saying it is a preview, the version stamp, the run list, the comparison table and plots, and
every executed notebook (nbconvert, inputs tagged remove-input hidden); plotly.js inline once.
Archived as `report/archive/factcircuits-preview-<version>.html`.
"""

from __future__ import annotations

import datetime as dt
import html
import os
import shutil
import subprocess
import sys
from pathlib import Path

from factcircuits.errors import UserError

PLOTLYJS_MARK = "factcircuits"  # output metadata set by display.init_notebook

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:auto;padding:1em 2em;color:#222}
.preview-banner{background:#fff3cd;border:1px solid #e0c36a;padding:.6em 1em;border-radius:4px}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:.2em .5em}
pre{background:#f6f8fa;padding:.5em;overflow-x:auto}
.jp-InputArea,.input_area{background:#f6f8fa}.notebook{border-top:2px solid #888;margin-top:2em}
"""


def render(to: str = "html", root: Path | None = None, runs_root: Path | None = None) -> list[Path]:
    """Render the write-up; returns the files written (rendered outputs and archived copies)."""
    from factcircuits.run.folders import project_root

    if to not in ("html", "pdf", "all"):
        raise UserError(f"--to {to}: choose html, pdf or all")
    root = Path(root or project_root())
    if shutil.which("quarto"):
        return render_quarto(to, root)
    print(f"Quarto is not installed: writing a preview HTML with nbconvert instead"
          f"{' (no PDF without Quarto)' if to != 'html' else ''}; install Quarto for the "
          "full write-up")
    return list(write_preview(root, runs_root))


def render_quarto(to: str, root: Path) -> list[Path]:
    from factcircuits.report.pages import version_info, write_generated

    write_generated(root)  # pre-render does it too; here so the version is known below
    formats = {"html": ["html"], "pdf": ["typst"], "all": ["html", "typst"]}[to]
    # Quarto runs the pre-render script with `python` from PATH and the comparison page with
    # QUARTO_PYTHON: both must be this environment's Python, which has factcircuits.
    env = dict(os.environ, QUARTO_PYTHON=sys.executable,
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    for fmt in formats:
        proc = subprocess.run(["quarto", "render", "--to", fmt], check=False, cwd=root, env=env)
        if proc.returncode != 0:
            raise UserError(f"quarto render --to {fmt} failed (exit {proc.returncode}); "
                            "see its output above")
    output = root / "report" / "_output"
    return [output, *archive_outputs(output, root / "report" / "archive", version_info(root, []))]


def archive_outputs(output: Path, archive: Path, info: dict) -> list[Path]:
    """Keep every rendered HTML/PDF as `<name>-<version>-<time>.<ext>` so that the versions
    reviewers saw stay available after the next render."""
    stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    kept = []
    for path in sorted(output.rglob("*")):
        if path.suffix in (".html", ".pdf") and path.is_file():
            name = "-".join(path.relative_to(output).with_suffix("").parts)
            kept.append(archive_copy(path, archive, f"{name}-{info['version']}-{stamp}"))
    return kept


def archive_copy(source: Path, archive: Path, stem: str) -> Path:
    """Copy `source` into the archive as `<stem><suffix>`; append-only: an archived file is
    never overwritten (a different render of the same version gets `-2`, `-3`, …; the same
    bytes again reuse the existing copy)."""
    archive.mkdir(parents=True, exist_ok=True)
    data = source.read_bytes()
    n = 1
    while True:
        target = archive / f"{stem}{'' if n == 1 else f'-{n}'}{source.suffix}"
        try:
            with open(target, "xb") as handle:  # exclusive: fails if it exists
                handle.write(data)
            shutil.copystat(source, target)
            return target
        except FileExistsError:
            if target.read_bytes() == data:
                return target
            n += 1


def _front_matter_to_heading(nb) -> None:
    """nbconvert drops raw cells: show the Quarto front matter's title as a heading instead."""
    import nbformat
    import yaml

    first = nb.cells[0] if nb.cells else None
    if first is not None and first.cell_type == "raw" and first.source.startswith("---"):
        meta = yaml.safe_load(first.source.strip().strip("-")) or {}
        nb.cells[0] = nbformat.v4.new_markdown_cell(f"# {meta.get('title', '')}")


def _notebook_body(path: Path) -> str:
    """One executed notebook as an HTML fragment, without its own copy of plotly.js."""
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    nb = nbformat.read(path, as_version=4)
    _front_matter_to_heading(nb)
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


def _anchor(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text)


def write_preview(root: Path, runs_root: Path | None = None) -> tuple[Path, Path]:
    """Write report/_preview/index.html and its archived copy; returns both paths."""
    import pandas as pd
    from plotly.offline import get_plotlyjs

    from factcircuits.report.compare import (
        comparison_figures,
        comparison_table,
        full_table,
        key_table,
    )
    from factcircuits.report.pages import version_info
    from factcircuits.run.folders import list_runs

    runs_root = Path(runs_root or root / "report" / "runs")
    runs = list_runs(runs_root)
    info = version_info(root, [r["run_id"] for r in runs])
    table = comparison_table(runs_root)
    esc = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>factcircuits write-up (preview) {esc(info['version'])}</title>",
        f"<style>{_CSS}</style>",
        f"<script type='text/javascript'>{get_plotlyjs()}</script>",  # the only copy
        "</head><body>",
        ("<div class='preview-banner'><strong>PREVIEW</strong>: rendered without Quarto "
         "(nbconvert). The full write-up with narrative, cross-references and PDF needs "
         "<code>quarto render</code>.</div>"),
        "<h1>factcircuits: where language models store and retrieve facts</h1>",
        (f"<p class='version'>Version <strong>{esc(info['version'])}</strong> · factcircuits "
         f"{esc(info['package'])} · commit <code>{esc(info['commit'])}</code> · rendered "
         f"{esc(info['date'])} · runs: {esc(', '.join(info['runs']) or 'none')}</p>"),
        "<h2>Runs</h2>",
    ]
    if runs:
        parts.append("<ul>" + "".join(
            f"<li><a href='#run-{_anchor(r['run_id'])}'>{esc(r['run_id'])}</a> "
            f"({esc(str(r.get('status')))}, finished {esc(str(r.get('finished')))})</li>"
            for r in runs) + "</ul>")
    else:
        parts.append("<p>No runs yet: run <code>factcircuits run</code> first.</p>")
    parts.append("<h2 id='comparison'>Comparison across runs</h2>")
    with pd.option_context("display.float_format", "{:.4g}".format):
        parts.append(key_table(table).to_html(index=False, classes="comparison", na_rep="",
                                              table_id="comparison-table"))
        for fig in comparison_figures(table, runs_root):
            parts.append(fig.to_html(full_html=False, include_plotlyjs=False,
                                     include_mathjax=False))
        if len(table):
            parts.append("<details><summary>Every headline number</summary>"
                         + full_table(table).to_html(classes="comparison", na_rep="")
                         + "</details>")
    for run in runs:
        parts.append(f"<h2 id='run-{_anchor(run['run_id'])}'>Run {esc(run['run_id'])}</h2>")
        params = pd.DataFrame(sorted(run.get("parameters", {}).items()),
                              columns=["parameter", "value"])
        parts.append("<details><summary>Parameters</summary>"
                     + params.to_html(index=False, classes="comparison") + "</details>")
        for nb in run.get("notebooks", []):
            path = Path(run["run_dir"]) / f"{nb['name']}.ipynb"
            parts.append(f"<section class='notebook'><h3>{esc(nb['name'])}</h3>"
                         f"{_notebook_body(path)}</section>")
    parts.append("</body></html>")
    out_dir = root / "report" / "_preview"
    out_dir.mkdir(parents=True, exist_ok=True)
    page = out_dir / "index.html"
    page.write_text("\n".join(parts), encoding="utf-8")
    archive = archive_copy(page, root / "report" / "archive",
                           f"factcircuits-preview-{info['version']}")
    return page, archive
