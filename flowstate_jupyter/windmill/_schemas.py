"""Windmill resource types' names and the check of a resource's value against its type.

The JSON Schema rules themselves (references stay inside the schema, regular expressions run in
linear time) live in ``model/jsonschema.py``; this module adds what is Windmill's: type names,
the built-in types and the messages a resource write gets.
"""

from __future__ import annotations

import re
from typing import Any

from ..base.text import clip, short
from ..errors import InvalidIdError, ValidationError
from ..model.jsonschema import json_path, schema_errors

#: Resource types that always exist. Both accept any JSON value.
BUILTIN_RESOURCE_TYPES: dict[str, dict] = {
    "any": {"schema": {}, "description": "Any JSON value (built in)"},
    "state": {"schema": {}, "description": "A script's state between runs (built in)"},
}

_TYPE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def check_type_name(name: Any) -> str:
    """Return ``name`` if it can name a resource type, else raise :class:`InvalidIdError`."""
    if not isinstance(name, str) or not _TYPE_NAME.fullmatch(name):
        raise InvalidIdError(f"resource type name {short(name, 60)} is not valid: use letters, "
                             f"digits and _ (not starting with a digit), at most 128 characters")
    return name


def validate_value(path: str, type_name: str, schema: Any, value: Any) -> None:
    """Raise :class:`ValidationError` (naming the JSON path) unless ``value`` fits ``schema``.

    A type stored before the rules of ``model/jsonschema.py`` held is refused here with a
    message that says to redefine it.
    """
    import re2
    from jsonschema.exceptions import best_match
    from referencing.exceptions import Unresolvable

    where = f"Windmill resource {path!r}"
    try:
        errors = schema_errors(schema, value)
    except (Unresolvable, re2.error) as exc:
        raise ValidationError(
            f"{where}: resource type {type_name!r} cannot be used ({type(exc).__name__}: "
            f"{clip(str(exc), 120)}): it refers outside its schema or has a pattern that "
            f"cannot run in linear time; redefine it with create_resource_type({type_name!r}, "
            f"schema, replace=True); nothing was stored",
            where=where, reason="unusable resource type") from None
    except RecursionError:
        raise ValidationError(f"{where}: the value is nested too deeply to validate; nothing "
                              f"was stored", where=where, reason="nested too deeply") from None
    if not errors:
        return
    error = best_match(errors)
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" \
        if len(errors) > 1 else ""
    raise ValidationError(
        f"{where} does not match resource type {type_name!r}: at "
        f"{json_path(error.absolute_path)}: {clip(error.message)}{more}; nothing was "
        f"stored", where=where, path=tuple(error.absolute_path), reason=error.message)
