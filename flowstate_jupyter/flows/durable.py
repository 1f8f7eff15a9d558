"""Durable runs: leases, suspension and resume, concurrency per action, listing, retention.

Everything here is kept in the records the run machinery already has
(docs/concepts.md, 'Durable runs'):

* **The lease.** A running run's request record (``request/<id>/$request``) carries
  ``lease_until``; while the run executes, one thread per process renews the leases of its runs
  every third of the lease (``FLOWSTATE_LEASE_S``, default 10 s) with a compare-and-swap on the
  record's version, writing the run's step log with it. A run whose process died reads as
  ``"interrupted"`` once its lease has passed (:func:`effective_status`). Every write of the record
  by its run is a compare-and-swap on the version the run last wrote (:class:`Lease`), so a run
  whose lease was taken over (another process resumed it) finds out at its next write and stops.
* **Suspension and resume.** A suspended run's record says ``status: "suspended"`` and keeps
  ``suspension`` (message, JSON Schema, expiry, the model's import path); its content keeps the
  whole step log. :func:`claim_resume` validates the value, then claims the run with one
  compare-and-swap, so of several processes resuming at once exactly one continues.
* **Concurrency per action.** ``session/<id>/$action:<action>`` holds the run of that action in
  flight and the queue of runs waiting (:func:`acquire_slot`, :func:`release_slot`); a run's
  claim on the slot and its first write of its request record are one transaction.
* **Retention.** When a run ends, its final transaction asks the store for the session's ended
  runs beyond the store's ``trace_limit`` (an index over request records, which name their
  session: ``Store.ended_runs``) — at the first run of the session a store object ends, then
  every half batch of them (:func:`runs_to_purge`); once they are more than half a batch
  beyond it, they are purged (request record, trace, step log, request-scope state).
  :func:`prune_store` (``flowstate prune``) applies the same bounds to a whole store, plus
  collection tombstones and stale runs.
"""

from __future__ import annotations

import functools
import itertools
import os
import socket
import threading
import time
import uuid
import warnings
import weakref
from _thread import RLock as _RLock  # threading.RLock's C lock, without its Python wrapper
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticSerializationError, to_json

from ..base.names import ACTION_SLOT_PREFIX, REQUEST, is_reserved
from ..errors import RunConflictError, RunStateError, ValidationError, VersionConflictError
from ..handles.resources import bound_tombstones
from ..model import ops, schema
from ..model.jsonschema import json_path, schema_errors
from ..stores.base import KEEP, Change, Record, Store
from .bookkeeping import effective_status, list_runs, set_before_listing
from .trace import read_content, resolve_type

__all__ = [
    "Lease",
    "Suspension",
    "acquire_slot",
    "claim_resume",
    "effective_status",
    "list_runs",
    "prune_store",
    "release_slot",
]

#: Seconds between a queued run's looks at its action's slot.
QUEUE_POLL_S = 0.02
#: A run that has not written its request record yet writes it once it has lasted this long
#: (or a third of its lease, if that is shorter); see ``Lease.start``.
START_AFTER_S = 0.1
#: Interrupted runs and expired suspensions older than this are purged by ``flowstate prune``.
STALE_AFTER_S = 7 * 24 * 3600.0

_OWNER = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_token() -> str:
    """Which process runs a run: ``host:pid:random`` (shown in the request record)."""
    return _OWNER


# ---------------------------------------------------------------------------- suspensions

@dataclass(frozen=True)
class Suspension:
    """Why a run is waiting: ``RunResult.suspension`` and ``flow.runs()`` items.

    ``schema`` is the JSON Schema of the model ``ctx.suspend`` was given (build a form from it);
    ``expires_at`` is a Unix time or ``None``; ``path`` is the span that asked; ``request_id`` is
    what ``flow.resume(request_id, value)`` takes.
    """

    request_id: str
    message: str | None
    schema: dict
    expires_at: float | None
    path: str
    model: str | None = None

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at < time.time()

    @classmethod
    def from_record(cls, request_id: str, data: dict) -> Suspension:
        return cls(request_id, data.get("message"), data.get("schema") or {},
                   data.get("expires_at"), data.get("path", ""), data.get("model"))


