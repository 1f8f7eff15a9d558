"""Fixtures for the flow tests: real stores, in memory and in a SQLite file."""

from __future__ import annotations

import pytest

import flowstate_jupyter as fs


@pytest.fixture
def mem():
    """A fresh in-memory store."""
    store = fs.open_store("memory://")
    yield store
    store.close()


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    """The same test on a memory store and on a SQLite file in tmp_path."""
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'flows.db'}"
    store = fs.open_store(url)
    yield store
    store.close()
