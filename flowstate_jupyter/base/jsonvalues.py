"""The JSON value rules, kept once: what may be stored, how it is copied, compared and encoded.

A stored value is JSON and nothing else: ``dict`` with ``str`` keys, ``list``, ``str``, ``int``,
finite ``float``, ``bool`` and ``None`` (subclasses of those, except enums, count as their base
type). NaN and infinities, sets, tuples, bytes, datetimes, models, circular structures, nesting
deeper than :data:`MAX_DEPTH` levels and strings (values or keys) with lone surrogates are
refused with a :class:`ValidationError` that names where, the field path and what to store
instead, before anything is written. Every layer checks values through here; text that is not a
JSON value (a resource's content) through :func:`check_text`, and JSON text that arrives from
outside (a magic line, an import) through :func:`load_json`.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import json
import math
from collections.abc import Callable
from typing import Any

from ..errors import ValidationError
from .names import record_where
from .text import short

__all__ = ["check_json", "check_text", "copy_json", "dump_json", "format_path", "json_equal",
           "load_json"]

_PLAIN = frozenset({int, bool, type(None)})  # str is plain when it is valid Unicode text


class _NotJSON(Exception):
    """Internal signal from ``_clone``: the value is not JSON (``check_json`` says why)."""


class _TooDeep(Exception):
    """Internal signal: containers nest deeper than :data:`MAX_DEPTH`."""


#: How deeply lists and objects may nest in a stored value. pydantic serializes about 254
#: levels and Python's JSON parser about 1,000: a deeper value could be stored but not read
#: back through a typed handle, so it is refused before anything is written.
MAX_DEPTH = 200


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


# ---------------------------------------------------------------------------- JSON checks

def _unusual(value: Any) -> Any:
    """Plain JSON equivalent of a subclass of dict/list/str/int/float, else raise ``_NotJSON``.

    Reached only for values whose exact type is not plain JSON, so the common case never pays
    for it. Enums are refused (their ``.value`` is what belongs in state).
    """
    if isinstance(value, enum.Enum):
        raise _NotJSON
    if isinstance(value, str):
        if _text(value):
            return str.__str__(value)
        raise _NotJSON
    if isinstance(value, int):  # bool is handled by the caller (exact type)
        return int.__int__(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return float.__float__(value)
        raise _NotJSON
    raise _NotJSON


def _text(value: str) -> bool:
    """True when ``value`` is valid Unicode text (no lone surrogate such as ``"\\ud800"``)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(value: str, *, where: str, what: str = "text") -> None:
    """Refuse text that is not valid Unicode (a lone surrogate), which no store can keep: for
    text that is not a JSON value, such as a resource's content."""
    if not _text(value):
        bad = next(i for i, c in enumerate(value) if "\ud800" <= c <= "\udfff")
        raise ValidationError(f"{where}: {what} holds a lone surrogate at character {bad} "
                              f"({value[bad]!r}), which is not valid Unicode text; decode bytes "
                              f"properly, or pair the surrogates", where=where,
                              reason="lone surrogate")


def _clone(value: Any, depth: int = 0) -> Any:
    """Deep copy of a JSON value as plain dict/list/scalars; raise ``_NotJSON`` on anything else."""
    t = type(value)
    if t in _PLAIN:
        return value
    if t is str:
        if _text(value):
            return value
        raise _NotJSON
    if t is float:
        if value - value == 0.0:  # false for NaN and +-inf
            return value
        raise _NotJSON
    if depth >= MAX_DEPTH and isinstance(value, (dict, list)):
        raise _TooDeep
    if t is dict or (t is not list and isinstance(value, dict)):
        out = {}
        for k, v in value.items():
            if type(k) is not str or not (k.isascii() or _text(k)):
                raise _NotJSON
            out[k] = v if type(v) in _PLAIN or (type(v) is str and v.isascii()) \
                else _clone(v, depth + 1)
        return out
    if t is list or isinstance(value, list):
        return [v if type(v) in _PLAIN or (type(v) is str and v.isascii())
                else _clone(v, depth + 1) for v in value]
    return _unusual(value)


