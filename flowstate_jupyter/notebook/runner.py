"""FlowRunner: a form built from an action's input model; Run; progress, output, events, runs.

The form enforces the model the way ``%flow run`` does, because it runs the same path: it sends
only what a person filled in (an empty box is a missing field, never ``""``), and the library's
validation refuses the input, naming the field, before anything runs. The refusal shows inline
next to that field. Run runs what the form showed when it was clicked: the click carries the
values (``_form.FormButton``), also those typed just before it that ipywidgets had not sent yet.
Controls follow the field's type:

* ``Literal`` and ``Enum`` fields: a dropdown (with a ``(none)`` choice when the field may stay
  unset);
* ``str``: a text box, or a multi-line box when the field asks for one
  (``json_schema_extra={"multiline": True}`` or ``{"format": "markdown"}``) or allows more than
  200 characters (``max_length``); newlines are kept;
* ``bool``: a checkbox; ``int`` / ``float`` with a default: a number box; without one: a text box,
  so that "not filled in" can be told from 0;
* anything else (nested models, lists, dicts, unions): JSON in a multi-line box, checked by
  pydantic as you leave the box, with pydantic's message next to it.

Required fields carry a ``*``; ``Field(description=...)`` shows under the control. While a run
takes longer than about a second, a status line says how far it got (steps done, the block
running now); after it, the output shows as a tree, the events fold under it, and the session's
last few runs are listed (live: runs from other processes appear too).
"""

from __future__ import annotations

import enum
import json
import time
import types
import typing
from typing import Any

import ipywidgets as W
from pydantic import BaseModel, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from ..errors import FlowStateError
from ..errors import ValidationError as FlowValidationError
from ..model import html as h
from ..model.display import events_html, jsonable, progress_text, runs_rows
from ._form import (
    _LABEL_WIDTH,
    _MULTILINE_FORMATS,
    FieldError,
    FormButton,
    FormField,
    json_control,
    read_fields,
    text_control,
)
from ._live import Live
from ._progress import Progress
from ._show import Snapshots, show
from .jsonview import JsonView, StyleSheet

RUNS_SHOWN = 5
"""How many of the session's last runs the runner lists."""

_STALE = ("the form changed as you clicked (another action's fields): check it and click Run "
          "again; nothing was run")



def action_input_model(flow: Any, action: str) -> type[BaseModel] | None:
    """The pydantic input model of a flow's action, or None if it takes free input."""
    return flow.actions[action].input_model


def _unwrap_optional(annotation: Any) -> Any:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "").replace("NoneType", "None")


def _multiline(info: Any) -> bool:
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    if extra.get("multiline") or str(extra.get("format", "")).lower() in _MULTILINE_FORMATS \
            or extra.get("widget") == "textarea":
        return True
    for item in info.metadata:
        if getattr(item, "max_length", None) is not None and item.max_length > 200:
            return True
    default = info.get_default(call_default_factory=True) if not info.is_required() else None
    return isinstance(default, str) and "\n" in default


class Field(FormField):
    """A field of FlowRunner's form, from the action's pydantic model (see the module doc)."""

    def __init__(self, name: str, info: Any) -> None:
        self.info = info
        required = info.is_required()
        annotation = _unwrap_optional(info.annotation)
        self.annotation = annotation
        default = None if required else info.get_default(call_default_factory=True)
        unset_ok = annotation is not info.annotation and not required and default is None
        control, kind = self._control(annotation, default, unset_ok, info)
        super().__init__(name, required=required, type_name=_type_name(info.annotation),
                         description=info.description or "", control=control, kind=kind)

    def _check_json(self, text: str) -> None:
        try:
            TypeAdapter(self.info.annotation).validate_json(text)
        except PydanticValidationError as exc:
            raise FieldError(_pydantic_message(exc)) from None

    @staticmethod
    def _control(annotation: Any, default: Any, unset_ok: bool, info: Any
                 ) -> tuple[W.Widget, str]:
        if typing.get_origin(annotation) is typing.Literal:
            options = list(typing.get_args(annotation))
            if unset_ok:
                return W.Dropdown(options=[("(none)", None), *((str(o), o) for o in options)],
                                  index=0), "choice"
            value = default if default in options else options[0]
            return W.Dropdown(options=[(str(o), o) for o in options], value=value), "choice"
        if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
            choices = [(m.name, m.value) for m in annotation]
            if unset_ok:
                return W.Dropdown(options=[("(none)", None), *choices], index=0), "choice"
            value = default.value if isinstance(default, enum.Enum) else choices[0][1]
            return W.Dropdown(options=choices, value=value), "choice"
        if annotation is str:
            return text_control(default, multiline=_multiline(info), rows=6)
        if annotation is bool and not unset_ok:
            return W.Checkbox(value=bool(default), indent=False), "value"
        if annotation in (int, float):
            if default is not None and not unset_ok:
                box = W.IntText if annotation is int else W.FloatText
                return box(value=default), "value"
            placeholder = "a whole number" if annotation is int else "a number"
            return W.Text(value="", placeholder=placeholder), "number"
        return json_control("" if default is None else json.dumps(jsonable(default)))


