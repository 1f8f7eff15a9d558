"""HTML builders for rich display (``_repr_html_``), view snapshots and widgets. Pure strings.

Two promises hold for everything built here:

* **Bounded.** Every value is escaped and cut to a preview limit, so a large state can neither
  break the page nor bloat a saved notebook (``PREVIEW_CHARS`` per value, ``budget`` per tree).
* **Theme-aware.** The style sheet (``THEME_CSS``) takes every colour from JupyterLab's CSS
  variables (``--jp-ui-font-color1``, ``--jp-layout-color1``, ...), never a literal colour, so
  light, dark and high-contrast themes all read well; outside JupyterLab the variables are unset
  and the browser's defaults apply. Its selectors are specific enough that JupyterLab's own
  table rules (right-aligned cells, zebra rows, centred tables) do not override them.

Cells show plain strings as text (unquoted), numbers and booleans as JSON, and objects and lists
as a small JSON tree (``<details>``, which needs no script and works on static viewers).
"""

from __future__ import annotations

import datetime as _dt
import html
import json
from collections.abc import Iterable
from typing import Any

PREVIEW_CHARS = 2000
"""Longest text shown for one value; the rest is summarised as "... (N more characters)"."""

TREE_BUDGET = 6000
"""Characters of values one static JSON tree shows before it summarises the rest."""

# The changed-mark colour: a tint of the theme's warning colour over the view's background, so
# the theme's text colour stays readable on it (light: a pale orange; dark: a deep brown).
_MARK = "color-mix(in srgb, var(--jp-warn-color2) 28%, var(--jp-layout-color1))"
_ERROR_BG = "color-mix(in srgb, var(--jp-error-color1) 14%, var(--jp-layout-color1))"

