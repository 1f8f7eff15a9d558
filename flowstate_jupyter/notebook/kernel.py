"""What the extension keeps for one kernel: the store, who you are, the flows and the session.

The store is the source of truth; this object only remembers *which* records the magics and
widgets look at. Unloading and loading the extension again (or restarting the kernel) finds the
same state, because the session id is named after the notebook, not after the kernel.
"""

from __future__ import annotations

from typing import Any

from ..base.env import current_project, current_user, notebook_session_id
from ..flows.bookkeeping import list_runs
from ..handles.scopes import ScopeHandle
from ..stores import Store, open_store


class _PlainSession:
    """The scopes of a session when no flow is current: free-form state, no resources."""

    def __init__(self, store: Store, session_id: str, user: str, project: str) -> None:
        self.store = store
        self.id = session_id
        self.session = ScopeHandle(store, "session", session_id)
        self.user = ScopeHandle(store, "user", user)
        self.project = ScopeHandle(store, "project", project)

    def client_data(self) -> dict:
        return {"session": {}, "user": {}, "project": {}}

    def runs(self, limit: int | None = 20) -> list[dict]:
        return list_runs(self.store, self.id, limit)

    def snapshot(self) -> dict:
        return {"client_data": self.client_data(), "resources": {}}


class KernelState:
    """The extension's memory for one kernel (see module docstring)."""

    def __init__(self, store: Store | None = None, *, store_url: str | None = None) -> None:
        # Who and where first: a refused FLOWSTATE_USER (or project, session) opens no store.
        self.user = current_user()
        self.project = current_project()
        self.session_id = notebook_session_id()
        self.store = store if store is not None else open_store(store_url)
        self.flows: dict[str, Any] = {}
        self.current_flow: str | None = None
        self.server: Any = None  # what %flow serve started (notebook/serving.py)

    # -- flows --------------------------------------------------------------------------------
    def register(self, name: str, flow: Any) -> None:
        self.flows[name] = flow
        self.current_flow = name

    def flow(self, name: str | None = None) -> Any:
        """The named flow, or the current one; ``LookupError`` with a hint if there is none."""
        name = name or self.current_flow
        if name is None:
            raise LookupError("no flow yet: define one with %%flow NAME")
        if name not in self.flows:
            known = ", ".join(self.flows) or "none"
            raise LookupError(f"no flow named {name!r}; registered: {known}")
        return self.flows[name]

    # -- the scopes you are looking at ----------------------------------------------------------
    def session(self, flow_name: str | None = None) -> Any:
        """The current session: a flow session (typed, with resources) or a plain one."""
        if flow_name is None and self.current_flow is None:
            return _PlainSession(self.store, self.session_id, self.user, self.project)
        flow = self.flow(flow_name)
        return flow.session(self.session_id, user=self.user, project=self.project,
                            store=self.store)

    def handle(self, scope: str, flow_name: str | None = None) -> ScopeHandle:
        """The handle of one scope of the current session (``request`` is not reachable here)."""
        session = self.session(flow_name)
        if scope == "session":
            return session if isinstance(session, ScopeHandle) else session.session
        if scope in ("user", "project"):
            return getattr(session, scope)
        raise LookupError(f"scope {scope!r} cannot be inspected from a notebook; use session, "
                          f"user or project")

    def close(self) -> None:
        if self.server is not None:  # it serves from this store: stop it first
            self.server.stop()
            self.server = None
        self.store.close()
