"""Scope names and ids: the one rule for what an id may be (docs/concepts.md, 'Scopes')."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

from ..errors import InvalidIdError
from .text import short

#: The four scopes, from the shortest-lived to the longest.
SCOPES = ("request", "session", "user", "project")
#: The project a run or a notebook uses when none is given.
DEFAULT_PROJECT = "default"

_ID = re.compile(r"[A-Za-z0-9._@:-]{1,128}")
_NOT_ID = re.compile(r"[^A-Za-z0-9._@:-]+")


_VALID: set[str] = set()  # ids found valid (a run checks the same few again and again)
_VALID_KEPT = 4096  # beyond, the set starts over


def check_id(value: Any, what: str = "id") -> str:
    """Return ``value`` if it is a valid scope id, else raise :class:`InvalidIdError`."""
    if type(value) is str and value in _VALID:
        return value
    if not isinstance(value, str) or not _ID.fullmatch(value):
        shown = short(value, 60)
        raise InvalidIdError(
            f"invalid {what} {shown}: use 1-128 characters of letters, digits and . _ @ : -")
    if type(value) is str:
        if len(_VALID) >= _VALID_KEPT:
            _VALID.clear()
        _VALID.add(value)
    return value


def as_id(text: str, fallback: str) -> str:
    """``text`` made a valid id: each run of other characters becomes ``_`` (``fallback`` if
    nothing is left). For names the user did not choose as ids, such as a file name."""
    cleaned = _NOT_ID.sub("_", text).strip("_")[:128]
    return cleaned or fallback


def check_scope(scope: Any) -> str:
    """Return ``scope`` if it is one of :data:`SCOPES`, else raise :class:`InvalidIdError`."""
    if scope not in SCOPES:
        raise InvalidIdError(f"unknown scope {short(scope, 60)}; scopes are "
                             f"{', '.join(SCOPES)}")
    return scope


_POOL_IDS = 64  # ids drawn from one os.urandom call (a system call: one a run was 0.3 us)
_pool: Iterator[str] = iter(())  # the 12 hex digits of ids drawn and not handed out yet


def new_id(prefix: str) -> str:
    """A fresh random id such as ``s-3f9c0a1b2d4e``."""
    global _pool
    digits = next(_pool, None)  # (atomic: two threads never get the same digits)
    if digits is None:  # 12 random hex digits an id, as uuid4().hex[:12] were
        data = os.urandom(6 * _POOL_IDS).hex()
        digits = data[:12]
        _pool = iter([data[i:i + 12] for i in range(12, len(data) - 11, 12)])
    return f"{prefix}-{digits}"


def _forget_pool() -> None:
    global _pool
    _pool = iter(())


if hasattr(os, "register_at_fork"):  # a forked child draws its own: it never repeats its parent's
    os.register_at_fork(after_in_child=_forget_pool)
