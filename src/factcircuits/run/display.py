"""Notebook display setup: plotly figures that survive papermill, nbconvert and Quarto.

Call `init_notebook()` in the first (setup) cell of every analysis notebook. It
- loads plotly.js once, inline and offline, as a (hidden-but-kept) output of that cell, so
  every later figure only carries its data (plotly's own notebook renderer would also pull
  MathJax from a CDN, and papermill's default renderer emits only a mimetype nobody renders).
  That output carries an empty `text/markdown` too: formats without HTML (the PDF) show that
  instead of the object's repr;
- makes every figure output carry `text/html` (interactive, for HTML) and `image/png` (for the
  PDF) when kaleido and a Chromium are available; otherwise, or when one figure cannot be
  exported, a visible `text/markdown` placeholder that says why (never a silent gap);
- formats tables with a few significant digits, so that they read well and fit a page;
- shows a cell's last expression only when it has a rich display (a table, a figure, Markdown):
  a value whose only display is its plain-text repr (`out.save(...)`'s paths, an array, a
  matplotlib `<Figure …>`, a number) is left out, so no repr reaches the site or the PDF.
"""

from __future__ import annotations

import base64
import concurrent.futures
import os
import shutil

_BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
_state: dict[str, bool] = {}
# Static images for the PDF at the figure's own size (or these defaults): 900 px across A4
# text is 150 ppi, sharp on screen; each run adds ~25 figures, and scale 2 made the PDF grow
# by 2 MB per run (scale 1: about 0.6 MB).
PNG_WIDTH, PNG_HEIGHT, PNG_SCALE = 900, 500, 1
# A figure exports in well under a second through the persistent browser; a Chromium that
# stops answering would otherwise hold the run forever. Past this deadline the figure gets a
# placeholder saying so, and so does every later figure of the kernel (a browser that hung
# once is not asked again: each figure would wait out the deadline).
EXPORT_DEADLINE_S = 120.0
_export_hung: list[str] = []


def static_export_problem() -> str | None:
    """Why figures cannot be exported as images here, or None when they can."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return "kaleido is not installed (pip install 'kaleido>=1')"
    tmp = os.environ.get("TMPDIR")
    if tmp and not (os.path.isdir(tmp) and os.access(tmp, os.W_OK | os.X_OK)):
        # Chromium writes its profile there: with a missing folder it never starts and the
        # export would wait forever
        return f"TMPDIR={tmp} is not a writable folder, so Chromium cannot start (set TMPDIR " \
               "to one, or unset it)"
    path = os.environ.get("BROWSER_PATH")
    if (path and os.path.exists(path)) or any(shutil.which(b) for b in _BROWSERS):
        return None
    return "no Chromium for kaleido on this machine (apt-get install chromium)"


def static_export_available() -> bool:
    """True when kaleido is importable and a Chromium it can drive is on this machine."""
    return static_export_problem() is None


def figure_title(fig_dict: dict) -> str:
    title = (fig_dict.get("layout") or {}).get("title") or {}
    text = title.get("text") if isinstance(title, dict) else str(title)
    return text or "untitled figure"


def placeholder_markdown(fig_dict: dict, reason: str) -> str:
    """What a format without interactive HTML (the PDF) shows instead of a figure."""
    return (f"> **Figure not available as an image:** *{figure_title(fig_dict)}*. "
            f"It is in the HTML version only ({reason}).\n")


def figure_bundle(fig_dict: dict, static: bool, problem: str | None = None) -> dict[str, str]:
    """The mime bundle of one figure: interactive HTML (no plotly.js, no CDN) plus a PNG, or
    a placeholder saying why there is no PNG."""
    import plotly.io as pio

    html = pio.to_html(fig_dict, include_plotlyjs=False, include_mathjax=False,
                       full_html=False, default_width="100%", validate=False)
    bundle = {"text/html": html}
    if not static:
        bundle["text/markdown"] = placeholder_markdown(fig_dict, problem or "no static export")
        return bundle
    layout = fig_dict.get("layout") or {}
    if _export_hung:
        bundle["text/markdown"] = placeholder_markdown(fig_dict, _export_hung[0])
        return bundle
    try:
        png = _png_within_deadline(
            lambda: pio.to_image(fig_dict, format="png", validate=False, scale=PNG_SCALE,
                                 width=layout.get("width") or PNG_WIDTH,
                                 height=layout.get("height") or PNG_HEIGHT))
    except concurrent.futures.TimeoutError:
        _export_hung.append(f"the image export did not finish within {EXPORT_DEADLINE_S:g} s; "
                            "later figures were not exported either")
        bundle["text/markdown"] = placeholder_markdown(fig_dict, _export_hung[0])
        return bundle
    except Exception as exc:  # any exporter failure becomes a visible note
        reason = f"image export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
        bundle["text/markdown"] = placeholder_markdown(fig_dict, reason)
        return bundle
    bundle["image/png"] = base64.b64encode(png).decode("ascii")
    return bundle


def _png_within_deadline(export) -> bytes:
    """`export()` in a worker thread, waited for at most EXPORT_DEADLINE_S (TimeoutError after
    that; the stuck thread is left behind, it holds no lock the notebook needs)."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="png")
    try:
        return pool.submit(export).result(timeout=EXPORT_DEADLINE_S)
    finally:
        pool.shutdown(wait=False)


