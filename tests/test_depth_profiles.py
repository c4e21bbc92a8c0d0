"""Per-layer profiles of runs on relative depth (the comparison page's overlay)."""

from __future__ import annotations

import pandas as pd

from factcircuits.report import compare


def fake_run(tmp_path, run_id, n_layers, curve, dla):
    folder = tmp_path / run_id
    (folder / "results" / "02_logit_lens").mkdir(parents=True)
    (folder / "results" / "03_attribution").mkdir(parents=True)
    pd.DataFrame({"step": range(len(curve)), "value": curve}).to_csv(
        folder / "results" / "02_logit_lens" / "logit_lens_mean.csv", index=False)
    rows = [{"prompt": 0, "layer": ly, "component": c, "dla": v}
            for ly, (a, m) in enumerate(dla) for c, v in (("attn", a), ("mlp", m))]
    pd.DataFrame(rows).to_csv(folder / "results" / "03_attribution" / "layer_dla.csv",
                              index=False)
    return {"run_id": run_id, "run_dir": str(folder), "model": {"n_layers": n_layers,
            "resolved_name": f"m{n_layers}"}, "parameters": {"dataset": "paris-cloze"}}


def test_profiles_line_up_models_of_different_depth(tmp_path, monkeypatch):
    runs = [fake_run(tmp_path, "a", 2, [0.0, 1.0, 2.0, 3.0, 4.0], [(1.0, 1.0), (0.0, 2.0)]),
            fake_run(tmp_path, "b", 3, [0, 1, 1, 1, 1, 1, 2.0], [(0, 0), (0, 0), (1.0, 3.0)])]
    monkeypatch.setattr("factcircuits.run.folders.list_runs", lambda root=None: runs)
    table = pd.DataFrame({"run_id": ["a", "b"]})
    profiles = compare.depth_profiles(table)
    lens = profiles[profiles.profile.str.startswith("logit lens")]
    # both curves start at depth 0 and end at depth 1 on 1.0 (their final value)
    for _, part in lens.groupby("run_id"):
        assert part["depth"].iloc[0] == 0 and part["depth"].iloc[-1] == 1
        assert part["value"].iloc[-1] == 1
    mlp = profiles[profiles.profile.str.startswith("mlp")].set_index(["run_id", "depth"])
    assert mlp.loc[("a", 1.0), "value"] == 2 / 4  # |1|+|1|+|0|+|2| = 4
    assert mlp.loc[("b", 1.0), "value"] == 3 / 4
    figure = compare.profile_figure(profiles)
    assert len(figure.data) >= 2
