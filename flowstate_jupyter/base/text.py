"""Short texts of values, for error messages and one-line summaries."""

from __future__ import annotations

import json
from typing import Any


def short(value: Any, limit: int = 80, *, as_json: bool = False) -> str:
    """``repr(value)`` (or its compact JSON text) cut to ``limit`` characters, ending in ``...``
    when cut."""
    if as_json:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = repr(value)
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def clip(text: str, limit: int = 300) -> str:
    """``text`` itself (not its repr) cut to ``limit`` characters, ending in ``...`` when cut:
    for messages that quote another library's message, which may hold a whole value."""
    return text if len(text) <= limit else text[: limit - 3] + "..."
