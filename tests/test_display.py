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
