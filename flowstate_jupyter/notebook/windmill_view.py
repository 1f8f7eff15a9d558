"""The Inspector's Windmill tab: the Windmill states kept in the store, as HTML and as text."""

from __future__ import annotations

from typing import Any

from .. import windmill
from ..model import html as h


def windmill_states(store: Any) -> list[dict]:
    """Windmill states in the store (path, value, version, updated) — empty if unavailable."""
    try:
        return list(windmill.list_states(store=store))
    except Exception:  # noqa: BLE001 - the tab just stays empty
        return []


def windmill_html(store: Any, limit: int = h.PREVIEW_CHARS) -> str:
    states = windmill_states(store)
    if not states:
        return h.card("Windmill states", '<div class="fs-muted">(none yet: get_state() / '
                      'set_state() from flowstate_jupyter.windmill)</div>')
    rows = ((s["path"], f"v{s['version']}", h.esc(h.preview(s["value"], limit)),
             h.when(s.get("updated_at"))) for s in states)
    return h.card("Windmill states",
                  h.table(rows, ("path", "version", "value", "updated"), raw=True))


def windmill_text(store: Any) -> str:
    states = windmill_states(store)
    return "\n".join(f"windmill {s['path']} v{s['version']}: {h.preview(s['value'], 200)}"
                     for s in states) or "windmill: (no states)"


