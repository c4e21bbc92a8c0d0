"""The front page: what every run found, and what the runs have in common.

Per-run findings come from `factcircuits.report.findings`; this module adds the overview
table and the cross-run summary when there are two or more runs, and says so when there are
none. Used by the Quarto front page (`index.qmd`) and the Quarto-free preview.
"""

from __future__ import annotations

from collections import Counter

from factcircuits.chapters import attribution, task_check
from factcircuits.chapters.ablation_knockout import subject_knockout
from factcircuits.report.findings import run_findings, run_markdown
from factcircuits.report.readings import mlp_at_subject
from factcircuits.report.sureness import DISAGREE
from factcircuits.results.run import Run, depth_band


def overview_table(runs: list[Run]) -> str:
    """One markdown row per run with its main answers (front page, two or more runs)."""
    rows = ["| run | task | accuracy | MLP peak, last subject token | subject knockout | top head"
            " | checks agreeing |", "|---|---|---|---|---|---|---|"]
    for ev in runs:
        f = run_findings(ev)
        acc = ev.headline(task_check.METHOD).accuracy
        mlp = mlp_at_subject(ev)
        layer = (mlp.get("tracing") or mlp.get("patching") or (None,))[0]
        depth = ev.depth(layer)
        ko = subject_knockout(ev)
        cells = [ev.title, ev.task, "—" if acc is None else f"{acc:.0%}" + (
                     " (chance)" if f.at_chance else ""),
                 "—" if layer is None or f.at_chance else f"L{int(layer)}" + (
                     f" ({depth:.2f})" if depth is not None else ""),
                 "—" if ko is None or f.at_chance else f"L{int(ko['first'])}–{int(ko['last'])}",
                 "—" if f.at_chance else (ev.headline(attribution.METHOD).top_head or "—"),
                 checks_cell(f.checks)]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def checks_cell(checks) -> str:
    """'1 of 3 (2 not resolved)': agreeing checks, and those the sample cannot decide."""
    if not checks:
        return "—"
    agree = sum(c.agree for c in checks)
    differ = sum(c.verdict == DISAGREE for c in checks)
    open_ = len(checks) - agree - differ
    return f"{agree} of {len(checks)}" + (f" ({open_} not resolved)" if open_ else "")


def across_runs(runs: list[Run]) -> list[str]:
    """What the runs that are not at chance have in common (two or more runs)."""
    usable = [ev for ev in runs if not run_findings(ev).at_chance]
    lines = []
    if len(usable) < len(runs):
        n = len(runs) - len(usable)
        lines.append(f"{n} of {len(runs)} runs {'is' if n == 1 else 'are'} at chance and left "
                     "out of this summary.")
    if len(usable) < 2:
        return lines
    depths = {}
    for ev in usable:
        mlp = mlp_at_subject(ev)
        layer = (mlp.get("tracing") or mlp.get("patching") or (None,))[0]
        if ev.depth(layer) is not None:
            depths[ev.run_id] = ev.depth(layer)
    if depths:
        band, count = Counter(depth_band(d) for d in depths.values()).most_common(1)[0]
        lines.append(f"MLPs at the last subject token peak in **{band}** layers in {count} of "
                     f"{len(depths)} runs (relative depth {min(depths.values()):.2f}–"
                     f"{max(depths.values()):.2f}).")
    windows = [(ev.depth(k["first"]), ev.depth(k["last"])) for ev in usable
               if (k := subject_knockout(ev)) is not None and ev.n_layers]
    if windows:
        lines.append(f"Blocking the last token's attention to the subject hurts most between "
                     f"relative depth {min(w[0] for w in windows):.2f} and "
                     f"{max(w[1] for w in windows):.2f} ({len(windows)} runs).")
    if len({ev.model for ev in usable}) == 1:  # heads are only comparable within one model
        heads = Counter(h for ev in usable if (h := ev.headline(attribution.METHOD).top_head))
        if heads:
            head, count = heads.most_common(1)[0]
            lines.append(f"The head with the largest direct effect is **{head}** in {count} of "
                         f"{sum(heads.values())} runs of {usable[0].short_model}.")
    agree = [sum(c.agree for c in run_findings(ev).checks) for ev in usable]
    total = [len(run_findings(ev).checks) for ev in usable]
    if sum(total):
        lines.append(f"Cross-method checks: {sum(agree)} of {sum(total)} agree over "
                     f"{len(usable)} runs.")
    return lines


def front_page_markdown(runs: list[Run], anchors: bool = True) -> str:
    """The synthesis: what every run found (layers as relative depth in parentheses)."""
    if not runs:
        return ("**There are no runs yet.** Run `factcircuits run` (the default model on the "
                "default dataset, a few minutes on a CPU), then render again; this page will "
                "state what the run found.\n")
    parts = []
    if len(runs) > 1:
        parts += [f"**Across the {len(runs)} runs.** " + " ".join(across_runs(runs)), "",
                  overview_table(runs), "Layers are given with their relative depth "
                  "(layer / (layers − 1)) so that models of different depth line up; each "
                  "run's own findings follow.", ""]
    parts += [run_markdown(ev, level=2, anchors=anchors) for ev in runs]
    return "\n".join(parts)
