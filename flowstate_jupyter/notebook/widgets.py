"""Live widgets (ipywidgets 8): Inspector, ClientDataPreview, FlowRunner, History.

Each widget subscribes to the store and refreshes itself when a change it shows is committed —
by this kernel at once, by another process within about a second — without re-running a cell.
Outside a widget front end each shows a readable text form (its ``repr``). Widget state holds
only previews (see ``html.PREVIEW_CHARS``), so saved notebooks stay small.
"""

from __future__ import annotations

import enum
import json
import typing
from typing import Any

import ipywidgets as W
from pydantic import BaseModel

from ..base.names import WM_PREFIX
from ..errors import FlowStateError
from ..model import html as h
from ..model.display import (
    SCOPE_ORDER,
    client_data_html,
    client_data_text,
    event_label,
    flatten_client_view,
    history_rows,
    scope_handles,
    scope_html,
    scope_text,
    version_diff_text,
)
from ._live import Live
from .windmill_view import windmill_html, windmill_text


class _LiveWidget(W.VBox):
    """A VBox that refreshes on store changes and stops listening when closed."""

    _live: Live | None = None

    def _listen(self, store: Any, wants: Any) -> None:
        self._live = Live(store, wants, self.refresh)

    def refresh(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self) -> None:
        if self._live is not None:
            self._live.close()
        super().close()


def _wants_scopes(handles: dict) -> Any:
    keys = {(handle.scope, handle.id) for handle in handles.values()}

    def wants(event: dict) -> bool:
        return (event.get("scope"), event.get("scope_id")) in keys or \
            str(event.get("resource", "")).startswith(WM_PREFIX)
    return wants


class Inspector(_LiveWidget):
    """One tab per scope (state, version, update time, resources) plus Windmill states."""

    def __init__(self, session: Any, *, windmill: bool = True) -> None:
        self._handles = scope_handles(session)
        self._store = self._handles["session"].store
        self._windmill = windmill
        self._panes = {scope: W.HTML() for scope in SCOPE_ORDER}
        if windmill:
            self._panes["windmill"] = W.HTML()
        tabs = W.Tab(children=list(self._panes.values()))
        for index, title in enumerate(self._panes):
            tabs.set_title(index, title)
        self.tabs = tabs
        super().__init__(children=[tabs])
        self.add_class("fs-inspector")
        self.refresh()
        self._listen(self._store, _wants_scopes(self._handles))

    def refresh(self) -> None:
        for scope in SCOPE_ORDER:
            self._panes[scope].value = scope_html(self._handles[scope])
        if self._windmill:
            self._panes["windmill"].value = windmill_html(self._store)

    def text(self) -> str:
        parts = [scope_text(self._handles[s]) for s in SCOPE_ORDER]
        if self._windmill:
            parts.append(windmill_text(self._store))
        return "\n".join(parts)

    def __repr__(self) -> str:
        return "Inspector\n" + self.text()


class ClientDataPreview(_LiveWidget):
    """The session's client view (``snapshot()``), marking what changed since the last update."""

    def __init__(self, session: Any) -> None:
        if not hasattr(session, "snapshot"):
            raise TypeError("ClientDataPreview needs a flow session (flow.session(...))")
        self._session = session
        self._handles = scope_handles(session)
        self._previous: dict[str, Any] | None = None
        self.changed: set[str] = set()
        self.snapshot: dict = {}
        self._pane = W.HTML()
        super().__init__(children=[self._pane])
        self.add_class("fs-client-data")
        self.refresh()
        self._listen(self._handles["session"].store, _wants_scopes(self._handles))

    def refresh(self) -> None:
        snapshot = self._session.snapshot()
        flat = flatten_client_view(snapshot)
        if self._previous is not None:
            self.changed = {k for k, v in flat.items() if self._previous.get(k, object()) != v}
        self._previous = flat
        self.snapshot = snapshot
        self._pane.value = client_data_html(snapshot, self.changed)

    def __repr__(self) -> str:
        return "ClientDataPreview\n" + client_data_text(self.snapshot, self.changed)


