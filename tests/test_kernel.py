"""The kernel a run executes its notebooks in (run/kernel.py): one process for the whole run,
emptied between notebooks, on private Unix sockets (no TCP transport warning), and
interrupted at shutdown only while a cell runs (an interrupt landing in an idle kernel's last
handler printed "KeyboardInterrupt caught in kernel"). test_run_faults checks a whole run's
log holds none of jupyter's notices, and that an interrupted run's kernel ends."""

from __future__ import annotations

import asyncio
import os

import nbformat
import papermill as pm
import pytest

from factcircuits.run.kernel import RunKernel, manager_class


def test_shutdown_interrupts_the_kernel_only_while_a_cell_runs(monkeypatch):
    from jupyter_client.manager import AsyncKernelManager

    sent = []

    async def interrupt(self):  # jupyter_client's SIGINT to the kernel, counted instead
        sent.append(self.shutting_down)

    monkeypatch.setattr(AsyncKernelManager, "_async_interrupt_kernel", interrupt)
    executing = [False]
    km = manager_class(executing, [])(kernel_name="python3")
    socket_dir = os.path.dirname(km.ip)
    assert km.transport == "ipc" and os.path.isdir(socket_dir)
    km.shutting_down = True
    asyncio.run(km._async_interrupt_kernel())  # idle after the last cell: no interrupt
    assert sent == []
    executing[0] = True
    asyncio.run(km._async_interrupt_kernel())  # a cell still running (Ctrl-C, a timeout)
    executing[0] = False
    km.shutting_down = False
    asyncio.run(km._async_interrupt_kernel())  # an interrupt asked for outside shutdown
    assert sent == [True, False]
    asyncio.run(km._async_cleanup_resources())
    assert not os.path.exists(socket_dir)


def notebook(*sources: str):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python"}
    return nb


def test_a_runs_notebooks_share_one_kernel_process_but_nothing_of_each_other(tmp_path):
    first = notebook(f"import os, json\nleftover = 41\nassert os.getcwd() == {str(tmp_path)!r}",
                     "pid = os.getpid()\npid")
    second = notebook("import os\nassert 'leftover' not in globals() and 'json' not in dir()",
                      "os.getpid()")
    kernel = RunKernel()
    try:
        done = [pm.execute_notebook(nb, str(tmp_path / f"{i}.ipynb"), cwd=str(tmp_path),
                                    progress_bar=False, kernel_name="python3",
                                    **kernel.options("python3", str(tmp_path)))
                for i, nb in enumerate((first, second))]
        km = kernel.km
        assert km is not None and asyncio.run(km.is_alive())
    finally:
        kernel.shutdown()
    assert not asyncio.run(km.is_alive())
    pids = [nb.cells[1].outputs[0]["data"]["text/plain"] for nb in done]
    assert pids[0] == pids[1]  # the same process ran both
    # each notebook numbers its cells from 1, as in a fresh kernel
    assert [[c.execution_count for c in nb.cells] for nb in done] == [[1, 2], [1, 2]]
    assert kernel.clients == []  # no client's channels left open


def test_a_dead_kernel_is_replaced_by_a_fresh_one(tmp_path):
    kernel = RunKernel()
    try:
        pm.execute_notebook(notebook("x = 1"), str(tmp_path / "a.ipynb"), progress_bar=False,
                            kernel_name="python3", **kernel.options("python3", str(tmp_path)))
        first = kernel.km
        asyncio.run(first.shutdown_kernel(now=True))  # killed between notebooks
        with pytest.raises(pm.PapermillExecutionError, match="NameError"):
            pm.execute_notebook(notebook("x"), str(tmp_path / "b.ipynb"), progress_bar=False,
                                kernel_name="python3", **kernel.options("python3", str(tmp_path)))
        assert kernel.km is not first
    finally:
        kernel.shutdown()


def test_the_kernel_process_output_goes_to_the_log_not_the_terminal(tmp_path, capfd):
    """Writes to the kernel process's own file descriptors (what ipykernel and ZeroMQ print
    while shutting down on SIGTERM) land in the run's kernel log; cell output stays in the
    notebook."""
    log = tmp_path / "_logs" / "run.kernel.log"
    kernel = RunKernel(log=log)
    nb = notebook("import os\nos.write(2, b'fd2-from-the-kernel\\n')\n"
                  "os.write(1, b'fd1-from-the-kernel\\n')\nprint('cell output')")
    try:
        done = pm.execute_notebook(nb, str(tmp_path / "out.ipynb"), cwd=str(tmp_path),
                                   progress_bar=False, kernel_name="python3",
                                   **kernel.options("python3", str(tmp_path)))
    finally:
        kernel.shutdown()
    assert kernel._log_file is None  # closed with the kernel
    text = log.read_text()
    assert "fd2-from-the-kernel" in text and "fd1-from-the-kernel" in text
    seen = capfd.readouterr()
    assert "from-the-kernel" not in seen.out + seen.err
    assert done.cells[0].outputs[0]["text"] == "cell output\n"
