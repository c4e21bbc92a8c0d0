"""Dataset text: what is normalised (line endings, a byte-order mark) and what is refused
(control characters, CSV structure that cannot be meant), each with the row and column.

A quoted CSV field keeps the line ending it was saved with, so a file saved on Windows gives
prompts ending in "\\r\\n": another token sequence, other numbers, and no error. Normalising to
"\\n" makes the CRLF and LF copies of a dataset identical after loading; the load says so.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections import Counter
from pathlib import Path

import pandas as pd

from factcircuits.errors import DatasetError

# C0/C1 controls except tab and newline; bidirectional overrides, isolates and marks (they
# reorder what a reader sees without changing the tokens); a byte-order mark inside the text.
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e"
                     "\u2066-\u2069\ufeff]")
# Characters that look like a space or like nothing but are other tokens: zero-width ones
# (U+200B–U+200D, word joiner, Mongolian vowel separator) and spaces other than U+0020
# (no-break, thin, ideographic, …). A prompt holding one gives other numbers and no error.
ZERO_WIDTH = re.compile("[\u200b-\u200d\u2060\u180e]")
ODD_SPACE = re.compile("[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
_LINE_ENDS = re.compile(r"\r\n?")
_UNNAMED = {0x00: "NULL", 0x1B: "ESCAPE, as in terminal colour codes", 0x7F: "DELETE"}


def strip_bom(text: str) -> str:
    """Leading byte-order marks (a file concatenated from BOM-marked parts may hold several)."""
    return text.lstrip("\ufeff")


def normalise_line_endings(text: str) -> tuple[str, list[str]]:
    """A CSV file's CRLF / CR line endings → LF, quoted fields included; (text, notes)."""
    if "\r" not in text:
        return text, []
    crlf = text.count("\r\n")
    kind = "Windows (CRLF)" if crlf else "old Mac (CR)"
    return _LINE_ENDS.sub("\n", text), [
        f"the file has {kind} line endings; normalised to \\n, quoted fields included, so the "
        "results equal those of the same file saved with \\n"]


def normalise_cells(frame: pd.DataFrame, columns) -> tuple[pd.DataFrame, int]:
    """CRLF and lone CR inside text cells → LF; (frame, number of cells changed)."""
    changed = 0
    for column in columns:
        if column not in frame.columns:
            continue
        values = frame[column]
        has_cr = values.map(lambda v: isinstance(v, str) and "\r" in v)
        if has_cr.any():
            frame = frame.copy() if not changed else frame
            frame[column] = values.map(lambda v: _LINE_ENDS.sub("\n", v)
                                       if isinstance(v, str) else v)
            changed += int(has_cr.sum())
    return frame, changed


def line_ending_note(changed: int) -> str:
    return (f"{changed} field(s) held Windows (CRLF) or old Mac (CR) line endings; normalised "
            "to \\n, so the results equal those of the same file saved with \\n")


def control_problems(frame: pd.DataFrame, path, columns, limit: int = 20) -> list[str]:
    """One line per cell (up to `limit`) holding a control or bidi character."""
    problems: list[str] = []
    for column in columns:
        if column not in frame.columns:
            continue
        hits = frame[column].map(lambda v: isinstance(v, str) and CONTROL.search(v) is not None)
        for i in hits.to_numpy().nonzero()[0]:
            value = frame[column].iloc[i]
            char = CONTROL.search(value).group()
            name = _UNNAMED.get(ord(char)) or unicodedata.name(char, "a control character")
            problems.append(f"{path}: row {i + 1}, field {column!r}: U+{ord(char):04X} ({name}) "
                            f"at character {value.index(char) + 1} of {value[:40]!r}; remove "
                            "it (prompts and answers are plain text; \\n and tab are allowed)")
            if len(problems) >= limit:
                return problems
    return problems


def invisible_problem(value: str) -> str | None:
    """'U+00A0 (NO-BREAK SPACE) at character 25 of …: write a plain space' for the first
    zero-width or non-standard space character in `value`, else None."""
    for pattern, fix in ((ZERO_WIDTH, "remove it (it is invisible but is a token of its own)"),
                         (ODD_SPACE, "write a plain space (U+0020); this one tokenizes "
                                     "differently")):
        found = pattern.search(value)
        if found:
            char = found.group()
            name = unicodedata.name(char, "an invisible character")
            return (f"U+{ord(char):04X} ({name}) at character {found.start() + 1} of "
                    f"{value[:40]!r}; {fix}")
    return None


def invisible_problems(frame: pd.DataFrame, path, columns, limit: int = 20) -> list[str]:
    """One line per cell (up to `limit`) holding a zero-width or non-standard space."""
    problems: list[str] = []
    for column in columns:
        if column not in frame.columns:
            continue
        for i, value in enumerate(frame[column].tolist()):
            found = invisible_problem(value) if isinstance(value, str) else None
            if found:
                problems.append(f"{path}: row {i + 1}, field {column!r}: {found}")
                if len(problems) >= limit:
                    return problems
    return problems


def check_csv_structure(path: Path, text: str, sep: str) -> None:
    """Refuse a repeated column name (pandas renames the second `name.1` and it is ignored)
    and a row whose field count differs from the header's (an unquoted comma shifts every
    later column; a short row leaves the rest empty)."""
    reader = csv.reader(io.StringIO(text), delimiter=sep)
    try:
        header = next(reader, [])
        names = [h.strip() for h in header]
        repeated = [n for n, count in Counter(names).items() if count > 1]
        if repeated:
            at = [str(i + 1) for i, n in enumerate(names) if n == repeated[0]]
            raise DatasetError(f"{path}: column {repeated[0]!r} appears {len(at)} times in the "
                               f"header (columns {', '.join(at)}); keep one (a repeat would be "
                               "renamed and ignored)")
        row = 0
        for fields in reader:
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # a blank line: pandas skips it too
            row += 1
            if len(fields) != len(header):
                mark = "a comma" if sep == "," else "a tab"
                fix = (f"a field holds an unquoted {mark[2:]}: quote it (\"like, this\")"
                       if len(fields) > len(header) else
                       f"give every column a field (an empty one as two {mark[2:]}s in a row)")
                raise DatasetError(
                    f"{path}: row {row} (line {reader.line_num}) has {len(fields)} fields but "
                    f"the header has {len(header)} ({', '.join(names)}); {fix}")
    except csv.Error as exc:
        raise DatasetError(f"{path}: malformed CSV at line {reader.line_num} ({exc}); fix "
                           "quoting") from None


def no_repeated_keys(path: Path, where: str):
    """A json `object_pairs_hook` that refuses a key given twice in one object (json keeps
    the last silently)."""
    def hook(pairs):
        keys = Counter(k for k, _ in pairs)
        repeated = [k for k, n in keys.items() if n > 1]
        if repeated:
            raise DatasetError(f"{path}: {where}: key {repeated[0]!r} appears "
                               f"{keys[repeated[0]]} times in one object; keep one")
        return dict(pairs)
    return hook
