"""The analysis notebooks as the runner sees them: discovery, their `parameters` cell, and
the tidying of an executed notebook (papermill metadata, stderr, Quarto front matter)."""

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


def add_front_matter(nb, subtitle: str) -> None:
    """Give an executed notebook the YAML front matter Quarto reads (first raw cell): its title
    from the first `# heading` (removed there, so the title is not shown twice) and a subtitle
    naming the run."""
    import json as _json

    import nbformat

    if nb.cells and nb.cells[0].cell_type == "raw" and nb.cells[0].source.startswith("---"):
        return
    title = None
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            lines = cell.source.splitlines()
            if lines and lines[0].startswith("# "):
                title = lines[0][2:].strip()
                cell.source = "\n".join(lines[1:]).lstrip("\n")
            break
    if title is None:
        return
    # JSON strings are valid YAML scalars: quotes and colons in titles stay safe.
    yaml = f"---\ntitle: {_json.dumps(title)}\nsubtitle: {_json.dumps(subtitle)}\n---"
    nb.cells.insert(0, nbformat.v4.new_raw_cell(yaml))


def tidy_executed_notebook(path: Path, source: str, keep_stderr: bool = False,
                             subtitle: str | None = None) -> None:
    """papermill records absolute input/output paths; keep names only. Progress bars and
    warnings (stderr) went to the terminal log already; a write-up reader does not need
    them, so accepted notebooks drop them (a failed one keeps them for debugging)."""
    import nbformat

    if not path.is_file():
        return
    nb = nbformat.read(path, as_version=4)
    meta = nb.metadata.get("papermill", {})
    meta["input_path"], meta["output_path"] = source, path.name
    if subtitle:
        add_front_matter(nb, subtitle)
    if not keep_stderr:
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs = [o for o in cell.outputs
                                if not (o.output_type == "stream" and o.name == "stderr")]
    nbformat.write(nb, path)
