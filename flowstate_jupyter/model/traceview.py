"""A run's trace and a suspension, as view data, HTML and text, without IPython
(docs/concepts.md, 'Traces').

Like ``display.py`` it sits below what it renders and knows a trace by what it has: spans with
``path``, ``block``, ``kind``, ``parent``, ``input``, ``output``, ``started_at``,
``duration_s``, ``status``, ``error``, ``changes`` and ``attempt``; a run by its request record
(a dict: ``request_id``, ``action``, ``status``, ``session``, ``duration_s``, ...).

* :func:`trace_view` is what the live trace view draws: one dict per span, in start order,
  every value bounded, and each span's **bar** (where it starts and how long it lasts, in
  percent of the run's timeline) computed here once, so the live view and the snapshot agree.
  A resumed run's timeline leaves out most of the time it waited for a person: an idle gap
  longer than a tenth of the time spent running is drawn as that tenth.
* :func:`trace_html` is the snapshot (a static tree of ``<details>``, no script), bounded to
  :data:`TRACE_HTML_CHARS`; :func:`trace_text` the text form.
"""

from __future__ import annotations

from typing import Any

from . import html as h
from .display import bounded, event_label

SPAN_VALUE_BUDGET = 2000
"""Characters of JSON a span's input, output or one change gets in the view data."""

TRACEBACK_CHARS = 3000
"""Characters of a traceback shown (its end: that is where it says the most)."""

TRACE_HTML_CHARS = 30_000
"""Characters a trace's snapshot may take; past that, spans show as rows without details."""

TRACE_TEXT_LINES = 300
"""Lines of a trace's text form."""

_SAID_BY_LABEL = frozenset({"type", "scope", "operation", "change_type", "resource", "version",
                            "ts"})  # event_label says these (the time shows as "at")
_GAP_SHARE = 0.1  # an idle gap is drawn at most this share of the time spent running

STATUS_MARKS = {"ok": "ok", "error": "error", "suspended": "waiting", "running": "running"}


# ------------------------------------------------------------------------------ view data

def _name(path: str, parent: str | None) -> str:
    """A span's label: its path below its parent (``then[1]/approve``), or the whole path."""
    if parent and path.startswith(parent + "/"):
        return path[len(parent) + 1:]
    return path


def _timeline(spans: list[Any]) -> tuple[Any, float]:
    """A function from a real time to a drawn time (idle gaps shortened), and the drawn length."""
    intervals = sorted((s.started_at, s.started_at + (s.duration_s or 0.0)) for s in spans)
    merged: list[list[float]] = []
    for start, end in intervals:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    busy = sum(end - start for start, end in merged) or 1e-6
    knots = []  # (real start of a busy stretch, drawn start)
    drawn = 0.0
    previous_end = None
    for start, end in merged:
        if previous_end is not None:
            drawn += min(start - previous_end, _GAP_SHARE * busy)
        knots.append((start, end, drawn))
        drawn += end - start
        previous_end = end

    def at(t: float) -> float:
        for start, end, offset in reversed(knots):
            if t >= start:
                return offset + min(t, end) - start
        return 0.0
    return at, drawn or 1e-6


def trace_view(trace: Any, run: dict | None = None) -> dict:
    """What the live trace view shows: the run (``request_id``, ``action``, ``status``,
    ``session``, ``duration_s``, ``started_at``), ``dropped`` / ``truncated`` and ``spans``
    (``path``, ``name``, ``parent``, ``block``, ``kind``, ``status``, ``attempt``,
    ``started_ms`` from the first span, ``duration_ms``, ``bar`` ``[left, width]`` in percent,
    ``input``, ``output`` (and ``output_type``, the class of an output that was not plain JSON),
    ``changes`` ``[{"label", "change"}]``, ``error``, and ``origin``:
    true for a failed span none of whose children failed, where the error came from)."""
    run = run or {}
    spans = list(trace.spans)
    at, length = _timeline(spans)
    first = min((s.started_at for s in spans), default=0.0)
    rows = []
    for span in spans:
        start = at(span.started_at)
        end = at(span.started_at + (span.duration_s or 0.0))
        error = None
        if span.error:
            error = {"type": str(span.error.get("type", "")),
                     "message": h.cut(str(span.error.get("message", "")), h.PREVIEW_CHARS),
                     "traceback": _tail(str(span.error.get("traceback") or ""))}
        rows.append({
            "path": span.path, "name": _name(span.path, span.parent), "parent": span.parent,
            "block": span.block, "kind": span.kind, "status": span.status,
            "attempt": span.attempt,
            "started_ms": round((span.started_at - first) * 1000, 3),
            "duration_ms": None if span.duration_s is None else round(span.duration_s * 1000, 3),
            "bar": [round(100 * start / length, 2),
                    round(max(100 * (end - start) / length, 0.0), 2)],
            "input": bounded(span.input, SPAN_VALUE_BUDGET),
            "output": bounded(span.output, SPAN_VALUE_BUDGET),
            "output_type": getattr(span, "output_type", None),
            "changes": [_change(c) for c in span.changes],
            "error": error,
        })
    failed_parents = {row["parent"] for row in rows if row["error"]}
    for row in rows:  # where an error came from: a failed span none of whose kids failed
        row["origin"] = bool(row["error"]) and row["path"] not in failed_parents
    return {"request_id": trace.request_id, "action": run.get("action") or "",
            "status": run.get("status") or "", "session": run.get("session") or "",
            "started_at": run.get("started_at"), "duration_s": run.get("duration_s"),
            "attempt": run.get("attempt") or 1, "dropped": trace.dropped,
            "truncated": trace.truncated, "spans": rows}


