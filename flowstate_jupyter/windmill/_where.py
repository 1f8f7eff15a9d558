"""Who is calling, from where, on which store: the run (if any), user, project and store.

Inside a flow run the running block's ``ctx`` decides (its store, user and project); outside,
:func:`use_store` or the process's default store, and the user and project from the environment
(``base/env.py``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, TypeGuard

from ..base.env import current_project as _env_project
from ..base.env import current_user as _env_user
from ..errors import NotInFlowRunError
from ..stores import open_store
from ..stores.base import Record, Store
from ..stores.default import default_store

#: Every Windmill record lives in the project scope (flow user state: in the run's request).
SCOPE = "project"




def _context() -> Any:
    """The running block's ctx, or None outside flow runs."""
    from ..flows import context  # looked up at call time, so tests can stand in for a run
    return context.current_context()


def _ctx_attr(ctx: Any, *names: str) -> Any:
    value = ctx
    for name in names:
        value = getattr(value, name, None)
        if value is None:
            return None
    return value


def _user_of(ctx: Any) -> str:
    user = _ctx_attr(ctx, "user", "id")
    return user if isinstance(user, str) and user else _env_user()


def _project_of(ctx: Any) -> str:
    project = _ctx_attr(ctx, "project", "id")
    return project if isinstance(project, str) and project else _env_project()


def current_user() -> str:
    """Who is writing: the run's user inside a flow run, else ``FLOWSTATE_USER``, else the OS
    user."""
    return _user_of(_context())


def current_project() -> str:
    """The project whose scope holds states and resources: the run's, ``FLOWSTATE_PROJECT`` or
    ``"default"``."""
    return _project_of(_context())


_lock = threading.RLock()
_override: Store | None = None


class _StoreOverride:
    """What :func:`use_store` returns: also a context manager that restores the previous store."""

    def __init__(self, store: Store | None, previous: Store | None) -> None:
        self.store = store
        self._previous = previous

    def __enter__(self) -> Store | None:
        return self.store

    def __exit__(self, *exc: object) -> None:
        global _override
        with _lock:
            _override = self._previous


def use_store(store: Store | str | None) -> _StoreOverride:
    """Make ``store`` (a store, or a URL for ``open_store``) the one used outside flow runs.

    ``use_store(None)`` goes back to :func:`default_store`. Works as a plain call (for the rest
    of the process) and as ``with use_store(s): ...`` (restored afterwards). Inside a flow run
    the run's own store is always used.
    """
    global _override
    if isinstance(store, str):
        store = open_store(store)
    if store is not None and not isinstance(store, Store):
        raise TypeError(f"use_store takes a Store, a store URL or None, not "
                        f"{type(store).__name__}")
    with _lock:
        previous, _override = _override, store
    return _StoreOverride(store, previous)


@dataclass(frozen=True)
class _Env:
    """Everything one call needs: store, project, user, and the run (if any)."""

    store: Store
    project: str
    user: str
    request_id: str | None
    ctx: Any


def _env(store: Store | None = None) -> _Env:
    ctx = _context()
    if store is None:
        store = _ctx_attr(ctx, "store")
    if store is None:
        with _lock:
            store = _override
    if store is None:
        store = default_store()
    request_id = _ctx_attr(ctx, "request", "id")
    return _Env(store, _project_of(ctx), _user_of(ctx), request_id, ctx)


def _live(record: Record | None) -> TypeGuard[Record]:
    return record is not None and not record.deleted


def _run(what: str) -> tuple[_Env, str]:
    """The call's environment and its run's request id; NotInFlowRunError outside runs."""
    env = _env()
    if env.ctx is None or env.request_id is None:
        raise NotInFlowRunError(
            f"{what} works only inside a flow run (a block running through flow.run); there is "
            f"no flow user state outside a run. To keep a value between runs use get_state() / "
            f"set_state() instead")
    return env, env.request_id
