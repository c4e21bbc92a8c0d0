"""Ablation and attention knockout: null operations change nothing, real ones do."""

from __future__ import annotations

import pytest
import torch

from factcircuits.data.datasets import load_dataset
from factcircuits.methods import ablation as AB
from factcircuits.methods import knockout as KO
from factcircuits.methods.evaluate import prepare
from factcircuits.models import load_model
from factcircuits.models.forward import final_logits


@pytest.fixture(scope="module")
def setup():
    lm = load_model("tiny")
    pr = prepare(lm, load_dataset("paris-cloze"), "raw", None, None, drop_multi_token=True)
    batch = pr.clean_batch(lm.tokenizer)
    clean = pr.metric(final_logits(lm.model, batch, 4))
    return lm, pr, batch, clean


def test_ablating_nothing_changes_nothing(setup):
    lm, pr, batch, clean = setup
    logits = final_logits(lm.model, batch, 4, hooks_for=AB.ablation_hooks([], "zero"))
    assert torch.allclose(pr.metric(logits), clean)


def test_zero_ablating_a_layer_equals_zeroing_all_its_heads(setup):
    lm, _pr, batch, _ = setup
    H = lm.model.cfg.n_heads
    attn = final_logits(lm.model, batch, 4, hooks_for=AB.ablation_hooks([("attn", 1)], "zero"))
    heads = final_logits(lm.model, batch, 4,
                         hooks_for=AB.ablation_hooks([("head", 1, h) for h in range(H)], "zero"))
    assert torch.allclose(attn, heads, atol=1e-4)


def test_mean_ablation_with_one_prompt_is_identity(setup):
    lm, pr, _, _ = setup
    one = pr.subset([0])
    table = AB.ablation_table(lm, one, [("mlp", 0), ("head", 1, 2)],
                              modes=("mean",))
    assert table["drop"].abs().max() < 1e-4  # the mean over one prompt is the prompt itself


def test_ablation_table_matches_hand_ablation(setup):
    """Zero ablation recomputed with plain run_with_hooks on one prompt at a time (no padding,
    no sub-batches): an MLP output set to zero, a head's z slice set to zero, and both."""
    lm, pr, _, clean = setup
    table = AB.ablation_table(lm, pr, [("mlp", 1), ("head", 0, 2)], modes=("zero",))

    def zero(act, hook):
        return torch.zeros_like(act)

    def zero_head(act, hook):
        act = act.clone()
        act[:, :, 2] = 0
        return act

    hooks = {"mlp L1": [("blocks.1.hook_mlp_out", zero)],
             "L0H2": [("blocks.0.attn.hook_z", zero_head)]}
    hooks["all 2 together"] = hooks["mlp L1"] + hooks["L0H2"]
    assert sorted(table["component"].unique()) == sorted(hooks)
    for label, fwd_hooks in hooks.items():
        rows = table[table["component"] == label].sort_values("prompt")
        expected = []
        for i, prompt in enumerate(pr.prompts):
            ids = lm.tokenizer(prompt, return_tensors="pt")["input_ids"]
            with torch.no_grad():
                logits = lm.model.run_with_hooks(ids, fwd_hooks=fwd_hooks)[:, -1]
            expected.append(float(pr.metric(logits.float(), [i])[0]))
        assert rows["ablated"].to_numpy() == pytest.approx(expected, abs=1e-4)
        assert rows["clean"].to_numpy() == pytest.approx(clean.numpy(), abs=1e-5)
        assert rows["drop"].to_numpy() == pytest.approx(clean.numpy() - expected, abs=1e-4)


def test_empty_knockout_changes_nothing(setup):
    lm, pr, batch, clean = setup
    none = torch.zeros_like(batch.tokens, dtype=torch.bool)
    L = lm.model.cfg.n_layers
    assert torch.equal(pr.metric(KO.knockout(lm, pr, none, range(L), batch_size=4)),
                       clean)
    everything = batch.attention_mask.bool()
    assert torch.equal(pr.metric(KO.knockout(lm, pr, everything, [], batch_size=4)),
                       clean)


