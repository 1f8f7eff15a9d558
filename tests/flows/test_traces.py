"""Traces (docs/concepts.md, 'Traces'): one span per block, stable paths, kept with the run,
bounded, read back.

A flow with a sequencer, a router, ``parallel``, ``for_each``, a loop and a failing block gives
spans with the paths, parents, kinds and statuses the design names, each with the events its
block committed and the error's traceback; the trace is in the store with the run's request
record, readable from another process, the same shape run after run, within its byte bound, and
kept for the newest ``trace_limit`` runs of a session only.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import pytest
from _helpers import ROOT, python_env
from pydantic import BaseModel

import flowstate_jupyter as fs
from flowstate_jupyter.flows import trace as trace_module
from flowstate_jupyter.flows.trace import read_content


class Mode(BaseModel):
    mode: str = "chat"
    count: int = 0
    notes: list[str] = []


@fs.handler(session_state=Mode)
def switch(input, ctx):
    ctx.session.patch_state(mode="agent")
    return input


@fs.handler(session_state=Mode)
def chat(input, ctx):
    ctx.session.inc_state(count=1)
    return "chat"


@fs.handler(session_state=Mode)
def agent(input, ctx):
    ctx.session.inc_state(count=10)
    ctx.session.push_state("notes", "agent ran")
    return "agent"


mode_router = fs.router(name="mode-router", routes=[chat, agent],
                        route=lambda value, ctx: agent if ctx.session.state.mode == "agent"
                        else chat)


@fs.handler
def left(value):
    return "L"


@fs.handler
def right(value):
    return "R"


@fs.handler
def explode(value, ctx):
    raise RuntimeError("the model is down")


def _flow(fail: bool = True) -> fs.Flow:
    seq = (fs.sequencer("chat-pipeline").then(switch).then(mode_router)
           .parallel({"l": left, "r": right}).map(lambda v: [v["l"], v["r"]])
           .for_each(fs.handler(lambda item: item.lower(), name="lower")))
    if fail:
        seq.then(explode)
    return fs.define_flow("traced", {"chat": seq})


def test_spans_name_paths_parents_kinds_statuses_changes_and_the_error(store):
    result = _flow().run("chat", "hi", user="u", session="s1", store=store)
    assert result.status == "error"
    spans = result.trace.spans
    assert [(s.path, s.kind, s.block, s.parent, s.status) for s in spans] == [
        ("chat", "sequencer", "chat-pipeline", None, "error"),
        ("chat/then[0]/switch", "handler", "switch", "chat", "ok"),
        ("chat/then[1]/mode-router", "router", "mode-router", "chat", "ok"),
        ("chat/then[1]/mode-router/agent", "handler", "agent", "chat/then[1]/mode-router",
         "ok"),
        ("chat/parallel[2]/l", "handler", "left", "chat", "ok"),
        ("chat/parallel[2]/r", "handler", "right", "chat", "ok"),
        ("chat/map[3]", "map", "<lambda>", "chat", "ok"),
        ("chat/for_each[4]/lower[0]", "handler", "lower", "chat", "ok"),
        ("chat/for_each[4]/lower[1]", "handler", "lower", "chat", "ok"),
        ("chat/then[5]/explode", "handler", "explode", "chat", "error"),
    ]
    by_path = {s.path: s for s in spans}
    assert [(c["operation"], c["delta"]) for c in by_path["chat/then[0]/switch"].changes] == \
        [("patch", {"mode": "agent"})]
    agent_changes = by_path["chat/then[1]/mode-router/agent"].changes
    assert [c["operation"] for c in agent_changes] == ["increment", "push"]
    assert [c["version"] for c in agent_changes] == [2, 3]
    assert by_path["chat/then[1]/mode-router"].changes == []  # its route's writes are the route's
    assert by_path["chat/parallel[2]/l"].output == "L"
    assert by_path["chat/map[3]"].input == {"l": "L", "r": "R"}
    assert by_path["chat/for_each[4]/lower[1]"].output == "r"
    error = by_path["chat/then[5]/explode"].error
    assert error["type"] == "RuntimeError" and error["message"] == "the model is down"
    assert "explode" in error["traceback"] and "the model is down" in error["traceback"]
    assert by_path["chat"].error["type"] == "RuntimeError"
    assert all(s.duration_s is not None and s.duration_s >= 0 for s in spans)
    starts = [s.started_at for s in spans]
    assert starts == sorted(starts) and starts[0] >= result.trace.spans[0].started_at
    assert all(s.attempt == 1 for s in spans)
    assert result.trace.request_id == result.request_id and not result.trace.dropped


def test_the_trace_is_stored_with_the_request_record_and_read_back_the_same(store):
    flow = _flow(fail=False)
    result = flow.run("chat", "hi", user="u", session="s1", store=store)
    assert result.ok
    record = store.read("request", result.request_id, "$request")
    assert record.state["status"] == "ok" and "trace" in read_content(record.content)
    again = flow.trace(result.request_id, store=store)
    assert again.spans == result.trace.spans
    session = flow.session("s1", store=store)
    assert session.trace(result.request_id).spans == result.trace.spans
    other = flow.session("s2", user="u", store=store)
    with pytest.raises(fs.RunStateError, match="not a run of session 's2'"):
        other.trace(result.request_id)
    with pytest.raises(fs.RunStateError, match="no run 'r-missing'"):
        flow.trace("r-missing", store=store)
    assert "chat-pipeline" in again.describe() and "mode-router" in again.describe()


def test_span_paths_are_the_same_in_every_run_of_one_flow_definition(mem):
    flow = _flow()
    first = flow.run("chat", "a", user="u", store=mem)
    second = flow.run("chat", "b", user="u", store=mem)
    paths = [s.path for s in first.trace.spans]
    assert paths == [s.path for s in second.trace.spans]
    assert len(set(paths)) == len(paths)


def test_loops_number_their_iterations_and_a_block_run_twice_by_hand_gets_a_suffix(mem):
    @fs.handler
    def inc(value):
        return value + 1

    @fs.handler
    async def twice(value, ctx):
        return await inc.run(await inc.run(value, ctx), ctx)

    seq = fs.sequencer("loops").do_while(lambda v: v < 3, inc).then(twice)
    result = fs.define_flow("loops", {"go": seq}).run("go", 0, user="u", store=mem)
    assert result.output == 5
    assert [s.path for s in result.trace.spans] == [
        "go", "go/do_while[0]/inc[0]", "go/do_while[0]/inc[1]", "go/do_while[0]/inc[2]",
        "go/then[1]/twice", "go/then[1]/twice/inc", "go/then[1]/twice/inc#2"]


def test_a_trace_is_read_back_in_another_process(shared_backend):
    store = shared_backend.open()
    result = _flow().run("chat", "hi", user="u", session="s1", store=store)
    code = ("import json, sys; import flowstate_jupyter as fs; import test_traces as t\n"
            "store = fs.open_store(sys.argv[1])\n"
            "trace = t._flow().trace(sys.argv[2], store=store)\n"
            "print(json.dumps([[s.path, s.status, len(s.changes), (s.error or {}).get('type')]"
            " for s in trace.spans]))\n")
    env = python_env()
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests" / "flows"), str(ROOT / "tests"),
                                         env["PYTHONPATH"]])
    out = subprocess.run([sys.executable, "-c", code, shared_backend.url, result.request_id],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [[s.path, s.status, len(s.changes),
                                       (s.error or {}).get("type")] for s in result.trace.spans]


def test_tracing_can_be_switched_off_per_run(store):
    flow = _flow(fail=False)
    result = flow.run("chat", "hi", user="u", session="s1", store=store, trace=False)
    assert result.ok and result.trace is None
    assert flow.trace(result.request_id, store=store).spans == []
    assert store.read("request", result.request_id, "$request").content is None
    untraced = flow.run("chat", "hi", user="u", session="s1", store=store, trace=False,
                        durable=False)
    assert untraced.ok and untraced.trace is None
    assert flow.session("s1", store=store).state.count == 20  # the runs themselves are the same


def test_large_values_are_previewed_and_marked_and_the_trace_stays_under_its_bound(mem):
    @fs.handler
    def big(value):
        return "x" * 50_000

    @fs.handler
    def nested(value):
        return {"rows": list(range(5000))}

    seq = fs.sequencer("big").then(big).then(nested)
    result = fs.define_flow("big", {"go": seq}).run("go", None, user="u", store=mem)
    spans = {s.path: s for s in result.trace.spans}
    out = spans["go/then[0]/big"].output
    assert out["$truncated"] is True and out["chars"] == 50_000
    assert len(out["preview"]) == trace_module.PREVIEW_CHARS
    rows = spans["go/then[1]/nested"].output
    assert rows["$truncated"] is True and rows["preview"].startswith('{"rows":[0,1,2')
    content = mem.read("request", result.request_id, "$request").content
    assert len(content.encode()) <= trace_module.TRACE_MAX_BYTES


def test_a_value_several_spans_share_is_shown_and_typed_in_each_as_alone(mem):
    # One object passed along: previewed and typed once per trace, each row as if alone; the
    # run writes state, so its rows take the lean path of a run whose spans all ended ok.
    class Reply(BaseModel):
        text: str = ""

    long_text = "\u00e9" * (trace_module.PREVIEW_CHARS // 2 + 10)  # fits as chars, not as bytes
    shared = {"a": {"b": [1, 2.5, None, True]}, "t": long_text}
    odd = {"k": (1, 2)}  # a tuple inside: not plain JSON

    @fs.handler(session_state=Mode)
    def first(value, ctx):
        ctx.session.inc_state(count=1)
        ctx.session.patch_state(mode="m" * 400)
        ctx.session.push_state("notes", "n" * 400)
        return shared

    @fs.handler
    def again(value):
        return value

    @fs.handler(output=Reply)
    def typed(value):
        return Reply(text="x")

    @fs.handler
    def weird(value):
        return odd

    @fs.handler
    def weird_again(value):
        return value

    @fs.handler
    def huge(value):
        return {"x": "y" * trace_module.PREVIEW_CHARS}

    seq = (fs.sequencer("shared").then(first).then(again).then(typed).then(weird)
           .then(weird_again).then(huge))
    result = fs.define_flow("shared", {"go": seq}).run("go", None, user="u", store=mem)
    assert result.ok
    spans = {s.path.rsplit("/", 1)[-1]: s for s in result.trace.spans}
    for name in ("first", "again"):
        assert spans[name].output == shared and spans[name].output_type is None
    changes = spans["first"].changes
    assert [c["operation"] for c in changes] == ["increment", "patch", "push"]
    assert changes[0]["delta"] == {"count": 1} and spans["again"].changes == []
    assert all(not {"request_id", "span", "write"} & c.keys() for c in changes)
    limit = trace_module.DELTA_CHARS
    text = json.dumps({"mode": "m" * 400}, separators=(",", ":"))
    assert changes[1]["delta"] == {"$truncated": True, "preview": text[:limit],
                                   "chars": len(text)}
    assert changes[2]["delta"] == {"$truncated": True, "preview": "n" * limit, "chars": 400}
    assert spans["again"].input == shared
    assert spans["typed"].output == {"text": "x"} and spans["typed"].output_type is None
    for name in ("weird", "weird_again"):
        assert spans[name].output == {"k": [1, 2]}
        assert spans[name].output_type == "builtins:dict"
    assert spans["weird_again"].input == {"k": [1, 2]}
    out = spans["huge"].output
    assert out["$truncated"] is True and out["chars"] == trace_module.PREVIEW_CHARS + 8
    assert spans["go"].output == out and spans["go"].output_type is None  # (plain JSON)


def test_a_trace_keeps_at_most_span_limit_spans_and_counts_the_rest(mem, monkeypatch):
    monkeypatch.setattr(trace_module, "SPAN_LIMIT", 50)

    @fs.handler
    def item(value):
        if value == 77:
            raise ValueError("77 is bad")
        return value

    seq = fs.sequencer("many").for_each(item, max_concurrency=1).rescue([(ValueError, fs.handler(
        lambda exc: "rescued", name="rescue"))])
    result = fs.define_flow("many", {"go": seq}).run("go", list(range(200)), user="u",
                                                     store=mem)
    assert result.output == "rescued"
    trace = result.trace
    assert len(trace.spans) == 50 and trace.dropped == 80 - 50  # root, items 0-77, rescue
    paths = [s.path for s in trace.spans]
    assert "go/for_each[0]/item[77]" in paths  # a span that did not end ok is always kept
    assert paths[0] == "go" and paths[-1] == "go/rescue[1]/rescue"


def test_a_sequencer_of_plain_handlers_gives_each_step_its_span_error_rescue_and_ctx(store):
    """Plain-handler steps run inline in a traced sequencer (``Sequencer._steps_traced``): each
    still gets its own span in order (one step's end is the next one's start), an error is
    recorded on its step and rescued, and a step after an error gets a ``ctx`` of its own."""
    seen = []

    def add(x, ctx):
        seen.append((ctx.step_id, ctx.span_path, fs.current_context() is ctx, id(ctx)))
        return x + 1

    def fail(x, ctx):
        seen.append((ctx.step_id, ctx.span_path, fs.current_context() is ctx, id(ctx)))
        raise ValueError(f"no {x}")

    seq = (fs.sequencer("s").then(fs.handler(add, name="a")).then(fs.handler(add, name="b"))
           .then(fs.handler(fail, name="f")).then(fs.handler(add, name="skipped"))
           .rescue([(ValueError, fs.handler(lambda exc: 10, name="r"))])
           .then(fs.handler(add, name="c")).map(lambda x: x * 2).then(fs.handler(add, name="d")))
    result = fs.define_flow("plain", {"go": seq}).run("go", 0, user="u", store=store)
    assert result.ok and result.output == 23
    spans = result.trace.spans
    assert [(s.path, s.parent, s.status, s.input, s.output) for s in spans] == [
        ("go", None, "ok", 0, 23),
        ("go/then[0]/a", "go", "ok", 0, 1),
        ("go/then[1]/b", "go", "ok", 1, 2),
        ("go/then[2]/f", "go", "error", 2, None),
        ("go/rescue[4]/r", "go", "ok", "ValueError('no 2')", 10),
        ("go/then[5]/c", "go", "ok", 10, 11),
        ("go/map[6]", "go", "ok", 11, 22),
        ("go/then[7]/d", "go", "ok", 22, 23),
    ]
    assert spans[3].error["type"] == "ValueError" and spans[3].error["message"] == "no 2"
    for before, after in itertools.pairwise(spans[1:]):  # whole microseconds: 1 for rounding
        assert after.started_at >= before.started_at + before.duration_s - 2e-6
    assert [(step, path, current) for step, path, current, _ in seen] == [
        ("a", "go/then[0]/a", True), ("b", "go/then[1]/b", True), ("f", "go/then[2]/f", True),
        ("c", "go/then[5]/c", True), ("d", "go/then[7]/d", True)]
    # f's ctx, held by the error's traceback (kept as the rescue's input), was not handed to c
    assert seen[3][3] != seen[2][3]


def test_an_interrupt_in_a_plain_step_is_recorded_on_its_span_and_raised(mem):
    ran = []

    def add(x):
        ran.append(x)
        return x + 1

    def stop(x):
        raise KeyboardInterrupt

    seq = (fs.sequencer("s").then(fs.handler(add, name="a")).then(fs.handler(stop, name="stop"))
           .then(fs.handler(add, name="never")))
    flow = fs.define_flow("interrupted", {"go": seq})
    with pytest.raises(KeyboardInterrupt):
        flow.run("go", 1, user="u", session="s", store=mem)
    assert ran == [1]
    [record] = mem.list(scope="request", name="$request")
    assert record.state["status"] == "error"
    trace = flow.trace(record.scope_id, store=mem)
    assert [(s.path, s.status, (s.error or {}).get("type")) for s in trace.spans] == [
        ("go", "error", "KeyboardInterrupt"), ("go/then[0]/a", "ok", None),
        ("go/then[1]/stop", "error", "KeyboardInterrupt")]


def test_a_long_run_of_ok_steps_keeps_the_first_and_the_last_spans(mem, monkeypatch):
    monkeypatch.setattr(trace_module, "SPAN_LIMIT", 10)
    seq = fs.sequencer("long")
    for i in range(30):
        seq.then(fs.handler(lambda x: x + 1, name=f"n{i}"))
    result = fs.define_flow("long", {"go": seq}).run("go", 0, user="u", store=mem)
    assert result.output == 30 and result.trace.dropped == 31 - 10
    assert [(s.path, s.input, s.output) for s in result.trace.spans] == \
        [("go", 0, 30)] + [(f"go/then[{i}]/n{i}", i, i + 1) for i in (0, 1, 2, 3, 25, 26, 27,
                                                                        28, 29)]


def test_the_byte_bound_shrinks_previews_and_says_so(mem, monkeypatch):
    monkeypatch.setattr(trace_module, "TRACE_MAX_BYTES", 20_000)

    @fs.handler
    def item(value):
        return "y" * 900

    seq = fs.sequencer("wide").for_each(item)
    result = fs.define_flow("wide", {"go": seq}).run("go", list(range(60)), user="u",
                                                     store=mem)
    trace = result.trace
    assert trace.truncated
    assert all(len(json.dumps(s.output)) < 300 for s in trace.spans[1:])
    content = mem.read("request", result.request_id, "$request").content
    assert len(content.encode()) <= 20_000


def test_only_the_newest_trace_limit_runs_of_a_session_are_kept(tmp_path):
    store = fs.open_store(f"sqlite:///{tmp_path / 'kept.db'}", trace_limit=4)
    flow = _flow(fail=False)
    try:
        ids = [flow.run("chat", "hi", user="u", session="s1", store=store).request_id
               for _ in range(12)]
        other = flow.run("chat", "hi", user="u", session="s2", store=store).request_id
        kept = {r["request_id"] for r in flow.runs(store=store, session="s1")}
        # a session keeps trace_limit runs, plus at most one batch (a quarter) not yet purged
        assert set(ids[-4:]) <= kept and len(kept) <= 4 + 1
        assert ids[0] not in kept and store.read("request", ids[0], "$request") is None
        assert store.list("request", ids[0]) == []  # request-scope records go with it
        with pytest.raises(fs.RunStateError, match="no run"):
            flow.trace(ids[0], store=store)
        assert flow.trace(ids[-1], store=store).spans
        assert [r["request_id"] for r in flow.runs(store=store, session="s2")] == [other]
        assert flow.session("s1", store=store).state.count == 120  # state is not pruned
    finally:
        store.close()


def test_span_paths_are_the_node_paths_of_the_flow_picture(mem):
    first = fs.handler(lambda v: "first", name="same")
    second = fs.handler(lambda v: "second", name="same")
    pick = fs.router(name="pick", routes=[first, second], route=lambda v, ctx: second)
    seq = (fs.sequencer("pictured").then(switch).then(pick)
           .branch([(lambda v: False, first), (True, second)]))
    flow = fs.define_flow("pictured", {"go": seq})
    result = flow.run("go", "x", user="u", store=mem)
    paths = [s.path for s in result.trace.spans]
    assert paths == ["go", "go/then[0]/switch", "go/then[1]/pick", "go/then[1]/pick/same#1",
                     "go/branch[2]/same#1"]
    assert set(paths) <= set(flow.graph("go").nodes)  # a run's spans mark the picture's nodes
