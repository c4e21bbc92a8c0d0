"""Fact datasets: one schema for both tasks (yes/no verification and cloze recall), read from
CSV, TSV, JSON Lines, a JSON array or parquet (`formats`), validated with one-line errors,
with counterfactual (corrupted) prompts for patching.

Columns of `FactDataset.rows`:
  task, prompt, label (bool; True for every cloze row), answer (cloze object with its leading
  space, "" for yes/no), counterfactual (cloze counterfactual object, "" for yes/no), subject,
  relation, corrupted_prompt, corrupted_subject, clue, corruption_note.

Token lengths of clean vs corrupted prompts depend on the tokenizer, so the data records only
word/character-length equality in `corruption_note`; patching code groups or skips by tokens.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from factcircuits.data import text
from factcircuits.data.counterfactuals import make_counterfactual
from factcircuits.data.formats import FORMATS_READ, check_is_file, read_table
from factcircuits.errors import DatasetError
from factcircuits.files import atomic_write

COLUMNS = [
    "task", "prompt", "label", "answer", "counterfactual", "subject", "relation",
    "corrupted_prompt", "corrupted_subject", "clue", "corruption_note",
]
TASKS = ("yesno", "cloze")
DEFAULT_DATASET = "paris-cloze"

# Shipped names → paths relative to data_dir(). The filtered set exists only once built.
SHIPPED = {
    "paris-cloze": "paris_cloze.csv",
    "paris-yesno": "paris_yesno.csv",
    "relations-cloze": "relations/relations_cloze.csv",
    "relations-yesno": "relations/relations_yesno.csv",
    "relations-cloze-smollm2": "relations/relations_cloze.smollm2-135m.csv",
}

# The 26 relation files of Hernandez et al. (evandez/relations, data/factual), by file stem.
RELATION_FILES = (
    "city_in_country", "company_ceo", "company_hq", "country_capital_city", "country_currency",
    "country_language", "country_largest_city", "food_from_country", "landmark_in_country",
    "landmark_on_continent", "person_band_lead_singer", "person_father", "person_mother",
    "person_native_language", "person_occupation", "person_plays_instrument",
    "person_plays_position_in_sport", "person_plays_pro_sport", "person_university",
    "pokemon_evolutions", "presidents_birth_year", "presidents_election_year",
    "product_by_company", "star_constellation", "superhero_archnemesis", "superhero_person",
)
# Relations used by the hand-written Paris sets that the relation files lack.
EXTRA_RELATIONS = ("landmark_in_city", "river_in_city", "city_on_continent")
# Built-in relation names. Any label is accepted in a dataset (counterfactuals swap subjects
# within the file's own relations); only `derive` needs a built-in one (its yes/no templates).
KNOWN_RELATIONS = frozenset(RELATION_FILES + EXTRA_RELATIONS)

_TRUE = {"True", "true", "1"}
_FALSE = {"False", "false", "0"}


@dataclass
class FactDataset:
    name: str
    path: Path
    sha256: str
    task: str
    rows: pd.DataFrame

    def __len__(self) -> int:
        return len(self.rows)


# ---------------------------------------------------------------- locating shipped data

def data_dir() -> Path:
    """The repository's `data/` folder: $FACTCIRCUITS_DATA_DIR, else found from this file
    (src/factcircuits/data/datasets.py → repo root), else ./data."""
    env = os.environ.get("FACTCIRCUITS_DATA_DIR")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[3]  # editable/source install: <repo>/src/factcircuits
    if (repo / "data").is_dir():
        return repo / "data"
    return Path.cwd() / "data"


def list_datasets() -> list[str]:
    """Shipped dataset names whose files exist here."""
    root = data_dir()
    return [name for name, rel in SHIPPED.items() if (root / rel).is_file()]


def resolve(name_or_path: str | os.PathLike) -> tuple[str, Path]:
    key = str(name_or_path)
    if key in SHIPPED:
        path = data_dir() / SHIPPED[key]
        if not path.is_file():
            raise DatasetError(
                f"dataset {key!r} is not built here ({path} missing); shipped: "
                f"{', '.join(list_datasets()) or 'none'}"
            )
        return key, path
    path = Path(key).expanduser()
    if not path.exists():
        raise DatasetError(
            f"no dataset {key!r}: not a file and not a shipped name "
            f"({', '.join(SHIPPED)}); pass a {FORMATS_READ} file"
        )
    check_is_file(path)
    return path.stem, path


# ---------------------------------------------------------------- validation

def _cell(value) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    return str(value)


def _parse_label(value) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = _cell(value).strip()
    return True if text in _TRUE else False if text in _FALSE else None


def infer_task(frame: pd.DataFrame) -> str:
    if "task" in frame.columns:
        tasks = {_cell(t).strip() for t in frame["task"]} - {""}
        if len(tasks) == 1 and next(iter(tasks)) in TASKS:
            return next(iter(tasks))
    return "cloze" if "answer" in frame.columns else "yesno"


def check_frame(frame: pd.DataFrame, path: Path | str) -> tuple[pd.DataFrame, list[str]]:
    """Normalize a raw table to the schema. Returns (rows, problems); problems are one-line
    messages naming file, 1-based data row and field. Duplicate rows are warned, not errors."""
    problems: list[str] = []
    if len(frame) == 0:
        return frame, [f"{path}: empty file (header but no data rows); add at least one row"]
    task = infer_task(frame)
    required = ["prompt", "answer", "counterfactual"] if task == "cloze" else ["prompt", "label"]
    texts = [c for c in frame.columns if c in COLUMNS and c != "label"]
    frame, crlf = text.normalise_cells(frame, texts)
    problems += text.control_problems(frame, path, texts)
    problems += text.invisible_problems(frame, path, texts)
    problems += column_name_problems(frame.columns, path)
    problems += text_type_problems(frame, path, texts)
    if problems:  # a misnamed column or a list in a text field makes every later check wrong
        return frame, problems
    missing = [c for c in required if c not in frame.columns]
    if missing:
        return frame, [
            f"{path}: missing column {c!r} for task {task!r}; add a {c!r} column "
            f"(required for {task}: {', '.join(required)})"
            for c in missing
        ]

    out = {c: [] for c in COLUMNS}
    for i, raw in enumerate(frame.to_dict("records"), start=1):
        where = f"{path}: row {i}"
        row = {c: _cell(raw.get(c)) for c in COLUMNS if c != "label"}
        row_task = row["task"].strip() or task
        if row_task not in TASKS:
            problems.append(f"{where}, field 'task': {row_task!r} is not yesno or cloze")
        elif row_task != task:
            problems.append(
                f"{where}, field 'task': {row_task!r} in a {task} file; one task per file"
            )
        row["task"] = task
        if not row["prompt"].strip():
            problems.append(f"{where}, field 'prompt': empty prompt; write the question/prefix")
        elif row["subject"].strip() and row["subject"].strip() not in row["prompt"]:
            problems.append(f"{where}, field 'subject': {row['subject'].strip()!r} is not in the "
                            f"prompt {_tail(row['prompt'])!r}; write it as the prompt spells it "
                            "(the analyses find the subject's tokens in the prompt)")
        if task == "yesno" or ("label" in raw and _cell(raw.get("label")).strip()):
            label = _parse_label(raw.get("label"))
            if label is None:
                problems.append(
                    f"{where}, field 'label': {_cell(raw.get('label'))!r} is not a label; "
                    "use True/False (also accepted: true/false, 1/0)"
                )
            elif task == "cloze" and not label:
                problems.append(f"{where}, field 'label': cloze rows are always True; drop it")
        else:
            label = True
        row["label"] = bool(label)
        if task == "cloze":
            ans, cf = row["answer"], row["counterfactual"]
            if not ans.strip():
                problems.append(f"{where}, field 'answer': empty; give the correct object")
            if not cf.strip():
                problems.append(
                    f"{where}, field 'counterfactual': empty; give another object of the "
                    "same relation"
                )
            elif cf.strip().casefold() == ans.strip().casefold():
                problems.append(
                    f"{where}, field 'counterfactual': {cf!r} equals the correct answer; "
                    "use a different object of the same relation"
                )
            for name, value in (("answer", ans), ("counterfactual", cf)):
                found = spacing_problem(row["prompt"], value)
                if found:
                    problems.append(f"{where}, field {name!r}: {found}")
        else:
            row["answer"] = row["counterfactual"] = ""
        for c in COLUMNS:
            out[c].append(row[c])

    rows = pd.DataFrame(out, columns=COLUMNS)
    rows["label"] = rows["label"].astype(bool)
    rows.attrs["notes"] = list(frame.attrs.get("notes", [])) + (
        [text.line_ending_note(crlf)] if crlf else [])
    _warn_duplicates(rows, path)
    return rows, problems


def column_name_problems(columns, path) -> list[str]:
    """A header that means a known column but does not spell it (' answer', 'Prompt',
    'subjet'): named with the column it resembles, instead of a later 'missing column'."""
    problems = []
    for name in map(str, columns):
        if name in COLUMNS:
            continue
        plain = name.strip().lower()
        close = ([plain] if plain in COLUMNS else
                 difflib.get_close_matches(plain, COLUMNS, n=1, cutoff=0.8))
        if close and close[0] not in columns:
            problems.append(f"{path}: column {name!r} is not a known column; did you mean "
                            f"{close[0]!r}? (names are lower case, without spaces)")
    return problems


def text_type_problems(frame: pd.DataFrame, path, columns, limit: int = 20) -> list[str]:
    """Text fields hold text: a list, an object, a number or true/false in one (JSON, parquet)
    would be scored as its Python repr ("['The capital of France is']")."""
    problems = []
    for column in columns:
        if column not in frame.columns:
            continue
        for i, value in enumerate(frame[column].tolist()):
            empty = value is None or (isinstance(value, float) and pd.isna(value))  # absent
            if not empty and not isinstance(value, str):
                problems.append(f"{path}: row {i + 1}, field {column!r}: a "
                                f"{type(value).__name__} ({str(value)[:40]}); write text "
                                "(a quoted string)")
                if len(problems) >= limit:
                    return problems
    return problems


def _warn_duplicates(rows: pd.DataFrame, path) -> None:
    key = rows["prompt"].str.strip() + "\x00" + rows["answer"].str.strip()
    repeated = key[key.duplicated(keep=False)]  # grouping only these keeps it linear and fast
    if len(repeated):
        groups = repeated.groupby(repeated, sort=False).groups
        desc = "; ".join("rows " + ", ".join(str(i + 1) for i in idx)
                         for idx in sorted(list(v) for v in groups.values()))
        warnings.warn(f"{path}: duplicate rows (same prompt and answer): {desc}", stacklevel=3)


def spacing_problem(prompt: str, answer: str) -> str | None:
    """Where the answer meets the prompt, what would change the tokens unseen: an answer
    without its leading space, or a space on both sides (the model would see two)."""
    if not answer.strip():
        return None
    if needs_leading_space(prompt, answer):
        return (f"{answer!r} has no leading space, but it continues the prompt "
                f"{_tail(prompt)!r}: write {' ' + answer!r} (the model predicts the space with "
                "the word)")
    if prompt[-1:] in (" ", "\t") and answer[:1].isspace():
        return (f"{answer!r} starts with a space and the prompt {_tail(prompt)!r} ends with "
                "one, so the model would be scored on a second space; remove the prompt's "
                "trailing space")
    return None


def needs_leading_space(prompt: str, answer: str) -> bool:
    """A cloze answer continues the prompt; unless the prompt ends in whitespace (or in a
    script written without spaces, e.g. Chinese), the answer's first token carries a space."""
    if not prompt or prompt[-1].isspace() or answer[:1].isspace():
        return False
    return unicodedata.east_asian_width(prompt[-1]) not in ("W", "F")


