"""Shared fixtures. Models load once per test session: tiny (random weights, ~1 s) for most
tests, the embedded SmolLM2 (a few seconds once its cache exists) where real behaviour matters."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the suite never touches the network


@pytest.fixture(scope="session")
def tiny_lm():
    from factcircuits.models import load_model

    return load_model("tiny")


@pytest.fixture(scope="session")
def embedded_lm():
    from factcircuits.models import load_model

    return load_model("default")