def suspension_record(key: str, path: str, model: type[BaseModel], message: str | None,
                      timeout_s: float | None) -> dict:
    """What a suspended run's request record keeps about its suspension."""
    qualname = model.__qualname__
    ref = None if "<locals>" in qualname else f"{model.__module__}:{qualname}"
    return {"key": key, "path": path, "message": message, "schema": model.model_json_schema(),
            "expires_at": None if timeout_s is None else time.time() + timeout_s,
            "model": ref, "title": model.__name__}


def validate_resume_value(request_id: str, suspension: dict, value: Any) -> Any:
    """``value`` checked against the suspension's model; returns it as JSON (``None`` = ``{}``).

    The model class is imported from where it was defined when that works (pydantic validation,
    custom validators included); otherwise the recorded JSON Schema decides.
    """
    where = f"resume value for run {request_id} ({suspension.get('path')})"
    value = {} if value is None else value
    model = resolve_type(suspension.get("model"))
    if model is not None and issubclass(model, BaseModel):
        instance = schema.validate_value(model, value, where=where)
        return instance.model_dump(mode="json")
    data = ops.copy_json(value.model_dump(mode="json") if isinstance(value, BaseModel)
                         else value, where=where)
    import re2
    from jsonschema.exceptions import best_match
    from referencing.exceptions import Unresolvable

    try:  # references stay inside the schema; patterns run in linear time (model/jsonschema)
        errors = schema_errors(suspension.get("schema") or {}, data)
    except (Unresolvable, re2.error, RecursionError) as exc:
        raise ValidationError(f"{where}: the suspension's recorded schema cannot be used "
                              f"({type(exc).__name__}); resume the run from a process that "
                              f"can import its model", where=where,
                              reason="unusable schema") from None
    if errors:
        error = best_match(errors)
        at = json_path(error.absolute_path)
        raise ValidationError(f"{where}: {at if at != '$' else 'the value'}: {error.message}",
                              where=where, reason=error.message)
    return data


# ---------------------------------------------------------------------------- leases

def _record_json(value: dict) -> str | None:
    """``value`` (a request record's state or event) as JSON text, by pydantic-core: about four
    times quicker than the store's strict encoder, and the same JSON for what these hold (every
    value in them is JSON already: ids, finite times, and inputs, outputs and errors made JSON,
    finite numbers only, as the run records them). ``None`` — the store encodes it, and refuses
    what is not JSON — for anything else: text that is not valid Unicode, or a suspension, whose
    schema may hold a number that is not finite ("NaN" or "Infinity" there sends it to the
    store)."""
    try:
        text = to_json(value, inf_nan_mode="constants")
    except (PydanticSerializationError, ValueError, TypeError, RecursionError):
        return None
    if value.get("suspension") is not None and (b"NaN" in text or b"Infinity" in text):
        return None
    return text.decode()


