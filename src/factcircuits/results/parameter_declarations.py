"""A run parameter's declaration — name, default, domain, one-line meaning — and the core
parameters every notebook shares.

Each parameter is declared once: the core ones here, a method's own in the `methods/` module
whose computation it steers (listed in the method's registry entry, `Method.parameters`).
Everything else reads the declaration: the notebooks' `parameters` cells are generated from it
(`run/parameter_cells.py`), the preflight checks values against its domain, the CLI's help
lists it, and library defaults along the path name the same object (`SEED.default`), never a
second literal (`tests/test_parameter_declarations.py`).

Kept free of torch imports: names that mirror a library constant (dtypes, prompt formats,
known criteria) are compared with it by the tests.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Parameter:
    name: str
    default: Any
    meaning: str  # one line: the comment beside it in a notebook's parameters cell, CLI help
    allowed: str  # what the one-line refusal says after "name=value: "
    ok: Callable[[Any], bool]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def whole(name: str, default: int, meaning: str, low: int, high: int | None = None,
          allowed: str = "") -> Parameter:
    text = allowed or (f"use a whole number from {low} to {high}" if high is not None
                       else f"use a whole number of at least {low}")
    return Parameter(name, default, meaning, text,
                     lambda v: _is_int(v) and v >= low and (high is None or v <= high))


def choice(name: str, default: Any, meaning: str, values: tuple, allowed: str = "") -> Parameter:
    text = allowed or f"use one of {', '.join(map(str, values))}"
    return Parameter(name, default, meaning, text, lambda v: isinstance(v, str) and v in values)


def positive_float(name: str, default: float, meaning: str, allowed: str) -> Parameter:
    return Parameter(name, default, meaning, allowed, lambda v: isinstance(v, (int, float))
                     and not isinstance(v, bool) and math.isfinite(v) and v > 0)


def text(name: str, default: str, meaning: str, allowed: str, empty_ok: bool = False
         ) -> Parameter:
    return Parameter(name, default, meaning, allowed,
                     lambda v: isinstance(v, str) and (empty_ok or bool(v.strip())))


def flag(name: str, default: bool, meaning: str) -> Parameter:
    return Parameter(name, default, meaning, "use true or false", lambda v: isinstance(v, bool))


def auto_or_whole(name: str, default: str, meaning: str, low: int, allowed: str) -> Parameter:
    return Parameter(name, default, meaning, allowed,
                     lambda v: v == "auto" or (_is_int(v) and v >= low))


# --------------------------------------------------------------------------- core parameters
SEED_MAX = 2**32 - 1  # numpy's seed range; torch accepts it too
DTYPE_NAMES = ("float32", "bfloat16", "float16")  # = models.loading.DTYPES
PROMPT_FORMATS = ("raw", "chat", "fewshot")  # = models.tokens.PROMPT_FORMATS
KNOWN = ("top1", "pairwise")  # = methods.evaluate.KNOWN_CRITERIA
BOS_CHOICES = ("auto", "on", "off")  # = models.tokens.BOS_CHOICES
TASKS = ("cloze", "yesno")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")

MODEL = text("model", "default", "'default' (the embedded SmolLM2), 'tiny', a hub name or a "
             "local folder", "name a model: 'default', 'tiny', a hub name or a local folder")
DATASET = text("dataset", "", "empty: the default dataset of the task (paris-cloze / "
               "paris-yesno)", "name a shipped dataset or a dataset file (empty: the task's "
               "default)", empty_ok=True)
TASK = choice("task", "cloze", "cloze recall or yes/no verification", TASKS,
              "use 'cloze' or 'yesno'")
PROMPT_FORMAT = choice("prompt_format", "raw", "raw, chat (the tokenizer's chat template) or "
                       "fewshot", PROMPT_FORMATS)
ANSWER_MAP = text("answer_map", "yesno_default", "yes/no: the words counted as yes and as no",
                  "name an answer map file or 'yesno_default'")
DEVICE = Parameter("device", "auto", "auto, cpu, cuda, cuda:N or mps",
                   "use auto, cpu, cuda, cuda:N or mps",
                   lambda v: isinstance(v, str) and bool(DEVICE_PATTERN.match(v)))
DTYPE = choice("dtype", "", "empty: the device's default; float32, bfloat16 or float16",
               ("", "auto", *DTYPE_NAMES), f"use one of {', '.join(DTYPE_NAMES)} (or leave it "
               "empty for the device's default)")
BATCH_SIZE = whole("batch_size", 16, "prompts per forward pass", 1,
                   allowed="must be at least 1 (prompts per forward pass)")
N_PROMPTS = whole("n_prompts", 0, "0: every prompt", 0,
                  allowed="use 0 for every prompt or a positive count")
SEED = whole("seed", 0, "noise draws, bootstrap resamples, samples and splits", 0, SEED_MAX)
KNOWN_CRITERION = choice("known", "top1", "top1: the answer is the top token; pairwise: "
                         "answer's logit > counterfactual's", KNOWN,
                         "use 'top1' (the answer is the model's top token) or 'pairwise' "
                         "(the answer's logit is above the counterfactual's)")
PER_RELATION = whole("per_relation", 0, "> 0: at most this many known prompts per relation "
                     "(seeded sample)", 0,
                     allowed="use 0 for every known prompt or a positive count per relation")
RELATION = text("relation", "", "one relation of the dataset (empty: every relation)",
                "name one relation of the dataset (empty: every relation)", empty_ok=True)

PREPEND_BOS = choice("prepend_bos", "auto", "BOS token: auto (as the model's tokenizer does), on "
                     "or off", BOS_CHOICES)

# every notebook declares these, in this order, with these defaults (`run.session.open_session`)
CORE: tuple[Parameter, ...] = (MODEL, DATASET, TASK, PROMPT_FORMAT, ANSWER_MAP, DEVICE, DTYPE,
                               BATCH_SIZE, N_PROMPTS, SEED, KNOWN_CRITERION, PER_RELATION,
                               RELATION, PREPEND_BOS)
