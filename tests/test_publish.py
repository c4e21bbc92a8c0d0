"""Versions and publishing: each render is a version; `factcircuits publish` puts every
version in one static site (a folder, or a git remote's gh-pages branch) with a versions page
whose changelog is computed from the runs. Rendered with the preview (no Quarto needed)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from factcircuits import cli
from factcircuits.report import publish, render, versions
from factcircuits.report.offline import external_assets
from factcircuits.run import pipeline

FIXTURES = Path(__file__).parent / "fixtures"
pytestmark = pytest.mark.slow  # the shared fixture makes three runs and two renders (~25 s)


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory):
    """A project rendered twice: one run, then a second run of other parameters added and the
    first run's parameters changed (seed 0 → 2)."""
    root = tmp_path_factory.mktemp("project")
    runs = root / "report" / "runs"
    dataset = str(FIXTURES / "datasets" / "fixture.csv")

    def run(seed):
        return pipeline.run(None, dataset, {"seed": seed}, notebooks_dir=FIXTURES / "notebooks",
                            runs_root=runs, progress=False)

    mp = pytest.MonkeyPatch()
    mp.setattr(shutil, "which", lambda name: None)  # the preview: no Quarto needed
    first = run(0)
    v1 = render.render(to="html", root=root, runs_root=runs)[-1]
    shutil.rmtree(first.run_dir)
    second, third = run(2), run(1)
    third_dir = third.run_dir
    # another dataset, so it is an added run and not a changed one
    record = json.loads((third_dir / "run.json").read_text())
    record["parameters"]["dataset"] = "other"
    (third_dir / "run.json").write_text(json.dumps(record))
    v2 = render.render(to="html", root=root, runs_root=runs)[-1]
    mp.undo()
    return root, v1, v2, (first, second, third)


def test_each_render_is_a_version_with_its_runs(two_versions):
    root, v1, v2, (first, second, third) = two_versions
    recorded = versions.load_versions(root / versions.VERSIONS)
    assert [r["id"] for r in recorded] == [v1.name, v2.name]
    assert [r["run_id"] for r in recorded[0]["runs"]] == [first.run_id]
    assert {r["run_id"] for r in recorded[1]["runs"]} == {second.run_id, third.run_id}
    assert recorded[1]["runs"][0]["numbers"]  # headline numbers, for the changelog
    assert not list((root / versions.VERSIONS).glob(".*"))  # nothing half-written left


def test_changelog_names_runs_parameters_and_numbers():
    run = {"run_id": "a", "title": "m on d", "model": "m", "dataset": "d", "task": "cloze",
           "parameters": {"seed": 0, "n_prompts": 8}, "numbers": {"x.acc": 0.769, "x.n": 8}}
    old = {"package": "0.1.0", "commit": "abc", "runs": [run]}
    changed = {**run, "run_id": "b", "parameters": {"seed": 0, "n_prompts": 6},
               "numbers": {"x.acc": 1.0, "x.n": 8}}
    other = {**run, "run_id": "c", "title": "m on e", "dataset": "e"}
    new = {"package": "0.1.0", "commit": "def", "runs": [changed, other]}
    log = versions.changelog(old, new)
    assert "Code: factcircuits 0.1.0 `abc` → 0.1.0 `def`." in log
    assert "Run added: m on e (`c`)." in log
    assert "Parameters changed in m on d (`a` → `b`): n_prompts=8 → 6." in log
    assert "Headline numbers moved in m on d (`a` → `b`): `x.acc` 0.769 → 1." in log
    assert not any("removed" in line for line in log)  # a is b with other parameters
    beside = versions.changelog(old, {**old, "runs": [run, {**changed, "run_id": "d"}]})
    assert beside == ["Run added: m on d (`d`): like `a` but n_prompts=8 → 6."]
    assert versions.changelog(None, new) == ["First version."]
    assert versions.changelog(new, new) == ["No change in runs, parameters or headline numbers."]


def test_a_number_inside_its_interval_has_not_moved():
    old = {"k": 0.50, "k_ci_low": 0.40, "k_ci_high": 0.60, "j": 1.0, "j_ci_low": 0.9,
           "j_ci_high": 1.1}
    new = {"k": 0.55, "k_ci_low": 0.45, "k_ci_high": 0.65, "j": 1.5, "j_ci_low": 1.4,
           "j_ci_high": 1.6}
    assert versions.moved_numbers(old, new) == ["`j` 1 → 1.5 (outside [0.9, 1.1])"]
    # the headlines store intervals as `<key>_ci` = [low, high]
    assert versions.interval_numbers({"01_task_check": {"accuracy": 0.8,
                                                        "accuracy_ci": [0.6, 0.95],
                                                        "known": "top1"}}) == {
        "01_task_check.accuracy_ci_low": 0.6, "01_task_check.accuracy_ci_high": 0.95}


