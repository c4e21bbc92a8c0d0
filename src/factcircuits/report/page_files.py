"""The front page, the comparison, the provenance appendix and the run-dependent parts of the
methods appendix as plain markdown files, written by the pre-render so that Quarto renders
the book's own pages without executing code (no Jupyter kernel per page and format).

`write_pages(root, runs, damaged)` writes `report/_generated/pages/<name>.md`; each page
(`index.qmd`, `report/comparison.qmd`, `report/provenance.qmd`, `report/methods.qmd`) holds
a placeholder `::: {.generated file="report/_generated/pages/<name>.md"}` that the Lua filter
`report/generated.lua` replaces with the file's markdown when Quarto renders the page, after
the pre-render (an include shortcode would be read while Quarto lists the project, before
the pre-render, and fail on a fresh clone).

A figure is written twice, as the notebooks' figures are (`run.display`): the interactive
plotly figure as a raw HTML block (plotly.js inline once per page, which the post-render
moves into one site file: `report.offline`) and, for formats without HTML (the PDF), a PNG
made with kaleido, or a note saying why there is none. A PNG is named by its figure's content:
a render of the same runs reuses it and starts no browser.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from factcircuits.files import atomic_write
from factcircuits.results.run import Run

PAGES = Path("report") / "_generated" / "pages"
FIGURES = PAGES / "figures"
# Each page's folder in the project: image paths in its markdown are relative to it.
PAGE_FILES = {"front": Path("index.qmd"), "comparison": Path("report") / "comparison.qmd",
              "provenance": Path("report") / "provenance.qmd"}


def page_markdown_path(page: str) -> Path:
    """Where the pre-render writes `page`'s markdown, relative to the project."""
    return PAGES / f"{page}.md"


