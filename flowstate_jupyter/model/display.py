"""Rich display of handles, sessions, flows and runs: view data, HTML and text. No IPython here.

It sits below the handles and flows it renders (their ``_repr_html_`` calls it), so it knows
them only by what they have (duck typing): a scope handle has ``scope``, ``id`` and
``resources``; a single resource has ``read_content_raw``, a collection has ``list``.

Three forms of the same facts, so they always agree and tests can check content without a
front end:

* **view data** (``scope_view``, ``client_view``): bounded JSON that a live view (the widgets
  in ``notebook/``) draws as a tree;
* **HTML** (``scope_html``, ``client_data_html``, ``history_html``, ``flow_html``, ``run_html``):
  the snapshot a saved notebook keeps and a static viewer shows, and what ``_repr_html_`` gives;
* **text** (``scope_text``, ``client_data_text``, ...): for terminals and logs.

Every value goes through a size bound (``bounded`` or the tree budget of ``html.py``).
"""

from __future__ import annotations

import time
from typing import Any

from . import html as h
from .diff import diff, format_diff

SCOPE_ORDER = ("session", "user", "project")

MORE = "$more"
"""Key of the marker that stands for the entries a bounded value left out: ``{"$more": 12}``."""

STATE_BUDGET = 8000
"""Characters of JSON a live view gets for one state (scope or resource); the rest is cut."""


def scope_handles(session: Any) -> dict[str, Any]:
    """``{"session": ..., "user": ..., "project": ...}`` of a flow session or a plain one."""
    own = getattr(session, "session", session)  # a flow Session is its own session handle
    return {"session": own, "user": session.user, "project": session.project}


def _record_time(handle: Any) -> float | None:
    record = handle.store.read(handle.scope, handle.id)
    return record.updated_at if record is not None else None


# ------------------------------------------------------------------------------ bounding

def bounded(value: Any, budget: int = STATE_BUDGET) -> Any:
    """A copy of JSON ``value`` of about ``budget`` characters at most: long strings cut
    (saying how much), long objects and lists cut after the entries that fit, with a
    ``{"$more": N}`` entry standing for the N left out."""
    left = [budget]

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            limit = min(h.PREVIEW_CHARS, max(40, left[0]))
            left[0] -= min(len(item), limit) + 2
            return h.cut(item, limit)
        if isinstance(item, dict):
            out: dict[str, Any] = {}
            items = list(item.items())
            for index, (key, child) in enumerate(items):
                if left[0] <= 0:
                    out[MORE] = len(items) - index
                    break
                left[0] -= len(str(key)) + 4
                out[str(key)] = walk(child)
            return out
        if isinstance(item, list):
            kept: list[Any] = []
            for index, child in enumerate(item):
                if left[0] <= 0:
                    kept.append({MORE: len(item) - index})
                    break
                left[0] -= 2
                kept.append(walk(child))
            return kept
        left[0] -= len(h.preview(item, 40))
        return item if item is None or isinstance(item, (bool, int, float)) else str(item)

    return walk(value)


# ------------------------------------------------------------------------------ scopes

def _resource_views(handle: Any, budget: int) -> list[dict]:
    views = []
    for name in handle.resources:
        res = handle.resources[name]
        if not hasattr(res, "read_content_raw"):  # a collection
            keys = res.list()
            views.append({"name": name, "kind": "collection", "count": len(keys),
                          "keys": keys[:20]})
            continue
        content = res.read_content_raw()
        definition = getattr(res, "definition", None)
        views.append({"name": name, "kind": "resource", "version": res.version,
                      "writable": bool(getattr(definition, "writable", True)),
                      "state": bounded(res.state_dict(), budget),
                      "content": None if content is None else h.cut(str(content), 300),
                      "content_chars": None if content is None else len(str(content))})
    return views


