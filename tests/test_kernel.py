"""The kernels a run starts talk over private Unix sockets (no TCP transport warning) and are
interrupted at shutdown only while a cell runs (an interrupt landing in an idle kernel's last
handler printed "KeyboardInterrupt caught in kernel"). test_run_faults checks a whole run's log
holds none of jupyter's notices."""

from __future__ import annotations

import asyncio
import os

from factcircuits.run.notebooks import kernel_options


def test_shutdown_interrupts_the_kernel_only_while_a_cell_runs(monkeypatch):
    from jupyter_client.manager import AsyncKernelManager

    sent = []

    async def interrupt(self):  # jupyter_client's SIGINT to the kernel, counted instead
        sent.append(self.shutting_down)

    monkeypatch.setattr(AsyncKernelManager, "_async_interrupt_kernel", interrupt)
    options = kernel_options()
    km = options["kernel_manager_class"](kernel_name="python3")
    socket_dir = os.path.dirname(km.ip)
    assert km.transport == "ipc" and os.path.isdir(socket_dir)
    km.shutting_down = True
    asyncio.run(km._async_interrupt_kernel())  # idle after the last cell: no interrupt
    assert sent == []
    options["on_cell_execute"](cell=None, cell_index=0)
    asyncio.run(km._async_interrupt_kernel())  # a cell still running (Ctrl-C, a timeout)
    options["on_cell_executed"](cell=None, cell_index=0, execute_reply={})
    km.shutting_down = False
    asyncio.run(km._async_interrupt_kernel())  # an interrupt asked for outside shutdown
    assert sent == [True, False]
    asyncio.run(km._async_cleanup_resources())
    assert not os.path.exists(socket_dir)
