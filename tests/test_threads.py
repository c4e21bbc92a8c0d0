"""Thread control: the count's precedence, cgroup/affinity awareness, and that runs and sweep
jobs hand it to their kernels and record it in run.json."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from factcircuits.cli import main
from factcircuits.errors import UserError
from factcircuits.run import threads as T

DATASET = str(Path(__file__).parent / "fixtures" / "datasets" / "fixture.csv")

# A notebook that reports what its kernel got: the environment and torch's thread count.
THREAD_NOTEBOOK = '''# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% tags=["parameters"]
model = "default"
dataset = "fixture"
run_dir = "."
seed = 0

# %%
import os

import torch

from factcircuits.results.registry import method
from factcircuits.results.store import Results

out = Results(run_dir, method("01_threads"))
out.headline(out.method.headline(omp=os.environ.get("OMP_NUM_THREADS"),
                                 torch=torch.get_num_threads()))
'''


@pytest.fixture
def no_thread_env(monkeypatch):
    for var in T.THREAD_ENV_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def thread_notebooks(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    (folder / "01_threads.py").write_text(THREAD_NOTEBOOK)
    return folder


def test_precedence_option_then_env_then_omp_then_cores(monkeypatch, no_thread_env):
    cores = T.available_cores()
    assert T.resolve_threads() == T.ThreadChoice(cores, "cores", cores, 1)
    # jobs at once share the cores, at least one thread each
    assert T.resolve_threads(jobs=2).count == max(1, cores // 2)
    assert T.resolve_threads(jobs=64).count == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert (T.resolve_threads().count, T.resolve_threads().source) == (3, "$OMP_NUM_THREADS")
    monkeypatch.setenv("FACTCIRCUITS_THREADS", "5")
    assert (T.resolve_threads().count, T.resolve_threads().source) == (5, "$FACTCIRCUITS_THREADS")
    assert (T.resolve_threads(7).count, T.resolve_threads(7).source) == (7, "--threads")


def test_child_environment(monkeypatch, no_thread_env):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert T.thread_env(1) == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                               "FACTCIRCUITS_THREADS": "1"}
    assert T.thread_env(2)["OMP_WAIT_POLICY"] == "PASSIVE"  # idle threads sleep when shared
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert T.thread_env(2)["OMP_WAIT_POLICY"] == "ACTIVE"  # the caller's choice stands


def test_bad_counts_are_one_line_errors(monkeypatch, no_thread_env):
    with pytest.raises(UserError, match=r"--threads=0: .* ≥ 1"):
        T.resolve_threads(0)
    monkeypatch.setenv("FACTCIRCUITS_THREADS", "many")
    with pytest.raises(UserError, match=r"\$FACTCIRCUITS_THREADS='many'"):
        T.resolve_threads()


def test_available_cores_is_capped_by_affinity_and_quota(monkeypatch, tmp_path):
    affinity = len(os.sched_getaffinity(0))
    monkeypatch.setattr(T, "_cgroup_quota", lambda: None)
    assert T.available_cores() == affinity
    monkeypatch.setattr(T, "_cgroup_quota", lambda: 0.5)  # half a core: still one thread
    assert T.available_cores() == 1
    monkeypatch.setattr(T, "_cgroup_quota", lambda: 1000.0)  # quota above affinity
    assert T.available_cores() == affinity


@pytest.mark.parametrize("files,expected", [
    ({"cpu.max": "150000 100000\n"}, 1.5),  # cgroup v2 with a quota
    ({"cpu.max": "max 100000\n"}, None),  # v2 without
    ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3.0),  # v1
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({}, None),
])
def test_cgroup_quota_files(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert T._cgroup_quota(tmp_path) == expected


def test_run_gives_kernels_the_count_and_records_it(tmp_path, thread_notebooks, no_thread_env,
                                                    capsys):
    runs = tmp_path / "runs"
    args = ["run", "--dataset", DATASET, "--notebooks-dir", str(thread_notebooks),
            "--runs-dir", str(runs), "--json", "--no-progress", "--threads", "1"]
    assert main(args) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["headline"]["01_threads"] == {"omp": "1", "torch": 1}
    info = json.loads((Path(last["run_dir"]) / "run.json").read_text())
    assert info["threads"] == {"count": 1, "source": "--threads",
                               "available_cores": T.available_cores(), "jobs": 1}
    assert "OMP_NUM_THREADS" not in os.environ  # the caller's environment is restored


@pytest.mark.slow  # two runs at once
def test_sweep_gives_each_parallel_job_its_share(tmp_path, thread_notebooks, no_thread_env):
    other = tmp_path / "other.csv"
    other.write_bytes(Path(DATASET).read_bytes())
    runs = tmp_path / "runs"
    code = main(["sweep", "--models", "default", "--datasets", f"{DATASET},{other}",
                 "--jobs", "2", "--notebooks-dir", str(thread_notebooks), "--runs-dir",
                 str(runs)])
    assert code == 0
    share = max(1, T.available_cores() // 2)
    for folder in runs.iterdir():
        info = json.loads((folder / "run.json").read_text())
        assert info["threads"]["count"] == share
        assert info["headline"]["01_threads"] == {"omp": str(share), "torch": share}


def test_benchmarks_refuse_to_compare_different_thread_counts(tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
    try:
        import _common
    finally:
        sys.path.pop(0)
    _common.refuse_mixed_threads({"before": 1, "after": 1})  # same count: no objection
    with pytest.raises(SystemExit, match=r"different thread counts \(before: 1, after: 2\)"):
        _common.refuse_mixed_threads({"before": 1, "after": 2})
    saved = tmp_path / "saved.json"
    saved.write_text(json.dumps({"threads": 2, "after": {"wall_s": 10.0}}))
    with pytest.raises(SystemExit, match="different thread counts"):
        _common.compare_with_saved(str(saved), {"threads": 1, "after": {"wall_s": 5.0}},
                                   [("after", "wall_s")])
    lines = _common.compare_with_saved(str(saved), {"threads": 2, "after": {"wall_s": 5.0}},
                                       [("after", "wall_s")])
    assert lines[1].split() == ["after.wall_s", "10", "5"]
