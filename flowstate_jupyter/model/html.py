"""Small HTML builders for rich display (``_repr_html_``) and widgets. Pure strings, no IPython.

Every value shown is escaped and cut to a preview limit, so a large state can neither break the
page nor bloat a saved notebook.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
from collections.abc import Iterable
from typing import Any

PREVIEW_CHARS = 2000
"""Longest text shown for one value; the rest is summarised as "... (N more characters)"."""

STYLE = ("<style>.fs-card{font-family:var(--jp-ui-font-family,sans-serif);font-size:13px}"
         ".fs-card table{border-collapse:collapse}.fs-card td,.fs-card th{padding:2px 8px;"
         "text-align:left;vertical-align:top;border-bottom:1px solid #ddd}"
         ".fs-card pre{margin:0;white-space:pre-wrap}.fs-muted{color:#777}"
         ".fs-changed{background:#fff3b0}.fs-error{color:#b00020}</style>")


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def preview(value: Any, limit: int = PREVIEW_CHARS) -> str:
    """Compact JSON text of ``value``, cut to ``limit`` characters."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text) - limit:,} more characters)"
    return text


def pre(value: Any, limit: int = PREVIEW_CHARS) -> str:
    return f"<pre>{esc(preview(value, limit))}</pre>"


def when(ts: float | None) -> str:
    """A timestamp as local ``HH:MM:SS`` (date too when not today)."""
    if not ts:
        return "never"
    moment = _dt.datetime.fromtimestamp(ts)
    fmt = "%H:%M:%S" if moment.date() == _dt.date.today() else "%Y-%m-%d %H:%M:%S"
    return moment.strftime(fmt)


def table(rows: Iterable[tuple[Any, ...]], header: tuple[str, ...] | None = None, *,
          changed: set[str] | frozenset[str] = frozenset(), raw: bool = False) -> str:
    """An HTML table; cells are previewed as JSON unless ``raw`` (already HTML)."""
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        cls = ' class="fs-changed"' if str(row[0]) in changed else ""
        cells = [f"<td>{esc(row[0])}</td>"]
        cells += [f"<td>{c if raw else esc(preview(c, 300))}</td>" for c in row[1:]]
        out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "".join(out)


def card(title: str, body: str, subtitle: str = "") -> str:
    sub = f' <span class="fs-muted">{esc(subtitle)}</span>' if subtitle else ""
    return f'{STYLE}<div class="fs-card"><b>{esc(title)}</b>{sub}{body}</div>'


def state_text(state: Any, limit: int = 400) -> str:
    """One-line text form of a state, for text fallbacks."""
    if isinstance(state, dict):
        return ", ".join(f"{k}={preview(v, 120)}" for k, v in state.items())[:limit] or "{}"
    return preview(state, limit)
