"""ResumeForm: the form a suspended run waits on; its submit resumes the run
(docs/guide.md, 'Ask a person: suspend and resume').

A block that calls ``ctx.suspend(Model, message=..., timeout_s=...)`` ends its run as
``"suspended"``; the run's request record keeps the model's JSON Schema. The form is built from
that schema, so it works for any waiting run in the store, also one suspended by another
process or before a kernel restart:

* booleans are two toggle buttons, ``yes`` / ``no`` (approve / reject), and enums of a few
  short values are toggle buttons too (more: a dropdown); a required one starts unchosen, so a
  person has to decide;
* the other fields are as in FlowRunner (``_form.py``): text (several lines for Markdown or
  long text), numbers, and JSON checked as you leave the box; ``*`` marks the required ones and
  the field's description shows under it.

**Resume** sends what was filled in to ``flow.resume(request_id, value)``: what the form
showed when it was clicked (the click carries the values, ``_form.FormButton``). A refused value
shows next to its field (pydantic's message when the model class can be imported here, else
the JSON Schema's) and leaves the run suspended; the run's outcome then shows in the form: its
output, its error (and the line that opens its trace), or the next suspension's form. The form
follows the run's request record, so a run resumed elsewhere (``%flow resume``, another
process) says so, as does an expired suspension; either way the form is then closed.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import ipywidgets as W

from ..errors import FlowStateError, RunStateError
from ..errors import ValidationError as FlowValidationError
from ..flows.bookkeeping import effective_status
from ..flows.durable import read_run
from ..flows.trace import resolve_type
from ..model import html as h
from ..model.display import command_hint, expires_text, jsonable, schema_fields, suspension_dict
from ._form import (
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

_TOGGLE_MAX = 4  # enums of at most this many short values are toggle buttons
_TYPE_NAMES = {"boolean": "bool", "string": "str", "integer": "int", "number": "float",
               "array": "list", "object": "object", "null": "None"}


# ------------------------------------------------------------------------------ schema fields

def _resolve(schema: dict, root: dict) -> tuple[dict, bool]:
    """A property's schema with local ``$ref`` / one-item ``allOf`` followed, and whether it
    may be null (``anyOf: [X, {"type": "null"}]``)."""
    nullable = False
    for _ in range(10):  # bounded: a schema that refers to itself stops here
        if "$ref" in schema and str(schema["$ref"]).startswith("#/$defs/"):
            target = (root.get("$defs") or {}).get(schema["$ref"][len("#/$defs/"):]) or {}
            schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
            continue
        options = schema.get("anyOf") or schema.get("oneOf")
        if options:
            rest = [o for o in options if o.get("type") != "null"]
            if len(rest) == 1:
                nullable = nullable or len(rest) < len(options)
                schema = {**rest[0], **{k: v for k, v in schema.items()
                                        if k not in ("anyOf", "oneOf")}}
                continue
        if isinstance(schema.get("allOf"), list) and len(schema["allOf"]) == 1:
            schema = {**schema["allOf"][0], **{k: v for k, v in schema.items() if k != "allOf"}}
            continue
        break
    return schema, nullable


def _choices(schema: dict) -> list[Any] | None:
    if isinstance(schema.get("enum"), list):
        return list(schema["enum"])
    if "const" in schema:
        return [schema["const"]]
    return None


def _type_name(schema: dict) -> str:
    choices = _choices(schema)
    if choices is not None:
        return h.cut(" | ".join(json.dumps(c) for c in choices), 60)
    kind = schema.get("type")
    if isinstance(kind, list):
        return " | ".join(_TYPE_NAMES.get(k, str(k)) for k in kind)
    return _TYPE_NAMES.get(str(kind), schema.get("title") or "JSON")


def _multiline(schema: dict) -> bool:
    if schema.get("multiline") or schema.get("widget") == "textarea" \
            or str(schema.get("format", "")).lower() in _MULTILINE_FORMATS:
        return True
    if isinstance(schema.get("maxLength"), int) and schema["maxLength"] > 200:
        return True
    return isinstance(schema.get("default"), str) and "\n" in schema["default"]


class SchemaField(FormField):
    """A field of a resume form, from its property in the suspension's JSON Schema."""

    def __init__(self, name: str, schema: dict, root: dict, required: bool) -> None:
        self.schema, self.nullable = _resolve(schema, root)
        self.root = root
        control, kind = self._control(self.schema, required)
        super().__init__(name, required=required, type_name=_type_name(self.schema),
                         description=str(self.schema.get("description") or ""),
                         control=control, kind=kind)

    @staticmethod
    def _control(schema: dict, required: bool) -> tuple[W.Widget, str]:
        default = schema.get("default")
        has_default = "default" in schema
        choices = _choices(schema)
        if schema.get("type") == "boolean" and choices is None:
            choices = [True, False]
        if choices is not None:
            labels = [("yes" if c is True else "no" if c is False else str(c)) for c in choices]
            value = default if has_default and default in choices else None
            options = list(zip(labels, choices))
            if len(choices) <= _TOGGLE_MAX and all(len(label) <= 16 for label in labels):
                icons = ["check", "times"] if choices == [True, False] else []
                box = W.ToggleButtons(options=options, value=value, icons=icons,
                                      style={"button_width": "auto"})
                return box, "choice"
            if value is None:
                options = [("(choose)" if required else "(none)", None), *options]
            return W.Dropdown(options=options, value=value), "choice"
        if schema.get("type") == "string":
            return text_control(default, multiline=_multiline(schema), rows=5)
        if schema.get("type") in ("integer", "number"):
            text = "" if default is None else json.dumps(default)
            placeholder = "a whole number" if schema["type"] == "integer" else "a number"
            return W.Text(value=text, placeholder=placeholder), "number"
        return json_control("" if default is None else json.dumps(default))

    def read(self) -> tuple[bool, Any]:
        given, value = super().read()
        if given and self.kind == "number":
            try:
                number = float(value) if self.schema.get("type") == "number" else int(value)
            except ValueError:
                return True, value  # sent as typed: the model says why not
            return True, number
        return given, value

    def _check_json(self, text: str) -> None:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FieldError(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") \
                from None
        message = _schema_error({**self.schema, "$defs": self.root.get("$defs") or {}}, data)
        if message:
            raise FieldError(message)


def _schema_errors(schema: dict, data: Any) -> list[Any]:
    """What is wrong with ``data`` by ``schema``: references only inside it, patterns run in
    linear time (docs/decisions.md, 'JSON Schemas fetch nothing and run in linear
    time'; a schema that breaks those rules checks nothing here, and the
    run's own check decides)."""
    import re2
    from referencing.exceptions import Unresolvable

    from ..model.jsonschema import linear_validator
    try:
        return list(linear_validator(schema).iter_errors(data))
    except (Unresolvable, re2.error, RecursionError):
        return []


def _schema_error(schema: dict, data: Any) -> str | None:
    """The first thing wrong with ``data`` by ``schema``, or None."""
    from jsonschema.exceptions import best_match
    error = best_match(_schema_errors(schema, data))
    if error is None:
        return None
    at = ".".join(str(p) for p in error.absolute_path)
    return f"{at}: {error.message}" if at else error.message


def example_value(schema: dict) -> dict:
    """A value of the schema's required fields to show in a ``%flow resume`` line."""
    out: dict[str, Any] = {}
    for name, required in schema_fields(schema):
        if not required:
            continue
        prop, _ = _resolve((schema.get("properties") or {}).get(name) or {}, schema)
        choices = _choices(prop)
        kind = prop.get("type")
        out[name] = (choices[0] if choices else True if kind == "boolean" else
                     0 if kind in ("integer", "number") else [] if kind == "array" else
                     {} if kind == "object" else "...")
    return out


# ------------------------------------------------------------------------------ the form

class ResumeForm(W.VBox):
    """The form of suspended run ``request_id`` (see the module doc); ``flow`` resumes it.

    ``state`` is ``"waiting"`` (the form can be sent), ``"resuming"``, ``"done"`` (this form
    resumed the run; ``result`` is its outcome) or ``"closed"`` (expired, resumed elsewhere,
    or not suspended); ``note`` says why, in words.
    """

    def __init__(self, flow: Any, request_id: str, *, store: Any,
                 suspension: Any = None) -> None:
        # ``suspension``: what the caller knows of it (a result's ``Suspension``); the run's
        # record, read here, says more (the model to import, the suspension's key)
        self.flow = flow
        self.request_id = request_id
        self.store = store
        self.result: Any = None
        self.state = "waiting"
        self.note = ""
        self.changed_at = time.time()
        self.fields: dict[str, SchemaField] = {}
        self._lock = threading.Lock()
        self.suspension: dict = {}
        self._head = W.HTML()
        self._ask = W.HTML()
        self.form = W.VBox()
        self.form.add_class("fs-form")
        self.resume_button = FormButton(description="Resume", icon="play",
                                        tooltip="resume the run with this value")
        self.status = W.HTML()
        self.message = W.HTML()
        self.output = JsonView(None, title="output", expand_depth=2)
        self.output.layout.display = "none"
        self.resume_button.on_click(lambda _: self.submit())
        self.resume_button.on_stale(lambda _: self._stale())
        super().__init__(children=[
            StyleSheet(), self._head, self._ask, self.form,
            W.HBox([self.resume_button, self.status], layout=W.Layout(align_items="center")),
            self.message, self.output])
        for name in ("fs-resume-form", "fs-view", "fs-box", "fs-card"):
            self.add_class(name)
        self.snapshots = Snapshots("resume form", self.snapshot_html, self.__repr__,
                                   again=f"%flow resume {request_id} draws it again")
        record = read_run(store, request_id)
        if effective_status(record.state) == "suspended":
            # the record's own (key, model and all), rather than a result's summary of it
            suspension = record.state.get("suspension") or suspension
        if suspension is None:
            self._close(f"run {request_id} is {effective_status(record.state)}, not "
                        f"suspended: there is nothing to resume")
        else:
            self._build(suspension_dict(suspension))
        self._live = Live(store, lambda e: e.get("scope") == "request"
                          and e.get("scope_id") == request_id, self.refresh)

    # -- the form -------------------------------------------------------------------------------
    def _build(self, suspension: dict) -> None:
        self.suspension = dict(suspension)
        schema = suspension.get("schema") or {}
        required = set(schema.get("required") or ())
        self.fields = {name: SchemaField(name, prop if isinstance(prop, dict) else {}, schema,
                                         name in required)
                       for name, prop in (schema.get("properties") or {}).items()}
        rows: list[W.Widget] = [f.row for f in self.fields.values()]
        if any(f.required for f in self.fields.values()):
            rows.append(W.HTML('<div class="fs-card fs-sub">* required</div>'))
        if not rows:
            rows.append(W.HTML('<div class="fs-card fs-sub">this run takes no value: Resume '
                               'continues it</div>'))
        self.form.children = rows
        self.resume_button.follow([f.control for f in self.fields.values()])
        self.state = "waiting"
        self.resume_button.disabled = False
        self.resume_button.layout.display = ""
        expired = expires_text(suspension.get("expires_at"))
        if suspension.get("expires_at") is not None and suspension["expires_at"] < time.time():
            self._close(f"the suspension {expired}; it can no longer be resumed (start a new "
                        f"run)")
        self._draw()

    def set_value(self, **values: Any) -> None:
        """Fill the form as a person would (used by tests and scripts)."""
        for name, value in values.items():
            self.fields[name].set(value)

    def _value(self) -> dict:
        return read_fields(self.fields, "the run was not resumed")

    # -- resuming -------------------------------------------------------------------------------
    def submit(self) -> Any:
        """Resume the run with the form's value; returns the run's outcome (``None`` when the
        value was refused or the run cannot be resumed)."""
        with self._lock:
            if self.state != "waiting":
                return None
            self.state = "resuming"
        self.resume_button.disabled = True
        self.message.value = ""
        self.status.value = '<span class="fs-sub">resuming…</span>'
        try:
            value = self._value()
            self._precheck(value)
        except FieldError as exc:
            return self._refused(str(exc))
        progress = Progress(None, self._show_progress)
        try:
            result = self.flow.resume(self.request_id, value, store=self.store,
                                      on_event=progress.on_event)
        except FlowValidationError as exc:
            name = str(exc.path[0]) if exc.path else None
            if name in self.fields:
                self.fields[name].show_error(str(exc.reason))
            return self._refused(str(exc))
        except RunStateError as exc:
            self._close(str(exc))
            return None
        except FlowStateError as exc:
            return self._refused(str(exc))
        finally:
            progress.stop()
        self._show_result(result)
        return result

    def _precheck(self, value: dict) -> None:
        """Without the model class here (its module is not importable), check the value by the
        schema first, so that a refusal lands next to its field."""
        if resolve_type(self.suspension.get("model")) is not None:
            return  # pydantic speaks, through flow.resume
        errors = _schema_errors(self.suspension.get("schema") or {}, value)
        placed = False
        for error in errors:
            path = list(error.absolute_path)
            name = str(path[0]) if path else None
            if name is None and error.validator == "required":
                name = next((n for n in self.fields if f"'{n}'" in error.message), None)
            if name in self.fields:
                self.fields[name].show_error(error.message)
                placed = True
        if errors:
            raise FieldError(errors[0].message if not placed else
                             "fix the marked fields first: the run was not resumed")

    def _stale(self) -> None:
        """A click on the form as it was before the run asked again (or was closed)."""
        if self.state == "waiting":
            self._refused("the form changed as you clicked (the run asks again): check it and "
                          "click Resume again; the run was not resumed")

    def _show_progress(self, progress: dict) -> None:
        self.status.value = (f'<span class="fs-sub fs-running">resuming · '
                             f'{progress.get("elapsed", 0.0):.1f} s · '
                             f'{progress.get("events", 0)} events</span>')

    def _refused(self, message: str) -> None:
        self.message.value = h.error(message)
        self.status.value = '<span class="fs-sub">not resumed: the run still waits</span>'
        with self._lock:
            self.state = "waiting"
        self.resume_button.disabled = False
        self._changed()
        return None

    def _show_result(self, result: Any) -> None:
        self.result = result
        took = f"{result.duration_s * 1000:.0f} ms"
        if result.status == "suspended" and result.suspension is not None:
            self.message.value = ('<div class="fs-card fs-ok">resumed; the run asks again '
                                  '(below)</div>')
            self.status.value = ""
            record = read_run(self.store, self.request_id)
            self._build(record.state.get("suspension") or suspension_dict(result.suspension))
            return
        with self._lock:
            self.state = "done"
        self.form.children = []
        self.resume_button.layout.display = "none"
        if result.error is not None:
            self.message.value = (h.error(f"{type(result.error).__name__}: {result.error}")
                                  + command_hint("where it failed:",
                                                 f"%flow trace {result.request_id}"))
        else:
            self.message.value = ""
            self.output.set_value(jsonable(result.output),
                                  subtitle=f"{result.request_id} · {took}")
            self.output.layout.display = ""
        self.note = f"resumed here: {result.status} · {took}"
        self.status.value = f'<span class="fs-sub fs-outcome">{h.esc(self.note)}</span>'
        self._draw()

    def _close(self, why: str) -> None:
        with self._lock:
            self.state = "closed"
        self.note = why
        self.form.children = []
        self.resume_button.disabled = True
        self.resume_button.layout.display = "none"
        self.status.value = ""
        self.message.value = f'<div class="fs-card fs-closed">{h.esc(why)}</div>'
        self._draw()

    def refresh(self) -> None:
        """The run's record changed: say so when someone else resumed it."""
        if self.state != "waiting":
            return
        try:
            record = read_run(self.store, self.request_id)
        except RunStateError as exc:
            self._close(str(exc))
            return
        status = effective_status(record.state)
        suspension = record.state.get("suspension")
        if status == "suspended" and suspension and \
                suspension.get("key") == self.suspension.get("key") and \
                suspension.get("path") == self.suspension.get("path"):
            return
        if status == "suspended" and suspension:
            self.message.value = ('<div class="fs-card fs-ok">resumed elsewhere; the run asks '
                                  'again</div>')
            self._build(suspension_dict(suspension))
            return
        self._close(f"run {self.request_id} was resumed elsewhere (it is {status} now); this "
                    f"form is closed")

    # -- display --------------------------------------------------------------------------------
    def _changed(self) -> None:
        self.changed_at = time.time()
        self.snapshots.changed()

    def _draw(self) -> None:
        suspension = self.suspension
        title = {"waiting": "waiting for you", "resuming": "waiting for you",
                 "done": "resumed", "closed": "not waiting"}[self.state]
        sub = f"run {self.request_id}"
        if suspension.get("path"):
            sub += f" · {suspension['path']}"
        expires = expires_text(suspension.get("expires_at")) if self.state == "waiting" else ""
        self._head.value = h.head(title, sub + (f" · {expires}" if expires else ""))
        message = suspension.get("message")
        self._ask.value = (f'<div class="fs-card fs-wait-for fs-ask">{h.esc(message)}</div>'
                           if message and self.state in ("waiting", "resuming") else "")
        self._changed()

    def snapshot_html(self) -> str:
        suspension = self.suspension
        schema = suspension.get("schema") or {}
        if self.state in ("waiting", "resuming"):
            rows = [(f"{f.name}{' *' if f.required else ''}", _type_name(f.schema),
                     str(f.schema.get("description") or "")) for f in self.fields.values()]
            body = ""
            if suspension.get("message"):
                body += f'<div class="fs-wait-for">{h.esc(suspension["message"])}</div>'
            if rows:
                body += h.table(rows, ("field", "type", "help"))
            body += command_hint("resume it from a cell:", self.resume_line(schema))
            sub = expires_text(suspension.get("expires_at"))
            return h.card(f"waiting for you · run {self.request_id}", body, sub,
                          cls="fs-resume")
        body = f'<div class="fs-sub">{h.esc(self.note)}</div>'
        if self.result is not None and self.result.error is None:
            output = jsonable(self.result.output)
            body += h.json_tree(output, open_depth=2) if isinstance(output, (dict, list)) \
                and output else h.pre(output)
        return h.card(f"run {self.request_id}", body, cls="fs-resume")

    def resume_line(self, schema: dict | None = None) -> str:
        """The ``%flow resume`` line that does what the form does."""
        schema = schema if schema is not None else self.suspension.get("schema") or {}
        return f"%flow resume {self.request_id} {json.dumps(example_value(schema))}"

    def _ipython_display_(self) -> None:
        show(self)

    def close(self) -> None:
        self._live.close()
        self.snapshots.close()
        super().close()

    def __repr__(self) -> str:
        if self.state in ("waiting", "resuming"):
            fields = ", ".join(f"{f.name}{'*' if f.required else ''} ({_type_name(f.schema)})"
                               for f in self.fields.values()) or "none"
            lines = [f"run {self.request_id} is waiting: "
                     f"{self.suspension.get('message') or self.suspension.get('path')}",
                     f"fields: {fields}"]
            expires = expires_text(self.suspension.get("expires_at"))
            if expires:
                lines.append(expires)
            lines.append(f"resume it: {self.resume_line()}")
            return "\n".join(lines)
        return f"run {self.request_id}: {self.note}"


__all__ = ["ResumeForm", "SchemaField", "example_value"]
