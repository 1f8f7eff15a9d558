"""Windmill-compatible states, flow user state, resources and variables (DESIGN §10).

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
"""

from __future__ import annotations

import functools
import getpass
import os
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..model import ops
from ._resource_types import (BUILTIN_RESOURCE_TYPES, check_schema, check_type_name, json_path,
                              validate_value)
from ..errors import (AccessDeniedError, FlowStateError, InvalidIdError,
                     ResourceAlreadyExistsError, ResourceNotFoundError, ValidationError)
from ..handles.records import drive, to_json
from ..base.ids import DEFAULT_PROJECT, check_id
from ..stores import DEFAULT_URL, open_store
from ..stores.base import Change, Record, Store

__all__ = [
    # the wmill client's functions
    "get_state", "set_state", "get_state_path", "get_resource", "set_resource",
    "list_resources", "set_flow_user_state", "get_flow_user_state", "get_variable",
    "set_variable",
    # beyond Windmill
    "update_state", "delete_state", "list_states", "state_path", "StatePathInfo",
    "explain_state_path", "current_state_path", "notebook_state_path", "script_path_for",
    "create_resource_type", "get_resource_type", "list_resource_types", "delete_resource",
    "discard_flow_user_state", "current_user", "current_project", "use_store", "default_store",
    "check_path", "NotInFlowRunError", "variable_env_name", "BUILTIN_RESOURCE_TYPES",
]

SCOPE = "project"
STATE_PREFIX = "$wm/state/"
RESOURCE_PREFIX = "$wm/resource/"
RESOURCE_TYPE_PREFIX = "$wm/resource_type/"
VARIABLE_PREFIX = "$wm/variable/"
FLOW_USER_STATE = "$wm/flow_user_state"

#: What DESIGN §10 puts in place of an empty script name (a script path ending in ``/``).
EMPTY_SCRIPT_NAME = "noname"
#: The script name a notebook gets when its own file cannot be found.
DEFAULT_NOTEBOOK_NAME = "notebook"
#: Environment variable prefix :func:`get_variable` falls back to (see :func:`variable_env_name`).
VARIABLE_ENV_PREFIX = "FLOWSTATE_VAR_"

_MAX_PATH = 255
_BAD_PATH_CHARS = re.compile(r"[\s\\\x00-\x1f\x7f]")
_UNSAFE_SEGMENT = re.compile(r"[^A-Za-z0-9._-]+")
_ENV_UNSAFE = re.compile(r"[^A-Za-z0-9]+")


class NotInFlowRunError(FlowStateError, RuntimeError):
    """Flow user state was used outside a flow run, where there is none."""


class _TypeChanged(Exception):
    """Internal: a resource's type changed between planning a write and committing it."""


# ---------------------------------------------------------------------------- context

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


def _os_user() -> str:
    try:
        name = getpass.getuser()
    except Exception:  # no user name in the environment or the password database
        name = ""
    return name or "local"


def _env_user() -> str:
    name = os.environ.get("FLOWSTATE_USER") or _os_user()
    try:
        return check_id(name, "user name")
    except InvalidIdError as exc:
        source = "FLOWSTATE_USER" if os.environ.get("FLOWSTATE_USER") else "the OS user name"
        raise InvalidIdError(f"{exc} (from {source}); set FLOWSTATE_USER to a usable "
                             f"name") from None


def _user_of(ctx: Any) -> str:
    user = _ctx_attr(ctx, "user", "id")
    return user if isinstance(user, str) and user else _env_user()


def _project_of(ctx: Any) -> str:
    project = _ctx_attr(ctx, "project", "id")
    if isinstance(project, str) and project:
        return project
    return check_id(os.environ.get("FLOWSTATE_PROJECT") or DEFAULT_PROJECT, "project id")


def current_user() -> str:
    """Who is writing: the run's user inside a flow run, else ``FLOWSTATE_USER``, else the OS user."""
    return _user_of(_context())


def current_project() -> str:
    """The project whose scope holds states and resources: the run's, ``FLOWSTATE_PROJECT`` or
    ``"default"``."""
    return _project_of(_context())


# ---------------------------------------------------------------------------- the store

_lock = threading.RLock()
_override: Store | None = None
_cached: tuple[tuple, Store] | None = None


def default_store() -> Store:
    """``open_store()``, opened once per process and reused: the same store flow runs use.

    Reopened when ``FLOWSTATE_STORE`` or the current folder changes, or when it was closed.
    """
    try:
        from ..flows.runs import default_store as runs_default_store
    except ImportError:  # the flow layer is optional for this module
        return _own_default_store()
    return runs_default_store()


