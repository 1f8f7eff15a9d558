"""A handle on one typed, versioned record, and the one path every write to it takes.

Scope state (``scopes.py``), resources (``resources.py``) and a sequencer's instance state
(``flows/context.py``) are each "a typed JSON object kept in one store record", so their state
operations (docs/concepts.md, "State operations") live here once, on :class:`RecordHandle`.

The write path, top to bottom:

* An operation (``inc_state``, ``patch_state``, ...) describes its write as a :class:`Write`: the
  operation's name, the pure function from the current state to the new one, what its event
  reports, and a few options. Nothing has happened yet.
* :meth:`RecordHandle._write` performs it. The new state is computed from the current one *inside*
  the store's write transaction (``Store.update``), validated, compared with what is there (the
  no-op guard: an equal state stores nothing) and committed with its event, so concurrent
  writers in other threads, processes or machines never lose an update.
* The fast path: a handle that wrote the record last remembers it, computes the next state from
  it without reading, and hands the result to ``Store.commit_next``, which commits it only if
  nobody wrote since (not for a write that runs the caller's function, as ``atomic_state`` does:
  that runs under the lock only, once per attempt). Otherwise the ordinary path above runs.
* If the record changed under us anyway (the conditional UPDATE matched nothing),
  :func:`update_with_retries` tries again: 3 more attempts with 10 ms doubling backoff, then
  :class:`ConcurrentModificationError`. Records without a typed handle (a session's journal,
  Windmill's states, variables and resources) are written through it directly.
* Kinds of record differ only through a few hooks: ``_event`` (the change-log event of a write),
  ``_check_writable``, ``_check_record``, ``_before_create``, ``_initial_state`` and
  ``_after_commit``.

Writes inside a run. A handle made for a run (with a ``request_id``) asks the run machinery,
through the hook installed with :func:`install_write_hook` (``flows/`` sits above this layer),
before each write: the hook returns ``None`` (write as usual), :data:`SKIP` (this same write was
committed by an earlier attempt of the run: write nothing and report ``True``), or a tag — the
block's span path and the write's identity within it — that the write's event carries into the
change log, atomically with the write (see ``flows/trace.py``).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from ..errors import ConcurrentModificationError, ValidationError, VersionConflictError
from ..model import ops, schema
from ..stores.base import KEEP, Change, HistoryEntry, Record, Store

RETRIES = 3
BACKOFF_S = 0.010

#: What the write hook returns for a write that an earlier attempt of the run committed.
SKIP = object()

#: ``hook(request_id, scope, scope_id, name, operation)`` -> ``None``, :data:`SKIP` or
#: ``(span path, write id)``; set by the run machinery.
_write_hook: Callable[[str, str, str, str, str], Any] | None = None


def install_write_hook(hook: Callable[[str, str, str, str, str], Any] | None) -> None:
    """Set the function asked before every write a run's handle makes (see the module doc)."""
    global _write_hook
    _write_hook = hook


def run_write_tag(request_id: str | None, scope: str, scope_id: str, name: str,
                  operation: str) -> Any:
    """The hook's answer for one write (``None`` outside runs or without a hook)."""
    hook = _write_hook
    if request_id is None or hook is None:
        return None
    return hook(request_id, scope, scope_id, name, operation)


def update_with_retries(store: Store, scope: str, scope_id: str, name: str,
                        fn: Callable[[Record | None], Change | None], *,
                        where: str) -> Record | None:
    """``store.update(scope, scope_id, name, fn)``, tried again when another writer came first.

    The retry policy of docs/concepts.md ("State operations", Concurrency): 3 more attempts with
    10 ms doubling backoff, then :class:`ConcurrentModificationError` naming ``where``.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return store.update(scope, scope_id, name, fn)
        except VersionConflictError as exc:
            if attempt > RETRIES:
                raise ConcurrentModificationError(
                    f"{where}: another writer changed it during each of {attempt} attempts; "
                    f"retry later, or make sure the function you passed is pure and does not "
                    f"write itself", attempts=attempt) from exc
            time.sleep(BACKOFF_S * 2 ** (attempt - 1))


def to_json(value: Any) -> Any:
    """Turn a pydantic model or enum member a caller passed into plain JSON."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, enum.Enum):
        return value.value
    return value


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _fields(update: Any, fields: dict[str, Any], op: str) -> dict[str, Any]:
    """Merge the positional dict (or model) and keyword forms of patch/inc arguments."""
    if update is None:
        for value in fields.values():
            if type(value) not in _SCALARS:
                break
        else:
            return fields  # keyword arguments: already a fresh dict, nothing to convert
        merged = {}
    elif isinstance(update, BaseModel):
        merged = update.model_dump(mode="json", exclude_unset=True)
    elif isinstance(update, dict):
        merged = dict(update)
    else:
        raise TypeError(f"{op} takes a dict or keyword arguments, not {type(update).__name__}")
    merged.update(fields)
    return {k: to_json(v) for k, v in merged.items()}


