"""The bookkeeping records of sessions and runs: who owns a session, and which runs it had.

A session belongs to one user and one flow kind. That is kept in a bookkeeping record
``session/<id>/$meta`` with state ``{"user", "flow", "created_at"}``, written the first time the
session is used (by a run or by ``flow.session``). Using the id with another user or another flow
kind raises :class:`AccessDeniedError`. The record's access time is touched at the end of every
run and by every write to the session's scope state made through a ``Session``, so
``flow.sessions()`` lists sessions with their update times from that one record per session,
a page at a time, filtered, ordered and paged by the store.
Each run keeps a request record ``request/<id>/$request`` (see ``runs.py``).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from typing import Any

from ..base.env import current_user
from ..base.ids import check_id
from ..base.names import REQUEST, SESSION_META
from ..errors import AccessDeniedError
from ..stores.base import Change, Record, Store
from .forking import meta_parent

__all__ = ["ensure_session", "list_runs", "list_sessions"]

#: Called with the store before runs are listed: writes the records that runs of this process
#: put off (``durable.py`` sets it; see its ``Lease``), so this process lists them.
_before_listing: Callable[[Store], None] | None = None


#: Per store object: the sessions :func:`ensure_session` found in order, as
#: ``(session id, user, flow kind) -> (store's _meta_token then, owner)``, or ``None`` for a
#: session checked once without a token. While the store's token is unchanged the record is too,
#: so a run's session check is not read again; see docs/decisions.md,
#: 'A session checked once is not read again while nothing changed'. The token is asked for from
#: a session's second check on: one seen once (a new session, or one of many each used once)
#: costs no more than before.
_CHECKED: weakref.WeakKeyDictionary[Store, dict[tuple, tuple[object, str] | None]] = \
    weakref.WeakKeyDictionary()
_CHECKED_MAX = 1024  # sessions remembered per store object (then it starts over)
#: ``(weak reference to a store, its _CHECKED map)`` of the store last checked: a run finds its
#: store's map without ``WeakKeyDictionary.get`` (a call and a weak reference made each time).
_LAST_CHECKED: tuple[Callable[[], Store | None], dict | None] = (lambda: None, None)


def set_before_listing(hook: Callable[[Store], None] | None) -> None:
    """Set the function :func:`list_runs` calls first (see ``_before_listing``)."""
    global _before_listing
    _before_listing = hook


def ensure_session(store: Store, session_id: str, *, user: str | None, flow_kind: str,
                   request_id: str | None = None) -> str:
    """Check (or create) the ``$meta`` record of a session; return the session's user.

    ``user=None`` means the session's owner if it exists, else the current user
    (``base.env.current_user``). Raises :class:`AccessDeniedError` when the session belongs to
    another user or flow kind, or its record names no owner; nothing is written then.
    """
    check_id(session_id, "session id")
    if user is not None:
        check_id(user, "user id")
    global _LAST_CHECKED
    key = (session_id, user, flow_kind)
    last = _LAST_CHECKED
    if last[0]() is store:
        checked = last[1]
    else:
        checked = _CHECKED.get(store)
        if checked is not None:
            _LAST_CHECKED = (weakref.ref(store), checked)
    token = None
    if checked is not None and key in checked:
        # Taken before the read: a change committed after it makes the next call read again.
        token = store._meta_token()
        known = checked[key]
        if token is not None and known is not None and known[0] == token:
            return known[1]
    record = store.read("session", session_id, SESSION_META)
    if record is None or record.deleted:
        wanted = user or current_user()
        found: dict[str, Any] = {}

        def create(current: Record | None) -> Change | None:
            if current is not None and not current.deleted:  # another writer was first
                found.update(current.state)
                return None
            meta = {"user": wanted, "flow": flow_kind, "created_at": time.time()}
            return Change(state=meta, operation="set", request_id=request_id,
                          event={"type": "session", "scope": "session", "scope_id": session_id,
                                 "change_type": "created", "user": wanted, "flow": flow_kind,
                                 "request_id": request_id})

        store.update("session", session_id, SESSION_META, create)
        if not found:  # created: its write moved the token on, so only that it was seen
            _remember(store, checked, key, None)
            return wanted
        meta = found
    else:
        meta = record.state if isinstance(record.state, dict) else {}
    owner, kind = meta.get("user"), meta.get("flow")
    if kind != flow_kind:
        raise AccessDeniedError(f"session {session_id!r} belongs to flow {kind!r}, not "
                                f"{flow_kind!r}; a session serves one flow kind, so use another "
                                f"session id (or none, for a new one)")
    if not isinstance(owner, str):  # written by hand or damaged: no user to run as
        raise AccessDeniedError(f"session {session_id!r} has no owner in its {SESSION_META} "
                                f"record (found user {owner!r}); use another session id (or none, "
                                f"for a new one)")
    if user is not None and owner != user:
        raise AccessDeniedError(f"session {session_id!r} belongs to user {owner!r}, not "
                                f"{user!r}; use another session id (or none, for a new one)")
    # (found just created by another writer: the token was taken before that, so only seen)
    _remember(store, checked, key, (token, owner) if token is not None and record is not None
              else None)
    return owner


def _remember(store: Store, checked: dict | None, key: tuple,
              value: tuple[object, str] | None) -> None:
    """Keep what :func:`ensure_session` found for ``key`` (see ``_CHECKED``)."""
    if checked is None:
        checked = _CHECKED.setdefault(store, {})
    elif len(checked) >= _CHECKED_MAX and key not in checked:
        checked.clear()
    checked[key] = value


DEFAULT_PAGE = 100  # sessions per page of ``flow.sessions()``


def list_sessions(store: Store, flow_kind: str, user: str | None = None, *,
                  limit: int | None = DEFAULT_PAGE, after: dict | None = None) -> list[dict]:
    """Sessions of one flow kind (optionally of one user), most recently updated first.

    Each item: ``{"id", "user", "flow", "created_at", "updated_at", "parent"}`` (times are Unix
    seconds; ``parent`` is ``(session id, version)`` for a fork, else ``None``). One page of at
    most ``limit`` items (``None``: all); ``after`` is the last item of the previous page.
    The store filters, orders and pages the ``$meta`` records (``Store.list_recent``).
    """
    where: dict[str, str] = {"flow": flow_kind}
    if user is not None:
        where["user"] = user
    cursor = None
    if after is not None:
        if not isinstance(after, dict) or "updated_at" not in after or "id" not in after:
            raise ValueError(f"after must be an item of the previous page of sessions (a dict "
                             f"with 'updated_at' and 'id'), not {after!r}")
        cursor = (after["updated_at"], after["id"])
    out = []
    for record in store.list_recent("session", SESSION_META, where=where, limit=limit,
                                    after=cursor):
        meta = record.state
        out.append({"id": record.scope_id, "user": meta.get("user"), "flow": flow_kind,
                    "created_at": meta.get("created_at", record.created_at),
                    "updated_at": max(record.updated_at, record.accessed_at),
                    "parent": meta_parent(meta)})
    return out


def effective_status(state: dict, now: float | None = None) -> str:
    """A run's status as readers see it: ``"interrupted"`` for a running run whose lease passed
    (its process died or stopped renewing it; see ``durable.py``)."""
    status = state.get("status")
    if status == "running":
        lease = state.get("lease_until")
        if isinstance(lease, (int, float)) and lease < (time.time() if now is None else now):
            return "interrupted"
    return str(status)


def list_runs(store: Store, session_id: str | None = None, limit: int | None = 20, *,
              status: str | None = None, flow_kind: str | None = None) -> list[dict]:
    """Request records of runs (one session's, one flow kind's, or all), newest first.

    Each is the record's state plus its ``request_id``, with ``status`` as readers see it
    (:func:`effective_status`); ``status`` filters on that.
    """
    if _before_listing is not None:
        _before_listing(store)
    now = time.time()
    records = []
    for r in store.list(scope="request", name=REQUEST):
        state = r.state
        if not isinstance(state, dict) or (session_id is not None
                                           and state.get("session") != session_id) \
                or (flow_kind is not None and state.get("flow") != flow_kind):
            continue
        item = {"request_id": r.scope_id, **state, "status": effective_status(state, now)}
        if status is None or item["status"] == status:
            records.append(item)
    records.sort(key=lambda s: s.get("started_at") or 0, reverse=True)
    return records if limit is None else records[:limit]
