"""JSON Schema handling for Windmill resource types (used by ``windmill.py``).

Pure functions, no store: check a type name, check that a schema is a valid JSON Schema of the
draft it declares (2020-12 when it declares none), and validate a value against it with errors
that name the JSON path (``$.replicas[1].port``). ``jsonschema`` is imported only when a real
schema is used: importing it can take seconds where optional format packages are installed.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import InvalidIdError, ValidationError
from ..model import ops

__all__ = [
    "BUILTIN_RESOURCE_TYPES",
    "check_schema",
    "check_type_name",
    "json_path",
    "validate_value",
]

#: Resource types that always exist. Both accept any JSON value.
BUILTIN_RESOURCE_TYPES: dict[str, dict] = {
    "any": {"schema": {}, "description": "Any JSON value (built in)"},
    "state": {"schema": {}, "description": "A script's state between runs (built in)"},
}

_TYPE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def check_type_name(name: Any) -> str:
    """Return ``name`` if it can name a resource type, else raise :class:`InvalidIdError`."""
    if not isinstance(name, str) or not _TYPE_NAME.fullmatch(name):
        raise InvalidIdError(f"resource type name {name!r} is not valid: use letters, digits and "
                             f"_ (not starting with a digit), at most 128 characters")
    return name


def _schema_error_at(path: Any) -> str:
    segments = list(path)
    return "/".join(str(s) for s in segments) if segments else "(the top)"


def check_schema(name: str, schema: Any) -> None:
    """Refuse a schema that is not a valid JSON Schema of the draft it declares (default 2020-12)."""
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import Draft202012Validator, validator_for

    where = f"resource type {name!r}"
    if not isinstance(schema, (dict, bool)):
        raise ValidationError(f"{where}: the schema must be a JSON Schema dict, not "
                              f"{type(schema).__name__}", where=where, reason="not a schema")
    ops.check_json(schema, where=where)
    cls = validator_for(schema, default=Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        raise ValidationError(
            f"{where}: the schema is not a valid JSON Schema ({cls.__name__}): at "
            f"{_schema_error_at(exc.absolute_path)}: {exc.message}",
            where=where, path=tuple(exc.absolute_path), reason=exc.message) from None


def json_path(path: Any) -> str:
    """A field path as JSONPath: ``("hosts", 1, "port")`` -> ``$.hosts[1].port``."""
    out = "$"
    for segment in path:
        if isinstance(segment, int):
            out += f"[{segment}]"
        elif isinstance(segment, str) and segment.isidentifier():
            out += f".{segment}"
        else:
            out += f"[{segment!r}]"
    return out


def validate_value(path: str, type_name: str, schema: Any, value: Any) -> None:
    """Raise :class:`ValidationError` (naming the JSON path) unless ``value`` fits ``schema``."""
    if schema == {} or schema is True:
        return  # accepts anything ("any", "state"); spares importing jsonschema, which is slow
    from jsonschema.exceptions import best_match
    from jsonschema.validators import Draft202012Validator, validator_for

    cls = validator_for(schema, default=Draft202012Validator)
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    errors = list(validator.iter_errors(value))
    if not errors:
        return
    error = best_match(errors)
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" \
        if len(errors) > 1 else ""
    where = f"Windmill resource {path!r}"
    raise ValidationError(
        f"{where} does not match resource type {type_name!r}: at "
        f"{json_path(error.absolute_path)}: {error.message}{more}; nothing was stored",
        where=where, path=tuple(error.absolute_path), reason=error.message)
