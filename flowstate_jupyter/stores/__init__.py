"""Stores: where versioned JSON records live. ``open_store(url)`` picks the backend."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ..base.env import DEFAULT_STORE_URL as DEFAULT_URL
from ..base.env import store_url
from ..errors import StoreError
from .base import KEEP, Change, Expected, HistoryEntry, Record, Store
from .memory import MemoryStore
from .sqlite import SQLiteStore


_INT_OPTIONS = {"max_state_bytes", "history_limit", "history_limit_bytes", "changelog_limit",
                "changelog_item_bytes", "wal_limit_bytes", "trace_limit", "tombstone_limit"}
_FLOAT_OPTIONS = {"timeout", "poll_interval"}


def _query_options(query: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key, value in parse_qsl(query):
        if key in _INT_OPTIONS:
            options[key] = int(value)
        elif key in _FLOAT_OPTIONS:
            options[key] = float(value)
        else:
            options[key] = value
    return options


def sqlite_path(url: str) -> Path:
    """The file a ``sqlite:///`` URL names.

    ``sqlite:///abs/path.db`` and ``sqlite:////abs/path.db`` are absolute; a path starting with
    ``.`` or ``~`` after the three slashes (``sqlite:///.flowstate/flowstate.db``) is relative to
    the current folder (or home), which is how the default store lives beside the notebook.
    """
    rest = unquote(url.split("?", 1)[0][len("sqlite://"):])
    if rest.startswith("/.") or rest.startswith("/~"):
        return Path(rest[1:]).expanduser().absolute()
    return Path("/" + rest.lstrip("/") if rest.startswith("//") else rest)  # not POSIX "//x"


def is_store_file(store: Store, path: str | os.PathLike) -> bool:
    """Whether ``path`` is one of the files ``store`` keeps (SQLite: database, WAL, shm).

    Such a file must never be opened outside SQLite (see :mod:`.sqlite`): commands that read or
    write a file the user names check this first.
    """
    files = store._files() if isinstance(store, SQLiteStore) else []
    target = os.path.realpath(path)
    for name in files:
        try:
            if os.path.realpath(name) == target or os.path.samefile(name, path):
                return True
        except OSError:  # not there (yet): only the name can match
            continue
    return False


def open_store(url: str | None = None, **options: Any) -> Store:
    """Open a store by URL: ``memory://``, ``sqlite:///path.db`` or ``postgresql://...``.

    ``url=None`` reads ``FLOWSTATE_STORE``, else uses ``.flowstate/flowstate.db`` under the
    current folder. Options (also accepted as URL query parameters), every bound in rows and in
    bytes: ``max_state_bytes`` (1 MiB), ``history_limit`` (100 versions per record),
    ``history_limit_bytes`` (8 MiB of state JSON per record; the newest version is always kept),
    ``changelog_limit`` (10,000 items), ``changelog_item_bytes`` (4 KiB: a larger change-log
    item keeps its delta out), ``trace_limit`` (100 ended runs kept per session) and
    ``tombstone_limit`` (100 tombstones kept per collection); SQLite adds ``durability``
    ("normal"/"full"), ``timeout``, ``poll_interval`` and ``wal_limit_bytes`` (64 MiB).
    """
    url = url or store_url()
    scheme = urlsplit(url).scheme if "://" in url else ""
    if scheme in ("", "file"):  # a plain path means a SQLite file
        path = url[len("file://"):] if scheme == "file" else url
        return SQLiteStore(Path(path).expanduser(), **options)
    query = url.split("?", 1)[1] if "?" in url else ""
    options = {**_query_options(query), **options}
    if scheme == "memory":
        return MemoryStore(**options)
    if scheme == "sqlite":
        return SQLiteStore(sqlite_path(url), **options)
    if scheme in ("postgresql", "postgres"):
        try:
            from .postgres import PostgresStore
        except ImportError as exc:
            raise StoreError("PostgreSQL stores need psycopg 3: pip install "
                             "'flowstate-jupyter[postgres]'") from exc
        return PostgresStore(url.split("?", 1)[0], **options)
    raise StoreError(f"unknown store URL {url!r}; use memory://, sqlite:///path.db or "
                     f"postgresql://user@host/db")


__all__ = ["open_store", "Store", "Record", "Change", "HistoryEntry", "Expected", "KEEP",
           "MemoryStore", "SQLiteStore", "DEFAULT_URL", "sqlite_path"]
