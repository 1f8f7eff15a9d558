"""Stores: where versioned JSON records live. ``open_store(url)`` picks the backend."""

from __future__ import annotations

import math
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

_INT_OPTIONS = {"max_state_bytes", "history_limit", "changelog_limit", "pool_size"}
_FLOAT_OPTIONS = {"timeout", "poll_interval", "pool_timeout"}
_KNOWN = {"memory": {"max_state_bytes", "history_limit", "changelog_limit"},
          "sqlite": {"max_state_bytes", "history_limit", "changelog_limit", "durability",
                     "timeout", "poll_interval"}}


def _query_options(query: str) -> dict[str, Any]:
    return dict(parse_qsl(query))


def _checked_options(options: dict[str, Any], backend: str) -> dict[str, Any]:
    """Store options (from the URL's query or as keywords) converted and checked, so that a bad
    one is a :class:`StoreError` that names it, never a stray ``ValueError`` later.

    Counts are whole numbers >= 1, times finite numbers of seconds (``poll_interval`` > 0),
    ``durability`` ``"normal"`` or ``"full"``. Memory and SQLite stores know only their own
    options; a PostgreSQL store passes unknown ones to libpq.
    """
    checked: dict[str, Any] = {}
    for key, value in options.items():
        if key in _INT_OPTIONS:
            checked[key] = _number(key, value, int)
        elif key in _FLOAT_OPTIONS:
            checked[key] = _number(key, value, float)
        elif key == "durability" and value not in ("normal", "full"):
            raise StoreError(f"store option durability={short(value, 40)} is not valid: use "
                             f"'normal' or 'full'")
        elif backend in _KNOWN and key not in _KNOWN[backend]:
            raise StoreError(f"unknown {backend} store option {short(key, 40)}; the options "
                             f"are {', '.join(sorted(_KNOWN[backend]))}")
        else:
            checked[key] = value
    return checked


def _number(key: str, value: Any, kind: type) -> Any:
    try:
        if isinstance(value, bool) or (kind is int and isinstance(value, float)):
            raise ValueError
        number = kind(value)
        if not math.isfinite(number) or number < 0 or (number == 0 and key != "timeout"):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        what = "a whole number >= 1" if kind is int else "a finite number of seconds" + \
            (" >= 0" if key == "timeout" else " > 0")
        raise StoreError(f"store option {key}={short(value, 40)} is not valid: give "
                         f"{what}") from None
    return number


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


def open_store(url: str | None = None, **options: Any) -> Store:
    """Open a store by URL: ``memory://``, ``sqlite:///path.db`` or ``postgresql://...``.

    ``url=None`` reads ``FLOWSTATE_STORE``, else uses ``.flowstate/flowstate.db`` under the
    current folder. Options (also accepted as URL query parameters): ``max_state_bytes``,
    ``history_limit``, ``changelog_limit``; SQLite adds ``durability`` ("normal"/"full"),
    ``timeout`` and ``poll_interval``.
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
        return SQLiteStore(Path(path).expanduser(), **_checked_options(options, "sqlite"))
    query = url.split("?", 1)[1] if "?" in url else ""
    options = {**_query_options(query), **options}
    if scheme == "memory":
        return MemoryStore(**_checked_options(options, "memory"))
    if scheme == "sqlite":
        return SQLiteStore(sqlite_path(url), **_checked_options(options, "sqlite"))
    if scheme in ("postgresql", "postgres"):
        try:
            from .postgres import PostgresStore
        except ImportError as exc:
            raise StoreError("PostgreSQL stores need psycopg 3: pip install "
                             "'flowstate-jupyter[postgres]'") from exc
        return PostgresStore(url.split("?", 1)[0], **_checked_options(options, "postgresql"))
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
