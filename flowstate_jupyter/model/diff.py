"""Field-level differences between two JSON states, for history views and ``%state diff``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..base.text import short
from .ops import format_path, json_equal

_MISSING = object()


@dataclass(frozen=True)
class FieldChange:
    """One changed leaf at ``path`` (``("steps", 2)``); an absent ``old``/``new`` is ``MISSING``."""

    path: tuple
    old: Any
    new: Any

    @property
    def kind(self) -> str:
        if self.old is _MISSING:
            return "added"
        if self.new is _MISSING:
            return "removed"
        return "changed"

    def __str__(self) -> str:
        where = format_path(self.path) or "(whole state)"
        if self.kind == "added":
            return f"+ {where} = {short(self.new, as_json=True)}"
        if self.kind == "removed":
            return f"- {where} (was {short(self.old, as_json=True)})"
        return f"~ {where}: {short(self.old, as_json=True)} -> {short(self.new, as_json=True)}"


MISSING = _MISSING


def diff(old: Any, new: Any, path: tuple = ()) -> list[FieldChange]:
    """The leaves that differ between ``old`` and ``new``, in field order.

    Dicts are compared key by key; lists of equal length item by item; anything else (including
    lists that grew or shrank) is reported as one change of the whole value.
    """
    if json_equal(old, new) and type(old) is type(new):
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        changes: list[FieldChange] = []
        for key in list(old) + [k for k in new if k not in old]:
            changes += diff(old.get(key, _MISSING), new.get(key, _MISSING), (*path, key))
        return changes
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        changes = []
        for index, (a, b) in enumerate(zip(old, new)):
            changes += diff(a, b, (*path, index))
        return changes
    if old is _MISSING and new is _MISSING:
        return []
    return [FieldChange(path, old, new)]


def format_diff(changes: list[FieldChange]) -> str:
    """One line per change, or ``(no differences)``."""
    return "\n".join(str(c) for c in changes) if changes else "(no differences)"


