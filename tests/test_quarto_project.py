"""`_quarto.yml` and the report pages reference only files that exist, with zero runs too.

Quarto is not installed here, so this checks the project statically, in Quarto's order:
pre-render script first, then the render list, includes, embeds and local links."""

from __future__ import annotations

import glob
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
INCLUDE = re.compile(r"\{\{<\s*(?:include|embed)\s+([^\s>#]+)")
LINK = re.compile(r"\]\((?!https?:|#|mailto:)([^)#\s]+)")


def config() -> dict:
    return yaml.safe_load((ROOT / "_quarto.yml").read_text())


def test_render_list_and_pre_render_exist():
    project = config()["project"]
    assert (ROOT / project["pre-render"]).is_file()
    for entry in project["render"]:
        if any(ch in entry for ch in "*?["):
            continue  # globs: match whatever runs exist, possibly none
        assert (ROOT / entry).is_file(), entry
    assert config()["format"]["html"]["embed-resources"] is True
    assert {"html", "typst"} <= set(config()["format"])


def test_pages_reference_only_existing_files_after_pre_render(tmp_path):
    # The pre-render writes report/_generated/ from the runs present (here: the real folder,
    # maybe empty); it must run from the project root like Quarto runs it.
    script = ROOT / config()["project"]["pre-render"]
    subprocess.run([sys.executable, str(script)], cwd=ROOT, check=True)
    pages = [Path(p) for entry in config()["project"]["render"]
             for p in glob.glob(str(ROOT / entry)) if p.endswith(".qmd")]
    assert pages
    for page in pages + sorted((ROOT / "report" / "_generated").glob("*.qmd")):
        text = page.read_text()
        for ref in INCLUDE.findall(text) + LINK.findall(text):
            target = (page.parent / ref).resolve()
            if page.parent.name == "_generated" and ref.startswith("runs/"):
                target = (ROOT / "report" / ref).resolve()  # included into report/ pages
            assert target.exists(), f"{page.relative_to(ROOT)} -> {ref}"


def test_version_stamp_on_title_page():
    index = (ROOT / "report" / "index.qmd").read_text()
    assert "_generated/version.qmd" in index
    from factcircuits.report.pages import version_markdown

    text = version_markdown({"version": "0.1.0+abc1234", "package": "0.1.0",
                             "commit": "abc1234", "date": "2025-01-01", "runs": ["a__b__c"]})
    assert "0.1.0+abc1234" in text and "abc1234" in text and "2025-01-01" in text
    assert "a__b__c" in text
