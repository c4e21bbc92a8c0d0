"""The analysis notebooks as the runner sees them: discovery, their `parameters` cell and the
tidying of an executed notebook (papermill metadata, stderr). The kernel that executes them
is run/kernel.py."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factcircuits.errors import UserError


@dataclass
class Notebook:
    path: Path
    defaults: dict[str, Any]  # the parameters cell, literal values only

    @property
    def name(self) -> str:
        return self.path.stem


def read_notebook(path: Path):
    """An nbformat NotebookNode from a jupytext .py or an .ipynb."""
    import jupytext
    import nbformat

    if path.suffix == ".ipynb":
        return nbformat.read(path, as_version=4)
    return jupytext.read(path)


def parameters_cell_defaults(nb, path: Path) -> dict[str, Any]:
    """Names and literal values assigned in the `parameters`-tagged cell."""
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not cells:
        raise UserError(f"{path.name}: no cell tagged 'parameters'; tag the parameters cell")
    defaults: dict[str, Any] = {}
    for node in ast.parse(cells[0].source).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    try:
                        defaults[target.id] = ast.literal_eval(node.value)
                    except ValueError:
                        defaults[target.id] = None  # computed default: any value accepted
    return defaults


def discover_notebooks(folder: Path, select: list[str] | None = None) -> list[Notebook]:
    """`NN_*.py|ipynb` in name order; `select` keeps those whose name starts with a prefix."""
    folder = Path(folder)
    paths = sorted(p for p in folder.glob("[0-9][0-9]_*") if p.suffix in (".py", ".ipynb"))
    if not paths:
        raise UserError(f"no notebooks NN_*.py in {folder}; set --notebooks-dir")
    if select:
        names = [p.stem for p in paths]
        chosen = []
        for prefix in select:
            match = [p for p in paths if p.stem == prefix or p.stem.split("_")[0] == prefix]
            if not match:
                raise UserError(f"--notebooks: no notebook '{prefix}'; known: {', '.join(names)}")
            chosen += [p for p in match if p not in chosen]
        paths = sorted(chosen)
    return [Notebook(p, parameters_cell_defaults(read_notebook(p), p)) for p in paths]


def tidy_executed_notebook(path: Path, source: str, keep_stderr: bool = False) -> None:
    """papermill records absolute input/output paths; keep names only. Progress bars and
    warnings (stderr) went to the terminal log already; a write-up reader does not need
    them, so accepted notebooks drop them (a failed one keeps them for debugging)."""
    import nbformat

    if not path.is_file():
        return
    nb = nbformat.read(path, as_version=4)
    meta = nb.metadata.get("papermill", {})
    meta["input_path"], meta["output_path"] = source, path.name
    if not keep_stderr:
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs = [o for o in cell.outputs
                                if not (o.output_type == "stream" and o.name == "stderr")]
    nbformat.write(nb, path)
