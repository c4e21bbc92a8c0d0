"""One method shape: what a chapter computes for its notebook.

Every chapter module (and a plugin's) exposes

    def summarise(lm, prepared, *, options: Options) -> Summary

and its notebook only narrates and plots:

    options = Options.of(chapter.METHOD, globals())  # the parameters cell's values, checked
    summary = chapter.summarise(session.lm, prepared, options=options)
    ...  # figures and sentences from summary.headline and summary's own fields
    summary.save(Results(run_dir, chapter.METHOD))  # every table, then the headline

`Summary.tables` holds the results the notebook saves, by their declared names (a DataFrame for
a Table, (nodes, edges) for a Graph, a dict for Arrays); `Summary.estimates` what the method
locates, as the write-up reads them from the saved run (`Method.estimates_of`). A chapter
subclasses `Summary` to carry what only its figures need (the raw grids, the per-prompt
decomposition).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

from factcircuits.errors import UserError
from factcircuits.results.estimates import Estimate
from factcircuits.results.headlines import Headline
from factcircuits.results.parameter_declarations import CORE, Parameter

if TYPE_CHECKING:
    from factcircuits.results.registry import Method
    from factcircuits.results.store import Results


# set by the runner, never by the user: where the run in progress keeps the earlier chapters'
# results (the circuit's cross-check reads them)
RUN_DIR = Parameter("run_dir", ".", "the run's folder", "name a folder",
                    lambda v: isinstance(v, (str, PathLike)))


def _declared(method: Method) -> dict[str, Parameter]:
    return {p.name: p for p in (*CORE, RUN_DIR, *method.parameters)}


class Options(Mapping[str, Any]):
    """The values of a method's parameters: the core ones, `run_dir` and those its entry
    declares (`Method.parameters`), each checked against its declaration; one not given takes
    its declared default. Read as a mapping (`options["seed"]`) or by attribute
    (`options.seed`)."""

    def __init__(self, method: Method, values: Mapping[str, Any] | None = None, /,
                 **more: Any):
        declared = _declared(method)
        given = {**(values or {}), **more}
        unknown = sorted(set(given) - set(declared))
        if unknown:
            raise UserError(f"method {method.notebook}: {', '.join(unknown)} not among its "
                            f"parameters ({', '.join(declared)})")
        self._values = {name: _checked(p, given.get(name, p.default))
                        for name, p in declared.items()}
        self.method = method

    @classmethod
    def of(cls, method: Method, namespace: Mapping[str, Any]) -> Options:
        """The method's parameters as a notebook's namespace holds them (other names are
        left out)."""
        names = _declared(method)
        return cls(method, {k: v for k, v in namespace.items() if k in names})

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Options({self.method.notebook}, {self._values!r})"


def _checked(parameter: Parameter, value: Any) -> Any:
    if not parameter.ok(value):
        raise UserError(f"{parameter.name}={value!r}: {parameter.allowed}")
    return value


@dataclass(kw_only=True)
class Summary:
    """What `summarise` returns (see the module docstring)."""

    headline: Headline
    tables: dict[str, Any] = field(default_factory=dict)  # declared result name -> value
    estimates: list[Estimate] = field(default_factory=list)

    def save(self, out: Results) -> None:
        """Write every table, then the headline (the run's mark that the chapter finished)."""
        for name, value in self.tables.items():
            out.save(name, value)
        out.headline(self.headline)


def estimates_of(method: Method, headline: Headline, tables: Mapping[str, Any]
                 ) -> list[Estimate]:
    """The method's Estimates as the write-up will read them from the saved run: its entry's
    `estimates` over a run holding only this headline and these tables."""
    from factcircuits.results.run import Run

    run = Run("in-memory", Path("/nonexistent"), {}, {method.notebook: headline},
              {(method.notebook, name): value for name, value in tables.items()})
    return method.estimates_of(run)
