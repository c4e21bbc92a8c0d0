"""`factcircuits render`'s Quarto renders, each in a copy of the book's inputs.

Why copies of the project rather than the project itself:
- **Speed.** Quarto walks the whole project folder (looking for `_extensions`, before and
  after the pre-render), a virtual environment in it included: with the README's `.venv`
  (~58,000 files) that was ~13 s of a 33 s site render here. A copy holds only what the book
  reads.
- **Both formats at once.** One `quarto render` renders the formats one after the other, each
  on one core (the site: one pandoc per page; the PDF: one pandoc over the whole book, ~16 s).
  Two renders cannot share a folder (a full render cleans the output folder; each writes
  figure folders next to the notebooks and state in `.quarto/`); in two copies they run at
  once, on two cores.
- **The last good write-up stays whole.** The new site replaces report/_output/ only when
  every format has rendered, and Quarto never writes into the run folders.

A copy is report/.render-<format>-<pid>-*/ (hidden: Quarto ignores folders that start with a dot;
on the project's file system, so the notebooks are hard links, not copies of their
megabytes): `_quarto.yml`, the files it names and every file and folder of report/ but the
outputs of earlier renders. The generated pages are written once into the project before
both renders (`PAGES_WRITTEN_ENV` tells the pre-render) and copied, so both formats show the
same version.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml

from factcircuits.errors import UserError

# Set by `factcircuits render` to the project folders whose report/_generated/ it has
# written for this render (os.pathsep between them): their pre-render has nothing to do.
PAGES_WRITTEN_ENV = "FACTCIRCUITS_PAGES_WRITTEN"
COPY_PREFIX = ".render-"
# Folders of report/ that are outputs of earlier renders, not inputs of this one.
_OUTPUTS = {"_output", "_preview", "archive", "versions"}
OUTPUT = Path("report") / "_output"


def pages_written(project: Path) -> bool:
    """Whether `factcircuits render` wrote this project's generated pages for this render."""
    listed = os.environ.get(PAGES_WRITTEN_ENV, "")
    return any(entry and Path(entry).resolve() == project.resolve()
               for entry in listed.split(os.pathsep))


def prerender() -> None:
    """Quarto's pre-render (report/_prerender.py): the generated pages of the project being
    rendered, unless `factcircuits render` wrote them for this render (the check needs none of
    the heavy imports that writing them does)."""
    project = Path(os.environ.get("QUARTO_PROJECT_DIR") or Path.cwd())
    if not pages_written(project):
        from factcircuits.report.pages import main

        main()


def _link_tree(source: Path, target: Path, runs: bool = False) -> None:
    """`target` as a copy of `source` whose files are hard links (copies where the file
    system has none). Quarto replaces, never edits, the files it reads. For the runs folder
    (`runs`), its entries whose name starts with "_" or "." are left out: staging folders of
    runs still being written, failed runs and locks, never in the book (run/folders.py), and
    a file vanishing from one mid-copy would fail the render."""
    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    def unfinished(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if n.startswith(("_", "."))] \
            if runs and Path(folder) == source else []

    shutil.copytree(source, target, copy_function=link, symlinks=True, ignore=unfinished)


def book_inputs(root: Path) -> list[str]:
    """The project's files a render reads, relative to it: `_quarto.yml` and the files it
    names (pre- and post-render scripts, pages, bibliography, filters)."""
    config = yaml.safe_load((root / "_quarto.yml").read_text(encoding="utf-8")) or {}
    project = config.get("project") or {}
    named = [project.get("pre-render"), project.get("post-render"),
             *(project.get("render") or []), config.get("bibliography"),
             *[f.get("path") if isinstance(f, dict) else f for f in config.get("filters") or []]]
    listed = [name for entry in named
              for name in (entry if isinstance(entry, list) else [entry])
              if isinstance(name, str) and name]
    return ["_quarto.yml", *dict.fromkeys(listed)]


