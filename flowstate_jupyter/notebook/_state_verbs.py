"""The verbs of ``%state``: read and change the state of a scope, resource or collection
instance, look at its history, and switch or compare sessions.

Each verb is a function of the kernel's state (``KernelState``), the rest of the line and its
options; ``state_verb`` picks one. A change prints one line (the path and its new version); a
refusal is a ``UsageError`` that names the path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from IPython.core.error import UsageError

from ..base.ids import check_id
from ..base.names import SESSION_META
from ..base.text import short
from ..flows.forking import meta_parent
from ..handles.resources import CollectionHandle, ResourceHandle
from ..model import html as h
from ..model.display import history_rows, version_diff_text
from ..model.schema import defaults
from ._lines import parse_value
from ._outputs import Table
from .kernel import KernelState, _PlainSession
from .paths import StatePath, parse_path

_ABSENT = object()


def state_verb(kernel: KernelState, verb: str, rest: str, options: dict[str, str],
               flags: frozenset[str] | set[str] = frozenset()) -> Any:
    """Do ``%state VERB REST``; what it returns is the cell's value."""
    if "side" in flags and verb not in ("", "inspect", "client"):
        raise UsageError("--side opens a live view: %state --side or %state client --side")
    if "table" in flags and verb != "history":
        raise UsageError("--table goes with history: %state history session --table")
    if verb in ("", "inspect", "client"):
        from .widgets import ClientDataPreview, Inspector
        view = Inspector(kernel.session()) if verb != "client" else \
            ClientDataPreview(kernel.session(options.get("flow")))
        if "side" not in flags:
            return view
        title = "flowstate · " + ("client data" if verb == "client" else "state")
        view.show(side=True, title=title)
        return None
    if verb == "history":
        return _history(kernel, rest, options, table="table" in flags)
    if verb == "use":
        return _use(kernel, options, rest)
    if verb == "sessions":
        return _sessions(kernel)
    if verb == "compare":
        return _compare(kernel, rest, options)
    if verb == "path":
        from ..windmill import get_state_path
        return get_state_path()  # shown as the cell's value; `p = %state path` works
    if verb not in _CHANGES:
        raise UsageError(f"unknown %state verb {short(verb, 40)}; use one of "
                         f"{', '.join(_CHANGES)}, history, use, sessions, compare, client, "
                         f"path "
                         f"(see %state?)")
    return _CHANGES[verb](kernel, rest, options)


# -- what a path points at ----------------------------------------------------------------------
def _target(kernel: KernelState, path: StatePath, flow: str | None = None,
            create: bool = False) -> Any:
    """The handle a path points at: a scope, a resource, or a collection instance."""
    handle = kernel.handle(path.scope, flow)
    if path.resource is None:
        return handle
    resources = handle.resources
    if path.resource not in resources:
        known = ", ".join(resources) or "none"
        raise UsageError(f"{path.label}: {path.scope} has no resource "
                         f"{short(path.resource, 60)}; defined: {known}")
    res = resources[path.resource]
    if isinstance(res, CollectionHandle):
        if path.key is None:
            if path.fields:
                raise UsageError(f"{path.label}: {path.resource} is a collection; name an "
                                 f"instance as {path.resource}[KEY]")
            return res
        if create:  # a missing instance is created by the write itself, or not at all
            return res.instance(path.key)
        return res.get(path.key)
    if path.key is not None:
        raise UsageError(f"{path.label}: {path.resource} is not a collection")
    return res


def _scope_target(kernel: KernelState, rest: str, options: dict) -> tuple[StatePath, Any]:
    """The scope or resource (not a field) the last word of ``rest`` names; ``session`` if
    none."""
    text = rest.split()[-1] if rest.split() else "session"
    path = parse_path(text)
    if path.fields:
        raise UsageError(f"{path.label}: name a scope or resource, not a field")
    target = _target(kernel, path, options.get("flow"))
    if isinstance(target, CollectionHandle):
        raise UsageError(f"{path.label}: name one instance, {path.resource}[KEY]")
    return path, target