def _find_bad(value: Any, depth: int = 0) -> tuple[tuple[Any, ...], Any, bool] | None:
    """Locate the first non-JSON part: ``(relative path, offending value, is_a_key)`` or None."""
    t = type(value)
    if t in _PLAIN:
        return None
    if t is str:
        return None if _text(value) else ((), value, False)
    if t is float:
        return None if value - value == 0.0 else ((), value, False)
    if depth >= MAX_DEPTH and isinstance(value, (dict, list)):
        raise _TooDeep
    if isinstance(value, dict):
        for k, v in value.items():
            if type(k) is not str or not _text(k):
                return (), k, True
            if type(v) not in _PLAIN:
                bad = _find_bad(v, depth + 1)
                if bad is not None:
                    return (k, *bad[0]), bad[1], bad[2]
        return None
    if isinstance(value, list):
        for i, v in enumerate(value):
            if type(v) not in _PLAIN:
                bad = _find_bad(v, depth + 1)
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
    if isinstance(value, str) and not isinstance(value, enum.Enum) and not _text(value):
        return ("text with a lone surrogate (not valid Unicode)",
                "store valid text: decode bytes properly, or pair the surrogates")
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
        bad = _find_bad(value, len(path))
    except (RecursionError, _TooDeep):  # a cycle (a list that contains itself) or depth
        raise _too_deep(where, path) from None
    if bad is None:
        return
    rel, offender, is_key = bad
    full = tuple(path) + rel
    subject = f"field '{format_path(full)}'" if full else "the value"
    if is_key and isinstance(offender, str):
        reason = f"key {short(offender, 60)} is not valid Unicode text"
        message = (f"{where}: {subject} has key {short(offender, 60)}, which holds a lone "
                   f"surrogate (not valid Unicode text); use valid text for keys")
    elif is_key:
        reason = f"key {short(offender, 60)} ({type(offender).__name__}) is not JSON"
        message = (f"{where}: {subject} has key {short(offender, 60)} "
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
    except _NotJSON as refused:
        check_json(value, where=where, path=path)
        raise AssertionError(  # pragma: no cover
            "check_json accepted a value _clone refused") from refused
    except RecursionError:
        raise ValidationError(f"{where}: the value is nested too deeply to store",
                              where=where, path=path, reason="nested too deeply") from None
    except _TooDeep:
        raise _too_deep(where, path) from None


def _too_deep(where: str, path: tuple[Any, ...]) -> ValidationError:
    return ValidationError(f"{where}: the value is circular or nests lists and objects more "
                           f"than {MAX_DEPTH} levels deep; store flatter JSON data",
                           where=where, path=tuple(path), reason="nested too deeply")


# ---------------------------------------------------------------------------- equality

def json_equal(a: Any, b: Any) -> bool:
    """Deep equality of JSON values where ``True != 1`` and ``False != 0`` but ``1 == 1.0``.

    ``==`` does the work; only when it says equal do we walk the values looking for a bool
    facing a number. The walk skips shared sub-values (``is``), which is what the operations
    here produce for unchanged fields, so the common no-op check stays cheap.
    """
    if a is b:
        return True
    if a != b:
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


# ---------------------------------------------------------------------------- encoding

def _make_encoder() -> Callable[[Any], str]:
    """The fastest strict JSON encoder at hand: compact-ish, UTF-8 text, NaN refused.

    ``json.JSONEncoder.encode`` builds a new C encoder on every call; building it once saves
    about half the cost of encoding a small state, and states are encoded on every write.
    Circular structures surface as ``RecursionError`` (there is no marker dict to share
    safely between threads).
    """
    from json.encoder import encode_basestring

    # Undocumented (typeshed does not declare it), hence getattr; None without the accelerator.
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if c_make_encoder is None:  # a Python built without the _json accelerator
        return json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode

    def default(value: Any) -> Any:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

    encoder = c_make_encoder(None, default, encode_basestring, None, ": ", ", ", False, False,
                             False)
    return lambda value: "".join(encoder(value, 0))


_encode = _make_encoder()


def dump_json(value: Any, where: str | tuple[str, str, str], what: str = "state") -> str:
    """``value`` as JSON text; :class:`ValidationError` (nothing stored) if it is not JSON.

    ``where`` names the record in the error: a text, or its key (named only when needed).

    NaN and infinities, sets, datetimes, bytes, circular structures and strings with lone
    surrogates are refused here so that every backend refuses them the same way, before
    anything is written.
    """
    try:
        text = _encode(value)
        if not text.isascii():
            text.encode("utf-8")  # a lone surrogate ("\ud800") is not valid Unicode text
        return text
    except (TypeError, ValueError, RecursionError) as exc:  # UnicodeEncodeError: a ValueError
        if isinstance(exc, RecursionError):
            exc = ValueError("circular or nested too deeply")
        if isinstance(where, tuple):
            where = record_where(*where)
        raise ValidationError(
            f"{where}: {what} is not JSON ({exc}); use only dicts with string keys, lists, "
            f"strings of valid Unicode, finite numbers, booleans and None",
            where=where, reason=f"not JSON: {exc}") from None


# ---------------------------------------------------------------------------- decoding

#: What :func:`load_json` puts in ``ValidationError.reason`` when the text is not JSON syntax
#: (as opposed to JSON that breaks a value rule), so a caller may try another reading.
NOT_JSON_SYNTAX = "not JSON syntax"


class _Constant(ValueError):
    """Internal: the text used NaN or Infinity, which Python's parser accepts and JSON has not."""


def _refuse_constant(name: str) -> Any:
    raise _Constant(name)


def load_json(text: str, *, where: str, what: str = "value") -> Any:
    """Parse JSON ``text`` by the value rules; :class:`ValidationError` naming ``where`` if not.

    Stricter than ``json.loads``: ``NaN`` and ``Infinity`` are not JSON, a number too large for
    a float (``1e400``) or with more digits than Python converts (``int`` max str digits) is
    refused, and so are nesting too deep to handle and strings with lone surrogates
    (``"\\ud800"``). Syntax errors have ``reason ==`` :data:`NOT_JSON_SYNTAX` and say the
    line and column.
    """
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        at = f"line {exc.lineno} column {exc.colno}" if "\n" in text else f"column {exc.colno}"
        raise ValidationError(f"{where}: {what} is not JSON ({exc.msg} at {at})",
                              where=where, reason=NOT_JSON_SYNTAX) from None
    except _Constant as exc:
        raise ValidationError(f"{where}: {what} is not JSON ({exc} is not a JSON number; use "
                              f"null or a finite number)", where=where,
                              reason=NOT_JSON_SYNTAX) from None
    except RecursionError:
        raise ValidationError(f"{where}: {what} is nested too deeply to handle; flatten it",
                              where=where, reason="nested too deeply") from None
    except ValueError:  # an integer with more digits than int() converts (4,300 by default)
        raise ValidationError(f"{where}: {what} has a number with too many digits to convert; "
                              f"store it as a string", where=where,
                              reason="number too long") from None
    check_json(value, where=where)  # 1e400 parses as infinity
    dump_json(value, where, what)  # lone surrogates, and nesting too deep to encode
    return value
