"""Two things side by side, differing rows marked: HTML (JupyterLab's theme) and text.

Pure strings. ``fs.compare(a, b)`` renders through this (``flows/compare.py``). Colours come only
from JupyterLab's CSS variables (``--jp-...``), so the table reads well in light and dark themes;
outside JupyterLab the variables are unset and the browser's defaults apply. A differing row is
marked three ways that need no colour: a ``≠`` in its first cell, bold text, and a left border.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import html as h
from .diff import MISSING

__all__ = ["Row", "Section", "side_by_side_html", "side_by_side_text"]

MISSING_TEXT = "(absent)"

_STYLE = (
    "<style>"
    ".fs-cmp{font-family:var(--jp-ui-font-family);font-size:var(--jp-ui-font-size1);"
    "color:var(--jp-content-font-color1)}"
    ".fs-cmp table{border-collapse:collapse;margin:2px 0 8px 0}"
    ".fs-cmp th,.fs-cmp td{padding:2px 8px;text-align:left;vertical-align:top;"
    "border-bottom:var(--jp-border-width) solid var(--jp-border-color2)}"
    ".fs-cmp th{color:var(--jp-content-font-color2);font-weight:600}"
    ".fs-cmp td pre{margin:0;white-space:pre-wrap;font-family:var(--jp-code-font-family)}"
    ".fs-cmp .fs-cmp-muted{color:var(--jp-content-font-color3)}"
    ".fs-cmp tr.fs-cmp-diff td{background:var(--jp-warn-color3);font-weight:600}"
    ".fs-cmp tr.fs-cmp-diff td:first-child{border-left:3px solid var(--jp-warn-color1)}"
    "</style>")


@dataclass(frozen=True)
class Row:
    """One row: a key and the two values (``diff.MISSING`` when absent on that side)."""

    key: str
    left: Any
    right: Any
    differs: bool


@dataclass(frozen=True)
class Section:
    """A titled group of rows, with a one-line summary (``2 differences``, ``equal``)."""

    title: str
    rows: Sequence[Row]
    summary: str


def _value_text(value: Any, limit: int) -> str:
    return MISSING_TEXT if value is MISSING else h.preview(value, limit)


def side_by_side_html(title: str, left: str, right: str, sections: Sequence[Section],
                      subtitle: str = "", footer: str = "") -> str:
    """An HTML card: per section a table ``key | left | right``, differing rows marked;
    ``footer`` (HTML, escaped by the caller) closes it."""
    parts = [_STYLE, '<div class="fs-cmp">', f"<b>{h.esc(title)}</b>"]
    if subtitle:
        parts.append(f' <span class="fs-cmp-muted">{h.esc(subtitle)}</span>')
    for section in sections:
        parts.append(f'<div><b>{h.esc(section.title)}</b> '
                     f'<span class="fs-cmp-muted">{h.esc(section.summary)}</span></div>')
        if not section.rows:
            parts.append('<div class="fs-cmp-muted">(nothing)</div>')
            continue
        parts.append(f"<table><tr><th></th><th>{h.esc(section.title)}</th>"
                     f"<th>{h.esc(left)}</th><th>{h.esc(right)}</th></tr>")
        for row in section.rows:
            cls = ' class="fs-cmp-diff"' if row.differs else ""
            mark = "≠" if row.differs else ""
            parts.append(f"<tr{cls}><td>{mark}</td><td>{h.esc(row.key)}</td>"
                         f"<td><pre>{h.esc(_value_text(row.left, 300))}</pre></td>"
                         f"<td><pre>{h.esc(_value_text(row.right, 300))}</pre></td></tr>")
        parts.append("</table>")
    parts.append(footer)
    parts.append("</div>")
    return "".join(parts)


def side_by_side_text(title: str, left: str, right: str, sections: Sequence[Section],
                      width: int = 36) -> str:
    """The same as aligned text: ``*`` marks a differing row."""
    lines = [title]
    for section in sections:
        lines.append(f"{section.title}: {section.summary}")
        if not section.rows:
            continue
        key_width = min(max(len(r.key) for r in section.rows), 40)
        lines.append(f"    {'':<{key_width}}  {_cut(left, width):<{width}}  {_cut(right, width)}")
        for row in section.rows:
            lines.append(f"  {'*' if row.differs else ' '} {_cut(row.key, 40):<{key_width}}  "
                         f"{_cut(_value_text(row.left, 200), width):<{width}}  "
                         f"{_cut(_value_text(row.right, 200), width)}")
    return "\n".join(lines)


def _cut(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."