def _register_renderer(static: bool, problem: str | None) -> None:
    import plotly.io as pio
    from plotly.io._base_renderers import MimetypeRenderer

    class OfflineFigure(MimetypeRenderer):
        """A figure's div + script (plotly.js is loaded once by init_notebook) and a PNG."""

        def to_mimebundle(self, fig_dict):
            return figure_bundle(fig_dict, static, problem)

    pio.renderers["factcircuits"] = OfflineFigure()
    pio.renderers.default = "factcircuits"


def _short_warning_paths() -> None:
    """Warnings name their file by basename: full paths (a venv in the user's home) would
    otherwise land in the executed notebook and fail the pipeline's home-path scan."""
    import warnings

    original = warnings.formatwarning

    def formatwarning(message, category, filename, lineno, line=None):
        return original(message, category, os.path.basename(filename), lineno, line)

    warnings.formatwarning = formatwarning


def _table_format() -> None:
    """Tables that read well and fit an A4 page: four decimals, long texts cut at 60
    characters, and at most 10 columns (wider tables show their first and last five around a
    '…' column; the run's results/*.csv files hold every column)."""
    import pandas as pd

    pd.set_option("display.precision", 4)
    pd.set_option("styler.format.precision", 4)
    pd.set_option("display.max_colwidth", 60)
    pd.set_option("display.max_columns", 10)
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with the notebook stack
        return
    shell = get_ipython()
    if shell is not None:
        shell.display_formatter.formatters["text/html"].for_type(pd.DataFrame, table_html)


def table_html(frame) -> str:
    """A table's HTML as the notebooks show it: pandas' own, without the row numbers of a
    default index (0, 1, 2, … carry no information and cost an A4 column); any other index
    (a dataset's row numbers, names) is kept."""
    import pandas as pd

    index = frame.index
    numbered = isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1
    return frame.to_html(index=not numbered, notebook=True,
                         max_rows=pd.get_option("display.max_rows"),
                         max_cols=pd.get_option("display.max_columns"),
                         show_dimensions=pd.get_option("display.show_dimensions"))


def rich_only(format_dict: dict, md_dict: dict) -> tuple[dict, dict]:
    """A last expression's mime bundle as the notebook keeps it: unchanged when it has a rich
    display (HTML, Markdown, an image, JSON), empty (nothing is output) when its only display
    is the plain-text repr."""
    if set(format_dict) <= {"text/plain"}:
        return {}, {}
    return format_dict, md_dict


