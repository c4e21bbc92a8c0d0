"""The analysis notebooks' `parameters` cells, generated from the declarations: the core
parameters, `run_dir`, then the method's own (its registry entry's `parameters`), each as
`name = default  # meaning`. Papermill reads literals only, so the cell is written out in the
notebook rather than computed; `tests/test_parameter_declarations.py` fails when a shipped
notebook's cell differs from what this module writes.

Regenerate after changing a declaration: `python -m factcircuits.run.parameter_cells`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from factcircuits.results.parameter_declarations import CORE, Parameter
from factcircuits.results.registry import Method, method

CELL_MARKER = '# %% tags=["parameters"]'
LINE_LENGTH = 100  # the project's ruff limit: a longer line puts its comment above it
RUN_DIR_LINE = 'run_dir = "."'  # set by the runner (run.parameters.RESERVED)


def literal(value: Any) -> str:
    """The default as the cell writes it: text in double quotes, numbers and flags as Python."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)


def line(p: Parameter) -> str:
    assignment = f"{p.name} = {literal(p.default)}"
    inline = f"{assignment}  # {p.meaning}"
    return inline if len(inline) <= LINE_LENGTH else f"# {p.meaning}\n{assignment}"


def cell_source(entry: Method) -> str:
    """The parameters cell of `entry`'s notebook (without the cell marker)."""
    return "\n".join([*(line(p) for p in CORE), RUN_DIR_LINE,
                      *(line(p) for p in entry.parameters)])


def cell_of(text: str) -> str | None:
    """The source of a jupytext percent notebook's parameters cell (None: it has none)."""
    lines = text.split("\n")
    if CELL_MARKER not in lines:
        return None
    start = lines.index(CELL_MARKER) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("# %%")),
               len(lines))
    return "\n".join(lines[start:end]).strip("\n")


def with_cell(text: str, source: str) -> str:
    """`text` with its parameters cell replaced by `source`."""
    old = cell_of(text)
    if old is None:
        raise ValueError("no cell tagged 'parameters'")
    return text.replace(f"{CELL_MARKER}\n{old}\n", f"{CELL_MARKER}\n{source}\n", 1)


def write_cells(folder: Path) -> list[Path]:
    """Rewrite the parameters cell of every notebook in `folder` that has a registered method;
    the notebooks changed."""
    changed = []
    for path in sorted(Path(folder).glob("[0-9][0-9]_*.py")):
        entry = method(path.stem)
        if entry is None:
            continue
        text = path.read_text()
        new = with_cell(text, cell_source(entry))
        if new != text:
            path.write_text(new)
            changed.append(path)
    return changed


if __name__ == "__main__":
    from factcircuits.run.folders import default_notebooks_dir

    target = Path(sys.argv[1]) if len(sys.argv) > 1 else default_notebooks_dir()
    for path in write_cells(target):
        print(f"rewrote the parameters cell of {path}")
