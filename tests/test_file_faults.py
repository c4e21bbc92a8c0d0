"""Faults say what happened: a full disk, a read-only file system or a permission is named in
one line; no output is left 0 bytes or half written (run files, the preview, archives)."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest

from factcircuits.cli import main
from factcircuits.files import atomic_write, describe_fault
from factcircuits.report import render

HERE = Path(__file__).parent
NOTEBOOKS = HERE / "fixtures" / "notebooks"
DATASET = str(HERE / "fixtures" / "datasets" / "fixture.csv")


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = atomic_write(tmp_path / "run.json", '{"old": true}\n')
    monkeypatch.setattr(os, "fsync", _disk_full)
    with pytest.raises(OSError) as caught:
        atomic_write(target, '{"new": true, "much": "' + "x" * 10_000 + '"}\n')
    assert caught.value.filename == str(target)
    assert describe_fault(caught.value) == (f"no space left on device writing {target}; free "
                                            "some space or write elsewhere")
    assert target.read_text() == '{"old": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def test_a_full_disk_during_a_run_is_named_and_leaves_no_empty_file(tmp_path, monkeypatch,
                                                                    capsys):
    import papermill

    def fill_the_disk(node, out, **kwargs):
        Path(out).write_bytes(b"")  # papermill had opened the notebook when the disk filled
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), out)

    monkeypatch.setattr(papermill, "execute_notebook", fill_the_disk)
    runs = tmp_path / "runs"
    code = main(["run", "--model", "tiny", "--dataset", DATASET, "--notebooks-dir",
                 str(NOTEBOOKS), "--runs-dir", str(runs), "--notebooks", "01", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "error: notebook 01_first: no space left on device writing" in err[0]
    assert "NotJSONError" not in err[0]
    (failed,) = (runs / "_failed").iterdir()
    files = [p for p in failed.rglob("*") if p.is_file()]
    assert files and all(p.stat().st_size > 0 for p in files)
    record = json.loads((failed / "run.json").read_text())
    assert record["status"] == "failed" and "no space left on device" in record["reason"]
    assert [p for p in runs.iterdir() if not p.name.startswith("_")] == []


def test_a_failed_preview_write_keeps_the_last_good_preview(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    (tmp_path / "runs").mkdir()
    page, archived, *_ = render.render(to="html", root=tmp_path, runs_root=tmp_path / "runs")
    good = page.read_bytes()
    monkeypatch.setattr(os, "fsync", _disk_full)
    with pytest.raises(OSError, match="No space left"):
        render.render(to="html", root=tmp_path, runs_root=tmp_path / "runs")
    assert page.read_bytes() == good and len(good) > 1000
    leftovers = [p.name for p in (tmp_path / "report").rglob(".*.tmp")]
    assert leftovers == []
    assert [p.name for p in archived.parent.iterdir()] == [archived.name]


@pytest.mark.parametrize("code, said", [
    (errno.ENOSPC, "no space left on device writing /out/x.html; free some space or write "
                   "elsewhere"),
    (errno.EROFS, "read-only file system writing /out/x.html; write to a writable folder"),
    (errno.EACCES, "permission denied writing /out/x.html; write to a folder you own, or fix "
                   "its permissions"),
])
def test_file_system_faults_are_one_line(monkeypatch, capsys, code, said):
    def fail(**kwargs):
        raise OSError(code, os.strerror(code), "/out/x.html")

    monkeypatch.setattr(render, "render", fail)
    assert main(["render", "--to", "html"]) == 1
    assert capsys.readouterr().err == f"factcircuits render: error: {said}\n"


def test_pipeline_failure_reason_names_the_fault_behind_an_exception():
    from factcircuits.run.failures import failure_reason
    from factcircuits.run.notebooks import Notebook

    try:
        try:
            raise OSError(errno.EROFS, "Read-only file system", "/runs/x/01.ipynb")
        except OSError as exc:
            raise RuntimeError("could not save the notebook") from exc
    except RuntimeError as wrapped:
        reason = failure_reason(Notebook(Path("01_first.py"), {}), wrapped)
    assert reason == ("notebook 01_first: read-only file system writing /runs/x/01.ipynb; "
                      "write to a writable folder")
