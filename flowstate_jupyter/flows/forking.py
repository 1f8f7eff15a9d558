"""Forking a session: a new session starting from another's state and resources
(docs/guide.md, 'Fork and compare sessions').

``session.fork(new_id=None, *, at_version=None)`` (``sessions.py``) calls :func:`fork_session`,
which copies, into a session that does not exist yet,

* the session state as it was at session-state version ``at_version`` (default: now), and
* every session resource and collection instance as it was at the *time* of that version: the
  newest version of each written at or before it (for ``at_version=0``: before version 1 was
  written). A resource created later is left out; one deleted by then too.

Everything is read from the records and their kept history first, so a fork that cannot be made
writes nothing: when a version it needs is no longer kept (history is bounded per record), or a
resource's content was rewritten after that time (history keeps states, not content), it raises
:class:`HistoryNotKeptError` saying which record and what to do. Then the records are written,
the session's ``$meta`` record last, with ``"parent": {"session", "version"}``: a session is
listed (``flow.sessions()``) only once its ``$meta`` exists, so a fork cut short by a lost store
is never seen as a session. User and project scopes are not copied: they are shared, as always.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..base.ids import check_id, new_id
from ..base.names import SESSION_META, is_reserved
from ..errors import HistoryNotKeptError, ResourceAlreadyExistsError, VersionConflictError
from ..stores.base import KEEP, HistoryEntry, Record, Store

__all__ = ["fork_session", "meta_parent", "parent_of"]

#: The history operation of a resource's content write (``ResourceHandle.write_content``).
_CONTENT_OPERATION = "content"


@dataclass(frozen=True)
class _Copy:
    """One record to write in the fork."""

    name: str
    state: Any
    content: Any  # str, None, or KEEP (no content to set)


def _history(store: Store, session_id: str, name: str = "") -> list[HistoryEntry]:
    """The kept versions of one of the session's records, newest first."""
    # cast: stores/base.py annotates ``history`` inside a class that has a ``list`` method,
    # which mypy reads as that method; the value is a plain list of HistoryEntry.
    return (store.history("session", session_id, name))


def _kept_range(history: list[HistoryEntry]) -> str:
    if not history:
        return "no versions are kept"
    return f"kept: versions {history[-1].version}..{history[0].version}"


def _moment(store: Store, session_id: str, version: int | None) -> tuple[int, Any, float | None,
                                                                          bool]:
    """``(version, state, time, inclusive)`` of the session state to fork from.

    ``time`` is ``None`` for "now" (every record as it is); records written at ``time`` count
    when ``inclusive`` (a version's own time), not for version 0 (the moment before version 1).
    """
    record = store.read("session", session_id)
    current = 0 if record is None else record.version
    if version is None:
        return current, (record.state if record is not None and not record.deleted else None), \
            None, True
    if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version <= current:
        raise ValueError(f"session {session_id!r}: at_version must be a state version from 0 to "
                         f"{current} (its current one), not {version!r}")
    if version == 0 and current == 0:
        return 0, None, None, True
    history = _history(store, session_id)
    wanted = 1 if version == 0 else version
    entry = next((e for e in history if e.version == wanted), None)
    if entry is None:
        raise HistoryNotKeptError(
            f"session {session_id!r}: state version {wanted} is no longer kept "
            f"({_kept_range(history)}; the store keeps {store.history_limit} per record), so "
            f"the session cannot be forked as of version {version}; fork at a kept version, or "
            f"now (at_version=None), and keep more history next time with "
            f"open_store(..., history_limit=N)")
    if version == 0:
        return 0, None, entry.ts, False
    return version, (None if entry.deleted else entry.state), entry.ts, True


def _at(store: Store, record: Record, when: float | None, inclusive: bool,
        session_id: str, label: str) -> _Copy | None:
    """``record`` as it was at ``when`` (``None``: now); ``None`` when it did not exist then."""
    def before(ts: float) -> bool:
        return when is None or ts < when or (inclusive and ts == when)

    if before(record.updated_at):  # unchanged since: the record itself
        return None if record.deleted else _Copy(record.name, record.state, record.content)
    history = _history(store, session_id, record.name)
    entry = next((e for e in history if before(e.ts)), None)
    if entry is None:
        if history and history[-1].version == 1:  # the whole history is kept: it came later
            return None
        raise HistoryNotKeptError(
            f"session {session_id!r} resource {label!r}: the version it had at that time is no "
            f"longer kept ({_kept_range(history)}), so the session cannot be forked as of that "
            f"version; fork at a later version, or now (at_version=None), and keep more history "
            f"next time with open_store(..., history_limit=N)")
    if entry.deleted:
        return None
    rewritten = [e.version for e in history
                 if e.version > entry.version and e.operation == _CONTENT_OPERATION]
    if rewritten:
        raise HistoryNotKeptError(
            f"session {session_id!r} resource {label!r}: its content was rewritten at version "
            f"{min(rewritten)}, after the version it had at that time ({entry.version}), and "
            f"history keeps states, not content; fork at a session version written after that "
            f"content change, or now (at_version=None)")
    return _Copy(record.name, entry.state, record.content)


