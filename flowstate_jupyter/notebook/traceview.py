"""TraceView: a run's trace as a live view (``%flow trace [REQUEST_ID]``; docs/guide.md,
'In a notebook').

Spans show as a tree (each under its parent) with a duration bar on one time axis for the
whole run and a status mark; a span, clicked, opens its input, output, the changes it committed
and its error (type, message, traceback) below the tree, each value a JSON tree. The view
follows the run's request record: a run still going (in this process or another), or one
resumed later, redraws as it records more, the spans that changed marked.

The trace is read from the store (the run's request record), so any run of any flow in the
store can be shown, from any process. The view data, the snapshot and the text form come from
``model/traceview.py``; the front end is ``static/trace.js``.
"""

from __future__ import annotations

import time
from typing import Any

import traitlets as t

from ..flows.bookkeeping import effective_status
from ..flows.durable import read_run
from ..flows.trace import read_content, trace_from
from ..model.traceview import run_subtitle, trace_html, trace_text, trace_view
from ._assets import esm
from ._show import Snapshots
from ._view import _View


class TraceView(_View):
    """The trace of run ``request_id`` in ``store``: spans as a tree, a span's details below.

    ``trace`` holds the view data (``model.traceview.trace_view``); ``selected`` the path of
    the span whose details show (a click sets it; setting it from Python shows that span). It
    starts at the span an error came from, if any.
    """

    _esm = esm("trace.js")
    trace = t.Dict().tag(sync=True)
    selected = t.Unicode("").tag(sync=True)

    def __init__(self, store: Any, request_id: str) -> None:
        self._store = store
        self.request_id = request_id
        view = self._read()  # a run that is not there raises here, before anything shows
        super().__init__(title=f"trace of run {request_id}")
        self.snapshots = Snapshots("trace view", self.snapshot_html, self.__repr__,
                                   again=f"%flow trace {request_id} shows it live again")
        self._set(view)
        origin = next((s["path"] for s in view["spans"] if s["origin"]), "")
        self.selected = origin
        self.changed_at = view.get("ended_at") or view.get("started_at") or time.time()
        self._listen(store, lambda e: e.get("scope") == "request"
                     and e.get("scope_id") == request_id)

    def _read(self) -> dict:
        record = read_run(self._store, self.request_id)
        state = record.state
        trace = trace_from(self.request_id, read_content(record.content).get("trace"))
        run = {**state, "status": effective_status(state)}
        view = trace_view(trace, run)
        view["subtitle"] = run_subtitle(view)
        view["ended_at"] = state.get("ended_at")
        return view

    def _set(self, view: dict) -> bool:
        if view == self.trace:
            return False
        self.trace = view
        return True

    def refresh(self) -> None:
        view = self._read()
        with self.hold_sync():
            if self._set(view):
                self.changed_at = time.time()
        self.snapshots.changed()

    @property
    def spans(self) -> list[dict]:
        """The spans as the view shows them (``model.traceview.trace_view``)."""
        return list(self.trace.get("spans", []))

    def span(self, path: str) -> dict | None:
        """The span at ``path`` (the last, for a path a resumed run ran again), or ``None``."""
        found = [s for s in self.spans if s["path"] == path]
        return found[-1] if found else None

    def snapshot_html(self) -> str:
        return trace_html(self.trace)

    def __repr__(self) -> str:
        if not self.trace:
            return f"TraceView of run {getattr(self, 'request_id', '?')} (not read)"
        return trace_text(self.trace)