def _tail(prompt: str, n: int = 24) -> str:
    return prompt if len(prompt) <= n else "…" + prompt[-n:]


def notes(rows: pd.DataFrame) -> list[str]:
    """Things worth saying about a valid dataset that are not errors (one line each)."""
    out = list(rows.attrs.get("notes", []))
    rels = sorted(set(rows["relation"].str.strip()) - {""})
    own = [r for r in rels if r not in KNOWN_RELATIONS]
    if own:
        more = f" (+{len(own) - 8} more)" if len(own) > 8 else ""
        out.append(f"relation(s) {', '.join(map(repr, own[:8]))}{more} are not built-in: "
                   "fine for runs (corrupted prompts swap subjects within each relation of "
                   "this file); `dataset from-relations --task yesno` has question templates "
                   "for the built-in ones only")
    if len(rows) and rows["task"].iloc[0] == "cloze":
        several = {c: rows[c].str.split().str.len() > 1 for c in ("answer", "counterfactual")}
        either = (several["answer"] | several["counterfactual"]).to_numpy()
        if either.any():
            i = int(either.nonzero()[0][0])
            field = "answer" if several["answer"].iloc[i] else "counterfactual"
            value, count = rows[field].iloc[i], int(either.sum())
            out.append(f"{count} row(s) have a multi-word answer or counterfactual (row {i + 1} "
                       f"{field} {value!r}): a run scores a cloze answer by its first token "
                       "(ROME convention); `dataset validate --model M` shows the pieces, "
                       "`run --single-token-answers` refuses them")
    return out


