"""Sessions outside runs: a notebook's handle on one conversation (DESIGN §7).

``s = flow.session("s1", user="alice")`` returns a :class:`Session`, which IS the session's scope
handle (``s.state``, ``s.patch_state(...)``, ``s.resources["artifacts"]``) plus ``s.user`` and
``s.project`` handles, ``client_data()``, ``snapshot()``, ``history()``, ``journal``, ``run()``
and ``run_block()``.

A session belongs to one user and one flow kind. That is kept in a bookkeeping record
``session/<id>/$meta`` with state ``{"user", "flow", "created_at"}``, written the first time the
session is used (by a run or by ``flow.session``). Using the id with another user or another flow
kind raises :class:`AccessDeniedError`. The record's access time is touched at the end of every
run and by every write to the session's scope state made through a ``Session``, so
``flow.sessions()`` lists sessions with their update times from that one record per session
(writes to a session's resources outside runs do not count as updates).
"""

from __future__ import annotations

import functools

import getpass
import os
import re
import time
from typing import TYPE_CHECKING, Any

from .client_data import resource_client_data, scope_client_data
from ..errors import AccessDeniedError
from ..handles.journal import Journal
from ..handles.scopes import ScopeHandle, check_id
from ..stores.base import Change, HistoryEntry, Record, Store

if TYPE_CHECKING:  # imported for type hints only: flows.py imports this module
    from .blocks import Block
    from .flow import Flow
    from .runs import RunResult

__all__ = ["Session", "META_RECORD", "default_user", "ensure_session", "list_sessions"]

META_RECORD = "$meta"


def default_user() -> str:
    """The user a run belongs to when none is given: ``FLOWSTATE_USER``, else the OS user.

    Characters a scope id may not hold are replaced by ``_`` (``"anonymous"`` if nothing is left).
    """
    name = os.environ.get("FLOWSTATE_USER")
    if not name:
        try:
            name = getpass.getuser()
        except Exception:  # noqa: BLE001 - no user database (some containers)
            name = ""
    name = re.sub(r"[^A-Za-z0-9._@:-]", "_", name)[:128].strip("_")
    return name or "anonymous"


def ensure_session(store: Store, session_id: str, *, user: str | None, flow_kind: str,
                   request_id: str | None = None) -> str:
    """Check (or create) the ``$meta`` record of a session; return the session's user.

    ``user=None`` means the session's owner if it exists, else :func:`default_user`. Raises
    :class:`AccessDeniedError` when the session belongs to another user or flow kind; nothing is
    written then.
    """
    check_id(session_id, "session id")
    if user is not None:
        check_id(user, "user id")
    record = store.read("session", session_id, META_RECORD)
    if record is None or record.deleted:
        wanted = user or default_user()
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

        store.update("session", session_id, META_RECORD, create)
        if not found:
            return wanted
        meta = found
    else:
        meta = record.state if isinstance(record.state, dict) else {}
    owner, kind = meta.get("user"), meta.get("flow")
    if kind != flow_kind:
        raise AccessDeniedError(f"session {session_id!r} belongs to flow {kind!r}, not "
                                f"{flow_kind!r}; a session serves one flow kind, so use another "
                                f"session id (or none, for a new one)")
    if user is not None and owner != user:
        raise AccessDeniedError(f"session {session_id!r} belongs to user {owner!r}, not "
                                f"{user!r}; use another session id (or none, for a new one)")
    return owner


def list_sessions(store: Store, flow_kind: str, user: str | None = None) -> list[dict]:
    """Sessions of one flow kind (optionally of one user), most recently updated first.

    Each item: ``{"id", "user", "flow", "created_at", "updated_at"}`` (times are Unix seconds).
    Reads only the ``$meta`` records: one ``store.list`` call.
    """
    out = []
    for record in store.list(scope="session", name=META_RECORD):
        meta = record.state if isinstance(record.state, dict) else {}
        if meta.get("flow") != flow_kind or (user is not None and meta.get("user") != user):
            continue
        out.append({"id": record.scope_id, "user": meta.get("user"), "flow": flow_kind,
                    "created_at": meta.get("created_at", record.created_at),
                    "updated_at": max(record.updated_at, record.accessed_at)})
    out.sort(key=lambda item: item["updated_at"], reverse=True)
    return out


def list_runs(store: Store, session_id: str, limit: int | None = 20) -> list[dict]:
    """Request records of one session's runs, newest first, each with its ``request_id``."""
    records = [{"request_id": r.scope_id, **r.state}
               for r in store.list(scope="request", name="$request")
               if isinstance(r.state, dict) and r.state.get("session") == session_id]
    records.sort(key=lambda s: s.get("started_at") or 0, reverse=True)
    return records if limit is None else records[:limit]