def raw_html(html: str) -> str:
    """A raw HTML block (kept in HTML output, dropped elsewhere), fenced by more backticks
    than the HTML holds in a row."""
    longest = max((len(m) for m in re.findall(r"`+", html)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{{=html}}\n{html}\n{fence}\n"


def html_only(markdown: str) -> str:
    return f'::: {{.content-visible when-format="html"}}\n{markdown}\n:::\n'


def unless_html(markdown: str) -> str:
    return f'::: {{.content-visible unless-format="html"}}\n{markdown}\n:::\n'


@dataclass
class FigureWriter:
    """Turns plotly figures into markdown for one page: plotly.js before the page's first
    figure, the figure's HTML, and its PNG (written under `root/FIGURES`) for the PDF."""

    root: Path
    page: str
    static: bool | None = None  # None: export PNGs when kaleido and a Chromium are here
    written: list[Path] = field(default_factory=list)
    _count: int = 0

    def __post_init__(self) -> None:
        from factcircuits.run.display import static_export_problem

        self.problem = static_export_problem()
        if self.static is None:
            self.static = self.problem is None

    def markdown(self, fig) -> str:
        import plotly.io as pio
        from plotly.offline import get_plotlyjs

        from factcircuits.run.display import figure_bundle

        fig_dict = fig.to_dict()
        # A figure's PNG is named by its content: a render of the same runs reuses it and
        # starts no browser.
        path = self.root / FIGURES / f"{self.page}-{figure_key(fig)}.png"
        # On the site a page's figure takes the text column's width (a fixed 900 px cut the
        # front page's depth axis at a third, behind a scroll bar); the PNG keeps its size.
        fitted = {**fig_dict, "layout": {k: v for k, v in (fig_dict.get("layout") or {}).items()
                                         if k != "width"} | {"autosize": True}}
        html = pio.to_html(fitted, include_plotlyjs=False, include_mathjax=False,
                           full_html=False, default_width="100%", validate=False)
        if self.static and path.is_file():
            bundle = {"text/html": html}
        else:
            if self.static:
                start_image_export()
            bundle = figure_bundle(fig_dict, bool(self.static),
                                   self.problem or "static export switched off")
            if "image/png" in bundle:
                atomic_write(path, base64.b64decode(bundle["image/png"]))
            bundle["text/html"] = html
        # the interactive figure (without plotly.js), in the text column
        html = f'<div class="cell-output-display" style="overflow-x:auto">\n' \
               f'{bundle["text/html"]}\n</div>'
        if self._count == 0:  # plotly.js once per page, before its first figure
            html = f'<script type="text/javascript">{get_plotlyjs()}</script>\n' + html
        self._count += 1
        if "text/markdown" not in bundle:  # the PNG is there
            self.written.append(path)
            page_dir = (self.root / PAGE_FILES[self.page]).parent
            rel = Path(os.path.relpath(path, page_dir)).as_posix()
            printed = f"![]({rel}){{width=100%}}\n"
        else:  # why there is no image, in the PDF (as a notebook's figure would say)
            printed = bundle["text/markdown"]
        return raw_html(html) + "\n" + unless_html(printed)


def figure_key(fig) -> str:
    """A figure's content and image size, hashed."""
    import plotly.io as pio

    from factcircuits.run.display import PNG_HEIGHT, PNG_SCALE, PNG_WIDTH

    text = pio.to_json(fig, validate=False, pretty=False) + f"{PNG_WIDTH}{PNG_HEIGHT}{PNG_SCALE}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_export: dict[str, bool] = {}


def start_image_export() -> None:
    """One persistent browser for the PNGs (~0.2 s a figure instead of ~4 s of start-up),
    started at the first figure of the process."""
    if not _export.get("started"):
        import warnings

        import kaleido

        # plotly passes per-call options the server ignores, and says so at every figure
        warnings.filterwarnings("ignore", message="The kopts argument is ignored")
        kaleido.start_sync_server(silence_warnings=True)
        _export["started"] = True


def markdown_table(frame: pd.DataFrame) -> str:
    """A pipe table of `frame` with its index as the first column (cells as text, `|`
    escaped)."""
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = [frame.index.name or "", *map(str, frame.columns)]
    lines = ["| " + " | ".join(map(cell, header)) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in (index, *row)) + " |"
              for index, row in zip(frame.index, frame.itertuples(index=False))]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ the three pages
def front_markdown(root: Path, runs: list[Run], damaged: list[tuple[str, str]],
                   figures: FigureWriter) -> str:
    """The front page: the findings at a glance (figure), the version, the runs left out and
    the synthesis."""
    from factcircuits.report.glance import glance_figure
    from factcircuits.report.pages import front_page

    glance = glance_figure(runs)
    parts = [figures.markdown(glance)] if glance is not None else []
    return "\n".join(parts + [front_page(root, evidence=(runs, damaged))])


def comparison_markdown(runs: list[Run], figures: FigureWriter) -> str:
    """The comparison: who is compared and how; with several runs the key numbers with their
    intervals, the figures and the per-layer profiles."""
    from factcircuits.report.circuit_depth import depth_markdown
    from factcircuits.report.compare import (
        comparison_figures,
        comparison_table,
        key_numbers_table,
        profile_figures,
    )
    from factcircuits.report.pages import comparison_intro

    parts = [comparison_intro(runs)]
    if len(runs) > 1:
        table = comparison_table(runs)
        parts.append(markdown_table(key_numbers_table(table, runs)))
        parts += [figures.markdown(fig)
                  for fig in comparison_figures(table, runs) + profile_figures(runs)]
        # circuits across models by relative depth (issue 33.6)
        text, depth_fig = depth_markdown(runs)
        parts += [text] + ([figures.markdown(depth_fig)] if depth_fig is not None else [])
    return "\n".join(parts)


def provenance_markdown(runs: list[Run]) -> str:
    from factcircuits.report.pages import provenance

    return provenance(runs=runs, level=2)


def head_roles_markdown() -> str:
    """The methods appendix's head roles, with the thresholds the library holds
    (methods/circuits/roles.py)."""
    from factcircuits.methods.circuits.roles import MIXED_FLOOR, READS

    return f"""- **Head roles** [@chughtai2024summing; @yao2024knowledge; @geva2023dissecting]: for
  every query head of the 80 % circuit, on the clean prompts of the run's pairs, the last
  token's attention summed over the subject tokens, the relation tokens (the prompt's other
  words), the last token and the rest (BOS, a format prefix), and the head's DLA split by the
  source position it reads: attention weight × that position's value through the head's
  output matrix, projected on the answer direction (the parts add up to the head's DLA). Each
  source's share is a ratio of means over prompts, with a bootstrap interval. A **mover**
  writes the answer (mean DLA above 0, its 95 % interval too) and its subject share's interval
  lies above {READS:.0%}; a **relation** head likewise through the relation tokens; a
  **mixed** head writes the answer with subject and relation tokens each carrying at least
  {MIXED_FLOOR:.0%} (point estimates) and neither a resolved majority; every other head is
  **other** (no resolved positive direct effect: it may act through the heads and MLPs it
  feeds, or it writes mostly from the last token or BOS). The attention shares are reported
  beside the role, not used by it.
"""


def write_pages(root: Path, runs: list[Run], damaged: list[tuple[str, str]],
                static: bool | None = None) -> list[Path]:
    """Write the three pages' markdown (and their figures' PNGs) into `root`; returns the
    files written. Figures no page shows any more are removed."""
    from factcircuits.report.pages import models_as_loaded

    front = FigureWriter(root, "front", static)
    comparison = FigureWriter(root, "comparison", static)
    texts = {"front": front_markdown(root, runs, damaged, front),
             "comparison": comparison_markdown(runs, comparison),
             "provenance": provenance_markdown(runs),
             "head-roles": head_roles_markdown(),
             "models-as-loaded": models_as_loaded(runs)}
    written = []
    for page, text in texts.items():
        path = root / page_markdown_path(page)
        path.parent.mkdir(parents=True, exist_ok=True)
        written.append(atomic_write(path, "<!-- Written by factcircuits.report.page_files "
                                    "before each render; do not edit. -->\n\n" + text))
    figures = front.written + comparison.written
    folder = root / FIGURES
    for stale in set(folder.glob("*.png") if folder.is_dir() else ()) - set(figures):
        stale.unlink()
    return written + figures

