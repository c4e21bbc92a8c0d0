"""The numbers notebook 04 narrates, read off each chapter's Summary: checked against
values worked out by hand on small synthetic tables."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from factcircuits.chapters import activation_patching as AP


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
