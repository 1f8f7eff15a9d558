"""Stores: where versioned JSON records live. ``open_store(url)`` picks the backend."""

from __future__ import annotations

import inspect
import math
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ..base.env import DEFAULT_STORE_URL as DEFAULT_URL
from ..base.env import store_url
from ..base.text import short
from ..errors import StoreError
from .base import KEEP, Change, Expected, HistoryEntry, Record, Store
from .memory import MemoryStore
from .sqlite import SQLiteStore


def _query_options(query: str) -> dict[str, Any]:
    return dict(parse_qsl(query))


def _option_kinds(cls: type) -> dict[str, type]:
    """The options a store class takes, with the type of each default (int, float, str, ...):
    read from its constructor and the base class's, so there is no list to keep in step."""
    kinds: dict[str, type] = {}
    for klass in (Store, cls):
        for name, param in inspect.signature(klass).parameters.items():
            if param.kind is param.KEYWORD_ONLY:
                kinds[name] = type(param.default) if param.default is not None else str
    return kinds


def _checked_options(options: dict[str, Any], cls: type, *, open_ended: bool = False
                     ) -> dict[str, Any]:
    """Store options (from the URL's query, as text, or as keywords) converted to the type of
    their default and checked, so that a bad one is a :class:`StoreError` naming it instead of
    a stray ``ValueError`` later: counts are whole numbers, times finite numbers of seconds > 0
    (the store's constructor then checks its own ranges). Options the class does not take are
    refused, unless ``open_ended`` (a PostgreSQL store passes them on to libpq).
    """
    kinds = _option_kinds(cls)
    checked: dict[str, Any] = {}
    for key, value in options.items():
        kind = kinds.get(key)
        if kind is None and not open_ended:
            raise StoreError(f"unknown store option {short(key, 40)}; {cls.__name__} takes "
                             f"{', '.join(sorted(kinds))}")
        checked[key] = _number(key, value, kind) if kind in (int, float) else value
    return checked


def _number(key: str, value: Any, kind: Any) -> Any:
    try:
        if isinstance(value, bool) or (kind is int and isinstance(value, float)):
            raise ValueError
        number = kind(value)
        if not math.isfinite(number) or number < 0 or (kind is float and number == 0):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        what = "a whole number" if kind is int else "a finite number of seconds > 0"
        raise StoreError(f"store option {key}={short(value, 40)} is not valid: give "
                         f"{what}") from None
    return number


def _construct(cls: type, *args: Any, **options: Any) -> Store:
    """``cls(*args, **options)``; a value the constructor refuses is a :class:`StoreError`."""
    try:
        return cls(*args, **options)
    except (ValueError, TypeError) as exc:
        raise StoreError(f"cannot open a {cls.__name__}: {exc}; see the options of "
                         f"open_store()") from None


def sqlite_path(url: str) -> Path:
    """The file a ``sqlite:///`` URL names.

    ``sqlite:///abs/path.db`` and ``sqlite:////abs/path.db`` are absolute; a path starting with
    ``.`` or ``~`` after the three slashes (``sqlite:///.flowstate/flowstate.db``) is relative to
    the current folder (or home), which is how the default store lives beside the notebook.
    """
    rest = unquote(url.split("?", 1)[0][len("sqlite://"):])
    if rest.startswith(("/.", "/~")):
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
    if not isinstance(url, str):
        raise StoreError(f"a store URL is text such as sqlite:///path.db, not "
                         f"{type(url).__name__}")
    if not url.isascii():
        try:
            url.encode("utf-8")
        except UnicodeEncodeError:
            raise StoreError(f"store URL {short(url)} holds a lone surrogate, which is not "
                             f"text; give the path as valid Unicode") from None
    scheme = urlsplit(url).scheme if "://" in url else ""
    if scheme in ("", "file"):  # a plain path means a SQLite file
        path = url[len("file://"):] if scheme == "file" else url
        return _construct(SQLiteStore, Path(path).expanduser(),
                          **_checked_options(options, SQLiteStore))
    query = url.split("?", 1)[1] if "?" in url else ""
    options = {**_query_options(query), **options}
    if scheme == "memory":
        return _construct(MemoryStore, **_checked_options(options, MemoryStore))
    if scheme == "sqlite":
        return _construct(SQLiteStore, sqlite_path(url), **_checked_options(options, SQLiteStore))
    if scheme in ("postgresql", "postgres"):
        try:
            from .postgres import PostgresStore
        except ImportError as exc:
            raise StoreError("PostgreSQL stores need psycopg 3: pip install "
                             "'flowstate-jupyter[postgres]'") from exc
        return _construct(PostgresStore, url.split("?", 1)[0],
                          **_checked_options(options, PostgresStore, open_ended=True))
    raise StoreError(f"unknown store URL {short(url)}; use memory://, sqlite:///path.db or "
                     f"postgresql://user@host/db")


__all__ = [
    "DEFAULT_URL",
    "KEEP",
    "Change",
    "Expected",
    "HistoryEntry",
    "MemoryStore",
    "Record",
    "SQLiteStore",
    "Store",
    "open_store",
    "sqlite_path",
]
