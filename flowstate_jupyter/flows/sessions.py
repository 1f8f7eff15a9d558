"""Sessions outside runs: a notebook's handle on one conversation
(docs/guide.md, 'Sessions outside runs').

``s = flow.session("s1", user="alice")`` returns a :class:`Session`, which IS the session's scope
handle (``s.state``, ``s.patch_state(...)``, ``s.resources["artifacts"]``) plus ``s.user`` and
``s.project`` handles, ``client_data()``, ``snapshot()``, ``history()``, ``journal``, ``run()``
and ``run_block()``.

A session belongs to one user and one flow kind (its ``$meta`` record, see ``bookkeeping.py``).
Every write to the session's scope state made through a ``Session`` touches that record, so
``flow.sessions()`` shows it as updated (writes to a session's resources outside runs do not
count as updates).
"""

from __future__ import annotations

import functools
from typing import Any

from ..base.ids import check_id
from ..base.names import SESSION_META
from ..errors import RunStateError
from ..handles.journal import Journal
from ..handles.scopes import ScopeHandle
from ..stores.base import HistoryEntry, Store
from .blocks import Block
from .bookkeeping import ensure_session, list_runs
from .client_data import resource_client_data, scope_client_data
from .durable import read_run
from .forking import fork_session, parent_of
from .runs import RunResult
from .spec import FlowSpec
from .trace import Trace, read_content, trace_from

__all__ = ["Session"]


class Session(ScopeHandle):
    """One session of a flow, outside any run: the session scope handle and friends.

    Build it with ``flow.session(id, user=..., project=..., store=...)``. ``s.user`` and
    ``s.project`` are the scope handles of its user and project (``s.user.id`` is the user's
    id); ``s.resources`` are the session's resources. All are typed by the flow's merged models.
    """

    def __init__(self, flow: FlowSpec, store: Store, session_id: str, *, user: str | None = None,
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
        self._store.touch("session", self.id, SESSION_META)

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
    def history(  # type: ignore[override]  # public s.history(scope, limit); handles take limit=
            self, scope: str = "session", limit: int | None = 20, *,
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

    # -- running -----------------------------------------------------------------------------------
    def run(self, action: str, input: Any = None, **options: Any) -> RunResult:
        """Run one of the flow's actions on this session (same as ``flow.run(..., session=id)``)."""
        return self.flow.run(action, input, session=self.id, user=self.user.id,
                             project=self.project.id, store=self._store, **options)

    async def arun(self, action: str, input: Any = None, **options: Any) -> RunResult:
        """Async twin of :meth:`run`."""
        return await self.flow.arun(action, input, session=self.id, user=self.user.id,
                                    project=self.project.id, store=self._store, **options)

    def run_block(self, block: Block, input: Any = None, **options: Any) -> RunResult:
        """Run any block (not only an action) on this session's scopes, e.g. to try it alone."""
        return self.flow.run_block(block, input, session=self.id, user=self.user.id,
                                   project=self.project.id, store=self._store, **options)

    def runs(self, limit: int | None = 20, *, status: str | None = None) -> list[dict]:
        """The request records of this session's runs, newest first (``status`` filters;
        ``"interrupted"`` is a running run whose lease passed)."""
        return list_runs(self._store, self.id, limit, status=status)

    def trace(self, request_id: str) -> Trace:
        """The :class:`Trace` of one of this session's runs (read from the store)."""
        record = read_run(self._store, request_id)
        if record.state.get("session") != self.id:
            raise RunStateError(f"run {request_id} is not a run of session {self.id!r}")
        return trace_from(request_id, read_content(record.content).get("trace"))

    # -- branching -----------------------------------------------------------------------------
    def fork(self, new_id: str | None = None, *, at_version: int | None = None) -> Session:
        """A new session of the same flow and user, starting from this one's session state at
        state version ``at_version`` (default: now) and its session resources as they were at
        that version's time. User and project scopes are shared, as always. The new session's
        ``parent`` is ``(this id, version)``. Raises :class:`HistoryNotKeptError` when a version
        it needs was pruned from history (nothing is written then). See ``forking.py``.
        """
        target, _ = fork_session(self._store, self.id, new_id, at_version=at_version,
                                 user=self._owner, flow_kind=self.flow.kind)
        return Session(self.flow, self._store, target, user=self._owner,
                       project=self._project_id)

    @property
    def parent(self) -> tuple[str, int] | None:
        """``(session id, state version)`` this session was forked from; ``None`` if it was
        not forked. Read from the store, so every process sees it."""
        return parent_of(self._store, self.id)

    def _repr_html_(self) -> str:
        from ..model.display import session_html
        return session_html(self)

    def __repr__(self) -> str:
        return (f"<Session {self.id!r} of flow {self.flow.kind!r}, user {self.user.id!r}, "
                f"v{self.version}>")
