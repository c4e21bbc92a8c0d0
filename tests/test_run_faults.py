"""Faults during a run: signals, a killed process, two identical runs at once, a damaged run
folder. After each, the previous runs are byte-identical and, once the next run has started,
nothing is left in staging. Runs use the `tiny` spec and the first fixture notebook; the
notebook sleeps for $FIXTURE_SLEEP_S seconds so that a fault can hit it mid-run."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from factcircuits.cli import main
from factcircuits.run import in_progress, pipeline

HERE = Path(__file__).parent
NOTEBOOKS = HERE / "fixtures" / "notebooks"
DATASET = str(HERE / "fixtures" / "datasets" / "fixture.csv")


def tree(folder: Path) -> dict[str, bytes | None]:
    return {p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


def runs_only(runs: Path) -> dict[str, bytes | None]:
    """The accepted runs' files (what a fault must not change)."""
    return {k: v for k, v in tree(runs).items() if not k.startswith("_")}


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """One good run, made once; tests copy it (a kernel start is the slow part)."""
    runs = tmp_path_factory.mktemp("template")
    return pipeline.run("tiny", DATASET, {}, notebooks_dir=NOTEBOOKS, runs_root=runs,
                        select=["01"], progress=False)


@pytest.fixture
def good_run(template):
    """good_run(runs) -> the run folder of a good run (the run id `start_run` makes)."""

    def copy(runs: Path):
        runs.mkdir(parents=True, exist_ok=True)
        shutil.copytree(template.run_dir, runs / template.run_id)
        return pipeline.RunResult(template.run_id, runs / template.run_id, "ok")

    return copy


def start_run(runs: Path, sleep_s: float, *extra: str, release: Path | None = None
              ) -> subprocess.Popen:
    """`factcircuits run` (the same run id as `good_run`) in its own session, so that the test
    can end it and its kernel by process group. Its notebook waits `sleep_s`, or until the file
    `release` exists."""
    argv = [sys.executable, "-m", "factcircuits.cli", "run", "--model", "tiny", "--dataset",
            DATASET, "--notebooks-dir", str(NOTEBOOKS), "--runs-dir", str(runs), "--notebooks",
            "01", "--no-progress", *extra]
    env = os.environ | {"FIXTURE_SLEEP_S": str(sleep_s),
                        "PYTHONPATH": os.pathsep.join(sys.path)}
    if release is not None:
        env["FIXTURE_RELEASE"] = str(release)
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)


