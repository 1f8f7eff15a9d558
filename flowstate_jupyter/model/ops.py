"""Pure state operations on plain JSON dicts (docs/concepts.md, 'State operations').

Everything here works on JSON values only: ``dict`` with ``str`` keys, ``list``, ``str``,
``int``, finite ``float``, ``bool`` and ``None``. No I/O and no pydantic: the typed layer
(``schema.py``) validates the result, the stores keep it.

Every operation returns a NEW dict and never mutates its input. Only what changes is copied:
unchanged top-level values are shared between the old and the new state, so treat states as
immutable. Values taken from the caller are checked (``check_json``) and deep-copied in the
same pass, so a set, a datetime or NaN is refused before anything is stored, and mutating the
caller's object afterwards cannot reach the stored state.
"""

from __future__ import annotations

import math
from typing import Any

from ..base.jsonvalues import check_json, check_text, copy_json, format_path, json_equal
from ..base.text import short
from ..errors import ValidationError

__all__ = [
    "OPERATIONS",
    "check_json",
    "copy_json",
    "delete_record",
    "format_path",
    "increment",
    "json_equal",
    "patch",
    "push",
    "replace",
    "set_record",
]

#: Operation names as recorded in change events and history
#: (docs/concepts.md, 'Events, history and live updates').
OPERATIONS: tuple[str, ...] = (
    "patch", "set", "increment", "push", "set_record", "delete_record", "atomic",
)

_MISSING = object()


# ---------------------------------------------------------------------------- operations

def _need_dict(value: Any, *, where: str, what: str) -> None:
    """Refuse a non-dict argument where a dict of fields is expected."""
    if not isinstance(value, dict):
        raise ValidationError(
            f"{where}: {what} must be a dict of field names to values, "
            f"got {type(value).__name__} {short(value, 60)}",
            where=where, reason=f"{what} is not a dict")


def _need_field_name(field: Any, *, where: str) -> None:
    """Refuse a field name that is not a str of valid Unicode text."""
    if type(field) is not str:
        raise ValidationError(
            f"{where}: field names must be str, got {short(field, 60)} ({type(field).__name__})",
            where=where, path=(field,), reason="field name is not a str")
    if not field.isascii():
        check_text(field, where=where, what=f"field name {short(field, 60)}")


def _need_record_key(field: str, key: Any, *, where: str) -> None:
    """Refuse a record key that is not a str (JSON object keys are strings)."""
    if type(key) is not str:
        raise ValidationError(
            f"{where}: record keys of field '{field}' must be str, "
            f"got {short(key, 60)} ({type(key).__name__})",
            where=where, path=(field,), reason="record key is not a str")
    if not key.isascii():
        check_text(key, where=where, what=f"record key {short(key, 60)} of field '{field}'")


def _holds(value: Any) -> str:
    """``"str 'chat'"``: the type and value a field currently holds, for messages."""
    return "None" if value is None else f"{type(value).__name__} {short(value, 60)}"


def patch(state: dict, update: dict, *, where: str) -> dict:
    """Merge the top-level fields of ``update`` into ``state`` (shallow merge)."""
    _need_dict(update, where=where, what="the update")
    new = dict(state)
    new.update(copy_json(update, where=where))
    return new


def replace(state: dict, new: dict, *, where: str) -> dict:
    """The "set" operation: ``new`` (checked and copied) becomes the whole state.

    ``state`` is unused; it is accepted so every operation has the same shape.
    """
    _need_dict(new, where=where, what="the new state")
    return copy_json(new, where=where)


_NUMBERS = (int, float)  # exact types: bool is not a number here


def increment(state: dict, increments: dict, *, where: str) -> dict:
    """Add each number in ``increments`` to its field; a missing field counts as 0.

    Both the current value and the increment must be int or float (bool is refused);
    int + int stays int. A float result that overflows to infinity is refused.
    """
    _need_dict(increments, where=where, what="the increments")
    new = dict(state)
    for field, by in increments.items():
        _need_field_name(field, where=where)
        if type(by) is not int:  # the common case needs no copy or check
            by = copy_json(by, where=where, path=(field,))
        if type(by) not in _NUMBERS:
            raise ValidationError(
                f"{where}: cannot increment field '{field}' by {_holds(by)}; "
                f"the increment must be an int or float",
                where=where, path=(field,), reason="increment is not a number")
        current = state.get(field, 0)
        if type(current) not in _NUMBERS:
            raise ValidationError(
                f"{where}: cannot increment field '{field}': it holds {_holds(current)}, "
                f"not a number; set it to a number first",
                where=where, path=(field,), reason="field is not a number")
        try:
            result = current + by
        except OverflowError:  # a float plus an int too large for a float
            result = math.inf
        if type(result) is float and not math.isfinite(result):
            raise ValidationError(
                f"{where}: incrementing field '{field}' overflows to {result}",
                where=where, path=(field,), reason="increment overflows")
        new[field] = result
    return new


def push(state: dict, field: str, value: Any, *, where: str) -> dict:
    """Append ``value`` to the list in ``field``; a missing field becomes a new list.

    A field that holds anything but a list (``None`` included) is refused.
    """
    _need_field_name(field, where=where)
    current = state.get(field, _MISSING)
    if current is _MISSING:
        current = []
    elif not isinstance(current, list):
        raise ValidationError(
            f"{where}: cannot push to field '{field}': it holds {_holds(current)}, not a list",
            where=where, path=(field,), reason="field is not a list")
    item = copy_json(value, where=where, path=(field, len(current)))
    new = dict(state)
    new[field] = [*current, item]
    return new


def set_record(state: dict, field: str, key: str, value: Any, *, where: str) -> dict:
    """Set ``key`` of the dict in ``field`` to ``value``; a missing field becomes a new dict."""
    _need_field_name(field, where=where)
    _need_record_key(field, key, where=where)
    current = state.get(field, _MISSING)
    if current is _MISSING:
        current = {}
    elif not isinstance(current, dict):
        raise ValidationError(
            f"{where}: cannot set a record in field '{field}': it holds {_holds(current)}, "
            f"not a dict",
            where=where, path=(field,), reason="field is not a dict")
    item = copy_json(value, where=where, path=(field, key))
    new = dict(state)
    new[field] = {**current, key: item}
    return new


def delete_record(state: dict, field: str, key: str, *, where: str) -> dict:
    """Remove ``key`` from the dict in ``field``; a missing key or field changes nothing.

    The result is always a new dict (equal to ``state`` when nothing was removed).
    """
    _need_field_name(field, where=where)
    _need_record_key(field, key, where=where)
    current = state.get(field, _MISSING)
    if current is _MISSING:
        return dict(state)
    if not isinstance(current, dict):
        raise ValidationError(
            f"{where}: cannot delete a record from field '{field}': it holds "
            f"{_holds(current)}, not a dict",
            where=where, path=(field,), reason="field is not a dict")
    new = dict(state)
    if key in current:
        new[field] = {k: v for k, v in current.items() if k != key}
    return new
