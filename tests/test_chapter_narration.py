"""The numbers notebooks 02, 04, 06, 08 and 09 narrate, read off each chapter's Summary:
checked against values worked out by hand on small synthetic tables (03's in
test_summaries.py, on the tiny model)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from factcircuits.chapters import ablation_knockout as AK
from factcircuits.chapters import activation_patching as AP
from factcircuits.chapters import circuit as CC
from factcircuits.chapters import logit_lens as LLC
from factcircuits.chapters import relation_circuits as RC


def _atp_check(star_errors=(0.05, 0.1, 0.3)) -> AP.AtpCheck:
    agreement = pd.DataFrame([
        ("resid_pre", "AtP", 12, 0.5, 0.4, 0.6, 3.0),
        ("resid_pre", "AtP*", 12, 0.7, 0.65, 0.8, 3.0),
        ("attn_out", "AtP", 12, 0.1, 0.0, 0.2, 7.0)],
        columns=["component", "method", "n_cells", "spearman", "spearman_median",
                 "recall_top5_in_top10", "exact_near_top5"])
    errors = pd.DataFrame({"layer": [0, 1, 2], "exact_abs": [0.2, 0.9, 0.5],
                           "atp_abs_error": [0.1, 0.4, 0.2],
                           "atp_star_abs_error": list(star_errors)})
    best = {"prompt_id": 1, "rank": 0, "layer": 2, "pos": 4, "head": 3, "estimate": 0.6,
            "exact": 1.5}
    checked = {"n_cells": 4, "same_sign": 0.75, "spearman": 0.8, "best": best}
    scan = {"resid_pre": SimpleNamespace(seconds=1.5)}
    return AP.AtpCheck(scan, agreement, None, errors, None, checked)


def test_scan_agreement_on_the_residual_stream_reads_its_rows():
    atp = _atp_check()
    assert atp.residual_atp == AP.ScanAgreement(12, 0.5, 0.4, 0.6, 3.0)
    assert atp.residual_atp_star == AP.ScanAgreement(12, 0.7, 0.65, 0.8, 3.0)
    assert isinstance(atp.residual_atp.n_cells, int)
    h = atp.numbers(2.0)
    assert (h["atp_seconds"], h["exact_patching_seconds"]) == (1.5, 2.0)
    assert (h["atp_resid_pre_spearman"], h["atp_star_resid_pre_spearman"]) == (0.5, 0.7)
    assert h["atp_resid_pre_recall_top5_in_top10"] == 0.6
    assert h["atp_resid_pre_exact_near_top5"] == 3.0
    assert h["atp_heads_by_pos_same_sign"] == 0.75


def test_worst_layer_and_how_much_error_atp_star_removes():
    atp = _atp_check()
    assert atp.worst_layer == AP.LayerError(1, 0.9, 0.4, 0.1)
    # AtP: (0.1 + 0.4 + 0.2) / 3; AtP*: (0.05 + 0.1 + 0.3) / 3
    assert atp.mean_abs_error == pytest.approx((0.7 / 3, 0.45 / 3))
    assert atp.star_error_removed == pytest.approx(1 - 0.45 / 0.7)  # 0.357
    assert atp.star_error_change == pytest.approx(0.45 / 0.7 - 1)
    assert atp.saturation_explains_part
    # AtP* at 0.65 / 0.7 of AtP's error: removes 7 %, below the 10 % bar
    barely = _atp_check((0.05, 0.35, 0.25))
    assert barely.star_error_removed == pytest.approx(0.05 / 0.7)
    assert not barely.saturation_explains_part
    worse = _atp_check((0.3, 0.4, 0.2))
    assert worse.star_error_removed == pytest.approx(-0.2 / 0.7)
    assert not worse.saturation_explains_part


def test_proposals_checked_and_the_best_one_in_units_of_the_gap():
    atp = _atp_check()
    assert (atp.n_proposals_checked, atp.proposals_same_sign, atp.proposals_spearman) == (
        4, 0.75, 0.8)
    # gap: mean clean 4 − mean corrupted 1 = 3
    resid = SimpleNamespace(clean=torch.tensor([3.0, 5.0]), corrupted=torch.tensor([1.0, 1.0]))
    heads = SimpleNamespace(normalized_mean=lambda: torch.tensor([[0.1, 0.2], [0.3, -0.4]]))
    peaks = pd.DataFrame({"component": ["resid_pre", "attn_out", "mlp_out"],
                          "token_class": ["subject_last", "last", "subject_first"],
                          "layer": [0, 2, 1], "effect": [0.9, 0.3, 0.5]})
    spread = SimpleNamespace(peaks=pd.DataFrame({
        "draw": [0, 1, 0, 1], "peak": ["resid_pre", "resid_pre", "mlp", "mlp"],
        "layer": [3, 4, 5, 5]}))
    maps = AP.PatchingMaps({}, results={"resid_pre": resid}, heads=heads, peaks=peaks,
                           spread=spread)
    found = AP.ActivationPatchingSummary(headline=AP.PatchingHeadline(), pairs=None,
                                         dropped=pd.DataFrame(), patching=maps, atp=atp)
    assert found.gap == 3.0
    best = found.best_proposal()
    assert best == AP.ProposedCell(prompt_id=1, layer=2, head=3, pos=4, estimate=pytest.approx(
        0.2), exact=pytest.approx(0.5))
    assert [found.peak_class(c) for c in ("resid_pre", "attn_out", "mlp_out")] == [
        "subject_last", "last", "subject_first"]
    np.testing.assert_allclose(found.head_grid, [[0.1, 0.2], [0.3, -0.4]])
    by_draw = found.peak_layers_by_draw
    assert by_draw.loc["resid_pre"].tolist() == [3, 4] and by_draw.loc["mlp"].tolist() == [5, 5]
    assert list(by_draw.columns) == [0, 1]


def test_inclusion_counts_by_hand():
    counts = RC.InclusionCounts.of(np.array([1.0, 0.95, 0.94, 0.5, 0.45, 0.0, 0.0],
                                            dtype=np.float32))
    # ≥ 0.95: 1.0, 0.95; < 0.5: 0.45, 0, 0; of those above 0: 0.45; median: 0.5
    assert counts == RC.InclusionCounts(7, 2, 3, 1, 0.5)
    assert RC.InclusionCounts.of(torch.tensor([0.2, 0.4])).median == pytest.approx(0.3)


def _relation_summary() -> RC.RelationCircuitsSummary:
    pooled = SimpleNamespace(name=RC.POOLED, stability=SimpleNamespace(
        inclusion=torch.tensor([1.0, 0.97, 0.3, 0.0, 0.6])))
    counts = pd.DataFrame({"relation": ["capital", "currency", "language"],
                           "n_pairs": [8, 2, 6], "searched": [True, False, True]})
    study = SimpleNamespace(pooled=pooled, relations=counts)
    relations = pd.DataFrame({"relation": [RC.POOLED, "capital", "language"],
                              "stability_median": [0.9, np.nan, 0.5],
                              "stable": [True, None, False]})
    faithfulness = pd.DataFrame({"relation": [RC.POOLED, RC.POOLED, "capital", "language"],
                                 "faithfulness": [0.1, 0.9, 0.5, 0.7]})
    edges = pd.DataFrame({"relation": [RC.POOLED] * 3 + ["capital"] * 2 + ["language"] * 2,
                          "inclusion": [1.0, 0.4, 0.96, np.nan, np.nan, 0.2, 0.1]})
    edge_index = pd.Index(["a", "b", "c", "d"])
    drawing = RC.CircuitDrawing(None, None, None,
                                pd.Series([0.99, 0.2, 0.0, 0.7], index=edge_index), [])
    return RC.RelationCircuitsSummary(
        headline=RC.RelationCircuitsHeadline(), pairs=None, dropped=pd.DataFrame(),
        study=study, relations=relations, faithfulness=faithfulness, stability=pd.DataFrame(),
        circuits=(pd.DataFrame(), edges), drawing=drawing, roles=None)


def test_relation_circuits_selections_and_counts_by_hand():
    found = _relation_summary()
    assert found.relations_with_too_few_pairs["relation"].tolist() == ["currency"]
    assert found.pooled_faithfulness["faithfulness"].tolist() == [0.1, 0.9]
    assert found.relation_faithfulness["relation"].tolist() == ["capital", "language"]
    # every edge of the graph: 1.0 and 0.97 in ≥ 95 %; 0.3 in under half but some; 0.0 never
    pooled = found.pooled_inclusion
    assert (pooled.n_edges, pooled.n_in_95_percent, pooled.n_in_under_half,
            pooled.n_in_under_half_but_some) == (5, 2, 2, 1)
    drawn = found.drawn_inclusion(pd.DataFrame(index=["a", "b", "c"]))
    assert (drawn.n_edges, drawn.n_in_95_percent, drawn.n_in_under_half) == (3, 1, 2)
    assert found.resampled_circuits["relation"].tolist() == [RC.POOLED, "language"]
    assert found.n_stable_circuits == 1
    by_circuit = dict(found.inclusion_by_circuit)
    assert list(by_circuit) == [RC.POOLED, "language"]  # capital: never resampled
    assert by_circuit[RC.POOLED] == RC.InclusionCounts(3, 2, 1, 1, pytest.approx(0.96))
    assert by_circuit["language"] == RC.InclusionCounts(2, 0, 2, 2, pytest.approx(0.15))


def test_no_stability_no_inclusion_counts():
    found = _relation_summary()
    found.study.pooled.stability = None
    assert found.pooled_inclusion is None
    found.study.pooled = None
    assert found.pooled_inclusion is None


def _knockout_summary(diff, ci) -> AK.AblationKnockoutSummary:
    peaks = {"relation": {"centre": 4, "first": 3, "last": 5, "relative_p_change": -0.2,
                          "metric_change": -0.5},
             "subject": {"centre": 2, "first": 1, "last": 3, "relative_p_change": -0.6,
                         "metric_change": -1.5}}
    knockout = AK.Knockout(pd.DataFrame(), pd.DataFrame(), peaks, 3, {})
    headline = AK.AblationKnockoutHeadline(knockout_relation_minus_subject=diff,
                                           knockout_relation_minus_subject_ci=ci)
    return AK.AblationKnockoutSummary(headline=headline, ablation=None, knockout=knockout)


def test_knockout_worst_windows_in_role_order():
    windows = _knockout_summary(None, None).knockout.worst_windows
    assert windows == [AK.WorstWindow("relation", 4, 3, 5, -0.2, -0.5),
                       AK.WorstWindow("subject", 2, 1, 3, -0.6, -1.5)]


@pytest.mark.parametrize(("diff", "ci", "hurts_more"), [
    (-0.3, [-0.5, -0.1], "relation"),  # relation − subject below 0: relation's drop larger
    (0.3, [0.1, 0.5], "subject"),
    (0.1, [-0.1, 0.3], None),  # the interval holds 0
    (0.1, [float("nan"), float("nan")], None),
    (None, None, None)])  # not compared
def test_which_knockout_hurts_more_by_its_paired_interval(diff, ci, hurts_more):
    assert _knockout_summary(diff, ci).knockout_hurts_more == hurts_more


def _circuit_summary(edges_for_80=3, faithfulness_for_80=0.85) -> CC.CircuitChapterSummary:
    roles = pd.DataFrame({c: range(25) for c in CC.HEAD_COLUMNS_SHOWN} | {
        "node": [f"a{i}" for i in range(25)], "role": "other",
        "dla": [(i * 7) % 25 for i in range(25)], "extra": 0.0})
    faithfulness = pd.DataFrame({
        "method": ["EAP-IG"] * 4 + ["EAP"], "variant": ["top-k"] * 3 + ["random", "top-k"],
        "n_edges": [2, 1, 5, 1, 1], "faithfulness": [0.5, 0.25, 1.0, 0.0, 0.1]})
    circuit = SimpleNamespace(faithfulness=faithfulness, circuit_edges=pd.DataFrame(index=[
        0, 1, 2]))
    headline = SimpleNamespace(edges_for_80=edges_for_80,
                               faithfulness_for_80=faithfulness_for_80)
    return CC.CircuitChapterSummary(headline=headline, pairs=None, dropped=pd.DataFrame(),
                                    circuit=circuit, top_edges=pd.DataFrame(), roles=roles)


def test_strongest_heads_shown_by_mean_dla():
    shown = _circuit_summary().strongest_heads
    # dla = 7i mod 25 is a permutation of 0..24: the top 20 are dla 24 down to 5
    assert shown["dla"].tolist() == list(range(24, 4, -1))
    assert shown["node"].iloc[0] == "a7"  # 7 · 7 = 49 ≡ 24
    assert list(shown.columns) == CC.HEAD_COLUMNS_SHOWN


def test_slider_steps_below_the_80_percent_circuit():
    # EAP-IG top-k sizes under the circuit's 3 edges: 1 and 2, then the circuit itself
    assert _circuit_summary().slider_steps == [
        (1, "1 edges (f = 0.25)"), (2, "2 edges (f = 0.50)"), (3, "3 edges (f = 0.85)")]
    assert _circuit_summary(edges_for_80=None).slider_steps[-1] == (3, "3 edges")


def test_logit_lens_increase_by_name_and_its_caveat():
    shares = {"embed_value": 0.5, "final_value": 3.5, "total_increase": 3.0,
              "attn_increase": 1.0, "mlp_increase": 2.0, "attn_share": 1 / 3,
              "mlp_share": 2 / 3, "peak_layer": 4, "peak_sublayer": "mlp", "peak_jump": 1.2}
    found = LLC.LensSummary(headline=None, lens=None, shares=shares, curve=None,
                            attributes=None, rate_curve=None, example=0, top_tokens=None,
                            by_relation=None)
    assert found.increase == LLC.LensIncrease(**shares)
    assert (found.increase.mlp_share, found.increase.peak_layer) == (2 / 3, 4)
    assert found.share_caveat == ""  # net 3.0 of 3.0 moved: shares are shares
    # +4 and −3.5 nearly cancel: net 0.5 against 7.5 moved, under a quarter
    cancel = LLC.LensSummary(**{**found.__dict__, "shares": {
        **shares, "attn_increase": 4.0, "mlp_increase": -3.5, "total_increase": 0.5,
        "attn_share": 8.0, "mlp_share": -7.0}})
    assert "net +0.500 against 7.500 moved" in cancel.share_caveat


@pytest.mark.parametrize(("at_80", "edges_for_80", "has_stability", "why"), [
    (0.9, 4, True, None),
    (None, None, False, "no circuit"),
    (0.9, 10, False, "whole graph"),  # 10 of the graph's 10 edges
    (0.9, 4, False, "few pairs")])
def test_why_the_run_circuit_was_not_resampled(at_80, edges_for_80, has_stability, why):
    found = _relation_summary()
    found.headline.n_edges_total = 10
    pooled = found.study.pooled
    pooled.at_80, pooled.edges_for_80 = at_80, edges_for_80
    pooled.stability = pooled.stability if has_stability else None
    assert found.why_pooled_not_resampled == why


def test_inclusion_counts_once_float32_frequencies_meet_float64_ones():
    # A table holding several circuits stores float32 frequencies beside float64 ones: 19 of 20
    # resamples then reads 0.94999999 and must still count as kept in 95 % of them.
    widened = np.array([19 / 20, 9 / 20], dtype=np.float32).astype(np.float64)
    assert widened[0] < RC.NEARLY_ALWAYS  # the trap itself
    assert RC.InclusionCounts.of(widened) == RC.InclusionCounts(2, 1, 1, 1, pytest.approx(0.7))


def test_necessity_view_puts_each_share_beside_its_interval():
    states = pd.DataFrame({
        "state": ["resid_pre", "mlp_out"], "component": ["resid_pre", "mlp_out"],
        "token_class": ["subject_middle", "subject_last"], "layer": [14, 13],
        "restored": [1.0694, 0.1512], "restored_low": [0.91, 0.07],
        "restored_high": [2.08, 0.22], "lost": [1.15, 0.09], "lost_low": [1.09, 0.01],
        "lost_high": [1.58, 0.13], "verdict": ["necessary and sufficient", "neither resolved"]})
    view = AP.necessity_view(states)
    assert list(view.columns) == ["state", "layer", "restored (denoising)", "lost (noising)",
                                  "verdict"]
    assert view["restored (denoising)"].tolist() == ["1.07 [0.91, 2.08]", "0.15 [0.07, 0.22]"]
    assert view["lost (noising)"].tolist() == ["1.15 [1.09, 1.58]", "0.09 [0.01, 0.13]"]
    assert view["state"][1].startswith("MLP") and "last subject" in view["state"][1]


def test_relation_view_puts_each_accuracy_beside_its_exact_interval_and_test():
    from factcircuits.chapters.task_check import relation_view

    accuracy = pd.DataFrame({
        "relation": ["capital", "currency", "tiny"], "rows": [24, 30, 3],
        "accuracy": [0.667, 0.1, 1.0], "accuracy_low": [0.447, 0.021, 0.292],
        "accuracy_high": [0.844, 0.265, 1.0], "known": [16, 3, 3], "analysed": [16, 3, 3],
        "p_vs_pooled": [0.0001, 0.058, float("nan")],
        "p_vs_pooled_holm": [0.0002, 0.116, float("nan")],
        "differs_from_pooled": [True, False, False]})
    view = relation_view(accuracy)
    assert list(view.columns) == ["relation", "prompts", "accuracy [exact 95% CI]", "known",
                                  "analysed", "p vs pooled (Holm)", "differs from pooled"]
    assert view["accuracy [exact 95% CI]"].tolist() == [
        "0.67 [0.45, 0.84]", "0.10 [0.02, 0.27]", "1.00 [0.29, 1.00]"]
    assert view["p vs pooled (Holm)"].tolist() == ["0.0002", "0.12", "not tested"]
    assert view["differs from pooled"].tolist() == ["yes", "no", "—"]
    # a run from before the tests: nothing claimed either way
    old = relation_view(accuracy.drop(columns=["p_vs_pooled", "p_vs_pooled_holm",
                                               "differs_from_pooled"]))
    assert old["p vs pooled (Holm)"].tolist() == ["not tested"] * 3
    assert old["differs from pooled"].tolist() == ["—"] * 3


def test_dropped_view_keeps_which_prompt_and_why():
    from factcircuits.chapters.task_check import dropped_view

    dropped = pd.DataFrame({
        "task": ["cloze"] * 3, "prompt": ["a is", "b is", "c is"], "label": [True] * 3,
        "answer": [" x", " y", " z"], "counterfactual": [" y", " z", " x"],
        "relation": ["r1", "r2", "r1"], "corrupted_prompt": ["b is", "c is", "a is"],
        "metric": [0.1, 0.2, 0.3], "rank": [2, 5, None], "p_answer": [0.2, 0.01, None],
        "short_prompt": ["a is", "b is", "c is"],
        "reason": ["answered incorrectly", "answered incorrectly", "not scorable"]})
    assert list(dropped_view(dropped).columns) == [
        "relation", "prompt", "answer", "counterfactual", "rank", "p_answer", "reason"]
    # one relation and a yes/no task's varying label: the label stays, the relation goes
    yesno = dropped.assign(relation="r1", label=[True, False, True])
    assert list(dropped_view(yesno).columns) == [
        "prompt", "label", "answer", "counterfactual", "rank", "p_answer", "reason"]
    assert dropped_view(dropped)["reason"].tolist() == dropped["reason"].tolist()


def test_task_check_summary_names_each_interval_by_how_it_was_computed():
    from factcircuits.chapters.task_check import TaskCheckSummary

    h = SimpleNamespace(n_prompts=279, accuracy=0.258, accuracy_ci=[0.208, 0.314],
                        mean_metric=4.17, mean_metric_ci=[3.652, 4.651])
    text = TaskCheckSummary.summary_markdown(
        SimpleNamespace(headline=h, main_metric="logit_diff", task="cloze"))
    assert "accuracy **26% (exact 95% CI 21% to 31%)**" in text
    assert "**+4.170 (95% bootstrap CI over prompts +3.652 to +4.651)**" in text
    assert "bootstrap intervals over prompts" not in text  # the accuracy's is exact
