"""The Slurm executor's pieces that need no Slurm: resources (flags, config file, Slurm's time
formats), reading Slurm's state lines, deciding a job's state, scrubbing logs, the grid, and
the one-line error when this machine has no Slurm."""

from __future__ import annotations

from pathlib import Path

import pytest

from factcircuits.cli import main
from factcircuits.commands.sweep import parameter_sets
from factcircuits.errors import UserError
from factcircuits.run import sweeps
from factcircuits.run.slurm_resources import (
    normalize_mem,
    parse_sbatch_options,
    parse_time_minutes,
    resolve_resources,
)
from factcircuits.run.sweep_status import decide, parse_job_states

NO_FLAGS = {k: None for k in ("partition", "gpus", "cpus", "mem", "time", "parallel")}


@pytest.mark.parametrize("text, minutes", [
    ("90", 90), ("0:30", 1), ("1:30", 2), ("2:00:00", 120), ("1-0", 1440), ("1-2", 1560),
    ("1-2:30", 1590), ("1-2:30:01", 1591), ("90m", 90), ("2h", 120), ("1.5h", 90), ("1d", 1440),
])
def test_time_limits_in_slurm_formats(text, minutes):
    assert parse_time_minutes(text) == minutes


@pytest.mark.parametrize("text", ["", "soon", "1:2:3:4", "0", "-5", "2w"])
def test_bad_time_limit_is_one_line(text):
    with pytest.raises(UserError, match="--time"):
        parse_time_minutes(text)


def test_memory_and_sbatch_options():
    assert [normalize_mem(m) for m in ("16G", "16gb", "1500M", 32, "2T")] == \
        ["16G", "16G", "1500M", "32G", "2T"]
    with pytest.raises(UserError, match="--mem 'lots'"):
        normalize_mem("lots")
    assert parse_sbatch_options(["--gres=gpu:a100:1", "--exclusive"]) == \
        {"gres": "gpu:a100:1", "exclusive": True}
    with pytest.raises(UserError, match="long form"):
        parse_sbatch_options(["-p gpu"])


def test_flags_override_the_config_file(tmp_path, monkeypatch):
    config = tmp_path / "slurm.yaml"
    config.write_text("partition: gpu\ngpus: 1\nmem: 64G\ntime: '4:00:00'\n"
                      "sbatch: --constraint=a100\nsetup: ['module load cuda']\n")
    res = resolve_resources(NO_FLAGS | {"mem": "32G", "sbatch": ["--mail-type=END"]}, config)
    assert (res.partition, res.gpus, res.cpus, res.mem, res.time) == \
        ("gpu", 1, 2, "32G", "4:00:00")
    assert res.sbatch == ["--constraint=a100", "--mail-type=END"]
    params = res.submitit_parameters("fc-x")
    assert params["gpus_per_node"] == 1 and params["timeout_min"] == 240
    assert params["slurm_partition"] == "gpu" and params["slurm_setup"] == ["module load cuda"]
    extra = params["slurm_additional_parameters"]
    assert extra == {"constraint": "a100", "mail-type": "END", "signal": "URG@120"}
    # the environment variable names the file when no flag does
    monkeypatch.setenv("FACTCIRCUITS_SLURM_CONFIG", str(config))
    assert resolve_resources(NO_FLAGS).partition == "gpu"
    # defaults: no GPU, no partition (the cluster's default)
    monkeypatch.delenv("FACTCIRCUITS_SLURM_CONFIG")
    monkeypatch.setenv("FACTCIRCUITS_ROOT", str(tmp_path / "elsewhere"))
    default = resolve_resources(NO_FLAGS)
    assert (default.partition, default.gpus, default.time) == (None, 0, "2:00:00")
    assert "gpus_per_node" not in default.submitit_parameters("x")


def test_config_file_errors_name_the_key(tmp_path):
    config = tmp_path / "slurm.yaml"
    config.write_text("partitoin: gpu\n")
    with pytest.raises(UserError, match="unknown key 'partitoin'"):
        resolve_resources(NO_FLAGS, config)
    with pytest.raises(UserError, match="--slurm-config .*no such file"):
        resolve_resources(NO_FLAGS, tmp_path / "missing.yaml")
    with pytest.raises(UserError, match="--cpus 0"):
        resolve_resources(NO_FLAGS | {"cpus": 0})


def test_reading_squeue_and_sacct_lines():
    lines = ["12_0|COMPLETED|None", "12_1|TIMEOUT|TimeLimit", "12_[2-4%2]|PENDING|Resources",
             "13|CANCELLED by 0|None", "13.batch|CANCELLED|", "14_5|OUT_OF_MEMORY+|"]
    states = parse_job_states(lines)
    assert states == {"12_0": ("COMPLETED", "None"), "12_1": ("TIMEOUT", "TimeLimit"),
                      "12_2": ("PENDING", "Resources"), "12_3": ("PENDING", "Resources"),
                      "12_4": ("PENDING", "Resources"), "13": ("CANCELLED", "None"),
                      "14_5": ("OUT_OF_MEMORY", "")}


RES = {"time": "0:01:00", "mem": "1G"}
ATTEMPT = {"slurm_job_id": "12_1", "submitted": "2000-01-01T00:00:00+00:00"}


