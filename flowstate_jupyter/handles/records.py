"""A typed handle on one versioned record: the compare-and-swap driver and the state operations.

Scope state (``scopes.py``) and resources (``resources.py``) are both "a typed JSON object kept
in one store record", so the operations of DESIGN §4 live here once. Each operation computes the
new state from the current one *inside* the store's write transaction (``Store.update``), so
concurrent writers in other threads, processes or machines never lose an update.

The fast path: a handle that wrote the record last remembers it, computes the next state from it
without reading, and hands the result to ``Store.commit_next``, which commits it only if nobody
wrote since (built-in operations only: a function the caller passes, as to ``atomic_state``,
always runs under the lock, once per attempt). Otherwise the ordinary path above runs. If the
record changed under us anyway (the conditional UPDATE matched nothing) the driver retries: 3
more attempts with 10 ms doubling backoff, then :class:`ConcurrentModificationError`.

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


def drive(store: Store, scope: str, scope_id: str, name: str,
          fn: Callable[[Record | None], Change | None], *, where: str) -> Record | None:
    """Run ``store.update`` with the retry policy of DESIGN §4."""
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


class TypedRecord:
    """Shared behaviour of scope-state and resource handles. Not used directly."""

    _scope: str
    _scope_id: str
    _name: str
    _model: type[BaseModel] | None
    _store: Store
    _request_id: str | None

    def __init__(self, store: Store, scope: str, scope_id: str, name: str,
                 model: type[BaseModel] | None, *, request_id: str | None = None) -> None:
        if model is not None:
            schema.require_defaults(model)
        self._store = store
        self._scope = scope
        self._scope_id = scope_id
        self._name = name
        self._model = model
        self._validate = schema.validator(model)
        self._request_id = request_id
        self._first_version: int | None = None  # set by _guard when a create must start higher
        self._version = 0
        # The record this handle last wrote, its state the validated dict: a write right after
        # it needs no re-validation of the stored state (another writer would have bumped the
        # version), and the next write may skip reading it back (``_commit_known``).
        self._cache: Record | None = None

    # -- hooks for subclasses ----------------------------------------------------------------
    def _where(self) -> str:
        raise NotImplementedError

    def _event(self, operation: str, delta: Any, path: str | None, existed: bool) -> dict:
        raise NotImplementedError

    def _check_writable(self) -> None:
        """Raise before anything happens if this handle may not write."""

    def _guard(self, record: Record | None) -> None:
        """Raise inside the write transaction if the record may not be written now."""

    def _initial(self) -> dict:
        """The state of a record never written (or deleted): the schema's defaults."""
        return schema.defaults(self._model)

    def _after_commit(self, before: dict, after: dict, created: bool) -> None:
        """Called after a committed write (resources run collection hooks here)."""

    @property
    def store(self) -> Store:
        """The store this handle reads and writes."""
        return self._store

    # -- reading -----------------------------------------------------------------------------
    def _current(self, record: Record | None) -> dict:
        """The typed-and-repaired state of ``record`` (treat it as read-only: it may be shared)."""
        if record is None or record.deleted:
            return self._initial()
        cache = self._cache
        if cache is not None and cache.version == record.version \
                and cache.updated_at == record.updated_at:  # (a rolled-back write reuses versions)
            return cache.state
        return schema.read_state(self._model, record.state, where=self._where(),
                                 version=record.version)

    def _read(self) -> Record | None:
        record = self._store.read(self._scope, self._scope_id, self._name)
        self._seen(record)
        return record

    def _seen(self, record: Record | None) -> None:
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
        return ops.copy_json(self._current(self._read()), where=self._where())

    def history(self, limit: int | None = 20) -> list[HistoryEntry]:
        """Kept versions of this record, newest first (time, operation, state)."""
        return self._store.history(self._scope, self._scope_id, self._name, limit=limit)

    # -- the write path ----------------------------------------------------------------------
    def _commit(self, operation: str, compute: Callable[[dict], dict], *, delta: Any = None,
                path: str | None = None, content: Any = KEEP, force: bool = False,
                create: Callable[[dict], dict] | None = None,
                guard: Callable[[Record | None], None] | None = None,
                changed: Iterable[str] | schema.AllFields | None = None,
                user_code: bool = False) -> bool:
        """Compute the new state from the current one, validate, commit (see the module doc).

        ``create`` (if given) computes the state instead of ``compute`` when there is no live
        record; ``guard`` replaces the handle's own check of the record. Returns False (nothing
        stored, no event, version unchanged) when the result deep-equals what is there; with
        ``force``, a missing record is stored even when its state equals the defaults (a create).
        ``changed`` names the only fields ``compute`` may change (it speeds validation up).
        ``user_code``: ``compute`` runs the caller's function, so it is never tried on the record
        this handle remembers (which may be stale): it runs once per attempt, under the lock.
        """
        self._check_writable()
        tag = None
        if self._request_id is not None and _write_hook is not None:
            tag = _write_hook(self._request_id, self._scope, self._scope_id, self._name,
                              operation)
            if tag is SKIP:
                return True
        where = self._where()
        known = self._cache
        if known is not None and guard is None and not user_code and self._commit_known(
                known, operation, compute, delta, path, content, changed, where, tag):
            return True
        outcome: list[Any] = []  # (before, after, created) of the committed attempt
        check = guard or self._guard
        validate = self._validate

        def fn(record: Record | None) -> Change | None:
            check(record)
            current = self._current(record)
            existed = record is not None and not record.deleted
            if create is not None and not existed:
                new = validate(create(current), where)
            else:
                new = validate(compute(current), where, changed)
            unchanged = ops.json_equal(new, current) and (
                content is KEEP
                or content == (record.content if existed and record is not None else None))
            if unchanged and (existed or (record is None and not force)):
                return None  # the no-op guard
            outcome[:] = (current, new, not existed)
            return self._change(operation, new, delta, path, content, existed, where, tag)

        record = drive(self._store, self._scope, self._scope_id, self._name, fn, where=where)
        if record is None:
            return False
        self._committed(record, *outcome)
        return True

    def _commit_known(self, known: Record, operation: str, compute: Callable[[dict], dict],
                      delta: Any, path: str | None, content: Any,
                      changed: Iterable[str] | schema.AllFields | None, where: str,
                      tag: Any = None) -> bool:
        """The fast path: compute from the record this handle last wrote, without reading, and
        commit only if it is still the stored one (``Store.commit_next``).

        False: nothing was written and the ordinary path must decide, on the stored record —
        another writer came first, or the outcome (an error, nothing to write) may only be due
        to the remembered record being out of date.
        """
        current = known.state
        try:
            self._guard(known)
            new = self._validate(compute(current), where, changed)
            if ops.json_equal(new, current) and (content is KEEP or content == known.content):
                return False
            change = self._change(operation, new, delta, path, content, True, where, tag)
        except Exception:  # noqa: BLE001 - the ordinary path decides, on the stored record
            return False
        record = self._store.commit_next(known, change)
        if record is None:
            return False
        self._committed(record, current, new, False)
        return True

    def _change(self, operation: str, new: dict, delta: Any, path: str | None, content: Any,
                existed: bool, where: str, tag: Any = None) -> Change:
        """The store's change for a validated new state, with its state and event encoded."""
        event = self._event(operation, delta, path, existed)
        if tag is not None:  # a run's write: its span and identity travel with its event
            event["span"], event["write"] = tag
        # (positional: a third cheaper than keywords, on every write)
        return Change(new, operation, content, False, event, self._request_id,
                      schema.encode_json(new, where=where),
                      schema.encode_json(event, where=where, what="event"),
                      None if existed else self._first_version)

    def _committed(self, record: Record, before: dict, after: dict, created: bool) -> None:
        self._seen(record)
        self._cache = None if record.deleted else record
        self._after_commit(before, after, created)

    # -- operations (DESIGN §4) --------------------------------------------------------------
    def patch_state(self, update: Any = None, /, **fields: Any) -> bool:
        """Merge fields into the state. Returns True if a write was committed."""
        changes = _fields(update, fields, "patch_state")  # ops.patch refuses non-JSON values
        where = self._where()
        return self._commit("patch", lambda s: ops.patch(s, changes, where=where), delta=changes,
                            changed=changes)

    def set_state(self, state: Any) -> bool:
        """Replace the whole state (dict or model instance); missing fields take defaults."""
        new = to_json(state)
        if not isinstance(new, dict):
            raise ValidationError(f"{self._where()}: set_state takes a dict or a model "
                                  f"instance, not {type(state).__name__}", where=self._where())
        return self._commit("set", lambda s: ops.replace(s, new, where=self._where()), delta=new,
                            changed=schema.ALL_FIELDS)

    def inc_state(self, increments: Any = None, /, **fields: Any) -> bool:
        """Add numbers to fields; a missing field counts as 0. Never loses an update."""
        amounts = _fields(increments, fields, "inc_state")  # ops.increment refuses non-numbers
        where = self._where()
        return self._commit("increment", lambda s: ops.increment(s, amounts, where=where),
                            delta=amounts, changed=amounts)

    def push_state(self, field: str, value: Any) -> bool:
        """Append ``value`` to the list field ``field``. Never loses an update."""
        value = to_json(value)
        ops.check_json(value, where=self._where(), path=(field,))
        return self._commit("push", lambda s: ops.push(s, field, value, where=self._where()),
                            delta=value, path=field, changed=(field,))

    def set_state_record(self, field: str, key: str, value: Any) -> bool:
        """Set one key of the dict field ``field``. Never loses an update."""
        value = to_json(value)
        ops.check_json(value, where=self._where(), path=(field, key))
        return self._commit(
            "set_record", lambda s: ops.set_record(s, field, key, value, where=self._where()),
            delta=value, path=f"{field}.{key}", changed=(field,))

    def delete_state_record(self, field: str, key: str) -> bool:
        """Remove one key of the dict field ``field`` (a missing key is a no-op)."""
        schema.check_fields(self._model, [field], where=self._where())
        return self._commit(
            "delete_record", lambda s: ops.delete_record(s, field, key, where=self._where()),
            path=f"{field}.{key}", changed=(field,))

    def atomic_state(self, fn: Callable[[Any], dict | None]) -> bool:
        """``fn(snapshot)`` returns a partial dict to merge; re-run on conflict (keep it pure)."""
        delta: dict[str, Any] = {}

        def compute(current: dict) -> dict:
            partial = fn(schema.snapshot(self._model, current))
            partial = _fields(partial, {}, "atomic_state") if partial is not None else {}
            ops.check_json(partial, where=self._where())
            delta.clear()
            delta.update(partial)
            return ops.patch(current, partial, where=self._where())

        return self._commit("atomic", compute, delta=delta, user_code=True)

    def reset_state(self) -> bool:
        """Put the state back to the schema's defaults (a new version, history kept)."""
        return self._commit("set", lambda s: self._initial(), delta=None)
