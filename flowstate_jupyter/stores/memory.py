"""In-memory store: the reference backend for tests and throwaway notebooks (``memory://``).

Same semantics as the SQLite store, kept in dicts behind one re-entrant lock. Values are stored
as JSON text, so a caller can never mutate stored state through a reference it kept.
"""

from __future__ import annotations

import collections
import json
import threading
from typing import Any, Callable

from ..errors import VersionConflictError
from .base import (KEEP, Change, HistoryEntry, Record, Store, default_event, record_where)

_Key = tuple[str, str, str]


class MemoryStore(Store):
    """Records in process memory; gone when the process ends."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.url = "memory://"
        self._lock = threading.RLock()
        self._records: dict[_Key, tuple[Record, str]] = {}  # record (state=None) + state JSON
        self._history: dict[_Key, collections.deque] = {}
        self._log: collections.deque = collections.deque(maxlen=self.changelog_limit)
        self._seq = 0

    @staticmethod
    def _materialise(record: Record, text: str) -> Record:
        return Record(record.scope, record.scope_id, record.name, record.version,
                      json.loads(text), record.content, record.deleted, record.created_at,
                      record.updated_at, record.accessed_at)

    def read(self, scope: str, scope_id: str, name: str = "") -> Record | None:
        self._check_open()
        with self._lock:
            entry = self._records.get((scope, scope_id, name))
        return None if entry is None else self._materialise(*entry)

    def list(self, scope: str | None = None, scope_id: str | None = None, *,
             prefix: str = "", name: str | None = None,
             include_deleted: bool = False) -> list[Record]:
        self._check_open()
        with self._lock:
            entries = list(self._records.items())
        out = []
        for (s, sid, n), entry in sorted(entries, key=lambda item: item[0]):
            if (scope is not None and s != scope) or (scope_id is not None and sid != scope_id):
                continue
            if (name is not None and n != name) or not n.startswith(prefix):
                continue
            if entry[0].deleted and not include_deleted:
                continue
            out.append(self._materialise(*entry))
        return out

    def history(self, scope: str, scope_id: str, name: str = "", *,
                limit: int | None = None) -> list[HistoryEntry]:
        self._check_open()
        with self._lock:
            rows = list(self._history.get((scope, scope_id, name), ()))
        rows.reverse()
        rows = rows[:limit] if limit is not None else rows
        return [HistoryEntry(v, ts, op, json.loads(text), deleted, rid)
                for v, ts, op, text, deleted, rid in rows]

    def changes(self, after: int = 0, *, limit: int | None = None) -> list[tuple[int, dict]]:
        self._check_open()
        with self._lock:
            items = [(seq, json.loads(text)) for seq, text in self._log if seq > after]
        return items[:limit] if limit is not None else items

    def touch(self, scope: str, scope_id: str, name: str) -> None:
        self._check_open()
        key = (scope, scope_id, name)
        with self._lock:
            entry = self._records.get(key)
            if entry is not None:
                r, text = entry
                self._records[key] = (Record(r.scope, r.scope_id, r.name, r.version, None,
                                             r.content, r.deleted, r.created_at, r.updated_at,
                                             self._now()), text)

    def update(self, scope: str, scope_id: str, name: str,
               fn: Callable[[Record | None], Change | None]) -> Record | None:
        self._check_open()
        key = (scope, scope_id, name)
        with self._lock:
            before = self._records.get(key)
            change = fn(None if before is None else self._materialise(*before))
            if change is None:
                return None
            where = record_where(scope, scope_id, name)
            if self._records.get(key) is not before:  # fn wrote this record re-entrantly
                now = self._records[key][0]
                raise VersionConflictError(f"{where}: changed while it was being updated "
                                           f"(now version {now.version})",
                                           current=now.version, deleted=now.deleted)
            text = json.dumps(change.state, ensure_ascii=False, allow_nan=False)
            self._check_size(text, where)
            now = self._now()
            old = None if before is None else before[0]
            version = 1 if old is None else old.version + 1
            content = (old.content if old is not None else None) if change.content is KEEP \
                else change.content
            record = Record(scope, scope_id, name, version, None, content, change.delete,
                            now if old is None else old.created_at, now, now)
            self._records[key] = (record, text)
            history = self._history.setdefault(key, collections.deque(maxlen=self.history_limit))
            history.append((version, now, change.operation, text, change.delete,
                            change.request_id))
            event = dict(change.event) if change.event is not None else default_event(
                scope, scope_id, name, change, existed=old is not None and not old.deleted)
            event["version"] = version
            event["ts"] = now
            self._seq += 1
            self._log.append((self._seq, json.dumps(event, ensure_ascii=False)))
        self._deliver([event])
        return self._materialise(record, text)
