"""ROME causal tracing on the fast patching engine."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from test_resumed_forward import traced_by_hand

from factcircuits.data.datasets import load_dataset
from factcircuits.methods import causal_tracing as CT
from factcircuits.methods import intervals as I
from factcircuits.methods import patching as P
from factcircuits.methods.evaluate import prepare
from factcircuits.models.tokens import encode

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_task(tiny_lm):
    return prepare(tiny_lm, load_dataset("paris-cloze")).subset([0, 2, 6, 11])


def test_zero_noise_gives_zero_effects(tiny_lm, tiny_task):
    traces = CT.trace(tiny_lm, tiny_task, noise_scale=0.0, noise_samples=2, progress=False,
                      windows={"mlp": 2, "attn": 2})
    for result in traces.values():
        assert result.total_effect().abs().max() < 1e-6
        valid = ~result.values.isnan()
        assert result.indirect_effect()[valid].abs().max() < 1e-5


def test_noise_moves_probability_and_restoring_last_layer_recovers_it(tiny_lm, tiny_task):
    traces = CT.trace(tiny_lm, tiny_task, kinds=("hidden",), noise_samples=3, seed=1,
                      progress=False)
    result = traces["hidden"]
    assert result.total_effect().abs().max() > 1e-4  # the noise does something
    lengths = result.lengths
    for i in range(len(lengths)):  # the last layer's output at the last token is the answer
        last = int(lengths[i]) - 1
        assert torch.isclose(result.values[-1, last, i], result.clean[i], atol=1e-5)
    # seeded: the same seed gives the same trace
    again = CT.trace(tiny_lm, tiny_task, kinds=("hidden",), noise_samples=3, seed=1,
                     progress=False)["hidden"]
    assert torch.equal(torch.nan_to_num(again.values), torch.nan_to_num(result.values))


def test_stacking_cap_does_not_change_trace(tiny_lm, tiny_task):
    kw = {"kinds": ("mlp",), "windows": {"mlp": 3}, "noise_samples": 2, "seed": 0,
          "progress": False}
    auto = CT.trace(tiny_lm, tiny_task, **kw)["mlp"]
    one = CT.trace(tiny_lm, tiny_task, max_patches=1, **kw)["mlp"]
    assert (torch.nan_to_num(auto.values) - torch.nan_to_num(one.values)).abs().max() < 1e-5


def test_window_layers_like_rome():
    assert CT.window_layers(0, 10, 30) == list(range(5))
    assert CT.window_layers(15, 10, 30) == list(range(10, 20))
    assert CT.window_layers(29, 10, 30) == list(range(24, 30))
    assert CT.window_layers(4, 1, 30) == [4]


def test_aie_table_by_token_class(tiny_lm, tiny_task):
    """AIE recomputed by hand from the trace tensor and each prompt's token classes: mean over
    a prompt's tokens of a class, then over the prompts that have the class; the peak is the
    layer of the largest AIE."""
    from factcircuits.methods.positions import task_positions

    traces = CT.trace(tiny_lm, tiny_task, kinds=("hidden",), noise_samples=2, progress=False)
    ie = traces["hidden"].indirect_effect()  # [layer, pos, prompt]
    aie = CT.average_indirect_effect(traces["hidden"].tidy(P.position_table(tiny_lm, tiny_task)))
    peaks = CT.peak_by_class(aie).set_index("token_class")
    classes = [p.classes for p in task_positions(tiny_task, tiny_lm.tokenizer)]
    n_layers = ie.shape[0]
    for cls in ("prefix", "subject_last", "last"):
        by_layer = []
        for layer in range(n_layers):
            per_prompt = [ie[layer, [j for j, c in enumerate(cs) if c == cls], i].mean()
                          for i, cs in enumerate(classes) if cls in cs]
            by_layer.append(float(torch.stack(per_prompt).mean()))
        table = aie[aie["token_class"] == cls].sort_values("layer")["aie"].to_numpy()
        assert table == pytest.approx(by_layer, abs=1e-6)
        best = max(range(n_layers), key=by_layer.__getitem__)
        assert int(peaks.loc[cls, "layer"]) == best
        assert float(peaks.loc[cls, "peak_aie"]) == pytest.approx(by_layer[best], abs=1e-6)


@pytest.mark.embedded
def test_embedded_zero_noise(embedded_lm):
    task = prepare(embedded_lm, load_dataset("paris-cloze")).subset([0, 1])
    traces = CT.trace(embedded_lm, task, kinds=("hidden",), noise_scale=0.0, noise_samples=1,
                      progress=False)
    result = traces["hidden"]
    assert result.total_effect().abs().max() < 1e-5
    assert result.indirect_effect()[~result.values.isnan()].abs().max() < 1e-4


# --------------------------------------------------------------------------- window rule
def test_default_window_is_romes_share_of_the_depth():
    # ROME: 10 of GPT-2 XL's 48 layers; 10/48 × n rounded half up, at least 1
    assert [CT.default_window(n) for n in (30, 18, 48, 2, 12, 1)] == [6, 4, 10, 1, 3, 1]
    assert CT.resolve_window("auto", 30) == 6 and CT.resolve_window("auto", 18) == 4
    assert CT.resolve_window(10, 30) == 10 and CT.resolve_window(99, 18) == 18
    assert "6 layers" in CT.window_rule("auto", 30) and "10/48" in CT.window_rule("auto", 30)
    assert CT.window_rule(10, 18).startswith("given: 10 layers")
    assert "clamped" in CT.window_rule(99, 18)


def test_trace_window_parameter_takes_auto_or_a_whole_number():
    domain = CT.TRACE_WINDOW
    assert domain.default == "auto"
    assert domain.ok("auto") and domain.ok(1) and domain.ok(10)
    assert not domain.ok(0) and not domain.ok("ten") and not domain.ok(2.5)


def test_kinds_with_the_same_state_and_window_share_one_trace(tiny_lm, tiny_task):
    traces = CT.trace(tiny_lm, tiny_task, CT.TRACE_KINDS, noise_samples=2, progress=False,
                      windows={"windowed_mlp": 1, "windowed_attn": 2})
    assert traces["windowed_mlp"].window == 1 and traces["mlp"].window == 1
    assert torch.equal(traces["windowed_mlp"].values.nan_to_num(),
                       traces["mlp"].values.nan_to_num())
    assert traces["windowed_attn"].window == 2
    assert not torch.equal(traces["windowed_attn"].values.nan_to_num(),
                           traces["attn"].values.nan_to_num())


def test_a_kind_traced_at_some_positions_equals_the_full_trace_there(tiny_lm, tiny_task):
    kw = {"windows": {"windowed_attn": 2}, "noise_samples": 2, "seed": 3, "progress": False}
    full = CT.trace(tiny_lm, tiny_task, ("hidden", "windowed_attn"), **kw)["windowed_attn"]
    last = [[int(n) - 1] for n in full.lengths]  # the last token of each prompt
    only = CT.trace(tiny_lm, tiny_task, ("hidden", "windowed_attn"), positions={
        "windowed_attn": last}, **kw)["windowed_attn"]
    for i, (pos,) in enumerate(last):
        assert torch.allclose(only.values[:, pos, i], full.values[:, pos, i], atol=1e-6)
        others = [p for p in range(only.values.shape[1]) if p != pos]
        assert only.values[:, others, i].isnan().all()
    rows = only.tidy()
    assert len(rows) == tiny_lm.cfg.n_layers * len(last)
    assert set(zip(rows["prompt_id"], rows["pos"])) == {(i, p) for i, (p,) in enumerate(last)}


# --------------------------------------------------------------------------- every family
FAMILIES = ["tiny", "tiny-gemma", "tiny-gemma2", "tiny-gemma3", "tiny-qwen2"]
_FAMILY_MODELS: dict = {}


def _family_model(spec):
    from factcircuits.models import load_model

    if spec not in _FAMILY_MODELS:
        _FAMILY_MODELS[spec] = load_model(spec)
    return _FAMILY_MODELS[spec]


@pytest.mark.parametrize("spec", FAMILIES)
def test_window_one_and_windowed_traces_equal_a_plain_restoration(spec):
    """Every trace kind from one call (window 1 for MLP and attention beside windows of 3 and
    2 layers) equals one plain hooked forward per cell, on every model family."""
    from factcircuits.models.tokens import encode

    lm = _family_model(spec)
    prepared = prepare(lm, load_dataset("paris-cloze"))
    lengths = encode(lm.tokenizer, prepared.prompts).lengths
    shared = min(n for n in lengths.tolist() if (lengths == n).sum() >= 2)
    same = (lengths == shared).nonzero().flatten()[:2]  # one group: one noise order
    prepared = prepared.subset(same)
    subjects = [[2, 3]] * len(same)
    windows, seed, samples = {"windowed_mlp": 3, "windowed_attn": 2}, 4, 2
    traces = CT.trace(lm, prepared, CT.TRACE_KINDS, windows=windows, noise_samples=samples,
                      seed=seed, progress=False, subject_positions=subjects)
    assert {k: t.window for k, t in traces.items()} == {
        "hidden": 1, "mlp": 1, "attn": 1, "windowed_mlp": 3, "windowed_attn": 2}
    std = traces["hidden"].noise_std
    for kind, result in traces.items():
        if kind == "hidden":  # hidden states: test_resumed_forward.py
            continue
        state = CT.state_of(kind)  # the plain reference of test_resumed_forward.py
        expected = traced_by_hand(lm, prepared, subjects, [state], {state: result.window},
                                  samples, seed, std)[state]
        diff = (result.values[:, 2:] - expected[:, 2:]).abs().max()
        assert diff <= 1e-5, (kind, float(diff))


def traced_by_hand_in_groups(lm, prepared, subjects, windows, noise_samples, seed, std):
    """ROME's trace with one plain full forward per (kind, layer, position) of each prompt
    group, no stacking and no resuming: prompts grouped as the tracer documents (token length,
    then first subject position), noise drawn group by group, sample-major, from one seeded
    generator; every clean state of the window restored at that position; P(answer) averaged
    over samples. {kind: [n_layers, width, n_prompts]}, NaN before each first subject token."""
    hook_of = {"hidden": "resid_post", "mlp": "mlp_out", "attn": "attn_out"}
    lengths = encode(lm.tokenizer, prepared.prompts).lengths.tolist()
    width, n_layers = max(lengths), lm.cfg.n_layers
    out = {k: torch.full((n_layers, width, len(lengths)), float("nan")) for k in windows}
    generator = torch.Generator().manual_seed(seed)
    keys = sorted({(n, min(s)) for n, s in zip(lengths, subjects)})
    for n, first in keys:
        idx = [i for i, (m, s) in enumerate(zip(lengths, subjects)) if (m, min(s)) == (n, first)]
        G = len(idx)
        tokens = encode(lm.tokenizer, [prepared.prompts[i] for i in idx]).tokens
        noise = torch.zeros(noise_samples * G, n, lm.cfg.d_model)
        for s in range(noise_samples):
            for g, i in enumerate(idx):
                noise[s * G + g, subjects[i]] = 3.0 * std * torch.randn(
                    len(subjects[i]), lm.cfg.d_model, generator=generator)
        batch = tokens.repeat(noise_samples, 1)
        rows = torch.tensor(idx).repeat(noise_samples)
        _, clean = lm.model.run_with_cache(batch, return_cache_object=False)
        for kind, window in windows.items():
            state = hook_of[CT.state_of(kind)]
            for layer in range(n_layers):
                for pos in range(first, n):
                    def restore(act, hook, pos=pos, clean=clean):
                        act[:, pos] = clean[hook.name][:, pos]
                        return act

                    def add_noise(act, hook, noise=noise):
                        return act + noise.to(act.dtype)

                    hooks = [("hook_embed", add_noise)]
                    hooks += [(f"blocks.{w}.hook_{state}", restore)
                              for w in CT.window_layers(layer, window, n_layers)]
                    with torch.no_grad():
                        logits = lm.model.run_with_hooks(batch, fwd_hooks=hooks)[:, -1]
                    p = prepared.answer_probability(logits, rows).float()
                    out[kind][layer, pos, idx] = p.view(noise_samples, G).mean(0)
    return out


@pytest.mark.slow  # one plain forward per cell: ~5 s of CPU a family
@pytest.mark.parametrize("spec", FAMILIES)
def test_prompts_of_several_lengths_traced_together_equal_plain_restorations(spec):
    """Five prompts of three token lengths (6, 8, 13: past the tiny models' sliding window)
    and four groups (two of length 8 with different first subject tokens, one of them with two
    prompts) in one call, every trace kind, windows of 1, 3 and 2 layers, two noise samples:
    one copy per forward (`max_patches=1`) and the default stacking both equal one plain full
    forward per cell, on every model family."""
    lm = _family_model(spec)
    prepared = prepare(lm, load_dataset("paris-cloze"))
    chosen = [0, 5, 9, 10, 1]
    assert encode(lm.tokenizer, [prepared.prompts[i] for i in chosen]).lengths.tolist() == [
        6, 8, 8, 8, 13]
    prepared = prepared.subset(chosen)
    subjects = [[1, 2], [2, 3], [2, 3], [1], [3, 4, 5]]
    windows = {"hidden": 1, "mlp": 1, "attn": 1, "windowed_mlp": 3, "windowed_attn": 2}
    kw = dict(windows=windows, noise_samples=2, seed=7, progress=False,
              subject_positions=subjects)
    traces = {m: CT.trace(lm, prepared, CT.TRACE_KINDS, max_patches=m, **kw)
              for m in (1, "auto")}
    # the P(answer) of a stack taken in chunks of 3 rows (seams inside every stack)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CT, "SOFTMAX_CHUNK_BYTES", 3 * 4 * lm.cfg.d_vocab)
        traces["chunks of 3 rows"] = CT.trace(lm, prepared, CT.TRACE_KINDS, **kw)
    expected = traced_by_hand_in_groups(lm, prepared, subjects, windows, 2, 7,
                                        traces[1]["hidden"].noise_std)
    for kind, want in expected.items():
        traced = ~want.isnan()
        assert int(traced.sum()) == lm.cfg.n_layers * sum(
            n - min(s) for n, s in zip([6, 8, 8, 8, 13], subjects))
        for max_patches, got in traces.items():
            diff = (got[kind].values[traced] - want[traced]).abs().max()
            assert diff <= 1e-5, (kind, max_patches, float(diff))


# --------------------------------------------------------------------------- peaks and claims
def _long(curves_by_kind: dict, token_class: str = "subject_last") -> pd.DataFrame:
    """A tidy trace table from {kind: [n_prompts, n_layers] indirect effects}."""
    rows = []
    for kind, values in curves_by_kind.items():
        for prompt, curve in enumerate(np.asarray(values)):
            rows += [{"kind": kind, "window": 3 if kind in CT.WINDOWED else 1,
                      "token_class": cls, "prompt_id": prompt, "layer": layer, "pos": 0,
                      "indirect_effect": float(v)}
                     for layer, v in enumerate(curve)
                     for cls in ([token_class] if isinstance(token_class, str) else token_class)]
    return pd.DataFrame(rows)


def test_peaks_leave_out_mlp_0_and_report_it_on_its_own():
    rng = np.random.default_rng(0)
    n, n_layers = 8, 6
    mlp = 0.01 * rng.random((n, n_layers))
    mlp[:, 0] += 0.9  # the embedding confound: the largest effect, at layer 0
    mlp[:, 3] += 0.3  # the peak over layers ≥ 1
    attn = 0.01 * rng.random((n, n_layers))
    attn[:, 0] += 0.2  # attention's layer 0 stays eligible
    windowed = 0.01 * rng.random((n, n_layers))
    windowed[:, 1] += 0.5  # windowed MLP peak at layer 1: outside the window-1 range [3, 3]
    long = _long({"mlp": mlp, "attn": attn, "windowed_mlp": windowed, "windowed_attn": attn})
    peaks = CT.peak_by_class(CT.average_indirect_effect(long)).set_index("kind")
    assert int(peaks.loc["mlp", "layer"]) == 3
    assert float(peaks.loc["mlp", "peak_aie"]) == pytest.approx(mlp[:, 3].mean())
    assert int(peaks.loc["windowed_mlp", "layer"]) == 1
    assert int(peaks.loc["attn", "layer"]) == 0
    out = I.tracing_intervals(long, n_layers, seed=0)
    assert out["mlp_subject_last_peak_layer_range"] == [3, 3]
    assert out["mlp_subject_last_layer0_aie"] == pytest.approx(mlp[:, 0].mean())
    low, high = out["mlp_subject_last_layer0_aie_ci"]
    assert mlp[:, 0].min() <= low <= mlp[:, 0].mean() <= high <= mlp[:, 0].max()
    assert out["mlp_subject_last_windowed_peak_survives"] is False
    assert out["attn_subject_last_windowed_peak_survives"] is True  # the same curve


def _swap_p_by_hand(a, b, statistic):
    """Every one of the 2**n patterns of swapping prompt i's two curves, in plain loops."""
    n = len(a)
    observed, hits = None, 0
    for pattern in range(2**n):
        x = np.array([b[i] if pattern >> i & 1 else a[i] for i in range(n)])
        y = np.array([a[i] if pattern >> i & 1 else b[i] for i in range(n)])
        value = statistic(x.mean(0), y.mean(0))
        observed = abs(value) if observed is None else observed
        hits += abs(value) >= observed - 1e-12
    return hits / 2**n


def test_claims_carry_exact_swap_test_p_values():
    rng = np.random.default_rng(1)
    n, n_layers = 7, 5
    mlp = 0.05 * rng.random((n, n_layers))
    mlp[:, 2] += np.linspace(0.0, 0.3, n)  # the MLP peaks at layer 2, unevenly over prompts
    attn = 0.05 * rng.random((n, n_layers))
    attn[:, 1] += 0.05
    late = 0.05 * rng.random((n, n_layers))
    late[:, 4] += 0.2  # attention at the last token peaks at layer 4
    long = pd.concat([_long({"mlp": mlp, "attn": attn}),
                      _long({"attn": late}, "last")], ignore_index=True)
    out = I.tracing_intervals(long, n_layers, seed=0)
    # layers ≥ 1 for both curves, so that swapping a prompt's curves swaps layer for layer
    a, b, c = mlp[:, 1:], attn[:, 1:], late[:, 1:]
    over = out["claim_mlp_over_attn_subject_last"]
    assert over["p"] == pytest.approx(_swap_p_by_hand(a, b, lambda x, y: x.max() - y.max()))
    assert over["difference"] == pytest.approx(np.mean(a[:, a.mean(0).argmax()]
                                                       - b[:, b.mean(0).argmax()]))
    assert over["n"] == n and over["testable"]  # 2 / 2**7 < 0.05
    assert "verdict" not in over  # judged with the run's other claims, in the findings
    order = out["claim_mlp_before_attn_last"]
    assert order["p"] == pytest.approx(
        _swap_p_by_hand(a, c, lambda x, y: float(y.argmax() - x.argmax())))
    assert order["difference"] == 4 - 2
    low, high = order["difference_ci"]
    assert low <= 2 <= high
    assert out["mlp_subject_before_attn_last_share"] >= 0.95


def test_too_few_prompts_make_a_claim_untestable():
    rng = np.random.default_rng(2)
    mlp, attn = rng.random((4, 4)) + 1.0, rng.random((4, 4))
    out = I.tracing_intervals(_long({"mlp": mlp, "attn": attn}), 4, seed=0)
    claim = out["claim_mlp_over_attn_subject_last"]
    assert claim["p"] == pytest.approx(2 / 16) and not claim["testable"]  # the smallest p


def test_the_text_reads_window_1_peaks_and_says_whether_the_windowed_peak_survives():
    from factcircuits.chapters import causal_tracing as chapter

    # the peaks given one field per peak, as older runs stored them: read as Estimates
    h = chapter.TracingHeadline.from_json(dict(
        window=6, window_share=0.2, window_rule=CT.window_rule("auto", 30),
        mlp_subject_last_peak_layer=13, mlp_subject_last_peak_layer_range=[7, 13],
        mlp_subject_last_peak_aie=0.012, attn_subject_last_peak_layer=23,
        attn_subject_last_peak_aie=0.002, mlp_subject_last_layer0_aie=0.17,
        windowed_mlp_subject_last_peak_layer=3, mlp_subject_last_windowed_peak_survives=False,
        attn_last_peak_layer=23, attn_last_peak_layer_range=[22, 23], attn_last_peak_aie=0.13,
        windowed_attn_last_peak_layer=22, attn_last_windowed_peak_survives=True))
    assert h.peak("attn", "last").layer_range == (22, 23) and h.survives("mlp", "subject_last") \
        is False
    text = chapter.peaks_markdown(h)
    assert "MLP restoration (layers ≥ 1) peaks at **layer 13" in text
    assert "layer-0 MLP alone at the last subject token recovers 0.170" in text
    assert ("centred on layer 3, outside the layers 7–13 holding the window-1 peak in 95% of "
            "resamples: it does not survive window 1") in text
    assert "centred on layer 22, inside the layers 22–23" in text
    assert "it survives window 1" in text
    # no claims recorded here: said so, and no verdict is given in the chapter's text
    assert "than attention at the last subject token*: not computed" in text
    assert "supported" not in text