def _tail(text: str) -> str:
    return text if len(text) <= TRACEBACK_CHARS else "...\n" + text[-TRACEBACK_CHARS:]


def _change(event: dict) -> dict:
    if "$more" in event and len(event) == 1:
        return {"label": f"... {event['$more']} more changes", "change": None}
    kept = {k: v for k, v in event.items() if k not in _SAID_BY_LABEL and v is not None}
    if event.get("ts"):
        kept["at"] = h.when(event["ts"])
    return {"label": event_label(event), "change": bounded(kept, SPAN_VALUE_BUDGET)}


def _depths(spans: list[dict]) -> list[int]:
    parents = {s["path"]: s["parent"] for s in spans}
    out = []
    for span in spans:
        depth, parent = 0, span["parent"]
        while parent is not None and parent in parents and depth < 64:
            depth, parent = depth + 1, parents[parent]
        out.append(depth)
    return out


def tree_order(spans: list[dict]) -> list[tuple[int, dict]]:
    """Spans as the tree shows them: each after its parent, siblings in start order, with
    their depth (a span whose parent was not kept is a root)."""
    paths = {s["path"] for s in spans}
    kids: dict[str | None, list[dict]] = {}
    for span in spans:
        parent = span["parent"] if span["parent"] in paths else None
        kids.setdefault(parent, []).append(span)
    out: list[tuple[int, dict]] = []
    seen: set[int] = set()

    def walk(parent: str | None, depth: int) -> None:
        for span in kids.get(parent, []):
            if id(span) in seen:  # a path run twice (a resumed run) holds its kids once
                continue
            seen.add(id(span))
            out.append((depth, span))
            if depth < 64:
                walk(span["path"], depth + 1)
    walk(None, 0)
    return out


def _took(ms: float | None) -> str:
    if ms is None:
        return "…"
    if ms >= 1000:
        return f"{ms / 1000:.2f} s"
    return f"{ms:.1f} ms" if ms >= 0.1 else f"{ms * 1000:.0f} µs"


def run_subtitle(view: dict) -> str:
    """``plan · error · 12 ms · 5 spans · session 's1'``."""
    took = "" if view.get("duration_s") is None else _took(view["duration_s"] * 1000)
    spans = len(view["spans"])
    parts = [view.get("action") or "", view.get("status") or "", took,
             f"{spans} span{'s' if spans != 1 else ''}",
             f"session {view['session']!r}" if view.get("session") else ""]
    if (view.get("attempt") or 1) > 1:
        parts.append(f"{view['attempt']} attempts")
    return " · ".join(p for p in parts if p)


# ------------------------------------------------------------------------------ HTML and text

def _value_block(label: str, value: Any, budget: int) -> str:
    if value is None:
        body = '<span class="fs-null">null</span>'
    elif isinstance(value, (dict, list)) and value:
        body = h.json_tree(value, budget=budget, open_depth=1)
    else:
        body = h.pre(value, budget)
    return f'<div class="fs-span-part"><div class="fs-section">{h.esc(label)}</div>{body}</div>'


def _span_body(span: dict, budget: int) -> str:
    parts = []
    if span["error"]:
        err = span["error"]
        parts.append('<div class="fs-span-part"><div class="fs-section">error</div>'
                     + h.error(f"{err['type']}: {err['message']}")
                     + f'<details><summary class="fs-sub">traceback</summary><pre class="fs-pre">'
                       f'{h.esc(err["traceback"])}</pre></details></div>')
    parts.append(_value_block("input", span["input"], budget))
    if span["status"] == "ok":
        kind = span.get("output_type")
        parts.append(_value_block(f"output ({kind})" if kind else "output", span["output"],
                                  budget))
    changes = span["changes"]
    if changes:
        items = "".join(f'<li><span class="fs-code">{h.esc(c["label"])}</span></li>'
                        for c in changes)
        parts.append(f'<div class="fs-span-part"><div class="fs-section">changes '
                     f'({len(changes)})</div><ul class="fs-changes">{items}</ul></div>')
    return f'<div class="fs-span-body">{"".join(parts)}</div>'


