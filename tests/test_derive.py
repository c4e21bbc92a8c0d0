"""from-relations: counts, balance, determinism, counterfactuals never equal to the truth.

Truth is read straight from the relation JSON here (independently of factcircuits.data.derive)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from factcircuits import cli
from factcircuits.data import datasets
from factcircuits.data.derive import DEFAULT_RELATIONS, QUESTION_TEMPLATES, derive

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "relations"
FIXTURE = Path(__file__).parent / "fixtures" / "datasets" / "relations"
needs_shared = pytest.mark.skipif(not (SHARED / "factual").is_dir(),
                                  reason="../shared/data/relations not present")


def truth(folder: Path, relation: str) -> dict[str, set[str]]:
    facts = defaultdict(set)
    for s in json.loads((folder / f"{relation}.json").read_text())["samples"]:
        facts[s["subject"].strip()].add(s["object"].strip())
    return facts


def check_cloze_against_truth(rows, folder):
    for rel, group in rows.groupby("relation"):
        facts = truth(folder, rel)
        for r in group.itertuples():
            assert r.answer.startswith(" ") and r.answer.strip() in facts[r.subject]
            assert r.counterfactual.strip() not in facts[r.subject]  # never the truth
            assert r.counterfactual.strip() in facts[r.corrupted_subject]  # flips the metric
            assert r.prompt.replace(r.subject, r.corrupted_subject) == r.corrupted_prompt


def check_yesno_against_truth(rows, folder):
    for rel, group in rows.groupby("relation"):
        facts = truth(folder, rel)
        for r in group.itertuples():
            obj = r.clue.removeprefix("object: ")
            assert r.prompt.endswith("?\n") and obj in r.prompt and r.subject in r.prompt
            assert r.label == (obj in facts[r.subject])
            assert (obj in facts[r.corrupted_subject]) == (not r.label)  # swap flips truth


def test_fixture_cloze_counts_and_truth():
    rows = derive(FIXTURE, ["country_capital_city", "product_by_company"], "cloze", 7, seed=1)
    assert rows.groupby("relation").size().to_dict() == {
        "country_capital_city": 7, "product_by_company": 7}
    check_cloze_against_truth(rows, FIXTURE)
    assert rows["prompt"].str.startswith("The capital city of").sum() == 7  # first template
    # Android has two makers: neither may serve as its counterfactual
    android = rows[rows["subject"] == "Android"]
    assert len(android) == 1
    assert not android["counterfactual"].str.strip().isin(["Google", "Android Inc"]).any()


def test_fixture_yesno_balanced_and_true_to_facts():
    rows = derive(FIXTURE, ["country_capital_city"], "yesno", 8, seed=3)
    assert len(rows) == 8 and rows["label"].sum() == 4
    check_yesno_against_truth(rows, FIXTURE)
    assert rows["subject"].is_unique


def test_loads_as_valid_dataset(tmp_path):
    for task in ("cloze", "yesno"):
        path = datasets.write_dataset(derive(FIXTURE, ["country_capital_city"], task, 6),
                                      tmp_path / f"{task}.csv")
        assert datasets.validate_file(path) == []
        assert datasets.load_dataset(path).task == task


def test_unknown_relation_is_a_user_error(tmp_path, capsys):
    code = cli.main(["dataset", "from-relations", "--relations", str(FIXTURE), "--relation",
                     "moon_phase", "--out", str(tmp_path / "x.csv")])
    assert code == 2 and "moon_phase" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


def test_every_relation_file_has_a_question_template():
    assert set(QUESTION_TEMPLATES) == set(datasets.RELATION_FILES)
    for template in QUESTION_TEMPLATES.values():
        assert template.endswith("?\n") and "{subject}" in template and "{object}" in template


@needs_shared
def test_shared_relations_counts_balance_and_truth():
    folder = SHARED / "factual"
    cloze = derive(folder, None, "cloze", 30, seed=0)
    assert cloze["relation"].nunique() == len(DEFAULT_RELATIONS) >= 8
    assert len(cloze) >= 200
    # each relation: min(n, subjects that have a partner with a different object)
    sizes = cloze.groupby("relation").size()
    for rel in DEFAULT_RELATIONS:
        facts = truth(folder, rel)
        eligible = [s for s in facts if any(not facts[s] & o for t, o in facts.items() if t != s)]
        assert sizes[rel] == min(30, len(eligible))
    check_cloze_against_truth(cloze, folder)
    yesno = derive(folder, None, "yesno", 30, seed=0)
    per_rel = yesno.groupby("relation")["label"].agg(["sum", "size"])
    assert (per_rel["sum"] * 2 == per_rel["size"]).all()  # balanced per relation
    check_yesno_against_truth(yesno, folder)


@needs_shared
def test_same_seed_same_bytes_and_shipped_files_reproduce(tmp_path):
    def build(seed, name):
        out = tmp_path / name
        assert cli.main(["dataset", "from-relations", "--relations", str(SHARED), "--task",
                         "both", "--n-per-relation", "30", "--seed", str(seed),
                         "--out", str(out)]) == 0
        return {t: (tmp_path / f"{out.stem}_{t}.csv").read_bytes() for t in ("cloze", "yesno")}

    first, again, other = build(0, "a.csv"), build(0, "b.csv"), build(1, "c.csv")
    assert first == again
    assert first["cloze"] != other["cloze"] and first["yesno"] != other["yesno"]
    assert (tmp_path / "LICENSE").read_text().startswith("MIT License")
    shipped = datasets.data_dir() / "relations"
    assert (shipped / "relations_cloze.csv").read_bytes() == first["cloze"]
    assert (shipped / "relations_yesno.csv").read_bytes() == first["yesno"]
