"""Runs side by side: the key headline numbers, grouped figures, per-layer profiles.

Used by the Quarto comparison page and by the preview HTML alike. Layer numbers are also
given as relative depth (layer / (n_layers − 1)), so models of different depth compare.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from factcircuits.report.evidence import load_runs
from factcircuits.results.jsonsafe import NOT_COMPUTED, is_not_computed
from factcircuits.results.registry import DEPTH_LABEL, method, methods
from factcircuits.results.run import Run, relative_depth

ID_COLUMNS = ["run_id", "model", "dataset", "task"]
LAYER_KEY = re.compile(r"(layer|centre)$")


PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
           "#17becf", "#7f7f7f", "#bcbd22"]


def key_columns() -> list[str]:
    """The numbers a reviewer compares first, in chapter order: `notebook.field` (a layer
    field as `<field>_depth`, its relative depth)."""
    return [f"{m.notebook}.{k}" for m in methods() for k in m.key_numbers]


def run_numbers(run: Run) -> dict[str, Any]:
    """A run's headline numbers, flat (see `flat_numbers`)."""
    return flat_numbers({nb: h.to_json() for nb, h in run.headlines.items()}, run.n_layers)


def flat_numbers(headline: dict[str, dict], n_layers: int | None) -> dict[str, Any]:
    """{'02_logit_lens': {'peak_layer': 23}} -> {'02_logit_lens.peak_layer': 23, and
    '02_logit_lens.peak_layer_depth': 0.79 when the model's depth is known} (numbers only)."""
    flat = {}
    for notebook, numbers in sorted((headline or {}).items()):
        for key, value in sorted(numbers.items() if isinstance(numbers, dict) else ()):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                flat[f"{notebook}.{key}"] = value
                depth = relative_depth(value, n_layers) if LAYER_KEY.search(key) else None
                if depth is not None:
                    flat[f"{notebook}.{key}_depth"] = round(depth, 4)
    return flat


# ------------------------------------------------------------------ sensitivity groups
# Parameters that say where a run's files went, not what it computed.
NOT_SETTINGS = {"run_dir"}


def run_settings_of(ev: Run) -> dict[str, Any]:
    """Every parameter a run computed with: the core ones and each notebook's own (a method
    setting such as noise_samples), as JSON text so lists and dicts compare."""
    values = dict(ev.parameters)
    for notebook in ev.record.get("notebooks") or []:
        for key, value in (notebook.get("parameters") or {}).items():
            values.setdefault(key, value)
    return {k: json.dumps(v, sort_keys=True) for k, v in values.items() if k not in NOT_SETTINGS}


@dataclass
class RunGroup:
    """Runs of one model on one dataset (and task). Several such runs differ only in their
    sample (n_prompts, relation, per_relation), seed or method settings: they are sensitivity
    checks of one model, not independent replicates, and are never counted as agreeing
    ones."""

    model: str
    dataset: str
    task: str
    runs: list[tuple[int, Run]]  # (its number in the write-up, the run)

    @property
    def numbers(self) -> list[int]:
        return [i for i, _ in self.runs]

    @property
    def sensitivity(self) -> bool:
        return len(self.runs) > 1

    def varied(self) -> list[str]:
        """The settings whose values differ between the group's runs, in parameter order."""
        settings = [run_settings_of(ev) for _, ev in self.runs]
        # the core parameters first (every run has them), then the methods' own
        keys = list(dict.fromkeys([k for _, ev in self.runs for k in ev.parameters]
                                  + [k for s in settings for k in s]))
        return [k for k in keys if len({s.get(k) for s in settings}) > 1]

    def setting_text(self, ev: Run) -> str:
        """'seed=1, n_prompts=8': what sets this run apart within its group."""
        values = ev.parameters | {k: v for nb in ev.record.get("notebooks") or []
                                  for k, v in (nb.get("parameters") or {}).items()
                                  if k not in ev.parameters}
        return ", ".join(f"{k}={values[k]}" if k in values else f"{k} unset"
                         for k in self.varied())

    @property
    def label(self) -> str:
        return f"{self.runs[0][1].short_model} on {self.dataset}"


def run_groups(runs: list[Run]) -> list[RunGroup]:
    """The runs grouped by model, dataset and task, in run order (numbers as in the
    write-up's parts: Run 1 is runs[0])."""
    groups: dict[tuple[str, str, str], RunGroup] = {}
    for i, ev in enumerate(runs, 1):
        key = (ev.model, ev.dataset, ev.task)
        groups.setdefault(key, RunGroup(*key, [])).runs.append((i, ev))
    return list(groups.values())


def numbers_text(numbers: list[int]) -> str:
    """[1] -> 'Run 1'; [2, 3, 4] -> 'Runs 2, 3 and 4'."""
    if len(numbers) == 1:
        return f"Run {numbers[0]}"
    return "Runs " + ", ".join(map(str, numbers[:-1])) + f" and {numbers[-1]}"


