"""Windmill-compatible states, flow user state, resources and variables
(docs/concepts.md, 'Windmill states and resources').

A Windmill script keeps its state locally by changing one import::

    import flowstate_jupyter.windmill as wmill      # instead of: import wmill

    seen = set(wmill.get_state() or [])
    ...
    wmill.set_state(sorted(seen))

The module-level functions ``get_state``, ``set_state``, ``get_state_path``, ``get_resource``,
``set_resource``, ``list_resources``, ``set_flow_user_state``, ``get_flow_user_state``,
``get_variable`` and ``set_variable`` take exactly the parameters of the ``wmill`` client's
functions of the same names (tested against the installed ``wmill``). Failures raise; nothing is
only printed. Beyond Windmill, every write is compare-and-swap, and :func:`update_state` applies a
pure function atomically, so two processes watching the same source never lose or double an item.

**Where things live.** Everything is kept in the store's *project* scope (project id
``FLOWSTATE_PROJECT``, else ``"default"``; inside a flow run, the run's project) as records with
reserved names: ``$wm/state/<path>`` (a state: any JSON value), ``$wm/resource/<path>``
(``{"resource_type": ..., "value": ...}``), ``$wm/resource_type/<name>`` (``{"schema": ...,
"description": ...}``) and ``$wm/variable/<path>`` (``{"value": ..., "is_secret": false}``). Flow
user state lives in the *request* scope of the run (record ``$wm/flow_user_state``, one JSON
object), so it belongs to one run and no other run can see it.

**Which store.** Inside a flow run, the run's store; else the store given to :func:`use_store`;
else ``open_store()`` (``FLOWSTATE_STORE``, default ``.flowstate/flowstate.db`` under the current
folder), opened once per process and reopened when ``FLOWSTATE_STORE`` or the folder changes.

**Who is writing.** Inside a flow run, the run's user (``ctx.user.id``); else ``FLOWSTATE_USER``;
else the operating-system user. Paths under ``u/<user>/`` may be written only by that user
(:class:`~flowstate_jupyter.errors.AccessDeniedError`); ``f/<folder>/`` paths are shared by
everyone in the project. Reading is not restricted: the local store is a convenience, not a
security boundary.

**State paths** follow Windmill's rule (:func:`state_path`); see :func:`explain_state_path` for
how the script path of a notebook is found (``/repo/notebooks/01_quickstart.ipynb`` run by alice
keeps its state at ``u/alice/notebooks/01_quickstart/user``).

**Environment.** ``WM_STATE_PATH_NEW`` / ``WM_STATE_PATH``: the state path, as inside Windmill
(wins over everything). ``FLOWSTATE_SCHEDULE``: this is a scheduled run (the trigger becomes the
user name). ``FLOWSTATE_SCRIPT_PATH``: the Windmill script path of this code, instead of the one
derived from the notebook or script file. ``FLOWSTATE_NOTEBOOK_ROOT``: the folder notebook paths
are taken relative to. ``FLOWSTATE_USER``, ``FLOWSTATE_PROJECT``, ``FLOWSTATE_STORE``: who, which
project, which store. ``FLOWSTATE_VAR_<PATH>``: the value of a variable the store does not hold
(secrets; see :func:`variable_env_name`).

**Modules.** ``_where`` (the run, user, project and store of a call), ``_paths`` (path rules and
the state path), ``_states`` (states and flow user state), ``_schemas`` (JSON Schema checks),
``_resource_types``, ``_resources`` and ``_variables``.
"""

from __future__ import annotations

from ..errors import NotInFlowRunError
from ..stores.default import default_store
from ._paths import (
                     StatePathInfo,
                     check_path,
                     current_state_path,
                     explain_state_path,
                     get_state_path,
                     notebook_state_path,
                     script_path_for,
                     state_path,
)
from ._resource_types import create_resource_type, get_resource_type, list_resource_types
from ._resources import delete_resource, get_resource, list_resources, set_resource
from ._schemas import BUILTIN_RESOURCE_TYPES
from ._states import (
                     delete_state,
                     discard_flow_user_state,
                     get_flow_user_state,
                     get_state,
                     list_states,
                     set_flow_user_state,
                     set_state,
                     update_state,
)
from ._variables import get_variable, set_variable, variable_env_name
from ._where import current_project, current_user, use_store

__all__ = [
    "BUILTIN_RESOURCE_TYPES",
    "NotInFlowRunError",
    "StatePathInfo",
    "check_path",
    "create_resource_type",
    "current_project",
    "current_state_path",
    "current_user",
    "default_store",
    "delete_resource",
    "delete_state",
    "discard_flow_user_state",
    "explain_state_path",
    "get_flow_user_state",
    "get_resource",
    "get_resource_type",
    "get_state",
    "get_state_path",
    "get_variable",
    "list_resource_types",
    "list_resources",
    "list_states",
    "notebook_state_path",
    "script_path_for",
    "set_flow_user_state",
    "set_resource",
    "set_state",
    "set_variable",
    "state_path",
    "update_state",
    "use_store",
    "variable_env_name",
]
