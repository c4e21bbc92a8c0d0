"""Figure outputs for HTML and PDF: interactive HTML always, a PNG or a visible placeholder
with the reason, and a plotly.js loader that prints nothing in formats without HTML."""

from __future__ import annotations

import base64

import plotly.graph_objects as go
import plotly.io as pio
import pytest

from factcircuits.run import display


@pytest.fixture(autouse=True)
def restore_global_settings():
    """init_notebook sets process-wide options (made for a notebook kernel): undo them."""
    import warnings

    import pandas as pd

    renderer, formatwarning = pio.renderers.default, warnings.formatwarning
    yield
    pio.renderers.default, warnings.formatwarning = renderer, formatwarning
    for option in ("display.precision", "styler.format.precision", "display.max_colwidth",
                   "display.max_columns"):
        pd.reset_option(option)


def figure() -> dict:
    return go.Figure(go.Bar(x=[1, 2], y=[3, 4]), layout_title_text="two bars").to_dict()


def test_without_static_export_the_pdf_gets_a_placeholder_with_the_reason():
    bundle = display.figure_bundle(figure(), static=False, problem="no Chromium here")
    assert set(bundle) == {"text/html", "text/markdown"}
    assert "Plotly.newPlot" in bundle["text/html"] and "<script src" not in bundle["text/html"]
    assert "*two bars*" in bundle["text/markdown"]
    assert "no Chromium here" in bundle["text/markdown"]


