"""Windmill variables: plain-text values at paths; secrets come from the environment."""

from __future__ import annotations

import os
import re

from ..base.names import WM_VARIABLE_PREFIX
from ..errors import ResourceNotFoundError, ValidationError
from ..handles.records import update_with_retries
from ..model import ops
from ..stores.base import Change, Record
from ._paths import _check_write, _variable_path
from ._where import SCOPE, _Env, _env, _live

#: Environment variable prefix :func:`get_variable` falls back to (see :func:`variable_env_name`).
VARIABLE_ENV_PREFIX = "FLOWSTATE_VAR_"
_ENV_UNSAFE = re.compile(r"[^A-Za-z0-9]+")


def variable_env_name(path: str) -> str:
    """The environment variable :func:`get_variable` reads when ``path`` is not stored:
    ``FLOWSTATE_VAR_`` + the path upper-cased with every run of other characters as ``_``
    (``u/alice/api_key`` -> ``FLOWSTATE_VAR_U_ALICE_API_KEY``)."""
    return VARIABLE_ENV_PREFIX + _ENV_UNSAFE.sub("_", path).strip("_").upper()


def _lookup_variable(env: _Env, path: str, used_by: str | None = None) -> str:
    record = env.store.read(SCOPE, env.project, WM_VARIABLE_PREFIX + path)
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

    update_with_retries(env.store, SCOPE, env.project, WM_VARIABLE_PREFIX + path, fn, where=where)