def test_full_knockout_changes_the_metric(setup):
    lm, pr, batch, clean = setup
    everything = batch.attention_mask.bool()
    L = lm.model.cfg.n_layers
    knocked = pr.metric(KO.knockout(lm, pr, everything, range(L), batch_size=4))
    assert (knocked - clean).abs().min() > 1e-3


def test_knockout_equals_renormalised_pattern(setup):
    """Independent check: −inf scores = zeroing the pattern at those keys and renormalising."""
    lm, pr, batch, _ = setup
    layer = 1
    block = torch.zeros_like(batch.tokens, dtype=torch.bool)
    block[:, 1:3] = True
    ko = KO.knockout(lm, pr, block, [layer], batch_size=64)

    def pattern_hook(part, last, mask):
        def fn(p, hook):
            p = p.clone()
            rows = torch.arange(p.shape[0])
            cut = block[part][:, : p.shape[-1]].clone()
            cut[rows, last] = False
            sel = p[rows, :, last].masked_fill(cut[:, None, :], 0.0)
            p[rows, :, last] = sel / sel.sum(-1, keepdim=True)
            return p
        return [(f"blocks.{layer}.attn.hook_pattern", fn)]

    ref = final_logits(lm.model, batch, 64, hooks_for=pattern_hook)
    assert torch.allclose(ko, ref, atol=1e-4)


def test_sweep_and_peaks(setup):
    """Each sweep row equals a knockout of the same window recomputed with `knockout`, and the
    peak is the window with the lowest mean relative change of P(answer)."""
    from factcircuits.methods.positions import position_mask, task_positions

    lm, pr, batch, clean = setup
    table = KO.knockout_sweep(lm, pr, window=2, roles=("subject",))
    mask = position_mask(task_positions(pr, lm.tokenizer), "subject", batch.tokens.shape[1])
    clean_p = pr.answer_probability(final_logits(lm.model, batch, 4))
    means = {}
    for centre, first, last in KO.windows(lm.model.cfg.n_layers, 2):
        logits = KO.knockout(lm, pr, mask, range(first, last + 1), batch_size=4)
        change = (pr.answer_probability(logits) - clean_p) / clean_p
        rows = table[table["centre"] == centre].sort_values("prompt")
        assert rows["relative_p_change"].to_numpy() == pytest.approx(change.numpy(), abs=1e-5)
        assert rows["metric_change"].to_numpy() == pytest.approx(
            (pr.metric(logits) - clean).numpy(), abs=1e-4)
        means[centre] = float(change.mean())
    peak = KO.peak_windows(table)["subject"]
    assert peak["centre"] == min(means, key=means.get)
    assert peak["relative_p_change"] == pytest.approx(min(means.values()), abs=1e-5)


def test_windows_clip():
    assert KO.windows(6, 3)[0] == (0, 0, 2) and KO.windows(6, 3)[-1] == (5, 3, 5)
    assert KO.default_window(30) == 5


