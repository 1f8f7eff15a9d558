"""Parse the paths ``%state`` takes: ``session.mode``, ``user.resources.preferences.theme``.

Grammar, one dot-separated path::

    [SCOPE.]FIELD[.KEY...]                      scope state (SCOPE defaults to session)
    SCOPE.resources.NAME[.FIELD[.KEY...]]       a resource
    SCOPE.resources.NAME[COLLECTION KEY].FIELD  an instance of a collection

``SCOPE`` alone names the whole state of a scope. Collection keys go in brackets because they
contain ``/`` and dots (``session.resources.files[docs/a.md].size``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..base.ids import SCOPES
from ..base.text import short


class PathError(ValueError):
    """A ``%state`` path that does not parse; the message says what a path looks like."""


@dataclass(frozen=True)
class StatePath:
    """A parsed path: which scope, which resource (and collection key), which field path."""

    scope: str
    resource: str | None = None
    key: str | None = None
    fields: tuple[str, ...] = ()
    text: str = ""

    @property
    def label(self) -> str:
        """The path as written (cut to 80 characters), for messages."""
        text = self.text or self.scope
        return text if len(text) <= 80 else text[:77] + "..."


_HELP = ("use SCOPE.FIELD (session.mode), SCOPE.resources.NAME.FIELD "
         "(session.resources.plan.steps) or a collection instance "
         "(session.resources.files[docs/a.md].size)")


def _split(text: str) -> list[str]:
    """Split on dots outside brackets, keeping ``name[key]`` together."""
    parts, current, depth = [], "", 0
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise PathError(f"unbalanced ']' in {short(text, 80)}; {_HELP}")
        if char == "." and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if depth:
        raise PathError(f"unclosed '[' in {short(text, 80)}; {_HELP}")
    parts.append(current)
    if any(p == "" for p in parts):
        raise PathError(f"empty segment in {short(text, 80)}; {_HELP}")
    return parts


def parse_path(text: str) -> StatePath:
    """Parse a ``%state`` path; raises :class:`PathError` with a hint on bad input."""
    text = (text or "").strip()
    if not text:
        raise PathError(f"a path is needed; {_HELP}")
    parts = _split(text)
    if parts[0] in SCOPES:
        scope, rest = parts[0], parts[1:]
    else:
        scope, rest = "session", parts
    if rest and rest[0] == "resources":
        if len(rest) < 2:
            raise PathError(f"{short(text, 80)} names no resource; {_HELP}")
        name, key = rest[1], None
        if "[" in name:
            if not name.endswith("]"):
                raise PathError(f"{short(text, 80)}: write a collection key as NAME[KEY]; "
                                f"{_HELP}")
            name, key = name[:-1].split("[", 1)
            if not key:
                raise PathError(f"{short(text, 80)}: empty collection key; {_HELP}")
        fields = tuple(rest[2:])
        _check_plain(fields, text)
        return StatePath(scope, name, key, fields, text)
    _check_plain(tuple(rest), text)
    return StatePath(scope, None, None, tuple(rest), text)


def _check_plain(fields: tuple[str, ...], text: str) -> None:
    for field in fields:
        if "[" in field or "]" in field:
            raise PathError(f"{short(text, 80)}: brackets are only for collection keys; {_HELP}")