def _span_line(depth: int, span: dict, attempts: bool = False) -> str:
    left, width = span["bar"]
    status = span["status"]
    mark = h.esc(STATUS_MARKS.get(status, status))
    word = "" if status == "ok" else f'<span class="fs-span-status fs-{mark}">{mark}</span>'
    kind = span["kind"] + ("" if span["block"] == span["name"].rsplit("/", 1)[-1]
                           else f" · {span['block']}")
    if attempts:
        kind += f" · attempt {span['attempt']}"
    return (f'<span class="fs-span-line" style="padding-left:{depth * 1.1:.1f}em">'
            f'<span class="fs-span-dot fs-st-{h.esc(status)}" title="{h.esc(status)}"></span>'
            f'<span class="fs-span-name">{h.esc(span["name"])}</span>'
            f'<span class="fs-sub fs-span-kind">{h.esc(kind)}</span>{word}'
            f'<span class="fs-bar-track" aria-hidden="true"><span class="fs-bar '
            f'fs-st-{h.esc(status)}" style="margin-left:{left}%;width:max(2px,{width}%)">'
            f'</span></span>'
            f'<span class="fs-sub fs-span-took">{h.esc(_took(span["duration_ms"]))}</span>'
            f'</span>')


def trace_html(view: dict, *, title: str | None = None) -> str:
    """A static trace: one row per span (tree order, indented, with its duration bar and
    status), each opening to its input, output, changes and error; spans that did not end ok
    start open. Bounded by :data:`TRACE_HTML_CHARS`."""
    ordered = tree_order(view["spans"])
    rows, used = [], 0
    for index, (depth, span) in enumerate(ordered):
        line = _span_line(depth, span, (view.get("attempt") or 1) > 1)
        body = _span_body(span, 600) if used < TRACE_HTML_CHARS * 0.8 else ""
        opened = " open" if (span["origin"] or span["status"] == "suspended") and body else ""
        row = (f'<details class="fs-span" data-span="{h.esc(span["path"])}"{opened}>'
               f'<summary>{line}</summary>{body}</details>' if body else
               f'<div class="fs-span" data-span="{h.esc(span["path"])}">{line}</div>')
        if used + len(row) > TRACE_HTML_CHARS:
            rows.append(f'<div class="fs-muted">… {len(ordered) - index} more spans: '
                        f'<span class="fs-code">%flow trace {h.esc(view["request_id"])}</span> '
                        f'shows them all</div>')
            break
        rows.append(row)
        used += len(row)
    notes = _notes(view)
    body = (f'<div class="fs-spans">{"".join(rows)}</div>' if rows else
            '<div class="fs-muted">(no spans: the run kept no trace)</div>')
    if notes:
        body += f'<div class="fs-sub fs-note">{h.esc(notes)}</div>'
    return h.card(title or f"trace of run {view['request_id']}", body, run_subtitle(view),
                  cls="fs-trace")


def _notes(view: dict) -> str:
    notes = []
    if view.get("dropped"):
        notes.append(f"{view['dropped']} spans left out to keep the trace small")
    if view.get("truncated"):
        notes.append("values cut short to keep the trace small")
    return "; ".join(notes)


def trace_text(view: dict) -> str:
    """The trace as text: a tree with statuses and durations, then each error with the end of
    its traceback. At most :data:`TRACE_TEXT_LINES` lines."""
    lines = [f"trace of run {view['request_id']}: {run_subtitle(view)}"]
    for depth, span in tree_order(view["spans"]):
        status = span["status"]
        lines.append(f"{'  ' * (depth + 1)}{span['name']} [{span['kind']} {span['block']}] "
                     f"{status} {_took(span['duration_ms'])}")
    for span in view["spans"]:
        if span["origin"]:
            err = span["error"]
            lines.append(f"error at {span['path']}: {err['type']}: {h.cut(err['message'], 300)}")
            lines += ["  " + line for line in err["traceback"].splitlines()[-8:]]
    if _notes(view):
        lines.append(f"({_notes(view)})")
    if len(lines) > TRACE_TEXT_LINES:
        lines = [*lines[:TRACE_TEXT_LINES], f"... {len(lines) - TRACE_TEXT_LINES} more lines"]
    return "\n".join(h.cut(line, 300) for line in lines)