def _path_and_value(rest: str, verb: str, value_needed: bool = True) -> tuple[StatePath, str]:
    path_text, _, value_text = rest.partition(" ")
    if not path_text:
        raise UsageError(f"%state {verb} needs a PATH, e.g. %state {verb} session.mode")
    if value_needed and not value_text.strip():
        raise UsageError(f"%state {verb} {path_text} needs a VALUE (JSON)")
    return parse_path(path_text), value_text


def _walk(value: Any, fields: tuple[str, ...], label: str) -> Any:
    for i, field in enumerate(fields):
        if isinstance(value, dict) and field in value:
            value = value[field]
        elif isinstance(value, list) and field.lstrip("-").isdigit() and \
                -len(value) <= int(field) < len(value):
            value = value[int(field)]
        else:
            where = ".".join(fields[:i]) or "the state"
            known = ", ".join(value) if isinstance(value, dict) else ""
            hint = f"; it has {known}" if known else ""
            raise UsageError(f"{label}: {where} has no {short(field, 60)}{hint}")
    return value


def _deep_set(value: Any, fields: tuple[str, ...], new: Any, label: str) -> Any:
    """A copy of ``value`` with ``new`` at ``fields`` (dict keys or list indexes)."""
    if not fields:
        return new
    head, rest = fields[0], fields[1:]
    if isinstance(value, dict):
        copied = dict(value)
        copied[head] = _deep_set(value.get(head, {}), rest, new, label)
        return copied
    if isinstance(value, list) and head.lstrip("-").isdigit() and \
            -len(value) <= int(head) < len(value):
        items = list(value)
        items[int(head)] = _deep_set(value[int(head)], rest, new, label)
        return items
    raise UsageError(f"{label}: cannot reach {short(head, 60)} inside {type(value).__name__}")


def _jsonable_field(snapshot: Any, field: str) -> Any:
    """A top-level field of a state snapshot (model or mapping) as JSON; ``{}`` if absent, so a
    nested write creates it (and the schema refuses it when the model has no such field)."""
    if isinstance(snapshot, Mapping):
        value = snapshot.get(field, _ABSENT)
    else:
        value = getattr(snapshot, field, _ABSENT)
    if value is _ABSENT:
        return {}
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return json.loads(json.dumps(value, default=lambda o: o.model_dump(mode="json")
                                 if hasattr(o, "model_dump") else str(o)))


def _set_nested(target: Any, fields: tuple[str, ...], new: Any, label: str) -> bool:
    """Write ``new`` at ``fields`` (two or more deep) in one atomic change of the top field."""
    return target.atomic_state(lambda s: {fields[0]: _deep_set(
        _jsonable_field(s, fields[0]), fields[1:], new, label)})


def _report(path: StatePath, target: Any, changed: bool) -> None:
    what = "" if changed else " (unchanged: no new version)"
    print(f"{path.label}: v{target.version}{what}")


# -- get and the changes ------------------------------------------------------------------------
def _get(kernel: KernelState, rest: str, options: dict) -> Any:
    path, _ = _path_and_value(rest, "get", value_needed=False)
    target = _target(kernel, path, options.get("flow"))
    if isinstance(target, CollectionHandle):
        return target.list()
    return _walk(target.state_dict(), path.fields, path.label)


def _set(kernel: KernelState, rest: str, options: dict) -> None:
    path, value_text = _path_and_value(rest, "set")
    value = parse_value(value_text, path.label)
    target = _target(kernel, path, options.get("flow"), create=True)
    fields = path.fields
    if not fields:
        changed = target.set_state(value)
    elif len(fields) == 1:
        changed = target.patch_state({fields[0]: value})
    elif len(fields) == 2 and isinstance(target.state_dict().get(fields[0]), dict):
        changed = target.set_state_record(fields[0], fields[1], value)
    else:
        changed = _set_nested(target, fields, value, path.label)
    _report(path, target, changed)


