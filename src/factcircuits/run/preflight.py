"""Checks a run makes before it writes anything or loads a model: every one fails in one line
that names the field, the value and the fix (a `UserError`). What a notebook would otherwise
find after a model load, inside a `_failed/` folder, is found here in seconds.

Without the model: every parameter value against its declared domain (`run.parameters`), the
dataset's task against the run's, the answer map's shape.
With the tokenizer only (no weights): prompt lengths against a limit, cloze answers of several
tokens, yes/no answer words that are no single token, a chat format without a chat template.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from factcircuits.errors import UserError

DEFAULT_MAX_PROMPT_TOKENS = 256  # fact prompts are ~10–60 tokens; cost grows with length²
MAX_PROMPT_TOKENS_ENV = "FACTCIRCUITS_MAX_PROMPT_TOKENS"
TASKS = ("cloze", "yesno")


@dataclass
class Checked:
    """What the checks found that is worth saying (notes) and recording (facts)."""

    notes: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)


def max_prompt_tokens(value: int | None = None) -> int:
    """The prompt-length limit: the argument, else $FACTCIRCUITS_MAX_PROMPT_TOKENS, else 256."""
    source = "--max-prompt-tokens"
    if value is None and os.environ.get(MAX_PROMPT_TOKENS_ENV):
        source, raw = MAX_PROMPT_TOKENS_ENV, os.environ[MAX_PROMPT_TOKENS_ENV]
        try:
            value = int(raw)
        except ValueError:
            raise UserError(f"{source}={raw!r}: expected a whole number of tokens") from None
    value = DEFAULT_MAX_PROMPT_TOKENS if value is None else value
    if value < 1:
        raise UserError(f"{source} {value}: must be at least 1 token")
    return value


# --------------------------------------------------------------------------- values
def check_values(params: dict[str, Any]) -> None:
    """Every value against its declared domain (`run.parameters`; types are checked against
    the notebooks already), then the device against this machine."""
    from factcircuits.run.parameters import check_domains

    check_domains(params)
    if params.get("device") not in (None, ""):
        check_device(str(params["device"]))


def check_device(device: str) -> None:
    from factcircuits.results.parameter_declarations import DEVICE, DEVICE_PATTERN

    if not DEVICE_PATTERN.match(device):
        raise UserError(f"device={device!r}: {DEVICE.allowed}")
    import torch

    from factcircuits.models.loading import resolve_device

    resolve_device(device)  # one line when CUDA is missing
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        raise UserError(f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA "
                        "device(s); use cuda:0 or auto")
    mps = getattr(torch.backends, "mps", None)
    if device == "mps" and not (mps and mps.is_available()):
        raise UserError("device='mps' but MPS is not available here: use --device cpu")


def check_task(params: dict[str, Any], given: dict[str, Any], dataset) -> None:
    """The dataset decides the task unless the user chose one; a clash is refused."""
    if "task" not in params or params.get("task") == dataset.task:
        return
    if "task" in given:
        raise UserError(f"dataset {dataset.name!r} is a {dataset.task} dataset but "
                        f"task={given['task']!r}: pass --task {dataset.task} or a "
                        f"{given['task']} dataset")
    # Not chosen: a yes/no dataset means the yes/no task.
    params["task"] = given["task"] = dataset.task


def check_answer_map(params: dict[str, Any], given: dict[str, Any]):
    """The yes/no answer map, loaded and checked for shape when the run uses it (or the user
    named one); None otherwise."""
    if "answer_map" not in params or (params.get("task") != "yesno" and "answer_map" not in given):
        return None
    from factcircuits.data.answers import load_answer_map

    return load_answer_map(str(params["answer_map"]))


# --------------------------------------------------------------------------- with the tokenizer
def too_long(n_tokens: int, limit: int, context: int | None,
             fix: str = "shorten or drop the row") -> str:
    """The end of the message for a prompt of `n_tokens` over the limit or the context."""
    if context is not None and n_tokens > context:
        return (f"over the model's context of {context} positions; {fix} (a model has no "
                "positions past its context)")
    return (f"over the limit of {limit}; shorten or drop the row, or raise "
            "--max-prompt-tokens")


def check_prompt_fits(tokenizer, text: str, fmt: str, context: int | None, what: str) -> None:
    """One prompt (`inspect`) against the model's context."""
    n = len(tokenizer(text, add_special_tokens=fmt != "chat")["input_ids"])
    if context is not None and n > context:
        raise UserError(f"{what} is {n} tokens ({fmt} format), "
                        + too_long(n, context, context, "shorten the prompt"))


