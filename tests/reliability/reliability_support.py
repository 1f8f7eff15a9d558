"""Shared pieces of the reliability suite: a schema, awkward strings and a change-log cursor.

The backends come from ``tests/conftest.py``: its ``backend`` fixture runs a test on every store
kind (memory, SQLite, PostgreSQL), and ``backend.open(**options)`` gives store objects on the same
data. Tests here never assume an empty store: they use fresh scope ids and read the change log
from a cursor, so a shared database works too.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, Field

from flowstate_jupyter.stores import Store


@contextlib.contextmanager
def second_view(backend: Any, store: Store) -> Iterator[Store]:
    """Another store object on the same data (a new connection), or ``store`` itself in memory.

    Reading back through it proves values went to the database and came back, not from a cache.
    """
    if not backend.shared:
        yield store
        return
    other = backend.open()
    try:
        yield other
    finally:
        other.close()


def keeps_nul_in_text(backend: Any) -> bool:
    """Whether the backend stores a NUL character in content and record names.

    PostgreSQL ``text`` cannot hold NUL, so that store refuses such content and names with
    ``ValidationError`` (states are JSON, where NUL is escaped, so states keep it everywhere).
    """
    return backend.kind != "postgres"


def new_id(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class ChangeCursor:
    """Follows a store's change log from 'now': ``new()`` returns the items since last time."""

    def __init__(self, store: Store) -> None:
        self.store = store
        rows = store.changes()
        self.seq = rows[-1][0] if rows else 0

    def new(self) -> list[dict]:
        rows = self.store.changes(after=self.seq)
        if rows:
            self.seq = rows[-1][0]
        return [event for _, event in rows]


class Profile(BaseModel):
    """The scope-state schema the reliability tests write to."""

    count: int = 0
    ratio: float = 0.0
    name: str = ""
    mode: Literal["chat", "agent"] = "chat"
    tags: list[str] = Field(default_factory=list)
    scores: dict[str, int] = Field(default_factory=dict)


PROFILE_DEFAULTS = Profile().model_dump(mode="json")

SQL_STRINGS = [
    "'; DROP TABLE records; --",
    "\"; DROP TABLE history; --",
    "' OR '1'='1",
    "%", "_", "%_%", "a_b", "100%", "\\", "\\'", "'", '"', "`", ";", "--", "/*", "*/",
    "\x00", "a\x00b", "\x00'; DELETE FROM changes; --",
    "Robert'); DROP TABLE students;--",
    "é€😀", "\u202e", "\n\r\t", "",
]
