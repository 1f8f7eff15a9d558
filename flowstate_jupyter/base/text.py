"""Short texts of values, for error messages and one-line summaries."""

from __future__ import annotations

import json
import reprlib
from typing import Any


def short(value: Any, limit: int = 80, *, as_json: bool = False) -> str:
    """``repr(value)`` (or its compact JSON text) cut to ``limit`` characters, ending in ``...``
    when cut. Cheap and safe for any value: a huge string or list is not rendered whole, and a
    deeply nested or circular one does not recurse without end."""
    text = None
    if as_json:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError, RecursionError):
            text = None
    if text is None:
        text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reprs(limit: int) -> reprlib.Repr:
    shortener = reprlib.Repr()
    shortener.maxlevel = 6
    shortener.maxstring = shortener.maxother = limit
    shortener.maxlist = shortener.maxtuple = shortener.maxdict = shortener.maxset = 12
    return shortener


_REPR = _reprs(400)


def clip(text: str, limit: int = 300) -> str:
    """``text`` itself (not its repr) cut to ``limit`` characters, ending in ``...`` when cut:
    for messages that quote another library's message, which may hold a whole value."""
    return text if len(text) <= limit else text[: limit - 3] + "..."
