"""The run pipeline on small fixture notebooks (tests/fixtures/notebooks): run folder and
run.json, atomic replacement, failure handling, secret scan, CLI behaviour."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest

from factcircuits.cli import main
from factcircuits.errors import UserError
from factcircuits.run import pipeline
from factcircuits.run.runid import make_run_id, slug

FIXTURES = Path(__file__).parent / "fixtures"
NOTEBOOKS = FIXTURES / "notebooks"
DATASET = str(FIXTURES / "datasets" / "fixture.csv")


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def do_run(runs: Path, **overrides):
    return pipeline.run(None, DATASET, overrides, notebooks_dir=NOTEBOOKS, runs_root=runs,
                        progress=False)


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    return runs, do_run(runs)


def test_run_folder_and_run_json_complete(good_run):
    runs, result = good_run
    assert result.status == "ok" and result.run_dir.parent == runs
    assert result.run_id.startswith("default__fixture__")
    files = {p.name for p in result.run_dir.iterdir()}
    assert {"01_first.ipynb", "02_second.ipynb", "run.json", "results"} <= files
    assert not {"model.json", "headline"} & files  # folded into run.json, kept once
    info = json.loads((result.run_dir / "run.json").read_text())
    assert info["status"] == "ok" and info["run_id"] == result.run_id
    assert info["parameters"]["n_prompts"] == 3 and "run_dir" not in info["parameters"]
    assert info["parameters"]["known"] == "top1"  # a core parameter, at its default
    assert info["parameters_set"] == ["dataset"]  # only the dataset was chosen here
    assert info["model"] == {"name": "default", "dtype": "float32", "device": "cpu"}
    assert info["dataset"]["path"] == "tests/fixtures/datasets/fixture.csv"
    assert len(info["dataset"]["sha256"]) == 64
    assert set(info["packages"]) == {"python", "torch", "transformers", "transformer-lens",
                                     "papermill", "factcircuits"}
    assert info["git"]["commit"] and info["started"] <= info["finished"]
    assert [nb["name"] for nb in info["notebooks"]] == ["01_first", "02_second"]
    # each notebook's own parameters are recorded: `leak` belongs to 01 only, `fail` to 02
    first, second = (nb["parameters"] for nb in info["notebooks"])
    assert first["leak"] == "" and "fail" not in first and first["n_prompts"] == 3
    assert second["fail"] is False and "leak" not in second
    assert all(nb["status"] == "ok" and nb["duration_s"] > 0 for nb in info["notebooks"])
    assert info["headline"] == {"01_first": {"n_prompts": 3, "score": 0.5},
                                "02_second": {"effect": 0.25}}
    # no staging or failed leftovers next to the run
    assert [p.name for p in runs.iterdir()] == [result.run_id]


def test_executed_notebooks_have_no_errors_and_no_absolute_paths(good_run, tmp_path):
    _, result = good_run
    for path in result.run_dir.glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        outputs = [o for c in nb.cells for o in c.get("outputs", [])]
        assert not [o for o in outputs if o["output_type"] == "error"], path.name
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert 'run_dir = "."' in injected[0].source
        assert str(Path.home()) + "/" not in path.read_text()
        assert nb.metadata.papermill["output_path"] == path.name
        # figures carry interactive HTML; plotly.js loaded once, inline
        html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
        assert sum("plotly.js v" in h[:200] for h in html) == 1
        assert any("plotly-graph-div" in h for h in html)
    # no Quarto front matter in a run (report/ adds it before a render): the title heading stays
    first = nbformat.read(result.run_dir / "01_first.ipynb", as_version=4).cells
    assert first[0].cell_type == "markdown" and "# Fixture notebook one" in first[0].source
    # the pre-render gives it Quarto's front matter: the title moved out of the first heading,
    # the run as subtitle; a second pre-render changes nothing
    from factcircuits.report import pages
    from factcircuits.results.run import Run

    copy = shutil.copytree(result.run_dir, tmp_path / result.run_dir.name)
    for _ in range(2):
        pages.give_front_matter(Run.load(copy))
        first = nbformat.read(copy / "01_first.ipynb", as_version=4).cells
        assert first[0].cell_type == "raw"
        assert 'title: "Fixture notebook one"' in first[0].source
        assert f'subtitle: "run {result.run_id}"' in first[0].source
        assert "# Fixture notebook one" not in first[1].source


def test_run_id_is_stable_and_reflects_overrides(tmp_path):
    first = pipeline.plan_run(None, DATASET, {}, notebooks_dir=NOTEBOOKS, runs_root=tmp_path)
    again = pipeline.plan_run(None, DATASET, {"seed": 0}, notebooks_dir=NOTEBOOKS,
                              runs_root=tmp_path)
    other = pipeline.plan_run(None, DATASET, {"seed": 1}, notebooks_dir=NOTEBOOKS,
                              runs_root=tmp_path)
    assert first.run_id == again.run_id != other.run_id
    assert slug("HuggingFaceTB/SmolLM2-135M-Instruct") == "huggingfacetb-smollm2-135m-instruct"
    assert make_run_id("a/b", "data/x.csv", {}).startswith("a-b__x__")
    assert not list(tmp_path.iterdir())  # planning writes nothing


def test_known_criterion_is_a_recorded_core_parameter_that_changes_the_run_id(tmp_path):
    default = pipeline.plan_run(None, DATASET, {}, notebooks_dir=NOTEBOOKS, runs_root=tmp_path)
    pairwise = pipeline.plan_run(None, DATASET, {"known": "pairwise"}, notebooks_dir=NOTEBOOKS,
                                 runs_root=tmp_path)
    assert default.parameters["known"] == "top1"  # what run.json records
    assert pairwise.parameters["known"] == "pairwise" and pairwise.run_id != default.run_id


def test_failing_parameter_keeps_last_good_run_and_failed_notebook(tmp_path, good_run):
    good = good_run[1]  # a copy of the module's good run: two kernels fewer than a new run
    shutil.copytree(good.run_dir, tmp_path / good.run_id)
    good = pipeline.RunResult(good.run_id, tmp_path / good.run_id, "ok")
    before = tree_bytes(good.run_dir)
    with pytest.raises(pipeline.RunFailed) as err:
        pipeline.execute_run(_same_id_failing_plan(tmp_path, good.run_id), progress=False)
    reason = str(err.value)
    assert "02_second" in reason and "cell" in reason and "ValueError" in reason
    assert "\n" not in reason
    assert tree_bytes(good.run_dir) == before
    failed = list((tmp_path / "_failed").iterdir())
    assert len(failed) == 1 and failed[0].name.startswith(good.run_id)
    partial = nbformat.read(failed[0] / "02_second.ipynb", as_version=4)
    assert any(o["output_type"] == "error" for c in partial.cells for o in c.get("outputs", []))
    assert json.loads((failed[0] / "run.json").read_text())["status"] == "failed"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("_staging")]


def _same_id_failing_plan(runs: Path, run_id: str):
    """A plan with fail=True that targets the good run's id (as a rerun of it would)."""
    plan = pipeline.plan_run(None, DATASET, {"fail": True}, notebooks_dir=NOTEBOOKS,
                             runs_root=runs)
    plan.run_id = run_id
    return plan


