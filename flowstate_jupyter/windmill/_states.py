"""Windmill states (a JSON value kept between runs at a state path) and flow user state (a
JSON object that lives with one flow run)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..base.ids import check_id
from ..base.names import WM_FLOW_USER_STATE, WM_RESOURCE_PREFIX, WM_STATE_PREFIX
from ..errors import ValidationError
from ..handles.records import to_json, update_with_retries
from ..model import ops
from ..stores.base import Change, Record, Store
from ._paths import _check_write, _state_path_arg
from ._where import SCOPE, _Env, _env, _live, _run


def _refuse_resource_at(env: _Env, path: str) -> None:
    """A state may not take the path of a resource of another type (Windmill: one namespace)."""
    record = env.store.read(SCOPE, env.project, WM_RESOURCE_PREFIX + path)
    if _live(record):
        rtype = record.state.get("resource_type")
        raise ValidationError(
            f"Windmill state {path!r}: that path holds a resource of type {rtype!r}; states and "
            f"resources share one namespace, so pick another state path or delete the resource",
            where=f"Windmill state {path!r}", reason="path holds a resource")


def get_state(path: str | None = None) -> Any:
    """The state kept at ``path`` (default: :func:`get_state_path`), or ``None`` if never set.

    Like Windmill, a path that holds a resource instead reads as that resource's value.
    """
    env = _env()
    path = _state_path_arg(path)
    record = env.store.read(SCOPE, env.project, WM_STATE_PREFIX + path)
    if _live(record):
        return record.state
    resource = env.store.read(SCOPE, env.project, WM_RESOURCE_PREFIX + path)
    return resource.state.get("value") if _live(resource) else None


def set_state(value: Any, path: str | None = None) -> None:
    """Keep ``value`` (any JSON) at ``path`` (default: :func:`get_state_path`).

    One compare-and-swap write; storing a value equal to the current one writes nothing.
    To change the state based on what is there, use :func:`update_state`, which never loses a
    concurrent update.
    """
    env = _env()
    path = _state_path_arg(path)
    where = f"Windmill state {path!r}"
    _check_write(path, env.user, "state")
    new = ops.copy_json(to_json(value), where=where)
    _refuse_resource_at(env, path)

    def fn(record: Record | None) -> Change | None:
        if _live(record) and ops.json_equal(record.state, new):
            return None
        return Change(state=new, operation="set", request_id=env.request_id)

    update_with_retries(env.store, SCOPE, env.project, WM_STATE_PREFIX + path, fn, where=where)


def update_state(fn: Callable[[Any], Any], path: str | None = None) -> Any:
    """Apply ``fn(current) -> new`` to the state atomically and return the new state.

    ``fn`` gets the current value (``None`` if never set; a private copy, so mutating it is
    harmless) and runs inside the store's write transaction, so concurrent writers in other
    threads or processes never lose an update. It may run more than once: keep it pure (do the
    fetching before, and collect what it decided in a variable you reset at its start). When the
    result equals the current value nothing is written. For example::

        update_state(lambda seen: sorted(set(seen or []) | {"a1", "a2"}))
    """
    if not callable(fn):
        raise TypeError(f"update_state takes a function, not {type(fn).__name__}")
    env = _env()
    path = _state_path_arg(path)
    where = f"Windmill state {path!r}"
    _check_write(path, env.user, "state")
    _refuse_resource_at(env, path)
    outcome: dict[str, Any] = {}

    def change(record: Record | None) -> Change | None:
        current = record.state if _live(record) else None
        new = ops.copy_json(to_json(fn(ops.copy_json(current, where=where))), where=where)
        outcome["value"] = new
        if ops.json_equal(new, current) and (_live(record) or new is None):
            return None
        return Change(state=new, operation="atomic", request_id=env.request_id)

    update_with_retries(env.store, SCOPE, env.project, WM_STATE_PREFIX + path, change, where=where)
    return outcome.get("value")


def delete_state(path: str | None = None) -> bool:
    """Forget the state at ``path`` (default: :func:`get_state_path`); True if there was one."""
    env = _env()
    path = _state_path_arg(path)
    _check_write(path, env.user, "state")
    return env.store.delete(SCOPE, env.project, WM_STATE_PREFIX + path,
                            request_id=env.request_id) is not None


def list_states(prefix: str = "", *, store: Store | None = None,
                project: str | None = None) -> list[dict]:
    """Every Windmill state of the project, sorted by path (what the Inspector's tab lists).

    Each item: ``{"path", "value", "version", "created_at", "updated_at"}`` (times in seconds
    since the epoch). ``prefix`` keeps only paths starting with it (e.g. ``"u/alice/"``);
    ``store`` and ``project`` default to the ones :func:`get_state` uses here.
    """
    env = _env(store)
    project = env.project if project is None else check_id(project, "project id")
    records = env.store.list(SCOPE, project, prefix=WM_STATE_PREFIX + prefix)
    return [{"path": r.name[len(WM_STATE_PREFIX):], "value": r.state, "version": r.version,
             "created_at": r.created_at, "updated_at": r.updated_at} for r in records]


def _check_key(key: Any, what: str) -> str:
    if not isinstance(key, str) or not key:
        raise ValidationError(f"{what}: the key must be a non-empty string, not {key!r}",
                              where="flow user state", reason="bad key")
    return key


def set_flow_user_state(key: str, value: Any) -> None:
    """Set ``key`` of this flow run's user state (kept with the run, gone after it)."""
    what = f"set_flow_user_state({key!r}, ...)"
    key = _check_key(key, what)
    env, request_id = _run(what)
    where = f"flow user state of request {request_id!r}"
    new = ops.copy_json(to_json(value), where=where, path=(key,))

    def fn(record: Record | None) -> Change | None:
        state = dict(record.state) if _live(record) and isinstance(record.state, dict) else {}
        if key in state and ops.json_equal(state[key], new):
            return None
        state[key] = new
        return Change(state=state, operation="set_record", request_id=env.request_id)

    update_with_retries(env.store, "request", request_id, WM_FLOW_USER_STATE, fn, where=where)


def get_flow_user_state(key: str) -> Any:
    """The value of ``key`` in this flow run's user state, or ``None`` if it was not set."""
    what = f"get_flow_user_state({key!r})"
    key = _check_key(key, what)
    env, request_id = _run(what)
    record = env.store.read("request", request_id, WM_FLOW_USER_STATE)
    if not _live(record) or not isinstance(record.state, dict):
        return None
    return record.state.get(key)


def discard_flow_user_state(request_id: str, *, store: Store | None = None) -> bool:
    """Delete the flow user state of one run (for the flow runner to call when a run ends).

    Not needed for isolation (no other run can address it), only to free the space.
    """
    env = _env(store)
    return env.store.delete("request", request_id, WM_FLOW_USER_STATE) is not None
