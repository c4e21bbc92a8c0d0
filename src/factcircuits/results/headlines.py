"""Headlines as typed dataclasses: the few numbers a method narrates, each declared once with
its unit and a one-line meaning.

    @dataclass
    class TracingHeadline(Headline):  # chapters/causal_tracing.py
        n_prompts: int | None = number("prompts traced", "prompts")
        mlp_subject_last_peak_aie: float | None = number("…", "P(answer) or the metric traced")
        mlp_subject_last_peak_aie_ci: list | None = interval("mlp_subject_last_peak_aie")

        def estimates(self) -> list[Estimate]: ...  # what it locates (results/estimates.py)

Every field defaults to None: not applicable to this run (a yes/no run has no
`pairwise_accuracy`). A computed NaN or inf is stored as the not-computed marker and reads back
as None, with its name in `not_computed`. The JSON holds the fields that are not None, so a
renamed field is a TypeError where the headline is built and an AttributeError where it is
read — never a silently missing number.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, TypeVar

from factcircuits.results.jsonsafe import is_not_computed, json_safe

H = TypeVar("H", bound="Headline")


def number(meaning: str, unit: str = "") -> Any:
    """A headline field: its one-line meaning and unit (empty for labels and flags)."""
    return dataclasses.field(default=None, metadata={"meaning": meaning, "unit": unit})


def interval(of: str) -> Any:
    """The 95 % bootstrap interval over prompts of field `of`: [low, high]."""
    return number(f"95% bootstrap interval over prompts of `{of}`: [low, high]", f"as {of}")


def exact_interval(of: str) -> Any:
    """The exact (Clopper–Pearson) 95 % interval of the proportion `of`: [low, high]."""
    return number(f"exact (Clopper–Pearson) 95% interval of `{of}`: [low, high]", f"as {of}")


def layer_range(of: str) -> Any:
    """The layers holding the peak `of` in 95 % of bootstrap resamples: [first, last]."""
    return number(f"layers holding the peak `{of}` in 95% of bootstrap resamples", "layers")


@dataclasses.dataclass
class Headline:
    """Base of every method's headline (see the module docstring)."""

    not_computed: ClassVar[frozenset[str]] = frozenset()

    def to_json(self) -> dict[str, Any]:
        return {f.name: json_safe(getattr(self, f.name)) for f in dataclasses.fields(self)
                if getattr(self, f.name) is not None}

    @classmethod
    def from_json(cls: type[H], data: dict[str, Any]) -> H:
        """A headline read back; keys this class does not declare (written by an older
        version of the method) are left out."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: (None if is_not_computed(v) else v) for k, v in data.items() if k in names}
        out = cls(**values)
        # a null is what older runs wrote for NaN: not computed too
        missing = frozenset(k for k, v in data.items()
                            if k in names and (v is None or is_not_computed(v)))
        if missing:
            object.__setattr__(out, "not_computed", missing)
        return out

    def estimates(self) -> list:
        """What the method locates, as `results.estimates.Estimate`s (none by default)."""
        return []

    @classmethod
    def describe(cls) -> list[tuple[str, str, str]]:
        """(field, unit, meaning) of every field: the headline's documentation."""
        return [(f.name, f.metadata.get("unit", ""), f.metadata.get("meaning", ""))
                for f in dataclasses.fields(cls)]
