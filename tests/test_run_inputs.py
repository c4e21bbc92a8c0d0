"""Inputs a run accepts and must not get wrong: progress bars off means off, user paths recorded
relative, multi-token answers said out loud, the task taken from a yes/no dataset, archives
never overwritten, the model cache readable by a group. `tiny` spec, fixture notebooks."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from factcircuits.cli import main
from factcircuits.run import pipeline

HERE = Path(__file__).parent
NOTEBOOKS = HERE / "fixtures" / "notebooks"
DATASET = str(HERE / "fixtures" / "datasets" / "fixture.csv")


def test_no_progress_silences_the_notebooks_bars_too(tmp_path, capsys):
    args = ["run", "--model", "tiny", "--dataset", DATASET, "--notebooks-dir", str(NOTEBOOKS),
            "--runs-dir", str(tmp_path), "--notebooks", "02", "-p", "bars=true"]
    assert main(args) == 0
    shown = capsys.readouterr().err
    assert "fixture-bar" in shown  # the notebook's bar reaches the terminal…
    assert main([*args, "--no-progress"]) == 0
    quiet = capsys.readouterr().err
    assert "fixture-bar" not in quiet and "%|" not in quiet  # …but not with --no-progress
    assert "fixture-warning: a line that is no progress bar" in quiet  # warnings still do


def test_custom_answer_map_path_is_recorded_relative(tmp_path, monkeypatch):
    home = tmp_path / "userhome"
    (home / "maps").mkdir(parents=True)
    amap = home / "maps" / "mine.json"
    amap.write_text('{"true": ["Yes"], "false": ["No"]}')
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(home)  # the user passes a path relative to where they are
    result = pipeline.run("tiny", DATASET, {"answer_map": "maps/mine.json"},
                          notebooks_dir=NOTEBOOKS, runs_root=tmp_path / "runs", select=["01"],
                          progress=False)
    info = json.loads((result.run_dir / "run.json").read_text())
    assert info["parameters"]["answer_map"] == "~/maps/mine.json"
    assert str(tmp_path) not in json.dumps(info["parameters"])
    assert info["answer_map"]["path"] == "~/maps/mine.json"
    assert len(info["answer_map"]["sha256"]) == 64
    # what the notebook received resolves, from the run folder, to the user's file
    injected = info["notebooks"][0]["parameters"]["answer_map"]
    assert not os.path.isabs(injected)
    assert (result.run_dir / injected).resolve() == amap.resolve()
    assert info["checks"]["longest_prompt_tokens"] > 0


def test_multi_token_cloze_answers_are_said_before_the_run(tmp_path):
    data = tmp_path / "multi.csv"
    data.write_text("prompt,answer,counterfactual\nThe capital of France is, Paris France, Rome\n"
                    "The capital of Italy is, Rome, Paris\n")
    plan = pipeline.plan_run("tiny", str(data), {}, notebooks_dir=NOTEBOOKS,
                             runs_root=tmp_path / "runs")
    (note,) = plan.notes
    assert note.startswith("1 of 2 rows have a multi-token answer or counterfactual (row 1: "
                           "' Paris France' = ' Paris' + ' France')")
    assert "first token" in note and plan.checks["multi_token_answer_rows"] == 1
    assert not (tmp_path / "runs").exists()


def test_a_yes_no_dataset_sets_the_task_when_none_was_given(tmp_path):
    plan = pipeline.plan_run("tiny", "paris-yesno", {}, notebooks_dir=NOTEBOOKS,
                             runs_root=tmp_path)
    assert plan.parameters["task"] == "yesno"
    default = pipeline.plan_run("tiny", "paris-cloze", {}, notebooks_dir=NOTEBOOKS,
                                runs_root=tmp_path)
    assert default.parameters["task"] == "cloze" and default.run_id != plan.run_id


def test_prompt_limit_can_be_raised_up_to_the_models_context(tmp_path, monkeypatch):
    data = tmp_path / "long.csv"
    data.write_text("prompt,answer,counterfactual\n"
                    + "The capital of France is Paris and " * 12 + "the capital of Italy is, Rome,"
                    " Paris\n")
    with pytest.raises(pipeline.UserError, match="over the limit of 64"):
        pipeline.plan_run("tiny", str(data), {}, notebooks_dir=NOTEBOOKS, runs_root=tmp_path,
                          max_prompt_tokens=64)
    plan = pipeline.plan_run("tiny", str(data), {}, notebooks_dir=NOTEBOOKS, runs_root=tmp_path,
                             max_prompt_tokens=1000)
    assert 64 < plan.checks["longest_prompt_tokens"] <= 256
    # the tiny model has 256 positions: a higher limit is capped there, and said
    assert plan.checks["max_prompt_tokens"] == 256 and plan.checks["model_context"] == 256
    assert any("--max-prompt-tokens 1000 is above the model's context (256 positions)" in n
               for n in plan.notes)
    monkeypatch.setenv("FACTCIRCUITS_MAX_PROMPT_TOKENS", "100")
    with pytest.raises(pipeline.UserError, match="over the limit of 100"):
        pipeline.plan_run("tiny", str(data), {}, notebooks_dir=NOTEBOOKS, runs_root=tmp_path)


def test_archive_is_append_only(tmp_path):
    from factcircuits.report.render import archive_copy

    archive = tmp_path / "archive"
    first, second = tmp_path / "a.html", tmp_path / "b.html"
    first.write_text("write-up with two runs")
    second.write_text("write-up of an empty runs folder")
    kept = archive_copy(first, archive, "factcircuits-preview-0.1.0+abc1234")
    again = archive_copy(second, archive, "factcircuits-preview-0.1.0+abc1234")
    assert kept.read_text() == "write-up with two runs"  # not overwritten
    assert again.name == "factcircuits-preview-0.1.0+abc1234-2.html"
    assert archive_copy(first, archive, "factcircuits-preview-0.1.0+abc1234") == kept
    assert len(list(archive.iterdir())) == 2


@pytest.mark.parametrize("umask, mode", [(0o022, 0o755), (0o002, 0o775)])
def test_model_cache_folder_gets_shared_permissions(tmp_path, umask, mode):
    from factcircuits.models.embedded import publish_folder

    target = tmp_path / "cache" / "model"
    old = os.umask(umask)
    try:
        publish_folder(target, lambda folder: (folder / "config.json").write_text("{}"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == mode  # mkdtemp alone makes it 0700
    assert (target / "config.json").read_text() == "{}"
    assert [p.name for p in target.parent.iterdir()] == ["model"]


def test_a_runs_identity_is_its_datasets_content_not_its_path(tmp_path):
    """Two files named facts.csv in different folders are different runs; the same content
    elsewhere is the same run; one edited cell makes a new run (and so a new version)."""
    text = Path(DATASET).read_text()
    first, second, copy = (tmp_path / d / "facts.csv" for d in ("a", "b", "c"))
    for path in (first, second, copy):
        path.parent.mkdir()
    first.write_text(text)
    copy.write_text(text)
    header, row, *rest = text.splitlines(keepends=True)
    edited = row.replace(" Paris", " Lyon", 1)  # one cell: the answer
    assert edited != row
    second.write_text("".join([header, edited, *rest]))

    def run_id(path):
        return pipeline.plan_run("tiny", str(path), {}, notebooks_dir=NOTEBOOKS,
                                 runs_root=tmp_path / "runs").run_id

    assert run_id(first) == run_id(copy)
    assert run_id(first) != run_id(second)
    assert run_id(first).startswith("tiny__facts__")