def _own_default_store() -> Store:
    global _cached
    url = os.environ.get("FLOWSTATE_STORE") or DEFAULT_URL
    try:
        cwd = os.getcwd()
    except OSError:  # the current folder was removed
        cwd = ""
    key = (os.getpid(), url, cwd)
    with _lock:
        if _cached is not None and _cached[0] == key and not getattr(_cached[1], "_closed", False):
            return _cached[1]
        store = open_store(url)
        _cached = (key, store)
        return store


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


# ---------------------------------------------------------------------------- paths

def check_path(path: Any, what: str = "path") -> str:
    """Return ``path`` if it is a Windmill path, else raise :class:`InvalidIdError`.

    A path is ``u/<user>/<name>[/...]`` or ``f/<folder>/<name>[/...]``: at least three
    segments, none empty, none ``.`` or ``..``, no whitespace, backslash or control character,
    at most 255 characters.
    """
    if not isinstance(path, str):
        raise InvalidIdError(f"{what} must be a string like 'u/alice/name' or 'f/folder/name', "
                             f"not {type(path).__name__}")
    shown = repr(path if len(path) <= 80 else path[:77] + "...")
    segments = path.split("/")
    if segments[0] not in ("u", "f") or len(segments) < 3:
        raise InvalidIdError(f"{what} {shown} is not a Windmill path: use u/<user>/<name> "
                             f"(yours) or f/<folder>/<name> (shared)")
    if len(path) > _MAX_PATH:
        raise InvalidIdError(f"{what} {shown} is {len(path)} characters long; the limit is "
                             f"{_MAX_PATH}")
    for segment in segments:
        if segment == "":
            raise InvalidIdError(f"{what} {shown} has an empty segment ('//' or a '/' at an "
                                 f"end); remove it")
        if segment in (".", ".."):
            raise InvalidIdError(f"{what} {shown} contains {segment!r}; paths are names, not "
                                 f"relative file paths")
    bad = _BAD_PATH_CHARS.search(path)
    if bad:
        raise InvalidIdError(f"{what} {shown} contains {bad.group()!r}; use letters, digits "
                             f"and . _ - @ in path segments")
    return path


def _check_write(path: str, user: str, what: str) -> None:
    owner = path.split("/")[1] if path.startswith("u/") else None
    if owner is not None and owner != user:
        raise AccessDeniedError(
            f"user {user!r} may not write {what} {path!r}: paths under u/{owner}/ belong to "
            f"user {owner!r}; write under u/{user}/... or in a shared folder f/<folder>/...")


def _strip_prefix(path: Any, prefixes: tuple[str, ...]) -> Any:
    if isinstance(path, str):
        for prefix in prefixes:
            if path.startswith(prefix):
                return path[len(prefix):]
    return path


def _resource_path(path: Any) -> str:
    return check_path(_strip_prefix(path, ("$res:", "res://")), "resource path")


def _variable_path(path: Any) -> str:
    return check_path(_strip_prefix(path, ("$var:", "var://")), "variable path")


# ---------------------------------------------------------------------------- state paths

def state_path(*, username: str, script_path: str | None = None, flow_path: str | None = None,
               step_id: str | None = None, schedule_path: str | None = None) -> str:
    """Windmill's state path rule (DESIGN §10), as a pure function.

    The trigger is ``username`` for a scheduled run (``schedule_path`` given) and ``"user"``
    otherwise. In a flow step: ``{flow_path}/{step_id or "nostep"}_{trigger}``; in a script or
    notebook: ``{script_path}/{trigger}``, where a script path ending in ``/`` gets the name
    ``noname``; with neither: ``u/{username}/tmp_state``. (Windmill's own ``variables.rs``
    appends ``state`` there instead; this follows DESIGN §10, see ``EMPTY_SCRIPT_NAME``.)

    >>> state_path(username="alice", flow_path="f/flows/etl", step_id="a")
    'f/flows/etl/a_user'
    >>> state_path(username="alice", script_path="u/alice/watch", schedule_path="f/s/hourly")
    'u/alice/watch/alice'
    """
    trigger = username if schedule_path is not None else "user"
    if flow_path:
        return f"{flow_path}/{step_id or 'nostep'}_{trigger}"
    if script_path:
        if script_path.endswith("/"):
            script_path += EMPTY_SCRIPT_NAME
        return f"{script_path}/{trigger}"
    return f"u/{username}/tmp_state"