def groups_markdown(runs: list[Run]) -> str:
    """The runs by model and dataset, for the comparison page: a group of several runs is
    named as sensitivity checks of one model, with what each of its runs changes."""
    lines = []
    for group in run_groups(runs):
        if group.sensitivity:
            varied = ", ".join(group.varied()) or "nothing recorded"
            lines.append(
                f"- **{group.label}**: {numbers_text(group.numbers)} are sensitivity checks "
                f"of one model on one dataset (they differ in {varied}), not independent "
                "replicates: their agreement shows robustness to these settings, not a "
                "replication. " + "; ".join(f"Run {i}: {group.setting_text(ev)}"
                                            for i, ev in group.runs) + ".")
        else:
            (i, ev), = group.runs
            lines.append(f"- **{group.label}**: Run {i}.")
    return "\n".join(lines) + "\n"


def _runs(runs: list[Run] | Path | None) -> list[Run]:
    if runs is None or isinstance(runs, (str, Path)):
        from factcircuits.run.folders import default_runs_root

        return load_runs(Path(runs or default_runs_root()))
    return runs


def comparison_table(runs: list[Run] | Path | None = None) -> pd.DataFrame:
    """One row per accepted run: id, model, dataset, task, then `notebook.metric` columns."""
    rows = [{"run_id": ev.run_id, "model": ev.model, "dataset": ev.dataset, "task": ev.task,
             **run_numbers(ev)} for ev in _runs(runs)]
    return pd.DataFrame(rows, columns=None if rows else ID_COLUMNS)


def run_labels(runs: list[Run]) -> dict[str, str]:
    """run id -> 'Run 1: model on dataset' (the same numbering as the write-up's parts)."""
    from factcircuits.report.pages import part_title

    return {ev.run_id: part_title(i, ev) for i, ev in enumerate(runs, 1)}


def key_metrics(table: pd.DataFrame) -> list[str]:
    return [c for c in key_columns() if c in table.columns]


def short_labels(runs: list[Run]) -> dict[str, str]:
    """run id -> 'Run 1', ... (the page lists what each stands for)."""
    return {rid: label.split(":")[0] for rid, label in run_labels(runs).items()}


# ------------------------------------------------------------------ a key number's cell
def stored_numbers(run: Run, notebook: str) -> dict[str, Any] | None:
    """The notebook's headline as run.json stores it (not-computed markers kept), or None
    when the run did not execute that notebook."""
    stored = (run.record.get("headline") or {}).get(notebook)
    return stored if isinstance(stored, dict) else None


def _field(column: str) -> tuple[str, str, bool]:
    """'02_logit_lens.peak_layer_depth' -> ('02_logit_lens', 'peak_layer', True): the
    headline field a column shows, and whether as relative depth (`flat_numbers`)."""
    notebook, key = column.split(".", 1)
    base = key.removesuffix("_depth")
    return (notebook, base, True) if base != key and LAYER_KEY.search(base) \
        else (notebook, key, False)


def _pair(value: Any) -> tuple[float, float] | None:
    if isinstance(value, list) and len(value) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return float(value[0]), float(value[1])
    return None


def interval_of(run: Run, column: str) -> tuple[float, float] | None:
    """The interval the run stores beside a key number: `<field>_ci` (a bootstrap or exact
    interval) or `<field>_range` (the layers holding a resampled peak), as relative depth for
    a depth column; None when the run stores none."""
    notebook, key, as_depth = _field(column)
    numbers = stored_numbers(run, notebook) or {}
    # a summary of resamples names its spread by what it summarises: stability_median's is
    # stability_range
    stems = [key] + [key.removesuffix(s) for s in ("_median", "_mean") if key.endswith(s)]
    found = next((pair for stem in stems for name in (f"{stem}_ci", f"{stem}_range")
                  if (pair := _pair(numbers.get(name))) is not None), None)
    if found is None or not as_depth:
        return found
    low, high = (relative_depth(v, run.n_layers) for v in found)
    return None if low is None or high is None else (round(low, 4), round(high, 4))


def missing_reason(run: Run, column: str) -> str:
    """Why a run has no value for a key number: its notebook did not run, the computation
    gave none (the stored reason), or the number does not apply to this run."""
    notebook, key, as_depth = _field(column)
    numbers = stored_numbers(run, notebook)
    if numbers is None:
        return f"not computed: notebook {notebook} was not run"
    value = numbers.get(key)
    if is_not_computed(value):
        return f"not computed: {value[NOT_COMPUTED]}"
    if key in numbers and value is None:
        return "not computed (recorded as null)"
    if as_depth and value is not None:
        return "not computed: the model's depth is unknown"
    return f"not applicable to this {run.task} run"


