"""One field of a form built from a model: its row (label, control, help, inline error) and
how to read it. FlowRunner's fields come from a pydantic model (``runner.py``), a resume form's
from a JSON Schema (``resume.py``); both read, check and show errors the same way.

The button that acts on a form (Run, Resume) is a :class:`FormButton`: its click carries what
the form's controls hold in the browser, so what runs is what the person saw when clicking.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import anywidget
import ipywidgets as W
import traitlets as t

from ..base.text import short
from ..model import html as h
from ._assets import esm

_LABEL_WIDTH = "11em"
_MULTILINE_FORMATS = {"markdown", "multiline", "textarea", "text"}
_NOT_JSON = object()


class FieldError(ValueError):
    """A field's content that cannot be sent (not JSON, not of the field's type)."""


class FormField:
    """One input field: its row (label, control, help, inline error) and how to read it.

    Kinds: ``choice`` (a dropdown or toggle buttons; ``None`` = not given), ``text`` (empty =
    not given), ``value`` (checkbox or number box: always given), ``number`` (a number typed as
    text; empty = not given), ``json`` (parsed and checked by :meth:`_check_json`; empty = not
    given). FlowRunner's fields come from a pydantic model (:class:`Field`); a resume form's
    from a JSON Schema (``resume.py``).
    """

    def __init__(self, name: str, *, required: bool, type_name: str, description: str,
                 control: W.Widget, kind: str) -> None:
        self.name = name
        self.required = required
        self.control, self.kind = control, kind
        self.control.add_class("fs-control")
        self.error = W.HTML()
        self.error.add_class("fs-field-error")
        self.help = W.HTML(f'<div class="fs-sub fs-help">{h.esc(description)}</div>'
                           if description else "")
        mark = ('<span class="fs-required" title="required" aria-label="required">*</span>'
                if required else "")
        label = W.HTML(f'<div class="fs-card fs-field-label"><span class="fs-field-name">'
                       f'{h.esc(name)}</span>{mark}<div class="fs-sub fs-type">'
                       f'{h.esc(type_name)}</div></div>',
                       layout=W.Layout(width=_LABEL_WIDTH, min_width=_LABEL_WIDTH))
        column = W.VBox([self.control, self.help, self.error],
                        layout=W.Layout(flex="1 1 auto", min_width="0"))
        self.row = W.HBox([label, column], layout=W.Layout(align_items="flex-start"))
        self.row.add_class("fs-field")
        self.row.add_class(f"fs-field-{name}")
        if required:
            self.row.add_class("fs-required-field")
        if kind == "json":
            self.control.observe(lambda _: self.check(), "value")

    def _check_json(self, text: str) -> None:
        """Raise :class:`FieldError` when ``text`` (valid JSON) is not of the field's type."""

    # -- reading and writing ------------------------------------------------------------------
    def read(self) -> tuple[bool, Any]:
        """``(given, value)``; raises :class:`FieldError` for content that cannot be sent."""
        value = self.control.value
        if self.kind == "choice":
            return value is not None, value
        if self.kind == "value":
            return True, value
        if self.kind == "text":
            return value != "", value
        text = value.strip()
        if not text:
            return False, None
        if self.kind == "number":
            return True, text  # the model converts "12" to 12, or says why not
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = _NOT_JSON
        self._check_json(text)
        if data is _NOT_JSON:  # a checker that lets it pass still cannot send it
            raise FieldError(f"not JSON: {short(text, 60)}")
        return True, data

    def check(self) -> bool:
        """Show an inline error for content that cannot be sent; True when it is fine."""
        try:
            self.read()
        except FieldError as exc:
            self.show_error(str(exc))
            return False
        self.show_error("")
        return True

    def set(self, value: Any) -> None:
        if self.kind == "choice" and value is None:
            self.control.index = None if isinstance(self.control, W.ToggleButtons) else 0
        elif self.kind in ("text", "number") and value is None:
            self.control.value = ""
        elif self.kind == "json":
            self.control.value = "" if value is None else json.dumps(value)
        elif self.kind == "number":
            self.control.value = str(value)
        else:
            self.control.value = value

    def show_error(self, message: str) -> None:
        self.error.value = h.error(message) if message else ""
        if message:
            self.row.add_class("fs-invalid")
        else:
            self.row.remove_class("fs-invalid")


