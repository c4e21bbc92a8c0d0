"""Shared fixtures. Models load once per test session: tiny (random weights, ~1 s) for most
tests, the embedded SmolLM2 (a few seconds once its cache exists) where real behaviour matters."""

from __future__ import annotations

import os
import sys
from collections import defaultdict

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the suite never touches the network
# The fixture notebooks' methods (tests/fixtures/toy_methods.py) are registered in every
# process of a test run, the notebooks' kernels included, as a plugin's would be.
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [FIXTURES, os.environ.get("PYTHONPATH")]))
os.environ["FACTCIRCUITS_METHODS"] = "toy_methods"
sys.path.insert(0, FIXTURES)


def pytest_configure(config):
    """Under pytest-xdist, the workers share the cores: each one's torch, and the kernels it
    starts, get their share of threads (OpenMP threads of concurrent processes beyond the cores
    ran 5-10x slower). A count the caller chose stands."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and "FACTCIRCUITS_THREADS" not in os.environ:
        from factcircuits.run.threads import available_cores

        share = max(1, available_cores() // workers)
        os.environ["FACTCIRCUITS_THREADS"] = str(share)
        torch.set_num_threads(share)


@pytest.hookimpl(tryfirst=True)  # before -m selects
def pytest_collection_modifyitems(config, items):
    """A test that uses the embedded model is marked `embedded`, so that the quick loop
    (`-m "not slow and not embedded"`) leaves out every one of them, not only those marked.

    Under pytest-xdist (whole files per worker, in collection order), files with tests marked
    slow go first: the long ones start at once and the short ones fill the time around them,
    instead of one long file starting last while the other worker idles."""
    for item in items:
        if "embedded_lm" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.embedded)
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) < 2:
        return
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: keeps the order within


@pytest.fixture(scope="session")
def tiny_lm():
    from factcircuits.models import load_model

    return load_model("tiny")


@pytest.fixture(scope="session")
def embedded_lm():
    from factcircuits.models import load_model

    return load_model("default")


@pytest.fixture(scope="module")
def one_thread():
    """Many tiny forwards: one thread avoids OpenMP oversubscription on a busy 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# Seconds per test file (setup + call + teardown: a module's shared run counts in its file),
# printed after the run so that the next slowdown shows which file it is in
# (benchmarks/suite.py prints the same beside a saved report).
_FILE_SECONDS: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report):
    _FILE_SECONDS[report.nodeid.split("::")[0]] += report.duration


def pytest_terminal_summary(terminalreporter):
    if not _FILE_SECONDS:
        return
    terminalreporter.write_sep("=", "seconds per test file")
    for path, seconds in sorted(_FILE_SECONDS.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line(f"{seconds:8.1f}s  {path}")
