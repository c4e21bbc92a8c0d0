"""Dataset text is normalised (line endings, byte-order marks) or refused (control characters,
repeated columns, rows whose field count differs from the header), answers are compared by
token id, and validation stays linear in the number of rows."""

from __future__ import annotations

import pytest

from factcircuits.data.datasets import load_dataset, validate_file
from factcircuits.data.text import line_ending_note
from factcircuits.errors import DatasetError

YESNO = ['"Is Paris the capital of France?\n",True', '"Is Rome the capital of France?\n",False',
         '"Is Berlin in Germany?\n",True', '"Is Madrid in Peru?\n",False']


def _write(path, text: str, newline: str = "\n", bom: bool = False):
    data = text.replace("\n", newline).encode("utf-8")
    path.write_bytes(b"\xef\xbb\xbf" * bom + data)
    return path


def test_crlf_and_lf_copies_load_identically_and_the_crlf_one_says_so(tmp_path):
    text = "prompt,label\n" + "\n".join(YESNO) + "\n"
    lf = load_dataset(_write(tmp_path / "lf.csv", text))
    crlf = load_dataset(_write(tmp_path / "crlf.csv", text, "\r\n", bom=True))
    assert crlf.rows.equals(lf.rows)
    assert crlf.rows["prompt"].iloc[0] == "Is Paris the capital of France?\n"
    assert crlf.sha256 != lf.sha256  # provenance still names the file as it is
    assert crlf.rows.attrs["notes"] == ["the file has Windows (CRLF) line endings; normalised "
                                        "to \\n, quoted fields included, so the results equal "
                                        "those of the same file saved with \\n"]
    assert lf.rows.attrs["notes"] == []
    old_mac = load_dataset(_write(tmp_path / "cr.csv", text, "\r"))
    assert old_mac.rows["prompt"].tolist() == lf.rows["prompt"].tolist()


def test_crlf_inside_json_strings_is_normalised_too(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"prompt": "Is Paris in France?\\r\\n", "label": true}\n'
                    '{"prompt": "Is Rome in France?\\r\\n", "label": false}\n')
    rows = load_dataset(path).rows
    assert rows["prompt"].tolist() == ["Is Paris in France?\n", "Is Rome in France?\n"]
    assert rows.attrs["notes"] == [line_ending_note(2)]


@pytest.mark.parametrize("char, name", [("\x00", "NULL"), ("\x1b", "ESCAPE"),
                                        ("\u200f", "RIGHT-TO-LEFT MARK"),
                                        ("\u202e", "RIGHT-TO-LEFT OVERRIDE"),
                                        ("\ufeff", "ZERO WIDTH NO-BREAK SPACE")])
def test_control_characters_are_refused_with_row_and_column(tmp_path, char, name):
    path = _write(tmp_path / "c.csv", "prompt,answer,counterfactual\n"
                  "The capital of France is, Paris, Rome\n"
                  f"The capital of Italy is, Ro{char}me, Paris\n")
    problems = validate_file(path)
    assert len(problems) == 1
    assert f"row 2, field 'answer': U+{ord(char):04X}" in problems[0]
    assert f"({name}" in problems[0] and ") at character 4 of ' Ro" in problems[0]
    with pytest.raises(DatasetError, match="row 2, field 'answer'"):
        load_dataset(path)


def test_tab_and_newline_in_a_prompt_are_plain_text(tmp_path):
    path = _write(tmp_path / "ok.csv", 'prompt,label\n"Q:\tIs Rome in Italy?\n",True\n')
    assert validate_file(path) == []


def test_a_repeated_column_name_is_refused(tmp_path):
    path = _write(tmp_path / "dup.csv", "prompt,answer,counterfactual,answer\n"
                  "The capital of France is, Paris, Rome, Berlin\n")
    assert validate_file(path) == [f"{path}: column 'answer' appears 2 times in the header "
                                   "(columns 2, 4); keep one (a repeat would be renamed and "
                                   "ignored)"]


@pytest.mark.parametrize("row, fields", [
    ("The capital of France, Italy is, Paris, Rome", 4),  # an unquoted comma
    ("The capital of France is, Paris", 2),
])
def test_a_row_whose_field_count_differs_from_the_header_is_refused(tmp_path, row, fields):
    path = _write(tmp_path / "shift.csv", "prompt,answer,counterfactual\n"
                  "The capital of Spain is, Madrid, Rome\n\n" + row + "\n")
    (problem,) = validate_file(path)
    assert f"row 2 (line 4) has {fields} fields but the header has 3" in problem


def test_a_key_repeated_in_a_json_row_is_refused(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"prompt": "Is Rome in Italy?", "label": true, "label": false}\n')
    assert validate_file(path) == [f"{path}: line 1: key 'label' appears 2 times in one "
                                   "object; keep one"]


def test_answers_are_compared_by_token_id_not_by_decoded_piece(tmp_path):
    """Byte-level pieces of Chinese characters all decode to U+FFFD; the ids differ."""
    from factcircuits.models.loading import load_tokenizer
    from factcircuits.run import preflight

    tok = load_tokenizer("tiny")
    first = {w: tok.encode(w, add_special_tokens=False)[0] for w in ("巴黎", "罗马")}
    assert first["巴黎"] != first["罗马"]
    assert tok.decode([first["巴黎"]]) == tok.decode([first["罗马"]])  # what fooled the check
    path = _write(tmp_path / "zh.csv", "prompt,answer,counterfactual\n法国的首都是,巴黎,罗马\n"
                  "意大利的首都是,罗马,巴黎\n")
    checked = preflight.check_with_tokenizer(tok, load_dataset(path), {})
    assert checked.facts["multi_token_answer_rows"] == 2  # scored by their (distinct) first ids


def test_a_large_file_validates_and_fills_every_counterfactual(tmp_path):
    """Scale is measured by benchmarks/dataset_scale.py (100,000 rows in seconds); here a file
    large enough that the per-relation pools, not a handful of rows, do the filling."""
    n = 5_000
    lines = [f"The capital of Land{i} is, City{i % 997}, City{(i + 1) % 997},Land{i},r{i % 5}"
             for i in range(n)]
    path = _write(tmp_path / "big.csv", "prompt,answer,counterfactual,subject,relation\n"
                  + "\n".join(lines) + "\n")
    assert validate_file(path) == []
    ds = load_dataset(path)  # validation plus filling every counterfactual
    assert len(ds) == n and (ds.rows["corrupted_prompt"] != "").all()