@dataclass(frozen=True)
class StatePathInfo:
    """A state path and how it was found (what ``%state path`` shows).

    ``source`` is one of ``"WM_STATE_PATH_NEW"``, ``"WM_STATE_PATH"`` (the environment, as
    inside Windmill), ``"flow"`` (a block in a flow run), ``"FLOWSTATE_SCRIPT_PATH"``,
    ``"vscode"`` (VS Code's ``__vsc_ipynb_file__``), ``"jupyter"`` (``JPY_SESSION_NAME``),
    ``"notebook-default"`` (IPython without a known notebook file), ``"script"`` (the running
    ``.py`` file) or ``"none"`` (``u/<user>/tmp_state``).
    """

    path: str
    source: str
    username: str
    script_path: str | None = None
    flow_path: str | None = None
    step_id: str | None = None
    schedule_path: str | None = None
    file: str | None = None


def _project_root(file: Path) -> Path:
    root = os.environ.get("FLOWSTATE_NOTEBOOK_ROOT")
    if root:
        return Path(root).expanduser().absolute()
    return _marked_root(file)


@functools.lru_cache(maxsize=64)
def _marked_root(file: Path) -> Path:
    """The nearest folder above ``file`` holding ``.git`` or ``pyproject.toml`` (cached: it is
    looked up on every ``get_state()``), else the file's folder."""
    for parent in file.parents:
        if (parent / ".git").exists() or (parent / "pyproject.toml").exists():
            return parent
    return file.parent


def _segment(text: str) -> str:
    text = _UNSAFE_SEGMENT.sub("_", text).strip("_") or "_"
    return "_" if text in (".", "..") else text


def script_path_for(file: str | os.PathLike, *, username: str | None = None,
                    root: str | os.PathLike | None = None) -> str:
    """The Windmill script path of a notebook or script file: ``u/{username}/{relative path}``.

    The path is taken relative to ``root``, else ``FLOWSTATE_NOTEBOOK_ROOT``, else the nearest
    folder above the file holding ``.git`` or ``pyproject.toml``, else the file's own folder; a
    relative ``file`` is used as it is. The ``.ipynb`` / ``.py`` suffix is dropped and characters
    other than letters, digits and ``. _ -`` become ``_``, so
    ``/repo/notebooks/01_quickstart.ipynb`` becomes ``u/alice/notebooks/01_quickstart``.
    """
    username = username or current_user()
    path = Path(os.fspath(file)).expanduser()
    if path.is_absolute():
        base = Path(root).expanduser().absolute() if root is not None else _project_root(path)
        try:
            rel_parts = path.relative_to(base).parts
        except ValueError:
            rel_parts = (path.name,)
    else:
        rel_parts = path.parts
    parts = [p for p in rel_parts if p not in ("", ".", "..")] or [DEFAULT_NOTEBOOK_NAME]
    last = parts[-1]
    for suffix in (".ipynb", ".py"):
        if last.endswith(suffix) and len(last) > len(suffix):
            parts[-1] = last[: -len(suffix)]
            break
    return "/".join(["u", username, *(_segment(p) for p in parts)])


def _ipython() -> Any:
    """The running IPython shell, without importing IPython when it is not loaded already."""
    module = sys.modules.get("IPython")
    get = getattr(module, "get_ipython", None)
    try:
        return get() if get is not None else None
    except Exception:
        return None


def _main_script() -> str | None:
    main = sys.modules.get("__main__")
    file = getattr(main, "__file__", None)
    if not isinstance(file, str) or not file.endswith(".py"):
        return None
    if "site-packages" in file or "dist-packages" in file:
        return None  # a tool's entry point (pytest, ipykernel...), not the user's script
    return os.path.abspath(file)


def _script_origin(username: str) -> tuple[str | None, str, str | None]:
    """(script path, source, file) for code running outside flows."""
    explicit = os.environ.get("FLOWSTATE_SCRIPT_PATH")
    if explicit:
        return check_path(explicit, "FLOWSTATE_SCRIPT_PATH"), "FLOWSTATE_SCRIPT_PATH", None
    shell = _ipython()
    if shell is not None:
        vsc = getattr(shell, "user_ns", {}).get("__vsc_ipynb_file__")
        if isinstance(vsc, str) and vsc:
            return script_path_for(vsc, username=username), "vscode", vsc
    session = os.environ.get("JPY_SESSION_NAME")
    if session:
        return script_path_for(session, username=username), "jupyter", session
    if shell is not None:
        return f"u/{username}/{DEFAULT_NOTEBOOK_NAME}", "notebook-default", None
    script = _main_script()
    if script is not None:
        return script_path_for(script, username=username), "script", script
    return None, "none", None