def _patch(kernel: KernelState, rest: str, options: dict) -> None:
    path, value_text = _path_and_value(rest, "patch")
    value = parse_value(value_text, path.label)
    if not isinstance(value, dict):
        raise UsageError(f"{path.label}: %state patch takes a JSON object, e.g. "
                         f"{{\"mode\": \"agent\"}}")
    target = _target(kernel, path, options.get("flow"), create=True)
    if not path.fields:
        changed = target.patch_state(value)
    else:
        current = _walk(target.state_dict(), path.fields, path.label)
        if not isinstance(current, dict):
            raise UsageError(f"{path.label} is not an object; use %state set")
        changed = _set_nested(target, path.fields, {**current, **value}, path.label)
    _report(path, target, changed)


def _inc(kernel: KernelState, rest: str, options: dict) -> None:
    path, value_text = _path_and_value(rest, "inc", value_needed=False)
    amount = parse_value(value_text, path.label) if value_text.strip() else 1
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        raise UsageError(f"{path.label}: %state inc takes a number, not "
                         f"{short(value_text.strip(), 60)}")
    target = _target(kernel, path, options.get("flow"), create=True)
    if len(path.fields) != 1:
        raise UsageError("%state inc needs a top-level field, e.g. session.message_count")
    _report(path, target, target.inc_state({path.fields[0]: amount}))


def _push(kernel: KernelState, rest: str, options: dict) -> None:
    path, value_text = _path_and_value(rest, "push")
    value = parse_value(value_text, path.label)
    target = _target(kernel, path, options.get("flow"), create=True)
    if len(path.fields) != 1:
        raise UsageError("%state push needs a top-level list field, e.g. session.tags")
    _report(path, target, target.push_state(path.fields[0], value))


def _del(kernel: KernelState, rest: str, options: dict) -> None:
    path, _ = _path_and_value(rest, "del", value_needed=False)
    target = _target(kernel, path, options.get("flow"))
    fields = path.fields
    if not fields:
        if isinstance(target, ResourceHandle):
            changed = target.delete()
            print(f"{path.label}: deleted" if changed else f"{path.label}: nothing to delete")
            return
        raise UsageError(f"%state del needs a field or a resource; to clear a whole scope "
                         f"use %state reset {path.scope}")
    if len(fields) == 1:
        model_defaults = defaults(target.model if hasattr(target, "model")
                                  else target.definition.state)
        if fields[0] not in target.state_dict():
            raise UsageError(f"{path.label}: no field {short(fields[0], 60)}")
        if fields[0] in model_defaults:
            changed = target.patch_state({fields[0]: model_defaults[fields[0]]})
        else:
            changed = target.set_state({k: v for k, v in target.state_dict().items()
                                        if k != fields[0]})
    elif len(fields) == 2 and isinstance(target.state_dict().get(fields[0]), dict):
        changed = target.delete_state_record(fields[0], fields[1])
    else:
        parent = _walk(target.state_dict(), fields[:-1], path.label)
        if not isinstance(parent, dict):
            raise UsageError(f"{path.label}: can only delete keys of objects")
        smaller = {k: v for k, v in parent.items() if k != fields[-1]}
        changed = _set_nested(target, fields[:-1], smaller, path.label)
    _report(path, target, changed)


# -- versions -----------------------------------------------------------------------------------
def _history(kernel: KernelState, rest: str, options: dict, table: bool = False) -> Any:
    """The History widget of a scope or resource; ``table``: a static table instead."""
    path, target = _scope_target(kernel, rest, options)
    if not table:
        from .widgets import History
        limit = int(options["limit"]) if "limit" in options else 500
        return History(target, limit=limit)
    limit = int(options.get("limit", 20))
    rows = [(f"v{v}", t, op, s) for v, t, op, s in history_rows(target, limit)]
    return Table(f"history of {path.label}", ("version", "time", "operation", "state"),
                 rows, nowrap=(0, 1))


def _diff(kernel: KernelState, rest: str, options: dict) -> None:
    parts = rest.split()
    if len(parts) < 2 or not all(p.lstrip("v").isdigit() for p in parts[:2]):
        raise UsageError("%state diff V1 V2 [SCOPE], e.g. %state diff 3 5 session")
    a, b = (int(p.lstrip("v")) for p in parts[:2])
    path, target = _scope_target(kernel, " ".join(parts[2:]) or "session", options)
    print(f"{path.label} v{a} -> v{b}")
    print(version_diff_text(target, a, b))


