"""Logit lens: the last point equals the final metric; steps are the sublayers' DLA."""

from __future__ import annotations

import pytest
import torch

from factcircuits.data.datasets import load_dataset
from factcircuits.methods import logit_lens as LL
from factcircuits.methods.evaluate import prepare
from factcircuits.models import load_model
from factcircuits.models.forward import final_logits


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny")


def _lens(lm, name, kind="auto"):
    pr = prepare(lm, load_dataset(name), "raw", None, None, drop_multi_token=True)
    return pr, LL.logit_lens(lm, pr, batch_size=5, kind=kind)


def test_last_point_is_final_metric(tiny):
    pr, lens = _lens(tiny, "paris-cloze")
    metric = pr.metric(final_logits(tiny.model, pr.clean_batch(tiny.tokenizer)))
    last = lens.table[lens.table.step == lens.table.step.max()].sort_values("prompt")["value"]
    assert torch.allclose(torch.tensor(last.to_numpy()), metric, atol=1e-3)
    assert len(lens.table) == len(pr.prompts) * (2 * tiny.model.cfg.n_layers + 1)


def test_shares_add_up(tiny):
    _, lens = _lens(tiny, "paris-cloze")
    s = lens.shares()
    assert s["attn_share"] + s["mlp_share"] == pytest.approx(1.0)
    assert s["final_value"] - s["embed_value"] == pytest.approx(s["total_increase"], abs=1e-4)
    assert s["peak_sublayer"] in ("attn", "mlp")


def test_yesno_last_point_is_metric(tiny):
    pr, lens = _lens(tiny, "paris-yesno")
    metric = pr.metric(final_logits(tiny.model, pr.clean_batch(tiny.tokenizer)))
    last = lens.table[lens.table.step == lens.table.step.max()].sort_values("prompt")["value"]
    assert torch.allclose(torch.tensor(last.to_numpy()), metric, atol=1e-3)


def test_top_tokens_final_step_matches_model(tiny):
    pr, lens = _lens(tiny, "paris-cloze")
    table = LL.top_tokens(tiny, lens.decomposition, 0, 3,
                          [int(pr.answer_ids[0])])
    top = int(lens.decomposition.logits[0].argmax())
    assert table["top_tokens"].iloc[-1].split(" | ")[0] == repr(tiny.tokenizer.decode([top]))


@pytest.mark.embedded
def test_embedded_last_point():
    lm = load_model("default")
    pr = prepare(lm, load_dataset("paris-cloze"), "raw").subset([0, 1])
    lens = LL.logit_lens(lm, pr)
    metric = pr.metric(final_logits(lm.model, pr.clean_batch(lm.tokenizer)))
    last = lens.table[lens.table.step == lens.table.step.max()].sort_values("prompt")["value"]
    assert torch.allclose(torch.tensor(last.to_numpy()), metric, atol=1e-3)


def test_share_caveat_only_when_contributions_cancel():
    from factcircuits.methods.logit_lens import share_caveat

    clear = {"attn_increase": 1.0, "mlp_increase": 3.0, "total_increase": 4.0,
             "mlp_share": 0.75}
    assert share_caveat(clear) == ""
    cancelling = {"attn_increase": 1.3, "mlp_increase": -1.26, "total_increase": 0.04,
                  "mlp_share": -31.5}
    assert "not meaningful" in share_caveat(cancelling)


def _lens_run(tmp_path, **fields):
    import json

    from factcircuits.chapters import logit_lens as chapter
    from factcircuits.results.run import Run

    folder = tmp_path / "m__d__1"
    folder.mkdir()
    record = {"run_id": "m__d__1", "status": "ok",
              "parameters": {"model": "default", "dataset": "toy", "task": "cloze", "seed": 0},
              "notebooks": [], "model": {"resolved_name": "org/toy", "n_layers": 11},
              "headline": {chapter.METHOD.notebook: chapter.LogitLensHeadline(
                  **fields).to_json()}}
    (folder / "run.json").write_text(json.dumps(record))
    return Run.load(folder)


ATTRIBUTE_RATE = dict(
    attribute_rate_k=50, attribute_rate_peak=0.4, attribute_rate_peak_ci=[0.3, 0.5],
    attribute_rate_peak_layer=5, attribute_rate_peak_layer_range=[4, 6],
    attribute_rate_control=0.1, attribute_rate_control_ci=[0.05, 0.15],
    attribute_rate_control_kind="other subjects' attributes at the last subject token",
    attribute_rate_excess=0.3, attribute_rate_excess_ci=[0.2, 0.4])


@pytest.mark.parametrize("enriched,said", [
    (True, "the last subject token is **enriched** with the subject's attributes"),
    (False, "this run does not show the subject token enriched with its attributes"),
])
def test_enrichment_finding_says_enriched_only_when_the_test_does(tmp_path, enriched, said):
    from factcircuits.chapters import logit_lens as chapter

    run = _lens_run(tmp_path, attribute_rate_enriched=enriched, **ATTRIBUTE_RATE)
    [finding] = chapter.lens_findings(run)
    assert ("the share of the subject's attribute tokens among the top 50 tokens peaks at 40% "
            "(95% CI 30% to 50%) after layer 5 (relative depth 0.50; 95% of resamples in layers "
            "4–6), against 10% (95% CI 5% to 15%) for the stronger control there (other "
            "subjects' attributes at the last subject token), a paired difference of +30% (95% "
            "CI +20% to +40%)") in finding.text
    assert said in finding.text and "logit lens read directly" in finding.text
    assert ("**enriched**" in finding.text) is enriched
