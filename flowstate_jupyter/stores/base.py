"""The store protocol: versioned JSON records, their history and a change log.

A store knows nothing of pydantic, flows or scopes' meaning. It keeps *records* keyed by
``(scope, scope_id, name)`` — ``name == ""`` is a scope's own state, any other name a resource,
names starting with ``$`` are reserved for flowstate's own bookkeeping (sessions, requests,
journals, Windmill states). Every record has a version that only grows; a delete leaves a
tombstone so versions are never reused.

Every write goes through :meth:`Store.update`: the backend reads the current record inside its
write transaction (SQLite ``BEGIN IMMEDIATE``, PostgreSQL ``SELECT ... FOR UPDATE``, the memory
store's lock), calls ``fn(record)`` to get a :class:`Change`, and commits it with one conditional
``UPDATE ... WHERE version = ?`` plus one history row and one change-log row. Because the read
happens under the write lock, the built-in state operations never lose a race; the conditional
UPDATE still guards against anything that slipped in (for example a re-entrant write from inside
``fn``), which surfaces as :class:`~flowstate_jupyter.errors.VersionConflictError`.
"""

from __future__ import annotations

import abc
import builtins
import json
import os
import re
import select
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from ..base.jsonvalues import dump_json
from ..base.names import REQUEST, record_where
from ..errors import ResourceAlreadyExistsError, StoreError, ValidationError, VersionConflictError

Expected = int | Literal["any", "absent"]
"""What a writer expects to find: ``"any"``; ``"absent"`` (no record at all, not even a
tombstone); ``0`` (no live record: never written or deleted); ``n > 0`` (live, at version n)."""

KEEP = object()
"""Sentinel for :class:`Change.content`: leave the stored content as it is."""

DEFAULT_MAX_STATE_BYTES = 1024 * 1024
DEFAULT_HISTORY_LIMIT = 100
DEFAULT_HISTORY_LIMIT_BYTES = 8 * 1024 * 1024
DEFAULT_CHANGELOG_LIMIT = 10_000
#: Runs (request records with their traces) kept per session (flows' retention).
DEFAULT_TRACE_LIMIT = 100
#: Tombstones of deleted collection instances kept per collection (handles' retention).
DEFAULT_TOMBSTONE_LIMIT = 100
DEFAULT_CHANGELOG_ITEM_BYTES = 4096
MIN_CHANGELOG_ITEM_BYTES = 2048  # room for a summarized item (see ``summarized_event``)


class Record(NamedTuple):
    """One stored record as read. ``state`` is a JSON value; tombstones keep their last state.

    A named tuple rather than a frozen dataclass: one is built per write, and this is 3x
    cheaper to build.
    """

    scope: str
    scope_id: str
    name: str
    version: int
    state: Any
    content: str | None = None
    deleted: bool = False
    created_at: float = 0.0
    updated_at: float = 0.0
    accessed_at: float = 0.0

    @property
    def live(self) -> bool:
        return not self.deleted


@dataclass(slots=True)
class Change:
    """What ``fn`` passed to :meth:`Store.update` wants committed.

    ``event`` is the change-log item (docs/concepts.md, 'Events, history and live updates');
    the store adds ``version`` and ``ts`` and, if it is ``None``, writes a generic one.
    ``delete=True`` writes a tombstone. ``text`` and ``event_text``, if given, must be the JSON
    of ``state`` and ``event``: they save the store encoding them again.
    The field order is kept: the hot write path passes them by position.
    ``first_version`` (default 1) is the version a record that does not exist at all is created
    at; a collection whose old tombstones were purged starts its instances above every version
    it used before, so no version is ever reused.
    """

    state: Any = None
    operation: str = "set"
    content: Any = KEEP
    delete: bool = False
    event: dict | None = None
    request_id: str | None = None
    text: str | None = None  # ``state`` as JSON text, when the caller has already encoded it
    event_text: str | None = None  # ``event`` likewise (without the version and ts)
    first_version: int | None = None  # the version of a record created from nothing (None: 1)


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """The state of a record after one version."""

    version: int
    ts: float
    operation: str
    state: Any
    deleted: bool = False
    request_id: str | None = None