def _pydantic_message(exc: PydanticValidationError) -> str:
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    return f"{where}: {first['msg']}" if where else first["msg"]


class FlowRunner(W.VBox):
    """Pick an action, fill the form built from its input model, run it, see the outcome."""

    def __init__(self, flow: Any, session: Any) -> None:
        self.flow = flow
        self.session = session
        self.result: Any = None
        self.last_run_at: float | None = None
        self.fields: dict[str, Field] = {}
        self._head = W.HTML()
        self.action = W.Dropdown(options=list(flow.actions))
        self.form = W.VBox()
        self.form.add_class("fs-form")
        self.run_button = FormButton(description="Run", icon="play", tooltip="run the action")
        self.progress = W.IntProgress(value=0, min=0, max=1,
                                      layout=W.Layout(visibility="hidden", width="12em"))
        self.status = W.HTML()
        self.message = W.HTML()
        self.output = JsonView(None, title="output", expand_depth=2)
        self.output.layout.display = "none"
        self.events = W.HTML()
        self.runs = W.HTML()
        self.pending = W.VBox()  # a suspended run's resume form
        self.trace_button = W.Button(description="open trace", icon="align-left",
                                     tooltip="the last run's trace: each block's input, output, "
                                             "changes and error",
                                     layout=W.Layout(display="none"))
        self.trace_box = W.VBox()  # the last run's trace view, when opened
        self.trace_button.on_click(lambda _: self.toggle_trace())
        self._free_input: W.Textarea | None = None
        self.action.observe(lambda _: self._build_form(), "value")
        self.run_button.on_click(lambda _: self.run())
        self.run_button.on_stale(lambda _: self._refused(_STALE))
        super().__init__(children=[
            StyleSheet(), self._head,
            W.HBox([W.HTML('<div class="fs-card fs-field-label"><span class="fs-field-name">'
                           'action</span></div>',
                           layout=W.Layout(width=_LABEL_WIDTH, min_width=_LABEL_WIDTH)),
                    self.action], layout=W.Layout(align_items="center")),
            self.form,
            W.HBox([self.run_button, self.progress, self.status, self.trace_button],
                   layout=W.Layout(align_items="center")),
            self.message, self.pending, self.output, self.trace_box, self.events, self.runs])
        self.add_class("fs-flow-runner")
        self.add_class("fs-view")
        self.add_class("fs-box")
        self.add_class("fs-card")
        self.snapshots = Snapshots("FlowRunner", self.snapshot_html, self.__repr__)
        self._build_form()
        self._draw_head()
        self._show_runs()
        sid = session.id
        self._live = Live(session.store,
                          lambda e: e.get("type") == "request" and e.get("session") == sid,
                          self._show_runs)

    # -- the form -------------------------------------------------------------------------------
    @property
    def _controls(self) -> dict[str, tuple[W.Widget, str]]:
        """``{field: (control, kind)}`` of the current form."""
        return {name: (f.control, f.kind) for name, f in self.fields.items()}

    def _build_form(self) -> None:
        model = action_input_model(self.flow, self.action.value) if self.action.value else None
        self.fields = {}
        self._free_input = None
        if model is None:
            self._free_input = W.Textarea(placeholder="JSON (optional)", rows=3,
                                          layout=W.Layout(width="calc(100% - 8px)",
                                                          max_width="46em"))
            label = W.HTML('<div class="fs-card fs-field-label">input'
                           '<div class="fs-sub">free JSON</div></div>',
                           layout=W.Layout(width=_LABEL_WIDTH, min_width=_LABEL_WIDTH))
            self.form.children = [W.HBox([label, self._free_input])]
            self.run_button.follow([self.action, self._free_input])
            return
        for name, info in model.model_fields.items():
            self.fields[name] = Field(name, info)
        rows: list[W.Widget] = [f.row for f in self.fields.values()]
        if any(f.required for f in self.fields.values()):
            rows.append(W.HTML('<div class="fs-card fs-sub">* required</div>'))
        doc = (model.__doc__ or "").strip()
        if doc and not doc.startswith(model.__name__ + "("):
            rows.insert(0, W.HTML(f'<div class="fs-card fs-sub">{h.esc(doc)}</div>'))
        self.form.children = rows
        self.run_button.follow([self.action, *(f.control for f in self.fields.values())])

    def set_input(self, **values: Any) -> None:
        """Fill the form as a person would (used by tests and scripts)."""
        for name, value in values.items():
            self.fields[name].set(value)

    def _input(self) -> Any:
        """The payload from the form; ``FieldError`` (with inline errors shown) if some field
        cannot be sent."""
        if self._free_input is not None:
            text = self._free_input.value.strip()
            if not text:
                return None
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                try:
                    TypeAdapter(Any).validate_json(text)
                except PydanticValidationError as exc:
                    raise FieldError(f"input: {_pydantic_message(exc)}") from None
                raise
        return read_fields(self.fields, "nothing was run")

    # -- running ------------------------------------------------------------------------------
    def _clear(self) -> None:
        self.message.value = ""
        self.events.value = ""
        self.output.layout.display = "none"
        self.trace_button.layout.display = "none"
        for view in (*self.pending.children, *self.trace_box.children):
            view.close()
        self.pending.children = []
        self.trace_box.children = []
        for field in self.fields.values():
            field.show_error("")

    def _refused(self, message: str) -> None:
        self.message.value = h.error(message)
        self.status.value = ""

    def _show_progress(self, progress: dict) -> None:
        total = progress.get("total")
        if total:
            self.progress.layout.visibility = "visible"
            self.progress.max = total
            self.progress.value = min(progress.get("done") or 0, total)
        self.status.value = (f'<span class="fs-card fs-sub fs-running">'
                             f'{h.esc(progress_text(progress))}</span>')

    def _on_event(self, event: dict) -> None:
        self._tracker.on_event(event)
        if event.get("type") == "progress":
            data = event.get("data") or {}
            total = int(data.get("total") or 0)
            if total:
                self.progress.layout.visibility = "visible"
                self.progress.max = total
                self.progress.value = min(int(data.get("done") or 0), total)

    def run(self) -> Any:
        """Run the chosen action with the form's input; shows output, events or the refusal."""
        self.run_button.disabled = True
        self._clear()
        self.progress.value = 0
        self.status.value = '<span class="fs-sub">running…</span>'
        try:
            try:
                payload = self._input()
            except (FieldError, json.JSONDecodeError) as exc:
                self._refused(str(exc))
                return None
            self._tracker = Progress(self.action.value, self._show_progress)
            try:
                result = self.session.run(self.action.value, payload, on_event=self._on_event)
            except FlowStateError as exc:  # refused input: nothing ran
                self._place_error(exc)
                return None
            finally:
                self._tracker.stop()
            self._show_result(result)
            return result
        finally:
            self.run_button.disabled = False

    def _place_error(self, exc: FlowStateError) -> None:
        """Show a refusal next to the field it names (and in full above the output)."""
        path = getattr(exc, "path", None) if isinstance(exc, FlowValidationError) else None
        name = str(path[0]) if path else None
        if name in self.fields:
            reason = getattr(exc, "reason", None) or str(exc)
            self.fields[name].show_error(str(reason))
        self._refused(str(exc))

    def _show_result(self, result: Any) -> None:
        self.result = result
        self.last_run_at = time.time()
        took = f"{result.duration_s * 1000:.0f} ms"
        if result.error is not None:
            error = f"error: {type(result.error).__name__}: {result.error}"
            self.message.value = h.error(error)
            self.status.value = f'<span class="fs-sub">{result.status} · {took}</span>'
        elif result.status == "suspended":
            from .resume import ResumeForm
            self.pending.children = [ResumeForm(self.flow, result.request_id,
                                                store=self.session.store,
                                                suspension=result.suspension)]
            self.status.value = f'<span class="fs-sub">suspended · {took}</span>'
        else:
            self.output.set_value(jsonable(result.output),
                                  subtitle=f"{result.request_id} · {took}")
            self.output.layout.display = ""
            self.status.value = f'<span class="fs-sub">ok · {took}</span>'
        if result.trace is not None:
            self.trace_button.description = "open trace"
            self.trace_button.layout.display = ""
        self.events.value = (f'<details class="fs-card fs-events"><summary>events '
                             f'({len(result.events)})</summary>{events_html(result.events)}'
                             f'</details>')
        self._draw_head()
        self._show_runs()

    def _draw_head(self) -> None:
        last = f" · last run {h.when(self.last_run_at)}" if self.last_run_at else ""
        self._head.value = (h.head(
            f"FlowRunner · {getattr(self.flow, 'kind', '')}",
            f"session {self.session.id!r}{last}"))

    def _show_runs(self) -> None:
        runs = self.session.runs(limit=RUNS_SHOWN)
        if not runs:
            self.runs.value = ""
            return
        rows = [(r[3], r[1], r[2], r[4], r[5]) for r in runs_rows(runs)]
        self.runs.value = ('<div class="fs-card fs-runs">'
                           '<div class="fs-section">last runs</div>'
                           + h.table(rows, ("started", "action", "status", "took",
                                            "output / error"), nowrap=(0, 3)) + "</div>")
        self.snapshots.changed()

    def toggle_trace(self) -> Any:
        """Open the last run's trace view under the output (or close it); returns the view."""
        if self.trace_box.children:
            for view in self.trace_box.children:
                view.close()
            self.trace_box.children = []
            self.trace_button.description = "open trace"
            return None
        if self.result is None:
            return None
        from .traceview import TraceView
        view = TraceView(self.session.store, self.result.request_id)
        self.trace_box.children = [view]
        self.trace_button.description = "close trace"
        return view

    # -- display --------------------------------------------------------------------------------
    def snapshot_html(self) -> str:
        last = ""
        if self.pending.children:
            last = h.section("last run") + self.pending.children[0].snapshot_html()
        elif self.result is not None:
            last = h.section("last output") + (
                h.error(f"{type(self.result.error).__name__}: {self.result.error}")
                if self.result.error is not None else
                h.json_tree(jsonable(self.result.output), open_depth=2)
                if isinstance(jsonable(self.result.output), (dict, list))
                else h.pre(jsonable(self.result.output)))
        fields = ", ".join(f"{n}{'*' if f.required else ''}" for n, f in self.fields.items())
        body = (f'<div class="fs-sub">actions: {h.esc(", ".join(self.flow.actions))}'
                f'{" · " + h.esc(self.action.value) + " input: " + h.esc(fields) if fields else ""}'
                f'</div>{last}')
        runs = self.session.runs(limit=RUNS_SHOWN)
        if runs:
            rows = [(r[3], r[1], r[2], r[4], r[5]) for r in runs_rows(runs)]
            body += h.section("last runs") + h.table(
                rows, ("started", "action", "status", "took", "output / error"), nowrap=(0, 3))
        return h.card(f"FlowRunner · {getattr(self.flow, 'kind', '')}", body,
                      f"session {self.session.id!r}")

    def _ipython_display_(self) -> None:
        show(self)

    def close(self) -> None:
        for view in (*self.pending.children, *self.trace_box.children):
            view.close()
        self._live.close()
        self.snapshots.close()
        super().close()

    def __repr__(self) -> str:
        lines = [f"FlowRunner {getattr(self.flow, 'kind', '')}: actions "
                 f"{', '.join(self.flow.actions)}"]
        if self.result is not None:
            lines.append(f"last output: {h.preview(jsonable(self.result.output), 300)}")
        return "\n".join(lines)
