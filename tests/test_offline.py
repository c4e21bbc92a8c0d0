"""The rendered site is light and offline: plotly.js once per site, loaded by relative path;
Quarto's require.js/jQuery CDN tags removed; anything else fetched from the network is listed.
A page is built as Quarto writes it (the notebook's inline plotly.js moved into the head)."""

from __future__ import annotations

from pathlib import Path

from plotly.offline import get_plotlyjs

from factcircuits.report import offline

QUARTO_HEAD = (
    '<script src="https://cdn.jsdelivr.net/npm/requirejs@2.3.6/require.min.js" integrity="x" '
    'crossorigin="anonymous"></script>\n'
    '<script src="https://cdn.jsdelivr.net/npm/jquery@3.5.1/dist/jquery.min.js" integrity="y" '
    'crossorigin="anonymous" data-relocate-top="true"></script>\n'
    "<script type=\"application/javascript\">define('jquery', [],function() {return "
    "window.jQuery;})</script>\n")


def page(plotly: bool = True) -> str:
    inline = f'<script type="text/javascript">{get_plotlyjs()}</script>' if plotly else ""
    return (f"<html><head>{QUARTO_HEAD}{inline}<link href='../site_libs/a.css' "
            "rel='stylesheet'></head><body><div id='f'></div><script>Plotly.newPlot('f', [])"
            "</script><a href='https://example.org/paper'>a paper</a></body></html>")


def test_plotlyjs_once_per_site_and_no_cdn(tmp_path):
    site = tmp_path / "site"
    for path in ("index.html", "report/comparison.html", "report/runs/r/01.html",
                 "report/runs/r/02.html"):
        (site / path).parent.mkdir(parents=True, exist_ok=True)
        (site / path).write_text(page(plotly=path != "index.html"))
    (site / "search.json").write_text("[]")  # no site_libs/quarto-search reads it
    assert len(offline.external_assets(site)) == 2 * 4  # require.js and jQuery, every page
    assert offline.make_offline(site) == {"pages": 4, "changed": 4, "plotly_files": 1}
    lib, = (site / offline.PLOTLY_DIR).iterdir()
    assert lib.read_text() == get_plotlyjs() and lib.name.startswith("plotly-")
    deep = (site / "report/runs/r/01.html").read_text()
    assert f'src="../../../site_libs/plotly/{lib.name}"' in deep
    assert f'src="../site_libs/plotly/{lib.name}"' in (site / "report/comparison.html").read_text()
    assert get_plotlyjs()[:60] not in deep and "Plotly.newPlot('f'" in deep
    assert "define('jquery'" not in deep and not (site / "search.json").exists()
    assert offline.external_assets(site) == []  # a link to a paper is not an asset
    before = {p: p.read_bytes() for p in site.rglob("*") if p.is_file()}
    assert offline.make_offline(site)["changed"] == 0  # idempotent
    assert before == {p: p.read_bytes() for p in site.rglob("*") if p.is_file()}


def test_external_assets_in_pages_and_stylesheets(tmp_path):
    (tmp_path / "a.html").write_text(
        '<script src="https://cdn.example/x.js"></script><img src="//img.example/i.png">'
        '<link rel="stylesheet" href="https://fonts.example/css"><a href="https://ok">ok</a>')
    (tmp_path / "b.css").write_text("@import url('https://fonts.example/f.css');"
                                    "body{background:url(local.png)}")
    assert sorted(offline.external_assets(tmp_path)) == [
        ("a.html", "//img.example/i.png"), ("a.html", "https://cdn.example/x.js"),
        ("a.html", "https://fonts.example/css"), ("b.css", "https://fonts.example/f.css")]


def test_post_render_reads_quartos_output_dir(tmp_path, monkeypatch):
    site = tmp_path / "out"
    site.mkdir()
    (site / "p.html").write_text(page())
    monkeypatch.setenv("QUARTO_PROJECT_DIR", str(tmp_path))
    monkeypatch.setenv("QUARTO_PROJECT_OUTPUT_DIR", "out")
    offline.main()
    assert offline.external_assets(site) == [] and (site / offline.PLOTLY_DIR).is_dir()
    assert Path(site / "p.html").stat().st_size < 10_000


def quarto_js(site: Path, tabsets: str) -> None:
    lib = site / "site_libs" / "quarto-html"
    (lib / "tabsets").mkdir(parents=True)
    (lib / "quarto.js").write_text('import * as tabsets from "./tabsets/tabsets.js";\n'
                                   "window.seen = [];\ntabsets.init();\n")
    (lib / "tabsets" / "tabsets.js").write_text(tabsets)
    (site / "r").mkdir()
    (site / "r" / "p.html").write_text(
        '<head><script src="../site_libs/quarto-html/quarto.js" type="module"></script>\n'
        '<script src="../site_libs/quarto-html/tabsets/tabsets.js" type="module"></script>\n'
        "</head><body></body>")


def test_quartos_module_script_becomes_one_classic_script(tmp_path):
    # browsers refuse ES modules from file://: quarto.js and what it imports, as one script
    quarto_js(tmp_path, "// tabs\nexport function init() {\n  window.seen.push('init');\n}\n")
    offline.make_offline(tmp_path)
    classic = (tmp_path / offline.CLASSIC_JS).read_text()
    assert "import " not in classic and "export " not in classic
    assert "function init()" in classic and "return { init }" in classic
    page = (tmp_path / "r" / "p.html").read_text()
    assert page.count("<script") == 1 and 'type="module"' not in page
    assert '<script src="../site_libs/quarto-html/quarto-nomodule.js" defer>' in page


def test_a_module_of_another_shape_is_left_as_quarto_wrote_it(tmp_path):
    quarto_js(tmp_path, "export const x = 1;\nexport function init() {}\n")
    offline.make_offline(tmp_path)
    assert not (tmp_path / offline.CLASSIC_JS).exists()
    assert (tmp_path / "r" / "p.html").read_text().count('type="module"') == 2
