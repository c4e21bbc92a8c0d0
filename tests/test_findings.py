"""Findings computed from hand-made run folders (headline JSON and result CSVs).

The model has 11 layers, so relative depth = layer / 10 and the agreement tolerance is one
layer (10% of the depth): every expected number below is worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from factcircuits.chapters import (
    ablation_knockout,
    activation_patching,
    attribution,
    causal_tracing,
    logit_lens,
)
from factcircuits.chapters import task_check as task_check_chapter
from factcircuits.chapters.causal_tracing import tracing_window
from factcircuits.report import findings as F
from factcircuits.report import sureness as S
from factcircuits.report import synthesis
from factcircuits.report.evidence import load_runs
from factcircuits.results.run import Run, depth_band, relative_depth

N_LAYERS = 11


def peaked(peak_layer: int, peak: float, **columns) -> pd.DataFrame:
    """One row per layer; `peak` at `peak_layer`, a tenth of it elsewhere."""
    return pd.DataFrame([{**columns, "layer": layer,
                          "value": peak if layer == peak_layer else peak / 10}
                         for layer in range(N_LAYERS)])


def built(method, fields: dict) -> dict:
    """A headline's JSON through its method's class. Tracing's peaks are given one field per
    peak (`mlp_subject_last_peak_layer`, …), as older runs stored them: read back as
    Estimates (`TracingHeadline.from_json`)."""
    if method is causal_tracing.METHOD:
        return method.headline.from_json(fields).to_json()
    return method.headline(**fields).to_json()


def make_run(root: Path, run_id: str = "m__d__1", *, task: str = "cloze",
             patch_mlp_layer: int = 4, patch_head: tuple[int, int] = (7, 2),
             at_chance: bool = False, trace_window: int = 1, ranges: bool = True,
             trace_range: tuple[int, int] = (2, 4),
             notebooks: tuple[str, ...] = ("01", "02", "03", "04", "05", "06"),
             task_check: dict | None = None) -> Path:
    folder = root / run_id
    folder.mkdir(parents=True)
    record = {"run_id": run_id, "status": "ok",
              "parameters": {"model": "default", "dataset": "toy-facts", "task": task,
                             "seed": 0},
              "notebooks": [{"name": "01_task_check", "status": "ok", "duration_s": 1.5}],
              "git": {"commit": "abc1234def", "dirty": False},
              "model": {"resolved_name": "org/toy-model", "n_layers": N_LAYERS,
                        "weights_sha256": "f" * 64}}
    headline = {
        "01": ("01_task_check", {"task": task, "n_prompts": 20, "accuracy": 0.5 if at_chance
                                 else 0.8, "n_kept": 10 if at_chance else 16,
                                 "main_metric": "logit_diff", "mean_metric": 2.5,
                                 "mean_p_answer": 0.4, "at_chance": at_chance,
                                 **({"auc": 0.52, "p_vs_chance": 0.9} if at_chance else {})}),
        "02": ("02_logit_lens", {"mlp_share": 0.25, "attn_share": 0.75, "peak_layer": 8,
                                 "peak_sublayer": "attn", "direction": "logit_diff",
                                 "n_prompts": 16}),
        "03": ("03_attribution", {"top_head": "L7H2", "top_head_dla": 1.25,
                                  "top_layer_component": "attn L8",
                                  "top_layer_component_dla": 2.0,
                                  "dla_sum_check_max_abs_error": 2e-6,
                                  "dla_sum_check_passes": True}),
        "04": ("04_activation_patching", {"n_pairs": 12, "n_dropped_unequal": 4,
                                          "resid_pre_handover_layer": 6,
                                          "top_head_layer": patch_head[0],
                                          "top_head": patch_head[1], "top_head_effect": 0.7,
                                          "attn_out_last_peak": 0.5,
                                          "attn_out_last_peak_layer": 9}),
        "05": ("05_causal_tracing", {"n_prompts": 16, "noise_samples": 2, "metric": "P(answer)",
                                     "mlp_subject_last_peak_layer": 3,
                                     "mlp_subject_last_peak_aie": 0.08,
                                     "attn_subject_last_peak_aie": 0.02,
                                     "attn_last_peak_layer": 8, "window": trace_window,
                                     "window_rule": "given"}),
        "06": ("06_ablation_knockout", {"knockout_window": 3}),
    }
    headline["01"][1].update(task_check or {})
    if ranges:  # what runs record since intervals: ranges of resampled peaks, intervals
        headline["01"][1].update(accuracy_ci=[0.6, 0.95], mean_metric_ci=[1.5, 3.5])
        headline["04"][1].update(
            mlp_out_subject_last_peak=0.6, mlp_out_subject_last_peak_layer=patch_mlp_layer,
            mlp_out_subject_last_peak_ci=[0.4, 0.8],
            mlp_out_subject_last_peak_layer_range=[max(0, patch_mlp_layer - 1),
                                                   patch_mlp_layer + 1])
        headline["05"][1].update(
            mlp_subject_last_peak_layer_range=list(trace_range),
            mlp_subject_last_peak_aie_ci=[0.05, 0.11], attn_subject_last_peak_aie_ci=[0.0, 0.04],
            claim_mlp_over_attn_subject_last={
                "claim": "MLP over attention", "name": "mlp_over_attn_subject_last",
                "difference": 0.06, "difference_ci": [0.02, 0.1], "n": 16, "p": 0.004,
                "test": "exact paired permutation test", "testable": True,
                "n_positive": 14, "n_negative": 2},
            claim_mlp_before_attn_last={
                "claim": "MLP peak before attention's", "name": "mlp_before_attn_last",
                "difference": 5.0, "difference_ci": [3.0, 6.0], "n": 16, "p": 0.03,
                "test": "exact paired permutation test", "testable": True},
            mlp_subject_before_attn_last_share=0.99)
        headline["06"][1].update(knockout_subject_peak_centre_range=[6, 8])
    # each headline built through its method's class: a renamed field fails here
    chapters = {"01": task_check_chapter, "02": logit_lens, "03": attribution,
                "04": activation_patching, "05": causal_tracing, "06": ablation_knockout}
    record["headline"] = {chapters[key].METHOD.notebook: built(chapters[key].METHOD,
                                                               headline[key][1])
                          for key in notebooks}
    (folder / "run.json").write_text(json.dumps(record))
    results = folder / "results"
    if "04" in notebooks:
        patch = pd.concat([
            peaked(patch_mlp_layer, 0.6, component="mlp_out", token_class="subject_last"),
            peaked(9, 0.5, component="attn_out", token_class="last"),
            peaked(2, 0.9, component="mlp_out", token_class="subject_first"),  # other class
        ]).rename(columns={"value": "normalized"})
        (results / "04_activation_patching").mkdir(parents=True)
        patch.to_csv(results / "04_activation_patching" / "patching_by_class.csv", index=False)
    if "06" in notebooks:
        windows = [{"role": role, "centre": c, "first": c - 1, "last": c + 1,
                    "relative_p_change": (-0.6 if (role, c) == ("subject", 7) else -0.1),
                    "metric_change": -1.0} for role in ("subject", "relation")
                   for c in range(1, 10)]
        (results / "06_ablation_knockout").mkdir(parents=True)
        pd.DataFrame(windows).to_csv(results / "06_ablation_knockout" / "knockout_summary.csv",
                                     index=False)
    return folder


def test_depth_helpers():
    assert relative_depth(3, 11) == pytest.approx(0.3)
    assert relative_depth(3, 1) is None and relative_depth(None, 11) is None
    assert [depth_band(d) for d in (0.0, 0.3, 0.34, 0.66, 0.67, 1.0)] == [
        "early", "early", "middle", "middle", "late", "late"]


def test_findings_of_a_full_run(tmp_path):
    ev = Run.load(make_run(tmp_path))
    f = F.run_findings(ev)
    assert not f.at_chance
    # tracing peak layer 3 (depth 0.30: early); knockout of the subject worst at centre 7
    # (layers 6-8); DLA top head L7H2
    # no attribute-rate or source-split test in this run: neither "enriched" nor "moves"
    assert f.summary == (
        "Restoring the MLP output at the last subject token matters most in early layers "
        "(causal tracing, one layer at a time: layer 3); blocking the last token's attention to "
        "the subject hurts most in layers 6–8, to the relation tokens in layers 0–2 (total "
        "effects); head L7H2 has the largest direct effect on the answer. 3 of 3 cross-method "
        "checks agree. Based on 16 prompts: a small sample.")
    assert "enriched" not in f.summary and "moves" not in f.summary
    # tracing range 2-4 overlaps patching's 3-5; same head; head layer 7 inside the windows
    assert [c.verdict for c in f.checks] == ["agrees"] * 3
    text = F.run_markdown(ev)
    assert "## toy-model on toy-facts" in text and "org/toy-model" in text
    assert ("**16 of 20** prompts correctly: 80% (exact 95% CI 60% to 95%); mean logit difference "
            "(correct − counterfactual) +2.50 (95% CI +1.50 to +3.50)") in text
    assert ("recovers the most for layer 3 (relative depth 0.30; 95% of resamples in layers "
            "2–4), early layers: AIE 0.080 (95% CI 0.050 to 0.110)") in text
    assert "against 0.020 (95% CI 0.000 to 0.040) at most for attention" in text
    assert ("the MLP output at the last subject token restores most at layer 4 (relative "
            "depth 0.40; 95% of resamples in layers 3–5), 0.60 (95% CI 0.40 to 0.80)") in text
    # two claims, Holm: 0.004 · 2 = 0.008 supported; 0.03 stays 0.03 (step-down) supported
    assert ("*MLP over attention* (tracing): **supported**: mean difference +0.060 (95% CI "
            "+0.020 to +0.100); exact paired permutation test p = 0.004, Holm-adjusted over the "
            "run's 2 tested claims p = 0.008; higher in 14 of 16 prompts; n = 16") in text
    assert "Holm-adjusted over the run's 2 tested claims p = 0.03; n = 16" in text
    assert "With 16 prompts analysed and 12 pairs patched (fewer than 20)" in text
    assert "attention output at the last token most at layer 9 (relative depth 0.90), 0.50" in text
    assert "from layer 6 (relative depth 0.60) on" in text
    assert ("layers 6–8 (relative depth 0.60–0.80) (in 95% of resamples the worst window is "
            "centred on layers 6–8): P(answer) falls by 60%") in text
    assert "2 noise samples per prompt in causal tracing (ROME used 10)" in text
    assert "12 patched pairs (4 left out" in text
    assert "within 2.0e-06 (passes" in text
    # original study: 13 / 17 = 0.76; here the largest jump is at layer 8 (0.80): 0.04 later
    assert "relative depth 0.76" in text and "0.04 of the depth later" in text
    assert "attention sublayers write most of it directly; a direct effect leaves out" in text
    assert "MLPs write 25%" in text
    # ROME: early, not middle; MLP AIE 8.0% > attention 2.0%; last-token attention at 8 > 3
    assert "in the **early** layers (unlike ROME)" in text
    assert "its AIE (8.0%) is larger than attention's (2.0%)" in text
    assert "later than the MLP peak" in text


def test_disagreeing_methods_are_reported(tmp_path):
    # patching's MLP peak range 6-8 does not overlap tracing's 2-4
    ev = Run.load(make_run(tmp_path, patch_mlp_layer=7, patch_head=(9, 0)))
    f = F.run_findings(ev)
    assert [c.verdict for c in f.checks] == ["differs", "differs", "agrees"]
    text = F.run_markdown(ev)
    assert "1 of 3 checks agree, so the methods disagree where the sample resolves it" in text
    assert ("**differs** (causal tracing layer 3 (95% of resamples in layers 2–4), activation "
            "patching layer 7 (95% of resamples in layers 6–8))") in text
    assert "**differs** (direct logit attribution L7H2, head patching L9H0)" in text


def test_a_peak_range_wider_than_a_third_of_the_model_is_not_resolved(tmp_path):
    ev = Run.load(make_run(tmp_path, patch_mlp_layer=7, trace_range=(1, 9)))
    check = F.run_findings(ev).checks[0]
    assert check.verdict == "not resolved at this sample size" and not check.agree
    assert "not resolved" in F.run_findings(ev).summary


def test_runs_without_ranges_leave_agreement_unresolved(tmp_path):
    """Runs recorded before intervals existed: no fixed-layer rule decides for them (and
    without patching's MLP peak there is no MLP check to make)."""
    ev = Run.load(make_run(tmp_path, ranges=False))
    verdicts = [c.verdict for c in F.run_findings(ev).checks]
    assert verdicts == ["agrees", "not resolved at this sample size"]


def test_a_layer_0_mlp_peak_is_named_and_not_counted_as_agreement(tmp_path):
    ev = Run.load(make_run(tmp_path, patch_mlp_layer=0, trace_range=(0, 2)))
    check = F.run_findings(ev).checks[0]
    assert check.verdict == "not comparable (layer-0 MLP)"
    assert "acts as part of the token embedding" in F.run_markdown(ev)


def test_a_tracing_window_never_widens_agreement(tmp_path):
    # window 5 around layer 3 restores layers 1-5, but agreement compares the resampled peak
    # ranges as they are: tracing's 2-4 and patching's 5-7 do not overlap, so they differ
    ev = Run.load(make_run(tmp_path, patch_mlp_layer=6, trace_window=5))
    assert tracing_window(ev, 3) == (1, 5) and tracing_window(ev, 0) == (0, 2)
    assert tracing_window(ev, 10) == (8, 10)  # clipped at the last layer
    assert [c.verdict for c in F.run_findings(ev).checks][0] == "differs"
    text = F.run_markdown(ev)
    assert ("causal tracing layer 3 (95% of resamples in layers 2–4), activation "
            "patching layer 6") in text


def test_a_range_wider_than_a_third_of_the_model_is_not_resolved():
    assert S.layer_ranges_agree([0, 8], [3, 3], 18) == "not resolved at this sample size"
    assert S.layer_ranges_agree([0, 6], [3, 3], 18) == "agrees"
    assert S.layer_ranges_agree([0, 2], [3, 3], 18) == "differs"


def test_pairwise_criterion_is_named_with_the_prompts_it_kept(tmp_path):
    # 2 of 20 answered top-1, 18 ranked above the counterfactual (0.9 × 20) and kept
    ev = Run.load(make_run(tmp_path, task_check={
        "accuracy": 0.1, "n_kept": 18, "pairwise_accuracy": 0.9, "known": "pairwise",
        "known_phrase": "ranks above the counterfactual (`known=pairwise`)"}))
    text = F.run_markdown(ev)
    assert ("answers **2 of 20** prompts correctly (the answer is its top token): 10%"
            in text)  # top-1, not n_kept
    assert "It ranks the answer above the counterfactual for 18 (90%)." in text
    assert ("The mechanistic analyses use the 18 prompts it ranks above the counterfactual "
            "(`known=pairwise`).") in text
    every = Run.load(make_run(tmp_path / "all", task_check={  # phrase without it
        "n_kept": 20, "pairwise_accuracy": 1.0, "known": "pairwise",
        "known_phrase": "ranks above the counterfactual"}))
    assert ("The mechanistic analyses use all 20 prompts, each one it ranks above the "
            "counterfactual (`known=pairwise`).") in F.run_markdown(every)


def test_at_chance_says_so_and_interprets_nothing(tmp_path):
    ev = Run.load(make_run(tmp_path, task="yesno", at_chance=True))
    f = F.run_findings(ev)
    assert f.at_chance and f.checks == []
    text = F.run_markdown(ev)
    assert "**The model is at chance on this task**" in text
    assert "AUC of true against false statements 0.52" in text
    assert "no mechanism is claimed" in f.summary
    for absent in ("Where the fact is read", "enriched", "**ROME**", "Original study"):
        assert absent not in text


def test_partial_run_gets_what_its_files_support(tmp_path):
    ev = Run.load(make_run(tmp_path, notebooks=("01",)))
    f = F.run_findings(ev)
    assert f.summary == "This run has too few analyses to say where the fact is read."
    assert list(f.sections) == ["Does the model know the facts?"]
    # no task check at all
    bare = Run.load(make_run(tmp_path / "b", notebooks=()))
    assert "did not run" in F.run_markdown(bare)


def test_front_page_zero_one_and_two_runs(tmp_path):
    assert "There are no runs yet" in synthesis.front_page_markdown([])
    make_run(tmp_path, "a__x__1")
    (tmp_path / "_staging-a__x__2-2025").mkdir()
    (tmp_path / "_failed" / "a__x__3").mkdir(parents=True)
    runs = load_runs(tmp_path)
    assert [ev.run_id for ev in runs] == ["a__x__1"]
    one = synthesis.front_page_markdown(runs)
    assert "| run |" not in one and "{#sec-findings-a--x--1}" in one
    make_run(tmp_path, "b__y__2", patch_mlp_layer=6, patch_head=(9, 0))
    two = synthesis.front_page_markdown(load_runs(tmp_path), anchors=False)
    # one table, a row per run with the key numbers and their intervals, in chapter order
    assert ("| run | prompts (analysed) | accuracy | top head (DLA) | patching: MLP peak | "
            "tracing: MLP peak | subject knockout | checks agreeing |") in two
    assert ("| Run 1: toy-model on toy-facts | 20 (16) | 80% [60%, 95%] | L7H2: 1.25 | "
            "L4 (3–5): 0.60 [0.40, 0.80] | L3 (2–4): 0.080 [0.050, 0.110] | L6–8: -60% "
            "| 3 of 3 |") in two
    assert "| Run 2: toy-model on toy-facts | 20 (16) |" in two and "| 1 of 3 |" in two
    assert "{#" not in two and "{.unnumbered}" not in two
    assert "**In short.**" not in two  # the detailed findings open each run's part
    # two runs of one model on one dataset: sensitivity checks, never agreeing replicates
    assert ("**toy-model.** On toy-facts (Runs 1 and 2), sensitivity checks that differ in "
            "no recorded setting (not independent replicates): the MLP at the last subject "
            "token peaks at layer 3 in every setting (2 settings)") in two
    assert "cross-method checks agree in 3 of 3 and 1 of 3 (one count per setting)" in two
    assert "2 of 2 runs" not in two and "over 2 runs" not in two
    make_run(tmp_path, "c__z__3", task="yesno", at_chance=True)
    three = synthesis.front_page_markdown(load_runs(tmp_path))
    assert "1 of 2 model–dataset pairs is at chance and left out of this summary." in three
    assert "| Run 3: toy-model on toy-facts | 20 (10) | 50% " in three  # (the toy interval)
    assert "(chance) | — | — | — | — | — |" in three
    assert "On toy-facts (yes/no; Run 3) it is at chance" in three


def test_a_change_is_worded_with_its_interval_in_the_same_direction():
    from factcircuits.results.wording import change_text

    # a fall of 67% whose interval is -80% to -53% is a fall of 53% to 80%
    assert change_text(-0.67, [-0.80, -0.53]) == "falls by 67% (95% CI 53% to 80%)"
    assert change_text(0.25, [0.10, 0.40]) == "rises by 25% (95% CI 10% to 40%)"
    assert change_text(-0.10, [-0.25, 0.04]) == \
        "falls by 10% (95% CI -25% to +4%: the sign is not resolved)"
    assert change_text(-0.5, None) == change_text(-0.5, [float("nan")] * 2) == "falls by 50%"


@pytest.mark.parametrize(("enriched", "moves"), [(True, True), (False, False)])
def test_the_verbs_enriched_and_moves_follow_their_tests(tmp_path, enriched, moves):
    folder = make_run(tmp_path)
    record = json.loads((folder / "run.json").read_text())
    record["headline"]["02_logit_lens"].update(attribute_rate_enriched=enriched,
                                               attribute_rate_peak_layer=4)
    record["headline"]["03_attribution"].update(top_head_moves_from_subject=moves)
    (folder / "run.json").write_text(json.dumps(record))
    summary = F.run_findings(Run.load(folder)).summary
    if enriched:
        assert ("the last subject token's state is enriched with the subject's attributes "
                "(attribute rate peaks at layer 4, above both controls)") in summary
        assert "head L7H2 has the largest direct effect on the answer and moves the attribute "\
            "from the subject" in summary
    else:
        assert "enrichment of the last subject token with the subject's attributes is not shown"\
            in summary
        assert "most of it not through the subject positions" in summary
        assert " moves " not in summary