def wait_for(condition, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def executing(runs: Path) -> bool:
    """The notebook is in its sleeping cell: papermill has saved the cell before it."""
    for nb in runs.glob("_staging-*/01_first.ipynb"):
        try:
            cells = json.loads(nb.read_text())["cells"]
        except (OSError, ValueError):
            continue
        if any(c.get("metadata", {}).get("papermill", {}).get("status") == "running"
               for c in cells):
            return True
    return False


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def reap():
    """Process groups the test started; whatever is left of them is killed afterwards."""
    groups: list[int] = []
    yield groups
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize("sig, reason", [(signal.SIGTERM, "terminated by SIGTERM"),
                                         (signal.SIGINT, "interrupted (Ctrl-C, SIGINT)")])
def test_signal_moves_staging_to_failed_with_the_reason(tmp_path, reap, sig, reason, good_run):
    runs = tmp_path / "runs"
    good = good_run(runs)
    before = runs_only(runs)
    proc = start_run(runs, 120)
    reap.append(proc.pid)
    wait_for(lambda: executing(runs))
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    lines = err.strip().splitlines()
    assert f"factcircuits run: {reason}" in lines  # (the dying kernel may print its own noise)
    assert "DeadKernelError" not in err  # no traceback of ours after the line
    assert runs_only(runs) == before  # the last good run of the same id, byte-identical
    assert not list(runs.glob("_staging-*")) and not (runs / "_locks").exists()
    (failed,) = (runs / "_failed").iterdir()
    assert failed.name.startswith(good.run_id)
    info = json.loads((failed / "run.json").read_text())
    assert info["status"] == "interrupted" and info["reason"] == reason
    assert [nb["status"] for nb in info["notebooks"]] == ["interrupted"]
    wait_for(lambda: group_gone(proc.pid), timeout=30)  # the kernel went with it


def test_killed_run_is_listed_then_swept_by_the_next_run(tmp_path, reap, capsys, good_run):
    runs = tmp_path / "runs"
    good_run(runs)
    before = runs_only(runs)
    proc = start_run(runs, 120)
    reap.append(proc.pid)
    wait_for(lambda: executing(runs))
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its kernel, as a scheduler's kill does
    proc.communicate(timeout=60)
    (staging,) = runs.glob("_staging-*")
    assert runs_only(runs) == before
    assert main(["runs", "--runs-dir", str(runs)]) == 0
    listed = capsys.readouterr().out
    assert f"{staging.name}" in listed and f"stale: process {proc.pid} on " in listed
    assert "the next run moves it to _failed/" in listed
    # the next run (another run id) sweeps it and says so
    other = pipeline.plan_run("tiny", DATASET, {"seed": 1}, notebooks_dir=NOTEBOOKS,
                              runs_root=runs, select=["01"])
    note = []
    pipeline.execute_run(other, progress=False, stream=_Lines(note))
    assert any(f"moved the stale {staging.name} to " in line for line in note), note
    assert not list(runs.glob("_staging-*"))
    assert runs_only(runs) == before | runs_only(runs)  # the first run still byte-identical
    (failed,) = (runs / "_failed").iterdir()
    info = json.loads((failed / "run.json").read_text())
    assert info["status"] == "abandoned" and f"process {proc.pid}" in info["reason"]


class _Lines:
    def __init__(self, lines: list[str]):
        self.lines = lines

    def write(self, text: str) -> None:
        self.lines += [line for line in text.splitlines() if line.strip()]

    def flush(self) -> None:
        pass


def test_two_identical_runs_at_once_one_runs_the_other_says_so(tmp_path, reap):
    runs = tmp_path / "runs"
    release = tmp_path / "release"  # the winner's notebook waits for it, not a fixed time
    procs = [start_run(runs, 180, release=release), start_run(runs, 180, release=release)]
    reap.extend(p.pid for p in procs)
    wait_for(lambda: any(p.poll() is not None for p in procs), timeout=300)  # the refused one
    release.touch()
    results = [(p, *p.communicate(timeout=300)) for p in procs]
    codes = sorted(p.returncode for p, _, _ in results)
    assert codes == [0, 2], [err for _, _, err in results]
    (loser_err,) = [err for p, _, err in results if p.returncode == 2]
    (winner_out,) = [out for p, out, _ in results if p.returncode == 0]
    (winner_err,) = [err for p, _, err in results if p.returncode == 0]
    # a clean log: no jupyter notice (TCP transport warning, kernel KeyboardInterrupt)
    noise = re.compile(r"warn|error|traceback|keyboardinterrupt|TCP", re.IGNORECASE)
    assert not [w for w in (winner_out + winner_err).splitlines() if noise.search(w)], winner_err
    line = loser_err.strip().splitlines()
    assert len(line) == 1 and "is already in progress by process" in line[0]
    run_dir = Path(winner_out.strip().splitlines()[-1])
    run_dir = run_dir if run_dir.is_absolute() else Path.cwd() / run_dir
    assert json.loads((run_dir / "run.json").read_text())["status"] == "ok"
    assert sorted(p.name for p in runs.iterdir()) == [run_dir.name]  # no staging, lock, failed


def test_staging_names_never_collide_and_name_their_owner(tmp_path):
    made = [in_progress.make_staging(tmp_path, "same__run__id") for _ in range(20)]  # same second
    assert len({m.name for m in made}) == 20
    owner = in_progress.read_owner(made[0])
    assert owner["pid"] == os.getpid() and owner["run_id"] == "same__run__id"
    # all alive (this process); none swept
    assert in_progress.sweep_stale_staging(tmp_path) == []


def test_interrupted_swap_is_undone_by_the_next_run(tmp_path, good_run):
    runs = tmp_path / "runs"
    good = good_run(runs)
    before = tree(good.run_dir)
    # a kill between the two renames of swap_into_place: the old run set aside, no new one
    aside = runs / f"_old-{good.run_id}-{time.time_ns()}"
    good.run_dir.rename(aside)
    in_progress.sweep_stale_staging(runs)
    assert tree(good.run_dir) == before and not aside.exists()


def test_damaged_run_json_is_listed_and_skipped_not_fatal(tmp_path, capsys, monkeypatch,
                                                        good_run):
    runs = tmp_path / "runs"
    good = good_run(runs)
    damaged = runs / "tiny__fixture__damaged0"
    shutil.copytree(good.run_dir, damaged)
    text = (damaged / "run.json").read_text()
    (damaged / "run.json").write_text(text[: len(text) // 2])  # truncated mid-write
    assert main(["runs", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert good.run_id in out
    assert f"{damaged.name}" in out and "damaged: run.json unreadable" in out
    assert main(["runs", "--runs-dir", str(runs), "--json"]) == 0
    listed = {r["run_id"]: r["status"] for r in json.loads(capsys.readouterr().out)}
    assert listed == {good.run_id: "ok", damaged.name: "damaged"}
    monkeypatch.setattr(shutil, "which", lambda name: None)  # the preview path, no Quarto
    monkeypatch.setenv("FACTCIRCUITS_ROOT", str(tmp_path))
    assert main(["render", "--runs-dir", str(runs)]) == 0
    captured = capsys.readouterr()
    assert f"note: skipping damaged run {damaged.name}" in captured.err
    page = (tmp_path / "report" / "_preview" / "index.html").read_text()
    assert f"id='run-{good.run_id.lower().replace('_', '-')}'" in page
    assert "id='run-tiny--fixture--damaged0'" not in page  # left out of the runs…
    assert f"<code>{damaged.name}</code>: run.json unreadable" in page  # …and said so
