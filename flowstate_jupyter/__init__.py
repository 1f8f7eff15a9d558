"""flowstate-jupyter: prototype stateful flows in notebooks.

Typed scopes (request, session, user, project) with state and named resources, atomic
version-checked operations, blocks and flows, on SQLite or PostgreSQL. See DESIGN.md.
"""

from .errors import *  # noqa: F401,F403  (every public exception)
from .errors import __all__ as _error_names
from .resources import (CollectionHandle, ResourceHandle, define_resource,
                        define_resource_collection)
from .scopes import SCOPES, ScopeHandle
from .stores import open_store

__version__ = "0.1.0"

__all__ = [
    "open_store", "ScopeHandle", "SCOPES", "define_resource", "define_resource_collection",
    "ResourceHandle", "CollectionHandle", *_error_names,
]