def explain_state_path(*, in_flow: bool = True) -> StatePathInfo:
    """The state path :func:`get_state` uses here, and where it came from.

    In order: ``WM_STATE_PATH_NEW`` or ``WM_STATE_PATH`` when set (as inside Windmill); inside a
    flow run (unless ``in_flow=False``), the running block's flow-step path; else the script
    path of this notebook or script — ``FLOWSTATE_SCRIPT_PATH`` if set, VS Code's
    ``__vsc_ipynb_file__``, jupyter_server's ``JPY_SESSION_NAME``, ``u/<user>/notebook`` in an
    IPython without a known notebook file, the running ``.py`` file (see
    :func:`script_path_for`); else ``u/<user>/tmp_state``. The trigger is ``user``, or the user
    name when ``FLOWSTATE_SCHEDULE`` is set (a scheduled run, e.g. under papermill or cron).
    """
    for name in ("WM_STATE_PATH_NEW", "WM_STATE_PATH"):
        value = os.environ.get(name)
        if value:
            return StatePathInfo(value, name, current_user() if in_flow else _env_user())
    schedule = os.environ.get("FLOWSTATE_SCHEDULE") or None
    ctx = _context() if in_flow else None
    flow_path = _ctx_attr(ctx, "flow_path")
    if flow_path:
        username = _user_of(ctx)
        step_id = _ctx_attr(ctx, "step_id")
        path = state_path(username=username, flow_path=flow_path, step_id=step_id,
                          schedule_path=schedule)
        return StatePathInfo(path, "flow", username, flow_path=flow_path, step_id=step_id,
                             schedule_path=schedule)
    username = _user_of(ctx)
    script, source, file = _script_origin(username)
    path = state_path(username=username, script_path=script, schedule_path=schedule)
    return StatePathInfo(path, source, username, script_path=script, schedule_path=schedule,
                         file=file)


def get_state_path() -> str:
    """The state path of this script, notebook or flow step (see :func:`explain_state_path`)."""
    return explain_state_path().path


def current_state_path() -> str:
    """Same as :func:`get_state_path`: the path :func:`get_state` uses where it is called."""
    return explain_state_path().path


def notebook_state_path() -> str:
    """The state path of this notebook's own cells (outside flow runs); what ``%state path``
    prints. The environment (``WM_STATE_PATH_NEW`` / ``WM_STATE_PATH``) still wins."""
    return explain_state_path(in_flow=False).path


def _state_path_arg(path: str | None) -> str:
    if path is None:
        return check_path(get_state_path(), "state path")
    return check_path(_strip_prefix(path, ("$res:", "res://")), "state path")


# ---------------------------------------------------------------------------- states

def _live(record: Record | None) -> bool:
    return record is not None and not record.deleted


def _refuse_resource_at(env: _Env, path: str) -> None:
    """A state may not take the path of a resource of another type (Windmill: one namespace)."""
    record = env.store.read(SCOPE, env.project, RESOURCE_PREFIX + path)
    if _live(record):
        rtype = record.state.get("resource_type")
        raise ValidationError(
            f"Windmill state {path!r}: that path holds a resource of type {rtype!r}; states and "
            f"resources share one namespace, so pick another state path or delete the resource",
            where=f"Windmill state {path!r}", reason="path holds a resource")


def get_state(path: str | None = None) -> Any:
    """The state kept at ``path`` (default: :func:`get_state_path`), or ``None`` if never set.

    Like Windmill, a path that holds a resource instead reads as that resource's value.
    """
    env = _env()
    path = _state_path_arg(path)
    record = env.store.read(SCOPE, env.project, STATE_PREFIX + path)
    if _live(record):
        return record.state
    resource = env.store.read(SCOPE, env.project, RESOURCE_PREFIX + path)
    return resource.state.get("value") if _live(resource) else None


def set_state(value: Any, path: str | None = None) -> None:
    """Keep ``value`` (any JSON) at ``path`` (default: :func:`get_state_path`).

    One compare-and-swap write; storing a value equal to the current one writes nothing.
    To change the state based on what is there, use :func:`update_state`, which never loses a
    concurrent update.
    """
    env = _env()
    path = _state_path_arg(path)
    where = f"Windmill state {path!r}"
    _check_write(path, env.user, "state")
    new = ops.copy_json(to_json(value), where=where)
    _refuse_resource_at(env, path)

    def fn(record: Record | None) -> Change | None:
        if _live(record) and ops.json_equal(record.state, new):
            return None
        return Change(state=new, operation="set", request_id=env.request_id)

    drive(env.store, SCOPE, env.project, STATE_PREFIX + path, fn, where=where)