def test_a_failing_export_becomes_a_placeholder_not_a_gap(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("browser crashed\nlong trace")

    monkeypatch.setattr(pio, "to_image", broken)
    bundle = display.figure_bundle(figure(), static=True)
    assert "image/png" not in bundle
    assert "image export failed: RuntimeError: browser crashed" in bundle["text/markdown"]
    assert "long trace" not in bundle["text/markdown"]


def test_an_export_past_its_deadline_is_a_placeholder_and_later_figures_do_not_wait(
        monkeypatch):
    import threading
    import time

    release, calls = threading.Event(), []

    def hangs(*args, **kwargs):  # a Chromium that stopped answering
        calls.append(1)
        release.wait(10)
        return b"\x89PNG too late"

    monkeypatch.setattr(pio, "to_image", hangs)
    monkeypatch.setattr(display, "EXPORT_DEADLINE_S", 0.2)
    monkeypatch.setattr(display, "_export_hung", [])
    try:
        started = time.perf_counter()
        first = display.figure_bundle(figure(), static=True)
        second = display.figure_bundle(figure(), static=True)
        waited = time.perf_counter() - started
    finally:
        release.set()
    assert "image/png" not in first and "image/png" not in second
    assert "did not finish within 0.2 s" in first["text/markdown"]
    assert "*two bars*" in second["text/markdown"] and "later figures" in second["text/markdown"]
    assert calls == [1] and waited < 5  # the second figure did not ask the browser again


def test_png_at_the_figures_size(monkeypatch):
    calls = {}

    def fake(fig, **kwargs):
        calls.update(kwargs)
        return b"\x89PNG fake"

    monkeypatch.setattr(pio, "to_image", fake)
    fig = figure()
    fig["layout"]["height"] = 300
    bundle = display.figure_bundle(fig, static=True)
    assert base64.b64decode(bundle["image/png"]) == b"\x89PNG fake"
    assert "text/markdown" not in bundle
    assert (calls["width"], calls["height"], calls["scale"]) == (display.PNG_WIDTH, 300,
                                                                 display.PNG_SCALE)


def test_plotlyjs_loader_is_html_only(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display",
                        lambda obj, **kw: shown.append((obj, kw)))
    display.init_notebook(static=False)
    (bundle, kwargs), = shown
    assert kwargs["raw"] is True and kwargs["metadata"] == {"factcircuits": "plotlyjs"}
    assert bundle["text/markdown"] == "" and "text/plain" not in bundle
    assert bundle["text/html"].startswith('<script type="text/javascript">')
    assert pio.renderers.default == "factcircuits"


@pytest.mark.parametrize("missing", ["kaleido", "browser"])
def test_static_export_problem_names_what_is_missing(monkeypatch, missing):
    import builtins
    import shutil

    if missing == "kaleido":
        real_import = builtins.__import__

        def no_kaleido(name, *args, **kwargs):
            if name == "kaleido":
                raise ImportError(name)
            return real_import(name, *args, **kwargs)

        monkeypatch.setattr(builtins, "__import__", no_kaleido)
        assert "kaleido is not installed" in display.static_export_problem()
    else:
        pytest.importorskip("kaleido")
        monkeypatch.delenv("BROWSER_PATH", raising=False)
        monkeypatch.setattr(shutil, "which", lambda name: None)
        assert "no Chromium" in display.static_export_problem()
        assert not display.static_export_available()


def test_tables_fit_a_page():
    import pandas as pd

    display._table_format()
    wide = pd.DataFrame([[1.23456789] * 20], columns=[f"column_{i}" for i in range(20)])
    html = wide._repr_html_()
    assert "column_4" in html and "column_15" in html and "column_10" not in html
    assert "1.2346" in html and "1.23456789" not in html


def test_a_last_expression_shows_only_when_it_has_a_rich_display():
    """What a cell's last expression leaves in the notebook (`rich_only` on IPython's own
    formatter): tables, Markdown and figures stay; a value whose only display is its repr
    (paths, arrays, numbers, strings) is left out of the write-up."""
    from pathlib import Path

    import numpy as np
    import pandas as pd
    from IPython.core.formatters import DisplayFormatter
    from IPython.display import Markdown

    formatter = DisplayFormatter()

    def kept(value) -> set[str]:
        return set(display.rich_only(*formatter.format(value))[0])

    for plain in ([Path("results/02_logit_lens/logit_lens_mean.csv")], Path("x.json"),
                  np.arange(3.0), 0.5, "text", {"a": 1}):
        assert kept(plain) == set(), plain
    assert "text/html" in kept(pd.DataFrame({"a": [1, 2]}))
    assert "text/markdown" in kept(Markdown("**bold**"))

    class Picture:  # an image (a matplotlib figure under the inline backend, say)
        def _repr_png_(self):
            return b"\x89PNG"

    assert "image/png" in kept(Picture())
    # (a plotly figure displays itself through `_ipython_display_`, never as a repr)


def test_the_display_hook_is_wrapped_once(monkeypatch):
    """init_notebook wraps the shell's display hook (idempotent): a list of paths as a last
    expression produces no output."""
    from pathlib import Path

    import pandas as pd
    from IPython.core.formatters import DisplayFormatter

    class Hook:
        def __init__(self):
            self.formatter = DisplayFormatter()

        def compute_format_data(self, result):
            return self.formatter.format(result)

    class Shell:
        displayhook = Hook()

    shell = Shell()
    monkeypatch.setattr("IPython.get_ipython", lambda: shell)
    display._quiet_plain_results()
    wrapped = shell.displayhook.compute_format_data
    display._quiet_plain_results()
    assert shell.displayhook.compute_format_data is wrapped  # not wrapped twice
    assert wrapped([Path("a.csv")]) == ({}, {})
    assert "text/html" in wrapped(pd.DataFrame({"a": [1]}))[0]


def test_diverging_colour_scale_covers_every_value():
    import numpy as np

    assert display.diverging_limit([0.2, -0.5, 0.9]) == 1.0  # at least ±1
    assert display.diverging_limit([0.2, -1.3, 1.07]) == 1.3  # overshoots are not clipped
    assert display.diverging_limit(np.array([[np.nan, 1.07]])) == 1.07
    assert display.diverging_limit([]) == 1.0


def test_media_note_differs_between_site_and_pdf(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj, **kw: shown.append((obj, kw)))
    display.media_note("Pick a head from the **menu**.", "The image shows the first head.")
    (bundle, kwargs), = shown
    assert kwargs["raw"] is True
    assert bundle["text/html"].strip() == "<p>Pick a head from the <strong>menu</strong>.</p>"
    assert bundle["text/markdown"] == "The image shows the first head."
    assert "text/plain" not in bundle  # nothing else for a format to fall back on


def test_an_unusable_tmpdir_is_a_reason_not_a_hang(tmp_path, monkeypatch):
    """Chromium cannot start with TMPDIR naming a missing folder; the export then waited
    forever. It is said up front and the figures stay HTML-only with that reason."""
    from factcircuits.run import display as D

    monkeypatch.setenv("TMPDIR", str(tmp_path / "missing"))
    assert "TMPDIR=" in D.static_export_problem() and "not a writable folder" in \
        D.static_export_problem()
    assert not D.static_export_available()
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    assert "TMPDIR" not in (D.static_export_problem() or "")


def test_show_pair_gives_the_site_one_figure_and_the_pdf_another(monkeypatch):
    """The circuit: HTML formats get the interactive figure, the PDF the static one's PNG."""
    shown, exported = [], []
    monkeypatch.setattr("IPython.display.display", lambda obj, **kw: shown.append((obj, kw)))
    monkeypatch.setattr(pio, "to_image", lambda fig, **kw: exported.append(fig) or b"png")
    display._register_renderer(True, None)
    interactive = go.Figure(go.Bar(x=[1], y=[1]), layout_title_text="with a slider")
    static = go.Figure(go.Bar(x=[2], y=[2]), layout_title_text="for print")
    display.show_pair(interactive, static)
    (bundle, kwargs), = shown
    assert kwargs["raw"] is True
    assert "with a slider" in bundle["text/html"] and "for print" not in bundle["text/html"]
    assert base64.b64decode(bundle["image/png"]) == b"png"
    [only] = exported  # the interactive figure is never exported as an image
    assert only["layout"]["title"]["text"] == "for print"


def test_tables_drop_row_numbers_but_keep_a_real_index():
    import pandas as pd

    from factcircuits.run.display import table_html

    with pd.option_context("display.precision", 4, "display.max_columns", 10):
        numbered = table_html(pd.DataFrame({"effect": [1.123456, 2.0], "layer": [3, 4]}))
        assert "1.1235" in numbered and "<th>effect</th>" in numbered
        assert "<th>0</th>" not in numbered and "<th>1</th>" not in numbered
        rows = table_html(pd.DataFrame({"prompt": ["a", "b"]}, index=[4, 7]))
        assert "<th>4</th>" in rows and "<th>7</th>" in rows  # a dataset's row numbers stay
        wide = table_html(pd.DataFrame([range(14)], columns=[f"c{i}" for i in range(14)]))
        assert "<th>c4</th>" in wide and "<th>c5</th>" not in wide and "..." in wide
