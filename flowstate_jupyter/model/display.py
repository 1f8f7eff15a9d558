"""Rich display of handles, sessions, flows and runs, as HTML and as text. No IPython here.

It sits below the handles and flows it renders (their ``_repr_html_`` calls it), so it knows
them only by what they have (duck typing): a scope handle has ``scope``, ``id`` and
``resources``; a single resource has ``read_content_raw``, a collection has ``list``.

The widgets (``notebook/widgets.py``), the text fallbacks and the objects' own ``_repr_html_``
all render through these functions, so they say the same thing, and tests can check content
without a front end. Every value goes through the preview limit of ``html.py``.
"""

from __future__ import annotations

from typing import Any

from . import html as h
from .diff import diff, format_diff

SCOPE_ORDER = ("session", "user", "project")


def scope_handles(session: Any) -> dict[str, Any]:
    """``{"session": ..., "user": ..., "project": ...}`` of a flow session or a plain one."""
    own = getattr(session, "session", session)  # a flow Session is its own session handle
    return {"session": own, "user": session.user, "project": session.project}


def _record_time(handle: Any) -> float | None:
    record = handle.store.read(handle.scope, handle.id)
    return record.updated_at if record is not None else None


def _resource_rows(handle: Any, limit: int) -> list[tuple[str, str, str, str]]:
    rows = []
    for name in handle.resources:
        res = handle.resources[name]
        if not hasattr(res, "read_content_raw"):  # a collection
            keys = res.list()
            shown = ", ".join(keys[:10]) + (f" (+{len(keys) - 10})" if len(keys) > 10 else "")
            rows.append((name, f"{len(keys)} instances", shown or "(empty)", ""))
            continue
        content = res.read_content_raw()
        rows.append((name, f"v{res.version}", h.preview(res.state_dict(), limit),
                     "" if content is None else h.preview(content, 200)))
    return rows


def scope_html(handle: Any, limit: int = h.PREVIEW_CHARS) -> str:
    """One scope: id, version, update time, state table, resources table."""
    state = handle.state_dict()
    subtitle = f"{handle.id!r} · v{handle.version} · updated {h.when(_record_time(handle))}"
    body = h.table(((k, v) for k, v in state.items()), ("field", "value")) if state \
        else '<div class="fs-muted">(no state fields)</div>'
    rows = _resource_rows(handle, limit)
    if rows:
        body += "<br><b>resources</b>" + h.table(
            ((n, v, h.esc(s), h.esc(c)) for n, v, s, c in rows),
            ("resource", "version", "state", "content"), raw=True)
    return h.card(handle.scope, body, subtitle)


def scope_text(handle: Any) -> str:
    lines = [f"{handle.scope} {handle.id!r} v{handle.version}: {h.state_text(handle.state_dict())}"]
    for name, version, state, content in _resource_rows(handle, 200):
        extra = f" content={content}" if content else ""
        lines.append(f"  resource {name} {version}: {state}{extra}")
    return "\n".join(lines)


def resource_html(res: Any, limit: int = h.PREVIEW_CHARS) -> str:
    """One resource: version, state table and a preview of its content."""
    state = res.state_dict()
    body = h.table(((k, v) for k, v in state.items()), ("field", "value")) if state else ""
    content = res.read_content_raw()
    if content is not None:
        body += "<b>content</b>" + h.pre(content, limit)
    mode = "writable" if res.definition.writable else "read-only"
    return h.card(f"resource {res.name}", body, f"v{res.version} · {mode}")


def client_data_html(snapshot: dict, changed: set[str]) -> str:
    """The client view: client data per scope and resources' client data; changed keys marked."""
    rows = []
    for scope, values in snapshot.get("client_data", {}).items():
        for key, value in (values or {}).items():
            rows.append((f"{scope}.{key}", value))
    for scope, resources in snapshot.get("resources", {}).items():
        for name, entry in (resources or {}).items():
            rows.append((f"{scope}.resources.{name}", (entry or {}).get("client_data")))
    body = h.table(rows, ("key", "value"), changed=changed) if rows else \
        '<div class="fs-muted">(no client data declared)</div>'
    note = f"{len(changed)} changed since the last update" if changed else "no changes"
    return h.card("client data", body, note)