def is_whole(run: Run, column: str, value: Any) -> bool:
    """A count or a layer: the headline field is declared `int` (or, for a method without a
    typed headline, stored as an integer); relative depths never are."""
    notebook, key, as_depth = _field(column)
    if as_depth:
        return False
    found = method(notebook)
    if found is not None:
        declared = {f.name: str(f.type) for f in dataclasses.fields(found.headline)}
        if key in declared:
            return declared[key].startswith("int")
    stored = (stored_numbers(run, notebook) or {}).get(key)
    return isinstance(stored, int) and not isinstance(stored, bool)


def number_text(value: float, whole: bool) -> str:
    """1410 as '1410' (never '1.41e+03'), other numbers with 3 significant digits."""
    return str(int(round(value))) if whole else f"{value:.3g}"


def cell_text(run: Run, column: str, value: Any) -> str:
    """'0.25 [0.2, 0.3]', '1410 [1200, 1620]', or why there is no number."""
    if value is None or pd.isna(value):
        return f"– ({missing_reason(run, column)})"
    whole = is_whole(run, column, value)
    found = interval_of(run, column)
    text = number_text(float(value), whole)
    if found is None:  # a count of prompts is exact; any other number should carry one
        exact = whole and _field(column)[1].startswith("n_")
        return text if exact else f"{text} (no interval stored)"
    return f"{text} [{number_text(found[0], whole)}, {number_text(found[1], whole)}]"


def key_numbers_table(table: pd.DataFrame, runs: list[Run]) -> pd.DataFrame:
    """The key numbers as text, each with the interval its run stores ([low, high]; layers as
    the range of resampled peaks) and, where a run has none, why: one row per number and one
    column per run ('Run 1', ...): narrow enough for a page with several runs."""
    keys = key_metrics(table) or [c for c in table.columns if c not in ID_COLUMNS][:12]
    by_id = {ev.run_id: ev for ev in runs}
    rows = table.set_index("run_id")[keys]
    out = pd.DataFrame({rid: [cell_text(by_id[rid], k, rows.at[rid, k]) for k in keys]
                        for rid in rows.index}, index=keys)
    out = out.rename(columns=short_labels(runs))
    out.index = [number_label(k) for k in out.index]
    out.index.name = "headline number"
    out.columns.name = None
    return out


def number_label(key: str) -> str:
    """'02_logit_lens.mlp_share' -> 'logit lens · mlp share'."""
    notebook, name = key.split(".", 1)
    found = method(notebook)
    return found.label(name) if found else f"{notebook} · {name.replace('_', ' ')}"


def bar_series(table: pd.DataFrame, runs: list[Run] | None = None) -> pd.Series:
    """Each run's bar series (legend entry): its model, or 'model (Run N)' where two runs of one
    model share a dataset, so their bars stand side by side instead of on one spot."""
    if runs:
        return table["run_id"].map(series_labels(runs))
    model = table["model"].astype(str).str.rsplit("/", n=1).str[-1]
    shared = table.duplicated(["model", "dataset"], keep=False)
    return model.where(~shared, model + " (" + table["run_id"].astype(str) + ")")


