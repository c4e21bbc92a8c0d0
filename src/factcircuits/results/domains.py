"""A run parameter's default and domain (what values a notebook can use), and the usual kinds
of domain. The core parameters' table is `run/domains.py`; a method declares its own in its
registry entry (`Method.parameters`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Domain:
    default: Any
    allowed: str  # what the one-line error says after "name=value: "
    ok: Callable[[Any], bool]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def whole(default: int, low: int, high: int | None = None, allowed: str = "") -> Domain:
    text = allowed or (f"use a whole number from {low} to {high}" if high is not None
                       else f"use a whole number of at least {low}")
    return Domain(default, text,
                  lambda v: _is_int(v) and v >= low and (high is None or v <= high))


def choice(default: Any, values: tuple, allowed: str = "") -> Domain:
    text = allowed or f"use one of {', '.join(map(str, values))}"
    return Domain(default, text, lambda v: isinstance(v, str) and v in values)


def positive_float(default: float, allowed: str) -> Domain:
    return Domain(default, allowed, lambda v: isinstance(v, (int, float))
                  and not isinstance(v, bool) and math.isfinite(v) and v > 0)


def text(default: str, allowed: str, empty_ok: bool = False) -> Domain:
    return Domain(default, allowed,
                  lambda v: isinstance(v, str) and (empty_ok or bool(v.strip())))


def auto_or_whole(default: str, low: int, allowed: str) -> Domain:
    return Domain(default, allowed, lambda v: v == "auto" or (_is_int(v) and v >= low))
