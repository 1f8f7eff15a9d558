"""A session's journal: short notes a person or a tool leaves on a session.

``s.journal.append("switched mode", source="notebook", tags=["mode"])`` and
``s.journal.entries(limit=10)``. The journal is one bookkeeping record of the session
(``session/<id>/$journal``) holding the newest entries only, so it stays bounded: at most
``max_entries`` entries (default 200) of at most 4,000 characters each. Appends are atomic
(compare-and-swap), so notes from several kernels never overwrite each other (docs/concepts.md,
"A session's journal").
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from ..base.names import JOURNAL
from ..errors import ValidationError
from ..stores.base import Change, Record, Store
from .records import update_with_retries

__all__ = ["MAX_ENTRIES", "MAX_TEXT", "Journal"]

MAX_ENTRIES = 200
MAX_TEXT = 4000


class Journal:
    """The journal of one session. Entries: ``{"ts", "text", "source", "tags"}``."""

    def __init__(self, store: Store, session_id: str, *, max_entries: int = MAX_ENTRIES) -> None:
        if not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"max_entries must be a positive int, not {max_entries!r}")
        self._store = store
        self._session_id = session_id
        self.max_entries = max_entries

    def append(self, text: str, source: str = "notebook", tags: Iterable[str] = ()) -> dict:
        """Add a note; the oldest entries beyond ``max_entries`` are dropped. Returns the entry."""
        where = f"session {self._session_id!r} journal"
        if not isinstance(text, str):
            raise ValidationError(f"{where}: text must be a str, not {type(text).__name__}",
                                  where=where)
        if len(text) > MAX_TEXT:
            raise ValidationError(f"{where}: text is {len(text):,} characters, over the limit "
                                  f"of {MAX_TEXT:,}; keep long text in a resource's content",
                                  where=where, reason="too long")
        if not isinstance(source, str) or not source:
            raise ValidationError(f"{where}: source must be a non-empty str", where=where)
        tags = [tags] if isinstance(tags, str) else list(tags)
        if not all(isinstance(t, str) for t in tags):
            raise ValidationError(f"{where}: tags must be strings, got {tags!r}", where=where)
        entry = {"ts": time.time(), "text": text, "source": source, "tags": tags}

        def fn(record: Record | None) -> Change:
            entries = _entries(record)
            entries.append(entry)
            return Change(state={"entries": entries[-self.max_entries:]}, operation="push",
                          event={"type": "journal", "scope": "session",
                                 "scope_id": self._session_id, "entry": entry,
                                 "request_id": None})

        update_with_retries(self._store, "session", self._session_id, JOURNAL, fn, where=where)
        return dict(entry)

    def entries(self, limit: int | None = 10) -> list[dict]:
        """The newest ``limit`` entries, newest first (``None``: all that are kept)."""
        entries = _entries(self._store.read("session", self._session_id, JOURNAL))
        entries.reverse()
        return entries if limit is None else entries[:limit]

    def __len__(self) -> int:
        return len(_entries(self._store.read("session", self._session_id, JOURNAL)))

    def __repr__(self) -> str:
        return f"<Journal of session {self._session_id!r}: {len(self)} entries>"


def _entries(record: Record | None) -> list[dict]:
    if record is None or record.deleted or not isinstance(record.state, dict):
        return []
    entries = record.state.get("entries")
    return list(entries) if isinstance(entries, list) else []