THEME_CSS = (
    # the frame of every view and snapshot
    ".fs-card{font-family:var(--jp-ui-font-family);font-size:var(--jp-ui-font-size1);"
    "line-height:1.45;color:var(--jp-ui-font-color1);background:var(--jp-layout-color1);"
    "border:var(--jp-border-width,1px) solid var(--jp-border-color2);border-radius:4px;"
    "padding:6px 10px;margin:2px 0;box-sizing:border-box;max-width:100%;text-align:left;"
    "overflow-x:auto}"
    ".fs-card .fs-card{border:none;padding:0;margin:0;background:transparent}"
    ".fs-head{display:flex;flex-wrap:wrap;align-items:baseline;gap:2px 10px;margin-bottom:4px}"
    ".fs-title{font-weight:600;color:var(--jp-ui-font-color0)}"
    ".fs-sub,.fs-muted{color:var(--jp-ui-font-color2)}"
    ".fs-section{font-weight:600;margin:8px 0 2px 0;color:var(--jp-ui-font-color1)}"
    ".fs-live{display:inline-flex;align-items:center;gap:4px;color:var(--jp-ui-font-color2)}"
    ".fs-dot{display:inline-block;width:7px;height:7px;border-radius:50%;"
    "background:var(--jp-success-color1)}"
    ".fs-dot.fs-off{background:var(--jp-layout-color4)}"
    ".fs-error{color:var(--jp-ui-font-color1);background:" + _ERROR_BG + ";"
    "border-left:3px solid var(--jp-error-color1);padding:2px 6px;margin:2px 0;"
    "white-space:pre-wrap}"
    ".fs-ok{border-left:3px solid var(--jp-success-color1);padding:2px 6px;margin:2px 0}"
    ".fs-hint{margin:4px 0}"
    ".fs-wait-for{border-left:3px solid var(--jp-warn-color1);padding:2px 6px;margin:2px 0}"
    # tables: left-aligned, no zebra, no centring (JupyterLab's rendered-HTML defaults)
    ".fs-card table.fs-table.fs-table{border-collapse:collapse;border:none;margin:2px 0 6px 0;"
    "table-layout:auto;width:auto;max-width:100%;font-size:inherit;color:inherit}"
    ".fs-card .fs-table.fs-table tr{background:transparent}"
    ".fs-card .fs-table.fs-table th,.fs-card .fs-table.fs-table td{text-align:left;"
    "vertical-align:top;padding:2px 12px 2px 0;line-height:1.45;white-space:normal;"
    "max-width:48em;border:none;border-bottom:var(--jp-border-width,1px) solid "
    "var(--jp-border-color2);background:transparent;color:inherit}"
    ".fs-card .fs-table.fs-table th{font-weight:600;color:var(--jp-ui-font-color1)}"
    ".fs-card .fs-table.fs-table td.fs-num{font-variant-numeric:tabular-nums;"
    "white-space:nowrap}"
    ".fs-card .fs-table.fs-table td.fs-nowrap{white-space:nowrap}"
    # JSON: pretty blocks and trees, coloured by the editor's syntax colours
    ".fs-card pre.fs-json,.fs-card pre.fs-pre{margin:0;padding:0;background:transparent;"
    "border:none;white-space:pre-wrap;word-break:break-word;font-family:"
    "var(--jp-code-font-family);font-size:var(--jp-code-font-size);color:inherit}"
    ".fs-code{font-family:var(--jp-code-font-family);font-size:var(--jp-code-font-size)}"
    ".fs-tree{font-family:var(--jp-code-font-family);font-size:var(--jp-code-font-size);"
    "line-height:1.5}"
    ".fs-tree details>summary{cursor:pointer;list-style:none}"
    ".fs-tree details>summary::-webkit-details-marker{display:none}"
    ".fs-tree details>summary::before{content:'\\25B8';display:inline-block;width:1.1em;"
    "color:var(--jp-ui-font-color2)}"
    ".fs-tree details[open]>summary::before{content:'\\25BE'}"
    ".fs-tree .fs-kids{margin-left:1.1em;padding-left:6px;border-left:1px solid "
    "var(--jp-border-color2)}"
    ".fs-tree .fs-leaf{padding-left:1.1em}"
    ".fs-key{color:var(--jp-mirror-editor-property-color)}"
    ".fs-str{color:var(--jp-mirror-editor-string-color);white-space:pre-wrap;"
    "word-break:break-word}"
    ".fs-numv{color:var(--jp-mirror-editor-number-color)}"
    ".fs-bool{color:var(--jp-mirror-editor-keyword-color)}"
    ".fs-null,.fs-more,.fs-count{color:var(--jp-ui-font-color2)}"
    # a change mark: tinted, then fading; the text takes the theme's strongest colour meanwhile
    "@keyframes fs-fade{0%,55%{background-color:" + _MARK + ";color:var(--jp-ui-font-color0);"
    "box-shadow:inset 3px 0 0 var(--jp-warn-color1)}"
    "100%{background-color:transparent;box-shadow:inset 3px 0 0 transparent}}"
    "@keyframes fs-ink{0%,55%{color:var(--jp-ui-font-color0)}}"
    ".fs-changed{animation:fs-fade 4s ease-in 1 forwards;border-radius:2px}"
    ".fs-changed *{animation:fs-ink 4s ease-in 1 forwards}"
    ".fs-card progress{vertical-align:middle;accent-color:var(--jp-brand-color1)}"
    # a trace: one line per span (status dot, name, kind, a duration bar on a right-aligned
    # track so that bars of every depth share one time axis, the duration)
    ".fs-span>summary{list-style:none;cursor:pointer}"
    ".fs-span>summary::-webkit-details-marker{display:none}"
    ".fs-span-line{display:flex;align-items:center;gap:6px;min-width:0;padding:1px 4px 1px 0;"
    "line-height:1.6}"
    ".fs-span-dot{flex:none;width:8px;height:8px;border-radius:50%}"
    ".fs-st-ok{background:var(--jp-success-color1)}"
    ".fs-st-error{background:var(--jp-error-color1)}"
    ".fs-st-suspended{background:var(--jp-warn-color1)}"
    ".fs-st-running{background:var(--jp-brand-color1)}"
    ".fs-span-name{font-family:var(--jp-code-font-family);font-size:var(--jp-code-font-size);"
    "white-space:nowrap;overflow:hidden;text-overflow:ellipsis;min-width:2em;flex:0 1 auto}"
    ".fs-span-kind{white-space:nowrap;flex:none}"
    ".fs-span-status{flex:none;padding:0 6px;border-radius:3px;color:var(--jp-ui-font-color1);"
    "background:" + _ERROR_BG + "}"
    ".fs-span-status.fs-waiting{background:" + _MARK + "}"
    ".fs-span-status.fs-running{background:var(--jp-layout-color2)}"
    ".fs-bar-track{flex:none;width:14em;max-width:35%;height:8px;margin-left:auto;"
    "background:var(--jp-layout-color2);border:1px solid var(--jp-border-color2);"
    "border-radius:2px;overflow:hidden;box-sizing:border-box}"
    ".fs-bar{display:block;height:100%;border-radius:1px}"
    ".fs-span-took{flex:none;width:5.5em;text-align:right;white-space:nowrap;"
    "font-variant-numeric:tabular-nums}"
    ".fs-span-body{margin:2px 0 8px 1.4em;padding-left:8px;border-left:1px solid "
    "var(--jp-border-color2)}"
    ".fs-span-part{margin-bottom:4px}"
    ".fs-card ul.fs-changes{margin:0;padding-left:1.2em}"
    # a snapshot shows only while its live view is absent (kernel gone, notebook reopened)
    ".jp-OutputArea-child:has(.fs-snapshot):has(+ .jp-OutputArea-child .fs-view)"
    "{display:none}"
    ".jp-OutputArea-child:has(.fs-snapshot)+.jp-OutputArea-child:not(:has(.fs-view))"
    "{display:none}"
)