def _label(name: str) -> str:
    """How a message names a stored resource record: ``plan`` or ``files['a.md']``."""
    collection, sep, key = name.partition(":")
    return f"{collection}[{key!r}]" if sep else name


def fork_session(store: Store, session_id: str, new_session: str | None, *,
                 at_version: int | None, user: str, flow_kind: str) -> tuple[str, int]:
    """Copy session ``session_id`` into a new session; return ``(new id, version forked at)``.

    See the module docstring. Raises :class:`ResourceAlreadyExistsError` when ``new_session``
    already has records, :class:`HistoryNotKeptError` when what it needs is no longer kept, and
    ``ValueError`` for a version the session never had; nothing is written then.
    """
    target = new_id("s") if new_session is None else check_id(new_session, "session id")
    if target == session_id or store.list("session", target, include_deleted=True) \
            or store.read("session", target) is not None:
        raise ResourceAlreadyExistsError(
            f"session {target!r} exists already; fork into a new session id, or leave new_id "
            f"out for a generated one")
    version, state, when, inclusive = _moment(store, session_id, at_version)
    copies = [copy for record in store.list("session", session_id, include_deleted=True)
              if record.name and not is_reserved(record.name)
              and (copy := _at(store, record, when, inclusive, session_id,
                               _label(record.name))) is not None]
    parent = {"session": session_id, "version": version}
    written: list[str] = []
    try:
        if state:
            store.write("session", target, "", state, expected="absent", operation="fork",
                        event=_event(target, "", parent))
            written.append("")
        for copy in copies:
            store.write("session", target, copy.name, copy.state, expected="absent",
                        operation="fork", content=copy.content if copy.content is not None
                        else KEEP, event=_event(target, copy.name, parent))
            written.append(copy.name)
        meta = {"user": user, "flow": flow_kind, "created_at": time.time(), "parent": parent}
        store.write("session", target, SESSION_META, meta, expected="absent", operation="set",
                    event={"type": "session", "scope": "session", "scope_id": target,
                           "change_type": "created", "user": user, "flow": flow_kind,
                           "parent": parent, "request_id": None})
    except BaseException as exc:
        for name in written:  # best effort: the id was new, so nothing else wrote these
            try:
                store.delete("session", target, name)
            except Exception:  # noqa: BLE001 - the first error is the one to report
                pass
        if isinstance(exc, VersionConflictError):
            raise ResourceAlreadyExistsError(
                f"session {target!r} was created by another writer during the fork; fork "
                f"into another session id") from exc
        raise
    return target, version


def _event(target: str, name: str, parent: dict) -> dict:
    if name == "":
        return {"type": "state_change", "scope": "session", "scope_id": target,
                "operation": "fork", "path": None, "delta": None, "request_id": None,
                "parent": parent}
    collection, sep, key = name.partition(":")
    event = {"type": "resource_change", "scope": "session", "scope_id": target,
             "resource": collection, "change_type": "created", "operation": "fork",
             "path": None, "delta": None, "request_id": None, "parent": parent}
    if sep:
        event["key"] = key
    return event


def parent_of(store: Store, session_id: str) -> tuple[str, int] | None:
    """``(session id, version)`` a session was forked from, from its ``$meta``; else ``None``."""
    record = store.read("session", session_id, SESSION_META)
    meta = record.state if record is not None and isinstance(record.state, dict) else {}
    return meta_parent(meta)


def meta_parent(meta: dict) -> tuple[str, int] | None:
    """The ``(session id, version)`` parent recorded in a ``$meta`` state, or ``None``."""
    parent = meta.get("parent")
    if isinstance(parent, dict) and isinstance(parent.get("session"), str) \
            and isinstance(parent.get("version"), int):
        return parent["session"], parent["version"]
    return None