def check_with_tokenizer(tokenizer, dataset, params: dict[str, Any], answer_map=None, *,
                         limit: int = DEFAULT_MAX_PROMPT_TOKENS,
                         single_token_answers: bool = False,
                         context: int | None = None) -> Checked:
    """`context`: the model's positions (`models.context.model_context`); a prompt past them
    is refused whatever --max-prompt-tokens says."""
    from factcircuits.models.tokens import format_prompt

    rows = dataset.rows.reset_index(drop=True)
    if params.get("n_prompts"):
        rows = rows.head(int(params["n_prompts"]))  # only the rows the run will use
    fmt = str(params.get("prompt_format") or "raw")
    cap = limit if context is None else min(limit, context)
    checked = Checked(facts={"max_prompt_tokens": cap, "model_context": context})
    if context is not None and limit > context:
        checked.notes.append(f"--max-prompt-tokens {limit} is above the model's context "
                             f"({context} positions): prompts are limited to {context}")
    longest = 0
    for column in ("prompt", "corrupted_prompt"):
        texts = [(i, format_prompt(t, fmt, tokenizer, dataset.task))
                 for i, t in enumerate(rows[column]) if t.strip()]
        if not texts:
            continue
        ids = tokenizer([t for _, t in texts], add_special_tokens=fmt != "chat")["input_ids"]
        for (i, _), tokens in zip(texts, ids):
            longest = max(longest, len(tokens))
            if len(tokens) > cap:
                what = "prompt" if column == "prompt" else "corrupted prompt"
                raise UserError(f"dataset {dataset.name!r} row {i + 1}: the {what} is "
                                f"{len(tokens)} tokens ({fmt} format), "
                                + too_long(len(tokens), limit, context))
    checked.facts["longest_prompt_tokens"] = longest
    # bounds that the data and the tokenizer fix: refused now, not inside a notebook later
    vocabulary = len(tokenizer)
    if int(params.get("top_k") or 0) > vocabulary:
        raise UserError(f"top_k={params['top_k']}: the model's vocabulary has {vocabulary:,} "
                        "tokens; use at most that many")
    if int(params.get("example") or 0) >= len(rows):
        raise UserError(f"example={params['example']}: the run has {len(rows)} prompts, so the "
                        f"example is one of 0–{len(rows) - 1} (it picks among the prompts "
                        "analysed, which may be fewer)")
    if dataset.task == "cloze":
        _cloze_answers(tokenizer, dataset.name, rows, single_token_answers, checked)
    elif answer_map is not None:
        from factcircuits.data.answers import answer_sets

        answer_sets(tokenizer, answer_map, drop_multi_token=True)  # a side with no token: error
    return checked


def _pieces(tokenizer, ids: list[int]) -> list[str]:
    return [tokenizer.decode([i]) for i in ids]


def _cloze_answers(tokenizer, name: str, rows, strict: bool, checked: Checked) -> None:
    """Multi-token answers, and rows whose answer and counterfactual share their first token.
    Token ids are compared, never decoded pieces: a piece of a multi-byte character (Chinese,
    emoji) decodes to U+FFFD whatever the character, so different answers would look equal."""
    values = {c: rows[c].tolist() for c in ("answer", "counterfactual")}
    ids = {c: tokenizer(v, add_special_tokens=False)["input_ids"] if v else []
           for c, v in values.items()}
    multi, same_first = [], 0
    for i, (a, c) in enumerate(zip(ids["answer"], ids["counterfactual"])):
        for column, tokens in (("answer", a), ("counterfactual", c)):
            if len(tokens) > 1:
                multi.append((i, column, values[column][i], tokens))
        same_first += bool(a) and bool(c) and a[0] == c[0]
    checked.facts["multi_token_answer_rows"] = len({m[0] for m in multi})
    if multi:
        i, column, value, tokens = multi[0]
        pieces = _pieces(tokenizer, tokens)
        rows_text = f"{len({m[0] for m in multi})} of {len(rows)} rows"
        if strict:
            raise UserError(f"dataset {name!r} row {i + 1}, field {column!r}: {value!r} is "
                            f"{len(pieces)} tokens {pieces} ({rows_text} like this) and "
                            "--single-token-answers is set: use one-token answers or drop "
                            "those rows")
        checked.notes.append(f"{rows_text} have a multi-token answer or counterfactual (row "
                             f"{i + 1}: {value!r} = {' + '.join(map(repr, pieces))}); they "
                             "are scored by their first token (ROME convention); "
                             "--single-token-answers refuses them")
    if len(rows) and same_first == len(rows):
        raise UserError(f"dataset {name!r}: in every row the answer and the counterfactual "
                        "start with the same token, so no row can be scored; use "
                        "counterfactuals that differ in their first token")