def check_site(site: Path, v1: str, v2: str) -> None:
    latest = (site / "latest" / "index.html").read_text()
    assert f"Version {v2}" in latest and "the latest" in latest
    old = (site / "versions" / v1 / "index.html").read_text()
    assert "An earlier version" in old and "../../latest/index.html" in old
    page = (site / "versions" / "index.html").read_text()
    assert page.index(v2) < page.index(v1)  # newest first
    for said in ("Run added: default on other", "Parameters changed in default on fixture",
                 "seed=0 → 2", "Headline numbers moved", "First version."):
        assert said in page, said
    # plotly.js once for the whole site, loaded by relative path from every version
    assert len(list((site / publish.SHARED).glob("*.js"))) <= 1
    assert external_assets(site) == []


def test_publish_to_a_folder_replaces_it_whole(two_versions, tmp_path, monkeypatch, capsys):
    root, v1, v2, _ = two_versions
    monkeypatch.setenv("FACTCIRCUITS_ROOT", str(root))
    target = tmp_path / "site"
    assert cli.main(["publish", "--to", str(target)]) == 0
    assert f"published 2 version(s), latest {v2.name}" in capsys.readouterr().out
    check_site(target, v1.name, v2.name)
    (target / "stale.html").write_text("from an earlier publish")
    assert cli.main(["publish", "--to", str(target)]) == 0
    assert not (target / "stale.html").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers


def test_publish_refuses_a_folder_that_is_not_a_site(two_versions, tmp_path, monkeypatch,
                                                     capsys):
    root, *_ = two_versions
    monkeypatch.setenv("FACTCIRCUITS_ROOT", str(root))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert cli.main(["publish", "--to", str(tmp_path / "mine")]) == 2
    err = capsys.readouterr().err
    assert "is not a site published by factcircuits" in err and len(err.splitlines()) == 1
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert cli.main(["publish", "--to", str(tmp_path / "x"), "--versions-dir",
                     str(tmp_path / "none")]) == 2
    assert "no rendered versions" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_publish_to_gh_pages_of_a_local_bare_repository(two_versions, tmp_path, monkeypatch,
                                                        capsys):
    root, v1, v2, _ = two_versions
    monkeypatch.setenv("FACTCIRCUITS_ROOT", str(root))
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    # first only the first version (the branch is created), then both (a commit on top)
    only_first = tmp_path / "first"
    shutil.copytree(v1, only_first / v1.name)
    assert cli.main(["publish", "--gh-pages", str(remote), "--versions-dir",
                     str(only_first)]) == 0
    assert cli.main(["publish", "--gh-pages", str(remote)]) == 0
    assert "gh-pages" in capsys.readouterr().out
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--branch", "gh-pages", str(remote), str(clone)],
                   check=True)
    check_site(clone, v1.name, v2.name)
    assert (clone / ".nojekyll").exists()
    # a second publish with nothing new leaves the branch as it is; history is kept
    assert cli.main(["publish", "--gh-pages", str(remote)]) == 0
    assert "(unchanged)" in capsys.readouterr().out
    log = subprocess.run(["git", "--git-dir", str(remote), "log", "--oneline", "gh-pages"],
                         capture_output=True, text=True, check=True).stdout
    assert len(log.splitlines()) == 2


def test_credentials_never_reach_the_output(two_versions, monkeypatch, capsys):
    root, *_ = two_versions
    monkeypatch.setenv("FACTCIRCUITS_ROOT", str(root))
    assert publish.redact("push https://me:ghp_secret@github.com/o/r.git failed") == \
        "push https://***@github.com/o/r.git failed"
    # nothing listens on port 9: the push fails, and says so without the token
    assert cli.main(["publish", "--gh-pages", "https://me:ghp_secret@127.0.0.1:9/r.git"]) == 2
    out = capsys.readouterr()
    assert "ghp_secret" not in out.err + out.out and "https://***@127.0.0.1:9" in out.err


