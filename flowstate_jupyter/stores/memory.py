"""In-memory store: the reference backend for tests and throwaway notebooks (``memory://``).

Same semantics as the SQLite store, kept in dicts behind one re-entrant lock. Values are stored
as JSON text, so a caller can never mutate stored state through a reference it kept. A write made
from inside another write's ``fn`` is nested like a SQLite savepoint: undone if the outer write
fails, and its event is delivered only when the outermost write commits.
"""

from __future__ import annotations

import builtins
import collections
import json
import threading
from collections.abc import Callable, Iterable
from typing import Any

from ..base.names import REQUEST
from ..errors import VersionConflictError
from .base import (
    KEEP,
    Change,
    HistoryEntry,
    Record,
    Store,
    _order,
    _same,
    default_event,
    dump_json,
    event_json,
    kept_history,
    record_where,
    refuse_existing,
    utf8_size,
)

_Key = tuple[str, str, str]


class MemoryStore(Store):
    """Records in process memory; gone when the process ends."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.url = "memory://"
        self._lock = threading.RLock()
        self._records: dict[_Key, tuple[Record, str]] = {}  # record (state=None) + state JSON
        self._history: dict[_Key, collections.deque] = {}  # oldest first
        self._history_bytes: dict[_Key, int] = {}  # state JSON kept in each record's history
        self._log: collections.deque = collections.deque(maxlen=self.changelog_limit)
        self._seq = 0
        self._depth = 0  # open (possibly nested) writes
        self._undo: list[Callable[[], None]] = []  # how to undo nested writes, innermost last
        self._pending: list[dict] = []  # events of the open write, delivered after it commits
        #: ``ended_runs``' reading of request records: (record as stored, session, ended_at)
        self._runs: dict[str, tuple[Record, Any, Any]] = {}

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
             include_deleted: bool = False) -> builtins.list[Record]:
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
                limit: int | None = None) -> builtins.list[HistoryEntry]:
        self._check_open()
        with self._lock:
            rows = list(self._history.get((scope, scope_id, name), ()))
        rows.reverse()
        rows = rows[:limit] if limit is not None else rows
        return [HistoryEntry(v, ts, op, json.loads(text), deleted, rid)
                for v, ts, op, text, deleted, rid in rows]

    def changes(self, after: int = 0, *, limit: int | None = None
                ) -> builtins.list[tuple[int, dict]]:
        self._check_open()
        with self._lock:
            items = [(seq, json.loads(text)) for seq, text in self._log if seq > after]
        return items[:limit] if limit is not None else items

    def ended_runs(self, session_id: str, *, skip: int = 0) -> builtins.list[str]:
        self._check_open()
        ended = []
        with self._lock:
            cache, self._runs = self._runs, {}  # what is gone (purged) drops out of it
            for (scope, request_id, name), (record, text) in self._records.items():
                if scope != "request" or name != REQUEST or record.deleted:
                    continue
                seen = cache.get(request_id)
                if seen is None or seen[0] is not record:  # each version is parsed once
                    state = json.loads(text)
                    found = (state.get("session"), state.get("ended_at")) \
                        if isinstance(state, dict) else (None, None)
                    seen = (record, *found)
                self._runs[request_id] = seen
                if seen[2] is not None and _same(seen[1], session_id):
                    ended.append((_order(seen[2]), request_id))
        ended.sort(reverse=True)
        return [request_id for _, request_id in ended[skip:]]

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
                if self._depth:  # inside a write: undone with it, as SQLite would
                    self._undo.append(lambda: self._records.__setitem__(key, entry))

    def update(self, scope: str, scope_id: str, name: str,
               fn: Callable[[Record | None], Change | None]) -> Record | None:
        """Like SQLite: a write made from inside ``fn`` is nested in the outer write; it is undone
        if the outer one fails, and events are delivered only after the outermost commits."""
        self._check_open()
        with self._lock:
            outer = self._depth == 0
            undo_mark, pending_mark = len(self._undo), len(self._pending)
            self._depth += 1
            try:
                result = self._update_locked((scope, scope_id, name), fn)
            except BaseException:
                while len(self._undo) > undo_mark:
                    self._undo.pop()()
                del self._pending[pending_mark:]
                raise
            finally:
                self._depth -= 1
            if not outer:
                return result
            events, self._pending = self._pending, []
            self._undo.clear()
        self._deliver(events)
        return result

    def _update_locked(self, key: _Key, fn: Callable[[Record | None], Change | None]
                       ) -> Record | None:
        scope, scope_id, name = key
        before = self._records.get(key)
        change = fn(None if before is None else self._materialise(*before))
        if change is None:
            return None
        where = record_where(scope, scope_id, name)
        if self._records.get(key) is not before:  # fn wrote this record re-entrantly
            latest = self._records.get(key)
            current = None if latest is None else latest[0].version
            raise VersionConflictError(f"{where}: changed while it was being updated "
                                       f"(now version {current})", current=current,
                                       deleted=latest is not None and latest[0].deleted)
        text = change.text if change.text is not None else dump_json(change.state, where)
        self._check_size(text, where)
        now = self._now()
        old = None if before is None else before[0]
        existed = old is not None and not old.deleted
        event = dict(change.event) if change.event is not None else default_event(
            scope, scope_id, name, change, existed=existed)
        version = (change.first_version or 1) if old is None else old.version + 1
        event["version"] = version
        event["ts"] = now
        event_text = event_json(change, event, where, self.changelog_item_bytes)
        content = (old.content if old is not None else None) if change.content is KEEP \
            else change.content
        record = Record(scope, scope_id, name, version, None, content, change.delete,
                        now if old is None else old.created_at, now, now)
        # -- nothing below can fail: mutate, and remember how to undo if an outer write fails
        # a run's request record keeps no history (docs/decisions.md)
        history: collections.deque | None = None
        if name != REQUEST or scope != "request":
            history = self._history.get(key)
            if history is None:
                history = self._history[key] = collections.deque()
        history_bytes = self._history_bytes.get(key, 0)
        dropped_log = self._log[0] if len(self._log) == self._log.maxlen else None
        self._records[key] = (record, text)
        dropped_history: builtins.list = []
        if history is not None:
            history.append((version, now, change.operation, text, change.delete,
                            change.request_id))
            self._history_bytes[key], dropped_history = self._bound_history(
                history, history_bytes + utf8_size(text))
        self._seq += 1
        self._log.append((self._seq, event_text))
        if self._depth > 1:  # nested in another write: undoable until the outermost commits
            def undo() -> None:
                if before is None:
                    self._records.pop(key, None)
                else:
                    self._records[key] = before
                if history is not None:
                    history.pop()
                    history.extendleft(reversed(dropped_history))
                    self._history_bytes[key] = history_bytes
                self._log.pop()
                if dropped_log is not None:
                    self._log.appendleft(dropped_log)
                self._seq -= 1
            self._undo.append(undo)
        self._pending.append(event)
        return self._materialise(record, text)

    def _bound_history(self, history: collections.deque, total: int
                       ) -> tuple[int, builtins.list]:
        """Drop the oldest versions past either bound, never the newest one.

        Returns the bytes of state JSON still kept and the dropped rows, oldest first.
        """
        dropped = []
        while len(history) > self.history_limit or \
                (total > self.history_limit_bytes and len(history) > 1):
            row = history.popleft()
            total -= utf8_size(row[3])
            dropped.append(row)
        return total, dropped

    # -- maintenance ---------------------------------------------------------------------------
    def restore(self, record: Record, history: builtins.list[HistoryEntry], *,
                replace: bool = False) -> None:
        self._check_open()
        key = (record.scope, record.scope_id, record.name)
        where = record_where(*key)
        text = dump_json(record.state, where)
        texts = [dump_json(e.state, where) for e in history]
        keep = sorted(kept_history(history, texts, self.history_limit, self.history_limit_bytes),
                      key=lambda i: history[i].version)
        rows = [(history[i].version, history[i].ts, history[i].operation, texts[i],
                 history[i].deleted, history[i].request_id) for i in keep]
        with self._lock:
            if key in self._records and not replace:
                refuse_existing(record)
            stored = Record(*key, record.version, None, record.content, record.deleted,
                            record.created_at, record.updated_at, record.accessed_at)
            self._records[key] = (stored, text)
            self._history[key] = collections.deque(rows)
            self._history_bytes[key] = sum(utf8_size(row[3]) for row in rows)

    def purge(self, scope: str, scope_ids: Iterable[str], *,
              names: Iterable[str] | None = None, only_deleted: bool = False) -> int:
        self._check_open()
        ids = set(scope_ids)
        wanted = None if names is None else set(names)
        with self._lock:
            keys = [k for k, (r, _) in self._records.items()
                    if k[0] == scope and k[1] in ids and (wanted is None or k[2] in wanted)
                    and (r.deleted or not only_deleted)]
            removed = [(k, self._records.pop(k), self._history.pop(k, None)) for k in keys]
            if self._depth:  # inside a write: undone with it if it fails
                def undo() -> None:
                    for key, entry, history in removed:
                        self._records[key] = entry
                        if history is not None:
                            self._history[key] = history
                self._undo.append(undo)
        return len(removed)
    def restore_many(self, items: Iterable[tuple[Record, Iterable[HistoryEntry]]], *,
                     replace: bool = False) -> int:
        self._check_open()
        pairs = [(record, list(history)) for record, history in items]
        for record, history in pairs:  # what can fail, before anything is written
            where = record_where(record.scope, record.scope_id, record.name)
            for state in (record.state, *(e.state for e in history)):
                dump_json(state, where)
        with self._lock:
            if not replace:
                for record, _ in pairs:
                    if (record.scope, record.scope_id, record.name) in self._records:
                        refuse_existing(record)
            for record, history in pairs:
                self.restore(record, history, replace=True)
        return len(pairs)

    def prune_history(self, keep: int) -> int:
        self._check_open()
        removed = 0
        with self._lock:
            for key, rows in self._history.items():
                extra = max(0, len(rows) - keep)
                for _ in range(extra):
                    self._history_bytes[key] -= utf8_size(rows.popleft()[3])
                removed += extra
        return removed

    def doctor(self) -> dict:
        self._check_open()
        with self._lock:
            return {"backend": "memory", "records": len(self._records),
                    "history_rows": sum(len(h) for h in self._history.values()),
                    "history_bytes": sum(self._history_bytes.values()),
                    "changes": len(self._log),
                    "changelog_bytes": sum(utf8_size(text) for _, text in self._log),
                    "problems": []}
