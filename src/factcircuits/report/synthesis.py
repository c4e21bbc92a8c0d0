"""The front page: what the runs found, and what they have in common.

One run: its findings in full (`factcircuits.report.findings`). Several runs: one table (a row
per run: model, dataset, sample, the key numbers with their 95% intervals) and a paragraph per
model; each run's detailed findings open its own part of the write-up. Runs of one model on
one dataset that differ only in sample, seed or method settings are sensitivity checks of that
model (`compare.run_groups`): described together, counted once, never as agreeing
replicates. With no runs, the page says so. Used by the Quarto front page (`index.qmd`) and the
Quarto-free preview.
"""

from __future__ import annotations

from collections import Counter

from factcircuits.report.compare import RunGroup, numbers_text, run_groups
from factcircuits.report.findings import run_findings, run_markdown
from factcircuits.report.readings import by_method, mlp_at_subject
from factcircuits.report.sureness import DISAGREE
from factcircuits.results.estimates import ANSWER_HEAD, SUBJECT_READ, of
from factcircuits.results.registry import methods
from factcircuits.results.run import Run, depth_band
from factcircuits.results.wording import LAYER0_MARK, LAYER0_MLP


def overview_table(runs: list[Run]) -> str:
    """One markdown row per run (front page, two or more runs): each method's cells
    (`Method.overview`: the sample and accuracy, each method's key location with its 95%
    interval), in chapter order, and the cross-method checks. A model at chance shows '—'
    for every mechanism."""
    columns = [(m, column) for m in methods() if m.overview
               for column in m.overview(runs[0]) if runs]
    rows = ["| run | " + " | ".join(c for _, c in columns) + " | checks agreeing |",
            "|---|" + "---|" * len(columns) + "---|"]
    for i, ev in enumerate(runs, 1):
        f = run_findings(ev)
        cells = {}
        for m in {m for m, _ in columns}:
            given = m.overview(ev)
            # at chance there is no mechanism: only the task check's cells say something
            cells |= {c: ("—" if f.at_chance and not m.at_chance else v)
                      for c, v in given.items()}
        rows.append("| " + " | ".join([f"Run {i}: {ev.title}",
                                       *(cells.get(c, "—") for _, c in columns),
                                       checks_cell(f.checks)]) + " |")
    return "\n".join(rows) + "\n"


def checks_cell(checks) -> str:
    """'1 of 3 (2 not resolved)': agreeing checks, and those the sample cannot decide."""
    if not checks:
        return "—"
    agree = sum(c.agree for c in checks)
    differ = sum(c.verdict == DISAGREE for c in checks)
    open_ = len(checks) - agree - differ
    return f"{agree} of {len(checks)}" + (f" ({open_} not resolved)" if open_ else "")


def _mlp_layer(ev: Run):
    mlp = mlp_at_subject(ev)
    return None if mlp is None else mlp.layer


def _spread(values: list[int], what: str) -> str:
    """'at layer 13 in every setting' / 'between layers 11 and 14 across the settings'."""
    low, high = min(values), max(values)
    return (f"{what} {low} in every setting" if low == high else
            f"{what}s {low}–{high} across the settings")


TASK_NAMES = {"cloze": "cloze", "yesno": "yes/no"}


def group_text(group: RunGroup, show_task: bool = False) -> str:
    """What one model found on one dataset: a single run's summary, or for sensitivity checks
    how its results move across the settings (each check counted once per setting)."""
    usable = [(i, ev) for i, ev in group.runs if not run_findings(ev).at_chance]
    task = f"{TASK_NAMES.get(group.task, group.task)}; " if show_task else ""
    where = f"On {group.dataset} ({task}{numbers_text(group.numbers)})"
    if not usable:
        return (f"{where} it is at chance: there is no retrieved fact to locate, so no "
                "mechanism is claimed.")
    if not group.sensitivity:
        return f"{where}: {run_findings(group.runs[0][1]).summary}"
    varied = ", ".join(group.varied()) or "no recorded setting"
    text = f"{where}, sensitivity checks that differ in {varied} (not independent replicates):"
    facts = []
    if len(usable) < len(group.runs):
        facts.append(f"{len(group.runs) - len(usable)} of the {len(group.runs)} settings are "
                     "at chance")
    layers = [int(layer) for _, ev in usable if (layer := _mlp_layer(ev)) is not None]
    if layers:
        facts.append("the MLP at the last subject token peaks at "
                     + _spread(layers, "layer") + f" ({len(layers)} settings)")
    # the windows of the first method that blocks attention over windows (a knockout)
    windows = [w for _, ev in usable
               if (w := next((e.window for e in of(ev.estimates(), SUBJECT_READ) if e.window),
                             None)) is not None]
    if windows:
        facts.append("blocking attention to the subject hurts most in windows within layers "
                     f"{min(w[0] for w in windows)}–{max(w[1] for w in windows)}")
    # the head that moves the answer by the first method that names one (chapter order)
    heads = Counter((e.by, e.component) for _, ev in usable
                    for e in by_method(ev.estimates(), ANSWER_HEAD)[:1])
    if heads:
        (by, head), count = heads.most_common(1)[0]
        facts.append(f"{by} singles out {head} as the head that moves the answer in {count} "
                     f"of {sum(heads.values())} settings")
    counts = [f"{sum(c.agree for c in found)} of {len(found)}"
              for _, ev in usable if (found := run_findings(ev).checks)]
    if counts:
        facts.append("cross-method checks agree in " + (
            ", ".join(counts[:-1]) + f" and {counts[-1]}" if len(counts) > 1 else counts[0])
            + " (one count per setting)")
    return text + " " + ("; ".join(facts) if facts else "too few analyses to compare") + "."


