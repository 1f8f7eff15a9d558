"""Windmill paths: what a path may be, who may write it, and the state path rule.

Paths are ``u/<user>/<name>[/...]`` (the user's own) or ``f/<folder>/<name>[/...]`` (shared in the
project). :func:`state_path` is Windmill's rule for where ``get_state()`` keeps a script's or flow
step's state (docs/concepts.md, 'Windmill states and resources'); :func:`explain_state_path` applies
it here and says why.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import AccessDeniedError, InvalidIdError
from ._where import _context, _ctx_attr, _env_user, _user_of, current_user

#: What the state path rule puts in place of a script path ending in ``/``: the whole path
#: becomes this.
EMPTY_SCRIPT_NAME = "noname"

#: The script name a notebook gets when its own file cannot be found.
DEFAULT_NOTEBOOK_NAME = "notebook"

_MAX_PATH = 255

_BAD_PATH_CHARS = re.compile(r"[\s\\\x00-\x1f\x7f\ud800-\udfff]")  # and lone surrogates

_UNSAFE_SEGMENT = re.compile(r"[^A-Za-z0-9._-]+")


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


def state_path(*, username: str, script_path: str | None = None, flow_path: str | None = None,
               step_id: str | None = None, schedule_path: str | None = None) -> str:
    """Windmill's state path rule, as a pure function
    (docs/concepts.md, 'Windmill states and resources').

    The trigger is ``username`` for a scheduled run (``schedule_path`` given) and ``"user"``
    otherwise. In a flow step: ``{flow_path}/{step_id or "nostep"}_{trigger}``; in a script or
    notebook: ``{script_path}/{trigger}``, where a script path ending in ``/`` *becomes*
    ``noname`` (it is replaced, not appended to: ``u/alice/`` gives ``noname/user``); with
    neither: ``u/{username}/tmp_state``. (Windmill's own ``variables.rs`` uses ``state`` there
    instead; see ``EMPTY_SCRIPT_NAME`` and docs/decisions.md, 'Windmill path rule'.)

    >>> state_path(username="alice", flow_path="f/flows/etl", step_id="a")
    'f/flows/etl/a_user'
    >>> state_path(username="alice", script_path="u/alice/watch", schedule_path="f/s/hourly")
    'u/alice/watch/alice'
    >>> state_path(username="alice", script_path="u/alice/")
    'noname/user'
    """
    for label, value in (("username", username), ("script_path", script_path),
                         ("flow_path", flow_path), ("step_id", step_id),
                         ("schedule_path", schedule_path)):
        if not isinstance(value, str) and (value is not None or label == "username"):
            raise InvalidIdError(f"state_path: {label} must be a string, not "
                                 f"{type(value).__name__}")
    trigger = username if schedule_path is not None else "user"
    if flow_path:
        return f"{flow_path}/{step_id or 'nostep'}_{trigger}"
    if script_path:
        if script_path.endswith("/"):
            script_path = EMPTY_SCRIPT_NAME
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
    except Exception:  # noqa: BLE001 - a half-set-up IPython only means "not in a notebook"
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