class Lease:
    """A run's claim on its request record. Every write of that record by the run goes here.

    Each write is a compare-and-swap on the version this run last wrote; a conflict means
    another process took the run over (it resumed it after this run's lease passed), and from
    then on the run may not write (``lost``). ``renew`` extends ``lease_until`` and writes the
    run's step log (``content``), from the renewing thread.

    A run may put off its first write (``first`` holds its content and the run's
    ``"running"`` event, which the write's event is made from): :meth:`start` makes it when
    the run needs its record, and the renewing thread makes it once the run has
    lasted :data:`START_AFTER_S`. Until then the record does not exist (version 0).

    ``log`` is the run's ``RunLog`` (``None`` for a run that keeps neither trace nor step log):
    told when the lease is lost, and, for a durable run, the step log a renewal or
    :meth:`flush` writes.
    """

    __slots__ = ("ended", "first", "last", "lock", "log", "lost", "request_id", "seconds",
                 "started", "state", "store", "version")

    def __init__(self, store: Store, request_id: str, seconds: float, state: dict,
                 log: Any = None) -> None:
        self.store = store
        self.request_id = request_id
        self.seconds = seconds
        self.state = state
        self.log = log
        self.version = 0
        self.started = False
        self.ended = False  # the run has ended: no renewal may write after its final write
        self.first: tuple[Any, dict] | None = None
        self.lost: str | None = None
        self.lock = _RLock()
        self.last = time.monotonic()

    def change(self, state: dict, content: Any, event: dict, request_id: str | None) -> Change:
        return Change(state=state, operation="set", content=content, event=event,
                      request_id=request_id, text=_record_json(state),
                      event_text=_record_json(event))

    def write(self, state: dict, *, content: Any = KEEP, event: dict,
              also: Callable[[], None] | None = None, own_event: bool = True,
              adopt: bool = True) -> Record:
        """Write the record (compare-and-swap); ``also()`` runs inside the same transaction.

        ``adopt=False``: the write is nested in another one that may still roll back; the caller
        adopts the record once that committed.
        """
        with self.lock:
            if self.lost is not None:
                raise RunStateError(self.lost)
            expected = self.version

            def fn(current: Record | None) -> Change:
                found = 0 if current is None else current.version
                if found != expected:
                    raise VersionConflictError(f"run {self.request_id}: its request record is "
                                               f"at version {found}, not {expected}",
                                               current=found)
                if also is not None:
                    also()
                return self.change(state, content, event,
                                   self.request_id if own_event else None)

            try:
                # the first write makes a new record (fresh id): insert it without a read
                write = self.store.create if expected == 0 else self.store.update
                record = write("request", self.request_id, REQUEST, fn)
            except VersionConflictError:
                self.lost = (f"run {self.request_id} was taken over by another process (its "
                             f"lease passed and it was resumed there); this process stopped "
                             f"writing for it")
                if self.log is not None:
                    self.log.lost = self.lost
                raise RunStateError(self.lost) from None
            assert record is not None
            if adopt:
                self.adopt(record)
                self.state = state
            return record

    def adopt(self, record: Record) -> None:
        """This run wrote ``record`` (possibly nested in another write that committed)."""
        self.version = record.version
        self.last = time.monotonic()
        self.started = True

    def start(self) -> None:
        """Write the record now if the run put its first write off (from any thread; once)."""
        if self.started:
            return
        with self.lock:
            if self.started or self.lost is not None or self.first is None:
                return
            content, running = self.first
            self.write({**self.state, "lease_until": time.time() + self.seconds},
                       content=content, event={**running, "request_id": None})

    def flush(self) -> None:
        """Write the step log now, extending the lease (``ctx.run_once``, durable runs)."""
        self.write({**self.state, "lease_until": time.time() + self.seconds},
                   content=self.log.content(final=False),
                   event={"type": "request", "scope": "request", "scope_id": self.request_id,
                          "status": "running", "logged": True, "request_id": None},
                   own_event=False)

    def due(self) -> float:
        """When (``time.monotonic()``) the renewing thread should next write the record."""
        if self.started:
            return self.last + self.seconds / 3
        return self.last + min(START_AFTER_S, self.seconds / 3)

    def renew(self) -> None:
        """Extend the lease and write the step log so far (from the renewing thread); a run
        that has not written its record yet writes it now."""
        with self.lock:
            if self.lost is not None or self.ended:
                return
            if not self.started:
                self.start()
                return
            state = {**self.state, "lease_until": time.time() + self.seconds}
            log = self.log
            content = log.content(final=False) if log is not None and log.durable else KEEP
            event = {"type": "request", "scope": "request", "scope_id": self.request_id,
                     "status": "running", "renewal": True, "request_id": None}
            try:
                self.write(state, content=content, event=event, own_event=False)
            except RunStateError:
                pass  # lost: the run notices at its next write