def update_state(fn: Callable[[Any], Any], path: str | None = None) -> Any:
    """Apply ``fn(current) -> new`` to the state atomically and return the new state.

    ``fn`` gets the current value (``None`` if never set; a private copy, so mutating it is
    harmless) and runs inside the store's write transaction, so concurrent writers in other
    threads or processes never lose an update. It may run more than once: keep it pure (do the
    fetching before, and collect what it decided in a variable you reset at its start). When the
    result equals the current value nothing is written. For example::

        update_state(lambda seen: sorted(set(seen or []) | {"a1", "a2"}))
    """
    if not callable(fn):
        raise TypeError(f"update_state takes a function, not {type(fn).__name__}")
    env = _env()
    path = _state_path_arg(path)
    where = f"Windmill state {path!r}"
    _check_write(path, env.user, "state")
    _refuse_resource_at(env, path)
    outcome: dict[str, Any] = {}

    def change(record: Record | None) -> Change | None:
        current = record.state if _live(record) else None
        new = ops.copy_json(to_json(fn(ops.copy_json(current, where=where))), where=where)
        outcome["value"] = new
        if ops.json_equal(new, current) and (_live(record) or new is None):
            return None
        return Change(state=new, operation="atomic", request_id=env.request_id)

    drive(env.store, SCOPE, env.project, STATE_PREFIX + path, change, where=where)
    return outcome.get("value")


def delete_state(path: str | None = None) -> bool:
    """Forget the state at ``path`` (default: :func:`get_state_path`); True if there was one."""
    env = _env()
    path = _state_path_arg(path)
    _check_write(path, env.user, "state")
    return env.store.delete(SCOPE, env.project, STATE_PREFIX + path,
                            request_id=env.request_id) is not None


def list_states(prefix: str = "", *, store: Store | None = None,
                project: str | None = None) -> list[dict]:
    """Every Windmill state of the project, sorted by path (what the Inspector's tab lists).

    Each item: ``{"path", "value", "version", "created_at", "updated_at"}`` (times in seconds
    since the epoch). ``prefix`` keeps only paths starting with it (e.g. ``"u/alice/"``);
    ``store`` and ``project`` default to the ones :func:`get_state` uses here.
    """
    env = _env(store)
    project = env.project if project is None else check_id(project, "project id")
    records = env.store.list(SCOPE, project, prefix=STATE_PREFIX + prefix)
    return [{"path": r.name[len(STATE_PREFIX):], "value": r.state, "version": r.version,
             "created_at": r.created_at, "updated_at": r.updated_at} for r in records]


# ---------------------------------------------------------------------------- flow user state

def _run(what: str) -> _Env:
    env = _env()
    if env.ctx is None or env.request_id is None:
        raise NotInFlowRunError(
            f"{what} works only inside a flow run (a block running through flow.run); there is "
            f"no flow user state outside a run. To keep a value between runs use get_state() / "
            f"set_state() instead")
    return env


def _check_key(key: Any, what: str) -> str:
    if not isinstance(key, str) or not key:
        raise ValidationError(f"{what}: the key must be a non-empty string, not {key!r}",
                              where="flow user state", reason="bad key")
    return key


def set_flow_user_state(key: str, value: Any) -> None:
    """Set ``key`` of this flow run's user state (kept with the run, gone after it)."""
    what = f"set_flow_user_state({key!r}, ...)"
    key = _check_key(key, what)
    env = _run(what)
    where = f"flow user state of request {env.request_id!r}"
    new = ops.copy_json(to_json(value), where=where, path=(key,))

    def fn(record: Record | None) -> Change | None:
        state = dict(record.state) if _live(record) and isinstance(record.state, dict) else {}
        if key in state and ops.json_equal(state[key], new):
            return None
        state[key] = new
        return Change(state=state, operation="set_record", request_id=env.request_id)

    drive(env.store, "request", env.request_id, FLOW_USER_STATE, fn, where=where)


def get_flow_user_state(key: str) -> Any:
    """The value of ``key`` in this flow run's user state, or ``None`` if it was not set."""
    what = f"get_flow_user_state({key!r})"
    key = _check_key(key, what)
    env = _run(what)
    record = env.store.read("request", env.request_id, FLOW_USER_STATE)
    if not _live(record) or not isinstance(record.state, dict):
        return None
    return record.state.get(key)