def test_relation_knockout_peak_and_comparison_in_the_headline(setup):
    """Both roles' worst windows reach the headline (window, fall, interval), and the
    relation-minus-subject difference is the mean over prompts of the two peaks' changes."""
    from factcircuits.chapters import ablation_knockout as AK

    lm, pr, _, _ = setup
    ko = AK.knock_out(lm, pr, window=1, batch_size=4)
    h = ko.headline
    table = ko.table
    for role in KO.ROLES:
        means = table[table["role"] == role].groupby("centre")["relative_p_change"].mean()
        centre = int(means.idxmin())
        assert h[f"knockout_{role}_peak_centre"] == centre
        assert h[f"knockout_{role}_peak_first"] == h[f"knockout_{role}_peak_last"] == centre
        assert h[f"knockout_{role}_peak_relative_p_change"] == pytest.approx(means.min())
        low, high = h[f"knockout_{role}_peak_relative_p_change_ci"]
        assert low <= means.min() <= high

    def at(role):
        part = table[(table["role"] == role)
                     & (table["centre"] == h[f"knockout_{role}_peak_centre"])]
        return part.sort_values("prompt")["relative_p_change"].to_numpy()

    diff = at("relation") - at("subject")
    assert h["knockout_relation_minus_subject"] == pytest.approx(diff.mean())
    low, high = h["knockout_relation_minus_subject_ci"]
    assert low <= diff.mean() <= high
    # the claim for the run's Holm family: its difference is that mean, its p the swap test's
    found = h["claim_subject_knockout_over_relation"]
    assert found["difference"] == pytest.approx(diff.mean()) and found["n"] == len(diff)
    from factcircuits.methods.uncertainty import peak_difference, swap_test

    falls = {role: -table[table["role"] == role].pivot_table(
        index="prompt", columns="centre", values="relative_p_change") for role in KO.ROLES}
    assert found["p"] == pytest.approx(swap_test(falls["subject"].to_numpy(),
                                                 falls["relation"].to_numpy(), peak_difference))
    # the swap statistic's observed value is the same comparison: worst falls of the two roles
    assert peak_difference(falls["subject"].to_numpy()[None],
                           falls["relation"].to_numpy()[None])[0] == pytest.approx(diff.mean(),
                                                                                   rel=1e-5)
    AK.AblationKnockoutHeadline(**h)  # every key is a declared field


def _knockout_run(tmp_path, difference, ci):
    """A run folder holding only notebook 06's headline and its window table: the subject
    knockout worst at centre 4 (−30%), the relation knockout at centre 7 (−80%)."""
    import json

    import pandas as pd

    from factcircuits.chapters import ablation_knockout as AK
    from factcircuits.results.run import Run

    folder = tmp_path / "m__d__1"
    (folder / "results" / "06_ablation_knockout").mkdir(parents=True)
    headline = AK.AblationKnockoutHeadline(
        knockout_window=3, knockout_subject_peak_relative_p_change_ci=[-0.4, -0.2],
        knockout_relation_peak_relative_p_change_ci=[-0.9, -0.7],
        knockout_relation_minus_subject=difference, knockout_relation_minus_subject_ci=ci)
    record = {"run_id": "m__d__1", "status": "ok",
              "parameters": {"model": "default", "dataset": "toy", "task": "cloze", "seed": 0},
              "notebooks": [], "model": {"resolved_name": "org/toy", "n_layers": 11},
              "headline": {AK.METHOD.notebook: headline.to_json()}}
    (folder / "run.json").write_text(json.dumps(record))
    worst = {("subject", 4): -0.3, ("relation", 7): -0.8}
    rows = [{"role": role, "centre": c, "first": c - 1, "last": c + 1,
             "relative_p_change": worst.get((role, c), -0.05), "metric_change": -1.0}
            for role in ("subject", "relation") for c in range(1, 10)]
    pd.DataFrame(rows).to_csv(folder / "results" / "06_ablation_knockout" /
                              "knockout_summary.csv", index=False)
    return Run.load(folder)


@pytest.mark.parametrize("difference,ci,verdict", [
    (-0.5, [-0.7, -0.3], "By its interval, blocking the relation tokens hurts **more** than "
     "blocking the subject"),
    (-0.5, [-0.9, 0.1], "Which of the two hurts more is not resolved"),
])
def test_findings_put_the_relation_knockout_beside_the_subject(tmp_path, difference, ci,
                                                                 verdict):
    from factcircuits.chapters import ablation_knockout as AK

    [finding] = AK.knockout_findings(_knockout_run(tmp_path, difference, ci))
    text = finding.text
    assert "total effects" in text
    assert ("blocking the last token's attention to the subject hurts most in layers 3–5 "
            "(relative depth 0.30–0.50): P(answer) falls by 30% (95% CI 20% to 40%)") in text
    assert ("blocking it to the relation tokens hurts most in layers 6–8 (relative depth "
            "0.60–0.80): P(answer) falls by 80% (95% CI 70% to 90%)") in text
    assert verdict in text
