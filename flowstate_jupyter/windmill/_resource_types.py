"""Resource types: JSON Schemas that resources are validated against on every write."""

from __future__ import annotations

from typing import Any

from ..base.names import WM_RESOURCE_TYPE_PREFIX
from ..errors import ResourceAlreadyExistsError, ResourceNotFoundError, ValidationError
from ..handles.records import update_with_retries
from ..model import ops
from ..model.jsonschema import check_schema
from ..stores.base import Change, Record, Store
from ._schemas import BUILTIN_RESOURCE_TYPES, check_type_name
from ._where import SCOPE, _Env, _env, _live


def create_resource_type(name: str, schema: Any, description: str | None = None, *,
                         replace: bool = False, store: Store | None = None) -> None:
    """Define resource type ``name`` by a JSON Schema; values are validated against it on write.

    The schema itself is checked first (with the draft its ``$schema`` names, else 2020-12).
    Creating a type that exists with the same schema and description does nothing; with a
    different one it raises :class:`ResourceAlreadyExistsError` unless ``replace=True``
    (existing resources are not re-validated). ``"any"`` and ``"state"`` are built in.
    """
    name = check_type_name(name)
    if name in BUILTIN_RESOURCE_TYPES:
        raise ResourceAlreadyExistsError(f"resource type {name!r} is built in and cannot be "
                                         f"redefined; choose another name")
    if description is not None and not isinstance(description, str):
        raise ValidationError(f"resource type {name!r}: description must be a string",
                              where=f"resource type {name!r}", reason="bad description")
    check_schema(schema, where=f"resource type {name!r}")
    env = _env(store)
    new = {"schema": ops.copy_json(schema, where=f"resource type {name!r}"),
           "description": description or ""}

    def fn(record: Record | None) -> Change | None:
        if _live(record):
            if ops.json_equal(record.state, new):
                return None
            if not replace:
                raise ResourceAlreadyExistsError(
                    f"resource type {name!r} already exists with another schema; pass "
                    f"replace=True to redefine it")
        return Change(state=new, operation="set", request_id=env.request_id)

    update_with_retries(env.store, SCOPE, env.project, WM_RESOURCE_TYPE_PREFIX + name, fn,
                        where=f"resource type {name!r}")


def get_resource_type(name: str, *, store: Store | None = None) -> dict:
    """``{"name", "schema", "description"}`` of a resource type (ResourceNotFoundError if
    unknown)."""
    name = check_type_name(name)
    if name in BUILTIN_RESOURCE_TYPES:
        return {"name": name, **ops.copy_json(BUILTIN_RESOURCE_TYPES[name], where=name)}
    env = _env(store)
    record = env.store.read(SCOPE, env.project, WM_RESOURCE_TYPE_PREFIX + name)
    if not _live(record):
        raise ResourceNotFoundError(
            f"resource type {name!r} does not exist in project {env.project!r}; define it with "
            f"create_resource_type({name!r}, schema) or use 'any'")
    return {"name": name, **record.state}


def list_resource_types(*, store: Store | None = None) -> list[dict]:
    """Every resource type (built-in ones first), as :func:`get_resource_type` gives them."""
    env = _env(store)
    out = [{"name": n, **ops.copy_json(t, where=n)} for n, t in BUILTIN_RESOURCE_TYPES.items()]
    for record in env.store.list(SCOPE, env.project, prefix=WM_RESOURCE_TYPE_PREFIX):
        out.append({"name": record.name[len(WM_RESOURCE_TYPE_PREFIX):], **record.state})
    return out


def _type_schema(env: _Env, type_name: str) -> Any:
    if type_name in BUILTIN_RESOURCE_TYPES:
        return BUILTIN_RESOURCE_TYPES[type_name]["schema"]
    record = env.store.read(SCOPE, env.project, WM_RESOURCE_TYPE_PREFIX + type_name)
    if not _live(record):
        raise ValidationError(
            f"resource type {type_name!r} does not exist in project {env.project!r}; define it "
            f"with create_resource_type({type_name!r}, schema) first, or use 'any'",
            where=f"resource type {type_name!r}", reason="unknown resource type")
    return record.state["schema"]
