"""flowstate-jupyter: prototype stateful flows in notebooks, then ship them.

Typed scopes (request, session, user, project) with state and named resources, atomic
version-checked operations, blocks and flows, on SQLite or PostgreSQL; magics and live widgets
with ``%load_ext flowstate_jupyter``. This module is the public face: every name users need is
here, in one sorted ``__all__``. The folders below it are the layers (docs/architecture.md):
``errors``, ``base``, ``stores`` and ``model``, ``handles``, ``flows``, ``windmill``, then
``notebook`` and ``cli``.
"""

from importlib import metadata as _metadata

from .base.ids import SCOPES
from .errors import (
    AccessDeniedError,
    ConcurrentModificationError,
    FlowStateError,
    FlowStateWarning,
    HistoryNotKeptError,
    InvalidIdError,
    LoopLimitError,
    NotInFlowRunError,
    ReadOnlyResourceError,
    ResourceAlreadyExistsError,
    ResourceConflictError,
    ResourceDeletedError,
    ResourceNotFoundError,
    RunConflictError,
    RunStateError,
    SchemaError,
    StateSchemaConflictError,
    StoreError,
    UnknownActionError,
    ValidationError,
    VersionConflictError,
)
from .flows.blocks import Block, Handler, Router, handler, router
from .flows.client_data import ClientDataContext
from .flows.compare import compare
from .flows.context import Context, current_context
from .flows.durable import Suspension
from .flows.flow import Action, Flow, ScopeConfig, action, define_flow, scope
from .flows.replay import ReplayResult
from .flows.runs import RunResult
from .flows.sequencer import Sequencer, sequencer
from .flows.sessions import Session
from .flows.trace import Span, Trace
from .handles.resources import (
    CollectionHandle,
    ResourceHandle,
    define_resource,
    define_resource_collection,
)
from .handles.scopes import ScopeHandle
from .stores import open_store
from .stores.default import default_store

try:
    __version__ = _metadata.version("flowstate-jupyter")
except _metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "SCOPES",
    "AccessDeniedError",
    "Action",
    "Block",
    "ClientDataContext",
    "CollectionHandle",
    "ConcurrentModificationError",
    "Context",
    "Flow",
    "FlowStateError",
    "FlowStateWarning",
    "Handler",
    "HistoryNotKeptError",
    "InvalidIdError",
    "LoopLimitError",
    "NotInFlowRunError",
    "ReadOnlyResourceError",
    "ReplayResult",
    "ResourceAlreadyExistsError",
    "ResourceConflictError",
    "ResourceDeletedError",
    "ResourceHandle",
    "ResourceNotFoundError",
    "Router",
    "RunConflictError",
    "RunResult",
    "RunStateError",
    "SchemaError",
    "ScopeConfig",
    "ScopeHandle",
    "Sequencer",
    "Session",
    "Span",
    "StateSchemaConflictError",
    "StoreError",
    "Suspension",
    "Trace",
    "UnknownActionError",
    "ValidationError",
    "VersionConflictError",
    "action",
    "compare",
    "current_context",
    "default_store",
    "define_flow",
    "define_resource",
    "define_resource_collection",
    "handler",
    "open_store",
    "router",
    "scope",
    "sequencer",
]


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext flowstate_jupyter``: register the magics (imports IPython only now)."""
    from .notebook import load_ipython_extension as load
    load(ipython)


def unload_ipython_extension(ipython: object) -> None:
    """``%unload_ext flowstate_jupyter``: close the store and remove the magics."""
    from .notebook import unload_ipython_extension as unload
    unload(ipython)


from . import windmill  # noqa: E402,F401  (fs.windmill: the Windmill-compatible API)