class _Renewer:
    """One daemon thread per process renewing the leases of the runs it executes.

    It runs while some run does, and for :data:`IDLE_S` after the last one ended (so a series of
    short runs does not start a thread each); it wakes every 50 ms at most.

    A run adds and removes its lease without the lock: one set operation is atomic (the GIL),
    and the thread and ``start_pending`` read the set through a copy made in one C call. The
    lock orders only the thread's start and end: the thread gives up its place, looks at the
    set once more and takes it back if a lease came in meanwhile, all under the lock, and
    ``add`` starts a thread only when, under the lock, none has its place; so a lease added
    while the thread ends is seen either by that thread or by a new one.
    """

    IDLE_S = 2.0

    def __init__(self) -> None:
        self.leases: set[Lease] = set()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def add(self, lease: Lease) -> None:
        self.leases.add(lease)
        if self.thread is None:
            with self.lock:
                if self.thread is None:
                    self.thread = threading.Thread(target=self._run, name="flowstate-leases",
                                                   daemon=True)
                    self.thread.start()

    def remove(self, lease: Lease) -> None:
        self.leases.discard(lease)

    def start_pending(self, store: Store, request_id: str | None = None) -> None:
        """Write now the records that runs of this process on ``store`` put off (only
        ``request_id``'s, if given): someone here is about to look for them."""
        pending = [lease for lease in tuple(self.leases) if not lease.started
                   and lease.store is store
                   and (request_id is None or lease.request_id == request_id)]
        for lease in pending:
            lease.start()

    def _run(self) -> None:
        me = threading.current_thread()
        idle_since = None
        while True:
            leases = list(self.leases)
            if not leases:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > self.IDLE_S:
                    with self.lock:
                        self.thread = None
                        if not self.leases:
                            return
                        self.thread = me  # a lease came in meanwhile: keep going
                    idle_since = None
            else:
                idle_since = None
            now = time.monotonic()
            wait = 0.05
            for lease in leases:
                due = lease.due() - now
                if due <= 0:
                    try:
                        lease.renew()
                    except Exception as exc:  # noqa: BLE001 - try again at the next tick
                        if getattr(lease.store, "_closed", False):
                            self.remove(lease)  # its store is gone: so is the run
                            continue
                        lease.last = time.monotonic()  # retry a third of a lease later
                        warnings.warn(f"flowstate could not renew the lease of run "
                                      f"{lease.request_id}: {exc}", RuntimeWarning,
                                      stacklevel=1)
                else:
                    wait = min(wait, due)
            time.sleep(max(wait, 0.005))


RENEWER = _Renewer()
set_before_listing(RENEWER.start_pending)


# ---------------------------------------------------------------------------- resume

def read_run(store: Store, request_id: str) -> Record:
    """The request record of ``request_id``; :class:`RunStateError` if there is none. A run of
    this process that put off its record's first write writes it first."""
    RENEWER.start_pending(store, request_id)
    record = store.read("request", request_id, REQUEST)
    if record is None or record.deleted or not isinstance(record.state, dict):
        raise RunStateError(f"there is no run {request_id!r} in store {store.url} (it may have "
                            f"been pruned); list runs with flow.runs()")
    return record