def discard_flow_user_state(request_id: str, *, store: Store | None = None) -> bool:
    """Delete the flow user state of one run (for the flow runner to call when a run ends).

    Not needed for isolation (no other run can address it), only to free the space.
    """
    env = _env(store)
    return env.store.delete("request", request_id, FLOW_USER_STATE) is not None


# ---------------------------------------------------------------------------- resource types

def create_resource_type(name: str, schema: Any, description: str | None = None, *,
                         replace: bool = False, store: Store | None = None) -> None:
    """Define resource type ``name`` by a JSON Schema; values are validated against it on write.

    The schema itself is checked first (with the draft its ``$schema`` names, else 2020-12).
    Creating a type that exists with the same schema and description does nothing; with a
    different one it raises :class:`ResourceAlreadyExistsError` unless ``replace=True``
    (existing resources are not re-validated). ``"any"`` and ``"state"`` are built in.
    """
    name = check_type_name(name)
    if name in BUILTIN_RESOURCE_TYPES:
        raise ResourceAlreadyExistsError(f"resource type {name!r} is built in and cannot be "
                                         f"redefined; choose another name")
    if description is not None and not isinstance(description, str):
        raise ValidationError(f"resource type {name!r}: description must be a string",
                              where=f"resource type {name!r}", reason="bad description")
    check_schema(name, schema)
    env = _env(store)
    new = {"schema": ops.copy_json(schema, where=f"resource type {name!r}"),
           "description": description or ""}

    def fn(record: Record | None) -> Change | None:
        if _live(record):
            if ops.json_equal(record.state, new):
                return None
            if not replace:
                raise ResourceAlreadyExistsError(
                    f"resource type {name!r} already exists with another schema; pass "
                    f"replace=True to redefine it")
        return Change(state=new, operation="set", request_id=env.request_id)

    drive(env.store, SCOPE, env.project, RESOURCE_TYPE_PREFIX + name, fn,
          where=f"resource type {name!r}")


def get_resource_type(name: str, *, store: Store | None = None) -> dict:
    """``{"name", "schema", "description"}`` of a resource type; ResourceNotFoundError if unknown."""
    name = check_type_name(name)
    if name in BUILTIN_RESOURCE_TYPES:
        return {"name": name, **ops.copy_json(BUILTIN_RESOURCE_TYPES[name], where=name)}
    env = _env(store)
    record = env.store.read(SCOPE, env.project, RESOURCE_TYPE_PREFIX + name)
    if not _live(record):
        raise ResourceNotFoundError(
            f"resource type {name!r} does not exist in project {env.project!r}; define it with "
            f"create_resource_type({name!r}, schema) or use 'any'")
    return {"name": name, **record.state}


def list_resource_types(*, store: Store | None = None) -> list[dict]:
    """Every resource type (built-in ones first), as :func:`get_resource_type` gives them."""
    env = _env(store)
    out = [{"name": n, **ops.copy_json(t, where=n)} for n, t in BUILTIN_RESOURCE_TYPES.items()]
    for record in env.store.list(SCOPE, env.project, prefix=RESOURCE_TYPE_PREFIX):
        out.append({"name": record.name[len(RESOURCE_TYPE_PREFIX):], **record.state})
    return out


def _type_schema(env: _Env, type_name: str) -> Any:
    if type_name in BUILTIN_RESOURCE_TYPES:
        return BUILTIN_RESOURCE_TYPES[type_name]["schema"]
    record = env.store.read(SCOPE, env.project, RESOURCE_TYPE_PREFIX + type_name)
    if not _live(record):
        raise ValidationError(
            f"resource type {type_name!r} does not exist in project {env.project!r}; define it "
            f"with create_resource_type({type_name!r}, schema) first, or use 'any'",
            where=f"resource type {type_name!r}", reason="unknown resource type")
    return record.state["schema"]


# ---------------------------------------------------------------------------- resources