def validate_file(path: str | os.PathLike) -> list[str]:
    """Every problem in the file (empty list: valid)."""
    return check_file(path)[0]


def check_file(path: str | os.PathLike) -> tuple[list[str], FactDataset | None]:
    """(every problem in the file, the dataset when there is none): one read, one check."""
    path = Path(path)
    try:
        data, frame = read_table(path)
    except DatasetError as exc:
        return [str(exc)], None
    rows, problems = check_frame(frame, path)
    if problems:
        return problems, None
    return [], _dataset(path.stem, path, data, rows)


def _dataset(name: str, path: Path, data: bytes, rows: pd.DataFrame) -> FactDataset:
    rows = make_counterfactual(rows, seed=0)
    return FactDataset(name, path, hashlib.sha256(data).hexdigest(), rows["task"].iloc[0], rows)


def raise_first(problems: list[str], path) -> None:
    more = len(problems) - 1
    tail = f" (+{more} more; see `factcircuits dataset validate {path}`)" if more else ""
    raise DatasetError(problems[0] + tail)


def load_dataset(name_or_path: str | os.PathLike = DEFAULT_DATASET, *,
                 fill_counterfactuals: bool = True) -> FactDataset:
    """Load a shipped dataset by name or a CSV/JSONL file by path; DatasetError if invalid.
    Missing corrupted prompts of cloze rows are filled by `make_counterfactual` (seed 0)."""
    name, path = resolve(name_or_path)
    data, frame = read_table(path)
    rows, problems = check_frame(frame, path)
    if problems:
        raise_first(problems, path)
    if fill_counterfactuals:
        rows = make_counterfactual(rows, seed=0)
    task = rows["task"].iloc[0]
    return FactDataset(name, path, hashlib.sha256(data).hexdigest(), task, rows)


