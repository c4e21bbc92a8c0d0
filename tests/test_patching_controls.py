"""Notebook 04's controls: noising beside denoising read at each located peak (necessary,
sufficient, both), and the peaks' movement across counterfactual draws, from the summary to
the findings' sentences."""

from __future__ import annotations

import json

import pytest

from factcircuits.chapters import activation_patching as AP
from factcircuits.data.datasets import load_dataset
from factcircuits.methods import necessity as NS
from factcircuits.methods import patching as P
from factcircuits.methods.evaluate import prepare
from factcircuits.results.summary import Options
from factcircuits.run.session import Session

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("restored,lost,expected", [
    ([0.6, 0.9], [0.55, 0.8], "necessary and sufficient"),
    ([0.6, 0.9], [0.2, 0.8], "sufficient"),
    ([0.1, 0.9], [0.51, 0.6], "necessary"),
    ([0.5, 0.9], [0.3, 0.4], "neither resolved"),  # an interval touching the bar is not above
    (None, [float("nan"), float("nan")], "neither resolved"),
])
def test_verdict_reads_both_intervals_against_the_bar(restored, lost, expected):
    assert NS.verdict(restored, lost) == expected


def test_chapter_reads_every_peak_both_ways_and_across_draws(tiny_lm, tmp_path):
    every = prepare(tiny_lm, load_dataset("paris-cloze"))
    pairs, _ = Session(tiny_lm, None, every, tmp_path, 3).patchable(every)
    found = AP.summarise(tiny_lm, every, options=Options(AP.METHOD, n_counterfactuals=3, seed=0))
    s, h = found.patching, found.headline
    assert found.pairs.prompts == pairs.prompts
    # noising's own peak is the largest share lost over the class-averaged map
    lost = P.by_class(P.tidy(P.patch(tiny_lm, pairs, "resid_pre", direction="noising",
                                     progress=False).as_effect(), s.positions), "token_class")
    top = lost.loc[lost["normalized"].idxmax()]
    assert h.noising_resid_pre_peak_layer == top["layer"]
    assert h.noising_resid_pre_peak == pytest.approx(top["normalized"], abs=1e-6)
    # each denoising peak read both ways: the share restored is the headline's peak value,
    # the share lost is the noising map at the same cell
    states = s.states.set_index("state")
    row = states.loc["resid_pre"]
    assert row["layer"] == h.resid_pre_peak_layer
    assert row["restored"] == pytest.approx(h.resid_pre_peak, abs=1e-6)
    cell = lost[(lost["layer"] == row["layer"]) & (lost["token_class"] == row["token_class"])]
    assert row["lost"] == pytest.approx(float(cell["normalized"].iloc[0]), abs=1e-6)
    assert h.resid_pre_verdict == NS.verdict([row["restored_low"], row["restored_high"]],
                                             [row["lost_low"], row["lost_high"]])
    assert h.mlp_out_subject_last_verdict in NS.VERDICTS.values()
    # the spread: draw 0 is the dataset's pairs (read, not patched again), others drawn
    assert h.n_counterfactual_draws == len(h.counterfactual_draw_pairs) >= 2
    assert h.counterfactual_draw_pairs[0] == len(pairs.prompts)
    layers = h.mlp_out_subject_last_peak_layers_by_draw
    assert layers[0] == h.mlp_out_subject_last_peak_layer
    assert h.mlp_out_subject_last_peak_shift == max(layers) - min(layers)
    # the findings say it, through a run read back from its headline
    from factcircuits.results.run import Run

    folder = tmp_path / "m__d__1"
    folder.mkdir()
    record = {"run_id": "m__d__1", "status": "ok",
              "parameters": {"model": "tiny", "dataset": "paris-cloze", "task": "cloze",
                             "seed": 0},
              "notebooks": [], "model": {"resolved_name": "tiny", "n_layers": 3},
              "headline": {AP.METHOD.notebook: h.to_json()}}
    (folder / "run.json").write_text(json.dumps(record))
    run = Run.load(folder)
    [necessity] = AP.necessity_findings(run)
    assert f"**{h.resid_pre_verdict}**" in necessity.text
    assert "corruption loses" in necessity.text
    [sensitivity] = AP.sensitivity_findings(run)
    shift = h.mlp_out_subject_last_peak_shift
    assert f"moves by at most **{shift} layer" in sensitivity.text
    # the noising estimate joins the others of the MLP peak at the last subject token
    hows = [e.by for e in h.estimates()]
    assert "activation patching (noising)" in hows
