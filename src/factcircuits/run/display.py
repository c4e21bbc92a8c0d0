"""Notebook display setup: plotly figures that survive papermill, nbconvert and Quarto.

Call `init_notebook()` in the first (setup) cell of every analysis notebook. It
- loads plotly.js once, inline and offline, as a (hidden-but-kept) output of that cell, so
  every later figure only carries its data (plotly's own notebook renderer would also pull
  MathJax from a CDN, and papermill's default renderer emits only a mimetype nobody renders);
- makes every figure output carry `text/html` (interactive, for HTML) and, when a static
  exporter is available (kaleido + Chromium), `image/png` (for PDF). Without Chromium the
  figures are HTML only; that is said once, by the pipeline or by this cell when run by hand.
"""

from __future__ import annotations

import os
import shutil

_BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
_state: dict[str, bool] = {}


def static_export_available() -> bool:
    """True when kaleido is importable and a Chromium it can drive is on this machine."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return False
    path = os.environ.get("BROWSER_PATH")
    return bool((path and os.path.exists(path)) or any(shutil.which(b) for b in _BROWSERS))


def _register_renderer() -> None:
    import plotly.io as pio
    from plotly.io._base_renderers import MimetypeRenderer

    class OfflineHtml(MimetypeRenderer):
        """A figure's div + script, no plotly.js (loaded once by init_notebook), no CDN."""

        def to_mimebundle(self, fig_dict):
            html = pio.to_html(fig_dict, include_plotlyjs=False, include_mathjax=False,
                               full_html=False, default_width="100%", validate=False)
            return {"text/html": html}

    pio.renderers["factcircuits"] = OfflineHtml()


def _short_warning_paths() -> None:
    """Warnings name their file by basename: full paths (a venv in the user's home) would
    otherwise land in the executed notebook and fail the pipeline's home-path scan."""
    import warnings

    original = warnings.formatwarning

    def formatwarning(message, category, filename, lineno, line=None):
        return original(message, category, os.path.basename(filename), lineno, line)

    warnings.formatwarning = formatwarning


def init_notebook(static: bool | None = None) -> None:
    """Set plotly's renderer and load plotly.js once (see module docstring)."""
    import warnings

    import plotly.io as pio
    from IPython.display import HTML, display
    from plotly.offline import get_plotlyjs

    _register_renderer()
    _short_warning_paths()
    # Known harmless notices that would otherwise repeat in every run's log: kaleido's server
    # ignores per-call options, and text progress bars are used on purpose (no ipywidgets).
    warnings.filterwarnings("ignore", message="The kopts argument is ignored")
    warnings.filterwarnings("ignore", message="IProgress not found")
    if static is None:
        static = static_export_available()
    if static:
        import kaleido

        if not _state.get("kaleido"):
            # One persistent browser: ~0.2 s per figure instead of ~4 s of browser start-up.
            kaleido.start_sync_server(silence_warnings=True)
            _state["kaleido"] = True
        pio.renderers.default = "factcircuits+png"
    else:
        pio.renderers.default = "factcircuits"
        if not os.environ.get("FACTCIRCUITS_PIPELINE"):  # the pipeline says it once per run
            print("note: no Chromium for kaleido; figures are interactive HTML only "
                  "(no PDF images)")
    display(HTML(f'<script type="text/javascript">{get_plotlyjs()}</script>'),
            metadata={"factcircuits": "plotlyjs"})


def show(fig) -> None:
    """Show a plotly figure with the renderer set by `init_notebook`."""
    fig.show()
