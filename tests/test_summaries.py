"""Each chapter's summarise (and activation patching's and ablation's stages): their selections
and headline numbers recomputed independently from the method tables (plain loops over the tidy
rows)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from factcircuits.chapters import ablation_knockout as AK
from factcircuits.chapters import activation_patching as AP
from factcircuits.chapters import attention_patterns as AT
from factcircuits.chapters import attribution as AD
from factcircuits.chapters import causal_tracing as CT
from factcircuits.data.datasets import load_dataset
from factcircuits.methods.evaluate import prepare
from factcircuits.results.summary import Options
from factcircuits.run.session import Session

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cloze(tiny_lm):
    return prepare(tiny_lm, load_dataset("paris-cloze")).subset([0, 2, 6, 11])


def _means(rows, keys, value="dla"):
    sums: dict = {}
    for row in rows.itertuples():
        k = tuple(getattr(row, key) for key in keys)
        sums.setdefault(k, []).append(getattr(row, value))
    return {k: sum(v) / len(v) for k, v in sums.items()}


def test_attribution_top_layer_mlp_head_and_neuron_share_match_the_tables(tiny_lm, cloze):
    s = AD.summarise(tiny_lm, cloze, options=Options(AD.METHOD, top_components=3, batch_size=3))
    layers = _means(s.attribution.layers[s.attribution.layers.component != "embed"],
                    ["component", "layer"])
    (comp, layer), dla = max(layers.items(), key=lambda kv: abs(kv[1]))
    assert s.top_layer == AD.LayerDLA(comp, layer, pytest.approx(dla))
    assert s.headline.top_layer_component == f"{comp} L{layer}"
    mlp = {ly: v for (c, ly), v in layers.items() if c == "mlp"}
    assert s.key_mlp_layer == max(mlp, key=lambda ly: abs(mlp[ly]))
    heads = _means(s.attribution.heads[s.attribution.heads["head"] >= 0], ["layer", "head"])
    best = max(heads, key=lambda k: abs(heads[k]))
    assert s.headline.top_head == f"L{best[0]}H{best[1]}"
    assert s.strongest_head == AD.HeadDLA(*best, pytest.approx(heads[best]))
    assert s.neuron_share == pytest.approx(s.top_neurons["dla"].sum() / mlp[s.key_mlp_layer])
    errors = s.sum_check["error"].abs()
    assert s.headline.dla_sum_check_passes == bool(errors.max() < 1e-3)


def test_handover_layer_from_a_hand_made_table():
    rows = [("resid_pre", 0, "subject", 0.9), ("resid_pre", 0, "last", 0.1),
            ("resid_pre", 1, "subject", 0.6), ("resid_pre", 1, "last", 0.3),
            ("resid_pre", 2, "subject", 0.2), ("resid_pre", 2, "last", 0.7),
            ("attn_out", 0, "subject", 0.0), ("attn_out", 0, "last", 1.0)]
    roles = pd.DataFrame(rows, columns=["component", "layer", "role", "normalized"])
    assert AP.handover_layer(roles) == 2
    assert AP.handover_layer(roles[roles["layer"] < 2]) is None
    assert AP.handover_layer(roles[roles["role"] == "subject"]) is None


def test_patch_maps_peaks_and_top_head(tiny_lm, tmp_path):
    every = prepare(tiny_lm, load_dataset("paris-cloze"))
    pairs, dropped = Session(tiny_lm, None, every, tmp_path, 3).patchable(every)
    pairs = pairs.subset([0, 1, 2])
    s = AP.patch_maps(tiny_lm, pairs, n_dropped=len(dropped), progress=False)
    assert s.headline["n_pairs"] == 3 and s.headline["n_dropped_unequal"] == len(dropped)
    grid = s.heads.normalized_mean()
    flat = {(ly, h): float(grid[ly, h]) for ly in range(grid.shape[0])
            for h in range(grid.shape[1])}
    best = max(flat, key=flat.get)
    assert (s.headline["top_head_layer"], s.headline["top_head"]) == best
    classes = s.classes[s.classes["component"] == "mlp_out"]
    top = classes.loc[classes["normalized"].idxmax()]
    assert s.headline["mlp_out_peak_class"] == top["token_class"]
    assert s.headline["mlp_out_peak_layer"] == top["layer"]
    assert list(s.class_grid("mlp_out").columns) == [
        c for c in ("prefix", "subject_first", "subject_middle", "subject_last",
                    "first_subsequent", "further", "last") if c in set(classes["token_class"])]
    empty = AP.patch_maps(tiny_lm, pairs.subset(torch.zeros(3, dtype=torch.bool)),
                               n_dropped=4)
    assert empty.results == {} and empty.headline["n_pairs"] == 0


def test_tracing_clamps_the_window_and_reports_every_peak(tiny_lm, cloze):
    s = CT.summarise(tiny_lm, cloze, options=Options(CT.METHOD, noise_samples=1, trace_window=99))
    n_layers = tiny_lm.model.cfg.n_layers
    assert s.window == n_layers and s.traces["windowed_mlp"].window == n_layers
    assert s.traces["hidden"].window == 1 and s.traces["mlp"].window == 1
    for kind, cls in set(zip(s.aie["kind"], s.aie["token_class"])):
        part = s.aie[(s.aie["kind"] == kind) & (s.aie["token_class"] == cls)]
        part = part[part["layer"] >= (1 if kind.endswith("mlp") else 0)]  # MLP 0: on its own
        best = part.loc[part["aie"].idxmax()]
        estimate = s.headline.peak(kind, cls)  # the headline's Estimate of that peak
        assert (estimate.layer, estimate.value) == (best["layer"], pytest.approx(best["aie"]))
        assert s.peak(kind, cls) == {"layer": best["layer"], "peak_aie": best["aie"]}
    assert s.peak("mlp", "no_such_class") is None


def test_biggest_resample_ablation_and_deepest_subject_knockout(tiny_lm, cloze):
    abl = AK.ablate_top_components(tiny_lm, cloze, n_components=2, batch_size=3)
    single = abl.table[~abl.table["component"].str.startswith("all")]
    # the headline ablation is resample: the largest mean drop over the prompts with a donor
    resampled = single[(single["mode"] == "resample")].dropna(subset=["drop"])
    assert len(resampled)
    drops = _means(resampled, ["component", "mode"], "drop")
    (comp, mode), drop = max(drops.items(), key=lambda kv: kv[1])
    assert abl.biggest == {"component": comp, "mode": "resample", "drop": pytest.approx(drop)}
    assert set(abl.joint["component"]) == {"all 2 together"}
    ko = AK.knock_out(tiny_lm, cloze, batch_size=3)
    assert ko.window == max(1, tiny_lm.model.cfg.n_layers // 6)
    changes = _means(ko.table[ko.table["role"] == "subject"], ["centre"], "relative_p_change")
    assert ko.headline["knockout_subject_peak_centre"] == min(changes, key=changes.get)[0]


def test_attention_top_subject_head_and_its_attention_to_the_subject(tiny_lm, cloze):
    s = AT.summarise(tiny_lm, cloze, options=Options(AT.METHOD, n_heads=3, example=99,
                                                      batch_size=3))
    assert s.example == len(cloze.prompts) - 1  # clamped to the prompts
    on_subject = {head: float(p[-1, s.positions.subject].sum())
                  for head, p in s.patterns.items()}
    best = max(on_subject, key=on_subject.get)
    assert s.headline.top_subject_head == f"L{best[0]}H{best[1]}"
    assert s.headline.top_subject_head_attention == pytest.approx(on_subject[best], abs=1e-6)
    assert s.headline.top_dla_head_subject_attention == pytest.approx(
        on_subject[s.heads[0]], abs=1e-6)
