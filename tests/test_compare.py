"""Comparison across runs from hand-made run folders: key numbers per run, profiles by
relative depth (11-layer toy model: depth = layer / 10)."""

from __future__ import annotations

import pandas as pd
from test_findings import make_run

from factcircuits.report.compare import (
    comparison_table,
    key_numbers_table,
    profile_figures,
)
from factcircuits.report.evidence import load_runs


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
    assert keys.loc["mlp share"].tolist() == ["0.25", "0.25"]
    assert keys.loc["peak layer depth"].tolist() == ["0.8", "0.8"]
    figures = profile_figures(runs)
    assert len(figures) == 1  # only patching has per-layer tables in both runs
    traces = {(t.name): t for t in figures[0].data}
    assert set(traces) == {"Run 1, subject_last", "Run 1, last", "Run 2, subject_last",
                           "Run 2, last"}  # the prefix class is not drawn
    peak = traces["Run 2, last"]
    assert list(peak.x) == [layer / 10 for layer in range(11)]
    assert list(peak.y).index(1.0) == 5


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
    traces = {t.name: dict(zip(t.x, t.y)) for t in dla[0].data}
    assert set(traces) == {"Run 1, attention", "Run 1, MLP", "Run 2, attention", "Run 2, MLP"}
    assert traces["Run 1, attention"][0.3] == 0.5 and traces["Run 1, MLP"][0.5] == -0.5
    assert traces["Run 2, MLP"][0.8] == 1.0
    assert sum(abs(v) for v in traces["Run 2, attention"].values()) == 0