def comparison_figure(table: pd.DataFrame, runs: list[Run] | None = None):
    """One figure, a small panel per key number (every number, up to 12, when the runs have
    none of the key ones): dataset on x, one bar per run, grouped side by side (never stacked:
    runs of one model on one dataset get their own series), each bar with the interval its run
    stores as error bars; a run without the number gets an empty bar labelled with the reason
    ('not applicable', 'not computed'). None when nothing to plot."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    keys = key_metrics(table) or [c for c in table.columns if c not in ID_COLUMNS][:12]
    # counts of prompts follow the dataset's size: the table has them, the bars would not help
    keys = [k for k in keys if table[k].notna().any() and not k.endswith(".n_kept")]
    if not keys:
        return None
    cols = 2
    rows = (len(keys) + cols - 1) // cols
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[number_label(k) for k in keys],
                        vertical_spacing=min(0.5 / rows, 0.12))
    table = table.assign(series=bar_series(table, runs))
    series = list(dict.fromkeys(table["series"]))  # run order, as the profiles' lines
    colours = dict(zip(series, PALETTE * 10))
    by_id = {ev.run_id: ev for ev in runs or []}
    for i, key in enumerate(keys):
        cell = {"row": i // cols + 1, "col": i % cols + 1}
        for name in series:
            part = table[table["series"] == name]
            drawn = part.dropna(subset=[key])
            if not drawn.empty:
                # no error bar (not one of zero length) where the run stores no interval
                found = [interval_of(by_id[r], key) if r in by_id else None
                         for r in drawn["run_id"]]
                fig.add_trace(go.Bar(
                    x=drawn["dataset"], y=drawn[key], name=name, marker_color=colours[name],
                    legendgroup=name, showlegend=i == 0, hovertext=drawn["run_id"],
                    error_y={"type": "data", "symmetric": False,
                             "array": [f[1] - v if f else None
                                       for f, v in zip(found, drawn[key])],
                             "arrayminus": [v - f[0] if f else None
                                            for f, v in zip(found, drawn[key])]}),
                    **cell)
            lacking = part[part[key].isna()]
            if not lacking.empty and by_id:  # say why, where the bar would stand
                reasons = [missing_reason(by_id[r], key) for r in lacking["run_id"]]
                fig.add_trace(go.Bar(
                    x=lacking["dataset"], y=[0] * len(lacking), name=name,
                    marker_color=colours[name], legendgroup=name, showlegend=False,
                    text=[r.split(":")[0] for r in reasons], textposition="outside",
                    textfont_size=9, hovertext=[f"{r}: {why}" for r, why in
                                                zip(lacking["run_id"], reasons)]), **cell)
    fig.update_layout(height=200 * rows + 140, barmode="group",
                      margin={"t": 70, "b": 70}, title="Key headline numbers by dataset and run",
                      legend={"orientation": "h", "y": -0.03, "yanchor": "top", "x": 0,
                              "title_text": "model"})
    fig.update_annotations(font_size=11)
    return fig


def comparison_figures(table: pd.DataFrame, runs: list[Run] | None = None) -> list:
    figure = comparison_figure(table, runs)
    return [figure] if figure is not None else []


# ------------------------------------------------------------------ per-layer profiles
def series_labels(runs: list[Run]) -> dict[str, str]:
    """run id -> its line's name: the model, or 'model (Run N)' where two runs of one model
    share a dataset (a parameter grid), so their lines stay apart."""
    pairs = [(ev.short_model, ev.dataset) for ev in runs]
    numbers = short_labels(runs)
    return {ev.run_id: ev.short_model if pairs.count((ev.short_model, ev.dataset)) == 1
            else f"{ev.short_model} ({numbers[ev.run_id]})" for ev in runs}


def _profile(runs: list[Run], source, name: str, select, y: str,
             depth=None) -> pd.DataFrame:
    """Rows of one result table per run, with `series` (the line: the model), `dataset` and
    `depth` (`depth(table, n_layers)`, default layer / (n_layers − 1)) columns added."""
    labels, parts = series_labels(runs), []
    for ev in runs:
        table = ev.result(source, name)
        if table is None or not ev.n_layers or ev.n_layers < 2:
            continue
        part = select(table)
        if part is None or part.empty or y not in part:
            continue
        where = (depth(part, ev.n_layers) if depth else
                 part["layer"].astype(float) / (ev.n_layers - 1))
        parts.append(part.assign(series=labels[ev.run_id], dataset=ev.dataset, depth=where))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _lines(data: pd.DataFrame, runs: list[Run], y: str, dash: str | None, title: str,
           y_label: str, x_label: str = DEPTH_LABEL):
    """One panel per dataset (models compare on the same facts), one colour per model (as in
    the headline figure), one dash per `dash` value."""
    import plotly.express as px

    series = list(dict.fromkeys(series_labels(runs).values()))  # run order
    colours = dict(zip(series, PALETTE * 10))
    datasets = list(dict.fromkeys(ev.dataset for ev in runs if ev.dataset in set(data["dataset"])))
    fig = px.line(data.sort_values("depth"), x="depth", y=y, color="series", line_dash=dash,
                  facet_col="dataset", markers=True, title=title, color_discrete_map=colours,
                  category_orders={"series": series, "dataset": datasets},
                  labels={"depth": x_label, y: y_label, "series": "model", "dataset": "",
                          dash or "": ""})
    fig.for_each_annotation(lambda a: a.update(text=a.text.lstrip("=")))
    fig.update_traces(marker_size=4)
    fig.update_layout(height=440, legend={"orientation": "h", "y": -0.22, "title_text": ""},
                      title={"font_size": 15, "x": 0, "xanchor": "left", "y": 0.97},
                      margin={"t": 90})
    return fig


def _several(data: pd.DataFrame) -> bool:
    """Something to compare: at least two runs on one dataset."""
    return bool(len(data)) and bool((data.groupby("dataset")["series"].nunique() > 1).any())


def profile_figures(runs: list[Run]) -> list:
    """Per-layer profiles overlaid by relative depth (each method's `profiles`), one panel per
    dataset, one colour per model (only where two runs share a dataset)."""
    figures = []
    for m in methods():
        for p in m.profiles:
            data = _profile(runs, m, p.table, p.select, p.y, p.depth)
            if _several(data):
                figures.append(_lines(data, runs, p.y, p.dash, p.title, p.y_label, p.x_label))
    return figures
