"""Every run parameter's default and domain, in one table.

The notebooks' `parameters` cells and `open_session` declare the same defaults (a test checks
each against this table); the preflight checks every value against its domain before a model
loads or a folder is written, so a value no notebook could use is a one-line error naming the
parameter, the value and what is allowed — not a failure inside notebook 05 after minutes.

Kept free of torch imports: names that mirror a library constant (dtypes, prompt formats,
known criteria, direction kinds) are compared with it by the tests.
"""

from __future__ import annotations

import re
from typing import Any

from factcircuits.errors import UserError
from factcircuits.results.domains import (
    Domain,
    auto_or_whole,
    choice,
    positive_float,
    text,
    whole,
)

SEED_MAX = 2**32 - 1  # numpy's seed range; torch accepts it too

DTYPE_NAMES = ("float32", "bfloat16", "float16")  # = models.loading.DTYPES
PROMPT_FORMATS = ("raw", "chat", "fewshot")  # = models.tokens.PROMPT_FORMATS
KNOWN = ("top1", "pairwise")  # = methods.evaluate.KNOWN_CRITERIA
DIRECTIONS = ("auto", "logit_diff", "log_odds", "logit_diff_sum")  # = attribution.DIRECTION_KINDS
TRACE_METRICS = ("prob", "task")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")

DOMAINS: dict[str, Domain] = {
    # core: every notebook (defaults = run.session.open_session)
    "model": text("default", "name a model: 'default', 'tiny', a hub name or a local folder"),
    "dataset": text("", "name a shipped dataset or a dataset file (empty: the task's default)",
                    empty_ok=True),
    "task": choice("cloze", ("cloze", "yesno"), "use 'cloze' or 'yesno'"),
    "prompt_format": choice("raw", PROMPT_FORMATS),
    "answer_map": text("yesno_default", "name an answer map file or 'yesno_default'"),
    "device": Domain("auto", "use auto, cpu, cuda, cuda:N or mps",
                     lambda v: isinstance(v, str) and bool(DEVICE_PATTERN.match(v))),
    "dtype": choice("", ("", "auto", *DTYPE_NAMES), f"use one of {', '.join(DTYPE_NAMES)} (or "
                    "leave it empty for the device's default)"),
    "batch_size": whole(16, 1, allowed="must be at least 1 (prompts per forward pass)"),
    "n_prompts": whole(0, 0, allowed="use 0 for every prompt or a positive count"),
    "seed": whole(0, 0, SEED_MAX),
    "known": choice("top1", KNOWN, "use 'top1' (the answer is the model's top token) or "
                    "'pairwise' (the answer's logit is above the counterfactual's)"),
    "per_relation": whole(0, 0, allowed="use 0 for every known prompt or a positive count "
                          "per relation"),
    "relation": text("", "name one relation of the dataset (empty: every relation)",
                     empty_ok=True),
    "drop_multi_token_answers": Domain(True, "use true or false", lambda v: isinstance(v, bool)),
    # notebook 01, 02
    "top_k": whole(5, 1, allowed="use a whole number of at least 1 (tokens listed per prompt)"),
    # 02, 07
    "example": whole(0, 0, allowed="use a prompt index of at least 0"),
    # 02
    "attribute_k": whole(50, 1, allowed="use a whole number of at least 1 (top tokens in "
                         "which the attribute rate counts attribute tokens)"),
    # 02, 03
    "direction": choice("auto", DIRECTIONS),
    # 03
    "top_components": whole(10, 1, allowed="use a whole number of at least 1 (components "
                            "listed)"),
    # 04, 05
    "max_patches": auto_or_whole("auto", 1, "use 'auto' (a memory cap) or a whole number of "
                                 "at least 1 (patched copies per forward)"),
    # 04
    "heads_by_position": Domain(False, "use true or false", lambda v: isinstance(v, bool)),
    "scan_top_k": whole(10, 1, allowed="use a whole number of at least 1 (cells per prompt)"),
    # 05
    "noise_samples": whole(10, 1, allowed="use a whole number of at least 1 (ROME: 10)"),
    "noise_scale": positive_float(3.0, "use a finite number above 0 (× the subject "
                                  "embeddings' std; ROME: 3)"),
    "trace_window": auto_or_whole("auto", 1, "use 'auto' (ROME's 10 of 48 layers scaled to "
                                  "the model's depth) or a whole number of at least 1 (layers "
                                  "restored together)"),
    "trace_metric": choice("prob", TRACE_METRICS, "use 'prob' (P(answer), as ROME) or 'task' "
                           "(the task's own metric)"),
    # 06
    "n_components": whole(6, 1, allowed="use a whole number of at least 1 (components "
                          "ablated)"),
    "knockout_window": whole(0, 0, allowed="use 0 (n_layers // 6) or a number of layers"),
    # 07
    "n_heads": whole(6, 1, allowed="use a whole number of at least 1 (heads shown)"),
}


def all_domains() -> dict[str, Domain]:
    """The table above and the parameters each registered method declares in its entry."""
    from factcircuits.results.registry import methods

    found = dict(DOMAINS)
    for m in methods():
        for name, domain in m.parameters.items():
            known = found.setdefault(name, domain)
            if known.default != domain.default:
                raise UserError(f"parameter {name}: method {m.notebook} declares default "
                                f"{domain.default!r}, elsewhere {known.default!r}; one name "
                                "means one thing")
    return found


def check(name: str, value: Any) -> None:
    """One line naming the parameter, the value and what is allowed, when `value` is outside
    `name`'s domain; parameters without a declared domain (test notebooks') pass."""
    domain = all_domains().get(name)
    if domain is not None and not domain.ok(value):
        raise UserError(f"{name}={value!r}: {domain.allowed}")


def check_all(params: dict[str, Any]) -> None:
    for name, value in params.items():
        check(name, value)