# (Not frozen=True: a frozen dataclass's __init__, one object.__setattr__ per field, made an
# inc_state 6-12% slower on the memory store. One is made per write; nothing changes it after.)
@dataclass(slots=True)
class Write:
    """One write to a typed record, as an operation describes it to :meth:`RecordHandle._write`.

    ``compute`` maps the current state (a validated dict: do not change it) to the new one. Keep
    it pure: it may run more than once (on the remembered record, then on each attempt under the
    lock). The rest says what the change log reports, and holds the options that creates,
    upserts, content writes and the caller's own functions need.
    """

    #: The operation's name in history and events (``"increment"``, ``"patch"``, ...).
    operation: str
    compute: Callable[[dict], dict]
    #: What the event reports as the change.
    delta: Any = None
    #: The fields ``compute`` may change, so plain values there skip the full validation
    #: (``schema.ALL_FIELDS``: a whole new state; None: unknown, validate it all).
    changed: Iterable[str] | schema.AllFields | None = None
    #: The field (``field.key``) the event says the write is about.
    path: str | None = None
    #: The new content text (``None`` clears it); :data:`KEEP` leaves it as it is.
    content: Any = KEEP
    #: Computes the state instead of ``compute`` when there is no live record (an upsert).
    compute_if_missing: Callable[[dict], dict] | None = None
    #: Store a record never written even when its new state equals the defaults (a create).
    store_defaults: bool = False
    #: Raises, inside the transaction, when the stored record is not what this write expects
    #: (a create that must not replace); runs before the handle's own ``_check_record``.
    precondition: Callable[[Record | None], None] | None = None
    #: ``compute`` runs the caller's function: never on the remembered record (it may be
    #: stale), only under the lock, once per attempt.
    runs_user_code: bool = False