class History(_LiveWidget):
    """Versions of one scope or resource, a diff between two, and restore."""

    def __init__(self, handle: Any, *, limit: int = 50) -> None:
        self._handle = handle
        self._limit = limit
        self.older = W.Dropdown(description="from")
        self.newer = W.Dropdown(description="to")
        self.restore_button = W.Button(description="Restore 'from'", icon="undo")
        self._table = W.HTML()
        self._diff = W.HTML()
        self._message = W.HTML()
        self.older.observe(lambda _: self._show_diff(), "value")
        self.newer.observe(lambda _: self._show_diff(), "value")
        self.restore_button.on_click(lambda _: self.restore())
        super().__init__(children=[self._table, W.HBox([self.older, self.newer,
                                                        self.restore_button]),
                                   self._diff, self._message])
        self.add_class("fs-history")
        self.refresh()
        store = handle.store
        self._listen(store, lambda e: (e.get("scope"), e.get("scope_id")) ==
                     (handle._scope, handle._scope_id))

    def refresh(self) -> None:
        rows = history_rows(self._handle, self._limit)
        versions = [r[0] for r in rows]
        self._table.value = h.card(f"history of {self._handle._where()}", h.table(
            ((f"v{v}", t, op, s) for v, t, op, s in rows), ("version", "time", "operation",
                                                           "state")))
        with self.hold_trait_notifications():
            self.newer.options = versions
            self.older.options = versions
            if versions:
                self.newer.value = versions[0]
                self.older.value = versions[1] if len(versions) > 1 else versions[0]
        self._show_diff()

    def _show_diff(self) -> None:
        if self.older.value is None or self.newer.value is None:
            self._diff.value = ""
            return
        try:
            text = version_diff_text(self._handle, self.older.value, self.newer.value)
        except LookupError as exc:
            text = str(exc)
        self._diff.value = f"<pre>{h.esc(text)}</pre>"

    def restore(self, version: int | None = None) -> bool:
        """Write the state of ``version`` (default: the 'from' dropdown) as a new version."""
        version = version if version is not None else self.older.value
        entries = {e.version: e.state for e in self._handle.history(limit=None)}
        if version not in entries:
            self._message.value = f'<span class="fs-error">v{version} is not kept</span>'
            return False
        try:
            changed = self._handle.set_state(entries[version])
        except FlowStateError as exc:
            self._message.value = f'<span class="fs-error">{h.esc(exc)}</span>'
            return False
        self._message.value = f"restored v{version}" if changed else "already at that state"
        return changed

    def __repr__(self) -> str:
        rows = history_rows(self._handle, self._limit)
        return f"History of {self._handle._where()}\n" + (
            "\n".join(f"v{v} {t} {op}: {h.state_text(s, 200)}" for v, t, op, s in rows)
            or "(no versions yet)")


# -- FlowRunner -----------------------------------------------------------------------------------

def _unwrap_optional(annotation: Any) -> Any:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, getattr(__import__("types"), "UnionType",
                                                                typing.Union)):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def _field_widget(name: str, info: Any) -> tuple[W.Widget, str]:
    """A form control for one input field, and how to read it.

    Kinds: ``value`` (the control's value), ``json`` (parse the text; empty = the default) and
    ``optional`` (a field that may stay unset, ``X | None = None``: a ``(none)`` choice or
    empty text leaves it out, so the model's default applies instead of a value the form
    invented).
    """
    annotation = _unwrap_optional(info.annotation)
    default = None if info.is_required() else info.get_default(call_default_factory=True)
    unset_ok = annotation is not info.annotation and not info.is_required() and default is None
    label = dict(description=name, style={"description_width": "initial"})
    if typing.get_origin(annotation) is typing.Literal:
        options = list(typing.get_args(annotation))
        if unset_ok:
            return W.Dropdown(options=[("(none)", None), *((str(o), o) for o in options)],
                              index=0, **label), "optional"
        return W.Dropdown(options=options, value=default if default in options else options[0],
                          **label), "value"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        options = [(m.name, m.value) for m in annotation]
        if unset_ok:
            return W.Dropdown(options=[("(none)", None), *options], index=0, **label), \
                "optional"
        value = default.value if isinstance(default, enum.Enum) else options[0][1]
        return W.Dropdown(options=options, value=value, **label), "value"
    if annotation is str:
        return W.Text(value=default or "", **label), "optional" if unset_ok else "value"
    if unset_ok and annotation in (bool, int, float):
        pass  # a checkbox or a number box cannot say "unset": JSON text below (empty = None)
    elif annotation is bool:
        return W.Checkbox(value=bool(default), **label), "value"
    elif annotation is int:
        return W.IntText(value=default or 0, **label), "value"
    elif annotation is float:
        return W.FloatText(value=default or 0.0, **label), "value"
    text = "" if default is None else json.dumps(
        default.model_dump(mode="json") if isinstance(default, BaseModel) else default)
    return W.Textarea(value=text, placeholder="JSON", **label), "json"


