"""The parts of the write-up that depend on which runs exist.

Quarto renders a book (`_quarto.yml`): the front page `index.qmd` (findings), one part per run
with its executed notebooks as chapters, the comparison, and appendices (methods, parameters
and provenance). The run-dependent parts come from here:

- `write_generated(project_dir)` (Quarto's pre-render, `report/_prerender.py`) writes
  `report/_generated/book.yml`: the title page's version and run ids, one book part per run,
  and the render list. `_quarto.yml` names that file in `metadata-files`; Quarto skips it when
  it is missing (fresh clone) and reads it again after the pre-render, so no page ever
  includes a file that might not exist yet.
- The same pre-render writes the front page, comparison, provenance and the methods
  appendix's run-dependent parts as markdown files (`report/page_files.py`, from
  `front_page()`, `comparison_intro()`, `provenance()` here), which the pages read in through
  a Lua filter: Quarto executes no code for them.

Everything reads and writes the project Quarto renders (`QUARTO_PROJECT_DIR`), not the
checkout where the package is installed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import yaml

from factcircuits import __version__
from factcircuits.files import atomic_write
from factcircuits.report.evidence import damaged_markdown, load_runs, scan_evidence
from factcircuits.results.run import Run
from factcircuits.run.provenance import git_commit

GENERATED = Path("report") / "_generated"
RUNS = Path("report") / "runs"


def quarto_project_dir() -> Path:
    """The project being rendered: Quarto's QUARTO_PROJECT_DIR (set for the pre-render script
    and the executed pages), else the current directory."""
    return Path(os.environ.get("QUARTO_PROJECT_DIR") or Path.cwd()).resolve()


def project_runs(project_dir: Path | None = None) -> list[Run]:
    return load_runs((project_dir or quarto_project_dir()) / RUNS)


def version_info(root: Path, run_ids: list[str]) -> dict[str, Any]:
    git = git_commit(root)
    commit = (git["commit"] or "nogit")[:7] + ("-dirty" if git["dirty"] else "")
    return {"package": __version__, "commit": commit, "date": dt.date.today().isoformat(),
            "runs": run_ids, "version": f"{__version__}+{commit}"}


def version_markdown(info: dict[str, Any]) -> str:
    runs = ", ".join(f"`{r}`" for r in info["runs"]) or "none yet"
    return (f"**Version** {info['version']} · factcircuits {info['package']} · commit "
            f"`{info['commit']}` · rendered {info['date']}  \n**Runs:** {runs}\n")


DEFAULT_TITLE = "Fact recall in language models: the runs of this write-up"


def _prompts_scored(ev: Run) -> int | None:
    from factcircuits.results.registry import PROMPTS_SCORED, methods

    n = next((x.n for m in methods() for x in m.samples_of(ev) if x.what == PROMPTS_SCORED),
             None)
    return int(n) if isinstance(n, (int, float)) and n == n else None


def write_up_title(runs: list[Run]) -> tuple[str, str]:
    """The title and subtitle, scoped to what the runs can test: the model(s) by name and the
    datasets with their prompt counts ('Fact recall in SmolLM2-135M-Instruct: a case study
    on 13 cloze prompts', 'paris-cloze (13 prompts) · what these prompts show about this
    model, not how language models store facts in general')."""
    if not runs:
        return DEFAULT_TITLE, "No runs yet"
    models = list(dict.fromkeys(ev.short_model for ev in runs))
    datasets: dict[str, int | None] = {}
    for ev in runs:  # a dataset's size: the most prompts any run of it scored
        n = _prompts_scored(ev)
        datasets[ev.dataset] = max(filter(None, (datasets.get(ev.dataset), n)), default=None)
    tasks = sorted({ev.task for ev in runs})
    task = {"cloze": "cloze", "yesno": "yes/no"}.get(tasks[0], tasks[0]) if len(tasks) == 1 \
        else "cloze and yes/no"
    total = sum(n or 0 for n in datasets.values())
    who = (models[0] if len(models) == 1 else
           f"{len(models)} language models ({', '.join(models)})")
    names = ", ".join(datasets)
    if len(datasets) == 1:
        what = f"{total} {task} prompts" if total else f"the {task} prompts of {names}"
    else:
        what = f"{len(datasets)} datasets of {task} prompts" + (f" ({total} prompts)"
                                                                if total else "")
    title = f"Fact recall in {who}: a case study on {what}"
    scope = " · ".join(f"{name} ({n} prompts)" if n else name for name, n in datasets.items())
    subject = "this model" if len(models) == 1 else "these models"
    return title, (f"{scope} · what these prompts show about {subject}, not how language "
                   "models store facts in general")


# The sample and seed a user chose tell runs of one model on one dataset apart in titles
# (relation and per_relation are in `Run.title` already; the comparison lists every setting).
TITLE_SETTINGS = ("n_prompts", "seed", "known")


def part_title(index: int, ev: Run) -> str:
    """'Run 2: SmolLM2-135M-Instruct on paris-cloze (n_prompts=4)'."""
    chosen = set(ev.record.get("parameters_set") or ())
    settings = [f"{k}={ev.parameters[k]}" for k in TITLE_SETTINGS
                if k in chosen and k in ev.parameters]
    return f"Run {index}: {ev.title}" + (f" ({', '.join(settings)})" if settings else "")


def run_notebooks(ev: Run) -> list[Path]:
    """The run's executed notebooks, in order."""
    names = [nb["name"] for nb in ev.record.get("notebooks", []) if nb.get("name")]
    paths = [ev.folder / f"{name}.ipynb" for name in names] or sorted(ev.folder.glob("*.ipynb"))
    return [p for p in paths if p.is_file()]


def notebook_paths(ev: Run, project_dir: Path) -> list[str]:
    """The run's executed notebooks, in order, relative to the project."""
    return [p.resolve().relative_to(project_dir).as_posix() for p in run_notebooks(ev)]


def add_front_matter(nb, subtitle: str) -> bool:
    """Give an executed notebook the YAML front matter Quarto reads (first raw cell): its title
    from the first `# heading` (removed there, so the title is not shown twice) and a subtitle
    naming the run. False when it has front matter already or no title."""
    import nbformat

    if nb.cells and nb.cells[0].cell_type == "raw" and nb.cells[0].source.startswith("---"):
        return False
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            lines = cell.source.splitlines()
            if not (lines and lines[0].startswith("# ")):
                return False
            title = lines[0][2:].strip()
            cell.source = "\n".join(lines[1:]).lstrip("\n")
            # JSON strings are valid YAML scalars: quotes and colons in titles stay safe.
            yaml_text = f"---\ntitle: {json.dumps(title)}\nsubtitle: {json.dumps(subtitle)}\n---"
            nb.cells.insert(0, nbformat.v4.new_raw_cell(yaml_text))
            return True
    return False


def give_front_matter(ev: Run) -> None:
    """Quarto renders a run's notebooks where they are: each gets its front matter (title,
    the run as subtitle) before the render; the run leaves them without."""
    import nbformat
    from jsonschema import ValidationError

    for path in run_notebooks(ev):
        if has_front_matter(path):  # rendered before: no need to parse and validate it
            continue
        try:
            nb = nbformat.read(path, as_version=4)
        except (ValueError, ValidationError):  # not a notebook: Quarto names it, not us
            continue
        if add_front_matter(nb, f"run {ev.run_id}"):
            atomic_write(path, nbformat.writes(nb) + "\n")


def has_front_matter(path: Path) -> bool:
    """Whether a notebook's first cell is front matter already, read as plain JSON (nbformat
    validates every output: seconds for a run's notebooks, at every render)."""
    try:
        cells = json.loads(path.read_bytes()).get("cells") or []
    except (OSError, ValueError, AttributeError):
        return False
    first = cells[0] if cells and isinstance(cells[0], dict) else {}
    source = first.get("source") or ""
    source = "".join(source) if isinstance(source, list) else str(source)
    return first.get("cell_type") == "raw" and source.startswith("---")


def run_part_markdown(ev: Run, anchors: bool = True) -> str:
    """What opens a run's part when there are several runs: its detailed findings (the front
    page then holds the runs' table and a paragraph per model), without their heading (the
    part's title names the run)."""
    from factcircuits.report.findings import run_markdown

    lines = run_markdown(ev, level=2, anchors=anchors).splitlines()
    # its sections stay out of the contents (they would be listed under the chapter before)
    text = "\n".join(lines[1:]).lstrip("\n") + "\n"
    return text.replace("{.unnumbered}", "{.unnumbered .unlisted}")


def part_file(ev: Run) -> Path:
    return GENERATED / f"run-{ev.anchor}.qmd"


def book_config(runs: list[Run], info: dict[str, Any], project_dir: Path) -> dict:
    """The run-dependent part of the book: merged into `_quarto.yml` by Quarto (its lists are
    appended to the static ones there: front page and comparison first, one part per run,
    then the appendices)."""
    chapters: list[Any] = []
    notebooks: list[str] = []
    for i, ev in enumerate(runs, 1):
        paths = notebook_paths(ev, project_dir)
        if paths:
            # several runs: the part opens with the run's detailed findings (write_generated
            # writes that page); one run: they are on the front page, the part is its title
            part = part_file(ev).as_posix() if len(runs) > 1 else part_title(i, ev)
            chapters.append({"part": part, "chapters": paths})
            notebooks += ([part] if len(runs) > 1 else []) + paths
    title, subtitle = write_up_title(runs)
    config: dict[str, Any] = {
        "book": {"title": title, "subtitle": f"{subtitle} · version {info['version']}",
                 "date": info["date"], "chapters": chapters},
    }
    if notebooks:
        config["project"] = {"render": notebooks}
    return config


# The PDF's part page (orange-book) places the part's title at the top and its contents at the
# bottom of the page; text that follows on the same page pushed the contents up over the
# title. The part's findings start on the next page (typst only; the site ignores it).
PART_BODY_ON_NEXT_PAGE = "```{=typst}\n#pagebreak(weak: true)\n```\n\n"


def write_generated(project_dir: Path | None = None) -> Path:
    """Write report/_generated/ of the project being rendered (book.yml, version.json, the run
    parts, and the pages' markdown and figures: `page_files.write_pages`); returns that
    folder."""
    from factcircuits.report.page_files import write_pages

    root = Path(project_dir or quarto_project_dir()).resolve()
    runs, damaged = scan_evidence(root / RUNS)
    for ev in runs:
        give_front_matter(ev)
    info = version_info(root, [ev.run_id for ev in runs])
    out = root / GENERATED
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("run-*.qmd"):  # parts of runs deleted since the last render
        stale.unlink()
    if len(runs) > 1:
        for i, ev in enumerate(runs, 1):
            atomic_write(root / part_file(ev),
                         f"# {part_title(i, ev)} {{.unnumbered}}\n\n"
                         "<!-- Written by factcircuits.report.pages before each render. -->\n\n"
                         + PART_BODY_ON_NEXT_PAGE + run_part_markdown(ev))
    header = "# Written by factcircuits.report.pages before each render; do not edit.\n"
    atomic_write(out / "book.yml", header + yaml.safe_dump(book_config(runs, info, root),
                                                           sort_keys=False, allow_unicode=True))
    atomic_write(out / "version.json", json.dumps(info, indent=2) + "\n")
    write_pages(root, runs, damaged)
    return out


# ------------------------------------------------------------------ page bodies (markdown)
def front_page(project_dir: Path | None = None, anchors: bool = True,
               evidence: tuple[list[Run], list[tuple[str, str]]] | None = None) -> str:
    """The front page's text: version, runs left out, findings. `evidence`: the runs and
    damaged runs already scanned (`scan_evidence`), else read from the project."""
    from factcircuits.report.synthesis import front_page_markdown

    root = Path(project_dir or quarto_project_dir())
    runs, damaged = evidence if evidence is not None else scan_evidence(root / RUNS)
    info = version_info(root, [ev.run_id for ev in runs])
    return (version_markdown(info) + "\n" + damaged_markdown(damaged) + "\n"
            + front_page_markdown(runs, anchors=anchors))


def comparison_intro(runs: list[Run]) -> str:
    from factcircuits.report.compare import groups_markdown

    if not runs:
        return "There are no runs yet, so there is nothing to compare.\n"
    if len(runs) == 1:
        return (f"There is one run so far ({runs[0].title}), so there is nothing to compare "
                "yet: run another model or dataset and render again.\n")
    return (f"{len(runs)} runs side by side: first the key headline numbers, grouped by "
            "dataset and model, then the per-layer profiles overlaid by relative depth "
            "(layer / (layers − 1)), so that models of different depth line up. Compare "
            "runs only on the same task: a model at chance shows an AUC near 0.5 or a "
            "logit difference near 0.\n\n"
            + "".join(f"- **Run {i}**: {ev.title} (`{ev.run_id}`): {run_settings(ev)}\n"
                      for i, ev in enumerate(runs, 1))
            + "\n**By model and dataset.** Runs of one model on one dataset that differ only "
            "in their sample, seed or method settings check how sensitive its results are; "
            "they are not independent replicates, and agreement among them is not counted as "
            "agreement between runs.\n\n" + groups_markdown(runs))


def run_settings(ev: Run) -> str:
    """The prompts a run analysed and the parameters its user chose, in words: 'known=pairwise
    (13 of 13 prompts kept) · n_prompts=16 · noise_samples=2'."""
    from factcircuits.results.registry import methods

    params = ev.parameters
    # the task check says which prompts were kept ('known=pairwise (13 of 13 prompts kept)')
    known = next((m.analysed_note(ev) for m in methods() if m.analysed_note and ev.has(m)),
                 f"known={params.get('known', 'top1')}")
    chosen = [k for k in ev.record.get("parameters_set") or []
              if k in params and k not in ("model", "dataset", "task", "known")]
    chosen = [f"{k}={params[k]}" for k in chosen]
    return " · ".join([known, *chosen])


def models_as_loaded(runs: list[Run]) -> str:
    """One markdown bullet per distinct model as loaded (`wording.model_line`), with the runs
    that used it: '- HuggingFaceTB/SmolLM2-135M-Instruct, as loaded: Q4_1 GGUF dequantized to
    float32 (runs 1, 2)'."""
    from factcircuits.results.wording import model_line

    if not runs:
        return "There are no runs yet.\n"
    used: dict[str, list[int]] = {}
    for i, ev in enumerate(runs, 1):
        used.setdefault(model_line(ev), []).append(i)
    return "".join(f"- {line} ({'run' if len(ids) == 1 else 'runs'} "
                   f"{', '.join(map(str, ids))})\n" for line, ids in used.items())


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        value = json.dumps(value)
    text = str(value).replace("|", "\\|")
    # long unbroken values (hashes) are shortened to fit a page; run.json has them whole
    return text if len(text) <= 40 or " " in text else text[:16] + "…"


def _table(rows: list[tuple[str, Any]], header: tuple[str, str]) -> list[str]:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {k} | {_cell(v)} |" for k, v in rows if v is not None and v != ""]
    return lines + [""]


def provenance(project_dir: Path | None = None, level: int = 2,
               runs: list[Run] | None = None) -> str:
    """Parameters and provenance of every run (the appendix)."""
    from factcircuits.results.wording import model_line

    runs = project_runs(project_dir) if runs is None else runs
    if not runs:
        return "There are no runs yet.\n"
    h = "#" * level
    out = ["Long values (checksums) are shortened to their first 16 characters; each run's "
           "`run.json` holds them in full.", ""]
    for i, ev in enumerate(runs, 1):
        rec, model = ev.record, ev.model_info
        out += [f"{h} {part_title(i, ev)}", "", f"Run id `{ev.run_id}`, status "
                f"{rec.get('status')}, started {rec.get('started')}, finished "
                f"{rec.get('finished')} ({rec.get('duration_s')} s).", "",
                f"Model: {model_line(ev)}.", ""]
        out += [f"{h}# Parameters", ""] + _table(
            sorted((rec.get("parameters") or {}).items()), ("parameter", "value"))
        model_rows = [(k, v) for k, v in model.items() if k != "versions"]
        out += [f"{h}# Model", ""] + _table(model_rows, ("field", "value"))
        dataset = rec.get("dataset") or {}
        git = rec.get("git") or {}
        versions = rec.get("packages") or model.get("versions") or {}
        out += [f"{h}# Data, code and versions", ""] + _table(
            [*(("dataset " + k, v) for k, v in dataset.items()),
             ("git commit", git.get("commit")), ("uncommitted changes", git.get("dirty")),
             *versions.items()], ("item", "value"))
        notebooks = rec.get("notebooks") or []
        if notebooks:
            out += [f"{h}# Notebooks", "", "| notebook | status | seconds |", "|---|---|---|"]
            out += [f"| {nb.get('name')} | {nb.get('status')} | {nb.get('duration_s')} |"
                    for nb in notebooks] + [""]
    return "\n".join(out)


NEUTRAL_BOOK = ("# Written by factcircuits.report.pages after each render: no run chapters, so "
                "a run folder\n# deleted by hand before the next `quarto render` is never "
                "looked for; the pre-render\n# writes the runs present, which Quarto reads "
                "after it.\n{}\n")


def neutral_book(project_dir: Path | None = None) -> None:
    """Quarto's post-render: book.yml without run chapters. Quarto reads book.yml before its
    pre-render, so a chapter list left from the last render would name a run deleted since
    ("Book chapter … not found"); the list the pre-render writes is read after it."""
    path = Path(project_dir or quarto_project_dir()) / GENERATED / "book.yml"
    if path.is_file():
        atomic_write(path, NEUTRAL_BOOK)


def main() -> None:
    write_generated(quarto_project_dir())


if __name__ == "__main__":
    main()
