"""Estimates: the record round-trips through JSON, older tracing runs read as Estimates, and
the front page's figure places each method's estimate where the findings say it is."""

from __future__ import annotations

import math

import pytest
from test_findings import make_run

from factcircuits.chapters import causal_tracing
from factcircuits.report import glance
from factcircuits.report.sureness import AGREE, CONFOUNDED, DISAGREE, UNRESOLVED, Check
from factcircuits.results.estimates import (
    ANSWER_HEAD,
    MLP_AT_SUBJECT,
    PUBLISHED,
    ROME,
    Estimate,
    published,
)
from factcircuits.results.run import Run


def test_an_estimate_round_trips_and_names_its_component():
    e = Estimate(ANSWER_HEAD, "head patching", site="head", layer=7, head=2, value=0.7,
                 interval=[0.5, 0.9], unit="fraction", n=12)
    assert Estimate.from_json(e.to_json()) == e and e.interval == (0.5, 0.9)
    assert e.component == "L7H2" and e.peak_range == (7, 7)  # a head's layer is exact
    assert Estimate(MLP_AT_SUBJECT, "x", site="mlp", layer=5).component == "MLP 5"
    assert Estimate(MLP_AT_SUBJECT, "x", site="attn", layer=5).component == "attention L5"
    assert Estimate(MLP_AT_SUBJECT, "x", site="hidden", layer=5).component is None
    assert Estimate(MLP_AT_SUBJECT, "x", site="mlp", layer=5).peak_range is None
    # a value that is not finite is stored as not computed and reads back as None
    data = Estimate(MLP_AT_SUBJECT, "x", value=math.nan).to_json()
    assert data["value"] == {"not_computed": "not finite"}
    assert Estimate.from_json(data).value is None


def test_published_values_are_estimates():
    rome = published(MLP_AT_SUBJECT, ROME)
    assert (rome.value, rome.unit, rome.n_layers) == (0.066, "AIE", 48)
    assert all(isinstance(p, Estimate) and p.model for p in PUBLISHED)


def test_an_older_tracing_headline_reads_as_estimates():
    h = causal_tracing.TracingHeadline.from_json({
        "n_prompts": 8, "window": 5, "window_rule": "auto",
        "mlp_subject_last_peak_layer": 4, "mlp_subject_last_peak_layer_range": [3, 6],
        "mlp_subject_last_peak_aie": 0.2, "mlp_subject_last_peak_aie_ci": [0.1, 0.3],
        "windowed_attn_last_peak_layer": 9, "attn_last_windowed_peak_survives": False})
    mlp = h.peak("mlp", "subject_last")
    assert (mlp.quantity, mlp.layer, mlp.layer_range, mlp.interval, mlp.n) == (
        MLP_AT_SUBJECT, 4, (3, 6), (0.1, 0.3), 8)
    assert mlp.component == "MLP 4" and mlp.why  # singled out for the circuit's cross-check
    assert h.peak("windowed_attn", "last").quantity != MLP_AT_SUBJECT  # not shared
    assert h.survives("attn", "last") is False and h.survives("mlp", "last") is None
    again = causal_tracing.TracingHeadline.from_json(h.to_json())  # the new form
    assert again.estimates() == h.estimates()


@pytest.mark.parametrize("verdicts, expected", [
    ([], glance.ALONE), ([AGREE], AGREE), ([AGREE, DISAGREE], DISAGREE),
    ([AGREE, UNRESOLVED], UNRESOLVED), ([AGREE, CONFOUNDED], CONFOUNDED)])
def test_one_verdict_per_quantity(verdicts, expected):
    assert glance.quantity_verdict([Check("q", v, "") for v in verdicts]) == expected


def test_the_figure_places_each_estimate_by_relative_depth(tmp_path):
    # 11 layers: relative depth = layer / 10; tracing 3 (2–4), patching 4 (3–5): they agree
    ev = Run.load(make_run(tmp_path))
    rows = {(r["quantity"], r["method"]): r for r in glance.glance_rows([ev])}
    tracing = rows[(MLP_AT_SUBJECT, "causal tracing")]
    assert (tracing["peak"], tracing["low"], tracing["high"]) == pytest.approx((0.3, 0.2, 0.4))
    patching = rows[(MLP_AT_SUBJECT, "activation patching")]
    assert (patching["peak"], patching["low"], patching["high"]) == pytest.approx(
        (0.4, 0.3, 0.5))
    assert tracing["verdict"] == patching["verdict"] == AGREE
    assert rows[(ANSWER_HEAD, "head patching: L7H2")]["verdict"] == AGREE
    far = Run.load(make_run(tmp_path, "m__d__2", trace_range=(8, 10), patch_mlp_layer=2))
    assert {r["verdict"] for r in glance.glance_rows([far])
            if r["quantity"] == MLP_AT_SUBJECT} == {DISAGREE}
    fig = glance.glance_figure([ev, far])
    assert fig is not None and "Run 2" in " ".join(fig.layout.yaxis.ticktext)
    assert glance.glance_figure([]) is None
