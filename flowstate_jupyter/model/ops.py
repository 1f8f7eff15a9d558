"""Pure state operations on plain JSON dicts (DESIGN §4, §8).

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

import datetime
import decimal
import enum
import math
from typing import Any

from ..errors import ValidationError

__all__ = [
    "OPERATIONS", "check_json", "copy_json", "json_equal", "format_path",
    "patch", "replace", "increment", "push", "set_record", "delete_record",
]

#: Operation names as recorded in change events and history (DESIGN §8).
OPERATIONS: tuple[str, ...] = (
    "patch", "set", "increment", "push", "set_record", "delete_record", "atomic",
)

# Exact types that are JSON as they are and need no further look.
_PLAIN = frozenset({str, int, bool, type(None)})
_MISSING = object()


class _NotJSON(Exception):
    """Internal signal from ``_clone``: the value is not JSON (``check_json`` says why)."""


# ---------------------------------------------------------------------------- paths

def format_path(path: tuple[Any, ...]) -> str:
    """Render a field path for messages: ``('steps', 2, 'title')`` -> ``steps[2].title``.

    Integers are list indexes; a string segment that is not an identifier is quoted
    (``meta['my key']``) so the path stays unambiguous.
    """
    out = []
    for i, seg in enumerate(path):
        if isinstance(seg, int) and not isinstance(seg, bool):
            out.append(f"[{seg}]")
        elif i == 0:
            out.append(str(seg))
        elif isinstance(seg, str) and seg.isidentifier():
            out.append(f".{seg}")
        else:
            out.append(f"[{seg!r}]")
    return "".join(out)


def _short(value: Any, limit: int = 60) -> str:
    """``repr`` cut to ``limit`` characters, for messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------- JSON checks