def test_quarto_render_after_a_run_was_deleted_and_its_version(two_versions, tmp_path,
                                                                monkeypatch):
    """Quarto reads report/_generated/book.yml before its pre-render: it is rewritten before
    Quarto starts (and copied into the folder Quarto renders), so a deleted run's chapters
    are gone; the version lists the runs shown."""
    import yaml
    from test_quarto_project import copy_project

    root, *_ = two_versions
    project = copy_project(tmp_path / "project")
    shutil.copytree(root / "report" / "runs", project / "report" / "runs")
    stale = project / "report" / "_generated" / "book.yml"
    stale.parent.mkdir(parents=True)
    stale.write_text(yaml.safe_dump({"book": {"chapters": [
        {"part": "gone", "chapters": ["report/runs/deleted/01_first.ipynb"]}]}}))
    seen, real_run = {}, subprocess.run

    def fake_quarto(args, **kwargs):
        if args[0] != "quarto":
            return real_run(args, **kwargs)
        where = Path(kwargs["cwd"])  # the copy of the book that Quarto renders
        seen["book"] = (where / "report" / "_generated" / "book.yml").read_text()
        (where / "report" / "_output").mkdir(parents=True)
        (where / "report" / "_output" / "index.html").write_text("<body>site</body>")
        return subprocess.CompletedProcess(args, 0)

    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(subprocess, "run", fake_quarto)
    output, version = render.render_quarto("html", project)
    assert "deleted" not in seen["book"] and "01_first.ipynb" in seen["book"]
    record = json.loads((version / "version.json").read_text())
    assert record["kind"] == "quarto" and len(record["runs"]) == 2
    assert (version / "site" / "index.html").read_text() == "<body>site</body>"


def test_publish_keeps_what_it_does_not_own_and_never_follows_a_damaged_id(
        two_versions, tmp_path, monkeypatch, capsys):
    root, v1, v2, _ = two_versions
    monkeypatch.setenv("FACTCIRCUITS_ROOT", str(root))
    # a gh-pages branch holding a custom domain (CNAME) before the first publish
    remote, seed = tmp_path / "remote.git", tmp_path / "seed"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    subprocess.run(["git", "init", "-q", "-b", "gh-pages", str(seed)], check=True)
    (seed / "CNAME").write_text("facts.example.org\n")
    git = ["git", "-C", str(seed), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "CNAME"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "domain"], check=True)
    subprocess.run([*git, "push", "-q", str(remote), "gh-pages"], check=True)
    assert cli.main(["publish", "--gh-pages", str(remote)]) == 0
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--branch", "gh-pages", str(remote), str(clone)],
                   check=True)
    assert (clone / "CNAME").read_text() == "facts.example.org\n"
    check_site(clone, v1.name, v2.name)
    # a version whose id is a path, one with a wrong type, one unreadable: each said and left
    # out, nothing written outside --to
    store = tmp_path / "store"
    for name, change in (("escape", lambda r: r | {"id": "../../../x"}),
                         ("typed", lambda r: r | {"runs": "none"}), ("broken", None)):
        shutil.copytree(v1, store / name)
        path = store / name / "version.json"
        path.write_text("{oops" if change is None else json.dumps(change(
            json.loads(path.read_text()))))
    shutil.copytree(v2, store / v2.name)
    out = tmp_path / "deep" / "a" / "b" / "site"
    assert cli.main(["publish", "--to", str(out), "--versions-dir", str(store)]) == 0
    err = capsys.readouterr().err
    assert "note: version escape left out: version.json: id '../../../x' is not a plain " \
           "folder name" in err
    assert "note: version typed left out: version.json: 'runs' is a str" in err
    assert "note: version broken left out: version.json unreadable" in err
    assert not (tmp_path / "deep" / "x").exists() and not (tmp_path / "x").exists()
    assert [p.name for p in (out / "versions").iterdir() if p.is_dir()] == [v2.name]


def test_a_refused_push_says_gits_reason_not_only_failed_to_push():
    proc = subprocess.CompletedProcess(["git", "push"], 1, "", (
        "remote: error: refusing to update checked out branch: refs/heads/gh-pages\n"
        "remote: error: By default, updating the current branch in a non-bare repository\n"
        " ! [remote rejected] HEAD -> gh-pages (branch is currently checked out)\n"
        "error: failed to push some refs to '/tmp/x'\n"))
    assert publish.git_reason(proc) == ("remote: error: refusing to update checked out branch: "
                                        "refs/heads/gh-pages")
    plain = subprocess.CompletedProcess(["git"], 128, "", "fatal: not a git repository\n")
    assert publish.git_reason(plain) == "fatal: not a git repository"
