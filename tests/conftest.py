"""Shared fixtures. Models load once per test session: tiny (random weights, ~1 s) for most
tests, the embedded SmolLM2 (a few seconds once its cache exists) where real behaviour matters."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the suite never touches the network


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