def _undo(kernel: KernelState, rest: str, options: dict) -> None:
    path, target = _scope_target(kernel, rest, options)
    history = target.history(limit=2)
    if not history:
        raise UsageError(f"{path.label} has never been written: nothing to undo")
    previous = history[1].state if len(history) > 1 and history[1].version == \
        history[0].version - 1 else None
    if previous is None and history[0].version > 1:
        raise UsageError(f"{path.label}: v{history[0].version - 1} is no longer kept")
    changed = target.set_state(previous if previous is not None else {})
    print(f"{path.label}: restored v{history[0].version - 1} as v{target.version}"
          if changed else f"{path.label}: already equal to the previous version")


def _reset(kernel: KernelState, rest: str, options: dict) -> None:
    path, target = _scope_target(kernel, rest, options)
    changed = target.reset_state()
    print(f"{path.label}: reset to defaults (v{target.version})" if changed
          else f"{path.label}: already at its defaults")


#: The verbs that take a path (and change what it points at, but for get, diff).
_CHANGES = {"get": _get, "set": _set, "patch": _patch, "inc": _inc, "push": _push,
            "del": _del, "diff": _diff, "undo": _undo, "reset": _reset}


# -- sessions -----------------------------------------------------------------------------------
def _use(kernel: KernelState, options: dict, rest: str) -> None:
    if rest:
        raise UsageError(f"%state use takes only options (--session, --user, --project, "
                         f"--flow), not {short(rest, 60)}")
    if not options:
        raise UsageError("%state use --session ID | --user ID | --project ID | --flow NAME")
    saved = (kernel.current_flow, kernel.session_id, kernel.user, kernel.project)
    try:
        if "flow" in options:
            kernel.flow(options["flow"])  # must exist
            kernel.current_flow = options["flow"]
        if "session" in options:
            kernel.session_id = check_id(options["session"], "session id")
        if "user" in options:
            kernel.user = check_id(options["user"], "user id")
        if "project" in options:
            kernel.project = check_id(options["project"], "project id")
        kernel.session()  # a session of another user or flow kind is refused here
    except BaseException:
        kernel.current_flow, kernel.session_id, kernel.user, kernel.project = saved
        raise
    print(f"session {kernel.session_id!r}, user {kernel.user!r}, project "
          f"{kernel.project!r}, flow {kernel.current_flow or '(none)'}")


def _parent_text(parent: Any) -> str:
    """``s1 @ v3`` for a forked session, ``""`` for one that was not forked."""
    return f"{parent[0]} @ v{parent[1]}" if parent else ""


def _sessions(kernel: KernelState) -> Table:
    if kernel.current_flow is None:
        records = kernel.store.list("session", name=SESSION_META)
        rows = [(r.scope_id, r.state.get("user", ""), r.state.get("flow", ""),
                 h.when(r.updated_at), _parent_text(meta_parent(r.state)))
                for r in records]
    else:
        rows = [(s["id"], s.get("user", ""), s.get("flow", ""), h.when(s.get("updated_at")),
                 _parent_text(s.get("parent")))
                for s in kernel.flow().sessions(store=kernel.store)]
    return Table("sessions", ("session", "user", "flow", "updated", "forked from"), rows,
                 nowrap=(3,))


def _compare(kernel: KernelState, rest: str, options: dict) -> Any:
    ids = rest.split()
    if len(ids) != 2:
        raise UsageError("%state compare A B: two session ids, e.g. %state compare s1 s2")
    from ..flows.compare import compare
    sessions = []
    for session_id in ids:
        check_id(session_id, "session id")
        if kernel.store.read("session", session_id, SESSION_META) is None:
            raise UsageError(f"no session {session_id!r} in this store; %state sessions "
                             f"lists them")
        if options.get("flow") is None and kernel.current_flow is None:
            sessions.append(_PlainSession(kernel.store, session_id, kernel.user,
                                          kernel.project))
        else:
            sessions.append(kernel.flow(options.get("flow")).session(
                session_id, project=kernel.project, store=kernel.store))
    return compare(*sessions)
