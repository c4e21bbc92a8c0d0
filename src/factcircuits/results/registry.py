"""The method registry: one entry per method, the only place its notebook, tables, headline
and findings sentences are named.

    METHOD = Method(notebook="05_causal_tracing", title="Causal tracing", short="tracing",
                    headline=TracingHeadline, results={"aie_by_class": Table({...})},
                    findings=tracing_findings, key_numbers=("total_effect_mean", ...))

Built-in entries are the `METHOD` of each module in `factcircuits.chapters`, found by
walking that package (a new module is a new method; there is no list to edit). Methods kept
elsewhere (a plugin, a test) call `register(method)` in a module named in
`$FACTCIRCUITS_METHODS` (comma-separated import names), which every process of a run imports:
the runner, each notebook's kernel and the write-up. The registry's order (by notebook name) is
the chapters' order. See docs/ADDING_A_METHOD.md.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import pkgutil
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from factcircuits.errors import UserError
from factcircuits.results.headlines import Headline
from factcircuits.results.kinds import Arrays, Graph, Table
from factcircuits.results.parameter_declarations import Parameter

if TYPE_CHECKING:
    from factcircuits.results.estimates import Estimate
    from factcircuits.results.run import Run

# The findings' sections, in reading order.
KNOWLEDGE = "Does the model know the facts?"
WHERE = "Where the fact is read"
MOVES = "How it reaches the last token"
CIRCUITS = "Circuits"
SURE = "How sure"
BY_RELATION = "By relation"
LITERATURE = "Compared with earlier studies"
SECTIONS = (KNOWLEDGE, WHERE, MOVES, CIRCUITS, SURE, BY_RELATION, LITERATURE)
DEPTH_LABEL = "relative depth (layer / (layers − 1))"
IN_SHORT = "In short"  # a clause of a run's one-paragraph summary (not a section of its own)
HEADS = "Heads"  # a clause of the bullet that sets the heads the methods single out side by side
NOTEBOOK_NAME = re.compile(r"^\d\d_[a-z0-9_]+$")
PLUGINS_ENV = "FACTCIRCUITS_METHODS"


@dataclass(frozen=True)
class Finding:
    """One bullet of a run's findings: its section and its place there (lower first)."""

    section: str
    text: str
    order: int = 50


PROMPTS_SCORED = "prompts scored"  # a Sample's `what`: the prompts a run's task check scored


@dataclass(frozen=True)
class Sample:
    """One sample size the 'How sure' list states: its words ('12 patched pairs (4 left out
    for unequal token length)'; None: nothing to say) and, for the small-sample note, what it
    counts and how many ('pairs patched', 12)."""

    text: str | None
    what: str | None = None
    n: int | None = None


@dataclass(frozen=True)
class Profile:
    """A per-layer curve of one result table that the comparison page overlays across runs
    by relative depth: `select` picks and labels the rows (None: nothing to draw), `depth`
    (default layer / (n_layers − 1)) places them."""

    table: str
    select: Callable[[pd.DataFrame], pd.DataFrame | None]
    y: str
    dash: str | None
    title: str
    y_label: str
    x_label: str = DEPTH_LABEL
    depth: Callable[[pd.DataFrame, int], pd.Series] | None = None


@dataclass(frozen=True)
class CircuitResults:
    """Where a method saves a circuit that the comparison places by relative depth: `graph`
    (a Graph: nodes with `layer`, input −1 and logits n_layers; edges `source` → `target`)
    and `roles` (a Table of its heads: `node`, `layer`, `role`, `dla`, `dla_low`,
    `dla_high`)."""

    graph: str
    roles: str


