"""A trace as the views draw it: spans in tree order, bars on one time axis with long waits
drawn short, errors at their origin, and text and HTML forms that stay bounded; what a waiting
run waits for, in one line."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from flowstate_jupyter.model.display import expires_text, waiting_text
from flowstate_jupyter.model.traceview import (
    TRACE_HTML_CHARS,
    trace_html,
    trace_text,
    trace_view,
    tree_order,
)


@dataclass
class FakeSpan:  # what the view reads of a span (flows/trace.py Span), by duck typing
    path: str
    parent: str | None
    started_at: float
    duration_s: float | None
    status: str = "ok"
    block: str = ""
    kind: str = "handler"
    input: Any = None
    output: Any = None
    error: dict | None = None
    changes: list = field(default_factory=list)
    attempt: int = 1


@dataclass
class FakeTrace:
    spans: list
    request_id: str = "r-1"
    dropped: int = 0
    truncated: bool = False


def span(path, parent, start, took, **kw):
    return FakeSpan(path, parent, start, took, block=path.rsplit("/", 1)[-1], **kw)


def test_bars_share_one_axis_and_a_long_wait_is_drawn_short():
    spans = [span("a", None, 100.0, 0.010, attempt=1, status="suspended"),
             span("a/then[0]/x", "a", 100.0, 0.004),
             span("a/then[1]/y", "a", 100.004, 0.006, status="suspended"),
             # resumed an hour later
             span("a", None, 3700.0, 0.010, attempt=2),
             span("a/then[1]/y", "a", 3700.0, 0.002, attempt=2),
             span("a/then[2]/z", "a", 3700.002, 0.008, attempt=2)]
    view = trace_view(FakeTrace(spans))
    bars = {(s["path"], s["attempt"]): s["bar"] for s in view["spans"]}
    busy = 0.020
    gap = 0.1 * busy  # an idle gap is drawn as a tenth of the busy time
    length = busy + gap
    assert bars[("a/then[0]/x", 1)] == [0.0, round(100 * 0.004 / length, 2)]
    assert bars[("a/then[2]/z", 2)][0] == round(100 * (0.010 + gap + 0.002) / length, 2)
    assert abs(sum(bars[("a", 2)]) - 100) < 0.02
    assert all(left >= 0 and left + width <= 100.01 for left, width in bars.values())


def test_spans_are_ordered_as_a_tree_and_an_error_is_found_where_it_began():
    err = {"type": "KeyError", "message": "'k'", "traceback": "Traceback...\nKeyError: 'k'"}
    spans = [span("r", None, 0, 0.01, status="error", error=err),
             span("r/then[0]/a", "r", 0, 0.001),
             span("r/then[1]/b", "r", 0.001, 0.009, status="error", error=err),
             span("r/then[1]/b/inner", "r/then[1]/b", 0.002, 0.001),
             span("lost/child", "gone", 0.003, 0.001)]  # its parent was not kept
    view = trace_view(FakeTrace(spans), {"action": "r", "status": "error"})
    order = [(depth, s["path"]) for depth, s in tree_order(view["spans"])]
    assert order == [(0, "r"), (1, "r/then[0]/a"), (1, "r/then[1]/b"), (2, "r/then[1]/b/inner"),
                     (0, "lost/child")]
    origins = [s["path"] for s in view["spans"] if s["origin"]]
    assert origins == ["r/then[1]/b"]
    assert [s["name"] for s in view["spans"]][:3] == ["r", "then[0]/a", "then[1]/b"]
    text = trace_text(view)
    assert text.count("error at") == 1 and "error at r/then[1]/b: KeyError: 'k'" in text
    assert "\n      inner [handler inner] ok 1.0 ms" in text
    html = trace_html(view)
    assert html.count(" open>") == 1 and 'data-span="r/then[1]/b" open' in html
    assert "traceback" in html and "KeyError: &#x27;k&#x27;" in html


def test_values_changes_and_the_snapshot_stay_bounded():
    big = {"text": "x" * 50_000, "items": list(range(5000))}
    spans = [span(f"r/map[{i}]", "r" if i else None, i * 0.001, 0.001, input=big, output=big,
                  changes=[{"type": "state_change", "scope": "session", "operation": "set",
                            "version": i, "delta": big}] * 3)
             for i in range(250)]
    view = trace_view(FakeTrace(spans, dropped=7, truncated=True))
    one = view["spans"][1]
    assert len(str(one["input"])) < 5000 and len(str(one["changes"])) < 20_000
    html = trace_html(view)
    assert len(html) < TRACE_HTML_CHARS + 10_000
    assert "more spans" in html and "%flow trace r-1" in html
    assert "7 spans left out" in html and "values cut short" in html
    assert len(trace_text(view).splitlines()) <= 301


def test_a_waiting_run_says_what_it_waits_for_and_when_it_expires():
    schema = {"properties": {"approved": {"type": "boolean"}, "note": {"type": "string"}},
              "required": ["approved"]}
    text = waiting_text({"message": "Approve?", "schema": schema,
                         "expires_at": time.time() + 3 * 3600})
    assert text.startswith("waiting: Approve? · fields approved*, note · expires ")
    assert waiting_text({"path": "a/b", "schema": {}}) == "waiting: input at a/b · no fields"
    assert expires_text(1000.0 + 3 * 3600, now=1000.0).endswith("(in 3 h)")
    assert expires_text(1000.0 + 90, now=1000.0).endswith("(in 90 s)")
    assert expires_text(1000.0 + 5 * 86400, now=1000.0).endswith("(in 5 days)")
    assert expires_text(999.0, now=1000.0).startswith("expired ")
    assert expires_text(None) == ""
