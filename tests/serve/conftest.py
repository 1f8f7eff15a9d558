"""Fixtures for the serving tests: a real uvicorn server on a free loopback port, serving the
flow of ``served_flow.py`` from a SQLite file, and httpx clients.

``serve(**options)`` starts one (``tokens=`` for bearer tokens; other options as
``flowstate_jupyter.serve.start`` takes them) and stops it after the test. Helpers (clients,
event streams, tokens) are in ``_serving.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import flowstate_jupyter as fs
from flowstate_jupyter.serve import start


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'serve.db'}"


@pytest.fixture
def store(db_url: str) -> Iterator[Any]:
    s = fs.open_store(db_url)
    yield s
    s.close()


@pytest.fixture
def flow() -> Any:
    from served_flow import flow
    return flow


@pytest.fixture
def serve(flow: Any, store: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """``serve(**options)`` -> a running BackgroundServer (port 0: a free one)."""
    monkeypatch.setenv("FLOWSTATE_USER", "local-user")
    monkeypatch.delenv("FLOWSTATE_TOKENS", raising=False)
    started: list[Any] = []

    def make(**options: Any) -> Any:
        options.setdefault("store", store)
        server = start(flow, port=0, **options)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
        assert not server.running, "the server thread did not end"
