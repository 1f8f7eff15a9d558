"""Names of the records flowstate keeps for its own bookkeeping, spelled once.

A store record is keyed by ``(scope, scope_id, name)``; ``name == ""`` is a scope's own state
and any other name a resource. Names starting with ``$`` are reserved: resource names may not
start with it, so user data and bookkeeping never collide.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import InvalidIdError

#: Every reserved name starts with this.
RESERVED_PREFIX = "$"

#: ``session/<id>/$meta``: the session's user, flow kind and creation time; touched at the end
#: of every run (``flow.sessions()`` orders by it). Its runs are the request records naming it.
SESSION_META = "$meta"
#: ``request/<id>/$request``: one run (action, input, output or error, status, times, lease,
#: suspension); its content holds the run's trace and step log (``flows/trace.py``).
REQUEST = "$request"
#: ``session/<id>/$action:<action>``: which run of that action is in flight on the session, and
#: who waits (``fs.action(..., concurrency="reject" | "queue")``).
ACTION_SLOT_PREFIX = "$action:"
#: ``<scope>/<id>/$tombstones:<collection>``: the highest version a purged tombstone of that
#: collection had, so that a re-created instance never reuses a version.
TOMBSTONE_MARK_PREFIX = "$tombstones:"
#: ``session/<id>/$journal``: notes left on a session.
JOURNAL = "$journal"
#: ``request/<id>/$sequencer:<span path>``: instance state of a sequencer in one run.
SEQUENCER_PREFIX = "$sequencer:"

#: Windmill-compatible records (project scope unless said otherwise).
WM_PREFIX = "$wm/"
WM_STATE_PREFIX = "$wm/state/"
WM_RESOURCE_PREFIX = "$wm/resource/"
WM_RESOURCE_TYPE_PREFIX = "$wm/resource_type/"
WM_VARIABLE_PREFIX = "$wm/variable/"
#: In the request scope of a run: that run's Windmill flow user state.
WM_FLOW_USER_STATE = "$wm/flow_user_state"


#: Reserved names used exactly as spelled, and the prefixes of reserved names that carry a path
#: or key after them (a Windmill path, a sequencer name and instance).
RESERVED_NAMES = frozenset({SESSION_META, REQUEST, JOURNAL, WM_FLOW_USER_STATE})
RESERVED_PREFIXES = (SEQUENCER_PREFIX, WM_STATE_PREFIX, WM_RESOURCE_PREFIX,
                     WM_RESOURCE_TYPE_PREFIX, WM_VARIABLE_PREFIX)

#: A resource name: an identifier of letters, digits, ``_ . -`` (never starting with ``$``).
RESOURCE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,127}")
#: Characters no key or path segment may hold: control characters, backslashes and lone
#: surrogates (which are not Unicode text, so no store could keep them).
BAD_KEY_CHARS = re.compile(r"[\x00-\x1f\x7f\\\ud800-\udfff]")


def is_reserved(name: str) -> bool:
    """True for bookkeeping record names (which never hold user resources)."""
    return name.startswith(RESERVED_PREFIX)


def bad_key(key: str) -> str | None:
    """Why ``key`` (a collection key or a path after a reserved prefix) is not a valid key:
    ``None`` if it is. Segments are separated by ``/``; none may be empty, ``.`` or ``..``."""
    if any(s in ("", ".", "..") for s in key.split("/")):
        return "an empty, '.' or '..' segment"
    bad = BAD_KEY_CHARS.search(key)
    if bad:
        return f"the character {bad.group()!r}"
    return None


def check_record_name(name: Any) -> str:
    """Return ``name`` if a store record may carry it, else raise :class:`InvalidIdError`.

    ``""`` (a scope's own state), a resource name, a collection instance ``NAME:KEY``, or a
    reserved name flowstate writes itself (``$meta``, ``$wm/state/<path>``, ...). For records
    that arrive from outside, such as an import.
    """
    if not isinstance(name, str):
        raise InvalidIdError(f"record name must be a string, not {type(name).__name__}")
    if name == "" or name in RESERVED_NAMES or RESOURCE_NAME.fullmatch(name):
        return name
    shown = repr(name if len(name) <= 60 else name[:57] + "...")
    prefix = next((p for p in RESERVED_PREFIXES if name.startswith(p)), None)
    if prefix is not None:
        rest, what = name[len(prefix):], f"reserved name {shown}"
    elif is_reserved(name):
        raise InvalidIdError(f"record name {shown} is reserved but not one flowstate writes "
                             f"(names starting with '$' are flowstate's own)")
    else:
        collection, sep, rest = name.partition(":")
        if not sep or not RESOURCE_NAME.fullmatch(collection):
            raise InvalidIdError(f"record name {shown} is neither a resource name (letters, "
                                 f"digits, _ . -) nor a collection instance NAME:KEY")
        what = f"collection instance {shown}"
    problem = bad_key(rest)
    if problem is not None:
        raise InvalidIdError(f"{what} has {problem} in its key")
    return name

def record_where(scope: str, scope_id: str, name: str) -> str:
    """A readable name for a record, used in error messages."""
    base = f"{scope} {scope_id!r}"
    return base if name == "" else f"{base} resource {name!r}"