class Session(ScopeHandle):
    """One session of a flow, outside any run: the session scope handle and friends.

    Build it with ``flow.session(id, user=..., project=..., store=...)``. ``s.user`` and
    ``s.project`` are the scope handles of its user and project (``s.user.id`` is the user's
    id); ``s.resources`` are the session's resources. All are typed by the flow's merged models.
    """

    def __init__(self, flow: "Flow", store: Store, session_id: str, *, user: str | None = None,
                 project: str = "default") -> None:
        owner = ensure_session(store, session_id, user=user, flow_kind=flow.kind)
        super().__init__(store, "session", session_id, state=flow.state_model("session"),
                         resources=flow.resources("session"))
        self.flow = flow
        self._owner = owner
        self._project_id = check_id(project, "project id")

    # Built on first use: reading a session's own state should not pay for the other scopes.
    @functools.cached_property
    def user(self) -> ScopeHandle:
        """The scope handle of the user this session belongs to."""
        return ScopeHandle(self._store, "user", self._owner, state=self.flow.state_model("user"),
                           resources=self.flow.resources("user"))

    @functools.cached_property
    def project(self) -> ScopeHandle:
        """The scope handle of this session's project."""
        return ScopeHandle(self._store, "project", self._project_id,
                           state=self.flow.state_model("project"),
                           resources=self.flow.resources("project"))

    @functools.cached_property
    def journal(self) -> Journal:
        """Notes about this session (``append(text, source=..., tags=...)``, ``entries()``)."""
        return Journal(self._store, self.id)

    @property
    def store(self) -> Store:
        return self._store

    def _after_commit(self, before: dict, after: dict, created: bool) -> None:
        super()._after_commit(before, after, created)
        self._touch()

    def _touch(self) -> None:
        """Mark the session as updated now (for ``flow.sessions()``)."""
        self._store.touch("session", self.id, META_RECORD)

    # -- the client view -------------------------------------------------------------------------
    def _handles(self) -> dict[str, ScopeHandle]:
        return {"session": self, "user": self.user, "project": self.project}

    def client_data(self) -> dict:
        """``{"session": {...}, "user": {...}, "project": {...}}`` from the scopes' functions.

        A failing function shows as ``{"error": "<key>: <ExceptionType>: <message>"}``.
        """
        return {scope: scope_client_data(handle, self.flow.client_data_functions(scope))
                for scope, handle in self._handles().items()}

    def snapshot(self) -> dict:
        """The client view: ``{"client_data": {...}, "resources": {scope: {name: {...}}}}``.

        ``resources`` lists, per scope, the resources that define ``client_data``, each as
        ``{"client_data": value}`` (a collection's value is ``{key: value}``). Nothing else of
        the state reaches a client.
        """
        return {"client_data": self.client_data(),
                "resources": {scope: resource_client_data(handle.resources)
                              for scope, handle in self._handles().items()}}

    # -- history -----------------------------------------------------------------------------------
    def history(self, scope: str = "session", limit: int | None = 20, *,
                resource: str | None = None) -> list[HistoryEntry]:
        """Kept versions of a scope's state (or of one of its resources), newest first.

        Each entry has ``version``, ``ts`` (Unix time), ``operation``, ``state``, ``deleted``
        and ``request_id``.
        """
        handles = self._handles()
        if scope not in handles:
            raise ValueError(f"history scope must be one of {', '.join(handles)}, "
                             f"not {scope!r}")
        handle = handles[scope]
        if resource is not None:
            target = handle.resources[resource]
            if not hasattr(target, "history"):
                raise ValueError(f"{scope} resource {resource!r} is a collection; ask for "
                                 f"the history of one instance: "
                                 f"s.resources[{resource!r}].get(key).history()")
            return target.history(limit=limit)
        return ScopeHandle.history(handle, limit=limit)

    # -- running -------------------------------------------------------------------------------------
    def run(self, action: str, input: Any = None, **options: Any) -> "RunResult":
        """Run one of the flow's actions on this session (same as ``flow.run(..., session=id)``)."""
        return self.flow.run(action, input, session=self.id, user=self.user.id,
                             project=self.project.id, store=self._store, **options)

    async def arun(self, action: str, input: Any = None, **options: Any) -> "RunResult":
        """Async twin of :meth:`run`."""
        return await self.flow.arun(action, input, session=self.id, user=self.user.id,
                                    project=self.project.id, store=self._store, **options)

    def run_block(self, block: "Block", input: Any = None, **options: Any) -> "RunResult":
        """Run any block (not only an action) on this session's scopes, e.g. to try it alone."""
        return self.flow.run_block(block, input, session=self.id, user=self.user.id,
                                   project=self.project.id, store=self._store, **options)

    def runs(self, limit: int | None = 20) -> list[dict]:
        """The request records of this session's runs, newest first."""
        return list_runs(self._store, self.id, limit)

    def _repr_html_(self) -> str:
        from ..model.display import session_html
        return session_html(self)

    def __repr__(self) -> str:
        return (f"<Session {self.id!r} of flow {self.flow.kind!r}, user {self.user.id!r}, "
                f"v{self.version}>")