class _Stale(Exception):
    """``commit_next``'s signal: the stored record is no longer the one the change was made from."""


class _Watcher:
    """One watcher thread of a store object and how to stop it.

    A store object runs a watcher only while it has subscribers: the last unsubscribe stops it
    (``stop``), the next subscribe starts a new one. ``wait(fd, timeout)`` sleeps until ``fd``
    is readable, the watcher is stopped, or ``timeout`` passes; ``stop`` wakes it at once
    through a pipe, so a watcher that waits on a socket needs no periodic wake-up.
    """

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        self.stopped = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._closed = False
        self._lock = threading.Lock()

    def stop(self) -> None:
        self.stopped.set()
        with self._lock:
            if not self._closed:
                os.write(self._wake_w, b"x")

    def wait(self, fd: int | None, timeout: float) -> None:
        """Until ``fd`` is readable (``None``: no file), a stop, or ``timeout`` seconds."""
        wanted = [self._wake_r] if fd is None else [fd, self._wake_r]
        select.select(wanted, [], [], timeout)

    def close(self) -> None:
        """Release the pipe (by the watcher thread, when it ends)."""
        with self._lock:
            self._closed = True
            os.close(self._wake_r)
            os.close(self._wake_w)


@dataclass(slots=True)
class _Subscribers:
    #: Replaced whole under ``lock``, never changed in place: a delivery reads it once, without
    #: the lock, and gets every callback subscribed before (see ``Store._deliver``).
    callbacks: list[Callable[[dict], None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: How many of ``callbacks`` want other processes' changes too (``subscribe``, not
    #: ``_listen``): the watcher runs while this is above zero.
    watched: int = 0


def recent_key(record: Record) -> tuple[float, str]:
    """Where ``record`` stands in :meth:`Store.list_recent`'s order (newest first): the time
    of its last write or touch, then its scope id. Pass the last record's key as ``after``."""
    return max(record.updated_at, record.accessed_at), record.scope_id


_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _recent_where(where: Mapping[str, Any] | None) -> list[tuple[str, Any]]:
    """``list_recent``'s ``where``, checked: (field, value) pairs."""
    if where is None:
        return []
    if not isinstance(where, Mapping):
        raise ValueError(f"where must be a mapping of state fields to values, not {where!r}")
    checks = []
    for field_name, value in where.items():
        if not isinstance(field_name, str) or not _FIELD.match(field_name):
            raise ValueError(f"list_recent: where field {field_name!r} is not a plain field "
                             f"name (letters, digits and _)")
        if value is not None and not isinstance(value, (str, int)):
            raise ValueError(f"list_recent: where[{field_name!r}] = {value!r}: values are "
                             f"str, int, bool or None")
        checks.append((field_name, value))
    return checks


def _recent_after(after: tuple[float, str] | None) -> tuple[float, str] | None:
    if after is None:
        return None
    if not (isinstance(after, tuple) and len(after) == 2
            and isinstance(after[0], (int, float)) and not isinstance(after[0], bool)
            and isinstance(after[1], str)):
        raise ValueError(f"after must be (time, scope_id) as recent_key() gives it, "
                         f"not {after!r}")
    return float(after[0]), after[1]


def _recent_limit(limit: int | None) -> None:
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)
                              or limit < 1):
        raise ValueError(f"limit must be a positive int or None, not {limit!r}")