class RecordHandle:
    """A handle on one typed record of a store: reads it, and writes it through :meth:`_write`.

    The base of scope handles, resource handles and sequencer instance state; not used directly.
    ``where`` names the record in messages (``"session 's1'"``).
    """

    _scope: str
    _scope_id: str
    _name: str
    _model: type[BaseModel] | None
    _store: Store
    _request_id: str | None

    def __init__(self, store: Store, scope: str, scope_id: str, name: str,
                 model: type[BaseModel] | None, *, where: str,
                 request_id: str | None = None) -> None:
        if model is not None:
            schema.require_defaults(model)
        self._store = store
        self._scope = scope
        self._scope_id = scope_id
        self._name = name
        self._model = model
        self._label = where  # names the record in messages
        self._validate = schema.validator(model)
        self._request_id = request_id
        # The version a record created from nothing starts at (None: 1); a subclass's
        # ``_check_record`` sets it when a create must start higher (a purged tombstone's key).
        self._first_version: int | None = None
        self._version = 0
        # The record this handle last wrote, its state the validated dict: a write right after
        # it needs no re-validation of the stored state (another writer would have bumped the
        # version), and the next write may skip reading it back (``_write_from_remembered``).
        self._cache: Record | None = None

    # -- hooks: how one kind of record differs from another ----------------------------------
    def _event(self, operation: str, delta: Any, path: str | None, existed: bool) -> dict:
        """The change-log event of a write (``existed``: the record was live before it)."""
        raise NotImplementedError

    def _check_writable(self) -> None:
        """Raise before anything happens if this handle may not write."""

    def _check_record(self, record: Record | None) -> None:
        """Raise inside the write transaction if the record may not be written now."""

    def _before_create(self, record: Record | None) -> None:
        """Inside the write transaction, once a write will create the record (after the no-op
        guard, so a write that stores nothing does nothing else either)."""

    def _initial_state(self) -> dict:
        """The state of a record never written (or deleted): the schema's defaults."""
        return schema.defaults(self._model)

    def _after_commit(self, before: dict, after: dict, created: bool) -> None:
        """Called after a committed write (collections run their hooks here)."""

    @property
    def store(self) -> Store:
        """The store this handle reads and writes."""
        return self._store

    # -- reading -----------------------------------------------------------------------------
    def _current(self, record: Record | None) -> dict:
        """The typed-and-repaired state of ``record`` (treat it as read-only: it may be shared)."""
        if record is None or record.deleted:
            return self._initial_state()
        cache = self._cache
        if cache is not None and cache.version == record.version \
                and cache.updated_at == record.updated_at:  # (a rolled-back write reuses versions)
            return cache.state
        return schema.read_state(self._model, record.state, where=self._label,
                                 version=record.version)

    def _read(self) -> Record | None:
        record = self._store.read(self._scope, self._scope_id, self._name)
        self._seen(record)
        return record

    def _seen(self, record: Record | None) -> None:
        """Called with every record this handle reads or writes."""
        self._version = 0 if record is None else record.version

    @property
    def version(self) -> int:
        """The record's version now (0 = never written)."""
        return self._read_version()

    def _read_version(self) -> int:
        self._read()
        return self._version

    @property
    def state(self) -> Any:
        """A read-only typed snapshot of the current state."""
        return schema.snapshot(self._model, self._current(self._read()))

    def state_dict(self) -> dict:
        """The current state as a plain JSON dict (a copy)."""
        return ops.copy_json(self._current(self._read()), where=self._label)

    def history(self, limit: int | None = 20) -> list[HistoryEntry]:
        """Kept versions of this record, newest first (time, operation, state)."""
        return self._store.history(self._scope, self._scope_id, self._name, limit=limit)

    # -- the write path ----------------------------------------------------------------------
    def _write(self, write: Write) -> bool:
        """Perform ``write`` (see the module doc). True if it committed a new version (or an
        earlier attempt of this run did); False if the state and content were already so."""
        self._check_writable()
        tag = None
        if self._request_id is not None:
            tag = run_write_tag(self._request_id, self._scope, self._scope_id, self._name,
                                write.operation)
            if tag is SKIP:
                return True
        known = self._cache
        if known is not None and write.precondition is None and not write.runs_user_code \
                and self._write_from_remembered(write, known, tag):
            return True
        return self._write_under_lock(write, tag)

    def _write_from_remembered(self, write: Write, known: Record, tag: Any) -> bool:
        """The fast path: compute from the record this handle last wrote, without reading, and
        commit only if it is still the stored one (``Store.commit_next``).

        False: nothing was written and the ordinary path must decide, on the stored record —
        another writer came first, or the outcome (an error, nothing to write) may only be due
        to the remembered record being out of date.
        """
        current = known.state
        content = write.content
        try:
            self._check_record(known)
            new = self._validate(write.compute(current), self._label, write.changed)
            if ops.json_equal(new, current) and (content is KEEP or content == known.content):
                return False
            change = self._change(write, new, True, tag)
        except Exception:  # noqa: BLE001 - the ordinary path decides, on the stored record
            return False
        record = self._store.commit_next(known, change)
        if record is None:
            return False
        self._committed(record, current, new, False)
        return True

    def _write_under_lock(self, write: Write, tag: Any) -> bool:
        """The ordinary path: compute, validate and commit inside the store's transaction."""
        outcome: list[Any] = []  # (before, after, created) of the committed attempt
        where = self._label
        validate = self._validate
        precondition = write.precondition
        if_missing = write.compute_if_missing
        content = write.content

        def fn(record: Record | None) -> Change | None:
            if precondition is not None:
                precondition(record)
            self._check_record(record)
            current = self._current(record)
            existed = record is not None and not record.deleted
            if if_missing is not None and not existed:
                new = validate(if_missing(current), where)
            else:
                new = validate(write.compute(current), where, write.changed)
            unchanged = ops.json_equal(new, current) and (
                content is KEEP
                or content == (record.content if existed and record is not None else None))
            if unchanged and (existed or (record is None and not write.store_defaults)):
                return None  # the no-op guard
            if not existed:
                self._before_create(record)
            outcome[:] = (current, new, not existed)
            return self._change(write, new, existed, tag)

        record = update_with_retries(self._store, self._scope, self._scope_id, self._name, fn,
                                     where=where)
        if record is None:
            return False
        self._committed(record, *outcome)
        return True

    def _change(self, write: Write, new: dict, existed: bool, tag: Any) -> Change:
        """The store's change for a validated new state, with its state and event encoded."""
        operation = write.operation
        event = self._event(operation, write.delta, write.path, existed)
        if tag is not None:  # a run's write: its span and identity travel with its event
            event["span"], event["write"] = tag
        where = self._label
        # (positional: a third cheaper than keywords, on every write)
        return Change(new, operation, write.content, False, event, self._request_id,
                      schema.encode_json(new, where=where),
                      schema.encode_json(event, where=where, what="event"),
                      None if existed else self._first_version)

    def _committed(self, record: Record, before: dict, after: dict, created: bool) -> None:
        self._seen(record)
        self._cache = None if record.deleted else record
        self._after_commit(before, after, created)

    # -- the operations (docs/concepts.md, "State operations") -------------------------------
    # Each builds its Write positionally, ``Write(operation, compute, delta, changed, path)``:
    # matching keyword arguments cost about 1% of a write here (callgrind).
    def patch_state(self, update: Any = None, /, **fields: Any) -> bool:
        """Merge fields into the state. Returns True if a write was committed."""
        changes = _fields(update, fields, "patch_state")  # ops.patch refuses non-JSON values
        where = self._label
        return self._write(Write("patch", lambda s: ops.patch(s, changes, where=where),
                                 changes, changes))

    def set_state(self, state: Any) -> bool:
        """Replace the whole state (dict or model instance); missing fields take defaults."""
        new = to_json(state)
        where = self._label
        if not isinstance(new, dict):
            raise ValidationError(f"{where}: set_state takes a dict or a model instance, not "
                                  f"{type(state).__name__}", where=where)
        return self._write(Write("set", lambda s: ops.replace(s, new, where=where), new,
                                 schema.ALL_FIELDS))

    def inc_state(self, increments: Any = None, /, **fields: Any) -> bool:
        """Add numbers to fields; a missing field counts as 0. Never loses an update."""
        amounts = _fields(increments, fields, "inc_state")  # ops.increment refuses non-numbers
        where = self._label
        return self._write(Write("increment", lambda s: ops.increment(s, amounts, where=where),
                                 amounts, amounts))

    def push_state(self, field: str, value: Any) -> bool:
        """Append ``value`` to the list field ``field``. Never loses an update."""
        value = to_json(value)
        where = self._label
        ops.check_json(value, where=where, path=(field,))
        return self._write(Write("push", lambda s: ops.push(s, field, value, where=where),
                                 value, (field,), field))

    def set_state_record(self, field: str, key: str, value: Any) -> bool:
        """Set one key of the dict field ``field``. Never loses an update."""
        value = to_json(value)
        where = self._label
        ops.check_json(value, where=where, path=(field, key))
        return self._write(Write(
            "set_record", lambda s: ops.set_record(s, field, key, value, where=where),
            value, (field,), f"{field}.{key}"))

    def delete_state_record(self, field: str, key: str) -> bool:
        """Remove one key of the dict field ``field`` (a missing key is a no-op)."""
        where = self._label
        schema.check_fields(self._model, [field], where=where)
        return self._write(Write(
            "delete_record", lambda s: ops.delete_record(s, field, key, where=where),
            None, (field,), f"{field}.{key}"))

    def atomic_state(self, fn: Callable[[Any], dict | None]) -> bool:
        """``fn(snapshot)`` returns a partial dict to merge; re-run on conflict (keep it pure)."""
        delta: dict[str, Any] = {}
        where = self._label

        def compute(current: dict) -> dict:
            partial = fn(schema.snapshot(self._model, current))
            partial = _fields(partial, {}, "atomic_state") if partial is not None else {}
            ops.check_json(partial, where=where)
            delta.clear()
            delta.update(partial)
            return ops.patch(current, partial, where=where)

        return self._write(Write("atomic", compute, delta=delta, runs_user_code=True))

    def reset_state(self) -> bool:
        """Put the state back to the schema's defaults (a new version, history kept)."""
        return self._write(Write("set", lambda s: self._initial_state()))
