"""ROME causal tracing on the fast patching engine."""

from __future__ import annotations

import pytest
import torch

from factcircuits.data.datasets import load_dataset
from factcircuits.methods import causal_tracing as CT
from factcircuits.methods import patching as P
from factcircuits.methods.evaluate import prepare

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