def _order(value: Any) -> tuple:
    """A sort key for any JSON value: numbers by value, before anything else (as text)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value, "")
    return (1, 0, json.dumps(value, sort_keys=True))


def _same(stored: Any, wanted: Any) -> bool:
    """JSON equality of two scalars: ``True`` is not ``1``, ``1`` is not ``"1"``."""
    return type(stored) is type(wanted) and stored == wanted


def check_expected(record: Record | None, expected: Expected, where: str) -> None:
    """Raise :class:`VersionConflictError` unless ``record`` is what the writer expected."""
    if expected == "any":
        return
    current = None if record is None else record.version
    deleted = record is not None and record.deleted
    if expected == "absent":
        if record is None:
            return
        what = "a tombstone" if deleted else "a live record"
        raise VersionConflictError(
            f"{where}: expected no record at all, found {what} at version {current}",
            current=current, deleted=deleted)
    if not isinstance(expected, int) or isinstance(expected, bool) or expected < 0:
        raise ValueError(f"expected must be an int >= 0, 'any' or 'absent', not {expected!r}")
    if expected == 0:
        if record is None or deleted:
            return
        raise VersionConflictError(
            f"{where}: expected no live record, found version {current}; re-read and retry",
            current=current, deleted=False)
    if record is not None and not deleted and record.version == expected:
        return
    if deleted:
        msg = f"{where}: expected version {expected}, but it was deleted (now version {current})"
    elif record is None:
        msg = f"{where}: expected version {expected}, but there is no record"
    else:
        msg = f"{where}: expected version {expected}, found version {current}; re-read and retry"
    raise VersionConflictError(msg, current=current, deleted=deleted)


PRUNE_BATCH = 32


def prune_batch(limit: int) -> int:
    """How many rows are pruned at once for a bound of ``limit`` (see :func:`prune_cutoff`)."""
    return min(PRUNE_BATCH, max(1, limit // 4))


def prune_cutoff(number: int, limit: int) -> int:
    """Delete rows numbered ``<=`` this (0: nothing) so at most ``limit`` are kept.

    ``number`` is the version (history) or sequence number (change log) just written; numbers
    grow by one per write. Pruning a batch at a time instead of one row per write saves a
    statement on most writes (a batch is at most a quarter of the limit, so at least three
    quarters stay kept), and the count never exceeds ``limit``: after a prune
    ``limit - batch + 1`` rows remain, and the next prune comes ``batch`` writes later.
    """
    batch = prune_batch(limit)
    if number <= limit or (number - limit - 1) % batch:
        return 0
    return number - limit + batch - 1


def kept_history(history: list[HistoryEntry], texts: list[str], limit: int,
                 limit_bytes: int) -> list[int]:
    """Indexes of the entries a store keeps of ``history`` (with ``texts``, their states' JSON).

    The newest entries, at most ``limit`` of them and ``limit_bytes`` of state JSON, and always
    the newest one: what an import keeps, the same bound every write applies.
    """
    order = sorted(range(len(history)), key=lambda i: history[i].version, reverse=True)
    kept: list[int] = []
    total = 0
    for i in order[:limit]:
        total += utf8_size(texts[i])
        if kept and total > limit_bytes:
            break
        kept.append(i)
    return kept


def refuse_existing(record: Record) -> None:
    """What ``restore`` raises for a record that is already in the target store."""
    raise ResourceAlreadyExistsError(
        f"{record_where(record.scope, record.scope_id, record.name)} already exists in the "
        f"target store; import into an empty store, or pass replace=True (--replace)")


def event_json(change: Change, event: dict, where: str | tuple[str, str, str],
               item_bytes: int) -> str:
    """The change-log text of ``event`` (``change.event`` plus its version and ts).

    Over ``item_bytes`` bytes, the text of :func:`summarized_event` instead.
    """
    text = change.event_text
    if text is None or text[:2] != '{"':  # not a non-empty object: encode it all here
        text = dump_json(event, where, "event")
    else:
        text = f'{{"version":{event["version"]:d},"ts":{event["ts"]!r},{text[1:]}'
    return bounded_event_text(text, event, item_bytes)


def utf8_size(text: str) -> int:
    """``len(text.encode("utf-8"))``, without encoding ASCII text."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


_SHORT = 130  # a value whose JSON is this short (an id of 128 characters) stays in a summary
_ESSENTIAL = ("type", "scope", "scope_id", "resource", "operation", "change_type", "version",
              "ts", "request_id")


def _short(value: Any) -> bool:
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, str) and len(value) > _SHORT:
        return False
    return isinstance(value, (str, int, float)) and \
        len(dump_json(value, "change log", "event")) <= _SHORT


