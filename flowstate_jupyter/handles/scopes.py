"""Scope handles: the typed state of one request, session, user or project, and its resources.

A :class:`ScopeHandle` is what blocks see as ``ctx.session`` (and ``ctx.user``, ...) and what a
notebook gets from ``flow.session(...)``. It owns no data: every read goes to the store and every
write is one version-checked operation (see ``records.py``). docs/concepts.md ("Scopes", "State
operations") says what scopes and their operations promise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from ..base.ids import check_id, check_scope
from ..stores.base import Store
from .records import RecordHandle
from .resources import CollectionDefinition, ResourceDefinition, Resources


class ScopeHandle(RecordHandle):
    """The typed state and resources of one scope instance (docs/concepts.md, "Scopes").

    ``state`` is a pydantic model (every field with a default) or ``None`` for free-form JSON;
    ``resources`` maps names to :func:`define_resource` / :func:`define_resource_collection`
    definitions. ``request_id`` tags the events this handle's writes emit.
    """

    def __init__(self, store: Store, scope: str, scope_id: str, *,
                 state: type[BaseModel] | None = None,
                 resources: Mapping[str, ResourceDefinition | CollectionDefinition] | None = None,
                 request_id: str | None = None) -> None:
        super().__init__(store, check_scope(scope), check_id(scope_id, f"{scope} id"), "",
                         state, where=f"{scope} {scope_id!r}", request_id=request_id)
        self._resources = Resources(store, scope, scope_id, dict(resources or {}),
                                    request_id=request_id)

    @property
    def id(self) -> str:
        return self._scope_id

    @property
    def scope(self) -> str:
        return self._scope

    @property
    def model(self) -> type[BaseModel] | None:
        """The (merged) state model of this scope, or None for free-form state."""
        return self._model

    @property
    def resources(self) -> Resources:
        """Named resources: ``handle.resources["plan"]`` or ``handle.resources.plan``."""
        return self._resources

    def _event(self, operation: str, delta: Any, path: str | None, existed: bool) -> dict:
        return {"type": "state_change", "scope": self._scope, "scope_id": self._scope_id,
                "operation": operation, "path": path, "delta": delta,
                "request_id": self._request_id}

    def __repr__(self) -> str:
        return f"<ScopeHandle {self._scope} {self._scope_id!r} v{self.version}>"

    def _repr_html_(self) -> str:
        from ..model.display import scope_html
        return scope_html(self)
