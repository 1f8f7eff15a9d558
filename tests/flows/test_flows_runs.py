"""Runs: RunResult, request records, refused input, errors in blocks, events, event loops."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest
from pydantic import BaseModel

import flowstate_jupyter as fs
from flowstate_jupyter.stores.default import default_store


class Counter(BaseModel):
    count: int = 0
    log: list[str] = []


class Message(BaseModel):
    message: str


@fs.handler(session_state=Counter)
def count(input, ctx):
    ctx.session.inc_state(count=1)
    return {"echo": input.message}


def _flow():
    return fs.define_flow("runs", {"count": fs.sequencer("count-seq", input=Message).then(count)})


def _requests(store):
    return [r.state for r in store.list(scope="request", name="$request")]


# ---------------------------------------------------------------------------- results and records

def test_run_returns_a_result_and_leaves_a_request_record(store):
    flow = _flow()
    result = flow.run("count", {"message": "hi"}, user="alice", session="s1", store=store)
    assert isinstance(result, fs.RunResult)
    assert (result.status, result.output, result.error) == ("ok", {"echo": "hi"}, None)
    assert result.session_id == "s1" and result.request_id.startswith("r-")
    assert result.duration_s > 0 and result.ok and result.raise_for_error() == {"echo": "hi"}
    record = store.read("request", result.request_id, "$request").state
    assert record["action"] == "count" and record["flow"] == "runs"
    assert record["session"] == "s1" and record["user"] == "alice"
    assert record["project"] == "default" and record["block"] == "count-seq"
    assert record["input"] == {"message": "hi"} and record["output"] == {"echo": "hi"}
    assert record["status"] == "ok" and record["error"] is None
    assert record["started_at"] <= record["ended_at"]
    assert record["duration_s"] == pytest.approx(result.duration_s)


def test_a_run_without_a_session_gets_a_new_one(mem):
    flow = _flow()
    a = flow.run("count", {"message": "x"}, user="u", store=mem)
    b = flow.run("count", {"message": "x"}, user="u", store=mem)
    assert a.session_id != b.session_id and a.session_id.startswith("s-")
    assert flow.session(b.session_id, store=mem).state.count == 1


def test_refused_input_raises_and_leaves_no_request_and_no_state(store):
    flow = _flow()
    flow.run("count", {"message": "first"}, user="alice", session="s1", store=store)
    before = store.read("session", "s1", "")
    for bad in ({"message": 5}, {}, None, "text"):
        with pytest.raises(fs.ValidationError) as info:
            flow.run("count", bad, user="alice", session="s1", store=store)
        assert str(info.value).startswith("action 'count' input")
    with pytest.raises(fs.ValidationError, match="field 'message'"):
        flow.run("count", {"message": 5}, user="bob", session="s-new", store=store)
    assert [r["status"] for r in _requests(store)] == ["ok"]
    after = store.read("session", "s1", "")
    assert (after.version, after.state) == (before.version, before.state)
    assert store.read("session", "s-new", "$meta") is None  # the refused run created nothing


def test_unknown_action_lists_the_actions(mem):
    with pytest.raises(fs.UnknownActionError) as info:
        _flow().run("cuont", {"message": "x"}, store=mem)
    assert str(info.value) == ("flow 'runs' has no action 'cuont'; did you mean 'count'? "
                               "Actions: 'count'")
    assert _requests(mem) == []


def test_exception_in_a_block_ends_the_run_with_error_and_keeps_committed_writes(store):
    @fs.handler(session_state=Counter)
    def first(input, ctx):
        ctx.session.inc_state(count=1)
        ctx.session.push_state("log", "first")
        return input

    @fs.handler
    def explode(input, ctx):
        raise RuntimeError("the model is down")

    @fs.handler(session_state=Counter)
    def never(input, ctx):
        ctx.session.push_state("log", "never")

    flow = fs.define_flow("boom", {"go": fs.sequencer("go").then(first).then(explode).then(never)})
    result = flow.run("go", None, user="alice", session="s1", store=store)
    assert result.status == "error" and result.output is None
    assert isinstance(result.error, RuntimeError) and str(result.error) == "the model is down"
    assert "explode" in result.traceback
    with pytest.raises(RuntimeError, match="the model is down"):
        result.raise_for_error()
    state = flow.session("s1", store=store).state
    assert (state.count, state.log) == (1, ["first"])
    record = store.read("request", result.request_id, "$request").state
    assert record["status"] == "error"
    assert record["error"] == {"type": "RuntimeError", "message": "the model is down"}
    assert record["output"] is None and record["ended_at"] >= record["started_at"]
    assert result.events[-1]["type"] == "request" and result.events[-1]["status"] == "error"
    assert "status='error'" in repr(result) and "RuntimeError" in repr(result)


def test_events_are_collected_in_order_and_only_this_runs(mem):
    @fs.handler(session_state=Counter)
    def steps(input, ctx):
        ctx.session.inc_state(count=1)
        ctx.emit("message", {"n": 1})
        ctx.session.push_state("log", "a")
        ctx.emit("message", {"n": 2})
        return input

    flow = fs.define_flow("ev", {"go": steps})
    other = fs.ScopeHandle(mem, "session", "someone-else", state=Counter)
    result = flow.run("go", None, user="u", session="mine", store=mem,
                      on_event=lambda e: other.inc_state(count=1) if e["type"] == "message"
                      else None)
    kinds = [(e["type"], e.get("operation") or e.get("status") or e.get("data"))
             for e in result.events]
    assert kinds == [("session", None), ("request", "running"), ("state_change", "increment"),
                     ("message", {"n": 1}), ("state_change", "push"), ("message", {"n": 2}),
                     ("request", "ok")]
    assert all(e["request_id"] == result.request_id for e in result.events)
    assert other.state.count == 2  # written during the run, but not this run's events


def _watcher_threads():
    return [t for t in threading.enumerate() if t.name.startswith(("flowstate-watch",
                                                                     "flowstate-listen"))]


def test_a_run_collects_its_events_without_starting_a_watcher_thread(shared_backend):
    # A run listens for its own writes only: watching other processes (a thread per store
    # object) would cost every run a thread start and stop.
    mine, theirs = shared_backend.open(), shared_backend.open()
    flow = _flow()
    before = len(_watcher_threads())
    result = flow.run("count", {"message": "hi"}, user="u", session="s", store=mine)
    assert result.ok and len(_watcher_threads()) == before
    assert [e["type"] for e in result.events] == ["session", "request", "state_change",
                                                  "request"]
    seen = []
    stop = mine.subscribe(seen.append)  # a subscriber still hears other processes
    try:
        theirs.write("session", "s", "note", {"n": 1})
        flow.run("count", {"message": "again"}, user="u", session="s", store=mine)
        assert _wait(lambda: any(e.get("resource") == "note" for e in seen))
    finally:
        stop()
    assert _wait(lambda: len(_watcher_threads()) == before), "the watcher kept running"


def _wait(check, timeout=3.0):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# ---------------------------------------------------------------------------- loops and threads

def test_run_works_when_called_inside_a_running_event_loop(mem):
    flow = _flow()
    threads = {}

    @fs.handler
    def where(input, ctx):
        threads["block"] = threading.get_ident()
        return input

    looped = fs.define_flow("loop", {"go": where})

    async def notebook_cell():
        threads["cell"] = threading.get_ident()
        first = flow.run("count", {"message": "in a loop"}, user="u", session="s", store=mem)
        second = looped.run("go", 3, user="u", store=mem)
        return first, second

    first, second = asyncio.run(notebook_cell())
    assert first.ok and first.output == {"echo": "in a loop"} and second.output == 3
    assert threads["block"] != threads["cell"]  # ran on its own loop in a helper thread
    assert flow.session("s", store=mem).state.count == 1


def test_runs_inside_an_event_loop_reuse_a_helper_thread_and_nest_on_another(mem):
    threads = []

    @fs.handler
    def where(input, ctx):
        threads.append(threading.current_thread())  # kept alive: compared by identity
        return input

    inner = fs.define_flow("inner", {"go": where})

    @fs.handler
    def nested(input, ctx):
        threads.append(threading.current_thread())  # kept alive: compared by identity
        return inner.run("go", input, user="u", store=ctx.store).output

    outer = fs.define_flow("outer", {"go": nested})

    async def notebook_cell():
        return [outer.run("go", i, user="u", store=mem).output for i in range(3)]

    assert asyncio.run(notebook_cell()) == [0, 1, 2]
    outer_threads, inner_threads = threads[0::2], threads[1::2]
    assert all(t is outer_threads[0] for t in outer_threads), \
        "each run from the cell used the same idle helper thread"
    assert all(t is not outer_threads[0] for t in inner_threads), \
        "a run started inside a run goes to another helper (its own would wait on itself)"


def test_arun_is_the_async_twin(mem):
    result = asyncio.run(_flow().arun("count", {"message": "async"}, user="u", store=mem))
    assert result.ok and result.output == {"echo": "async"}


def test_a_block_may_run_another_flow_synchronously(mem):
    inner = _flow()

    @fs.handler
    def nested(input, ctx):
        return inner.run("count", {"message": "nested"}, user="u", store=ctx.store).output

    assert fs.define_flow("outer", {"go": nested}).run("go", user="u", store=mem).output == \
        {"echo": "nested"}


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_for_each_200_items_max_concurrency_8_inc_state_ends_at_exactly_200(store, kind):
    if kind == "sync":
        def bump(item, ctx):
            return ctx.session.inc_state(count=1)
    else:
        async def bump(item, ctx):
            await asyncio.sleep(0)
            return ctx.session.inc_state(count=1)

    seq = fs.sequencer("fan-out").for_each(
        fs.handler(bump, name="bump", session_state=Counter), max_concurrency=8)
    flow = fs.define_flow("fan", {"go": seq})
    result = flow.run("go", list(range(200)), user="u", session="s", store=store)
    assert result.ok, result.traceback
    assert result.output == [True] * 200
    session = flow.session("s", store=store)
    assert session.state.count == 200 and session.version == 200
    increments = [e for e in result.events if e.get("operation") == "increment"]
    assert len(increments) == 200
    assert sorted(e["version"] for e in increments) == list(range(1, 201))
    progress = [e["data"]["done"] for e in result.events if e["type"] == "progress"]
    assert progress == list(range(1, 201))


# ---------------------------------------------------------------------------- default store

def test_store_none_uses_one_default_store_per_process(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLOWSTATE_STORE", raising=False)
    flow = _flow()
    try:
        first = flow.run("count", {"message": "a"}, user="u", session="s")
        second = flow.run("count", {"message": "b"}, user="u", session="s")
        assert first.ok and second.ok
        store = default_store()
        assert store is default_store()
        assert os.path.exists(tmp_path / ".flowstate" / "flowstate.db")
        assert flow.session("s").state.count == 2
        assert fs.default_store is default_store
    finally:
        default_store().close()


def test_interrupting_a_run_inside_an_event_loop_cancels_it_and_records_the_error(mem):
    import _thread

    @fs.handler(session_state=Counter)
    async def slow(input, ctx):
        ctx.session.inc_state(count=1)
        _thread.interrupt_main()  # what Jupyter's stop button does to the waiting cell
        await asyncio.sleep(30)

    flow = fs.define_flow("slow", {"go": slow})

    async def cell():
        return flow.run("go", None, user="u", session="s", store=mem)

    loop = asyncio.new_event_loop()
    started = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(cell())
    finally:
        loop.close()
    assert time.perf_counter() - started < 10
    (record,) = _requests(mem)
    assert record["status"] == "error" and record["error"]["type"] == "CancelledError"
    assert flow.session("s", store=mem).state.count == 1


def test_an_interrupt_never_leaves_a_run_running_wherever_it_lands_in_the_waiting_cell(mem):
    """The block interrupts at once, so the interrupt lands anywhere in the waiting thread,
    often while the run is still being scheduled; each time the record says "error" first."""
    import _thread

    @fs.handler(session_state=Counter)
    async def quick(input, ctx):
        _thread.interrupt_main()
        await asyncio.sleep(30)

    flow = fs.define_flow("quick", {"go": quick})

    async def cell(session):
        return flow.run("go", None, user="u", session=session, store=mem)

    for attempt in range(25):
        loop = asyncio.new_event_loop()
        try:
            with pytest.raises(KeyboardInterrupt):
                loop.run_until_complete(cell(f"s{attempt}"))
        finally:
            loop.close()
        statuses = [r["status"] for r in _requests(mem) if r["session"] == f"s{attempt}"]
        assert statuses == ["error"], f"attempt {attempt}: {statuses}"