def summarized_event(event: dict, size: int, item_bytes: int) -> dict:
    """The change-log item kept for ``event``, whose JSON is ``size`` bytes, over ``item_bytes``.

    The delta and every other value that is not a short scalar become ``None``, and
    ``"omitted": {"fields": [...], "bytes": size}`` says which and how big the whole item was;
    the record and its history keep every state, so a reader that needs the change reads them.
    Should that still be too big (an event with very many fields), only the essential fields
    (type, scope, ids, operation, version, ts) stay, with ``"fields": None``. Either fits in
    ``MIN_CHANGELOG_ITEM_BYTES``.
    """
    kept = {key: value if key != "delta" and _short(value) else None
            for key, value in event.items()}
    kept["omitted"] = {"fields": [key for key, value in event.items()
                                  if (kept[key] is None and value is not None) or key == "delta"],
                       "bytes": size}
    if utf8_size(dump_json(kept, "change log", "event")) <= item_bytes:
        return kept
    small = {key: kept[key] for key in _ESSENTIAL if key in kept}
    small["omitted"] = {"fields": None, "bytes": size}
    return small


def bounded_event_text(text: str, event: dict, item_bytes: int) -> str:
    """``text`` (the JSON of ``event``) if it fits in ``item_bytes``, else a summary's JSON."""
    if len(text) * 4 <= item_bytes:  # the common case: it cannot be over, whatever it holds
        return text
    size = utf8_size(text)
    if size <= item_bytes:
        return text
    return dump_json(summarized_event(event, size, item_bytes), "change log", "event")



def default_event(scope: str, scope_id: str, name: str, change: Change,
                  existed: bool) -> dict:
    """The change-log item for a write whose caller gave none."""
    if name == "":
        return {"type": "state_change", "scope": scope, "scope_id": scope_id,
                "operation": change.operation, "path": None, "delta": None,
                "request_id": change.request_id}
    kind = "deleted" if change.delete else ("updated" if existed else "created")
    return {"type": "resource_change", "scope": scope, "scope_id": scope_id, "resource": name,
            "change_type": kind, "delta": None, "request_id": change.request_id}


