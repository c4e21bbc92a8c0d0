"""Every benchmark runs from a fresh clone as a user runs it: `python benchmarks/<name>.py
<smallest setting> --json` from the repository root, exits 0 and prints its JSON report (issue
34: all of them that import TransformerLens failed, as benchmarks/datasets.py shadowed Hugging
Face `datasets` for every script in that folder). Not timed: the smallest settings make the
numbers meaningless; what is checked is that each script runs end to end and reports what it
measured, with the agreements that hold at any size (e.g. TransformerLens and our patching
give the same grid).

And the class of that bug: Python puts a script's folder (pytest: the test folder; conftest:
tests/fixtures) first on sys.path, so no file there may be named like an installed module."""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
FIXTURES = ROOT / "tests" / "fixtures"
HELPERS = {"_common.py"}  # imported by the benchmarks, not run

# The smallest setting of each benchmark (the tiny random model where the script does not need
# prompts the model answers correctly). suite.py runs pytest itself: on one quick test (this
# file's guard), which exercises its own code (JUnit report, per-file seconds) and not the suite.
SMALLEST = {
    "atp.py": ["--pairs", "1", "--threads", "1"],
    "bos_maps.py": ["--model", "tiny", "--choices", "auto", "off"],
    "circuit.py": ["--models", "default", "--pairs", "1", "--ig-steps", "1", "--edges", "10",
                   "--threads", "1"],
    "dataset_scale.py": ["--rows", "1000", "--fill-rows", "250"],
    "model_memory.py": ["--model", "tiny", "--prompts", "4"],
    "patching.py": ["--model", "tiny", "--pairs", "2", "--reps", "1", "--threads", "1"],
    "relation_circuits.py": ["--model", "tiny", "--dataset", "paris-cloze", "--per-relation",
                             "0", "--n-prompts", "3", "--ig-steps", "1", "--resamples", "5",
                             "--min-pairs", "1", "--threads", "1"],
    "pipeline.py": ["--threads", "1", "--", "--model", "tiny", "-p", "n_prompts=3",
                    "--notebooks", "02", "--no-progress"],  # --runs-dir added per test
    "suite.py": ["--", "-n", "0", "-k", "shadows_an_installed", "tests/test_benchmarks_run.py"],
    "tracing.py": ["--samples", "1", "--prompts", "1", "--threads", "1"],
}
# Those that load the embedded model (the quick loop leaves them out) and the ones that take
# over ~20 s of CPU (two or more processes loading it).
EMBEDDED = {"atp.py", "circuit.py", "tracing.py"}
# Each run starts a fresh Python that loads a model (7–17 s each, ~1:45 together): the full
# suite (and CI) runs them all; the quick loop (-m "not slow") keeps only the guards below.
SLOW = set(SMALLEST)