def set_resource(path: str, value: Any, resource_type: str = "any") -> None:
    """Create or update the resource at ``path``, validating ``value`` against its type.

    A new resource gets ``resource_type``; an existing one keeps its type (as in Windmill), and
    naming a different type than ``"any"`` for it is refused. ``resource_type="state"`` (or a
    path that already holds a state) writes the state at that path. A value that does not match
    the type's JSON Schema raises :class:`ValidationError` naming the JSON path (``$.port``) and
    nothing is stored. ``u/<other user>/...`` raises :class:`AccessDeniedError`.
    """
    path = _resource_path(path)
    if not isinstance(resource_type, str):
        raise InvalidIdError(f"resource_type must be a string, not {type(resource_type).__name__}")
    env = _env()
    where = f"Windmill resource {path!r}"
    _check_write(path, env.user, "resource")
    new_value = ops.copy_json(to_json(value), where=where)
    name = RESOURCE_PREFIX + path
    for _attempt in range(5):
        record = env.store.read(SCOPE, env.project, name)
        if not _live(record):
            has_state = _live(env.store.read(SCOPE, env.project, STATE_PREFIX + path))
            if resource_type == "state" or (resource_type == "any" and has_state):
                set_state(new_value, path)
                return
            if has_state:
                raise ValidationError(
                    f"{where}: that path holds a state; states and resources share one "
                    f"namespace, so pick another path or delete the state",
                    where=where, reason="path holds a state")
            type_name = check_type_name(resource_type)
        else:
            type_name = record.state["resource_type"]
            if resource_type not in ("any", type_name):
                raise ValidationError(
                    f"{where} is of type {type_name!r}, not {resource_type!r}; a resource keeps "
                    f"the type it was created with (delete_resource it first to change it)",
                    where=where, reason="resource type mismatch")
        validate_value(path, type_name, _type_schema(env, type_name), new_value)
        planned = type_name

        def fn(current: Record | None) -> Change | None:
            current_type = current.state["resource_type"] if _live(current) else None
            if _live(current) != _live(record) or (current_type or planned) != planned:
                raise _TypeChanged
            state = {"resource_type": planned, "value": new_value}
            if _live(current) and ops.json_equal(current.state, state):
                return None
            return Change(state=state, operation="set", request_id=env.request_id)

        try:
            drive(env.store, SCOPE, env.project, name, fn, where=where)
            return
        except _TypeChanged:
            continue
    raise FlowStateError(f"{where}: other writers kept recreating it with other types; retry")


def get_resource(path: str, none_if_undefined: bool = False,
                 interpolated: bool = True) -> dict | None:
    """The value of the resource at ``path`` (``$res:`` / ``res://`` prefixes accepted).

    A missing resource raises :class:`ResourceNotFoundError`, or returns ``None`` with
    ``none_if_undefined=True``. With ``interpolated=True`` (the default, as in ``wmill``),
    strings ``"$var:<path>"`` and ``"$res:<path>"`` inside the value (in objects and lists, at any
    depth) are replaced by that variable's or resource's value; a reference that cannot be
    resolved raises (even with ``none_if_undefined``, which is about ``path`` itself), and so
    does a cycle of references. A path that holds a state reads as the state.
    """
    path = _resource_path(path)
    env = _env()
    value, found = _read_resource(env, path)
    if not found:
        if none_if_undefined:
            return None
        raise ResourceNotFoundError(
            f"resource {path!r} not found in project {env.project!r}; create it with "
            f"set_resource({path!r}, value, resource_type)")
    if interpolated:
        value = _interpolate(env, value, (path,), ())
    return value


def _read_resource(env: _Env, path: str) -> tuple[Any, bool]:
    record = env.store.read(SCOPE, env.project, RESOURCE_PREFIX + path)
    if _live(record):
        return record.state.get("value"), True
    state = env.store.read(SCOPE, env.project, STATE_PREFIX + path)
    if _live(state):
        return state.state, True
    return None, False