def flatten_client_view(snapshot: dict) -> dict[str, Any]:
    """``{"session.mode": value, "session.resources.plan": value}`` for change marking."""
    flat: dict[str, Any] = {}
    for scope, values in snapshot.get("client_data", {}).items():
        for key, value in (values or {}).items():
            flat[f"{scope}.{key}"] = value
    for scope, resources in snapshot.get("resources", {}).items():
        for name, entry in (resources or {}).items():
            flat[f"{scope}.resources.{name}"] = (entry or {}).get("client_data")
    return flat


def client_data_text(snapshot: dict, changed: set[str]) -> str:
    flat = flatten_client_view(snapshot)
    return "\n".join(f"{'*' if k in changed else ' '} {k} = {h.preview(v, 200)}"
                     for k, v in flat.items()) or "(no client data declared)"


def history_rows(handle: Any, limit: int = 50) -> list[tuple[int, str, str, Any]]:
    """``(version, time, operation, state)`` newest first."""
    return [(e.version, h.when(e.ts), e.operation + (" (deleted)" if e.deleted else ""),
             e.state) for e in handle.history(limit=limit)]


def version_diff_text(handle: Any, a: int, b: int) -> str:
    states = {e.version: e.state for e in handle.history(limit=None)}
    missing = [v for v in (a, b) if v not in states and v != 0]
    if missing:
        kept = sorted(states)
        raise LookupError(f"version {missing[0]} is not in the kept history "
                          f"(kept: {kept[0] if kept else '-'}..{kept[-1] if kept else '-'})")
    before = states.get(a, {}) if a else {}
    after = states.get(b, {}) if b else {}
    return format_diff(diff(before, after))


def flow_html(flow: Any) -> str:
    """A flow's summary: actions, merged scope schemas, resources and client-data keys."""
    info = flow.summary()
    actions = h.table(((name, a["input"] or "(free)", a["block"])
                       for name, a in info["actions"].items()), ("action", "input", "block"))
    body = "<b>actions</b>" + actions
    for scope, data in info["scopes"].items():
        if not (data["fields"] or data["resources"] or data["client_data"]):
            continue
        body += f"<br><b>{h.esc(scope)}</b>"
        if data["fields"]:
            body += h.table(((n, f["type"], f["default"]) for n, f in data["fields"].items()),
                            ("field", "type", "default"))
        if data["resources"]:
            body += h.table(data["resources"].items(), ("resource", "definition"))
        if data["client_data"]:
            body += f'<div>client data: {h.esc(", ".join(data["client_data"]))}</div>'
    return h.card(f"flow {info['kind']}", body, info["path"])


def session_html(session: Any) -> str:
    """A flow session: its three scopes, one card each."""
    handles = scope_handles(session)
    return "".join(scope_html(handles[s]) for s in SCOPE_ORDER)


def run_html(result: Any) -> str:
    """A run: status, output or error, and its events."""
    if result.error is not None:
        head = (f'<div class="fs-error">{h.esc(type(result.error).__name__)}: '
                f'{h.esc(result.error)}</div>')
    else:
        output = result.output.model_dump(mode="json") if hasattr(result.output, "model_dump") \
            else result.output
        head = "<b>output</b>" + h.pre(output)
    events = h.table(((i + 1, h.esc(event_label(e))) for i, e in enumerate(result.events[:200])),
                     ("#", "event"), raw=True)
    subtitle = f"{result.status} · {result.duration_s * 1000:.0f} ms · session " \
               f"{result.session_id}"
    return h.card(f"run {result.request_id}", head + "<b>events</b>" + events, subtitle)


def event_label(event: dict) -> str:
    """One readable line for an event of a run."""
    kind = event.get("type")
    if kind == "state_change":
        return f"{event['scope']}.{event.get('operation')} v{event.get('version')}"
    if kind == "resource_change":
        return (f"{event['scope']}.{event.get('resource')} {event.get('change_type')} "
                f"v{event.get('version')}")
    if kind == "request":
        return f"request {event.get('action', '')} {event.get('status', '')}"
    data = event.get("data")
    return f"{kind} {h.preview(data, 120) if data is not None else ''}".strip()
