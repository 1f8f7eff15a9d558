"""One field of a form built from a model: its row (label, control, help, inline error) and
how to read it. FlowRunner's fields come from a pydantic model (``runner.py``), a resume form's
from a JSON Schema (``resume.py``); both read, check and show errors the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import ipywidgets as W

from ..base.text import short
from ..model import html as h

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