def _interpolate(env: _Env, value: Any, chain: tuple[str, ...], at: tuple) -> Any:
    if isinstance(value, str):
        if value.startswith("$var:"):
            return _lookup_variable(env, _variable_path(value), f"{chain[-1]} at {json_path(at)}")
        if value.startswith("$res:"):
            target = _resource_path(value)
            if target in chain:
                cycle = " -> ".join((*chain, target))
                raise ValidationError(f"resource references form a cycle: {cycle}",
                                      where=f"Windmill resource {chain[0]!r}", path=at,
                                      reason="reference cycle")
            resolved, found = _read_resource(env, target)
            if not found:
                raise ResourceNotFoundError(
                    f"resource {chain[-1]!r} refers at {json_path(at)} to '$res:{target}', "
                    f"which does not exist in project {env.project!r}")
            return _interpolate(env, resolved, (*chain, target), ())
        return value
    if isinstance(value, dict):
        return {k: _interpolate(env, v, chain, (*at, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(env, v, chain, (*at, i)) for i, v in enumerate(value)]
    return value


def list_resources(resource_type: str = None, page: int = None,
                   per_page: int = None) -> list[dict]:
    """Resources of the project sorted by path, states included (as type ``"state"``).

    ``resource_type`` keeps one type, or several separated by commas. Each item:
    ``{"path", "resource_type", "value", "description", "version", "created_at",
    "updated_at"}``. ``page`` (from 1) and ``per_page`` (default 100 when ``page`` is given)
    paginate; with neither, everything is returned.
    """
    env = _env()
    wanted = None if resource_type is None else {t.strip() for t in resource_type.split(",")}
    items: list[dict] = []
    if wanted is None or wanted - {"state"}:
        for r in env.store.list(SCOPE, env.project, prefix=RESOURCE_PREFIX):
            rtype = r.state.get("resource_type")
            if wanted is None or rtype in wanted:
                items.append({"path": r.name[len(RESOURCE_PREFIX):], "resource_type": rtype,
                              "value": r.state.get("value"), "description": "",
                              "version": r.version, "created_at": r.created_at,
                              "updated_at": r.updated_at})
    if wanted is None or "state" in wanted:
        for s in list_states(store=env.store):
            items.append({"path": s["path"], "resource_type": "state", "value": s["value"],
                          "description": "", "version": s["version"],
                          "created_at": s["created_at"], "updated_at": s["updated_at"]})
    items.sort(key=lambda item: item["path"])
    if page is None and per_page is None:
        return items
    for label, number in (("page", page), ("per_page", per_page)):
        if number is not None and (not isinstance(number, int) or isinstance(number, bool)
                                   or number < 1):
            raise ValidationError(f"list_resources: {label} must be an int >= 1, not {number!r}",
                                  where="list_resources", reason=f"bad {label}")
    page, per_page = page or 1, per_page or 100
    return items[(page - 1) * per_page: page * per_page]


def delete_resource(path: str) -> bool:
    """Delete the resource at ``path``; True if there was one (the usual write rules apply)."""
    path = _resource_path(path)
    env = _env()
    _check_write(path, env.user, "resource")
    return env.store.delete(SCOPE, env.project, RESOURCE_PREFIX + path,
                            request_id=env.request_id) is not None


# ---------------------------------------------------------------------------- variables

def variable_env_name(path: str) -> str:
    """The environment variable :func:`get_variable` reads when ``path`` is not stored:
    ``FLOWSTATE_VAR_`` + the path upper-cased with every run of other characters as ``_``
    (``u/alice/api_key`` -> ``FLOWSTATE_VAR_U_ALICE_API_KEY``)."""
    return VARIABLE_ENV_PREFIX + _ENV_UNSAFE.sub("_", path).strip("_").upper()


def _lookup_variable(env: _Env, path: str, used_by: str | None = None) -> str:
    record = env.store.read(SCOPE, env.project, VARIABLE_PREFIX + path)
    if _live(record):
        return record.state["value"]
    from_env = os.environ.get(variable_env_name(path))
    if from_env is not None:
        return from_env
    context = f" (used by {used_by})" if used_by else ""
    raise ResourceNotFoundError(
        f"variable {path!r}{context} not found in project {env.project!r} nor in the "
        f"environment as {variable_env_name(path)}; set it with set_variable({path!r}, value), "
        f"or export {variable_env_name(path)}=... for a secret")


def get_variable(path: str) -> str:
    """The variable at ``path`` (``$var:`` / ``var://`` prefixes accepted).

    When the store does not hold it, the environment variable :func:`variable_env_name` names is
    used (that is where secrets belong); else :class:`ResourceNotFoundError`.
    """
    path = _variable_path(path)
    return _lookup_variable(_env(), path)


def set_variable(path: str, value: str, is_secret: bool = False) -> None:
    """Create or update the (plain-text) variable at ``path``.

    ``is_secret=True`` is refused: the local store is not encrypted. Put secrets in environment
    variables instead (:func:`get_variable` reads them).
    """
    path = _variable_path(path)
    where = f"Windmill variable {path!r}"
    if is_secret:
        raise ValidationError(
            f"{where}: secret variables are not stored, because the local flowstate store is not "
            f"encrypted; put the secret in an environment variable instead (export "
            f"{variable_env_name(path)}=...), which get_variable({path!r}) reads",
            where=where, reason="secrets are not stored")
    if not isinstance(value, str):
        raise ValidationError(f"{where}: a variable's value is a string, not "
                              f"{type(value).__name__}; use set_resource for structured values",
                              where=where, reason="not a string")
    env = _env()
    _check_write(path, env.user, "variable")
    new = {"value": value, "is_secret": False}

    def fn(record: Record | None) -> Change | None:
        if _live(record) and ops.json_equal(record.state, new):
            return None
        return Change(state=new, operation="set", request_id=env.request_id)

    drive(env.store, SCOPE, env.project, VARIABLE_PREFIX + path, fn, where=where)
