"""What the magics show that is not a live widget: tables and a flow's summary.

Each shows as HTML in a notebook and as plain text elsewhere (a terminal IPython, a log).
"""

from __future__ import annotations

from typing import Any

from IPython.display import display

from ..model import html as h


class Table:
    """A small table that shows as HTML in a notebook and as aligned text elsewhere.

    Rows hold plain values: strings show as text, JSON values as trees (``html.table``);
    ``nowrap`` names columns kept on one line (times, versions).
    """

    def __init__(self, title: str, header: tuple[str, ...], rows: list[tuple], *,
                 subtitle: str = "", nowrap: tuple[int, ...] = ()) -> None:
        self.title, self.header, self.rows = title, header, rows
        self.subtitle, self.nowrap = subtitle, nowrap

    def _repr_html_(self) -> str:
        body = h.table(self.rows, self.header, nowrap=self.nowrap) if self.rows else \
            '<div class="fs-muted">(none)</div>'
        return h.card(self.title, body, self.subtitle)

    def __repr__(self) -> str:
        cells = [[c if isinstance(c, str) else h.preview(c, 120) for c in row]
                 for row in self.rows]
        widths = [max([len(head), *(len(r[i]) for r in cells)])
                  for i, head in enumerate(self.header)]
        lines = [self.title, "  ".join(head.ljust(w) for head, w in zip(self.header, widths))
                 .rstrip()]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
        return "\n".join(lines) if self.rows else f"{self.title}\n(none)"


class FlowSummary:
    """What ``%%flow`` and ``%flow show`` display: actions, merged scope fields, resources and
    client-data keys (``Flow.describe()``), as HTML and as text."""

    def __init__(self, flow: Any) -> None:
        self.flow = flow

    def _repr_html_(self) -> str:
        return self.flow._repr_html_()

    def __repr__(self) -> str:
        return self.flow.describe()


def show_flow(flow: Any) -> None:
    """The summary of a flow, then its picture (two outputs: a front end draws each its way)."""
    display(FlowSummary(flow))
    display(flow.graph())
