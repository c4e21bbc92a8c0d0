"""Comparison across runs from hand-made run folders: key numbers per run, profiles by
relative depth (11-layer toy model: depth = layer / 10)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from test_findings import make_run

from factcircuits.report.compare import (
    comparison_figure,
    comparison_table,
    key_numbers_table,
    number_label,
    profile_figures,
)
from factcircuits.report.evidence import load_runs
from factcircuits.report.pages import comparison_intro


def add_resid_profile(folder, peak_layer):
    path = folder / "results" / "04_activation_patching" / "patching_by_class.csv"
    table = pd.read_csv(path)
    resid = pd.DataFrame([{"component": "resid_pre", "token_class": cls, "layer": layer,
                           "normalized": float(layer == peak_layer)}
                          for cls in ("subject_last", "last", "prefix") for layer in range(11)])
    pd.concat([table, resid]).to_csv(path, index=False)


def test_key_numbers_and_profiles_by_relative_depth(tmp_path):
    add_resid_profile(make_run(tmp_path, "a__x__1"), 2)
    add_resid_profile(make_run(tmp_path, "b__y__2"), 5)
    runs = load_runs(tmp_path)
    table = comparison_table(runs)
    # 02_logit_lens.peak_layer = 8 -> depth 0.8
    assert table["02_logit_lens.peak_layer_depth"].tolist() == [0.8, 0.8]
    keys = key_numbers_table(table, runs)
    assert list(keys.columns) == ["Run 1", "Run 2"]
    # these hand-made runs store no interval for them, and the table says so
    assert keys.loc["logit lens · mlp share"].tolist() == ["0.25 (no interval stored)"] * 2
    assert keys.loc["logit lens · peak layer depth"].tolist() == \
        ["0.8 (no interval stored)"] * 2
    figures = profile_figures(runs)
    assert len(figures) == 1  # only patching has per-layer tables in both runs
    # one model on one dataset twice: each line names its run
    traces = {(t.name): t for t in figures[0].data}
    assert set(traces) == {f"toy-model (Run {i}), {p}" for i in (1, 2)
                           for p in ("last subject token", "last token")}  # no prefix class
    peak = traces["toy-model (Run 2), last token"]
    assert list(peak.x) == [layer / 10 for layer in range(11)]
    assert list(peak.y).index(1.0) == 5


def test_runs_of_one_model_on_one_dataset_are_bars_side_by_side(tmp_path):
    """Issue 23: two parameter sets of one model on one dataset drew one bar per dataset
    (accuracy 0.769 and 1.0 as one bar of 1.77). Each run is its own series, grouped; every
    bar's height is that run's headline value."""
    for run_id, accuracy in (("m__d__1", 0.769), ("m__d__2", 1.0)):
        folder = make_run(tmp_path, run_id)
        path = folder / "run.json"
        record = json.loads(path.read_text())
        record["headline"]["01_task_check"]["accuracy"] = accuracy
        path.write_text(json.dumps(record))
    runs = load_runs(tmp_path)
    table = comparison_table(runs)
    fig = comparison_figure(table, runs)
    assert fig.layout.barmode == "group"
    accuracy = [t for t in fig.data if t.xaxis == "x"]  # the first panel
    assert fig.layout.annotations[0].text == "task check · accuracy (top-1)"
    assert [t.name for t in accuracy] == ["toy-model (Run 1)", "toy-model (Run 2)"]
    assert [list(t.y) for t in accuracy] == [[0.769], [1.0]]
    assert [list(t.hovertext) for t in accuracy] == [["m__d__1"], ["m__d__2"]]
    for trace in fig.data:  # no series puts two bars on one spot
        assert len(set(trace.x)) == len(trace.x)


def retitle(folder, model, dataset, n_layers):
    record = json.loads((folder / "run.json").read_text())
    record["parameters"]["dataset"] = dataset
    record["model"] = {"resolved_name": model, "n_layers": n_layers}
    (folder / "run.json").write_text(json.dumps(record))
    return folder


def lens_table(folder, n_layers, values):
    """logit_lens_mean.csv: embed, then attn and mlp of each layer (values in that order)."""
    rows = [{"step": 0, "layer": -1, "sublayer": "embed", "value": values[0]}]
    rows += [{"step": 1 + 2 * layer + (sub == "mlp"), "layer": layer, "sublayer": sub,
              "value": values[1 + 2 * layer + (sub == "mlp")]}
             for layer in range(n_layers) for sub in ("attn", "mlp")]
    (folder / "results" / "02_logit_lens").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(folder / "results" / "02_logit_lens" / "logit_lens_mean.csv",
                              index=False)


def test_profiles_compare_models_on_the_same_dataset_in_one_panel(tmp_path):
    """Two models (2 and 4 layers) on two datasets: one panel per dataset, one colour per
    model; the logit lens runs from 0 (embeddings) to 1 (after the last layer)."""
    for i, (model, layers) in enumerate((("org/small", 2), ("org/deep", 4))):
        for dataset in ("facts-a", "facts-b"):
            folder = retitle(make_run(tmp_path, f"{model[4:]}__{dataset}__{i}",
                                      notebooks=("01",)), model, dataset, layers)
            lens_table(folder, layers, [0.0] + [float(v + 1) for v in range(2 * layers)])
    figures = profile_figures(load_runs(tmp_path))
    assert len(figures) == 1
    by_panel = {}
    for t in figures[0].data:
        by_panel.setdefault(t.xaxis, {})[t.name] = t
    assert len(by_panel) == 2 and all(set(p) == {"small", "deep"} for p in by_panel.values())
    small = next(iter(by_panel.values()))["small"]
    # 2 layers: embed 0, L0 attn 1/4, L0 mlp 2/4, L1 attn 3/4, L1 mlp 1; share = value / 4
    assert list(small.x) == [0, 0.25, 0.5, 0.75, 1.0]
    assert list(small.y) == [0, 0.25, 0.5, 0.75, 1.0]
    colours = {t.name: t.line.color for t in figures[0].data}
    assert colours["small"] != colours["deep"]
    assert len({t.line.color for t in figures[0].data if t.name == "small"}) == 1


def test_one_run_has_no_profiles(tmp_path):
    add_resid_profile(make_run(tmp_path, "a__x__1"), 2)
    assert profile_figures(load_runs(tmp_path)) == []


def add_layer_dla(folder, by_layer):
    """by_layer: {(component, layer): [dla per prompt]}; every other cell 0; embed 5 (left out
    of the profile)."""
    rows = [{"prompt": p, "layer": -1, "component": "embed", "dla": 5.0} for p in (0, 1)]
    rows += [{"prompt": p, "layer": layer, "component": c,
              "dla": by_layer.get((c, layer), [0.0, 0.0])[p]}
             for c in ("attn", "mlp") for layer in range(11) for p in (0, 1)]
    (folder / "results" / "03_attribution").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(folder / "results" / "03_attribution" / "layer_dla.csv",
                              index=False)


def test_dla_profile_is_the_signed_share_of_total_abs_dla_by_relative_depth(tmp_path):
    # run a: attention at layer 3 means (1+3)/2 = 2, MLP at layer 5 means −2: total |DLA| 4
    add_layer_dla(make_run(tmp_path, "a__x__1"), {("attn", 3): [1.0, 3.0],
                                                  ("mlp", 5): [-2.0, -2.0]})
    add_layer_dla(make_run(tmp_path, "b__y__2"), {("mlp", 8): [0.5, 1.5]})  # all of it
    figures = profile_figures(load_runs(tmp_path))
    dla = [f for f in figures if "Direct logit attribution" in f.layout.title.text]
    assert len(dla) == 1
    traces = {t.name.replace("toy-model (", "").replace(")", ""): dict(zip(t.x, t.y))
              for t in dla[0].data}
    assert set(traces) == {"Run 1, attention", "Run 1, MLP", "Run 2, attention", "Run 2, MLP"}
    assert traces["Run 1, attention"][0.3] == 0.5 and traces["Run 1, MLP"][0.5] == -0.5
    assert traces["Run 2, MLP"][0.8] == 1.0
    assert sum(abs(v) for v in traces["Run 2, attention"].values()) == 0


def test_intro_says_which_prompts_each_run_kept_and_what_its_user_chose(tmp_path):
    chosen = make_run(tmp_path, "a__x__1")  # 16 of 20 kept (the fixture's task check)
    record = json.loads((chosen / "run.json").read_text())
    record["parameters"] |= {"known": "pairwise", "n_prompts": 16, "noise_samples": 2}
    record["parameters_set"] = ["dataset", "known", "n_prompts", "noise_samples"]
    (chosen / "run.json").write_text(json.dumps(record))
    make_run(tmp_path, "b__y__2")  # written before the parameter existed: top-1, nothing set
    intro = comparison_intro(load_runs(tmp_path))
    assert ("- **Run 1**: toy-model on toy-facts (`a__x__1`): known=pairwise (16 of 20 prompts "
            "kept) · n_prompts=16 · noise_samples=2\n") in intro
    assert "(`b__y__2`): known=top1 (16 of 20 prompts kept)\n" in intro


def set_parameters(folder, notebook_parameters=None, **parameters):
    record = json.loads((folder / "run.json").read_text())
    record["parameters"] |= parameters
    if notebook_parameters:
        record["notebooks"][0]["parameters"] = notebook_parameters
    (folder / "run.json").write_text(json.dumps(record))
    return folder


def test_runs_of_one_model_on_one_dataset_are_sensitivity_checks_not_replicates(tmp_path):
    """Seeds, samples and method settings of one model on one dataset form one group, named
    with what each run changes; another dataset or another model is a group of its own."""
    from factcircuits.report.compare import groups_markdown, run_groups

    set_parameters(make_run(tmp_path, "a__x__1"), {"noise_samples": 10, "run_dir": "/a"})
    set_parameters(make_run(tmp_path, "a__x__2"), {"noise_samples": 10, "run_dir": "/b"},
                   seed=1)
    set_parameters(make_run(tmp_path, "a__x__3"), {"noise_samples": 2, "run_dir": "/c"},
                   n_prompts=8)
    retitle(make_run(tmp_path, "b__y__4"), "org/toy-model", "other-facts", 11)
    retitle(make_run(tmp_path, "c__z__5"), "org/big-model", "toy-facts", 11)
    runs = load_runs(tmp_path)
    groups = run_groups(runs)
    assert [(g.label, g.numbers) for g in groups] == [
        ("toy-model on toy-facts", [1, 2, 3]), ("toy-model on other-facts", [4]),
        ("big-model on toy-facts", [5])]
    sensitivity = groups[0]
    assert sensitivity.sensitivity and not groups[1].sensitivity
    # what differs, in parameter order; where the files went (run_dir) is not a setting
    assert sensitivity.varied() == ["seed", "n_prompts", "noise_samples"]
    assert [sensitivity.setting_text(ev) for _, ev in sensitivity.runs] == [
        "seed=0, n_prompts unset, noise_samples=10", "seed=1, n_prompts unset, noise_samples=10",
        "seed=0, n_prompts=8, noise_samples=2"]
    text = groups_markdown(runs)
    assert ("- **toy-model on toy-facts**: Runs 1, 2 and 3 are sensitivity checks of one model "
            "on one dataset (they differ in seed, n_prompts, noise_samples), not independent "
            "replicates") in text
    assert "- **toy-model on other-facts**: Run 4.\n" in text
    assert "- **big-model on toy-facts**: Run 5.\n" in text
    assert "**By model and dataset.**" in comparison_intro(runs)


def edit_headline(folder, notebook, **fields):
    """Set (or, with None, remove) stored headline fields of a hand-made run."""
    record = json.loads((folder / "run.json").read_text())
    numbers = record["headline"][notebook]
    for key, value in fields.items():
        if value is None:
            numbers.pop(key, None)
        else:
            numbers[key] = value
    (folder / "run.json").write_text(json.dumps(record))


def test_key_numbers_carry_their_intervals_whole_numbers_and_why_one_is_missing(tmp_path):
    """Issue 32.7: a key number is printed with the interval its run stores, a count as a
    whole number (1410 was '1.41e+03' once another run lacked it), and a run without the
    number says why instead of leaving a gap."""
    first = make_run(tmp_path, "m__d__1")
    edit_headline(first, "01_task_check", n_kept=1410)
    second = make_run(tmp_path, "m__d__2", notebooks=("01", "02", "03", "04"))
    edit_headline(second, "01_task_check", n_kept=None,
                  mean_metric={"not_computed": "no prompt qualified for it"})
    runs = load_runs(tmp_path)
    keys = key_numbers_table(comparison_table(runs), runs)
    accuracy = keys.loc["task check · accuracy (top-1)"].tolist()
    assert accuracy == ["0.8 [0.6, 0.95]", "0.8 [0.6, 0.95]"]  # accuracy_ci as stored
    kept = keys.loc[number_label("01_task_check.n_kept")].tolist()
    assert kept == ["1410", "– (not applicable to this cloze run)"]
    mean = keys.loc[number_label("01_task_check.mean_metric")].tolist()
    assert mean == ["2.5 [1.5, 3.5]", "– (not computed: no prompt qualified for it)"]
    # a layer as relative depth, with the range of resampled peaks (layers 2-4 of 11 -> /10)
    depth = keys.loc[number_label("05_causal_tracing.mlp_subject_last_peak_layer_depth")]
    assert depth.tolist() == ["0.3 [0.2, 0.4]",
                              "– (not computed: notebook 05_causal_tracing was not run)"]


def test_bars_carry_error_bars_and_a_missing_bar_says_why(tmp_path):
    make_run(tmp_path, "m__d__1")
    second = make_run(tmp_path, "m__d__2")
    edit_headline(second, "01_task_check", accuracy=0.9, accuracy_ci=[0.7, 1.0],
                  mean_metric={"not_computed": "no prompt qualified for it"})
    runs = load_runs(tmp_path)
    fig = comparison_figure(comparison_table(runs), runs)
    accuracy = [t for t in fig.data if t.xaxis == "x"]
    assert [list(t.y) for t in accuracy] == [[0.8], [0.9]]
    # asymmetric error bars: the stored interval around each bar
    assert [t.error_y.arrayminus[0] for t in accuracy] == pytest.approx([0.2, 0.2])
    assert [t.error_y.array[0] for t in accuracy] == pytest.approx([0.15, 0.1])
    panel = next(i for i, a in enumerate(fig.layout.annotations)
                 if a.text == number_label("01_task_check.mean_metric"))
    axis = "x" if panel == 0 else f"x{panel + 1}"
    bars = [t for t in fig.data if t.xaxis == axis]
    assert list(bars[0].y) == [2.5] and list(bars[0].error_y.arrayminus) == [1.0]
    share = [t for t in fig.data if t.xaxis == "x3"]  # logit lens · mlp share: none stored
    assert [list(t.error_y.array) for t in share] == [[None], [None]]
    missing = bars[1]
    assert list(missing.y) == [0] and list(missing.text) == ["not computed"]
    assert "no prompt qualified for it" in missing.hovertext[0]


def test_a_cell_reads_the_interval_its_headline_names(tmp_path):
    """Hand-made headlines: a median's spread is its stem's `_range`, a count of prompts is
    exact, a whole number without a stored interval says so."""
    from factcircuits.report.compare import cell_text
    from factcircuits.results.run import Run

    record = {"parameters": {"task": "cloze"}, "model": {"n_layers": 11},
              "headline": {"09_relation_circuits": {"stability_median": 0.85,
                                                    "stability_range": [0.7, 0.95],
                                                    "edges_for_80": 1410},
                           "01_task_check": {"n_kept": 16}}}
    run = Run("r", tmp_path, record)
    assert cell_text(run, "09_relation_circuits.stability_median", 0.85) == "0.85 [0.7, 0.95]"
    assert cell_text(run, "09_relation_circuits.edges_for_80", 1410.0) == \
        "1410 (no interval stored)"
    assert cell_text(run, "01_task_check.n_kept", 16.0) == "16"
    assert cell_text(run, "01_task_check.accuracy", float("nan")) == \
        "– (not applicable to this cloze run)"
