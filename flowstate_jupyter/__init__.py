"""flowstate-jupyter: prototype stateful flows in notebooks.

Typed scopes (request, session, user, project) with state and named resources, atomic
version-checked operations, blocks and flows, on SQLite or PostgreSQL. See DESIGN.md.
"""

from .errors import *  # noqa: F401,F403  (every public exception)
from .errors import __all__ as _error_names
from .handles.resources import (CollectionHandle, ResourceHandle, define_resource,
                        define_resource_collection)
from .base.ids import SCOPES
from .handles.scopes import ScopeHandle
from .stores import open_store
from .flows.blocks import Block, Handler, Router, Sequencer, handler, router, sequencer
from .flows.context import Context, current_context
from .flows.flow import Action, Flow, ScopeConfig, action, define_flow, scope
from .flows.runs import RunResult
from .stores.default import default_store
from .flows.sessions import Session
from .flows.client_data import ClientDataContext

__version__ = "0.1.0"

__all__ = [
    "open_store", "ScopeHandle", "SCOPES", "define_resource", "define_resource_collection",
    "ResourceHandle", "CollectionHandle", *_error_names,
]
__all__ += [
    "handler", "router", "sequencer", "Block", "Handler", "Router", "Sequencer", "Context",
    "current_context", "define_flow", "scope", "action", "Flow", "Action",
    "ScopeConfig", "RunResult", "default_store", "Session", "ClientDataContext",
]


def load_ipython_extension(ipython):  # noqa: ANN001 - IPython's hook
    """``%load_ext flowstate_jupyter``: register the magics (imports IPython only now)."""
    from .notebook import load_ipython_extension as load
    load(ipython)


def unload_ipython_extension(ipython):  # noqa: ANN001
    """``%unload_ext flowstate_jupyter``: close the store and remove the magics."""
    from .notebook import unload_ipython_extension as unload
    unload(ipython)


from . import windmill  # noqa: E402,F401  (fs.windmill: the Windmill-compatible API, DESIGN §10)
