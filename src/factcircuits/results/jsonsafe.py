"""Strict JSON for run records and headlines: numpy/torch scalars become Python numbers, and
NaN/inf (which strict JSON lacks, and which a bare null would leave unexplained) become an
explicit not-computed marker with the reason."""

from __future__ import annotations

import math
from typing import Any

NOT_COMPUTED = "not_computed"


def not_computed(value: float) -> dict[str, str]:
    what = "NaN" if math.isnan(value) else "infinite"
    return {NOT_COMPUTED: f"the computation gave {what} (e.g. no prompt qualified for it)"}


def is_not_computed(value: Any) -> bool:
    return isinstance(value, dict) and NOT_COMPUTED in value


def json_safe(value: Any) -> Any:
    """`value` as strict JSON, at any depth (see the module docstring)."""
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, (list, dict)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return not_computed(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
