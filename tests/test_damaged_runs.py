"""The write-up survives a damaged run: a run whose files cannot be read is listed with what is
wrong and left out, the others render; headline values are never NaN or null in JSON; `runs
--json` prints strict JSON."""

from __future__ import annotations

import json
import math
import shutil

import pytest
from test_findings import make_run

from factcircuits.chapters import causal_tracing
from factcircuits.cli import main
from factcircuits.report import render
from factcircuits.report.evidence import scan_evidence
from factcircuits.results.store import Results

DAMAGE = {
    "a_null_headline": lambda f: _headline(f, "01_task_check", accuracy=None),
    "an_empty_notebook": lambda f: (f / "01_task_check.ipynb").write_bytes(b""),
    "a_broken_headline": lambda f: _headline(f, "02_logit_lens", replace="{oops"),
    "an_empty_run_json": lambda f: (f / "run.json").write_bytes(b""),
}
WHY = {
    "a_null_headline": "headline value(s) not computed: 01_task_check.accuracy",
    "an_empty_notebook": "01_task_check.ipynb is empty (0 bytes)",
    "a_broken_headline": "run.json: a headline is not a JSON object",
    "an_empty_run_json": "run.json unreadable",
}


def _refuse(constant):
    raise ValueError(f"not strict JSON: {constant}")


def _headline(folder, notebook, replace=None, **values):
    """Change a headline where the run keeps it: in run.json."""
    path = folder / "run.json"
    record = json.loads(path.read_text())
    record["headline"][notebook] = (replace if replace is not None
                                    else record["headline"][notebook] | values)
    path.write_text(json.dumps(record))


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "good__run__1")
    # a number the findings only print is said to be not computed; the run still renders
    marker = {"not_computed": "the computation gave NaN"}
    _headline(make_run(root, "good__nan_dla__1"), "03_attribution",
              replace={"top_head": "L7H2", "top_head_dla": marker,
                       "top_head_dla_ci": [marker, 1.0]})
    for name, damage in DAMAGE.items():
        damage(make_run(root, f"bad__{name}__1"))
    return root


def test_damaged_runs_are_listed_with_the_reason_and_left_out(runs):
    good, damaged = scan_evidence(runs)
    assert [ev.run_id for ev in good] == ["good__nan_dla__1", "good__run__1"]
    from factcircuits.report.findings import run_markdown

    assert "**L7H2** (DLA not computed)" in run_markdown(good[0])
    reasons = dict(damaged)
    for name, why in WHY.items():
        assert why in reasons[f"bad__{name}__1"], (name, reasons[f"bad__{name}__1"])


def test_the_preview_renders_the_others_and_says_which_were_left_out(runs, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    page, *_ = render.render(to="html", root=tmp_path, runs_root=runs)
    text = page.read_text()
    assert "Run 1: toy-model on toy-facts" in text and text.count("<h1>Run ") == 2
    assert "4 run(s) left out</strong> because their files cannot be read" in text
    for name in DAMAGE:
        assert f"bad__{name}__1" in text


def test_headline_nan_is_written_as_not_computed_never_null(tmp_path):
    method = causal_tracing.METHOD
    path = Results(tmp_path, method).headline(method.headline(
        mlp_subject_last_peak_aie=float("nan"), noise_std=math.inf, n_prompts=3,
        mlp_subject_last_peak_aie_ci=[1.0, float("nan")]))
    text = path.read_text()
    assert "null" not in text
    data = json.loads(text, parse_constant=_refuse)
    assert data["n_prompts"] == 3
    assert data["mlp_subject_last_peak_aie"] == {
        "not_computed": "the computation gave NaN (e.g. no prompt qualified for it)"}
    assert "infinite" in data["noise_std"]["not_computed"]
    assert data["mlp_subject_last_peak_aie_ci"][1]["not_computed"]
    back = method.headline.from_json(data)  # read back: None, and named as not computed
    assert back.mlp_subject_last_peak_aie is None and back.n_prompts == 3
    assert back.not_computed == {"mlp_subject_last_peak_aie", "noise_std"}


def test_runs_json_is_strict_and_lists_damaged_runs(runs, capsys):
    record = json.loads((runs / "good__run__1" / "run.json").read_text())
    record["headline"]["03_attribution"]["top_head_dla"] = float("nan")  # as older runs did
    (runs / "good__run__1" / "run.json").write_text(json.dumps(record))
    assert main(["runs", "--runs-dir", str(runs), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out, parse_constant=_refuse)
    by_id = {r["run_id"]: r for r in listed}
    assert by_id["good__run__1"]["headline"]["03_attribution"]["top_head_dla"] == {
        "not_computed": "the computation gave NaN (e.g. no prompt qualified for it)"}
    for name in DAMAGE:  # as the write-up sees them, not only an unreadable run.json
        assert by_id[f"bad__{name}__1"]["status"] == "damaged", name
    assert by_id["good__run__1"]["status"] == "ok"
    assert main(["runs", "--runs-dir", str(runs)]) == 0  # the table prints too
    assert "top_head_dla=not computed" in capsys.readouterr().out


def _wrong_type(kind):
    """A JSON value that is not of `kind`."""
    return 7 if kind is str or (isinstance(kind, tuple) and str in kind) else "a string"


def test_every_record_field_of_the_wrong_type_is_damage_never_a_traceback(tmp_path, capsys,
                                                                         monkeypatch):
    from factcircuits.run.folders import RECORD_TYPES

    root = tmp_path / "runs"
    make_run(root, "good__run__1")
    for key, kind in RECORD_TYPES.items():
        folder = make_run(root, f"bad__{key}__1")
        record = json.loads((folder / "run.json").read_text())
        record[key] = _wrong_type(kind)
        (folder / "run.json").write_text(json.dumps(record))
    folder = make_run(root, "bad__naive_time__1")
    record = json.loads((folder / "run.json").read_text())
    record["finished"] = "2026-01-02T03:04:05"  # no time zone: age cannot be computed
    (folder / "run.json").write_text(json.dumps(record))
    (root / "bad__no_record__1").mkdir()  # a folder without run.json is listed, not dropped

    good, damaged = scan_evidence(root)
    reasons = dict(damaged)
    assert [ev.run_id for ev in good] == ["good__run__1"]
    for key in RECORD_TYPES:
        assert f"'{key}' is a" in reasons[f"bad__{key}__1"], (key, reasons)
    assert "has no time zone" in reasons["bad__naive_time__1"]
    assert "no run.json" in reasons["bad__no_record__1"]
    # the listing and the preview say so in one line each, the good run beside them
    assert main(["runs", "--runs-dir", str(root)]) == 0
    shown = capsys.readouterr().out
    assert "good__run__1" in shown and shown.count("damaged:") == len(RECORD_TYPES) + 2
    monkeypatch.setattr(shutil, "which", lambda name: None)
    page, *_ = render.render(to="html", root=tmp_path, runs_root=root)
    assert f"{len(RECORD_TYPES) + 2} run(s) left out" in page.read_text()