def book_copy(root: Path, label: str) -> Path:
    """A copy of the book's inputs in report/.render-<label>-*/ (see module docstring)."""
    copy = Path(tempfile.mkdtemp(prefix=f"{COPY_PREFIX}{label}-", dir=root / "report"))
    try:
        for name in book_inputs(root):
            if (root / name).is_file():
                (copy / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(root / name, copy / name)
        (copy / "report").mkdir(exist_ok=True)
        for entry in (root / "report").iterdir():
            if entry.name.startswith(".") or entry.name in _OUTPUTS:
                continue
            target = copy / "report" / entry.name
            if entry.is_dir():
                _link_tree(entry, target, runs=entry.name == "runs")
            elif not target.exists():
                shutil.copy2(entry, target)
    except BaseException:
        shutil.rmtree(copy, ignore_errors=True)
        raise
    return copy


def _replace_folder(new: Path, old: Path) -> None:
    """`new` moved to `old`'s place; the old folder removed only once the new one is there."""
    trash = old.with_name(f".{old.name}-old-{os.getpid()}")
    if old.exists():
        os.replace(old, trash)
    try:
        os.replace(new, old)
    except BaseException:
        if trash.exists():
            os.replace(trash, old)
        raise
    shutil.rmtree(trash, ignore_errors=True)


def _remove_orphans(root: Path) -> None:
    """Copies left by a render that was killed (its process is gone): removed, so they never
    pile up. A copy's name carries the process id of the render that made it. Not on
    Windows, where os.kill(pid, 0) would end that process rather than probe it."""
    if os.name == "nt":
        return
    for copy in (root / "report").glob(f"{COPY_PREFIX}*"):
        try:
            pid = int(copy.name.split("-")[2])
        except (IndexError, ValueError):
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(copy, ignore_errors=True)
        except OSError:  # alive, another user's
            continue


def render_in_copies(root: Path, formats: list[str], env: dict[str, str]) -> None:
    """`quarto render --to <format>` for each format ("html", "typst"), at once, each in a
    `book_copy`; then the site replaces report/_output/ (or, PDF only, the PDF is added to
    it). The first format's log streams; the others' follow it. Raises UserError, leaving
    report/_output/ as it was, when any fails."""
    _remove_orphans(root)
    copies: dict[str, Path] = {}
    procs: dict[str, subprocess.Popen] = {}
    try:
        for fmt in formats:
            copies[fmt] = book_copy(root, f"{fmt}-{os.getpid()}")
        env = dict(env, **{PAGES_WRITTEN_ENV: os.pathsep.join(
            [str(root), *(str(c) for c in copies.values())])})
        first, *others = formats
        for fmt in others:
            with open(copies[fmt] / "render.log", "wb") as log:
                procs[fmt] = subprocess.Popen(["quarto", "render", "--to", fmt],
                                              cwd=copies[fmt], env=env, stdout=log,
                                              stderr=subprocess.STDOUT)
        codes = {first: subprocess.run(["quarto", "render", "--to", first],
                                       cwd=copies[first], env=env, check=False).returncode}
        codes.update({fmt: proc.wait() for fmt, proc in procs.items()})
        for fmt in others:
            print(f"--- quarto render --to {fmt} (alongside --to {first}) ---")
            print((copies[fmt] / "render.log").read_text(encoding="utf-8", errors="replace"),
                  end="", flush=True)
        failed = [f"quarto render --to {fmt} (exit {code})" for fmt, code in codes.items()
                  if code != 0]
        if failed:
            raise UserError(f"{' and '.join(failed)} failed; see its output above; the last "
                            f"write-up in {OUTPUT} is unchanged")
        pdfs = [pdf for fmt in formats if fmt != "html"
                for pdf in sorted((copies[fmt] / OUTPUT).glob("*.pdf"))]
        if "typst" in formats and not pdfs:
            raise UserError("quarto render --to typst wrote no PDF; see its output above")
        if "html" in formats:
            site = copies["html"] / OUTPUT
            for pdf in pdfs:
                os.replace(pdf, site / pdf.name)
            _replace_folder(site, root / OUTPUT)
        else:
            (root / OUTPUT).mkdir(parents=True, exist_ok=True)
            for pdf in pdfs:
                os.replace(pdf, root / OUTPUT / pdf.name)
    finally:
        for proc in procs.values():  # interrupted: no render left writing into a copy
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
        for copy in copies.values():
            shutil.rmtree(copy, ignore_errors=True)