class Store(abc.ABC):
    """Versioned JSON records with history and a change log. See the module docstring.

    Options shared by every backend, each a bound in rows or bytes that nothing grows past:

    * ``max_state_bytes`` — refuse larger states (default 1 MiB);
    * ``history_limit`` and ``history_limit_bytes`` — versions kept per record, at most 100 and
      at most 8 MiB of state JSON by default; the newest version is always kept, even alone
      over the byte bound;
    * ``changelog_limit`` — change-log items kept (default 10,000);
    * ``changelog_item_bytes`` — the largest change-log item kept whole (default 4 KiB): a
      larger one is kept summarized (see :func:`summarized_event`), so the change log holds at
      most ``changelog_limit`` x ``changelog_item_bytes`` of event JSON (about 40 MiB by
      default). Subscribers in the writing store object still get the whole event.

    Two retention options are kept here for the layers above, which apply them as they write:
    ``trace_limit`` (ended runs, with their traces, kept per session, default 100) and
    ``tombstone_limit`` (tombstones of deleted instances kept per collection, default 100).
    """

    url: str = ""

    def __init__(self, *, max_state_bytes: int = DEFAULT_MAX_STATE_BYTES,
                 history_limit: int = DEFAULT_HISTORY_LIMIT,
                 history_limit_bytes: int = DEFAULT_HISTORY_LIMIT_BYTES,
                 changelog_limit: int = DEFAULT_CHANGELOG_LIMIT,
                 changelog_item_bytes: int = DEFAULT_CHANGELOG_ITEM_BYTES,
                 trace_limit: int = DEFAULT_TRACE_LIMIT,
                 tombstone_limit: int = DEFAULT_TOMBSTONE_LIMIT) -> None:
        for name, value in (("max_state_bytes", max_state_bytes),
                            ("history_limit", history_limit),
                            ("history_limit_bytes", history_limit_bytes),
                            ("changelog_limit", changelog_limit),
                            ("trace_limit", trace_limit),
                            ("tombstone_limit", tombstone_limit)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, not {value!r}")
        if not isinstance(changelog_item_bytes, int) or isinstance(changelog_item_bytes, bool) \
                or changelog_item_bytes < MIN_CHANGELOG_ITEM_BYTES:
            raise ValueError(f"changelog_item_bytes must be an int >= "
                             f"{MIN_CHANGELOG_ITEM_BYTES}, not {changelog_item_bytes!r}")
        self.max_state_bytes = max_state_bytes
        self.history_limit = history_limit
        self.history_limit_bytes = history_limit_bytes
        self.changelog_limit = changelog_limit
        self.changelog_item_bytes = changelog_item_bytes
        self.trace_limit = trace_limit
        self.tombstone_limit = tombstone_limit
        self.origin = uuid.uuid4().hex  # tells this store's own changes from other processes'
        self._subs = _Subscribers()
        self._closed = False

    # -- reading ---------------------------------------------------------------------------
    @abc.abstractmethod
    def read(self, scope: str, scope_id: str, name: str = "") -> Record | None:
        """The record, its tombstone, or ``None`` if it was never written."""

    @abc.abstractmethod
    def list(self, scope: str | None = None, scope_id: str | None = None, *,
             prefix: str = "", name: str | None = None,
             include_deleted: bool = False) -> builtins.list[Record]:
        """Records filtered by scope, scope id, exact ``name`` or literal name ``prefix``.

        ``%`` and ``_`` in a prefix are literal characters, not wildcards. Sorted by
        (scope, scope_id, name).
        """

    def list_recent(self, scope: str, name: str, *, where: Mapping[str, Any] | None = None,
                    limit: int | None = 100, after: tuple[float, str] | None = None,
                    ) -> builtins.list[Record]:
        """Live records named ``name`` in ``scope``, most recently written or touched first.

        The order is :func:`recent_key`, newest first: the time of the last write or touch
        (``max(updated_at, accessed_at)``), then ``scope_id`` (code points, descending).
        ``where`` keeps the records whose state is an object whose top-level fields equal these
        values (each a str, an int, a bool or ``None``; ``1`` does not equal ``true``).
        ``limit`` is the page size (``None``: all). ``after`` is ``recent_key`` of the last
        record of the previous page: the page starts with the record after it, so pages follow
        each other without repeats while nothing changes (a record written between two pages
        moves to the front, where a later page does not look).

        The backends filter, order and page in SQL; an index keeps a page quick for session
        bookkeeping records (``$meta``); other names are sorted when asked. This default, used
        by the memory store, reads them all.
        """
        checks = _recent_where(where)
        cursor = _recent_after(after)
        _recent_limit(limit)
        found = [r for r in self.list(scope, name=name)
                 if not checks or (isinstance(r.state, dict) and all(
                     field in r.state and _same(r.state[field], value)
                     for field, value in checks))]
        found.sort(key=recent_key, reverse=True)
        if cursor is not None:
            found = [r for r in found if recent_key(r) < cursor]
        return found if limit is None else found[:limit]

    def ended_runs(self, session_id: str, *, skip: int = 0) -> builtins.list[str]:
        """Request ids of a session's ended runs, newest first, the first ``skip`` left out.

        A run is a live record ``request/<id>/$request`` (``flows`` writes them): it belongs to
        the session its state's ``"session"`` names, and it has ended when its ``"ended_at"``
        is set (the time it ended; ``null`` while it runs or waits). Ordered by ``ended_at``,
        then id, both descending. For retention (``trace_limit`` ended runs kept per session):
        the backends answer from an index over request records, without reading them; this
        default, used by the memory store, reads them all.
        """
        ended = [(_order(r.state["ended_at"]), r.scope_id)
                 for r in self.list("request", name=REQUEST)
                 if isinstance(r.state, dict) and _same(r.state.get("session"), session_id)
                 and r.state.get("ended_at") is not None]
        ended.sort(reverse=True)
        return [request_id for _, request_id in ended[skip:]]

    @abc.abstractmethod
    def history(self, scope: str, scope_id: str, name: str = "", *,
                limit: int | None = None) -> builtins.list[HistoryEntry]:
        """Kept versions of one record, newest first."""

    @abc.abstractmethod
    def changes(self, after: int = 0, *,
                limit: int | None = None) -> builtins.list[tuple[int, dict]]:
        """``(seq, event)`` pairs of the change log with ``seq > after``, oldest first."""

    # -- writing ---------------------------------------------------------------------------
    @abc.abstractmethod
    def update(self, scope: str, scope_id: str, name: str,
               fn: Callable[[Record | None], Change | None]) -> Record | None:
        """Read the record under the write lock, commit ``fn(record)``; ``None`` = no change.

        Returns the committed record, or ``None`` when ``fn`` returned ``None``. Exceptions
        from ``fn`` roll everything back and propagate.
        """

    def create(self, scope: str, scope_id: str, name: str,
               fn: Callable[[Record | None], Change | None]) -> Record | None:
        """:meth:`update` of a record the caller believes was never written: ``fn(None)``.

        If the record exists (live or a tombstone), :class:`VersionConflictError` as for
        ``expected="absent"``, and nothing ``fn`` did in this write is kept. For writers that
        make a new record under a fresh key (a run's request record): backends override this to
        insert without reading first. Returns the committed record, or ``None`` when ``fn``
        returned ``None``.
        """
        where = record_where(scope, scope_id, name)

        def guarded(record: Record | None) -> Change | None:
            check_expected(record, "absent", where)
            return fn(None)

        return self.update(scope, scope_id, name, guarded)

    def commit_next(self, known: Record, change: Change) -> Record | None:
        """Commit ``change`` as the next version of ``known`` if that is still the stored record.

        For a writer that computed ``change`` from the record it last committed, without reading
        it again. Returns the committed record, or ``None`` with nothing written: another write
        came first (or one was rolled back and its version reused), ``known`` is a tombstone, or
        the backend prefers the ordinary path here (say, inside another write). The caller then
        writes with :meth:`update`. Backends override this to skip the read.
        """
        def fn(record: Record | None) -> Change:
            if record is None or record.deleted or known.deleted \
                    or (record.version, record.updated_at) != (known.version, known.updated_at):
                raise _Stale
            return change

        try:
            return self.update(known.scope, known.scope_id, known.name, fn)
        except _Stale:
            return None

    def serialize_writes(self) -> None:  # noqa: B027 - a no-op unless a backend needs it
        """Inside an ``update`` function: no other writer that calls this too runs alongside.

        From here until this write commits or rolls back, writers that call ``serialize_writes``
        wait, and what this write reads next includes everything they committed. It is for
        decisions that read several records, such as whether a collection has room. SQLite and
        memory stores already run one write at a time, so this does nothing there.
        """

    @abc.abstractmethod
    def touch(self, scope: str, scope_id: str, name: str) -> None:
        """Mark a record as used now (for LRU eviction); no version bump, no event."""

    def write(self, scope: str, scope_id: str, name: str, state: Any, *,
              expected: Expected = "any", operation: str = "set", content: Any = KEEP,
              event: dict | None = None, request_id: str | None = None) -> Record:
        """Compare-and-swap write of a whole state; :class:`VersionConflictError` if stale."""
        where = record_where(scope, scope_id, name)

        def fn(record: Record | None) -> Change:
            check_expected(record, expected, where)
            return Change(state=state, operation=operation, content=content, event=event,
                          request_id=request_id)

        result = self.update(scope, scope_id, name, fn)
        assert result is not None
        return result

    def delete(self, scope: str, scope_id: str, name: str, *, expected: Expected = "any",
               event: dict | None = None, request_id: str | None = None) -> Record | None:
        """Write a tombstone; ``None`` if there was no live record to delete."""
        where = record_where(scope, scope_id, name)

        def fn(record: Record | None) -> Change | None:
            check_expected(record, expected, where)
            if record is None or record.deleted:
                return None
            return Change(state=record.state, operation="delete", delete=True, event=event,
                          request_id=request_id)

        return self.update(scope, scope_id, name, fn)

    def delete_all(self, scope: str, scope_id: str, *, prefix: str = "",
                   request_id: str | None = None) -> int:
        """Tombstone every live record of one scope instance whose name starts with ``prefix``.

        Returns how many were deleted. Each delete is its own committed write with its event.
        """
        count = 0
        for record in self.list(scope, scope_id, prefix=prefix):
            if self.delete(scope, scope_id, record.name, request_id=request_id) is not None:
                count += 1
        return count

    # -- maintenance (the ``flowstate`` command) -------------------------------------------------
    @abc.abstractmethod
    def restore(self, record: Record, history: builtins.list[HistoryEntry], *,
                replace: bool = False) -> None:
        """Write ``record`` exactly as given (version, times, tombstone) with its ``history``.

        For imports: no compare-and-swap, no event. An existing record is refused with
        :class:`ResourceAlreadyExistsError` unless ``replace``.
        """

    def purge(self, scope: str, scope_ids: Iterable[str], *,
              names: Iterable[str] | None = None, only_deleted: bool = False) -> int:
        """Remove records for good, with their history: no tombstone, no event, no change-log row.

        Every record of each scope instance in ``scope_ids`` (or only those named in ``names``;
        with ``only_deleted``, only tombstones) is removed. Returns how many records went. For
        retention (old runs, old tombstones): a purged record's versions may be handed out again,
        so callers purge only what no one can write again at the same key, or keep a high-water
        mark (``Change.first_version``). Called inside an ``update`` function it is part of that
        write's transaction.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot purge records")

    @abc.abstractmethod
    def restore_many(self, items: Iterable[tuple[Record, Iterable[HistoryEntry]]], *,
                     replace: bool = False) -> int:
        """:meth:`restore` every ``(record, history)`` in one transaction: all or nothing.

        For imports. If any is refused (a record that exists, unless ``replace``; a state that is
        not JSON), nothing is written. Returns how many records were written.
        """

    @abc.abstractmethod
    def prune_history(self, keep: int) -> int:
        """Drop all but the newest ``keep`` history versions of every record; returns how many."""

    @abc.abstractmethod
    def doctor(self) -> dict:
        """Health report: backend facts, sizes and counts, and ``problems`` (empty if healthy)."""

    # -- change notification -----------------------------------------------------------------
    def subscribe(self, callback: Callable[[dict], None]) -> Callable[[], None]:
        """Call ``callback(event)`` for every committed change; returns an unsubscribe function.

        Changes made through this store object arrive at once, in the writing thread; changes
        made by other processes (and other store objects) arrive from a watcher thread, which
        runs only while this store object has subscribers.
        """
        return self._listen(callback, others=True)

    def _listen(self, callback: Callable[[dict], None], *,
                others: bool = False) -> Callable[[], None]:
        """:meth:`subscribe`; with ``others=False``, for changes made through this store object
        (a run collecting its own events): no watcher is started for it. Other processes'
        changes may still reach it while someone else subscribes."""
        subs = self._subs
        with subs.lock:
            subs.callbacks = [*subs.callbacks, callback]
            if others:
                subs.watched += 1
        if others:
            self._start_watching()

        def unsubscribe() -> None:
            with subs.lock:
                if callback not in subs.callbacks:
                    return
                callbacks = subs.callbacks.copy()
                callbacks.remove(callback)
                subs.callbacks = callbacks
                if not others:
                    return
                subs.watched -= 1
                last = not subs.watched
            if last:
                self._stop_watching()

        return unsubscribe

    def _meta_token(self) -> object | None:
        """A value two calls return equal only if no write committed in between (through this
        store object or any other, in any process) can have changed a session's ``$meta`` record;
        ``None`` if this store cannot tell cheaply. A run's session check (``flows/bookkeeping.py``)
        uses it to skip reading a session record it has already checked."""
        return None

    def _start_watching(self) -> None:  # noqa: B027 - a hook for backends that can see others
        """Start noticing other processes' changes if there are subscribers and no watcher
        (backends that can see them override; called after every subscribe)."""

    def _stop_watching(self) -> None:  # noqa: B027 - a hook, like _start_watching
        """Stop the watcher if no subscriber is left (called after the last unsubscribe; a
        subscribe may have come in between, so backends check again under their lock)."""

    def _deliver(self, events: Iterable[dict]) -> None:
        # No lock: subscribe and unsubscribe replace the list whole under theirs, so the one read
        # here is a consistent list (every callback whose subscribe returned before it), and a
        # callback that subscribes or unsubscribes changes no list a delivery is going through
        # (docs/decisions.md, 'A store object takes a lock only where it orders something').
        callbacks = self._subs.callbacks
        if not callbacks:
            return
        for event in events:
            for callback in callbacks:
                try:
                    callback(event)
                except Exception as exc:  # noqa: BLE001 - a broken listener must not break a write
                    warnings.warn(f"flowstate subscriber {callback!r} failed: {exc!r}",
                                  RuntimeWarning, stacklevel=2)

    # -- helpers for backends ----------------------------------------------------------------
    def _check_size(self, text: str, where: str) -> None:
        size = len(text.encode("utf-8")) if len(text) * 4 > self.max_state_bytes else len(text)
        if size > self.max_state_bytes:
            raise ValidationError(
                f"{where}: state is {size:,} bytes, over the limit of {self.max_state_bytes:,} "
                f"bytes; keep large data in resource content or raise max_state_bytes "
                f"(open_store(..., max_state_bytes=N))",
                where=where, reason="oversize")

    def _check_open(self) -> None:
        if self._closed:
            raise self._closed_error()

    def _closed_error(self) -> StoreError:
        """What using a closed store raises (the hottest paths test ``_closed`` themselves
        and raise this: a call fewer per write)."""
        return StoreError(f"store {self.url} is closed; open it again with fs.open_store()")

    # The clock of every write and touch: the builtin itself, so that a call is no Python frame.
    _now = staticmethod(time.time)

    def close(self) -> None:
        """Release connections and stop watching. Further use raises :class:`StoreError`."""
        self._closed = True

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"


class _WatchingStore(Store):
    """A store that sees other processes' writes through one watcher thread, run only while
    someone subscribes (SQLite and PostgreSQL; the memory store sees everything it holds).

    A backend sets ``_watch_guard`` (the lock that starting, stopping and closing hold) and
    defines ``_last_seq`` (the newest change-log position, read under that lock) and ``_watch``
    (the thread's body, from that position on).
    """

    _watcher: _Watcher | None = None
    _watch_guard: threading.Lock | threading.RLock

    def _watch_name(self) -> str:
        return f"flowstate-watch {self.url}"

    @abc.abstractmethod
    def _last_seq(self) -> int:
        """The newest change-log position: a new watcher reports what comes after it."""

    @abc.abstractmethod
    def _watch(self, watcher: _Watcher, last_seq: int) -> None:
        """The watcher thread: deliver other processes' changes until ``watcher`` stops."""

    def _start_watching(self) -> None:
        with self._watch_guard:
            if self._watcher is not None or self._closed or not self._subs.watched:
                return
            watcher = _Watcher()
            watcher.thread = threading.Thread(target=self._watch, args=(watcher, self._last_seq()),
                                              daemon=True, name=self._watch_name())
            self._watcher = watcher
            watcher.thread.start()

    def _stop_watching(self) -> None:
        with self._watch_guard:
            if self._watcher is not None and (self._closed or not self._subs.watched):
                self._watcher.stop()
                self._watcher = None

    def _end_watching(self) -> None:
        """On close, once ``_closed`` is set: stop the watcher and give it 2 s to end."""
        with self._watch_guard:
            watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()
            if watcher.thread not in (None, threading.current_thread()):
                watcher.thread.join(timeout=2)
