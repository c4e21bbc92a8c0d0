"""Reading dataset files: the formats a dataset may come in, each read into a raw table of
cells (strings, JSON/parquet booleans kept), with a one-line error that says what was found and
which formats are read.

  .csv            comma-separated, header row first (UTF-8)
  .tsv            tab-separated, header row first (UTF-8)
  .jsonl .ndjson  one JSON object per line
  .json           one JSON array of row objects
  .parquet        a parquet table (pyarrow)
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd

from factcircuits.data.text import (
    check_csv_structure,
    no_repeated_keys,
    normalise_line_endings,
    strip_bom,
)
from factcircuits.errors import DatasetError

TEXT_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".json")
SUFFIXES = (*TEXT_SUFFIXES, ".parquet")
FORMATS_READ = ".csv, .tsv, .jsonl, .json (an array of row objects) or .parquet"
_PARQUET_MAGIC = b"PAR1"


def check_is_file(path: Path, what: str = "dataset") -> None:
    """One line for the usual wrong kinds of path: a folder, or nothing there."""
    if path.is_dir():
        raise DatasetError(f"{what} {path}: is a folder; pass one file ({FORMATS_READ})")
    if not path.is_file():
        raise DatasetError(f"{what} {path}: no such file")


def read_text(path: Path, data: bytes) -> str:
    try:
        return strip_bom(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DatasetError(
            f"{path}: not UTF-8 at byte offset {exc.start} (line {line}, byte "
            f"0x{data[exc.start]:02x}); re-save the file as UTF-8"
        ) from None


def read_table(path: Path) -> tuple[bytes, pd.DataFrame]:
    """The file's bytes and its raw table, in file order; no validation beyond syntax."""
    path = Path(path)
    check_is_file(path)
    data = path.read_bytes()
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DatasetError(f"{path}: unsupported format {suffix or '(no suffix)'!r}; datasets "
                           f"are read from {FORMATS_READ}")
    if suffix == ".parquet" or data.startswith(_PARQUET_MAGIC):
        if suffix != ".parquet":
            raise DatasetError(f"{path}: this is a parquet file; name it .parquet")
        return data, _parquet(path, data)
    text = read_text(path, data)
    if not text.strip():
        raise DatasetError(f"{path}: empty file; expected a header row and data rows")
    if suffix in (".jsonl", ".ndjson"):
        return data, _json_lines(path, text)
    if suffix == ".json":
        return data, _json_array(path, text)
    if text.lstrip().startswith(("[", "{")):
        raise DatasetError(f"{path}: looks like JSON, not CSV; name it .json (an array of row "
                           "objects) or .jsonl (one object per line)")
    sep = "\t" if suffix == ".tsv" else ","
    text, notes = normalise_line_endings(text)
    check_csv_structure(path, text, sep)
    try:  # index_col=False: never take a first column as the index, whatever the field count
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, sep=sep,
                            index_col=False)
        frame.attrs["notes"] = notes
        return data, frame
    except pd.errors.ParserError as exc:
        raise DatasetError(f"{path}: malformed CSV ({str(exc).strip()}); fix quoting") from None
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{path}: empty file; expected a header row and data rows") from None


def _no_constants(where: str):
    """json's `parse_constant`: NaN, Infinity and -Infinity are not JSON (Python accepts
    them, and a NaN relation would silently become no relation)."""
    def refuse(name):
        raise DatasetError(f"{where}: {name} is not JSON; write null (or leave the field out) "
                           "or text")
    return refuse


def _json_lines(path: Path, text: str) -> pd.DataFrame:
    records = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, object_pairs_hook=no_repeated_keys(path, f"line {n}"),
                             parse_constant=_no_constants(f"{path}: line {n}"))
        except json.JSONDecodeError as exc:
            hint = ("; a JSON array belongs in a .json file" if n == 1 and line.lstrip()
                    .startswith("[") else "; one JSON object per line")
            raise DatasetError(f"{path}: line {n}: invalid JSON ({exc.msg}){hint}") from None
        if not isinstance(obj, dict):
            hint = "; a JSON array belongs in a .json file" if isinstance(obj, list) else ""
            raise DatasetError(f"{path}: line {n}: expected a JSON object per line{hint}")
        records.append(obj)
    return pd.DataFrame(records, dtype=object)


def _json_array(path: Path, text: str) -> pd.DataFrame:
    try:
        data = json.loads(text, object_pairs_hook=no_repeated_keys(path, "the array"),
                          parse_constant=_no_constants(f"{path}"))
    except json.JSONDecodeError as exc:
        hint = ("; one object per line is JSON Lines: name the file .jsonl"
                if exc.msg == "Extra data" else "")
        raise DatasetError(f"{path}: invalid JSON ({exc}){hint}") from None
    if isinstance(data, dict):
        raise DatasetError(f"{path}: a JSON object; a .json dataset is an array of row "
                           'objects: [{"prompt": ..., ...}, ...]')
    if not isinstance(data, list):
        raise DatasetError(f"{path}: a JSON {type(data).__name__}; expected an array of row "
                           "objects")
    bad = next((i for i, row in enumerate(data, start=1) if not isinstance(row, dict)), None)
    if bad is not None:
        raise DatasetError(f"{path}: item {bad} of the array is not an object; each row is "
                           '{"prompt": ..., ...}')
    return pd.DataFrame(data, dtype=object)


def _parquet(path: Path, data: bytes) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 -- pyarrow raises many kinds for a bad file
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise DatasetError(f"{path}: not a readable parquet file ({text})") from None
    frame = frame.astype(object)
    return frame.where(frame.notna(), None)