def claim_resume(store: Store, request_id: str, flow_kind: str, value: Any, *,
                 force: bool = False) -> tuple[Record, dict, dict, Any]:
    """Check that ``request_id`` may be resumed with ``value`` and read what it logged.

    Returns ``(record, state, logged, value_json)``; nothing is written. Raises
    :class:`RunStateError` (not resumable, expired, not covered) or :class:`ValidationError`
    (a refused value).
    """
    record = read_run(store, request_id)
    state = record.state
    if state.get("flow") != flow_kind:
        raise RunStateError(f"run {request_id} belongs to flow {state.get('flow')!r}, not "
                            f"{flow_kind!r}; resume it with that flow")
    status = effective_status(state)
    content = read_content(record.content)
    logged = content.get("log") if isinstance(content.get("log"), dict) else None
    if status == "suspended":
        suspension = state.get("suspension") or {}
        expires = suspension.get("expires_at")
        if expires is not None and expires < time.time():
            raise RunStateError(f"run {request_id}'s suspension expired at "
                                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(expires))}"
                                f"; it can no longer be resumed (start a new run)")
        data = validate_resume_value(request_id, suspension, value)
    elif status == "interrupted":
        if value is not None:
            raise RunStateError(f"run {request_id} was interrupted, not suspended: it takes no "
                                f"value; resume it with flow.resume({request_id!r})")
        data = None
    elif status == "running":
        left = (state.get("lease_until") or 0) - time.time()
        raise RunStateError(f"run {request_id} is running (in {state.get('owner')}); it can be "
                            f"resumed only if it stops, {left:.1f} s after its last sign of "
                            f"life at the earliest")
    else:
        raise RunStateError(f"run {request_id} is {status}, not suspended or interrupted: there "
                            f"is nothing to resume")
    if not state.get("durable", True):
        raise RunStateError(f"run {request_id} kept no step log (durable=False), so it cannot "
                            f"be resumed")
    if logged is None:  # it died before it wrote a log: its record holds the whole input
        given = state.get("input")
        if isinstance(given, dict) and given.get("$truncated"):
            raise RunStateError(f"run {request_id} died before it logged its input, which its "
                                f"request record keeps only in part; it cannot be resumed")
        logged = {"input": given}
    if status == "interrupted":
        gap = _writes_since(store, request_id, record.version)
        if gap is None and not force:
            raise RunStateError(
                f"run {request_id} was interrupted, and the store's change log no longer goes "
                f"back to its last recorded step (it keeps the newest {store.changelog_limit} "
                f"changes), so the writes its unfinished blocks made since cannot be told apart "
                f"from those they did not make; resuming could repeat them. To resume anyway, "
                f"accepting that: flow.resume({request_id!r}, force=True)")
        writes = {p: set(w) for p, w in (logged.get("writes") or {}).items()}
        for path, ids in (gap or {}).items():
            writes.setdefault(path, set()).update(ids)
        logged = {**logged, "writes": {p: sorted(w) for p, w in writes.items()}}
    return record, state, logged, data


def _writes_since(store: Store, request_id: str, version: int) -> dict[str, set[str]] | None:
    """Write identities of ``request_id`` in the change log, if the log reaches back to the run's
    last write of its request record (version ``version``); else ``None``."""
    covered = False
    writes: dict[str, set[str]] = {}
    items: Any = store.changes()  # (Store.list shadows the builtin in its annotations)
    for _, event in items:
        if event.get("scope_id") == request_id and event.get("version") == version and (
                event.get("type") == "request" or event.get("resource") == REQUEST):
            covered = True  # the request record's last write: everything since is here
        if event.get("request_id") == request_id and "write" in event and "span" in event:
            writes.setdefault(event["span"], set()).add(event["write"])
    return writes if covered else None


# ---------------------------------------------------------------------------- concurrency

def _alive(store: Store, request_id: str | None) -> bool:
    if not request_id:
        return False
    record = store.read("request", request_id, REQUEST)
    return record is not None and isinstance(record.state, dict) and \
        effective_status(record.state) == "running"


def _slot_state(record: Record | None) -> dict:
    if record is None or record.deleted or not isinstance(record.state, dict):
        return {"active": None, "queue": []}
    return {"active": record.state.get("active"), "queue": list(record.state.get("queue") or [])}


def _slot_change(session_id: str, action: str, state: dict) -> Change:
    return Change(state=state, operation="set",
                  event={"type": "action_slot", "scope": "session", "scope_id": session_id,
                         "action": action, "active": state["active"],
                         "waiting": len(state["queue"]), "request_id": None})


