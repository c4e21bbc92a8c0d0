"""The one kernel a run executes its notebooks in.

Starting a kernel and importing torch, transformers and TransformerLens in it cost about 7 s
of CPU, as much as some notebooks' own work; a fresh kernel per notebook spent that eight
times per run. So a run starts one kernel and, between notebooks, empties its namespace
(IPython's `reset`: every variable and output of the notebook before is gone, so a notebook that
leaned on one would fail with a NameError) and restarts its cell numbering. What stays is
what is meant to be shared: imported modules, the loaded model (`session._MODELS`, keyed by
model, device and dtype) and the static-image exporter. Every notebook still seeds its own
random generators (`open_session`).

- The kernel talks to the runner over Unix sockets in a private temporary folder, not TCP on
  localhost: nothing else on the machine can connect, and ipykernel has no reason to warn
  that its TCP transport is unencrypted.
- At shutdown jupyter_client interrupts the kernel (SIGINT) before asking it to exit. That
  interrupt stops a cell still running (a Ctrl-C or timeout of the run), but after the last
  cell a request may still be in the kernel's handler, where the SIGINT lands as
  "KeyboardInterrupt caught in kernel". So the kernel is interrupted at shutdown only while a
  cell is executing.
- The kernel process's own stdout and stderr (not its cells' outputs, which papermill takes
  over the kernel's channels) go to a log file beside the runs (`_logs/<run-id>.kernel.log`),
  not to the terminal: on SIGTERM to the process group, or at exit, ipykernel and ZeroMQ print
  tracebacks of their own shutdown there ("ZMQError: Socket operation on non-socket") that say
  nothing about the run and would bury the one line that does.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import IO, Any

# Between notebooks: no variable, output or cell number of the notebook before survives.
# (`%reset -f` would keep the history session, and numbering cells from 1 again in it makes
# IPython print "Session/line number was not unique in database".)
RESET = "get_ipython().reset(new_session=True)\nimport gc as _gc; _gc.collect(); del _gc"


def manager_class(executing: list[bool], clients: list):
    """An AsyncKernelManager on private Unix sockets that interrupts at shutdown only while
    `executing[0]` (a cell is running), and lists in `clients` the clients it gives out
    (papermill leaves a kernel it did not start running, and its client's channels open)."""
    from jupyter_client.manager import AsyncKernelManager

    class RunnerKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs: Any):
            # AF_UNIX paths hold ~100 bytes: a short folder of its own, removed at cleanup
            self._socket_dir = tempfile.mkdtemp(prefix="fc-kernel-")
            super().__init__(**kwargs, transport="ipc", ip=f"{self._socket_dir}/k")

        def client(self, **kwargs: Any):
            made = super().client(**kwargs)
            clients.append(made)
            return made

        async def _async_interrupt_kernel(self) -> None:
            if self.shutting_down and not executing[0]:
                return  # idle: the shutdown request alone ends it
            await super()._async_interrupt_kernel()

        async def _async_cleanup_resources(self, restart: bool = False) -> None:
            await super()._async_cleanup_resources(restart=restart)
            if not restart:
                shutil.rmtree(self._socket_dir, ignore_errors=True)

    return RunnerKernelManager


class RunKernel:
    """`options(kernel_name, cwd)` before each notebook gives papermill the run's kernel
    (started on first use, in `cwd` and the current environment, emptied when reused);
    `shutdown()` when the run ends, however it ends. With `log`, the kernel process's own
    stdout and stderr are appended there (see the module docstring)."""

    def __init__(self, log: Path | None = None) -> None:
        self.executing: list[bool] = [False]
        self.clients: list = []
        self.manager = manager_class(self.executing, self.clients)
        self.km = None
        self.cwd = ""
        self.log = log
        self._log_file: IO[bytes] | None = None

    def _process_output(self) -> dict[str, Any]:
        """Popen keyword arguments sending the kernel's own output to the log, if any."""
        if self.log is None:
            return {}
        if self._log_file is None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.log, "ab")  # noqa: SIM115 -- closed in shutdown()
        return {"stdout": self._log_file, "stderr": self._log_file}

    def options(self, kernel_name: str, cwd: str) -> dict[str, Any]:
        """papermill keyword arguments for executing the next notebook."""
        from jupyter_core.utils import run_sync

        self._close_clients()
        if self.km is not None and ((self.km.kernel_name, self.cwd) != (kernel_name, cwd)
                                    or not run_sync(self.km.is_alive)()):
            self.shutdown()
        if self.km is None:
            self.km, self.cwd = self.manager(kernel_name=kernel_name), cwd
            run_sync(self.km.start_kernel)(cwd=cwd, **self._process_output())
        else:  # a notebook ran in it
            self._reset()
        return {"km": self.km, "on_cell_execute": self._cell_started,
                "on_cell_executed": self._cell_finished}

    def _close_clients(self) -> None:
        while self.clients:
            self.clients.pop().stop_channels()

    def _cell_started(self, **_: Any) -> None:
        self.executing[0] = True

    def _cell_finished(self, **_: Any) -> None:
        self.executing[0] = False

    def _reset(self) -> None:
        from jupyter_core.utils import run_sync

        async def reset() -> None:
            client = self.km.client()
            client.start_channels()
            await client.wait_for_ready(timeout=60)
            reply = await client.execute_interactive(RESET, silent=True, timeout=120)
            if reply["content"]["status"] != "ok":
                raise RuntimeError(f"could not empty the kernel between notebooks: "
                                   f"{reply['content'].get('evalue', '')}")

        run_sync(reset)()
        self._close_clients()

    def shutdown(self) -> None:
        from jupyter_core.utils import run_sync

        self._close_clients()
        if self.km is None:
            return
        km, self.km = self.km, None
        try:
            if run_sync(km.is_alive)():
                run_sync(km.shutdown_kernel)()
        finally:
            run_sync(km.cleanup_resources)()
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None
                _drop_if_empty(self.log)


def _drop_if_empty(log: Path) -> None:
    """An empty log (the kernel said nothing of its own) leaves no file, nor a `_logs` folder
    with nothing in it, beside the runs."""
    try:
        if log.stat().st_size == 0:
            log.unlink()
            log.parent.rmdir()  # only when no other run's log is there
    except OSError:
        pass
