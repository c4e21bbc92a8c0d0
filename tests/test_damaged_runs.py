"""The write-up survives a damaged run: a run whose files cannot be read is listed with what is
wrong and left out, the others render; headline values are never NaN or null in JSON; `runs
--json` prints strict JSON."""

from __future__ import annotations

import json
import math
import shutil

import pytest
from test_findings import make_run

from factcircuits.cli import main
from factcircuits.report import render
from factcircuits.report.evidence import scan_evidence
from factcircuits.run import folders

DAMAGE = {
    "a_null_headline": lambda f: _headline(f, "01_task_check", accuracy=None),
    "an_empty_notebook": lambda f: (f / "01_task_check.ipynb").write_bytes(b""),
    "a_broken_headline": lambda f: (f / "headline" / "02_logit_lens.json").write_text("{oops"),
    "an_empty_run_json": lambda f: (f / "run.json").write_bytes(b""),
}
WHY = {
    "a_null_headline": "headline value(s) not computed: 01_task_check.accuracy",
    "an_empty_notebook": "01_task_check.ipynb is empty (0 bytes)",
    "a_broken_headline": "headline/02_logit_lens.json is unreadable (Expecting property name",
    "an_empty_run_json": "run.json unreadable",
}


def _refuse(constant):
    raise ValueError(f"not strict JSON: {constant}")


def _headline(folder, notebook, **values):
    path = folder / "headline" / f"{notebook}.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | values))


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "good__run__1")
    # a number the findings only print is said to be not computed; the run still renders
    (make_run(root, "good__nan_dla__1") / "headline" / "03_attribution.json").write_text(
        '{"top_head": "L7H2", "top_head_dla": NaN, "top_head_dla_ci": [NaN, 1.0]}')
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
    path = folders.save_headline(tmp_path, "05_causal_tracing",
                                 {"peak": float("nan"), "slope": math.inf, "n": 3,
                                  "nested": [1.0, float("nan")]})
    text = path.read_text()
    assert "null" not in text
    data = json.loads(text, parse_constant=_refuse)
    assert data["n"] == 3
    assert data["peak"] == {"not_computed": "the computation gave NaN (e.g. no prompt "
                                            "qualified for it)"}
    assert "infinite" in data["slope"]["not_computed"]
    assert data["nested"][1]["not_computed"]


def test_runs_json_is_strict_and_lists_damaged_runs(runs, capsys):
    record = json.loads((runs / "good__run__1" / "run.json").read_text())
    record["headline"] = {"01_task_check": {"accuracy": float("nan"), "n_prompts": 20}}
    (runs / "good__run__1" / "run.json").write_text(json.dumps(record))  # as older runs did
    assert main(["runs", "--runs-dir", str(runs), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out, parse_constant=_refuse)
    by_id = {r["run_id"]: r for r in listed}
    assert by_id["good__run__1"]["headline"]["01_task_check"]["accuracy"] == {
        "not_computed": "the computation gave NaN (e.g. no prompt qualified for it)"}
    for name in DAMAGE:  # as the write-up sees them, not only an unreadable run.json
        assert by_id[f"bad__{name}__1"]["status"] == "damaged", name
    assert by_id["good__run__1"]["status"] == "ok"
    assert main(["runs", "--runs-dir", str(runs)]) == 0  # the table prints too
    assert "accuracy=not computed" in capsys.readouterr().out