def action_input_model(flow: Any, action: str) -> type[BaseModel] | None:
    """The pydantic input model of a flow's action, or None if it takes free input."""
    return flow.actions[action].input_model


class FlowRunner(W.VBox):
    """Pick an action, fill a form built from its input model, run it, see output and events."""

    def __init__(self, flow: Any, session: Any) -> None:
        self.flow = flow
        self.session = session
        self.result: Any = None
        self.action = W.Dropdown(options=list(flow.actions), description="action")
        self.form = W.VBox()
        self.run_button = W.Button(description="Run", button_style="primary", icon="play")
        self.progress = W.IntProgress(value=0, min=0, max=1, description="progress",
                                      layout=W.Layout(visibility="hidden"))
        self.output = W.HTML()
        self.events = W.HTML()
        self._controls: dict[str, tuple[W.Widget, str]] = {}
        self._free_input: W.Textarea | None = None
        self.action.observe(lambda _: self._build_form(), "value")
        self.run_button.on_click(lambda _: self.run())
        super().__init__(children=[self.action, self.form,
                                   W.HBox([self.run_button, self.progress]),
                                   self.output, self.events])
        self.add_class("fs-flow-runner")
        self._build_form()

    def _build_form(self) -> None:
        model = action_input_model(self.flow, self.action.value) if self.action.value else None
        self._controls = {}
        self._free_input = None
        if model is None:
            self._free_input = W.Textarea(description="input", placeholder="JSON (optional)")
            self.form.children = [self._free_input]
            return
        for name, info in model.model_fields.items():
            self._controls[name] = _field_widget(name, info)
        self.form.children = [control for control, _ in self._controls.values()]

    def set_input(self, **values: Any) -> None:
        """Fill the form as a person would (used by tests and scripts)."""
        for name, value in values.items():
            control, kind = self._controls[name]
            if kind == "optional" and value is None and isinstance(control, W.Dropdown):
                control.index = 0  # the "(none)" choice
            elif kind == "optional" and value is None:
                control.value = ""
            else:
                control.value = json.dumps(value) if kind == "json" else value

    def _input(self) -> Any:
        if self._free_input is not None:
            text = self._free_input.value.strip()
            return json.loads(text) if text else None
        values = {}
        for name, (control, kind) in self._controls.items():
            if kind == "json":
                text = control.value.strip()
                if text:
                    try:
                        values[name] = json.loads(text)
                    except json.JSONDecodeError as exc:
                        raise ValueError(f"field {name!r} is not valid JSON: {exc.msg}") from exc
            elif kind == "optional":
                if control.value not in (None, ""):
                    values[name] = control.value
            else:
                values[name] = control.value
        return values

    def _on_event(self, event: dict) -> None:
        if event.get("type") == "progress":
            data = event.get("data") or {}
            total = int(data.get("total") or 0)
            if total:
                self.progress.layout.visibility = "visible"
                self.progress.max = total
                self.progress.value = min(int(data.get("done") or 0), total)

    def run(self) -> Any:
        """Run the chosen action with the form's input; shows output, events or the error."""
        self.run_button.disabled = True
        self.output.value = '<span class="fs-muted">running…</span>'
        self.progress.value = 0
        try:
            try:
                payload = self._input()
            except ValueError as exc:
                self.output.value = f'<span class="fs-error">{h.esc(exc)}</span>'
                return None
            try:
                result = self.session.run(self.action.value, payload, on_event=self._on_event)
            except FlowStateError as exc:  # refused input: nothing ran
                self.output.value = f'<span class="fs-error">{h.esc(exc)}</span>'
                return None
            self.result = result
            if result.error is not None:
                self.output.value = (f'<span class="fs-error">error: '
                                     f'{h.esc(type(result.error).__name__)}: '
                                     f'{h.esc(result.error)}</span>')
            else:
                self.output.value = h.card("output", h.pre(_jsonable(result.output)),
                                           f"{result.duration_s * 1000:.0f} ms")
            rows = ((i + 1, h.esc(event_label(e)),
                     h.esc(h.preview(e.get("delta", e.get("data")), 300)))
                    for i, e in enumerate(result.events[-200:]))
            self.events.value = h.card("events", h.table(rows, ("#", "event", "data"), raw=True))
            return result
        finally:
            self.run_button.disabled = False

    def __repr__(self) -> str:
        lines = [f"FlowRunner {getattr(self.flow, 'kind', '')}: actions "
                 f"{', '.join(self.flow.actions)}"]
        if self.result is not None:
            lines.append(f"last output: {h.preview(_jsonable(self.result.output), 300)}")
        return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value
