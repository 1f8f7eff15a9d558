"""Names of the records flowstate keeps for its own bookkeeping, spelled once.

A store record is keyed by ``(scope, scope_id, name)``; ``name == ""`` is a scope's own state
and any other name a resource. Names starting with ``$`` are reserved: resource names may not
start with it, so user data and bookkeeping never collide.
"""

from __future__ import annotations

#: Every reserved name starts with this.
RESERVED_PREFIX = "$"

#: ``session/<id>/$meta``: the session's user, flow kind and creation time; its content lists
#: the session's latest ended runs (newest last), which is how old runs are pruned.
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


def is_reserved(name: str) -> bool:
    """True for bookkeeping record names (which never hold user resources)."""
    return name.startswith(RESERVED_PREFIX)

def record_where(scope: str, scope_id: str, name: str) -> str:
    """A readable name for a record, used in error messages."""
    base = f"{scope} {scope_id!r}"
    return base if name == "" else f"{base} resource {name!r}"