def _unusual(value: Any) -> Any:
    """Plain JSON equivalent of a subclass of dict/list/str/int/float, else raise ``_NotJSON``.

    Reached only for values whose exact type is not plain JSON, so the common case never pays
    for it. Enums are refused (their ``.value`` is what belongs in state).
    """
    if isinstance(value, enum.Enum):
        raise _NotJSON
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):  # bool is handled by the caller (exact type)
        return int.__int__(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return float.__float__(value)
        raise _NotJSON
    raise _NotJSON


def _clone(value: Any) -> Any:
    """Deep copy of a JSON value as plain dict/list/scalars; raise ``_NotJSON`` on anything else."""
    t = type(value)
    if t in _PLAIN:
        return value
    if t is float:
        if value - value == 0.0:  # false for NaN and +-inf
            return value
        raise _NotJSON
    if t is dict or (t is not list and isinstance(value, dict)):
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                raise _NotJSON
            out[k] = v if type(v) in _PLAIN else _clone(v)
        return out
    if t is list or isinstance(value, list):
        return [v if type(v) in _PLAIN else _clone(v) for v in value]
    return _unusual(value)


def _find_bad(value: Any) -> tuple[tuple[Any, ...], Any, bool] | None:
    """Locate the first non-JSON part: ``(relative path, offending value, is_a_key)`` or None."""
    t = type(value)
    if t in _PLAIN:
        return None
    if t is float:
        return None if value - value == 0.0 else ((), value, False)
    if isinstance(value, dict):
        for k, v in value.items():
            if type(k) is not str:
                return (), k, True
            if type(v) not in _PLAIN:
                bad = _find_bad(v)
                if bad is not None:
                    return (k, *bad[0]), bad[1], bad[2]
        return None
    if isinstance(value, list):
        for i, v in enumerate(value):
            if type(v) not in _PLAIN:
                bad = _find_bad(v)
                if bad is not None:
                    return (i, *bad[0]), bad[1], bad[2]
        return None
    try:
        _unusual(value)
    except _NotJSON:
        return (), value, False
    return None


def _what_and_fix(value: Any) -> tuple[str, str]:
    """Describe a non-JSON value and say what to store instead."""
    if isinstance(value, float):
        return ("NaN" if math.isnan(value) else "infinity",
                "store None or a finite number instead")
    if isinstance(value, (set, frozenset)):
        return "a set", "use a list"
    if isinstance(value, tuple):
        return "a tuple", "use a list"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "bytes", "decode to str first (for binary data, e.g. base64)"
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return f"a {type(value).__name__}", "store an ISO string, e.g. value.isoformat()"
    if isinstance(value, datetime.timedelta):
        return "a timedelta", "store seconds, e.g. value.total_seconds()"
    if isinstance(value, decimal.Decimal):
        return "a Decimal", "use float(value), or str(value) to keep every digit"
    if isinstance(value, enum.Enum):
        return f"an enum member ({type(value).__name__})", "store its .value"
    if hasattr(type(value), "model_dump"):
        return (f"a pydantic model ({type(value).__name__})",
                "use value.model_dump(mode='json')")
    return (f"a {type(value).__name__}",
            "convert it to dict, list, str, int, float, bool or None")


def check_json(value: Any, *, where: str, path: tuple[Any, ...] = ()) -> None:
    """Refuse anything that is not JSON, naming ``where`` and the field path.

    Allowed: dict with str keys, list, str, int, finite float, bool, None (subclasses of
    those, except enums, count as their base type). A plain recursive type check, cheap
    enough to run on every write. ``path`` is where ``value`` sits inside the state.
    """
    try:
        bad = _find_bad(value)
    except RecursionError:  # a cycle (a list that contains itself) or absurd depth
        raise ValidationError(f"{where}: the value is circular or nested too deeply to store; "
                              f"pass plain, finite JSON data", where=where, path=tuple(path),
                              reason="nested too deeply") from None
    if bad is None:
        return
    rel, offender, is_key = bad
    full = tuple(path) + rel
    subject = f"field '{format_path(full)}'" if full else "the value"
    if is_key:
        reason = f"key {offender!r} ({type(offender).__name__}) is not JSON"
        message = (f"{where}: {subject} has key {_short(offender)} "
                   f"({type(offender).__name__}), which is not JSON; "
                   f"object keys must be str, e.g. str(key)")
    else:
        what, fix = _what_and_fix(offender)
        reason = f"{what} is not JSON"
        holds = "holds" if full else "is"
        message = f"{where}: {subject} {holds} {what}, which is not JSON; {fix}"
    raise ValidationError(message, where=where, path=full, reason=reason)


def copy_json(value: Any, *, where: str, path: tuple[Any, ...] = ()) -> Any:
    """Check ``value`` is JSON and return a deep copy made of plain dicts, lists and scalars.

    One pass in the common case; on failure raises the same ``ValidationError`` as
    ``check_json``.
    """
    try:
        return _clone(value)
    except _NotJSON:
        check_json(value, where=where, path=path)
        raise AssertionError("check_json accepted a value _clone refused")  # pragma: no cover
    except RecursionError:
        raise ValidationError(f"{where}: the value is nested too deeply to store",
                              where=where, path=path, reason="nested too deeply") from None


# ---------------------------------------------------------------------------- equality

def json_equal(a: Any, b: Any) -> bool:
    """Deep equality of JSON values where ``True != 1`` and ``False != 0`` but ``1 == 1.0``.

    ``==`` does the work; only when it says equal do we walk the values looking for a bool
    facing a number. The walk skips shared sub-values (``is``), which is what the operations
    here produce for unchanged fields, so the common no-op check stays cheap.
    """
    if a is b:
        return True
    if not a == b:
        return False
    return _same_bools(a, b)


def _same_bools(a: Any, b: Any) -> bool:
    """Given ``a == b``: no position holds a bool on one side and a non-bool on the other."""
    if a is b:
        return True
    ta, tb = type(a), type(b)
    if ta is bool or tb is bool:
        return ta is tb
    if isinstance(a, dict):
        return all(_same_bools(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return all(_same_bools(x, y) for x, y in zip(a, b))
    return True


# ---------------------------------------------------------------------------- operations

def _need_dict(value: Any, *, where: str, what: str) -> None:
    """Refuse a non-dict argument where a dict of fields is expected."""
    if not isinstance(value, dict):
        raise ValidationError(
            f"{where}: {what} must be a dict of field names to values, "
            f"got {type(value).__name__} {_short(value)}",
            where=where, reason=f"{what} is not a dict")


def _need_field_name(field: Any, *, where: str) -> None:
    """Refuse a field name that is not a str."""
    if type(field) is not str:
        raise ValidationError(
            f"{where}: field names must be str, got {_short(field)} ({type(field).__name__})",
            where=where, path=(field,), reason="field name is not a str")


def _need_record_key(field: str, key: Any, *, where: str) -> None:
    """Refuse a record key that is not a str (JSON object keys are strings)."""
    if type(key) is not str:
        raise ValidationError(
            f"{where}: record keys of field '{field}' must be str, "
            f"got {_short(key)} ({type(key).__name__})",
            where=where, path=(field,), reason="record key is not a str")


def _holds(value: Any) -> str:
    """``"str 'chat'"``: the type and value a field currently holds, for messages."""
    return "None" if value is None else f"{type(value).__name__} {_short(value)}"


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
        result = current + by
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
