"""Shared fixtures: a ``store`` for every backend, and a throwaway PostgreSQL server.

``store`` (and ``backend``, which can open more store objects on the same data) run each test
against ``memory``, ``sqlite`` (a fresh file in ``tmp_path``) and ``postgres`` (a fresh schema in
the test database, dropped afterwards). ``shared_backend`` is the same for the backends several
store objects and processes can share (sqlite, postgres).

PostgreSQL: ``FLOWSTATE_TEST_POSTGRES_URL`` names a server to use (the tests create and drop
schemas ``fs_test_*`` in its database). Without it, one throwaway server is started for the session
from Debian's binaries (``/usr/lib/postgresql/*/bin``) and the variable is set for subprocesses.
When neither is possible the PostgreSQL tests fail under ``CI=true`` and skip locally, saying how to
enable them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _pg
import pytest

from flowstate_jupyter.stores.base import Store
from flowstate_jupyter.stores.memory import MemoryStore
from flowstate_jupyter.stores.sqlite import SQLiteStore

IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
PG_ENV = "FLOWSTATE_TEST_POSTGRES_URL"
HOW_TO_ENABLE = (f"install Debian's server (apt-get install postgresql) so the tests can start a "
                 f"throwaway one, or set {PG_ENV}=postgresql://user@host/db")


def _unavailable(message: str) -> None:
    if IN_CI:
        pytest.fail(f"PostgreSQL tests cannot run under CI=true: {message}", pytrace=False)
    pytest.skip(f"PostgreSQL tests skipped: {message} (with CI=true this fails instead)")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a PostgreSQL database the tests may create schemas in."""
    try:
        import psycopg
        import psycopg_pool  # noqa: F401
    except ImportError:
        _unavailable("psycopg 3 is not installed; pip install -e '.[postgres]' (make test does)")
    url = os.environ.get(PG_ENV)
    if url:
        import psycopg
        try:
            psycopg.connect(url, connect_timeout=5).close()
        except psycopg.Error as exc:
            _unavailable(f"{PG_ENV} is set but the server does not answer: "
                         f"{str(exc).strip().splitlines()[0]}")
        yield url
        return
    bindir = _pg.find_bindir()
    if bindir is None:
        _unavailable(f"no PostgreSQL server binaries (initdb, pg_ctl) found; {HOW_TO_ENABLE}")
    server = _pg.TempPostgres(bindir)
    try:
        url = server.start()
    except (_pg.ServerError, OSError) as exc:
        server.stop()
        _unavailable(f"could not start a throwaway server from {bindir}: {exc}; {HOW_TO_ENABLE}")
    os.environ[PG_ENV] = url
    try:
        yield url
    finally:
        os.environ.pop(PG_ENV, None)
        server.stop()


class Backend:
    """One backend's place for one test; ``open()`` gives store objects on the same data."""

    def __init__(self, kind: str, tmp_path: Path, pg_url: str | None = None) -> None:
        self.kind = kind
        self.shared = kind != "memory"  # several objects and processes see the same records
        self.stores: list[Store] = []
        self.path = tmp_path / "store.db"
        self.pg_url = pg_url
        self.schema = f"fs_test_{uuid.uuid4().hex[:12]}"

    @property
    def url(self) -> str:
        """What ``open_store`` takes to reach the same data (from another process too)."""
        if self.kind == "memory":
            return "memory://"
        if self.kind == "sqlite":
            return f"sqlite:///{self.path}"
        return f"{self.pg_url}?schema={self.schema}"

    def open(self, cls: type | None = None, **options: Any) -> Store:
        if self.kind == "memory":
            store = (cls or MemoryStore)(**options)
        elif self.kind == "sqlite":
            store = (cls or SQLiteStore)(self.path, **options)
        else:
            from flowstate_jupyter.stores.postgres import PostgresStore
            store = (cls or PostgresStore)(self.pg_url, schema=self.schema, **options)
        self.stores.append(store)
        return store

    def admin(self):
        """A plain psycopg connection (autocommit) to the test database."""
        import psycopg
        return psycopg.connect(self.pg_url, autocommit=True)

    def table(self, name: str) -> str:
        return f'"{self.schema}"."flowstate_{name}"'

    def close(self) -> None:
        for store in self.stores:
            try:
                store.close()
            except Exception:
                pass
        if self.kind == "postgres":
            with self.admin() as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')


def _make_backend(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> Iterator[Backend]:
    pg_url = request.getfixturevalue("postgres_url") if kind == "postgres" else None
    backend = Backend(kind, tmp_path, pg_url)
    try:
        yield backend
    finally:
        backend.close()


ALL_BACKENDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
SHARED_BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=ALL_BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    yield from _make_backend(request, request.param, tmp_path)


@pytest.fixture(params=SHARED_BACKENDS)
def shared_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    yield from _make_backend(request, request.param, tmp_path)


@pytest.fixture
def pg_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """PostgreSQL only (mark the test ``postgres``)."""
    yield from _make_backend(request, "postgres", tmp_path)


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.open()



def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the browser tests last.

    Playwright's sync API keeps an event loop running in the main thread from the first browser
    test until the session ends, so a later test that calls ``asyncio.run`` would fail. The sort
    is stable: everything else keeps its order.
    """
    items.sort(key=lambda item: "tests/e2e/" in item.nodeid.replace("\\", "/"))
