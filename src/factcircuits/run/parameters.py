"""The parameter model of a run.

Every parameter is declared once (`results/parameter_declarations.py`: name, default, domain,
meaning): the core ones there, a method's own by its `methods/` module, listed in its registry
entry. Every analysis notebook's `parameters` cell is generated from its method's declarations
(`run/parameter_cells.py`). A notebook receives the core parameters and what the user set
among the names it declares; for everything else it keeps its own default. A name the user
sets must be declared by at least one selected notebook, its value keeps its type (an int
stays an int; a float default accepts an int) and lies in its declared domain.
"""

from __future__ import annotations

import json
import re
from typing import Any

from factcircuits.errors import UserError
from factcircuits.results.parameter_declarations import Parameter
from factcircuits.run.notebooks import Notebook
from factcircuits.run.secretscan import looks_secret

# Set by the runner, never by the user.
RESERVED = ("run_dir",)
_SECRETISH = ("key", "token", "secret", "password")
# Defaults that mean "let the library choose"; they also accept a number.
CHOOSE_DEFAULTS = ("auto",)


def core_defaults() -> dict[str, Any]:
    """The core parameters and their declared defaults (every notebook declares them)."""
    from factcircuits.results.parameter_declarations import CORE

    return {p.name: p.default for p in CORE}


def declared_parameters() -> dict[str, Parameter]:
    """Every declared parameter by name: the core ones and each registered method's own. A
    name two methods share is one declaration (the same object), never two that agree."""
    from factcircuits.results.parameter_declarations import CORE
    from factcircuits.results.registry import methods

    found = {p.name: p for p in CORE}
    for m in methods():
        for p in m.parameters:
            known = found.setdefault(p.name, p)
            if known is not p:
                raise UserError(f"parameter {p.name}: method {m.notebook} declares its own "
                                f"(default {p.default!r}), but it is declared elsewhere "
                                f"(default {known.default!r}); name that declaration instead")
    return found


def check_domain(name: str, value: Any) -> None:
    """One line naming the parameter, the value and what is allowed, when `value` is outside
    `name`'s domain; parameters without a declaration (test notebooks') pass."""
    declaration = declared_parameters().get(name)
    if declaration is not None and not declaration.ok(value):
        raise UserError(f"{name}={value!r}: {declaration.allowed}")


def check_domains(params: dict[str, Any]) -> None:
    for name, value in params.items():
        check_domain(name, value)


def declared(notebooks: list[Notebook]) -> dict[str, list[Notebook]]:
    """Each parameter name → the notebooks that declare it."""
    owners: dict[str, list[Notebook]] = {}
    for nb in notebooks:
        for key in nb.defaults:
            owners.setdefault(key, []).append(nb)
    return owners


class CommandLineText(str):
    """A `-p` value as typed: it takes the type of the parameter it sets (`check_value`), never
    YAML's guess (YAML reads `010` as 8, `1:30` as 90 and `yes` as True)."""


def as_command_line(value: Any) -> str:
    """The `-p` text that `typed_text` reads back as `value`."""
    return str(value) if isinstance(value, str) else json.dumps(value)


WHOLE = re.compile(r"^[+-]?(0|[1-9][0-9]*)$")
NUMBER = re.compile(r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$")


def typed_text(key: str, text: str, default: Any) -> Any:
    """A value typed on the command line, read as the type of `default`: `010`, `1:30`, `1e3`
    for a whole number, or `yes` for true/false, are refused by name, not reinterpreted."""
    if isinstance(default, bool):
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        raise UserError(f"parameter {key}={text}: use true or false")
    if isinstance(default, int):
        if WHOLE.match(text):
            return int(text)
        raise UserError(f"parameter {key}={text}: expected a whole number like {default} "
                        "(digits only, no leading zeros)")
    if isinstance(default, float):
        if NUMBER.match(text):
            return float(text)
        raise UserError(f"parameter {key}={text}: expected a number like {default}")
    if isinstance(default, str) and default in CHOOSE_DEFAULTS and WHOLE.match(text):
        return int(text)  # 'auto' or a count
    return str(text)


def check_value(key: str, value: Any, default: Any) -> Any:
    """`value` if it has the type of `default` (int → float allowed), else a one-line error.
    Text typed on the command line is read as that type first (`typed_text`)."""
    if isinstance(value, CommandLineText):
        value = typed_text(key, str(value), default)
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, str):
        ok = isinstance(value, str) or (
            default in CHOOSE_DEFAULTS and isinstance(value, int) and not isinstance(value, bool))
    else:
        ok = True
    if not ok:
        hint = (" (in a --params file, quote text: relation: \"yes\")"
                if isinstance(default, str) else "")
        raise UserError(f"parameter {key}={value!r}: expected {type(default).__name__} "
                        f"like the default {default!r}{hint}")
    return value


def validate_given(given: dict[str, Any], notebooks: list[Notebook]) -> dict[str, Any]:
    """The user's parameters, checked against the notebooks that declare them."""
    owners = declared(notebooks)
    checked: dict[str, Any] = {}
    for key, value in given.items():
        if key in RESERVED:
            raise UserError(f"parameter {key} is set by the pipeline; remove it")
        if key not in owners and re.split(r"[_\W]+", key.lower())[-1] in _SECRETISH:
            # a declared parameter is never a secret; an undeclared name that ends in such a
            # word (api_key, hf_token) is answered as one, any other (monkey) as unknown
            raise UserError(f"parameter {key}: secrets are read from the environment, "
                            "never passed as parameters")
        if key not in owners:
            names = ", ".join(k for k in owners if k not in RESERVED)
            raise UserError(f"unknown parameter {key!r}; known: {names}")
        if isinstance(value, str) and (kind := looks_secret(value)):
            raise UserError(f"parameter {key} holds a {kind}; secrets come from the environment")
        for nb in owners[key]:
            value = check_value(key, value, nb.defaults[key])
        checked[key] = value
    return checked


def core_values(notebooks: list[Notebook]) -> dict[str, Any]:
    """The core parameters the notebooks declare, with the default they agree on: every
    notebook of a run analyses the same model, dataset and prompts."""
    values: dict[str, Any] = {}
    for key, owners in declared(notebooks).items():
        if key not in core_defaults() or key in RESERVED:
            continue
        first = owners[0]
        for nb in owners[1:]:
            if nb.defaults[key] != first.defaults[key]:
                raise UserError(f"core parameter {key}: {first.name} declares "
                                f"{first.defaults[key]!r} but {nb.name} {nb.defaults[key]!r}; "
                                "give every notebook the same default")
        values[key] = first.defaults[key]
    return values


def differs_from_defaults(given: dict[str, Any], notebooks: list[Notebook]) -> dict[str, Any]:
    """The user's values that change what some notebook runs with (the run's identity)."""
    owners = declared(notebooks)
    return {k: v for k, v in given.items()
            if any(nb.defaults.get(k) != v for nb in owners.get(k, []))}


def for_notebook(nb: Notebook, core: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """What papermill injects into `nb`: the core values and the user's, for the names it
    declares. Its other parameters keep the notebook's own defaults."""
    return {k: v for k, v in (core | given).items() if k in nb.defaults}


def effective(nb: Notebook, injected: dict[str, Any]) -> dict[str, Any]:
    """Every parameter `nb` ran with (its defaults overridden by what was injected)."""
    return {k: v for k, v in (nb.defaults | injected).items() if k not in RESERVED}
