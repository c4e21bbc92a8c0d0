"""The analysis notebooks as the runner sees them: discovery, their `parameters` cell, the
kernel that executes one, and the tidying of an executed notebook (papermill metadata, stderr,
Quarto front matter)."""

from __future__ import annotations

import ast
import shutil
import tempfile
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


def kernel_options() -> dict[str, Any]:
    """papermill keyword arguments for executing one notebook (a fresh kernel each call).

    - The kernel talks to the runner over Unix sockets in a private temporary folder, not TCP
      on localhost: nothing else on the machine can connect, and ipykernel has no reason to
      warn that its TCP transport is unencrypted.
    - At shutdown jupyter_client interrupts the kernel (SIGINT) before asking it to exit. That
      interrupt stops a cell still running (a Ctrl-C or timeout of the run), but after the last
      cell papermill's final kernel_info request may still be in the kernel's handler, where the
      SIGINT lands as "KeyboardInterrupt caught in kernel" (about one run in a dozen). So the
      kernel is interrupted at shutdown only while a cell is executing.
    """
    from jupyter_client.manager import AsyncKernelManager

    executing: list[bool] = [False]

    class RunnerKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs: Any):
            # AF_UNIX paths hold ~100 bytes: a short folder of its own, removed at cleanup
            self._socket_dir = tempfile.mkdtemp(prefix="fc-kernel-")
            super().__init__(**kwargs, transport="ipc", ip=f"{self._socket_dir}/k")

        async def _async_interrupt_kernel(self) -> None:
            if self.shutting_down and not executing[0]:
                return  # idle: the shutdown request alone ends it
            await super()._async_interrupt_kernel()

        async def _async_cleanup_resources(self, restart: bool = False) -> None:
            await super()._async_cleanup_resources(restart=restart)
            if not restart:
                shutil.rmtree(self._socket_dir, ignore_errors=True)

    def cell_started(**_: Any) -> None:
        executing[0] = True

    def cell_finished(**_: Any) -> None:
        executing[0] = False

    return {"kernel_manager_class": RunnerKernelManager, "on_cell_execute": cell_started,
            "on_cell_executed": cell_finished}


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
