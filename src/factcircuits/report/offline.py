"""A rendered site that is light and works offline (run by Quarto after each render).

- plotly.js: each executed notebook carries one inline copy (its setup cell puts it there so
  the notebook draws on its own), which Quarto moves into the page's head: 4.7 MB per page.
  Here each distinct copy is written once to `site_libs/plotly/plotly-<version>.min.js` and
  every page loads it by a path relative to itself, so the site opens from `file://`.
- Quarto adds require.js and jQuery from a CDN to every notebook page that has an HTML output
  (quarto-cli `src/core/jupyter/widgets.ts`: any `text/html` display output counts as a
  "JavaScript widget" that may assume them). No output here needs either; offline they fail,
  and online require.js would capture plotly.js as an AMD module and leave `Plotly` unset. The
  tags are removed, with the `define('jquery', ...)` shim that needs require.js.
- Quarto's own `quarto.js` is an ES module (it imports `tabsets.js`), and browsers refuse
  module scripts from `file://` (origin null): the table of contents, code folding and tabs
  would not work offline. Its imports are inlined into one classic, deferred script.
- `search.json` is removed when no page can read it (`search: false`).
- `external_assets` lists what a page or stylesheet would still fetch from the network.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path

PLOTLY_DIR = Path("site_libs") / "plotly"
_INLINE_PLOTLY = re.compile(
    r'<script type="text/javascript">\s*(/\*\*?\s*\*\s*plotly\.js v([0-9][\w.+-]*)\s.*?)</script>',
    re.S)
_QUARTO_CDN = re.compile(
    r'<script src="https://cdn\.jsdelivr\.net/npm/(?:requirejs|jquery)@[^"]*"[^>]*></script>\s*'
    r"|<script type=\"application/javascript\">define\('jquery', \[\],\s*function\(\)\s*"
    r"\{return window\.jQuery;\}\)</script>\s*")
QUARTO_JS = Path("site_libs") / "quarto-html" / "quarto.js"
CLASSIC_JS = QUARTO_JS.with_name("quarto-nomodule.js")
_IMPORT = re.compile(r'^import \* as (\w+) from "(\./[^"]+)";\s*$', re.M)
_EXPORT = re.compile(r"^export function (\w+)", re.M)
_MODULE_TAG = re.compile(r'<script src="([^"]*)site_libs/quarto-html/'
                         r'(quarto\.js|tabsets/tabsets\.js)" type="module"></script>\s*')
# Tags that load something (links to other pages, <a href>, are not assets).
_ASSET = re.compile(r'<(script|img|iframe|source|audio|video|embed)\b[^>]*?\bsrc=["\']'
                    r'((?:https?:)?//[^"\']+)'
                    r'|<link\b(?=[^>]*\brel=["\'](?:stylesheet|preload|modulepreload|icon|'
                    r'prefetch|manifest)["\'])[^>]*?\bhref=["\']((?:https?:)?//[^"\']+)', re.I)
_CSS_URL = re.compile(r'@import\s+(?:url\()?["\']?((?:https?:)?//[^"\')\s]+)'
                      r'|url\(["\']?((?:https?:)?//[^"\')\s]+)', re.I)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _library(site: Path, version: str, code: str, written: dict[str, Path]) -> Path:
    """The site file for this copy of plotly.js: one per distinct content."""
    digest = hashlib.sha256(code.encode()).hexdigest()[:8]
    if digest not in written:
        path = site / PLOTLY_DIR / f"plotly-{version}-{digest}.min.js"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(path, code)
        written[digest] = path
    return written[digest]


def classic_quarto_js(site: Path) -> bool:
    """Write quarto.js and the modules it imports as one classic script (CLASSIC_JS);
    False, leaving pages as they are, when the module is not of the simple shape expected
    (`import * as x from "./y.js"` of modules whose only exports are functions)."""
    main = site / QUARTO_JS
    if not main.is_file():
        return False
    code = main.read_text(encoding="utf-8")
    parts = []
    for name, rel in _IMPORT.findall(code):
        module = (main.parent / rel).read_text(encoding="utf-8")
        names = _EXPORT.findall(module)
        body = _EXPORT.sub(r"function \1", module)
        if not names or re.search(r"^\s*(import|export)\b", body, re.M):
            return False
        parts.append(f"const {name} = (function () {{\n{body}\nreturn {{ "
                     f"{', '.join(names)} }};\n}})();")
    rest = _IMPORT.sub("", code)
    if re.search(r"^\s*(import|export)\b", rest, re.M):
        return False
    _write_atomic(site / CLASSIC_JS, "// quarto.js with its imports, as one classic script: "
                  "browsers refuse ES modules from file://\n(function () {\n"
                  + "\n".join(parts) + "\n" + rest + "\n})();\n")
    return True


def make_offline(site: Path | str) -> dict[str, int]:
    """Rewrite every page of `site` (see module docstring); idempotent. Returns counts."""
    site = Path(site)
    written: dict[str, Path] = {}
    pages = changed = 0
    classic = classic_quarto_js(site)
    # With `search: false` Quarto still writes the search index, but no page loads the search
    # script that would read it: dead weight in every published version.
    if not (site / "site_libs" / "quarto-search").exists():
        (site / "search.json").unlink(missing_ok=True)
    for page in sorted(site.rglob("*.html")):
        pages += 1
        text = page.read_text(encoding="utf-8", errors="surrogateescape")

        def link(match: re.Match, page: Path = page) -> str:
            lib = _library(site, match.group(2), match.group(1), written)
            rel = os.path.relpath(lib, page.parent).replace(os.sep, "/")
            return f'<script type="text/javascript" src="{rel}"></script>'

        new = _QUARTO_CDN.sub("", _INLINE_PLOTLY.sub(link, text))
        if classic:  # module tags → the one classic script, deferred as modules are
            new = _MODULE_TAG.sub(lambda m: "" if "tabsets" in m.group(2) else
                                  f'<script src="{m.group(1)}{CLASSIC_JS.as_posix()}" defer>'
                                  "</script>\n", new)
        if new != text:
            _write_atomic(page, new)
            changed += 1
    return {"pages": pages, "changed": changed, "plotly_files": len(written)}


def external_assets(site: Path | str) -> list[tuple[str, str]]:
    """(file, URL) of everything the site's pages and stylesheets would fetch from the
    network; empty for a site that works offline."""
    site = Path(site)
    found = []
    for path in sorted(site.rglob("*")):
        if path.suffix not in (".html", ".css") or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        pattern = _ASSET if path.suffix == ".html" else _CSS_URL
        for match in pattern.finditer(text):
            url = next(g for g in match.groups()[1 if path.suffix == ".html" else 0:] if g)
            found.append((path.relative_to(site).as_posix(), url))
    return found


def main() -> None:
    """Quarto post-render: QUARTO_PROJECT_OUTPUT_DIR is the site (relative to the project)."""
    project = Path(os.environ.get("QUARTO_PROJECT_DIR") or Path.cwd())
    site = project / os.environ.get("QUARTO_PROJECT_OUTPUT_DIR", "report/_output")
    if not site.is_dir():
        return
    make_offline(site)
    for where, url in external_assets(site):
        print(f"warning: {where} loads {url} from the network; the site will not work "
              "offline", file=sys.stderr)