def scope_view(handle: Any, budget: int = STATE_BUDGET) -> dict:
    """What a live view shows of one scope: id, version, update time, state, resources."""
    return {"scope": handle.scope, "id": handle.id, "version": handle.version,
            "updated_at": _record_time(handle),
            "state": bounded(handle.state_dict(), budget),
            "resources": _resource_views(handle, budget // 2)}


def _resource_rows(handle: Any, limit: int) -> list[tuple[str, str, str, str]]:
    rows = []
    for view in _resource_views(handle, limit):
        if view["kind"] == "collection":
            keys = view["keys"][:10]
            shown = ", ".join(keys) + (f" (+{view['count'] - len(keys)})"
                                       if view["count"] > len(keys) else "")
            rows.append((view["name"], f"{view['count']} instances", shown or "(empty)", ""))
        else:
            rows.append((view["name"], f"v{view['version']}", h.preview(view["state"], limit),
                         "" if view["content"] is None else h.preview(view["content"], 200)))
    return rows


def _resources_html(resources: list[dict]) -> str:
    if not resources:
        return ""
    rows = []
    for view in resources:
        if view["kind"] == "collection":
            keys = ", ".join(view["keys"][:10]) or "(empty)"
            more = f" (+{view['count'] - 10})" if view["count"] > 10 else ""
            rows.append((view["name"], f"{view['count']} instances",
                         f'<span class="fs-code">{h.esc(keys + more)}</span>', ""))
            continue
        content = "" if view["content"] is None else \
            f'<pre class="fs-pre">{h.esc(view["content"])}</pre>'
        mode = "" if view["writable"] else ' <span class="fs-muted">read-only</span>'
        rows.append((view["name"], f"v{view['version']}{mode}",
                     h.json_tree(view["state"], budget=2000, open_depth=1) if view["state"]
                     else '<span class="fs-muted">{}</span>', content))
    return h.section("resources") + h.table(rows, ("resource", "version", "state", "content"),
                                            raw=True, nowrap=(1,))


def scope_body_html(view: dict) -> str:
    """The body of one scope's card from its view data: state tree and resources."""
    state = view["state"]
    body = h.json_tree(state, open_depth=1) if state else \
        '<div class="fs-muted">(no state fields)</div>'
    return body + _resources_html(view["resources"])


def scope_subtitle(view: dict) -> str:
    return f"{view['id']!r} · v{view['version']} · updated {h.when(view['updated_at'])}"


def scope_html(handle: Any) -> str:
    """One scope: id, version, update time, state tree, resources."""
    view = scope_view(handle)
    return h.card(handle.scope, scope_body_html(view), scope_subtitle(view))


def scope_text(handle: Any) -> str:
    lines = [f"{handle.scope} {handle.id!r} v{handle.version}: {h.state_text(handle.state_dict())}"]
    for name, version, state, content in _resource_rows(handle, 200):
        extra = f" content={content}" if content else ""
        lines.append(f"  resource {name} {version}: {state}{extra}")
    return "\n".join(lines)


def resource_html(res: Any, limit: int = h.PREVIEW_CHARS) -> str:
    """One resource: version, state tree and a preview of its content."""
    state = res.state_dict()
    body = h.json_tree(state, open_depth=1) if state else ""
    content = res.read_content_raw()
    if content is not None:
        text = h.esc(h.cut(str(content), limit))
        body += h.section("content") + f'<pre class="fs-pre">{text}</pre>'
    mode = "writable" if res.definition.writable else "read-only"
    return h.card(f"resource {res.name}", body, f"v{res.version} · {mode}")


# ------------------------------------------------------------------------------ client data

def client_view(snapshot: dict) -> dict:
    """The client view as one tree: ``{scope: {key: value, "resources": {name: data}}}``.

    Its dotted paths (``session.mode``, ``session.resources.plan``) are the keys of
    :func:`flatten_client_view`.
    """
    tree: dict[str, Any] = {}
    for scope, values in snapshot.get("client_data", {}).items():
        if values:
            tree.setdefault(scope, {}).update(values)
    for scope, resources in snapshot.get("resources", {}).items():
        for name, entry in (resources or {}).items():
            tree.setdefault(scope, {}).setdefault("resources", {})[name] = \
                (entry or {}).get("client_data")
    return bounded(tree)


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


def client_data_html(snapshot: dict, changed: set[str]) -> str:
    """The client view as a tree, changed keys marked."""
    tree = client_view(snapshot)
    body = h.json_tree(tree, open_depth=3, changed=changed) if tree else \
        '<div class="fs-muted">(no client data declared)</div>'
    note = f"{len(changed)} changed in the last update" if changed else "no changes"
    return h.card("client data", body, note)


def client_data_text(snapshot: dict, changed: set[str]) -> str:
    flat = flatten_client_view(snapshot)
    return "\n".join(f"{'*' if k in changed else ' '} {k} = {h.preview(v, 200)}"
                     for k, v in flat.items()) or "(no client data declared)"


# ------------------------------------------------------------------------------ history

def history_rows(handle: Any, limit: int | None = 50) -> list[tuple[int, str, str, Any]]:
    """``(version, time, operation, state)`` newest first."""
    return [(e.version, h.when(e.ts), e.operation + (" (deleted)" if e.deleted else ""),
             e.state) for e in handle.history(limit=limit)]


def history_table_html(rows: list[tuple[int, str, str, Any]]) -> str:
    """Versions as a table: version, time, operation, state (small ones inline, else a tree)."""
    if not rows:
        return '<div class="fs-muted">(no versions yet)</div>'
    return h.table(((f"v{v}", t, op, h.value_html(s, 600)) for v, t, op, s in rows),
                   ("version", "time", "operation", "state"), raw=True, nowrap=(0, 1))


def history_html(title: str, rows: list[tuple[int, str, str, Any]], *,
                 subtitle: str = "") -> str:
    """A titled card of :func:`history_table_html`."""
    return h.card(title, history_table_html(rows), subtitle)


def version_label(version: int, time: str, operation: str) -> str:
    """How a version reads in a list: ``v3 · 16:27:16 · increment``."""
    return f"v{version} · {time} · {operation}"


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


# ------------------------------------------------------------------------------ flows and runs

def flow_html(flow: Any) -> str:
    """A flow's summary: actions, merged scope schemas, resources and client-data keys."""
    info = flow.summary()
    body = h.section("actions") + h.table(
        ((name, a["input"] or "(free input)", a["block"]) for name, a in info["actions"].items()),
        ("action", "input", "block"))
    for scope, data in info["scopes"].items():
        if not (data["fields"] or data["resources"] or data["client_data"]):
            continue
        title = f"{scope} state" + (f" ({data['model']})" if data.get("model") else "")
        body += h.section(title)
        if data["fields"]:
            body += h.table(((n, f'<span class="fs-code">{h.esc(f["type"])}</span>',
                              f'<span class="fs-code">{h.esc(f["default"])}</span>')
                             for n, f in data["fields"].items()),
                            ("field", "type", "default"), raw=True)
        if data["resources"]:
            body += h.table(data["resources"].items(), ("resource", "definition"))
        if data["client_data"]:
            body += (f'<div><span class="fs-muted">client data:</span> '
                     f'{h.esc(", ".join(data["client_data"]))}</div>')
    return h.card(f"flow {info['kind']}", body, f"path {info['path']}")


def session_html(session: Any) -> str:
    """A flow session: its three scopes, one card each."""
    handles = scope_handles(session)
    return "".join(scope_html(handles[s]) for s in SCOPE_ORDER)


def jsonable(value: Any) -> Any:
    """A run's output as JSON (pydantic models dumped)."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return value


def output_html(result: Any) -> str:
    """A run's output (a tree or a pretty block) or its error."""
    if result.error is not None:
        return h.error(f"{type(result.error).__name__}: {result.error}")
    output = jsonable(result.output)
    if isinstance(output, (dict, list)) and output:
        return h.json_tree(output, open_depth=2)
    return h.pre(output)


def events_html(events: list[dict], limit: int = 200) -> str:
    rows = ((i + 1, h.esc(event_label(e))) for i, e in enumerate(events[:limit]))
    more = f'<div class="fs-muted">… {len(events) - limit} more</div>' \
        if len(events) > limit else ""
    return h.table(rows, ("#", "event"), raw=True) + more


def run_html(result: Any, changed: dict | None = None, *, hint: str = "") -> str:
    """A run: output or error (or what a suspended run waits for), the client data it changed
    (if given), and its events; ``hint`` (HTML, see :func:`command_hint`) goes under the
    output."""
    suspension = getattr(result, "suspension", None)
    if result.status == "suspended" and suspension is not None:
        waits = waiting_text(suspension_dict(suspension)).removeprefix("waiting: ")
        body = h.section("waiting for") + f'<div class="fs-wait-for">{h.esc(waits)}</div>'
    else:
        body = h.section("output") + output_html(result)
    body += hint
    if changed is not None:
        body += h.section("client data changed")
        body += h.table(changed.items(), ("key", "value")) if changed else \
            '<div class="fs-muted">(none)</div>'
    body += h.section(f"events ({len(result.events)})") + events_html(result.events)
    subtitle = (f"{getattr(result, 'action', None) or ''} · {result.status} · "
                f"{result.duration_s * 1000:.0f} ms · session {result.session_id}").lstrip(" ·")
    return h.card(f"run {result.request_id}", body, subtitle)


def command_hint(text: str, command: str) -> str:
    """A line that says what to run next: ``text`` then the magic line, in code type."""
    return (f'<div class="fs-hint">{h.esc(text)} <code class="fs-code">{h.esc(command)}</code>'
            f'</div>')


def runs_rows(runs: list[dict]) -> list[tuple]:
    """``%flow runs`` rows: request, action, status, started, duration, output or error."""
    rows = []
    for run in runs:
        duration = run.get("duration_s")
        rows.append((run.get("request_id", ""), run.get("action") or "", run.get("status", ""),
                     h.when(run.get("started_at")),
                     "" if duration is None else f"{duration * 1000:.0f} ms",
                     outcome(run)))
    return rows


def outcome(run: dict) -> Any:
    """A run record's output, its error as one line of text, or what it waits for."""
    if run.get("status") == "suspended":
        return waiting_text(run.get("suspension"))
    if run.get("status") == "interrupted":
        return (f"interrupted (its process stopped): %flow resume {run.get('request_id', '')} "
                f"continues it")
    error = run.get("error")
    if error:
        return f"{error.get('type', 'Error')}: {error.get('message', '')}" \
            if isinstance(error, dict) else str(error)
    return run.get("output")


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
    block = f" ({event['block']})" if event.get("block") else ""
    return f"{kind}{block} {h.preview(data, 120) if data is not None else ''}".strip()


def progress_text(progress: dict) -> str:
    """A running run's progress as one line: elapsed time, steps done, the block running now."""
    parts = [f"running {progress.get('action') or ''}".rstrip(),
             f"{progress.get('elapsed', 0.0):.1f} s"]
    done, total = progress.get("done"), progress.get("total")
    if total:
        parts.append(f"{done} of {total} steps")
    parts.append(f"{progress.get('events', 0)} events")
    if progress.get("block"):
        parts.append(f"now: {progress['block']}")
    return " · ".join(parts)


def progress_html(progress: dict) -> str:
    """The same as :func:`progress_text`, with a progress bar when the total is known."""
    done, total = progress.get("done"), progress.get("total")
    bar = f'<progress max="{int(total)}" value="{int(done or 0)}"></progress> ' if total \
        else '<progress></progress> '
    return h.card(f"run {progress.get('request_id') or ''}".strip(),
                  f'<div class="fs-progress">{bar}{h.esc(progress_text(progress))}</div>')


# ------------------------------------------------------------------------------ suspensions

def schema_fields(schema: dict) -> list[tuple[str, bool]]:
    """``[(field, required)]`` of a suspension's JSON Schema, in order."""
    required = set(schema.get("required") or ())
    return [(name, name in required) for name in (schema.get("properties") or {})]


def expires_text(expires_at: float | None, now: float | None = None) -> str:
    """``expires Tue 14:03:07 (in 23 h)``, ``expired 14:03:07``, or ``""`` (no timeout)."""
    if expires_at is None:
        return ""
    left = expires_at - (time.time() if now is None else now)
    if left <= 0:
        return f"expired {h.when(expires_at)}"
    if left >= 2 * 86400:
        span = f"{left / 86400:.0f} days"
    elif left >= 7200:
        span = f"{left / 3600:.0f} h"
    elif left >= 120:
        span = f"{left / 60:.0f} min"
    else:
        span = f"{left:.0f} s"
    return f"expires {h.when(expires_at)} (in {span})"


def suspension_dict(suspension: Any) -> dict:
    """A ``Suspension`` (or the dict a request record keeps) as that dict."""
    if isinstance(suspension, dict):
        return suspension
    return {name: getattr(suspension, name, None)
            for name in ("message", "schema", "expires_at", "path", "request_id", "model")}


def waiting_text(suspension: dict | None) -> str:
    """What a suspended run waits for, in one line: its message, the fields of the value it
    takes (``*`` required) and when it expires."""
    suspension = suspension or {}
    fields = ", ".join(f"{n}{'*' if r else ''}"
                       for n, r in schema_fields(suspension.get("schema") or {}))
    parts = [str(suspension.get("message") or f"input at {suspension.get('path', '?')}"),
             f"fields {fields}" if fields else "no fields",
             expires_text(suspension.get("expires_at"))]
    return "waiting: " + " · ".join(p for p in parts if p)
