"""Windmill resources: typed JSON values at paths, with ``$var:`` / ``$res:`` references."""

from __future__ import annotations

from typing import Any

from ..base.jsonvalues import dump_json
from ..base.names import WM_RESOURCE_PREFIX, WM_STATE_PREFIX
from ..base.text import short
from ..errors import FlowStateError, InvalidIdError, ResourceNotFoundError, ValidationError
from ..handles.records import to_json, update_with_retries
from ..model import ops
from ..model.jsonschema import json_path
from ..stores.base import Change, Record
from ._paths import _check_write, _resource_path, _variable_path
from ._resource_types import _type_schema
from ._schemas import check_type_name, validate_value
from ._states import list_states, set_state
from ._variables import _lookup_variable
from ._where import SCOPE, _Env, _env, _live


class _TypeChanged(Exception):
    """Internal: a resource's type changed between planning a write and committing it."""


def set_resource(path: str, value: Any, resource_type: str = "any") -> None:
    """Create or update the resource at ``path``, validating ``value`` against its type.

    A new resource gets ``resource_type``; an existing one keeps its type (as in Windmill), and
    naming a different type than ``"any"`` for it is refused. ``resource_type="state"`` (or a
    path that already holds a state) writes the state at that path. A value that does not match
    the type's JSON Schema raises :class:`ValidationError` naming the JSON path (``$.port``) and
    nothing is stored. ``u/<other user>/...`` raises :class:`AccessDeniedError`.
    """
    path = _resource_path(path)
    if not isinstance(resource_type, str):
        raise InvalidIdError(f"resource_type must be a string, not {type(resource_type).__name__}")
    env = _env()
    where = f"Windmill resource {path!r}"
    _check_write(path, env.user, "resource")
    new_value = ops.copy_json(to_json(value), where=where)
    dump_json(new_value, where, "value")  # valid Unicode too, before the schema looks at it
    name = WM_RESOURCE_PREFIX + path
    for _attempt in range(5):
        record = env.store.read(SCOPE, env.project, name)
        if not _live(record):
            has_state = _live(env.store.read(SCOPE, env.project, WM_STATE_PREFIX + path))
            if resource_type == "state" or (resource_type == "any" and has_state):
                set_state(new_value, path)
                return
            if has_state:
                raise ValidationError(
                    f"{where}: that path holds a state; states and resources share one "
                    f"namespace, so pick another path or delete the state",
                    where=where, reason="path holds a state")
            type_name = check_type_name(resource_type)
        else:
            type_name = record.state["resource_type"]
            if resource_type not in ("any", type_name):
                raise ValidationError(
                    f"{where} is of type {type_name!r}, not {resource_type!r}; a resource keeps "
                    f"the type it was created with (delete_resource it first to change it)",
                    where=where, reason="resource type mismatch")
        validate_value(path, type_name, _type_schema(env, type_name), new_value)
        planned = type_name

        def fn(current: Record | None) -> Change | None:
            current_type = current.state["resource_type"] if _live(current) else None
            if _live(current) != _live(record) or (current_type or planned) != planned:
                raise _TypeChanged
            state = {"resource_type": planned, "value": new_value}
            if _live(current) and ops.json_equal(current.state, state):
                return None
            return Change(state=state, operation="set", request_id=env.request_id)

        try:
            update_with_retries(env.store, SCOPE, env.project, name, fn, where=where)
            return
        except _TypeChanged:
            continue
    raise FlowStateError(f"{where}: other writers kept recreating it with other types; retry")


def get_resource(path: str, none_if_undefined: bool = False,
                 interpolated: bool = True) -> dict | None:
    """The value of the resource at ``path`` (``$res:`` / ``res://`` prefixes accepted).

    A missing resource raises :class:`ResourceNotFoundError`, or returns ``None`` with
    ``none_if_undefined=True``. With ``interpolated=True`` (the default, as in ``wmill``),
    strings ``"$var:<path>"`` and ``"$res:<path>"`` inside the value (in objects and lists, at any
    depth) are replaced by that variable's or resource's value; a reference that cannot be
    resolved raises (even with ``none_if_undefined``, which is about ``path`` itself), and so
    does a cycle of references. A path that holds a state reads as the state.
    """
    path = _resource_path(path)
    env = _env()
    value, found = _read_resource(env, path)
    if not found:
        if none_if_undefined:
            return None
        raise ResourceNotFoundError(
            f"resource {path!r} not found in project {env.project!r}; create it with "
            f"set_resource({path!r}, value, resource_type)")
    if interpolated:
        value = _interpolate(env, value, (path,), ())
    return value