STYLE = f"<style>{THEME_CSS}</style>"


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def preview(value: Any, limit: int = PREVIEW_CHARS) -> str:
    """Compact JSON text of ``value``, cut to ``limit`` characters."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return cut(text, limit)


def cut(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) > limit:
        return f"{text[:limit]}... ({len(text) - limit:,} more characters)"
    return text


def pretty(value: Any, limit: int = PREVIEW_CHARS) -> str:
    """Indented JSON text of ``value`` (a plain string as itself), cut to ``limit``."""
    if isinstance(value, str):
        return cut(value, limit)
    try:
        text = json.dumps(value, ensure_ascii=False, indent=2, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return cut(text, limit)


def pre(value: Any, limit: int = PREVIEW_CHARS) -> str:
    """A value as a pretty JSON block (a string as its text)."""
    return f'<pre class="fs-json">{esc(pretty(value, limit))}</pre>'


def when(ts: float | None) -> str:
    """A timestamp as local ``HH:MM:SS`` today, ``Mon 14:03:07`` this week, else the date too."""
    if not ts:
        return "never"
    moment = _dt.datetime.fromtimestamp(ts)
    today = _dt.date.today()
    if moment.date() == today:
        return moment.strftime("%H:%M:%S")
    if 0 < (today - moment.date()).days < 7:
        return moment.strftime("%a %H:%M:%S")
    return moment.strftime("%Y-%m-%d %H:%M")


def time_html(ts: float | None) -> str:
    """``when(ts)`` in a ``<time>`` element whose tooltip is the full local date and time."""
    if not ts:
        return '<span class="fs-muted">never</span>'
    moment = _dt.datetime.fromtimestamp(ts)
    return (f'<time datetime="{moment.isoformat(timespec="seconds")}" '
            f'title="{moment.strftime("%Y-%m-%d %H:%M:%S")}">{esc(when(ts))}</time>')


# ------------------------------------------------------------------------------ values

def scalar_html(value: Any, limit: int = PREVIEW_CHARS) -> str:
    """One JSON scalar, coloured by type; strings in quotes (as a tree shows them)."""
    if value is None:
        return '<span class="fs-null">null</span>'
    if isinstance(value, bool):
        return f'<span class="fs-bool">{"true" if value else "false"}</span>'
    if isinstance(value, (int, float)):
        return f'<span class="fs-numv">{esc(preview(value, limit))}</span>'
    if isinstance(value, str):
        return f'<span class="fs-str">{esc(preview(value, limit))}</span>'
    return esc(preview(value, limit))


def value_html(value: Any, limit: int = PREVIEW_CHARS) -> str:
    """A table cell's content: plain strings as text, other scalars as JSON, objects and lists
    as a JSON tree (small ones inline)."""
    if isinstance(value, str):
        return esc(cut(value, limit))
    if isinstance(value, (dict, list)):
        if not value:
            return f'<span class="fs-code">{"{}" if isinstance(value, dict) else "[]"}</span>'
        compact = preview(value, limit)
        if len(compact) <= 60:
            return f'<span class="fs-code">{esc(compact)}</span>'
        return json_tree(value, budget=min(limit, TREE_BUDGET), open_depth=0)
    return scalar_html(value, limit)


def _count(value: dict | list) -> str:
    n = len(value)
    if isinstance(value, dict):
        return f"{{{n} key{'s' if n != 1 else ''}}}"
    return f"[{n} item{'s' if n != 1 else ''}]"


def json_tree(value: Any, *, budget: int = TREE_BUDGET, open_depth: int = 1,
              label: str | None = None, changed: Iterable[str] = ()) -> str:
    """A collapsible JSON tree that needs no script (``<details>``), bounded by ``budget``
    characters of values. A dict without ``label`` shows its fields as the top rows; containers
    at depth ``open_depth`` and deeper start closed (top rows are depth 0).

    ``changed`` holds dotted paths (``"plan.steps.2"``) to mark with ``fs-changed``.
    """
    marks = set(changed)
    left = [budget]

    def key_html(key: Any) -> str:
        return f'<span class="fs-key">{esc(key)}</span>: ' if key is not None else ""

    def children(item: dict | list, path: str, depth: int) -> str:
        entries = list(item.items()) if isinstance(item, dict) else list(enumerate(item))
        parts = []
        for index, (key, child) in enumerate(entries):
            if left[0] <= 0:
                parts.append(f'<div class="fs-leaf fs-more">… {len(entries) - index:,} '
                             f'more</div>')
                break
            parts.append(node(key, child, f"{path}.{key}" if path else str(key), depth))
        return "".join(parts)

    def node(key: Any, item: Any, path: str, depth: int) -> str:
        mark = ' class="fs-changed"' if path in marks else ""
        if isinstance(item, (dict, list)) and item:
            opened = " open" if depth < open_depth else ""
            return (f'<details{opened} data-path="{esc(path)}"><summary{mark}>{key_html(key)}'
                    f'<span class="fs-count">{_count(item)}</span></summary>'
                    f'<div class="fs-kids">{children(item, path, depth + 1)}</div></details>')
        limit = min(PREVIEW_CHARS, max(40, left[0]))
        left[0] -= min(len(preview(item, limit)), limit)
        return (f'<div class="fs-leaf" data-path="{esc(path)}"><span{mark}>{key_html(key)}'
                f'{scalar_html(item, limit)}</span></div>')

    if isinstance(value, dict) and value and label is None:
        return f'<div class="fs-tree">{children(value, "", 0)}</div>'
    return f'<div class="fs-tree">{node(label, value, "", 0)}</div>'


# ------------------------------------------------------------------------------ blocks

def table(rows: Iterable[tuple[Any, ...]], header: tuple[str, ...] | None = None, *,
          changed: set[str] | frozenset[str] = frozenset(), raw: bool = False,
          nowrap: tuple[int, ...] = ()) -> str:
    """A left-aligned table. Cells go through :func:`value_html` (plain strings unquoted) unless
    ``raw`` (already HTML); the first cell is text. Rows whose first cell is in ``changed`` are
    marked; ``nowrap`` names columns (by index) kept on one line, such as times."""
    out = ['<table class="fs-table">']
    if header:
        out.append("<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) +
                   "</tr></thead>")
    out.append("<tbody>")
    for row in rows:
        cls = ' class="fs-changed"' if str(row[0]) in changed else ""
        cells = []
        for index, cell in enumerate(row):
            td = '<td class="fs-nowrap">' if index in nowrap else "<td>"
            if index == 0:
                content = cell if raw and isinstance(cell, str) and cell.startswith("<") \
                    else esc(cell)
            else:
                content = cell if raw else value_html(cell, 300)
            cells.append(f"{td}{content}</td>")
        out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def head(title: str, subtitle: str = "", *, extra: str = "") -> str:
    """A view's header line: bold title, muted subtitle, and any extra HTML (a live badge)."""
    sub = f'<span class="fs-sub">{esc(subtitle)}</span>' if subtitle else ""
    return f'<div class="fs-head"><span class="fs-title">{esc(title)}</span>{sub}{extra}</div>'


def card(title: str, body: str, subtitle: str = "", *, extra: str = "",
         cls: str = "", style: bool = True) -> str:
    """A titled frame, with the theme's style sheet unless ``style=False`` (a card inside
    another, or in a view that loads the sheet itself)."""
    classes = f"fs-card {cls}".strip()
    sheet = STYLE if style else ""
    return f'{sheet}<div class="{classes}">{head(title, subtitle, extra=extra)}{body}</div>'


def section(title: str) -> str:
    return f'<div class="fs-section">{esc(title)}</div>'


def error(message: Any) -> str:
    return f'<div class="fs-error">{esc(message)}</div>'


def state_text(state: Any, limit: int = 400) -> str:
    """One-line text form of a state, for text fallbacks."""
    if isinstance(state, dict):
        return ", ".join(f"{k}={preview(v, 120)}" for k, v in state.items())[:limit] or "{}"
    return preview(state, limit)
