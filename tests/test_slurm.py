"""`factcircuits sweep --executor slurm` on a real single-node Slurm: scripts/slurm_local.sh
starts one on this machine whenever Debian's slurmctld, slurmd and munge packages are
installed (CI installs them), and stops it afterwards if it started it.

Jobs here take seconds: the `tiny` model, a few prompts, one notebook, or small fixture
notebooks. The time-limit test waits for Slurm's smallest limit (one minute)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from factcircuits.cli import main
from factcircuits.run import sweeps
from factcircuits.run.secretscan import scan_folder

# Starting Slurm's daemons and waiting on its jobs is not for the quick loop, fast tests included.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "slurm_local.sh"
FIXTURE_DATASET = ROOT / "tests" / "fixtures" / "datasets" / "fixture.csv"
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "srun", "sinfo")

# A notebook that sleeps and/or holds memory: to be cancelled, or killed by a limit.
WAIT_NOTEBOOK = '''# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% tags=["parameters"]
model = "tiny"
dataset = "fixture"
run_dir = "."
seed = 0
sleep_s = 0
hog_mb = 0

# %%
import time

from factcircuits.results.registry import method
from factcircuits.results.store import Results

hog = bytearray(hog_mb * 2**20)
for i in range(0, len(hog), 4096):
    hog[i] = 1
time.sleep(sleep_s)
out = Results(run_dir, method("01_wait"))
out.headline(out.method.headline(seed=seed, slept=sleep_s))
'''


def _installed(name: str) -> bool:
    return shutil.which(name) is not None or Path("/usr/sbin", name).exists()


def _skip(reason: str) -> None:
    """Skip, except where Slurm is required (CI installs it and sets FACTCIRCUITS_REQUIRE_SLURM):
    there a Slurm test that cannot run fails."""
    if os.environ.get("FACTCIRCUITS_REQUIRE_SLURM"):
        pytest.fail(f"FACTCIRCUITS_REQUIRE_SLURM is set but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def local_slurm():
    """SLURM_CONF of a running local Slurm (started here unless one is already up)."""
    missing = [c for c in DAEMONS + CLIENTS if not _installed(c)]
    if missing:
        _skip(f"Slurm not installed ({', '.join(missing)} missing): "
              "apt-get install slurmctld slurmd slurm-client munge")
    if os.geteuid() != 0 and subprocess.run(["sudo", "-n", "true"],
                                            capture_output=True).returncode != 0:
        _skip("the Slurm daemons need root (or passwordless sudo)")
    already = subprocess.run([SCRIPT, "status"], capture_output=True).returncode == 0
    if not already:
        started = subprocess.run([SCRIPT, "start"], timeout=180, capture_output=True, text=True)
        if started.returncode != 0:
            pytest.fail(f"scripts/slurm_local.sh start failed: {started.stderr.strip()}")
    env_line = subprocess.run([SCRIPT, "env"], check=True, capture_output=True, text=True).stdout
    conf = env_line.strip().split("=", 1)[1]
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    yield conf
    if previous is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = previous
    if not already:
        subprocess.run([SCRIPT, "stop"], check=False, timeout=120, capture_output=True)


@pytest.fixture
def sweep_env(local_slurm, tmp_path, monkeypatch):
    """Runs, sweeps and submitit's files in a folder that is also $HOME: the paths the jobs
    see are home paths, so the logs prove they hide them."""
    home = tmp_path / "home"
    notebooks = home / "wait-notebooks"
    notebooks.mkdir(parents=True)
    (notebooks / "01_wait.py").write_text(WAIT_NOTEBOOK)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("FACTCIRCUITS_CACHE_DIR", str(home / "cache"))
    monkeypatch.setenv("FACTCIRCUITS_SWEEP_POLL_S", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return home


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def tree_bytes(folder: Path, pattern: str = "*") -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob(pattern)) if p.is_file()}


def submit(capsys, *args: str) -> dict:
    code = main(["sweep", "--executor", "slurm", "--cpus", "1", "--json", *args])
    out = capsys.readouterr().out
    assert code == 0, out
    return last_json(out)


def wait(capsys, runs: Path, sweep_id: str) -> tuple[int, dict[str, dict]]:
    code = main(["sweeps", sweep_id, "--wait", "--json", "--no-progress", "--runs-dir",
                 str(runs)])
    jobs = last_json(capsys.readouterr().out)["jobs"]
    return code, {j["run_id"]: j for j in jobs}


def job_record(runs: Path, sweep_id: str, run_id: str) -> dict | None:
    return sweeps.load_job_record(sweeps.sweep_dir(runs, sweep_id), run_id)


@pytest.mark.slow
def test_slurm_sweep_gives_the_same_runs_as_the_local_executor(sweep_env, capsys):
    from factcircuits.models.tiny import tiny_hf_model, tiny_tokenizer

    # a second model: tiny's architecture, other weights (outside $HOME: run.json names it)
    second_model = sweep_env.parent / "tiny-seed1"
    tiny_hf_model(seed=1).save_pretrained(second_model)
    tiny_tokenizer().save_pretrained(second_model)
    grid = ["--models", f"tiny,{second_model}", "--datasets", "relations-cloze",
            "-p", "n_prompts=3", "--notebooks", "01"]
    on_slurm, local = sweep_env / "runs-slurm", sweep_env / "runs-local"

    started = time.perf_counter()
    submitted = submit(capsys, *grid, "--mem", "3G", "--time", "10", "--runs-dir", str(on_slurm))
    sweep_id = submitted["sweep_id"]
    arrays = {job_id.split("_")[0] for job_id in submitted["jobs"].values()}
    assert len(submitted["jobs"]) == 2 and len(arrays) == 1  # one job array
    # the local executor runs meanwhile (the same grid, one process at a time)
    assert main(["sweep", *grid, "--runs-dir", str(local)]) == 0
    code, jobs = wait(capsys, on_slurm, sweep_id)
    print(f"slurm sweep: {len(jobs)} jobs in {time.perf_counter() - started:.0f} s wall "
          f"(local executor alongside)")
    assert code == 0 and {j["state"] for j in jobs.values()} == {"done"}

    slurm_runs = sorted(p.name for p in on_slurm.iterdir() if not p.name.startswith("_"))
    local_runs = sorted(p.name for p in local.iterdir() if not p.name.startswith("_"))
    assert slurm_runs == local_runs == sorted(jobs) and len(slurm_runs) == 2
    for run_id in slurm_runs:
        a, b = on_slurm / run_id, local / run_id
        assert tree_bytes(a, "*.csv") == tree_bytes(b, "*.csv") != {}, run_id
        assert (json.loads((a / "run.json").read_text())["headline"]
                == json.loads((b / "run.json").read_text())["headline"]), run_id
        info_a, info_b = (json.loads((x / "run.json").read_text()) for x in (a, b))
        assert info_a["status"] == info_b["status"] == "ok"
        assert info_a["parameters"] == info_b["parameters"]
        assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())

    # the sweep's folder: a record and a log per job, nothing secret, no home path
    folder = sweeps.sweep_dir(on_slurm, sweep_id)
    assert sorted(p.stem for p in (folder / "logs").iterdir()) == slurm_runs
    log = (folder / "logs" / f"{slurm_runs[0]}.log").read_text()
    assert "factcircuits run --model" in log and "--runs-dir ~/runs-slurm" in log
    assert scan_folder(folder) == []
    assert all(job_record(on_slurm, sweep_id, r)["state"] == "ok" for r in slurm_runs)
    # `sweeps` lists it as done
    assert main(["sweeps", "--runs-dir", str(on_slurm)]) == 0
    assert f"{sweep_id}" in (out := capsys.readouterr().out) and "2 done, 0 failed" in out


@pytest.mark.slow
def test_cancelled_job_fails_and_resume_reruns_only_it(sweep_env, capsys):
    runs = sweep_env / "runs"
    grid = ["--models", "tiny", "--datasets", str(FIXTURE_DATASET), "--grid", "seed=0,1",
            "-p", "sleep_s=8", "--notebooks-dir", str(sweep_env / "wait-notebooks"),
            "--mem", "2G", "--time", "5", "--runs-dir", str(runs)]
    submitted = submit(capsys, *grid)
    sweep_id, job_ids = submitted["sweep_id"], submitted["jobs"]
    (kept_run, kept_job), (cancelled_run, cancelled_job) = job_ids.items()
    # cancel the second job once its notebook runs (papermill wrote its first copy)
    deadline = time.monotonic() + 180
    while not list(runs.glob(f"_staging-{cancelled_run}-*/01_wait.ipynb")):
        assert time.monotonic() < deadline, "the job's run never started"
        time.sleep(0.2)
    subprocess.run(["scancel", cancelled_job], check=True)
    code, jobs = wait(capsys, runs, sweep_id)
    assert code == 1
    assert jobs[kept_run]["state"] == "done"
    assert (jobs[cancelled_run]["state"], jobs[cancelled_run]["detail"]) == \
        ("failed", "cancelled (scancel)")
    assert not (runs / cancelled_run).exists()
    # the partial run moved to _failed/, as on Ctrl-C
    assert not list(runs.glob("_staging-*"))
    assert [p.name.startswith(cancelled_run) for p in (runs / "_failed").iterdir()] == [True]
    kept_before = tree_bytes(runs / kept_run)
    kept_mtime = (runs / kept_run / "run.json").stat().st_mtime_ns

    # --resume ID submits only the cancelled job, into the same sweep
    code = main(["sweep", "--executor", "slurm", "--resume", sweep_id, "--runs-dir", str(runs),
                 "--json"])
    out = capsys.readouterr().out
    assert code == 0 and "1 job(s) submitted" in out
    assert list(last_json(out)["jobs"]) == [cancelled_run]
    code, jobs = wait(capsys, runs, sweep_id)
    assert code == 0 and {j["state"] for j in jobs.values()} == {"done"}
    assert tree_bytes(runs / kept_run) == kept_before
    assert (runs / kept_run / "run.json").stat().st_mtime_ns == kept_mtime
    record = sweeps.load_sweep(runs, sweep_id)
    assert [len(j["attempts"]) for j in record["jobs"]] == [1, 2]
    # nothing left to do: resuming the same grid (the newest sweep of it) submits nothing
    assert main(["sweep", "--executor", "slurm", *grid, "--resume"]) == 0
    assert f"sweep {sweep_id}: nothing to resubmit (0 queued or running, 2 complete" in \
        capsys.readouterr().out


@pytest.mark.slow
def test_slurm_limits_are_reported_with_the_limit(sweep_env, capsys):
    runs = sweep_env / "runs"
    common = ["--models", "tiny", "--datasets", str(FIXTURE_DATASET), "--notebooks-dir",
              str(sweep_env / "wait-notebooks"), "--runs-dir", str(runs)]
    slow = submit(capsys, *common, "-p", "sleep_s=600", "--time", "1", "--mem", "2G")
    hungry = submit(capsys, *common, "-p", "hog_mb=3000", "-p", "sleep_s=20", "--time", "5",
                    "--mem", "1G")
    code, slow_jobs = wait(capsys, runs, slow["sweep_id"])
    assert code == 1
    (slow_job,) = slow_jobs.values()
    assert (slow_job["state"], slow_job["detail"]) == \
        ("failed", "Slurm killed the job at its time limit (time=0:01:00)")
    assert slow_job["slurm_state"] == "TIMEOUT"
    code, hungry_jobs = wait(capsys, runs, hungry["sweep_id"])
    (hungry_job,) = hungry_jobs.values()
    assert (code, hungry_job["state"]) == (1, "failed")
    assert hungry_job["detail"] == \
        "Slurm killed the job for exceeding its memory limit (mem=1G)"
    # the killed runs' partial folders were moved aside, not left half-written
    assert not list(runs.glob("_staging-*")) and len(list((runs / "_failed").iterdir())) == 2
    # the job's log ends with what happened, in Slurm's words too
    folder = sweeps.sweep_dir(runs, hungry["sweep_id"])
    log = (folder / "logs" / f"{hungry_job['run_id']}.log").read_text()
    assert "exceeded memory limit" in log and log.rstrip().endswith(hungry_job["detail"])
    assert scan_folder(folder) == []
    # `sweeps ID` prints the reason on the job's line
    assert main(["sweeps", slow["sweep_id"], "--runs-dir", str(runs)]) == 0
    assert "failed   " in (out := capsys.readouterr().out) and "time limit (time=0:01:00)" in out


def test_unknown_partition_is_one_line_and_writes_nothing(sweep_env, capsys):
    runs = sweep_env / "runs"
    code = main(["sweep", "--executor", "slurm", "--models", "tiny", "--datasets",
                 str(FIXTURE_DATASET), "--notebooks-dir", str(sweep_env / "wait-notebooks"),
                 "--partition", "nosuch", "--runs-dir", str(runs)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "--partition nosuch: no such partition on this cluster; available: local, short" in err
    assert not runs.exists() and not (sweep_env / "cache").exists()
    # more time than the partition allows would leave the jobs pending for ever
    code = main(["sweep", "--executor", "slurm", "--models", "tiny", "--datasets",
                 str(FIXTURE_DATASET), "--notebooks-dir", str(sweep_env / "wait-notebooks"),
                 "--partition", "short", "--time", "10", "--runs-dir", str(runs)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.endswith("error: --time 0:10:00: partition short allows at most "
                                      "5:00; ask for less time or another partition")
    # what sbatch itself refuses is one line too (a GPU this cluster does not have)
    code = main(["sweep", "--executor", "slurm", "--models", "tiny", "--datasets",
                 str(FIXTURE_DATASET), "--notebooks-dir", str(sweep_env / "wait-notebooks"),
                 "--gpus", "1", "--runs-dir", str(runs)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "sbatch refused the jobs:" in err
    assert not runs.exists() and not list((sweep_env / "cache").glob("sweeps/*"))


def interactive_sigint():
    """In the child: SIGINT as a terminal gives it. A background job of a non-interactive
    shell (how CI scripts often start pytest) inherits SIGINT ignored, and Python then never
    raises KeyboardInterrupt, so the Ctrl-C this test sends would be lost."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def test_ctrl_c_while_waiting_offers_to_cancel(sweep_env, capsys):
    import signal
    import sys

    runs = sweep_env / "runs"
    submitted = submit(capsys, "--models", "tiny", "--datasets", str(FIXTURE_DATASET),
                       "--notebooks-dir", str(sweep_env / "wait-notebooks"), "-p", "sleep_s=600",
                       "--time", "5", "--mem", "2G", "--runs-dir", str(runs))
    sweep_id, ((run_id, _),) = submitted["sweep_id"], submitted["jobs"].items()
    waiting = subprocess.Popen(
        [sys.executable, "-m", "factcircuits.cli", "sweeps", sweep_id, "--wait", "--runs-dir",
         str(runs)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, preexec_fn=interactive_sigint)
    err_chunks: list[str] = []
    reader = threading.Thread(target=lambda: err_chunks.extend(iter(
        lambda: waiting.stderr.read(1), "")), daemon=True)
    reader.start()
    # interrupt once the job runs and the command shows its progress bar
    deadline = time.monotonic() + 180
    while (job_record(runs, sweep_id, run_id) or {}).get("state") != "running" \
            or f"sweep {sweep_id}:" not in "".join(err_chunks):
        assert time.monotonic() < deadline and waiting.poll() is None
        time.sleep(0.5)
    waiting.send_signal(signal.SIGINT)
    waiting.stdin.write("y\n")
    waiting.stdin.close()
    try:
        waiting.wait(timeout=180)  # squeue/scancel are slow on a loaded machine
    except subprocess.TimeoutExpired:
        waiting.kill()
        reader.join(timeout=10)
        printed = "".join(err_chunks)
        raise AssertionError(f"no exit 180 s after Ctrl-C; it printed:\n{printed}") from None
    reader.join(timeout=10)
    err = "".join(err_chunks)
    assert waiting.returncode == 130, err
    assert "1 job(s) of sweep" in err and "Cancel them (scancel)? [y/N]" in err
    assert f"cancelled 1 job(s); `factcircuits sweep --resume {sweep_id}`" in err
    code, jobs = wait(capsys, runs, sweep_id)
    assert code == 1 and jobs[run_id]["detail"] == "cancelled (scancel)"
