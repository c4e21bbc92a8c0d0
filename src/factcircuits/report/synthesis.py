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

from factcircuits.chapters import (
    ablation_knockout,
    activation_patching,
    attribution,
    causal_tracing,
    task_check,
)
from factcircuits.chapters.ablation_knockout import subject_knockout
from factcircuits.report.compare import RunGroup, numbers_text, run_groups
from factcircuits.report.findings import run_findings, run_markdown
from factcircuits.report.readings import mlp_at_subject
from factcircuits.report.sureness import DISAGREE
from factcircuits.results.run import Run, depth_band
from factcircuits.results.wording import LAYER0_MLP


def _interval(value, ci, spec: str) -> str:
    """'0.21 [0.10, 0.32]' (a table cell: the 95% interval in brackets), '—' when not
    computed."""
    if not _number(value):
        return "—"
    text = format(value, spec)
    if ci and len(ci) == 2 and all(_number(v) for v in ci):
        text += f" [{format(ci[0], spec)}, {format(ci[1], spec)}]"
    return text


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


LAYER0_MARK = "†"  # a patching peak at the layer-0 MLP: named, not matched (wording.LAYER0_MLP)


def _peak(layer, layer_range, value, ci, spec: str = ".2f", layer0_mlp: bool = False) -> str:
    """'L13 (12–15): 0.21 [0.10, 0.32]': a peak layer with the layers holding it in 95% of
    resamples, and its value with its interval; a patching peak at the layer-0 MLP marked."""
    if not _number(layer):
        return "—"
    text = f"L{int(layer)}" + (LAYER0_MARK if layer0_mlp and int(layer) == 0 else "")
    if layer_range and len(layer_range) == 2 and all(_number(v) for v in layer_range):
        low, high = (int(v) for v in layer_range)
        text += f" ({low}–{high})" if low != high else ""
    return text + (f": {_interval(value, ci, spec)}" if _number(value) else "")


def overview_table(runs: list[Run]) -> str:
    """One markdown row per run with its key numbers and their 95% intervals (front page,
    two or more runs): the sample, accuracy, where restoring the MLP at the last subject
    token peaks (causal tracing and activation patching), the subject knockout window, the
    head with the largest direct effect and the cross-method checks."""
    rows = ["| run | prompts (analysed) | accuracy | tracing: MLP peak | patching: MLP peak "
            "| subject knockout | top head (DLA) | checks agreeing |",
            "|---|---|---|---|---|---|---|---|"]
    for i, ev in enumerate(runs, 1):
        f = run_findings(ev)
        tc = ev.headline(task_check.METHOD)
        tr = ev.headline(causal_tracing.METHOD)
        pa = ev.headline(activation_patching.METHOD)
        dla = ev.headline(attribution.METHOD)
        ko_h = ev.headline(ablation_knockout.METHOD)
        ko = subject_knockout(ev)
        sample = "—" if tc.n_prompts is None else (
            f"{tc.n_prompts}" + (f" ({tc.n_kept})" if tc.n_kept is not None else ""))
        accuracy = _interval(tc.accuracy, tc.accuracy_ci, ".0%") + (
            " (chance)" if f.at_chance else "")
        mechanism = "—" if f.at_chance else None
        cells = [f"Run {i}: {ev.title}", sample, accuracy,
                 mechanism or _peak(tr.mlp_subject_last_peak_layer,
                                    tr.mlp_subject_last_peak_layer_range,
                                    tr.mlp_subject_last_peak_aie, tr.mlp_subject_last_peak_aie_ci,
                                    ".3f"),
                 mechanism or _peak(pa.mlp_out_subject_last_peak_layer,
                                    pa.mlp_out_subject_last_peak_layer_range,
                                    pa.mlp_out_subject_last_peak,
                                    pa.mlp_out_subject_last_peak_ci, layer0_mlp=True),
                 mechanism or ("—" if ko is None else
                               f"L{int(ko['first'])}–{int(ko['last'])}: " + _interval(
                                   ko["relative_p_change"],
                                   ko_h.knockout_subject_peak_relative_p_change_ci, "+.0%")),
                 mechanism or ("—" if not dla.top_head else f"{dla.top_head}: "
                               + _interval(dla.top_head_dla, dla.top_head_dla_ci, ".2f")),
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


def _mlp_layer(ev: Run):
    mlp = mlp_at_subject(ev)
    return (mlp.get("tracing") or mlp.get("patching") or (None,))[0]


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
    windows = [(int(k["first"]), int(k["last"])) for _, ev in usable
               if (k := subject_knockout(ev)) is not None]
    if windows:
        facts.append("blocking attention to the subject hurts most in windows within layers "
                     f"{min(w[0] for w in windows)}–{max(w[1] for w in windows)}")
    heads = Counter(h for _, ev in usable if (h := ev.headline(attribution.METHOD).top_head))
    if heads:
        head, count = heads.most_common(1)[0]
        facts.append(f"the head with the largest direct effect is {head} in {count} of "
                     f"{sum(heads.values())} settings")
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
             "those the model knows, which the mechanistic methods analyse); where restoring "
             "the MLP at the last subject token peaks, by causal tracing (indirect effect) and "
             "by activation patching (share of the clean−corrupted gap), as layer (range of "
             "layers holding the peak in 95% of resamples): effect; the layers whose blocked "
             "attention to the subject lowers P(answer) most, with the change; the head with "
             "the largest direct logit attribution. Brackets: 95% intervals over the run's "
             "prompts (exact for the accuracy, bootstrap for the others).", "",
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

