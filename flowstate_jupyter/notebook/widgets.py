"""Live views: Inspector, ClientDataPreview, History, FlowRunner, and JsonView.

Each view subscribes to the store and refreshes itself when a change it shows is committed (by
this kernel at once, by another process within about a second) without re-running a cell. The
Inspector, the client-data preview and JsonView are anywidgets: their front end
(``static/*.js``) draws state as a collapsible JSON tree, keeps what a person opened across
updates, marks what changed (the mark fades) and says that the view is live and when it last
changed. History and FlowRunner are ipywidgets forms around the same HTML.

In a notebook each view shows as a snapshot plus the live view (``_show.py``): the snapshot is
what a restarted kernel, a reopened notebook or a static viewer shows. Outside a widget front end
a view is its text form (its ``repr``). Views receive bounded data (``model/display.py``), so
saved notebooks stay small.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import ipywidgets as W
import traitlets as t

from ..base.names import WM_PREFIX
from ..errors import FlowStateError
from ..model import html as h
from ..model.display import (
    SCOPE_ORDER,
    bounded,
    client_data_html,
    client_data_text,
    client_view,
    flatten_client_view,
    history_html,
    history_rows,
    history_table_html,
    scope_body_html,
    scope_handles,
    scope_subtitle,
    scope_text,
    scope_view,
    version_diff_text,
    version_label,
)
from ._assets import esm
from ._show import Snapshots
from ._version_select import _VersionSelect
from ._view import _Live, _View
from .jsonview import JsonView, StyleSheet
from .runner import FlowRunner, action_input_model
from .windmill_view import windmill_html, windmill_states, windmill_text


def _wants_scopes(handles: dict) -> Any:
    keys = {(handle.scope, handle.id) for handle in handles.values()}

    def wants(event: dict) -> bool:
        return (event.get("scope"), event.get("scope_id")) in keys or \
            str(event.get("resource", "")).startswith(WM_PREFIX)
    return wants


# -- Inspector ------------------------------------------------------------------------------------

class Inspector(_View):
    """One tab per scope (state and resources as trees, version, update time) and Windmill states.

    ``scopes`` holds what the tabs show (``model.display.scope_view`` per scope); ``windmill``
    the Windmill states (or None without that tab).
    """

    _esm = esm("inspector.js")
    scopes = t.List(t.Dict()).tag(sync=True)
    windmill = t.Any(None, allow_none=True).tag(sync=True)

    def __init__(self, session: Any, *, windmill: bool = True) -> None:
        self._handles = scope_handles(session)
        self._store = self._handles["session"].store
        self._windmill = windmill
        own = self._handles["session"]
        super().__init__(title=f"Inspector · session {own.id!r}")
        self.snapshots = Snapshots("Inspector", self.snapshot_html, self.__repr__)
        self.refresh()
        self.changed_at = max((s["updated_at"] or 0.0) for s in self.scopes) or time.time()
        self._listen(self._store, _wants_scopes(self._handles))

    def refresh(self) -> None:
        scopes = [scope_view(self._handles[s]) for s in SCOPE_ORDER]
        windmill = None
        if self._windmill:
            windmill = [{"path": s["path"], "version": s["version"],
                         "value": bounded(s["value"], 2000), "updated_at": s.get("updated_at")}
                        for s in windmill_states(self._store)[:50]]
        if scopes == self.scopes and windmill == self.windmill:
            return
        with self.hold_sync():
            self.scopes = scopes
            self.windmill = windmill
            self.changed_at = time.time()
        self.snapshots.changed()

    def snapshot_html(self) -> str:
        parts = [h.card(view["scope"], scope_body_html(view), scope_subtitle(view), style=False)
                 for view in self.scopes]
        if self._windmill:
            parts.append(windmill_html(self._store))
        return (f'<div class="fs-card">{h.head(self.title, "changed " + h.when(self.changed_at))}'
                f'{"".join(parts)}</div>')

    def text(self) -> str:
        parts = [scope_text(self._handles[s]) for s in SCOPE_ORDER]
        if self._windmill:
            parts.append(windmill_text(self._store))
        return "\n".join(parts)

    def __repr__(self) -> str:
        return "Inspector\n" + self.text()


# -- ClientDataPreview ----------------------------------------------------------------------------

class ClientDataPreview(_View):
    """The session's client view (``snapshot()``) as a tree; the keys that changed in the last
    update are in ``changed`` (and marked in the view)."""

    _esm = esm("client.js")
    data = t.Dict().tag(sync=True)
    subtitle = t.Unicode("").tag(sync=True)

    def __init__(self, session: Any) -> None:
        if not hasattr(session, "snapshot"):
            raise TypeError("ClientDataPreview needs a flow session (flow.session(...))")
        self._session = session
        self._handles = scope_handles(session)
        self._previous: dict[str, Any] | None = None
        self.changed: set[str] = set()
        self.snapshot: dict = {}
        super().__init__(title="client data", subtitle=f"session {self._handles['session'].id!r}")
        self.snapshots = Snapshots("client data preview", self.snapshot_html, self.__repr__)
        self.refresh()
        self.changed_at = time.time()
        self._listen(self._handles["session"].store, _wants_scopes(self._handles))

    def refresh(self) -> None:
        snapshot = self._session.snapshot()
        flat = flatten_client_view(snapshot)
        if self._previous is not None:
            if flat == self._previous:
                return
            self.changed = {k for k, v in flat.items() if self._previous.get(k, object()) != v}
        self._previous = flat
        self.snapshot = snapshot
        with self.hold_sync():
            self.data = client_view(snapshot)
            self.changed_at = time.time()
        self.snapshots.changed()

    def snapshot_html(self) -> str:
        return client_data_html(self.snapshot, self.changed)

    def text(self) -> str:
        return client_data_text(self.snapshot, self.changed)

    def __repr__(self) -> str:
        return "ClientDataPreview\n" + self.text()


# -- History --------------------------------------------------------------------------------------

class History(_Live, W.VBox):
    """Versions of one scope or resource, page by page; a diff between two; restore.

    The dropdowns read ``v3 · 16:27:16 · increment``; what they select stays selected when new
    versions arrive (a restore writes one). They send the chosen version, not its place in the
    list (``_version_select.py``), so the version restored is the one a person saw chosen even
    when a write added a version between drawing the list and choosing.
    """

    def __init__(self, handle: Any, *, limit: int | None = 500, page_size: int = 10) -> None:
        self._handle = handle
        self._limit = limit
        self.page_size = page_size
        self.page = 0
        self.rows: list[tuple[int, str, str, Any]] = []
        self.changed_at = time.time()
        self._head = W.HTML()
        self._table = W.HTML()
        self.prev_button = W.Button(description="newer", icon="chevron-left",
                                    tooltip="newer versions")
        self.next_button = W.Button(description="older", icon="chevron-right",
                                    tooltip="older versions")
        self._page_label = W.HTML()
        # refreshes come from a timer thread while the kernel's thread handles clicks and
        # choices: one at a time, so none reads the selection halfway through another's update
        self._refreshing = threading.RLock()
        self.older = _VersionSelect(description="from", lock=self._refreshing)
        self.newer = _VersionSelect(description="to", lock=self._refreshing)
        self.restore_button = W.Button(description="Restore 'from'", icon="undo",
                                       tooltip="write the 'from' version's state as a new "
                                               "version")
        self._diff = W.HTML()
        self._message = W.HTML()
        self.older.observe(lambda _: self._show_diff(), "value")
        self.newer.observe(lambda _: self._show_diff(), "value")
        self.restore_button.on_click(lambda _: self.restore())
        self.prev_button.on_click(lambda _: self.show_page(self.page - 1))
        self.next_button.on_click(lambda _: self.show_page(self.page + 1))
        super().__init__(children=[
            StyleSheet(), self._head, self._table,
            W.HBox([self.prev_button, self._page_label, self.next_button],
                   layout=W.Layout(align_items="center")),
            W.HBox([self.older, self.newer, self.restore_button],
                   layout=W.Layout(align_items="center", flex_flow="row wrap")),
            self._diff, self._message])
        self.add_class("fs-history")
        self.add_class("fs-view")
        self.add_class("fs-box")
        self.add_class("fs-card")
        self.snapshots = Snapshots("History", self.snapshot_html, self.text)
        self.refresh()
        store = handle.store
        self._listen(store, lambda e: (e.get("scope"), e.get("scope_id")) ==
                     (handle._scope, handle._scope_id))

    @property
    def pages(self) -> int:
        return max(1, -(-len(self.rows) // self.page_size))

    def refresh(self) -> None:
        with self._refreshing:
            self._refresh()

    def _refresh(self) -> None:
        rows = history_rows(self._handle, self._limit)
        first = not self.rows and not self.older.options
        if rows == self.rows and not first:
            return
        self.rows = rows
        self.changed_at = time.time()
        options = [(version_label(v, when, op), v) for v, when, op, _ in rows]
        versions = [v for _, v in options]
        newest = self.newer.options[0][1] if self.newer.options else None
        older, newer = self.older.value, self.newer.value
        # 'to' follows the newest version unless a person chose an older one; 'from' stays
        # what was chosen (a restore keeps it), else it is the version before 'to'
        if newer not in versions or newer == newest:
            newer = versions[0] if versions else None
        if older not in versions or older == newer or first:
            later = [v for v in versions if newer is not None and v < newer]
            older = later[0] if later else newer
        for select, value in ((self.newer, newer), (self.older, older)):
            with select.hold_sync():  # one message: the list and the choice in it
                select.options = options
                select.value = value if versions else None
        self.show_page(self.page)
        self._show_diff()
        self.snapshots.changed()

    def _title(self) -> str:
        return f"history of {self._handle._label}"

    def show_page(self, page: int) -> None:
        """Show page ``page`` (0: the newest versions)."""
        self.page = min(max(0, page), self.pages - 1)
        start = self.page * self.page_size
        shown = self.rows[start:start + self.page_size]
        live = ('<span class="fs-live"><span class="fs-dot" aria-hidden="true"></span>'
                '<span class="fs-live-text">live</span>'
                f'<span class="fs-changed-at"> · changed {h.esc(h.when(self.changed_at))}'
                '</span></span>')
        n = len(self.rows)
        kept = f"{n} version{'s' if n != 1 else ''} kept" if n else ""
        self._head.value = h.head(self._title(), kept, extra=live)
        self._table.value = f'<div class="fs-card">{history_table_html(shown)}</div>'
        self._page_label.value = (f'<span class="fs-sub">page {self.page + 1} of {self.pages}'
                                  f'{self._range(start, len(shown))}</span>')
        self.prev_button.disabled = self.page == 0
        self.next_button.disabled = self.page >= self.pages - 1

    @staticmethod
    def _range(start: int, count: int) -> str:
        return f" · rows {start + 1}–{start + count}" if count else ""

    def _show_diff(self) -> None:
        if self.older.value is None or self.newer.value is None:
            self._diff.value = ""
            return
        try:
            text = version_diff_text(self._handle, self.older.value, self.newer.value)
        except LookupError as exc:
            text = str(exc)
        self._diff.value = (f'<div class="fs-card"><div class="fs-sub">'
                            f'v{self.older.value} → v{self.newer.value}</div>'
                            f'<pre class="fs-pre">{h.esc(text)}</pre></div>')

    def restore(self, version: int | None = None) -> bool:
        """Write the state of ``version`` (default: the 'from' dropdown) as a new version."""
        with self._refreshing:
            return self._restore(version if version is not None else self.older.value)

    def _restore(self, version: int | None) -> bool:
        entries = {e.version: e.state for e in self._handle.history(limit=None)}
        if version not in entries:
            self._message.value = h.error(f"v{version} is not kept")
            return False
        try:
            changed = self._handle.set_state(entries[version])
        except FlowStateError as exc:
            self._message.value = h.error(exc)
            return False
        text = (f"restored v{version} as v{self._handle.version}" if changed
                else "already at that state: no new version")
        self.refresh()  # the lists first: when the message shows, they show the new version
        self._message.value = f'<div class="fs-card fs-ok">{h.esc(text)}</div>'
        return changed

    def snapshot_html(self) -> str:
        return history_html(self._title(), self.rows[:self.page_size * 2],
                            subtitle=f"{len(self.rows)} versions kept · changed "
                                     f"{h.when(self.changed_at)}")

    def text(self) -> str:
        return (f"History of {self._handle._label}\n" + (
            "\n".join(f"v{v} {when} {op}: {h.state_text(s, 200)}"
                      for v, when, op, s in self.rows[:50]) or "(no versions yet)"))

    def close(self) -> None:
        self._stop()
        super().close()

    def __repr__(self) -> str:
        return self.text()


__all__ = ["ClientDataPreview", "FlowRunner", "History", "Inspector", "JsonView",
           "action_input_model"]