def from_frame(frame: pd.DataFrame, name: str = "in-memory") -> FactDataset:
    """Validate an in-memory table (e.g. freshly generated) into a FactDataset."""
    raw = frame.copy()
    if "label" in raw.columns:
        raw["label"] = raw["label"].map(lambda v: v if isinstance(v, bool) else _cell(v))
    rows, problems = check_frame(raw, name)
    if problems:
        raise_first(problems, name)
    digest = hashlib.sha256(to_csv_bytes(rows)).hexdigest()
    return FactDataset(name, Path(name), digest, rows["task"].iloc[0], rows)


# ---------------------------------------------------------------- writing

def to_csv_bytes(rows: pd.DataFrame) -> bytes:
    frame = rows.reindex(columns=COLUMNS, fill_value="").copy()
    frame["label"] = frame["label"].map(lambda b: "True" if bool(b) else "False")
    return frame.to_csv(index=False, lineterminator="\n").encode("utf-8")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write via a temp file in the same folder and rename (`factcircuits.files`)."""
    return atomic_write(path, data)


def dataset_bytes(rows: pd.DataFrame, path: str | os.PathLike) -> bytes:
    """Rows in schema column order, serialized as CSV or JSONL by the path's suffix."""
    if Path(path).suffix.lower() in (".jsonl", ".ndjson"):
        frame = rows.reindex(columns=COLUMNS, fill_value="")
        lines = [json.dumps({k: (bool(v) if k == "label" else v) for k, v in rec.items()},
                            ensure_ascii=False)
                 for rec in frame.to_dict("records")]
        return ("\n".join(lines) + "\n").encode("utf-8")
    return to_csv_bytes(rows)


def write_dataset(rows: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write rows (CSV or JSONL by suffix) atomically."""
    return atomic_write_bytes(path, dataset_bytes(rows, path))


# ---------------------------------------------------------------- one relation

def of_relation(dataset: FactDataset, relation: str) -> FactDataset:
    """The dataset's rows of one relation (the run parameter `relation`; "" keeps every
    row), so that a study can be split by relation across jobs (`sweep --grid relation=…`).
    The corrupted prompts were made within each relation, so they stay valid."""
    if not relation:
        return dataset
    labels = dataset.rows["relation"].str.strip()
    present = sorted(set(labels) - {""})
    if not present:
        raise DatasetError(f"relation={relation!r}: dataset {dataset.name!r} has no relation "
                           "column; leave relation empty or use a dataset with one "
                           "(relations-cloze)")
    if relation not in present:
        shown = ", ".join(present[:12]) + (f" (+{len(present) - 12} more)"
                                           if len(present) > 12 else "")
        raise DatasetError(f"relation={relation!r}: dataset {dataset.name!r} has no such "
                           f"relation; use one of {shown}")
    rows = dataset.rows.loc[labels == relation].reset_index(drop=True)
    rows.attrs = dict(dataset.rows.attrs)
    return FactDataset(dataset.name, dataset.path, dataset.sha256, dataset.task, rows)
