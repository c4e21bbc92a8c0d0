"""Each run parameter is declared once — name, default, domain, meaning — and everything on
its path reads that declaration: the notebooks' parameters cells are what
`run/parameter_cells.py` writes from it, and no library default along the path (the session,
the chapters, the methods) repeats the default as a second literal."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

from factcircuits.results.parameter_declarations import CORE, Parameter
from factcircuits.results.registry import builtin_methods
from factcircuits.run import parameter_cells
from factcircuits.run.folders import default_notebooks_dir
from factcircuits.run.parameters import declared_parameters

SRC = Path(importlib.import_module("factcircuits").__file__).parent
# where a run's parameters travel: the session, the methods' entries and their computations
PATH = [SRC / "run" / "session.py", *sorted((SRC / "chapters").glob("*.py")),
        *sorted((SRC / "methods").rglob("*.py"))]
DECLARED = declared_parameters()
CONSTRUCTORS = {"Parameter", "whole", "choice", "positive_float", "text", "flag",
                "auto_or_whole"}


def literal_defaults(source: str, names) -> list[tuple[int, str, str]]:
    """(line, name, default) for each function argument or class field named in `names` whose
    default is a literal that the parameter of that name could take: a second declaration of
    its default. None ("not given") and a value outside the parameter's domain (another
    quantity that shares the name, e.g. patching's direction="denoising") are not."""
    found = []
    for node in ast.walk(ast.parse(source)):
        pairs = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            positional = a.posonlyargs + a.args
            pairs += zip(positional[len(positional) - len(a.defaults):], a.defaults)
            pairs += [(k, d) for k, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None]
            pairs = [(arg.arg, d) for arg, d in pairs]
        elif isinstance(node, ast.ClassDef):
            pairs = [(s.target.id, s.value) for s in node.body if isinstance(s, ast.AnnAssign)
                     and isinstance(s.target, ast.Name) and s.value is not None]
        for name, default in pairs:
            if name not in names:
                continue
            try:
                value = ast.literal_eval(default)
            except ValueError:
                continue  # a reference: the declaration's object
            declaration = names[name]
            if value is not None and (declaration is None or declaration.ok(value)):
                found.append((default.lineno, name, ast.unparse(default)))
    return found


def declarations_in(source: str) -> list[str]:
    """The names declared by `whole("name", …)`-style calls in a module."""
    return [node.args[0].value for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id in CONSTRUCTORS and node.args
            and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)]


def test_the_check_finds_a_second_literal_default():
    """The scanner itself, on code written to break the rule and code that keeps it."""
    names = {n: DECLARED[n] for n in ("noise_samples", "seed", "max_patches", "n_prompts",
                                      "direction")}
    bad = ("def trace(lm, *, noise_samples: int = 5, seed=0, other=3):\n    pass\n"
           "class Options:\n    max_patches: str = 'auto'\n")
    assert literal_defaults(bad, names) == [
        (1, "noise_samples", "5"), (1, "seed", "0"), (4, "max_patches", "'auto'")]
    good = ("def trace(lm, *, noise_samples: int = NOISE_SAMPLES.default, n_prompts=None,\n"
            "          seed=SEED.default, direction='denoising'):\n    pass\n")
    assert literal_defaults(good, names) == []
    assert declarations_in('X = whole("x", 3, "m", 1)\nY = flag("y", True, "m")\n') == \
        ["x", "y"]


def test_each_parameter_is_declared_once_in_src():
    """One declaring call per parameter name in the whole package; every registered
    parameter is one of them, and a name two methods share is the same object."""
    counts: dict[str, list[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        for name in declarations_in(path.read_text()):
            counts.setdefault(name, []).append(str(path.relative_to(SRC)))
    assert set(DECLARED) <= set(counts), set(DECLARED) - set(counts)
    twice = {n: where for n, where in counts.items() if n in DECLARED and len(where) > 1}
    assert not twice, twice
    for m in builtin_methods():
        for p in m.parameters:
            assert DECLARED[p.name] is p, (m.notebook, p.name)


def test_no_second_literal_default_along_a_parameters_path():
    """The session's signature, the chapters' entries and the methods' functions take a
    declared parameter's default from its declaration (`SEED.default`), never as a literal."""
    found = [f"{path.relative_to(SRC)}:{line} {name}={default}"
             for path in PATH for line, name, default in literal_defaults(path.read_text(),
                                                                           DECLARED)]
    assert not found, "\n".join(found)


def test_the_sessions_defaults_are_the_core_declarations():
    from factcircuits.run.session import open_session

    signature = inspect.signature(open_session).parameters
    assert {p.name: signature[p.name].default for p in CORE} == \
        {p.name: p.default for p in CORE}


@pytest.mark.parametrize("notebook", sorted(default_notebooks_dir().glob("[0-9][0-9]_*.py")),
                         ids=lambda p: p.stem)
def test_each_notebooks_parameters_cell_is_generated_from_the_declarations(notebook):
    from factcircuits.results.registry import method

    entry = method(notebook.stem)
    assert entry is not None, f"{notebook.name} has no registered method"
    assert parameter_cells.cell_of(notebook.read_text()) == parameter_cells.cell_source(entry), (
        f"{notebook.name}'s parameters cell differs from its declarations: run "
        "`python -m factcircuits.run.parameter_cells`")


def test_a_cell_that_disagrees_is_found_and_rewritten(tmp_path):
    from factcircuits.results.registry import method

    entry = method("05_causal_tracing")
    good = f'# %%\nx = 1\n\n{parameter_cells.CELL_MARKER}\n' \
           f'{parameter_cells.cell_source(entry)}\n\n# %%\nprint(x)\n'
    bad = good.replace("noise_samples = 10", "noise_samples = 2")
    assert bad != good and parameter_cells.cell_of(bad) != parameter_cells.cell_source(entry)
    (tmp_path / "05_causal_tracing.py").write_text(bad)
    assert parameter_cells.write_cells(tmp_path) == [tmp_path / "05_causal_tracing.py"]
    assert (tmp_path / "05_causal_tracing.py").read_text() == good


def test_a_long_meaning_goes_above_its_line():
    p = Parameter("x", "auto", "a meaning " * 12, "", lambda v: True)
    assert parameter_cells.line(p) == f"# {p.meaning}\nx = \"auto\""
    short = Parameter("n", 3.0, "three", "", lambda v: True)
    assert parameter_cells.line(short) == "n = 3.0  # three"


def test_the_run_commands_help_lists_every_declaration():
    """`factcircuits run --help` (and `sweep --help`) end with each parameter's default and
    meaning, by owner, read from the declarations."""
    from factcircuits.cli import build_parser
    from factcircuits.results.registry import methods

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for command in ("run", "sweep"):
        text = commands[command].format_help()
        assert "parameters (-p NAME=VALUE)" in text, command
        for p in CORE:
            assert f"{p.name}={p.default if p.default != '' else '(empty)'}  {p.meaning}" \
                in text, (command, p.name)
        for m in [m for m in methods() if m.parameters]:
            block = text.split(f"  {m.notebook}:\n", 1)[1]
            for p in m.parameters:
                shown = str(p.default).lower() if isinstance(p.default, bool) else p.default
                assert f"    {p.name}={shown}  {p.meaning}" in block, (command, p.name)


def test_an_entry_declares_parameters_not_names():
    from factcircuits.chapters.task_check import TaskCheckHeadline
    from factcircuits.results.registry import Method

    with pytest.raises(ValueError, match="09_x: parameters are declarations"):
        Method("09_x", "X", "x", TaskCheckHeadline, parameters=({"rounds": 3},))
