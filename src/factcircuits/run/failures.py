"""Why a notebook of a run failed, in one line: the file system's fault when there is one
(no space left, read-only, permission), else papermill's cell error or the exception."""

from __future__ import annotations

from pathlib import Path

from factcircuits.files import describe_fault, fault_of
from factcircuits.run.notebooks import Notebook, tidy_executed_notebook


def tidy_after(out: Path, source: str, status: str) -> None:
    """Tidy an executed notebook; after a failure the notebook may be partial (a full disk
    truncates it), and the failure's own reason matters more than the tidying."""
    try:
        tidy_executed_notebook(out, source, keep_stderr=status != "ok")
    except Exception:
        if status == "ok":
            raise


def failure_reason(nb: Notebook, exc: BaseException) -> str:
    from papermill.exceptions import PapermillExecutionError

    if (fault := fault_of(exc)) is not None:  # the file system, not the notebook, failed
        return f"notebook {nb.name}: {describe_fault(fault)}"
    if isinstance(exc, PapermillExecutionError):
        value = (str(exc.evalue).strip().splitlines() or [""])[0][:200]
        return (f"notebook {nb.name} failed in cell {exc.cell_index} "
                f"(execution count {exc.exec_count}): {exc.ename}: {value}")
    text = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"notebook {nb.name} failed: {type(exc).__name__}: {text}"
