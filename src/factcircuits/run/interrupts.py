"""Signals during a run: SIGTERM (what `timeout` and batch schedulers send) and SIGHUP (a closed
terminal) end a run the way Ctrl-C does, as an exception, so that the runner moves its staging
folder to `_failed/` with the reason instead of leaving it behind. SIGKILL cannot be caught:
the next run sweeps what it leaves (`in_progress.sweep_stale_staging`)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s)


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by a signal; `exit_code` is the shell's 128 + signal number."""

    def __init__(self, signum: int):
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(self.reason)

    @property
    def reason(self) -> str:
        name = signal.Signals(self.signum).name
        return "interrupted (Ctrl-C, SIGINT)" if name == "SIGINT" else f"terminated by {name}"


def reason_of(exc: BaseException) -> str:
    if isinstance(exc, RunInterrupted):
        return exc.reason
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C, SIGINT)"
    text = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """Within the block, the first SIGINT/SIGTERM/SIGHUP raises RunInterrupted; later ones are
    ignored so that the cleanup they interrupt can finish. Outside the main thread (where
    handlers cannot be set) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = []

    def handler(signum, _frame):
        if fired:
            return
        fired.append(signum)
        raise RunInterrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Within the block, SIGINT/SIGTERM/SIGHUP wait (blocked, then delivered after it): for the
    renames that must not be split, such as putting a finished run in place."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
