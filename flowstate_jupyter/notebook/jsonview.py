"""JsonView: any JSON value as a collapsible tree with change marks (an anywidget); StyleSheet.

The tree is ``static/jsontree.js``; FlowRunner shows a run's output with it, and other views can
embed it as a child widget.
"""

from __future__ import annotations

from typing import Any

import anywidget
import traitlets as t

from ..model import html as h
from ..model.display import bounded
from ._assets import css, esm


class JsonView(anywidget.AnyWidget):
    """Any JSON value as a collapsible tree (objects and lists) or a block (scalars); setting
    ``value`` again marks what changed."""

    _esm = esm("json.js")
    _css = css()
    value = t.Any(None, allow_none=True).tag(sync=True)
    title = t.Unicode("").tag(sync=True)
    subtitle = t.Unicode("").tag(sync=True)
    expand_depth = t.Int(2).tag(sync=True)

    def __init__(self, value: Any = None, **kwargs: Any) -> None:
        super().__init__(value=bounded(value), **kwargs)

    def set_value(self, value: Any, subtitle: str | None = None) -> None:
        with self.hold_sync():
            self.value = bounded(value)
            if subtitle is not None:
                self.subtitle = subtitle

    def __repr__(self) -> str:
        return f"JsonView {self.title}: {h.preview(self.value, 300)}".replace("  ", " ")


class StyleSheet(anywidget.AnyWidget):
    """Draws nothing; loads the views' style sheet into the page. Views made of ipywidgets
    (History, FlowRunner) carry one, so their HTML parts need no ``<style>`` of their own, and
    it tells them (class ``fs-box``) when their kernel is gone (``static/stylesheet.js``)."""

    _esm = esm("stylesheet.js")
    _css = css()