def test_secret_scan_refuses_planted_key(tmp_path, monkeypatch):
    fake = "sk-" + "A1b2C3d4" * 4
    plan = pipeline.plan_run(None, DATASET, {}, notebooks_dir=NOTEBOOKS, runs_root=tmp_path,
                             select=["01"])
    # plant the key through the notebook's own output (not as a parameter: those are refused)
    plan.parameters["leak"] = fake
    with pytest.raises(pipeline.RunFailed) as err:
        pipeline.execute_run(plan, progress=False)
    assert "secret scan" in str(err.value) and "01_first.ipynb" in str(err.value)
    assert fake not in str(err.value)
    assert not (tmp_path / plan.run_id).exists()
    assert len(list((tmp_path / "_failed").iterdir())) == 1


def test_secrets_and_unknown_parameters_are_refused_up_front(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_" + "x" * 34)
    cases = [({"bogus": 1}, "unknown parameter 'bogus'; known: model, dataset"),
             ({"api_key": "abc"}, "secrets are read from the environment"),
             ({"leak": "hf_" + "x" * 34}, "secrets come from the environment"),
             ({"n_prompts": "many"}, "n_prompts='many': expected int")]
    for overrides, message in cases:
        with pytest.raises(UserError, match=message.replace("(", r"\(")):
            pipeline.plan_run(None, DATASET, overrides, notebooks_dir=NOTEBOOKS,
                              runs_root=tmp_path)
    with pytest.raises(UserError, match="--dataset nosuch.csv: no such file"):
        pipeline.plan_run(None, "nosuch.csv", {}, notebooks_dir=NOTEBOOKS, runs_root=tmp_path)
    with pytest.raises(UserError, match="no_such_dataset_name"):
        pipeline.plan_run(None, "no_such_dataset_name", {}, notebooks_dir=NOTEBOOKS,
                          runs_root=tmp_path)
    assert not list(tmp_path.iterdir())


def test_cli_run_json_last_line_and_errors(tmp_path, capsys):
    args = ["run", "--dataset", DATASET, "--notebooks-dir", str(NOTEBOOKS), "--runs-dir",
            str(tmp_path), "--notebooks", "01", "-p", "n_prompts=2", "--json", "--no-progress"]
    assert main(args) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["status"] == "ok" and last["headline"]["01_first"]["n_prompts"] == 2
    assert Path(last["run_dir"]).name == last["run_id"]
    assert main(args[:-2] + ["-p", "nope=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown parameter 'nope'" in err
    assert main(["runs", "--runs-dir", str(tmp_path)]) == 0
    assert last["run_id"] in capsys.readouterr().out


def test_slurm_job_calls_the_pipeline_and_ends_with_the_clis_json_line(tmp_path, capsys):
    """A Slurm job runs `plan_run` and `execute_run` itself (no CLI): the same last JSON line
    and exit codes as `factcircuits run --json` (0 ok, 2 refused with the reason)."""
    import signal

    from factcircuits.run.slurm_executor import job_main

    run = {"model": None, "dataset": DATASET, "overrides": {"n_prompts": 2},
           "notebooks": ["01"], "notebooks_dir": str(NOTEBOOKS), "runs_root": str(tmp_path)}
    handler = signal.getsignal(signal.SIGTERM)
    try:
        assert job_main([json.dumps(run)]) == 0
        last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert last["status"] == "ok" and last["headline"]["01_first"]["n_prompts"] == 2
        assert Path(last["run_dir"]).name == last["run_id"]
        assert job_main([json.dumps(run | {"overrides": {"nope": 1}})]) == 2
        out, err = capsys.readouterr()
        last = json.loads(out.strip().splitlines()[-1])
        assert last["status"] == "failed" and "unknown parameter 'nope'" in last["reason"]
        assert err.strip().startswith("factcircuits run: error:") and err.count("\n") == 1
    finally:
        signal.signal(signal.SIGTERM, handler)


@pytest.mark.slow  # two runs at once: ~30 s
def test_sweep_runs_every_cell_of_the_grid_in_parallel(tmp_path, capsys):
    other = tmp_path / "other.csv"
    other.write_bytes(Path(DATASET).read_bytes())
    runs = tmp_path / "runs"
    code = main(["sweep", "--models", "default", "--datasets", f"{DATASET},{other}",
                 "--jobs", "2", "--notebooks-dir", str(NOTEBOOKS), "--runs-dir", str(runs)])
    assert code == 0
    folders = sorted(p.name for p in runs.iterdir())
    assert [f.split("__")[1] for f in folders] == ["fixture", "other"]
    for folder in folders:
        assert json.loads((runs / folder / "run.json").read_text())["status"] == "ok"
    printed = capsys.readouterr().out
    assert printed.count("ok ") == 2


def test_sweep_validates_the_whole_grid_before_running(tmp_path, capsys):
    runs = tmp_path / "runs"
    code = main(["sweep", "--models", "default", "--datasets", f"{DATASET},no-such-dataset",
                 "--notebooks-dir", str(NOTEBOOKS), "--runs-dir", str(runs)])
    assert code == 2 and "no-such-dataset" in capsys.readouterr().err
    assert not runs.exists() or not any(runs.iterdir())


def test_unavailable_model_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    runs = tmp_path / "runs"
    for spec, message in (("no-org/no-such-model", "not available offline"),
                          ("./no/such/folder", "does not exist")):
        code = main(["run", "--model", spec, "--notebooks-dir", str(NOTEBOOKS),
                     "--runs-dir", str(runs)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and message in err and err.count("\n") == 0
    assert not runs.exists()


def test_invalid_dataset_is_refused_before_anything_is_written(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,label\nIs Paris in France?,maybe\n")
    runs = tmp_path / "runs"
    code = main(["run", "--dataset", str(bad), "--notebooks-dir", str(NOTEBOOKS),
                 "--runs-dir", str(runs)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "row 1, field 'label'" in err and err.count("\n") == 0
    assert not runs.exists()
