"""Studies by relation: the stratified, seeded sample of known prompts, accuracy and peaks per
relation against the pooled numbers, and what the findings say of them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_findings import make_run

from factcircuits.methods import by_relation as R
from factcircuits.methods import uncertainty as U
from factcircuits.methods.sampling import per_relation_sample
from factcircuits.methods.task_check import relation_table
from factcircuits.report import findings as F
from factcircuits.results.run import Run


def test_per_relation_sample_is_stratified_seeded_and_keeps_order():
    relations = pd.Series(["a"] * 10 + ["b"] * 2 + ["c"] * 5)
    keep = per_relation_sample(relations, 3, seed=1)
    assert relations[keep].value_counts().to_dict() == {"a": 3, "b": 2, "c": 3}
    assert (keep == per_relation_sample(relations, 3, seed=1)).all()  # same seed, same sample
    assert any((per_relation_sample(relations, 3, seed=s) != keep).any() for s in range(2, 6))
    assert per_relation_sample(relations, 0).all()
    # the draw does not depend on where a relation's rows sit
    shuffled = relations.iloc[::-1].reset_index(drop=True)
    assert shuffled[per_relation_sample(shuffled, 3, seed=1)].value_counts().to_dict() == \
        {"a": 3, "b": 2, "c": 3}


def test_relation_table_counts_and_flags_relations_off_the_pooled_accuracy():
    table = pd.DataFrame({"relation": ["capital"] * 20 + ["language"] * 20,
                          "correct": [True] * 20 + [True] * 2 + [False] * 18})
    known = table.index[table["correct"]]
    out = relation_table(table, known, per_relation=5, seed=0).set_index("relation")
    assert out.loc["capital", "accuracy"] == 1.0 and out.loc["language", "accuracy"] == 0.1
    assert out.loc["capital", "known"] == 20 and out.loc["capital", "analysed"] == 5
    assert out.loc["language", "known"] == 2 and out.loc["language", "analysed"] == 2
    # pooled 0.55: capital's interval [1, 1] and language's (≤ 0.3) both exclude it
    assert out["differs_from_pooled"].all()
    assert relation_table(table.assign(relation="one"), known) is None


def test_relation_peaks_flag_the_relation_whose_peak_moved():
    layers = np.arange(12)
    rng = np.random.default_rng(0)

    def bump(peak, n):
        return np.exp(-((layers - peak) ** 2) / 2.0) + 0.05 * rng.normal(size=(n, 12))

    values = np.vstack([bump(3, 15), bump(3, 15), bump(9, 15)])
    names = ["a"] * 15 + ["b"] * 15 + ["c"] * 15
    table = R.relation_peaks(values, names, pooled_layer=3, n_layers=12).set_index("relation")
    assert table.loc["c", "peak_layer"] == 9 and table.loc["c", "differs_from_pooled"]
    assert not table.loc["a", "differs_from_pooled"] and table.loc["a", "n"] == 15
    curves = R.relation_curves(values, names)
    assert set(curves["relation"]) == {"a", "b", "c"} and len(curves) == 36
    assert (curves["low"] <= curves["mean"] + 1e-9).all()
    text = R.relation_peaks_markdown(table.reset_index(), 3, "Causal tracing")
    assert "c (layer 9, 95% of resamples in 9–9, n = 15)" in text
    assert len(R.relation_figure(curves, "t", "y").data) == 6  # band + mean per relation


def test_findings_name_the_relations_that_stand_out(tmp_path):
    folder = make_run(tmp_path)
    (folder / "results" / "01_task_check").mkdir(parents=True)
    pd.DataFrame([{"relation": "capital", "rows": 20, "accuracy": 1.0, "accuracy_low": 0.83,
                   "accuracy_high": 1.0, "known": 20, "analysed": 8, "p_vs_pooled": 0.002,
                   "p_vs_pooled_holm": 0.004, "differs_from_pooled": True},
                  {"relation": "language", "rows": 20, "accuracy": 0.5, "accuracy_low": 0.27,
                   "accuracy_high": 0.73, "known": 10, "analysed": 8, "p_vs_pooled": 0.03,
                   "p_vs_pooled_holm": 0.06, "differs_from_pooled": False},
                  {"relation": "currency", "rows": 3, "accuracy": 0.0, "accuracy_low": 0.0,
                   "accuracy_high": 0.71, "known": 0, "analysed": 0, "p_vs_pooled": None,
                   "p_vs_pooled_holm": None, "differs_from_pooled": False}]).to_csv(
        folder / "results" / "01_task_check" / "by_relation.csv", index=False)
    (folder / "results" / "05_causal_tracing").mkdir(parents=True)
    pd.DataFrame([{"relation": "capital", "n": 8, "peak_layer": 3, "layer_low": 2,
                   "layer_high": 4, "value": 0.1, "value_low": 0.0, "value_high": 0.2,
                   "differs_from_pooled": False},
                  {"relation": "currency", "n": 3, "peak_layer": 9, "layer_low": 9,
                   "layer_high": 9, "value": 0.1, "value_low": 0.1, "value_high": 0.1,
                   "differs_from_pooled": True}]).to_csv(
        folder / "results" / "05_causal_tracing" / "by_relation.csv", index=False)
    text = F.run_markdown(Run.load(folder))
    assert "### By relation" in text
    assert ("**Accuracy by relation** (3 relations): capital 100% (exact 95% CI 83% to 100%, 20 "
            "prompts) differ from the pooled accuracy (exact binomial tests, Holm-adjusted over "
            "the relations tested); 1 of 3 relations have fewer than 5 prompts (not compared)."
            ) in text
    # a relation of 3 prompts is never called different, whatever its table says
    assert ("**Where causal tracing's MLP peak at the last subject token sits, by relation**: "
            "of the 1 relations with at least 5 prompts, none has a range") in text
    assert "currency (layer 9" not in text


def test_relations_too_small_to_compare_are_not_tested(tmp_path):
    folder = make_run(tmp_path)
    (folder / "results" / "01_task_check").mkdir(parents=True)
    pd.DataFrame([{"relation": r, "rows": 3, "accuracy": a, "accuracy_low": 0.0,
                   "accuracy_high": 1.0, "known": 1, "analysed": 1, "p_vs_pooled": None,
                   "p_vs_pooled_holm": None, "differs_from_pooled": False}
                  for r, a in (("capital", 1.0), ("currency", 0.0))]).to_csv(
        folder / "results" / "01_task_check" / "by_relation.csv", index=False)
    text = F.run_markdown(Run.load(folder))
    assert ("**Accuracy by relation** (2 relations): not tested: all 2 relations have fewer "
            "than 5 prompts, too few to compare with the pooled study.") in text
    assert "excludes the pooled accuracy" not in text


def test_relation_accuracy_uses_exact_tests_with_holm():
    from factcircuits.methods.task_check import relation_table

    # capital 10/10, language 2/10 (differs from the pooled 20/28), person 5/10, tiny 3/3
    rows = ([("capital", True)] * 10 + [("language", True)] * 2 + [("language", False)] * 8
            + [("person", True)] * 5 + [("person", False)] * 5 + [("tiny", True)] * 3)
    table = pd.DataFrame(rows, columns=["relation", "correct"])
    out = relation_table(table, table.index).set_index("relation")
    pooled = table["correct"].mean()
    assert out.loc["tiny", "p_vs_pooled"] != out.loc["tiny", "p_vs_pooled"]  # NaN: untested
    assert out.loc["language", "p_vs_pooled"] == pytest.approx(
        U.binomial_two_sided_p(2, 10, pooled))
    assert list(out.loc[["capital", "language", "person"], "p_vs_pooled_holm"]) == \
        pytest.approx(U.holm(out.loc[["capital", "language", "person"], "p_vs_pooled"]))
    assert bool(out.loc["language", "differs_from_pooled"])
    assert not bool(out.loc["tiny", "differs_from_pooled"])
    assert (out.loc["capital", "accuracy_low"], out.loc["capital", "accuracy_high"]) == \
        pytest.approx(U.clopper_pearson(10, 10))


@pytest.mark.parametrize("k", [2])
def test_a_session_analyses_k_known_prompts_per_relation(k):
    from factcircuits.run.session import open_session

    session = open_session(model="tiny", dataset="relations-cloze", known="pairwise",
                           per_relation=k, seed=3)
    prepared, note = session.known()
    counts = prepared.rows["relation"].value_counts()
    assert counts.max() <= k and len(counts) > 1
    assert f"sampled {k} per relation, seeded" in note
    again, _ = open_session(model="tiny", dataset="relations-cloze", known="pairwise",
                            per_relation=k, seed=3).known()
    assert again.prompts == prepared.prompts


# ---------------------------------------------------------------- one relation per run

def test_of_relation_keeps_exactly_that_relations_rows_in_order():
    from factcircuits.data.datasets import load_dataset, of_relation

    data = load_dataset("relations-cloze")
    raw = pd.read_csv(data.path, keep_default_na=False)  # counted independently of the loader
    expected = raw.loc[raw["relation"] == "country_capital_city", "prompt"].tolist()
    only = of_relation(data, "country_capital_city")
    assert only.rows["prompt"].tolist() == expected and 0 < len(expected) < len(raw)
    assert set(only.rows["relation"]) == {"country_capital_city"}
    assert of_relation(data, "") is data  # empty: every relation


def test_of_relation_refuses_an_unknown_relation_or_a_dataset_without_relations():
    from factcircuits.data.datasets import from_frame, load_dataset, of_relation
    from factcircuits.errors import DatasetError

    with pytest.raises(DatasetError, match=r"relation='capitol'.*no such relation; use one "
                                           r"of .*country_capital_city"):
        of_relation(load_dataset("relations-cloze"), "capitol")
    bare = from_frame(pd.DataFrame({"prompt": ["The capital of France is"],
                                    "answer": [" Paris"], "counterfactual": [" Rome"]}))
    with pytest.raises(DatasetError, match=r"relation='capital'.*has no relation column"):
        of_relation(bare, "capital")


def test_a_run_restricted_to_one_relation_is_planned_as_its_own_run_and_checked_first(tmp_path):
    from factcircuits.errors import UserError
    from factcircuits.run import pipeline

    every = pipeline.plan_run("tiny", "relations-cloze", {}, runs_root=tmp_path)
    one = pipeline.plan_run("tiny", "relations-cloze", {"relation": "country_capital_city"},
                            runs_root=tmp_path)
    assert one.parameters["relation"] == "country_capital_city" != every.parameters["relation"]
    assert one.run_id != every.run_id  # a sweep over relations gives one run each
    with pytest.raises(UserError, match="relation='capitol'"):
        pipeline.plan_run("tiny", "relations-cloze", {"relation": "capitol"}, runs_root=tmp_path)
    assert not list(tmp_path.iterdir())  # planning (and refusing) writes nothing


def test_runs_on_one_dataset_are_told_apart_by_what_narrows_their_prompts(tmp_path):
    import json

    def title(**parameters):
        folder = tmp_path / f"r{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        (folder / "run.json").write_text(json.dumps({
            "run_id": folder.name, "parameters": {"model": "org/SmolLM2-135M",
                                                  "dataset": "relations-cloze", **parameters}}))
        return Run.load(folder).title

    assert title() == title(relation="", per_relation=0) == "SmolLM2-135M on relations-cloze"
    assert title(relation="company_hq") == "SmolLM2-135M on relations-cloze (company_hq)"
    assert title(per_relation=8) == "SmolLM2-135M on relations-cloze (8 per relation)"