def test_deciding_a_jobs_state():
    failed_run = {"state": "failed", "reason": "notebook 01_x failed in cell 3: ValueError: boom"}
    assert decide({"state": "ok", "run_dir": "report/runs/r"}, ("RUNNING", ""), None, ATTEMPT,
                  RES, "log") == ("done", "report/runs/r")
    assert decide(None, ("PENDING", "Resources"), None, ATTEMPT, RES, "log") == \
        ("pending", "Resources")
    assert decide({"state": "running"}, ("RUNNING", "None"), None, ATTEMPT, RES, "log")[0] == \
        "running"
    # the run's own reason: the failing notebook and its one line
    assert decide(failed_run, ("FAILED", "NonZeroExitCode"), None, ATTEMPT, RES, "log") == \
        ("failed", failed_run["reason"])
    # Slurm's limits win over the interrupted run's reason, and say which limit
    assert decide(failed_run, ("TIMEOUT", "TimeLimit"), None, ATTEMPT, RES, "log") == \
        ("failed", "Slurm killed the job at its time limit (time=0:01:00)")
    assert decide({"state": "running"}, ("FAILED", ""), "memory", ATTEMPT, RES, "log") == \
        ("failed", "Slurm killed the job for exceeding its memory limit (mem=1G)")
    assert decide(None, ("CANCELLED", ""), None, ATTEMPT, RES, "log") == \
        ("failed", "cancelled (scancel)")
    # Slurm forgot the job (no accounting): the job's own notes decide
    noted = {"state": "running", "events": ["t Slurm: time limit near", "t Slurm sent SIGTERM"]}
    assert decide(noted, None, None, ATTEMPT, RES, "log")[1].startswith(
        "Slurm killed the job at its time limit")
    assert "no longer knows job 12_1" in decide(None, None, None, ATTEMPT, RES, "log")[1]
    # ... unless we cancelled it (`sweeps --cancel` notes it in sweep.json): a pending array
    # task cancelled leaves no record and squeue forgets it at once
    cancelled = ATTEMPT | {"cancelled": sweeps.now()}
    assert decide(None, None, None, cancelled, RES, "log") == \
        ("failed", "cancelled (scancel) before it started")
    assert decide({"state": "failed", "reason": "terminated by SIGTERM"}, None, None,
                  cancelled, RES, "log") == ("failed", "cancelled (scancel)")
    assert decide(None, None, None, ATTEMPT | {"submitted": sweeps.now()}, RES, "log")[0] == \
        "pending"


# A fake API key and another user's home, built at run time so that the source itself holds
# nothing a secret scanner should flag.
FAKE_KEY = "sk-" + "abcdefghijklmnopqrstuvwxyz0123"
OTHER_HOME = "/" + "home/bob"


def test_scrub_removes_secrets_tokens_and_home(monkeypatch, tmp_path):
    home = tmp_path / "alice"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("MY_SERVICE_TOKEN", "s3cr3t-value-123")
    text = (f"--runs-dir {home}/proj/report/runs token s3cr3t-value-123 "
            "key " + FAKE_KEY + " other " + OTHER_HOME + "/x " + str(home))
    clean = sweeps.scrub(text)
    assert clean == ("--runs-dir ~/proj/report/runs token [$MY_SERVICE_TOKEN] key [token] "
                     "other ~other/x ~")
    from factcircuits.run.secretscan import scan_text

    assert scan_text(clean) == []


def test_grid_makes_one_parameter_set_per_combination():
    # grid values stay text until the run types them by their declaration (010 is not 8)
    sets = parameter_sets(["n_prompts=4,8", "seed=0,1"], {"task": "cloze"})
    assert sets == [{"task": "cloze", "n_prompts": "4", "seed": "0"},
                    {"task": "cloze", "n_prompts": "4", "seed": "1"},
                    {"task": "cloze", "n_prompts": "8", "seed": "0"},
                    {"task": "cloze", "n_prompts": "8", "seed": "1"}]
    assert parameter_sets([], {"seed": 3}) == [{"seed": 3}]
    with pytest.raises(UserError, match="--grid seed: set once"):
        parameter_sets(["seed=1,2"], {"seed": 3})


def test_no_slurm_here_names_the_missing_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, squeue, ... on PATH
    monkeypatch.setenv("FACTCIRCUITS_RUNS", str(tmp_path / "runs"))
    code = main(["sweep", "--executor", "slurm", "--models", "tiny", "--datasets", "paris-cloze"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "`sbatch` is not on PATH" in err and "no Slurm on this machine" in err
    assert "scripts/slurm_local.sh" in err
    assert not (tmp_path / "runs").exists()


def test_force_needs_resume(capsys):
    assert main(["sweep", "--models", "tiny", "--datasets", "paris-cloze", "--force"]) == 2
    assert "--force: only with --resume" in capsys.readouterr().err


def test_sweeps_lists_nothing_in_an_empty_folder(tmp_path, capsys):
    assert main(["sweeps", "--runs-dir", str(tmp_path)]) == 0
    assert "no sweeps in" in capsys.readouterr().out
    assert main(["sweeps", "nope", "--runs-dir", str(tmp_path)]) == 2
    assert "sweep 'nope': not found" in capsys.readouterr().err
    assert not any(Path(tmp_path).iterdir())


def test_cancelling_notes_each_open_attempt_in_the_sweep_record(tmp_path):
    from factcircuits.run.sweep_status import mark_cancelled

    jobs = [{"run_id": f"r{i}", "model": "m", "dataset": "d",
             "attempts": [{"slurm_job_id": f"7_{i}", "submitted": sweeps.now()}]}
            for i in range(3)]
    jobs[2]["attempts"][0]["final"] = {"state": "done", "detail": "", "slurm_state": None}
    folder = sweeps.sweep_dir(tmp_path, "s1")
    sweeps.save_sweep(folder, {"sweep_id": "s1", "jobs": jobs})
    mark_cancelled(tmp_path, "s1", ["7_0", "7_2"])
    attempts = [j["attempts"][0] for j in sweeps.load_sweep(tmp_path, "s1")["jobs"]]
    assert ["cancelled" in a for a in attempts] == [True, False, False]  # a finished one stays
