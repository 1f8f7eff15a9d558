"""Client data: the one boundary through which derived data reaches a client
(docs/concepts.md, 'Client data').

A scope declares ``client_data={"mode": lambda ctx: ctx.state.mode}``. Each function receives a
:class:`ClientDataContext` that sees ONLY its own scope: ``ctx.state`` (typed snapshot) and
``ctx.resources``. A resource's own ``client_data(state)`` (from ``define_resource``) is computed
per resource. Nothing else reaches a client: the session snapshot is the client view.

A function that raises, or returns something that is not JSON, does not break the rest: its value
is replaced by ``{"error": "<name>: <ExceptionType>: <message>"}``, for example
``{"error": "mode: KeyError: 'x'"}``. Inside ``with errors_redacted():`` (what a server does before
anything leaves it) the entry names only the key and the exception's type, ``{"error": "mode:
KeyError"}``: an exception's message may quote the state it failed on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from pydantic_core import to_jsonable_python

from ..handles.resources import CollectionHandle, Resources
from ..handles.scopes import ScopeHandle
from ..model import ops

__all__ = ["ClientDataContext", "error_entry", "errors_redacted", "resource_client_data",
           "scope_client_data"]

_REDACTED: ContextVar[bool] = ContextVar("flowstate_client_errors_redacted", default=False)


class ClientDataContext:
    """What a scope's client-data function sees: its own scope's state and resources only."""

    __slots__ = ("_handle", "_state", "id", "resources", "scope")

    def __init__(self, handle: ScopeHandle) -> None:
        self.scope = handle.scope
        self.id = handle.id
        self.resources: Resources = handle.resources
        self._handle = handle
        self._state: Any = None

    @property
    def state(self) -> Any:
        """The scope's typed state snapshot (read once, then shared by the functions)."""
        if self._state is None:
            self._state = self._handle.state
        return self._state

    def __repr__(self) -> str:
        return f"<ClientDataContext {self.scope} {self.id!r}>"


def error_entry(name: str, exc: BaseException) -> dict:
    """How a failing client-data function is reported in place of its value."""
    if _REDACTED.get():
        return {"error": f"{name}: {type(exc).__name__}"}
    return {"error": f"{name}: {type(exc).__name__}: {exc}"}


@contextmanager
def errors_redacted() -> Iterator[None]:
    """Within this block (this thread or task), failing client-data functions are reported
    without their exception's message."""
    token = _REDACTED.set(True)
    try:
        yield
    finally:
        _REDACTED.reset(token)


def _json(name: str, value: Any) -> Any:
    """``value`` as plain JSON (models dumped); refuses what a client could not receive."""
    value = to_jsonable_python(value)
    ops.check_json(value, where=f"client data {name!r}")
    return value


def _call(name: str, fn: Callable, arg: Any) -> Any:
    try:
        return _json(name, fn(arg))
    except Exception as exc:  # noqa: BLE001 - reported in place, the rest goes on
        return error_entry(name, exc)


def scope_client_data(handle: ScopeHandle,
                      functions: Mapping[str, Callable[[ClientDataContext], Any]]) -> dict:
    """``{key: fn(ctx)}`` for one scope; failures become ``{"error": ...}`` entries."""
    if not functions:
        return {}
    ctx = ClientDataContext(handle)
    return {name: _call(name, fn, ctx) for name, fn in functions.items()}


def resource_client_data(resources: Resources) -> dict:
    """``{name: {"client_data": ...}}`` for every resource that defines ``client_data``.

    A plain resource gives ``client_data(state)``; a collection gives ``{key: client_data(state)}``
    for each live instance. Resources without ``client_data`` do not reach a client at all.
    """
    out: dict[str, Any] = {}
    for name, definition in resources.definitions.items():
        fn = definition.client_data
        if fn is None:
            continue
        try:
            handle = resources[name]
            if isinstance(handle, CollectionHandle):
                value = {key: _call(f"{name}[{key!r}]", fn, handle.get(key).state)
                         for key in handle.list()}
            else:
                value = _call(name, fn, handle.state)
        except Exception as exc:  # noqa: BLE001 - e.g. the store failed reading it
            value = error_entry(name, exc)
        out[name] = {"client_data": value}
    return out