def _read_resource(env: _Env, path: str) -> tuple[Any, bool]:
    record = env.store.read(SCOPE, env.project, WM_RESOURCE_PREFIX + path)
    if _live(record):
        return record.state.get("value"), True
    state = env.store.read(SCOPE, env.project, WM_STATE_PREFIX + path)
    if _live(state):
        return state.state, True
    return None, False


def _interpolate(env: _Env, value: Any, chain: tuple[str, ...], at: tuple) -> Any:
    if isinstance(value, str):
        if value.startswith("$var:"):
            return _lookup_variable(env, _variable_path(value), f"{chain[-1]} at {json_path(at)}")
        if value.startswith("$res:"):
            target = _resource_path(value)
            if target in chain:
                cycle = " -> ".join((*chain, target))
                raise ValidationError(f"resource references form a cycle: {cycle}",
                                      where=f"Windmill resource {chain[0]!r}", path=at,
                                      reason="reference cycle")
            resolved, found = _read_resource(env, target)
            if not found:
                raise ResourceNotFoundError(
                    f"resource {chain[-1]!r} refers at {json_path(at)} to '$res:{target}', "
                    f"which does not exist in project {env.project!r}")
            return _interpolate(env, resolved, (*chain, target), ())
        return value
    if isinstance(value, dict):
        return {k: _interpolate(env, v, chain, (*at, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(env, v, chain, (*at, i)) for i, v in enumerate(value)]
    return value


def list_resources(resource_type: str | None = None, page: int | None = None,
                   per_page: int | None = None) -> list[dict]:
    """Resources of the project sorted by path, states included (as type ``"state"``).

    ``resource_type`` keeps one type, or several separated by commas. Each item:
    ``{"path", "resource_type", "value", "description", "version", "created_at",
    "updated_at"}``. ``page`` (from 1) and ``per_page`` (default 100 when ``page`` is given)
    paginate; with neither, everything is returned.
    """
    if resource_type is not None and not isinstance(resource_type, str):
        raise InvalidIdError(f"list_resources: resource_type must be a string such as "
                             f"'postgresql,state', not {type(resource_type).__name__}")
    for label, number in (("page", page), ("per_page", per_page)):
        if number is not None and (not isinstance(number, int) or isinstance(number, bool)
                                   or number < 1):
            raise ValidationError(f"list_resources: {label} must be an int >= 1, not "
                                  f"{short(number, 40)}", where="list_resources",
                                  reason=f"bad {label}")
    env = _env()
    wanted = None if resource_type is None else {t.strip() for t in resource_type.split(",")}
    items: list[dict] = []
    if wanted is None or wanted - {"state"}:
        for r in env.store.list(SCOPE, env.project, prefix=WM_RESOURCE_PREFIX):
            rtype = r.state.get("resource_type")
            if wanted is None or rtype in wanted:
                items.append({"path": r.name[len(WM_RESOURCE_PREFIX):], "resource_type": rtype,
                              "value": r.state.get("value"), "description": "",
                              "version": r.version, "created_at": r.created_at,
                              "updated_at": r.updated_at})
    if wanted is None or "state" in wanted:
        for s in list_states(store=env.store):
            items.append({"path": s["path"], "resource_type": "state", "value": s["value"],
                          "description": "", "version": s["version"],
                          "created_at": s["created_at"], "updated_at": s["updated_at"]})
    items.sort(key=lambda item: item["path"])
    if page is None and per_page is None:
        return items
    page, per_page = page or 1, per_page or 100
    return items[(page - 1) * per_page: page * per_page]


def delete_resource(path: str) -> bool:
    """Delete the resource at ``path``; True if there was one (the usual write rules apply)."""
    path = _resource_path(path)
    env = _env()
    _check_write(path, env.user, "resource")
    return env.store.delete(SCOPE, env.project, WM_RESOURCE_PREFIX + path,
                            request_id=env.request_id) is not None