def _quiet_plain_results() -> None:
    """Leave out last-expression values that only have a text repr (see `rich_only`): done in
    the kernel's display hook, so it holds for every cell and every value, whichever
    notebook. Idempotent; a no-op outside IPython."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with the notebook stack
        return
    shell = get_ipython()
    hook = getattr(shell, "displayhook", None)
    if hook is None or getattr(hook, "_factcircuits_rich_only", False):
        return
    compute = hook.compute_format_data

    def compute_format_data(result):
        return rich_only(*compute(result))

    hook.compute_format_data = compute_format_data
    hook._factcircuits_rich_only = True


def init_notebook(static: bool | None = None) -> None:
    """Set plotly's renderer and load plotly.js once (see module docstring)."""
    import warnings

    from IPython.display import display
    from plotly.offline import get_plotlyjs

    _short_warning_paths()
    _table_format()
    _quiet_plain_results()
    # Known harmless notices that would otherwise repeat in every run's log: kaleido's server
    # ignores per-call options, and text progress bars are used on purpose (no ipywidgets).
    warnings.filterwarnings("ignore", message="The kopts argument is ignored")
    warnings.filterwarnings("ignore", message="IProgress not found")
    problem = static_export_problem()
    if static is None:
        static = problem is None
    if static and not _state.get("kaleido"):
        import kaleido

        # One persistent browser: ~0.2 s per figure instead of ~4 s of browser start-up.
        kaleido.start_sync_server(silence_warnings=True)
        _state["kaleido"] = True
    if not static and not os.environ.get("FACTCIRCUITS_PIPELINE"):
        print(f"note: figures are interactive HTML only, no PDF images: {problem}")
    _register_renderer(static, problem or "static export switched off")
    display({"text/html": f'<script type="text/javascript">{get_plotlyjs()}</script>',
             "text/markdown": ""}, raw=True, metadata={"factcircuits": "plotlyjs"})


def diverging_limit(values, floor: float = 1.0) -> float:
    """The half-width of a colour scale centred on 0 that covers every value: max(|values|,
    floor) (NaN ignored). A normalized effect is mostly within ±1, but overshoots (1.07) and
    negative effects must not be clipped to the scale's end colour."""
    import numpy as np

    array = np.asarray(values, dtype=float)
    finite = np.abs(array[np.isfinite(array)])
    return max(float(finite.max()) if finite.size else 0.0, floor)


def media_note(html: str, pdf: str) -> None:
    """A note that differs between the site and the PDF (markdown each): the interactive
    version's ('pick a head from the menu') and the static image's ('the image shows the
    first head'). One output with both: HTML formats show its `text/html`, the PDF its
    `text/markdown`."""
    from IPython.display import display
    from markdown_it import MarkdownIt

    display({"text/html": MarkdownIt("commonmark").render(html), "text/markdown": pdf},
            raw=True, metadata={"factcircuits": "media-note"})


def show(fig) -> None:
    """Show a plotly figure with the renderer set by `init_notebook`."""
    fig.show()


def show_pair(interactive, static_figure) -> None:
    """One output for a figure whose interactive and printed versions differ (the circuit: a
    slider over sizes on the site, a drawing with no overlapping label in the PDF): HTML
    formats show `interactive`, the PDF a PNG of `static_figure` (or the placeholder that says
    why there is none). Outside `init_notebook`, both are shown."""
    import plotly.io as pio
    from IPython.display import display

    renderer = pio.renderers[pio.renderers.default] if pio.renderers.default else None
    if not hasattr(renderer, "to_mimebundle") or pio.renderers.default != "factcircuits":
        interactive.show()
        static_figure.show()
        return
    bundle = dict(renderer.to_mimebundle(static_figure.to_dict()))
    bundle["text/html"] = pio.to_html(interactive.to_dict(), include_plotlyjs=False,
                                      include_mathjax=False, full_html=False,
                                      default_width="100%", validate=False)
    display(bundle, raw=True)