def read_fields(fields: Mapping[str, FormField], nothing_done: str) -> dict:
    """The values of the fields that were given; every field that cannot be sent shows its
    error inline, then one :class:`FieldError` names them all and says ``nothing_done``."""
    values, bad = {}, []
    for name, field in fields.items():
        try:
            given, value = field.read()
        except FieldError as exc:
            field.show_error(str(exc))
            bad.append(name)
            continue
        field.show_error("")
        if given:
            values[name] = value
    if bad:
        raise FieldError(f"fix {', '.join(repr(b) for b in bad)} first: {nothing_done}")
    return values



def _wide() -> W.Layout:
    """The layout of a field's box that takes the row's width (up to a readable measure)."""
    return W.Layout(width="calc(100% - 8px)", max_width="46em")


def text_control(default: Any, *, multiline: bool, rows: int) -> tuple[W.Widget, str]:
    """A text field's box (``rows`` lines when ``multiline``), holding ``default`` if it is a
    string; with its kind, ``"text"``."""
    text = default if isinstance(default, str) else ""
    if multiline:
        return W.Textarea(value=text, rows=rows, layout=_wide(),
                          placeholder="text (several lines)"), "text"
    return W.Text(value=text, layout=_wide(), placeholder="text"), "text"


def json_control(text: str) -> tuple[W.Widget, str]:
    """A box for a value typed as JSON, holding ``text``; with its kind, ``"json"``."""
    return W.Textarea(value=text, rows=3, layout=_wide(), placeholder="JSON"), "json"


class FormButton(anywidget.AnyWidget):
    """A form's Run or Resume button: its click carries the form's values as the browser has
    them, and the kernel takes them before it acts.

    ipywidgets sends a control's change as a state update and holds the next one back while the
    previous is unanswered (at most one update in flight per widget), but sends a ``Button``'s
    click at once. So a click right after typing reached the kernel before the last keystrokes
    (while the kernel was busy, all but the first): Run ran ``"a"`` where the box read
    ``"abc"``. Here the click is ``{"event": "click", "form": [[model id, trait, value], ...]}``
    for the controls given to :meth:`follow`; the kernel applies those values as ipywidgets
    applies an update, then calls the :meth:`on_click` handlers. A click on a form the kernel
    has since rebuilt (another action chosen, the run asks again), or one whose values rebuild
    it, acts on nothing the person saw: the :meth:`on_stale` handlers get it instead.

    It looks like the ``Button`` it replaces (same classes) and keeps its Python side:
    ``description``, ``icon``, ``tooltip``, ``disabled``, ``layout``, ``on_click``, ``click``.
    """

    _esm = esm("formbutton.js")
    description = t.Unicode("").tag(sync=True)
    icon = t.Unicode("").tag(sync=True)
    tooltip = t.Unicode(None, allow_none=True).tag(sync=True)
    disabled = t.Bool(False).tag(sync=True)
    controls = t.List(t.Tuple(t.Unicode(), t.Unicode())).tag(sync=True)  # (model id, trait)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._controls: list[W.Widget] = []
        self._clicked = W.CallbackDispatcher()
        self._stale = W.CallbackDispatcher()
        self.on_msg(self._on_message)

    def follow(self, controls: list[W.Widget]) -> None:
        """The controls whose values a click carries (the form's, as it is drawn now)."""
        self._controls = list(controls)
        self.controls = [(c.model_id, "index" if "index" in c.keys else "value")
                         for c in self._controls]

    def on_click(self, callback: Any, remove: bool = False) -> None:
        """Call ``callback(button)`` on a click, after the form's values have been taken."""
        self._clicked.register_callback(callback, remove=remove)

    def on_stale(self, callback: Any, remove: bool = False) -> None:
        """Call ``callback(button)`` on a click on a form that has changed since it was drawn."""
        self._stale.register_callback(callback, remove=remove)

    def click(self) -> None:
        """Act as a click would, on the values the kernel has (used by tests and scripts)."""
        self._clicked(self)

    def _on_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict) or content.get("event") != "click":
            return
        form = content.get("form")
        if form is not None and not self._take(form):
            self._stale(self)
            return
        self._clicked(self)

    def _take(self, form: Any) -> bool:
        """Apply the values a click carried; False if they are not this form's (as now)."""
        drawn = [c.model_id for c in self._controls]
        if not isinstance(form, list) or \
                [item[0] if isinstance(item, list) and len(item) == 3 else None
                 for item in form] != drawn:
            return False
        keys = dict(self.controls)
        try:
            for control, (model_id, key, value) in zip(self._controls, form):
                if key != keys[model_id]:
                    return False
                control.set_state({key: value})
        except (t.TraitError, ValueError, TypeError):
            return False
        return [c.model_id for c in self._controls] == drawn  # not rebuilt by a value
