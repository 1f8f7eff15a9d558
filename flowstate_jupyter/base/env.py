"""Defaults taken from the environment: who you are, which project, which session, which store.

Every layer asks this module, so one rule holds everywhere:

* **user** — ``FLOWSTATE_USER`` if set (it must be a valid id, else :class:`InvalidIdError`
  says how to fix it: a name you chose is never changed silently); otherwise the operating-system
  user, with characters an id may not hold replaced by ``_`` (``"local"`` if none is known).
* **project** — ``FLOWSTATE_PROJECT`` (a valid id), else ``"default"``.
* **notebook session** — ``FLOWSTATE_SESSION`` (a valid id), else ``nb-<notebook name>`` from
  ``JPY_SESSION_NAME`` (jupyter_server tells a kernel its notebook, so a restart continues the same
  session), else ``"notebook"``.
* **store URL** — ``FLOWSTATE_STORE``, else :data:`DEFAULT_STORE_URL` (a file under the current
  folder).
* **run lease** — ``FLOWSTATE_LEASE_S`` (seconds, > 0), else :data:`DEFAULT_LEASE_S`: how long a
  running run's claim on its request record lasts without renewal (renewed every third of it).
"""

from __future__ import annotations

import getpass
import os
from pathlib import PurePath

from ..errors import InvalidIdError
from .ids import DEFAULT_PROJECT, as_id, check_id

#: The store used when ``FLOWSTATE_STORE`` is not set: ``.flowstate/flowstate.db`` here.
DEFAULT_STORE_URL = "sqlite:///.flowstate/flowstate.db"
#: Seconds a run's lease lasts when ``FLOWSTATE_LEASE_S`` is not set.
DEFAULT_LEASE_S = 10.0
#: The user name when neither ``FLOWSTATE_USER`` nor the OS names one.
UNKNOWN_USER = "local"


def _from_variable(variable: str, what: str) -> str | None:
    value = os.environ.get(variable)
    if not value:
        return None
    try:
        return check_id(value, what)
    except InvalidIdError as exc:
        raise InvalidIdError(f"{exc} (from {variable}); set {variable} to a usable {what} such "
                             f"as {as_id(value, UNKNOWN_USER)!r}") from None


def os_user() -> str:
    """The operating-system user as an id (``"local"`` when there is none, as in some
    containers)."""
    try:
        name = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in the environment or password database
        name = ""
    return as_id(name or "", UNKNOWN_USER)


def current_user() -> str:
    """``FLOWSTATE_USER`` (checked), else the OS user (made an id)."""
    return _from_variable("FLOWSTATE_USER", "user id") or os_user()


def current_project() -> str:
    """``FLOWSTATE_PROJECT`` (checked), else ``"default"``."""
    return _from_variable("FLOWSTATE_PROJECT", "project id") or DEFAULT_PROJECT


def notebook_session_id() -> str:
    """``FLOWSTATE_SESSION`` (checked), else ``nb-<notebook name>``, else ``"notebook"``."""
    explicit = _from_variable("FLOWSTATE_SESSION", "session id")
    if explicit:
        return explicit
    name = os.environ.get("JPY_SESSION_NAME")
    if name:
        return as_id("nb-" + PurePath(name).stem, "notebook")
    return "notebook"


def store_url() -> str:
    """``FLOWSTATE_STORE``, else :data:`DEFAULT_STORE_URL`."""
    return os.environ.get("FLOWSTATE_STORE") or DEFAULT_STORE_URL


def lease_seconds() -> float:
    """``FLOWSTATE_LEASE_S`` (a positive number of seconds), else :data:`DEFAULT_LEASE_S`."""
    text = os.environ.get("FLOWSTATE_LEASE_S")
    if not text:
        return DEFAULT_LEASE_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise ValueError(f"FLOWSTATE_LEASE_S must be a positive number of seconds, not {text!r}")
    return value