@dataclass(frozen=True, eq=False)
class Method:
    notebook: str  # the notebook's file stem in analysis/, e.g. "05_causal_tracing"
    title: str  # the chapter's title
    short: str  # its name in comparison tables, e.g. "tracing"
    headline: type[Headline]
    results: Mapping[str, Table | Graph | Arrays] = field(default_factory=dict)
    findings: Callable[[Run], list[Finding]] | None = None
    key_numbers: tuple[str, ...] = ()  # headline fields the comparison shows first
    number_labels: Mapping[str, str] = field(default_factory=dict)  # field -> label
    profiles: tuple[Profile, ...] = ()
    # its notebook's own parameters, in the order of its parameters cell (after the core ones)
    parameters: tuple[Parameter, ...] = ()
    # what it locates: the shared quantities (`results.estimates`) its Estimates are of, and,
    # when its headline alone cannot say (a result table too), how to read them from a run
    quantities: tuple[str, ...] = ()
    estimates: Callable[[Run], list[Estimate]] | None = None
    # the task check's answers to the write-up: is the model at chance (no mechanism is then
    # interpreted), and which prompts the run analysed ('known=top1 (13 of 16 prompts kept)')
    at_chance: Callable[[Run], bool] | None = None
    analysed_note: Callable[[Run], str] | None = None
    samples: Callable[[Run], list[Sample]] | None = None  # its sample sizes, for 'How sure'
    # its cells of the front page's table of several runs: {column: text} ('—' when the run
    # lacks the method; a model at chance shows '—' in every method's but the task check's)
    overview: Callable[[Run], dict[str, str]] | None = None
    # the circuit the comparison sets side by side across models by relative depth
    circuit: CircuitResults | None = None

    def __post_init__(self) -> None:
        if not NOTEBOOK_NAME.match(self.notebook):
            raise ValueError(f"method notebook {self.notebook!r}: use NN_name (e.g. 08_circuit)")
        names = {f.name for f in dataclasses.fields(self.headline)}
        # a layer field also compares as its relative depth: `<field>_depth`
        unknown = [k for k in (*self.key_numbers, *self.number_labels)
                   if k not in names and k.removesuffix("_depth") not in names]
        if unknown:
            raise ValueError(f"method {self.notebook}: {', '.join(unknown)} not fields of "
                             f"{self.headline.__name__}")
        loose = [p for p in self.parameters if not isinstance(p, Parameter)]
        if loose:
            raise ValueError(f"method {self.notebook}: parameters are declarations "
                             f"(results.parameter_declarations.Parameter), not {loose[0]!r}")
        tables = [p.table for p in self.profiles if p.table not in self.results]
        if tables:
            raise ValueError(f"method {self.notebook}: profile of undeclared result {tables}")
        circuit = [] if self.circuit is None else [
            n for n in (self.circuit.graph, self.circuit.roles) if n not in self.results]
        if circuit:
            raise ValueError(f"method {self.notebook}: circuit of undeclared result {circuit}")

    def estimates_of(self, run: Run) -> list[Estimate]:
        """Its Estimates in the run (none when the run lacks its headline)."""
        if not run.has(self):
            return []
        return list(self.estimates(run) if self.estimates else run.headline(self).estimates())

    def samples_of(self, run: Run) -> list[Sample]:
        return list(self.samples(run)) if self.samples and run.has(self) else []

    def findings_for(self, run: Run) -> list[Finding]:
        return list(self.findings(run)) if self.findings and run.has(self) else []

    def label(self, key: str) -> str:
        """'logit lens · mlp share': a headline field as the comparison names it."""
        return f"{self.short} · {self.number_labels.get(key, key.replace('_', ' '))}"


_REGISTERED: dict[str, Method] = {}
_BUILTIN: set[str] = set()  # the notebooks of factcircuits.chapters' entries
_LOADED: list[bool] = [False]


def register(method: Method) -> Method:
    """Add a method (a plugin's or a test's). Two different methods under one notebook name
    are refused; the same entry again (its module imported a second time) replaces itself."""
    known = _REGISTERED.get(method.notebook)
    if known is not None and known is not method:
        if known.headline.__qualname__ != method.headline.__qualname__:
            raise UserError(f"method {method.notebook} is registered twice; rename one notebook")
    _REGISTERED[method.notebook] = method
    return method


def _load() -> None:
    if _LOADED[0]:
        return
    _LOADED[0] = True
    import factcircuits.chapters as chapters

    for info in pkgutil.iter_modules(chapters.__path__):
        module = importlib.import_module(f"{chapters.__name__}.{info.name}")
        if isinstance(getattr(module, "METHOD", None), Method):
            _BUILTIN.add(register(module.METHOD).notebook)
    for name in filter(None, (s.strip() for s in os.environ.get(PLUGINS_ENV, "").split(","))):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise UserError(f"${PLUGINS_ENV}: cannot import {name} ({exc}); fix the module "
                            "name or PYTHONPATH") from None


def methods() -> list[Method]:
    """Every registered method, in chapter order."""
    _load()
    return [_REGISTERED[k] for k in sorted(_REGISTERED)]


def builtin_methods() -> list[Method]:
    """The project's own methods (one per notebook in analysis/), without plugins."""
    return [m for m in methods() if m.notebook in _BUILTIN]


def method(notebook: str) -> Method | None:
    _load()
    return _REGISTERED.get(notebook)


def describe() -> list[dict[str, Any]]:
    """The registry as data: each method's notebook, results and headline fields."""
    return [{"notebook": m.notebook, "title": m.title, "results": sorted(m.results),
             "headline": m.headline.describe()} for m in methods()]