def model_paragraphs(runs: list[Run]) -> list[str]:
    """One paragraph per model: what it found on each dataset (sensitivity checks together)."""
    by_model: dict[str, list[RunGroup]] = {}
    for group in run_groups(runs):
        by_model.setdefault(group.model, []).append(group)
    paragraphs = []
    for groups in by_model.values():
        name = groups[0].runs[0][1].short_model
        tasks = len({g.task for g in groups}) > 1  # name the task where it tells them apart
        paragraphs.append(f"**{name}.** " + " ".join(group_text(g, tasks) for g in groups))
    return paragraphs


def across_runs(runs: list[Run]) -> list[str]:
    """What the independent model–dataset pairs that are not at chance have in common: a
    group of sensitivity checks counts once (its settings' majority; 'varies' when they
    split), so several seeds of one model never count as agreeing replicates."""
    groups = run_groups(runs)
    usable = [g for g in groups
              if any(not run_findings(ev).at_chance for _, ev in g.runs)]
    lines = []
    if len(usable) < len(groups):
        n = len(groups) - len(usable)
        lines.append(f"{n} of {len(groups)} model–dataset pairs {'is' if n == 1 else 'are'} "
                     "at chance and left out of this summary.")
    if len(usable) < 2:
        return lines
    bands = []
    for g in usable:
        found = {depth_band(ev.depth(layer)) for _, ev in g.runs
                 if not run_findings(ev).at_chance and (layer := _mlp_layer(ev)) is not None
                 and ev.depth(layer) is not None}
        if found:
            bands.append(found.pop() if len(found) == 1 else None)
    if bands:
        band, count = Counter(b for b in bands if b).most_common(1)[0] if any(bands) \
            else (None, 0)
        varies = sum(b is None for b in bands)
        if band:
            lines.append(f"MLPs at the last subject token peak in **{band}** layers for {count} "
                         f"of {len(bands)} model–dataset pairs"
                         + (f" ({varies} vary with their settings)" if varies else "") + ".")
    return lines


def front_page_markdown(runs: list[Run], anchors: bool = True) -> str:
    """The synthesis. One run: its findings in full. Several: the runs' table, a paragraph
    per model and what the independent model–dataset pairs share; each run's detailed
    findings open its part (`run_part_markdown`)."""
    if not runs:
        return ("**There are no runs yet.** Run `factcircuits run` (the default model on the "
                "default dataset, a few minutes on a CPU), then render again; this page will "
                "state what the run found.\n")
    if len(runs) == 1:
        return run_markdown(runs[0], level=2, anchors=anchors)
    shared = across_runs(runs)
    parts = [f"**{len(runs)} runs.** Each row is one run: the prompts scored (in parentheses "
             "those the model knows, which the mechanistic methods analyse), the accuracy, and "
             "each method's key location: the head with the largest direct logit attribution; "
             "where restoring the MLP at the last subject token peaks, by activation patching "
             "(share of the clean−corrupted gap) and by causal tracing (indirect effect), as "
             "layer (range of layers holding the peak in 95% of resamples): effect; the layers "
             "whose blocked attention to the subject lowers P(answer) most, with the change. "
             "Brackets: 95% intervals over the run's prompts (exact for the accuracy, "
             "bootstrap for the others).", "",
             overview_table(runs), ""]
    table = parts[2]
    if LAYER0_MARK in table:
        parts += [f"{LAYER0_MARK} A patching peak at layer 0: {LAYER0_MLP}.", ""]
    parts += [p + "\n" for p in model_paragraphs(runs)]
    if shared:
        parts += [f"**Across models and datasets.** {' '.join(shared)}", ""]
    parts += ["Each run's detailed findings (with every interval and the cross-method checks) "
              "open its part of this write-up.", ""]
    return "\n".join(parts)