def acquire_slot(store: Store, session_id: str, action: str, request_id: str, mode: str,
                 timeout_s: float, lease_s: float, claim: Callable[[], Record]) -> Record:
    """Make ``request_id`` the run of ``action`` in flight on the session, then ``claim()``
    (the run's write of its request record) in the same transaction; returns what ``claim``
    wrote.

    ``"reject"``: :class:`RunConflictError` naming the run in flight, if there is one.
    ``"queue"``: wait in arrival order (a queue in the slot record; a waiter renews its place
    every third of a lease, and a place not renewed for three leases lapses, so a dead waiter
    does not block the queue), up to ``timeout_s``, then :class:`RunConflictError`.
    """
    name = ACTION_SLOT_PREFIX + action
    claimed: list[Record] = []
    place_s = 3 * lease_s  # a waiter's place lapses this long after its last sign of life

    def live(queue: list[dict], now: float) -> list[dict]:
        return [w for w in queue if w.get("until", 0) >= now or w.get("id") == request_id]

    def busy(active: str | None) -> bool:
        return bool(active) and active != request_id and _alive(store, active)

    def take(record: Record | None) -> Change | None:
        state = _slot_state(record)
        now = time.time()
        queue = live(state["queue"], now)
        active = state["active"]
        if busy(active) and mode == "reject":
            raise RunConflictError(
                f"action {action!r} already has a run in flight on session {session_id!r}: "
                f"{active} (concurrency='reject'); wait for it to end, or look at it with "
                f"flow.trace({active!r})", request_id=active)
        if busy(active) or (queue and queue[0].get("id") != request_id):
            for waiter in queue:  # wait: keep (or take) a place in the queue
                if waiter.get("id") == request_id:
                    waiter["until"] = now + place_s
                    break
            else:
                queue.append({"id": request_id, "until": now + place_s, "since": now})
            return _slot_change(session_id, action, {"active": active, "queue": queue})
        claimed.append(claim())
        return _slot_change(session_id, action, {
            "active": request_id, "queue": [w for w in queue if w.get("id") != request_id]})

    store.update("session", session_id, name, take)
    if claimed:
        return claimed[-1]
    deadline = time.monotonic() + timeout_s
    refreshed = time.monotonic()
    try:
        while True:
            time.sleep(QUEUE_POLL_S)
            state = _slot_state(store.read("session", session_id, name))
            queue = [w for w in state["queue"] if w.get("until", 0) >= time.time()]
            turn = not queue or queue[0].get("id") == request_id
            if (turn and not busy(state["active"])) or \
                    time.monotonic() - refreshed > lease_s / 3:  # my turn, or keep my place
                refreshed = time.monotonic()
                store.update("session", session_id, name, take)
                if claimed:
                    return claimed[-1]
            if time.monotonic() > deadline:
                raise RunConflictError(
                    f"action {action!r} on session {session_id!r}: still waiting for its turn "
                    f"after {timeout_s:g} s (concurrency='queue'); the run in flight is "
                    f"{state['active']}", request_id=state["active"])
    except BaseException:
        def leave(record: Record | None) -> Change | None:
            state = _slot_state(record)
            queue = [w for w in state["queue"] if w.get("id") != request_id]
            if len(queue) == len(state["queue"]):
                return None
            return _slot_change(session_id, action, {"active": state["active"], "queue": queue})
        store.update("session", session_id, name, leave)
        raise


def release_slot(store: Store, session_id: str, action: str, request_id: str) -> None:
    """``request_id`` is no longer in flight (call inside the run's final write)."""
    def fn(record: Record | None) -> Change | None:
        state = _slot_state(record)
        if state["active"] != request_id:
            return None
        return _slot_change(session_id, action, {"active": None, "queue": state["queue"]})
    store.update("session", session_id, ACTION_SLOT_PREFIX + action, fn)


# ---------------------------------------------------------------------------- retention