def user_env() -> dict[str, str]:
    """The environment a user's shell would give: without what conftest adds for the tests
    (the fixtures' folder on PYTHONPATH, the toy methods plugin) or pytest-xdist's variables;
    offline, as CI runs."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTEST_XDIST", "PYTEST_CURRENT_TEST"))
           and k != "FACTCIRCUITS_METHODS"}
    path = [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
            if p and Path(p).resolve() != FIXTURES]
    env.pop("PYTHONPATH", None)
    if path:
        env["PYTHONPATH"] = os.pathsep.join(path)
    return env | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def run_benchmark(name: str, args: list[str]) -> dict:
    done = subprocess.run([sys.executable, f"benchmarks/{name}", "--json", *args], cwd=ROOT,
                          env=user_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{name} exited {done.returncode}:\n{done.stderr[-3000:]}"
    lines = done.stdout.strip().splitlines()
    assert lines, f"{name} printed nothing:\n{done.stderr[-3000:]}"
    return json.loads(lines[-1])


def check_atp(r):
    assert r["benchmark"] == "atp" and r["n_pairs"] == 1 and r["threads"] == 1
    grids = {(row["component"], row["method"]) for row in r["agreement"]}
    assert {("resid_pre", "AtP*"), ("mlp_out", "AtP"), ("z (all positions)", "AtP")} <= grids
    assert all(-1 <= row["spearman"] <= 1 for row in r["agreement"])
    assert r["atp"]["wall_s"] > 0 and r["exact"]["wall_s"] > 0


def check_circuit(r):
    assert r["model"] == "default" and r["n_pairs"] == 1 and r["ig_steps"] == 1
    # 10 at random ∪ the 10 largest |EAP-IG| ∪ the 5 largest |EAP|: 10 to 25 distinct edges
    assert 10 <= r["single_edges"] <= 25 and 0 < r["single_edges"] < r["n_edges"]
    assert {"EAP-IG top-k", "EAP-IG greedy, path-connected", "EAP top-k"} == set(r["areas"])
    assert r["areas"]["EAP-IG top-k"]["faithfulness"]["100%"] == pytest.approx(1.0, abs=1e-3)
    assert r["peak_gb"] >= r["peak_gb_after_load"] > 0


def check_dataset_scale(r):
    assert r["validate_rows"] == 1000 and r["validate_seconds"] > 0
    assert (r["fill_rows_small"], r["fill_rows_large"]) == (250, 1000)
    assert r["fill_ratio_large_over_small"] == pytest.approx(
        r["fill_large_seconds"] / r["fill_small_seconds"])


def check_model_memory(r):
    assert r["model"] == "tiny" and set(r["modes"]) == {"none", "compat"}
    for mode, result in r["modes"].items():
        assert "error" not in result, (mode, result)
        assert result["sum_check_max_error"] < 1e-4 and result["peak_rss_gb"] > 0
    # the unprocessed bridge and the folded copy compute the same model
    assert r["max_abs_layer_dla_diff"] < 1e-4


def check_patching(r):
    cell = r["components"]["resid_pre"]
    assert r["model"] == "tiny" and r["reps"] == 1 and cell["n_pairs"] == 2
    assert cell["threads"] == r["threads"] == 1
    assert cell["max_abs_diff"] < 1e-4  # TransformerLens and ours: the same grid
    assert cell["tl_median_s"] > 0 and cell["ours_median_s"] > 0


def check_pipeline(r):
    assert r["threads"] == 1 and set(r["per_notebook_s"]) == {"02_logit_lens"}
    assert r["notebooks_s"] == pytest.approx(r["per_notebook_s"]["02_logit_lens"], abs=0.01)
    assert r["run_id"].startswith("tiny__")


def check_relation_circuits(r):
    assert r["benchmark"] == "relation_circuits" and r["model"] == "tiny"
    assert r["resamples"] == 5 and r["threads"] == 1 and r["n_pairs"] >= 1
    assert sum(row["n_pairs"] for row in r["relations"]) == r["n_pairs"]
    for group in [r["pooled"], *r["circuits"]]:
        assert group["faithfulness_at_100"] == pytest.approx(1.0, abs=1e-3)
    assert r["total_s"] > 0 and r["peak_gb"] >= r["peak_gb_after"]["load"] > 0


def check_suite(r):
    assert r["exit_code"] == 0 and r["outcomes"] == {"passed": 1}
    assert list(r["per_file_s"]) == ["tests/test_benchmarks_run.py"]


def check_tracing(r):
    assert r["benchmark"] == "tracing" and r["n_prompts"] == 1 and r["samples"] == 1
    # before and after differ only in the stacking budget: the same traces
    assert r["max_abs_diff"] < 1e-4
    assert r["after"]["cpu_s"] > 0 and r["before"]["cpu_s"] > 0


def check_bos_maps(r):
    auto, off = r["rows"]
    # the tiny tokenizer adds BOS: "off" drops it, so every prompt is one token shorter and
    # the same pairs are patched
    assert (auto["prepend_bos"], auto["bos_prepended"]) == ("auto", True)
    assert (off["prepend_bos"], off["bos_prepended"]) == ("off", False)
    assert auto["n_pairs"] == off["n_pairs"] >= 1
    assert auto["mlp_out_subject_last_peak_layer"] >= 1


CHECKS = {"atp.py": check_atp, "bos_maps.py": check_bos_maps, "circuit.py": check_circuit,
          "dataset_scale.py": check_dataset_scale, "model_memory.py": check_model_memory,
          "patching.py": check_patching, "pipeline.py": check_pipeline,
          "relation_circuits.py": check_relation_circuits,
          "suite.py": check_suite, "tracing.py": check_tracing}


def test_every_benchmark_has_a_smallest_setting():
    scripts = {p.name for p in BENCHMARKS.glob("*.py")} - HELPERS
    assert scripts == set(SMALLEST) == set(CHECKS)


def _marks(name: str):
    return ([pytest.mark.embedded] if name in EMBEDDED else []) + (
        [pytest.mark.slow] if name in SLOW else [])


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n)) for n in sorted(SMALLEST)])
def test_benchmark_runs_and_reports(name, tmp_path):
    args = list(SMALLEST[name])
    if name == "pipeline.py":  # the run folder goes to tmp_path, not report/runs/
        args += ["--runs-dir", str(tmp_path)]
    CHECKS[name](run_benchmark(name, args))


# --------------------------------------------------------------------------- the bug's class
def importable_names(folder: Path) -> set[str]:
    """Top-level names a folder on sys.path provides: modules (.py, extensions) and regular
    packages. A folder without __init__.py (tests/fixtures/datasets, data) is only a namespace
    package, used when no module of that name is found anywhere on the path: it shadows nothing."""
    names = set()
    for path in folder.iterdir():
        if path.is_file() and path.suffix in (".py", ".so", ".pyd"):
            names.add(path.name.split(".")[0])
        elif path.is_dir() and (path / "__init__.py").is_file():
            names.add(path.name)
    return names


def installed_names() -> set[str]:
    """Top-level modules importable from outside this repository: the standard library and
    everything installed."""
    ours = {ROOT.resolve(), *(p.resolve() for p in ROOT.glob("*") if p.is_dir())}
    paths = [p for p in sys.path if p and Path(p).resolve() not in ours
             and not Path(p).resolve().is_relative_to(ROOT / "tests")]
    return ({m.name for m in pkgutil.iter_modules(paths)}
            | set(sys.stdlib_module_names) | set(sys.builtin_module_names))


def test_no_file_shadows_an_installed_module():
    installed = installed_names()
    # the check sees what issue 34's shadowing hid, and the standard library
    assert {"datasets", "transformer_lens", "json", "site"} <= installed
    folders = [ROOT / top for top in ("benchmarks", "tests", "scripts")]
    folders += [d for top in folders for d in top.rglob("*")
                if d.is_dir() and d.name != "__pycache__"]
    clashes = {str(folder.relative_to(ROOT)): sorted(importable_names(folder) & installed)
               for folder in folders}
    assert {f: names for f, names in clashes.items() if names} == {}


def test_the_guard_finds_a_shadowing_file(tmp_path):
    (tmp_path / "datasets.py").write_text("")
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "__init__.py").write_text("")
    (tmp_path / "data").mkdir()  # no __init__.py: shadows nothing
    (tmp_path / "notes.txt").write_text("")
    assert importable_names(tmp_path) & installed_names() == {"datasets", "json"}