@functools.cache  # (asked at every run's end, always of the same few limits)
def retention_batch(limit: int) -> int:
    """Ended runs beyond ``limit`` a session keeps before they are purged at once."""
    return min(32, max(1, limit // 4))


@functools.cache
def retention_check_every(limit: int) -> int:
    """Runs of a session a store object ends between two looks at its ended runs: half a
    batch (the look costs a query that visits about ``limit`` rows)."""
    return max(1, retention_batch(limit) // 2)


#: Per store object: session id -> a count of the runs ended there (``runs_to_purge``). No lock:
#: ``next`` on an ``itertools.count`` and ``dict.setdefault`` are atomic, so a store object
#: looks at every ``every``-th run of a session it ends, whatever threads end them; a count
#: lost to a race (two threads starting over at once) makes a look sooner, never later.
_ENDED_SINCE: weakref.WeakKeyDictionary[Store, dict[str, Iterator[int]]] = \
    weakref.WeakKeyDictionary()
_ENDED_SINCE_SESSIONS = 4096  # sessions remembered per store object; beyond, it starts over
#: ``(weak reference to a store, its _ENDED_SINCE map)`` of the store last asked about (found
#: without ``WeakKeyDictionary.get``: a call and a weak reference made each time).
_LAST_ENDED: tuple[Callable[[], Store | None], dict[str, Iterator[int]]] = (lambda: None, {})


def runs_to_purge(store: Store, session_id: str) -> list[str]:
    """The session's oldest ended runs that retention purges now (none, mostly).

    A store object looks at a session's ended runs at the first run of the session it ends,
    then once every :func:`retention_check_every` runs of it (``every``); it purges all but the
    newest ``trace_limit`` when more than ``retention_batch - every`` are beyond them. So a
    session whose runs one store object ends keeps at most ``trace_limit`` +
    :func:`retention_batch` of them; each further store object (process) ending runs of the
    same session meanwhile can add up to ``every - 1`` more until one of them looks.

    Called inside a run's final write (before its request record is written: the run counts
    as the newest); purge them with ``Store.purge`` once it has committed (a purge inside it
    costs a deleted run about twice as much on SQLite). The store finds them from an index over
    request records (``Store.ended_runs``), without reading them; ended runs are never written
    again (only suspended and interrupted runs are resumed), so what it names may go without
    another look."""
    limit = store.trace_limit
    every = retention_check_every(limit)
    global _LAST_ENDED
    last = _LAST_ENDED
    if last[0]() is store:
        counts = last[1]
    else:
        found = _ENDED_SINCE.get(store)
        counts = found if found is not None else _ENDED_SINCE.setdefault(store, {})
        _LAST_ENDED = (weakref.ref(store), counts)
    ended = counts.get(session_id)
    if ended is None:  # the first run of the session this store object ends: it looks
        if len(counts) >= _ENDED_SINCE_SESSIONS:
            counts.clear()
        ended = counts.setdefault(session_id, itertools.count())
    if next(ended) % every:  # (looks at the 1st, the every+1-th, the 2*every+1-th ...)
        return []
    older = store.ended_runs(session_id, skip=limit - 1)
    return older if len(older) > retention_batch(limit) - every else []


def prune_store(store: Store, *, trace_limit: int | None = None,
                tombstone_limit: int | None = None,
                stale_after_s: float = STALE_AFTER_S) -> dict:
    """Apply every retention bound to a whole store (``flowstate prune``); returns counts.

    Keeps the newest ``trace_limit`` ended runs per session (default: the store's), purges
    interrupted runs and expired suspensions older than ``stale_after_s``, and keeps the newest
    ``tombstone_limit`` tombstones per collection (raising each collection's mark).
    """
    runs_limit = store.trace_limit if trace_limit is None else trace_limit
    tombs_limit = store.tombstone_limit if tombstone_limit is None else tombstone_limit
    if runs_limit < 1 or tombs_limit < 1:
        raise ValueError("limits must be at least 1")
    now = time.time()
    by_session: dict[str, list[tuple[float, str]]] = {}
    stale: list[str] = []
    for r in store.list(scope="request", name=REQUEST):
        state = r.state if isinstance(r.state, dict) else {}
        status = effective_status(state, now)
        if status in ("ok", "error"):
            by_session.setdefault(str(state.get("session")), []).append(
                (state.get("ended_at") or state.get("started_at") or 0, r.scope_id))
        elif status == "interrupted" and (state.get("lease_until") or 0) < now - stale_after_s:
            stale.append(r.scope_id)
        elif status == "suspended":
            expires = (state.get("suspension") or {}).get("expires_at")
            if expires is not None and expires < now - stale_after_s:
                stale.append(r.scope_id)
    old: list[str] = []
    for runs in by_session.values():
        runs.sort(reverse=True)
        old.extend(rid for _, rid in runs[runs_limit:])
    purged_runs = store.purge("request", old + stale) if old or stale else 0
    collections: set[tuple[str, str, str]] = set()
    for r in store.list(include_deleted=True):
        if r.deleted and ":" in r.name and not is_reserved(r.name):
            collections.add((r.scope, r.scope_id, r.name.split(":", 1)[0]))
    purged_tombs = sum(bound_tombstones(store, *key, tombs_limit) for key in sorted(collections))
    return {"runs": purged_runs, "stale_runs": len(stale), "tombstones": purged_tombs,
            "trace_limit": runs_limit, "tombstone_limit": tombs_limit}
