"""Durable runs in one process (docs/concepts.md, 'Durable runs'): suspend and resume, run_once,
idempotency keys, refused and repeated resumes, expiry, concurrency policies, listing, leases.

The same run is continued, never started again: completed blocks are answered from the step
log, a block that suspended runs again without repeating the writes it had committed, and a
refused resume changes nothing in the store (record, version, history, change log). The runs
across processes (SIGKILL, racing resumes, reject and queue with four processes) are in
``tests/reliability/test_durable_processes.py``.
"""

from __future__ import annotations

import threading
import time

import durable_flows as df
import pytest
from _helpers import wait_for
from pydantic import BaseModel

import flowstate_jupyter as fs
from flowstate_jupyter.flows.trace import read_content


@pytest.fixture
def marks(tmp_path, monkeypatch):
    path = tmp_path / "marks"
    monkeypatch.setenv("FLOWSTATE_TEST_MARKS", str(path))
    return lambda: df.marks(path)


def _fingerprint(store, request_id: str, session: str) -> tuple:
    record = store.read("request", request_id, "$request")
    state = store.read("session", session, "")
    return (record.version, record.state, record.content, state.version, state.state,
            len(store.changes()), [h.version for h in store.history("request", request_id,
                                                                    "$request")])


# ---------------------------------------------------------------------------- suspend, resume

def test_a_suspended_run_resumes_with_a_validated_value_and_continues_the_same_request(
        backend, marks):
    store = backend.open()
    result = df.flow.run("approval", "launch", session="s1", user="u", store=store)
    assert result.status == "suspended" and result.output is None and result.error is None
    suspension = result.suspension
    assert isinstance(suspension, fs.Suspension)
    assert suspension.message == "approve this plan?"
    assert suspension.schema == df.Approval.model_json_schema()
    assert suspension.path == "approval/then[1]/approve" and not suspension.expired
    assert suspension.expires_at > time.time() + 3000
    assert suspension.request_id == result.request_id
    assert result.trace.span("approval/then[1]/approve").status == "suspended"
    assert result.trace.span("approval/then[0]/draft").status == "ok"
    (waiting,) = df.flow.runs("suspended", store=store)
    assert waiting["request_id"] == result.request_id
    assert waiting["suspension"]["message"] == "approve this plan?"
    assert df.flow.runs("ok", store=store) == []

    resumed = df.flow.resume(result.request_id, {"approved": True, "note": "go"}, store=store)
    assert resumed.ok and resumed.request_id == result.request_id
    assert resumed.output == {"plan": "plan for launch", "approved": True, "note": "go"}
    assert resumed.events[0]["type"] == "request"
    assert marks() == ["draft", "approve", "approve", "answered True"]
    state = df.flow.session("s1", store=store).state
    assert state.log == ["drafted", "approved=True"]
    assert state.n == 1  # the suspending block's write before ctx.suspend was not repeated
    (run,) = df.flow.runs(store=store)
    assert run["status"] == "ok" and run["attempt"] == 2 and run["suspension"] is None
    assert len(store.list("request", result.request_id)) == 1  # one request, one record


def test_a_refused_resume_value_leaves_the_run_suspended_and_writes_nothing(backend):
    store = backend.open()
    result = df.flow.run("approval", "x", session="s1", user="u", store=store)
    before = _fingerprint(store, result.request_id, "s1")
    for bad in ({"approved": "perhaps"}, {"note": "no answer"}, ["approved"], "yes"):
        with pytest.raises(fs.ValidationError, match="resume value for run"):
            df.flow.resume(result.request_id, bad, store=store)
        assert _fingerprint(store, result.request_id, "s1") == before
    assert df.flow.runs(store=store)[0]["status"] == "suspended"
    assert df.flow.resume(result.request_id, {"approved": False}, store=store).ok


def test_completed_steps_and_run_once_functions_are_not_run_again_on_resume(mem):
    calls = {"fetch": 0, "charge": 0, "ask": 0, "after": 0}

    class Ok(BaseModel):
        ok: bool = True

    @fs.handler
    def fetch(value, ctx):
        calls["fetch"] += 1
        return {"price": 12}

    @fs.handler
    def ask(value, ctx):
        calls["ask"] += 1
        receipt = ctx.run_once("charge", lambda: calls.__setitem__(
            "charge", calls["charge"] + 1) or {"charged": value["price"]})
        ctx.suspend(Ok)
        calls["after"] += 1
        return receipt

    flow = fs.define_flow("once", {"buy": fs.sequencer("buy").then(fetch).then(ask)})
    first = flow.run("buy", None, user="u", store=mem)
    assert first.status == "suspended"
    assert calls == {"fetch": 1, "charge": 1, "ask": 1, "after": 0}
    result = flow.resume(first.request_id, store=mem)  # None: the model's defaults
    assert result.output == {"charged": 12}
    assert calls == {"fetch": 1, "charge": 1, "ask": 2, "after": 1}


def test_double_resume_and_resuming_a_run_that_is_not_suspended_raise_run_state_error(backend):
    store = backend.open()
    suspended = df.flow.run("approval", "x", session="s1", user="u", store=store)
    assert df.flow.resume(suspended.request_id, {"approved": True}, store=store).ok
    with pytest.raises(fs.RunStateError, match="is ok, not suspended or interrupted"):
        df.flow.resume(suspended.request_id, {"approved": True}, store=store)
    failed = df.flow.run("pipeline", "not a number", session="s2", user="u", store=store)
    with pytest.raises(fs.RunStateError, match="is error"):
        df.flow.resume(failed.request_id, store=store)
    with pytest.raises(fs.RunStateError, match="no run 'r-nothing'"):
        df.flow.resume("r-nothing", store=store)
    other = fs.define_flow("other", {"go": fs.handler(lambda v: v, name="echo")})
    again = df.flow.run("approval", "y", session="s3", user="u", store=store)
    with pytest.raises(fs.RunStateError, match="belongs to flow 'durable-test'"):
        other.resume(again.request_id, {"approved": True}, store=store)


def test_a_running_run_cannot_be_resumed(mem):
    release = threading.Event()

    @fs.handler
    def wait(value):
        release.wait(10)
        return value

    flow = fs.define_flow("busy", {"go": wait})
    thread = threading.Thread(target=lambda: flow.run("go", 1, user="u", session="s",
                                                      store=mem))
    thread.start()
    try:
        assert wait_for(lambda: flow.runs(store=mem), timeout=5)
        (run,) = flow.runs(store=mem)
        assert run["status"] == "running" and run["lease_until"] > run["started_at"]
        with pytest.raises(fs.RunStateError, match="is running"):
            flow.resume(run["request_id"], store=mem)
    finally:
        release.set()
        thread.join()
    assert flow.runs(store=mem)[0]["status"] == "ok"


def test_an_expired_suspension_cannot_be_resumed(backend, monkeypatch):
    monkeypatch.setenv("FLOWSTATE_TEST_TIMEOUT", "0.05")
    store = backend.open()
    result = df.flow.run("approval", "x", session="s1", user="u", store=store)
    assert result.suspension.expires_at <= time.time() + 0.05
    assert wait_for(lambda: result.suspension.expired, timeout=5)
    before = _fingerprint(store, result.request_id, "s1")
    with pytest.raises(fs.RunStateError, match="expired"):
        df.flow.resume(result.request_id, {"approved": True}, store=store)
    assert _fingerprint(store, result.request_id, "s1") == before


def test_a_block_may_suspend_twice_and_each_answer_is_its_own(mem):
    class Name(BaseModel):
        name: str

    class Age(BaseModel):
        age: int

    @fs.handler
    def form(value, ctx):
        name = ctx.suspend(Name, message="name?")
        age = ctx.suspend(Age, message="age?")
        return f"{name.name} is {age.age}"

    flow = fs.define_flow("form", {"ask": form})
    first = flow.run("ask", None, user="u", store=mem)
    assert first.suspension.message == "name?" and first.suspension.path == "ask"
    second = flow.resume(first.request_id, {"name": "Ada"}, store=mem)
    assert second.status == "suspended" and second.suspension.message == "age?"
    with pytest.raises(fs.ValidationError, match="age"):
        flow.resume(first.request_id, {"age": "old"}, store=mem)
    done = flow.resume(first.request_id, {"age": 36}, store=mem)
    assert done.output == "Ada is 36"


def test_writes_a_block_made_before_it_suspended_happen_once(backend):
    class Files(BaseModel):
        size: int = 0

    class S(BaseModel):
        n: int = 0
        log: list[str] = []

    class Go(BaseModel):
        go: bool = True

    files = fs.define_resource_collection(pattern="files/*", state=Files, writable=True)

    @fs.handler(session_state=S, session_resources={"files": files})
    def edit(value, ctx):
        ctx.session.inc_state(n=1)
        ctx.session.push_state("log", "before")
        ctx.session.resources["files"].create("files/a", {"size": 1})
        ctx.session.resources["files"].get("files/a").inc_state(size=1)
        ctx.request.patch_state(step=1)
        ctx.suspend(Go)
        ctx.session.push_state("log", "after")
        return ctx.session.state.n

    store = backend.open()
    flow = fs.define_flow("edits", {"edit": edit})
    first = flow.run("edit", None, user="u", session="s1", store=store)
    assert first.status == "suspended"
    done = flow.resume(first.request_id, store=store)
    assert done.ok and done.output == 1
    session = flow.session("s1", store=store)
    assert (session.state.n, session.state.log) == (1, ["before", "after"])
    instance = session.resources["files"].get("files/a")
    assert (instance.state.size, instance.version) == (2, 2)
    assert store.read("request", first.request_id, "").state == {"step": 1}
    assert [e.get("operation") for e in done.events if e["type"] != "request"] == ["push"]


def test_a_suspension_inside_parallel_keeps_the_branches_that_finished(mem):
    calls = {"quick": 0}

    class Go(BaseModel):
        go: bool = True

    @fs.handler
    def quick(value):
        calls["quick"] += 1
        return "quick"

    @fs.handler
    def asks(value, ctx):
        return ctx.suspend(Go).go

    flow = fs.define_flow("par", {"go": fs.sequencer("par").parallel(
        {"quick": quick, "asks": asks}, max_concurrency=1)})
    first = flow.run("go", None, user="u", store=mem)
    assert first.status == "suspended" and first.suspension.path == "go/parallel[0]/asks"
    done = flow.resume(first.request_id, store=mem)
    assert done.output == {"quick": "quick", "asks": True} and calls["quick"] == 1


def test_a_stateful_sequencer_keeps_its_instance_state_across_a_resume(mem):
    class Steps(BaseModel):
        seen: list[str] = []

    class Go(BaseModel):
        go: bool = True

    @fs.handler(sequencer_state=Steps)
    def one(value, ctx):
        ctx.sequencer.push_state("seen", "one")
        return value

    @fs.handler(sequencer_state=Steps)
    def two(value, ctx):
        ctx.sequencer.push_state("seen", "two")
        ctx.suspend(Go)
        return list(ctx.sequencer.state.seen)

    flow = fs.define_flow("inst", {"go": fs.sequencer("inst", state=Steps).then(one).then(two)})
    first = flow.run("go", None, user="u", store=mem)
    assert flow.resume(first.request_id, store=mem).output == ["one", "two"]


def test_idempotency_key_is_the_request_and_span_path_in_every_attempt(mem):
    keys = []

    class Go(BaseModel):
        go: bool = True

    @fs.handler
    def pay(value, ctx):
        keys.append(ctx.idempotency_key)
        ctx.suspend(Go)
        return ctx.idempotency_key

    flow = fs.define_flow("pay", {"pay": fs.sequencer("checkout").then(pay)})
    first = flow.run("pay", None, user="u", store=mem)
    done = flow.resume(first.request_id, store=mem)
    assert keys == [f"{first.request_id}:pay/then[0]/pay"] * 2 == [done.output] * 2


def test_run_once_keeps_json_and_refuses_what_is_not(mem):
    class Go(BaseModel):
        go: bool = True

    class Receipt(BaseModel):
        amount: int

    @fs.handler
    def pay(value, ctx):
        receipt = ctx.run_once("charge", lambda: Receipt(amount=5))
        return receipt

    @fs.handler
    def bad(value, ctx):
        return ctx.run_once("charge", lambda: object())

    flow = fs.define_flow("pay2", {"pay": pay, "bad": bad})
    assert flow.run("pay", None, user="u", store=mem).output == {"amount": 5}
    failed = flow.run("bad", None, user="u", store=mem)
    assert isinstance(failed.error, fs.ValidationError) and "run_once" in str(failed.error)
    off = flow.run("pay", None, user="u", store=mem, durable=False)
    assert off.output == Receipt(amount=5)  # outside a durable run fn is simply called


def test_suspend_needs_a_durable_run(mem):
    class Go(BaseModel):
        go: bool = True

    flow = fs.define_flow("nd", {"go": fs.handler(lambda v, ctx: ctx.suspend(Go), name="s")})
    result = flow.run("go", None, user="u", store=mem, durable=False)
    assert isinstance(result.error, fs.RunStateError) and "durable" in str(result.error)
    record = mem.read("request", result.request_id, "$request")
    mem.write("request", result.request_id, "$request",  # as if its process had died
              {**record.state, "status": "running", "lease_until": time.time() - 1})
    with pytest.raises(fs.RunStateError, match="kept no step log"):
        flow.resume(result.request_id, store=mem)


def test_resuming_an_interrupted_run_the_change_log_no_longer_covers_needs_force(tmp_path):
    store = fs.open_store(f"sqlite:///{tmp_path / 'short.db'}", changelog_limit=20)
    try:
        first = df.flow.run("approval", "x", session="s1", user="u", store=store)
        record = store.read("request", first.request_id, "$request")
        # what a process that died while running leaves: status running, its lease passed
        dead = {**record.state, "status": "running", "suspension": None,
                "lease_until": time.time() - 1}
        store.write("request", first.request_id, "$request", dead,
                    expected=record.version, content=record.content)
        assert df.flow.runs(store=store)[0]["status"] == "interrupted"
        other = fs.ScopeHandle(store, "session", "busy")
        for i in range(30):  # the change log forgets the run's last write
            other.patch_state(i=i)
        with pytest.raises(fs.RunStateError, match="change log no longer goes back"):
            df.flow.resume(first.request_id, store=store)
        result = df.flow.resume(first.request_id, store=store, force=True)
        assert result.status == "suspended"  # it ran on, to the same question
    finally:
        store.close()


def test_a_run_whose_record_was_taken_over_stops_writing(mem, monkeypatch):
    monkeypatch.setenv("FLOWSTATE_LEASE_S", "0.3")
    entered, release = threading.Event(), threading.Event()

    class S(BaseModel):
        n: int = 0

    @fs.handler(session_state=S)
    def slow(value, ctx):
        entered.set()
        release.wait(10)
        ctx.session.inc_state(n=1)
        return value

    flow = fs.define_flow("taken", {"go": slow})
    box = {}
    thread = threading.Thread(target=lambda: box.update(r=flow.run("go", 1, user="u",
                                                                   session="s", store=mem)))
    thread.start()
    assert entered.wait(10)
    (run,) = flow.runs(store=mem)
    record = mem.read("request", run["request_id"], "$request")
    mem.write("request", run["request_id"], "$request", {**record.state, "owner": "elsewhere"},
              expected=record.version)  # another process claimed it
    taken = mem.read("request", run["request_id"], "$request")
    assert wait_for(lambda: mem.read("request", run["request_id"], "$request").version
                    == taken.version, timeout=2)
    time.sleep(0.2)  # at least one renewal comes due meanwhile, and must fail
    release.set()
    thread.join()
    result = box["r"]
    assert isinstance(result.error, fs.RunStateError) and "taken over" in str(result.error)
    now = mem.read("request", run["request_id"], "$request")
    assert (now.version, now.state) == (taken.version, taken.state)  # not overwritten


# ---------------------------------------------------------------------------- concurrency

def test_reject_refuses_a_run_while_another_is_in_flight_and_not_after(store, monkeypatch):
    entered, release = threading.Event(), threading.Event()

    class Go(BaseModel):
        go: bool = True

    @fs.handler
    def hold(value, ctx):
        if value == "hold":
            entered.set()
            release.wait(10)
        if value == "ask":
            ctx.suspend(Go)
        return value

    flow = fs.define_flow("rej", {"go": fs.action(hold, concurrency="reject")})
    box = {}
    thread = threading.Thread(target=lambda: box.update(
        r=flow.run("go", "hold", user="u", session="s", store=store)))
    thread.start()
    try:
        assert entered.wait(10)
        (running,) = flow.runs(store=store)
        with pytest.raises(fs.RunConflictError) as info:
            flow.run("go", "second", user="u", session="s", store=store)
        assert info.value.request_id == running["request_id"]
        assert running["request_id"] in str(info.value)
        assert flow.run("go", "elsewhere", user="u", session="s2", store=store).ok
    finally:
        release.set()
        thread.join()
    assert box["r"].ok and len(flow.runs(store=store, session="s")) == 1
    suspended = flow.run("go", "ask", user="u", session="s", store=store)
    assert suspended.status == "suspended"
    assert flow.run("go", "free", user="u", session="s", store=store).ok  # not in flight


def test_action_concurrency_options_are_checked(mem):
    block = fs.handler(lambda v: v, name="b")
    with pytest.raises(ValueError, match="concurrency must be one of"):
        fs.action(block, concurrency="parallel")
    with pytest.raises(ValueError, match="queue_timeout_s"):
        fs.action(block, concurrency="queue", queue_timeout_s=-1)
    act = fs.action(block, concurrency="queue", queue_timeout_s=2)
    assert (act.concurrency, act.queue_timeout_s) == ("queue", 2.0)


def test_a_queued_run_that_waits_too_long_is_refused_and_leaves_the_queue(mem):
    entered, release = threading.Event(), threading.Event()

    @fs.handler
    def hold(value):
        if value == "hold":
            entered.set()
            release.wait(10)
        return value

    flow = fs.define_flow("q", {"go": fs.action(hold, concurrency="queue",
                                                queue_timeout_s=0.2)})
    thread = threading.Thread(target=lambda: flow.run("go", "hold", user="u", session="s",
                                                      store=mem))
    thread.start()
    try:
        assert entered.wait(10)
        with pytest.raises(fs.RunConflictError, match="still waiting") as info:
            flow.run("go", "late", user="u", session="s", store=mem)
        assert info.value.request_id == flow.runs(store=mem)[0]["request_id"]
        assert mem.read("session", "s", "$action:go").state["queue"] == []
    finally:
        release.set()
        thread.join()


# ---------------------------------------------------------------------------- listing

def test_runs_list_every_status_with_filters(mem):
    ok = df.flow.run("pipeline", 1, session="a", user="u", store=mem)
    bad = df.flow.run("pipeline", "x", session="b", user="u", store=mem)
    waiting = df.flow.run("approval", "p", session="a", user="u", store=mem)
    assert [r["request_id"] for r in df.flow.runs(store=mem)] == [
        waiting.request_id, bad.request_id, ok.request_id]
    assert [r["status"] for r in df.flow.runs(store=mem)] == ["suspended", "error", "ok"]
    assert [r["request_id"] for r in df.flow.runs(session="a", store=mem)] == [
        waiting.request_id, ok.request_id]
    assert [r["request_id"] for r in df.flow.runs("error", store=mem)] == [bad.request_id]
    item = df.flow.runs("ok", store=mem)[0]
    assert {"request_id", "action", "status", "started_at", "session", "user"} <= set(item)
    session = df.flow.session("a", store=mem)
    assert [r["status"] for r in session.runs(status="suspended")] == ["suspended"]
    content = read_content(mem.read("request", waiting.request_id, "$request").content)
    assert set(content["log"]) >= {"input", "done", "once", "resumed", "writes"}


def test_an_interrupted_run_finds_its_unlogged_writes_in_the_change_log_even_summarized(backend):
    import json

    class Doc(BaseModel):
        text: str = ""
        n: int = 0

    class Go(BaseModel):
        go: bool = True

    @fs.handler(session_state=Doc)
    def write_big(value, ctx):
        ctx.session.patch_state(text="x" * 10_000)  # a change-log item the store summarizes
        ctx.session.inc_state(n=1)
        ctx.suspend(Go)
        return ctx.session.state.n

    store = backend.open()
    flow = fs.define_flow("big-writes", {"go": write_big})
    first = flow.run("go", None, user="u", session="s", store=store)
    patch = [e for e in store.changes() if e[1].get("operation") == "patch"][-1][1]
    assert patch.get("omitted") and patch["delta"] is None  # the store kept a summary...
    assert patch["span"] == "go" and patch["write"] == "session/s/:patch#0"  # ...with these
    record = store.read("request", first.request_id, "$request")
    content = json.loads(record.content)
    content["log"]["writes"] = {}  # as if the process died before its log recorded the writes
    store.write("request", first.request_id, "$request",
                {**record.state, "status": "running", "suspension": None,
                 "lease_until": time.time() - 1}, expected=record.version,
                content=json.dumps(content))
    again = flow.resume(first.request_id, store=store)
    assert again.status == "suspended"  # the same question again, nothing written twice
    state = flow.session("s", store=store).state
    assert (state.n, len(state.text)) == (1, 10_000)
    assert [e.get("operation") for e in again.events if e["type"] != "request"] == []


def test_a_resume_value_checked_by_the_recorded_schema_fetches_nothing_and_runs_in_linear_time():
    """When the suspending model cannot be imported, the recorded JSON Schema decides, under
    the same rules as resource types (docs/decisions.md, 'JSON Schemas fetch nothing and run
    in linear time'): a catastrophic pattern finishes at once, a
    reference outside the schema is refused, nothing is fetched."""
    from flowstate_jupyter.flows.durable import validate_resume_value

    patterned = {"model": "no_such_module:Answer", "path": "go", "schema": {
        "type": "object", "properties": {"code": {"type": "string", "pattern": "^(a+)+$"}}}}
    outcome: list = []

    def check() -> None:
        try:
            validate_resume_value("r-1", patterned, {"code": "a" * 40 + "b"})
        except fs.ValidationError as exc:
            outcome.append(str(exc))

    worker = threading.Thread(target=check, daemon=True)
    worker.start()
    worker.join(timeout=30)  # Python's re would take hours here; RE2 takes microseconds
    assert not worker.is_alive() and outcome and "does not match" in outcome[0]
    assert validate_resume_value("r-1", patterned, {"code": "aaa"}) == {"code": "aaa"}

    outside = {"model": None, "path": "go",
               "schema": {"$ref": "http://127.0.0.1:9/schema.json"}}
    with pytest.raises(fs.ValidationError, match="recorded schema cannot be used"):
        validate_resume_value("r-1", outside, {})


# ---------------------------------------------------------------------------- the lease thread

def test_runs_that_start_as_the_lease_thread_ends_are_still_renewed(mem, monkeypatch):
    # The thread ends as soon as it finds no lease (IDLE_S 0), so short runs start and end it
    # over and over; a run that then lasts (while the thread still goes, or after it ended)
    # must still get its record written and renewed
    # (leases of 0.3 s: the first write after 0.1 s, a renewal every 0.1 s) by that thread or
    # a new one, read straight from the store (flow.runs() would write it itself).
    from flowstate_jupyter.flows import durable

    monkeypatch.setattr(durable._Renewer, "IDLE_S", 0.0)
    monkeypatch.setenv("FLOWSTATE_LEASE_S", "0.3")
    release = threading.Event()

    @fs.handler
    def wait(value):
        release.wait(10)
        return value

    flow = fs.define_flow("churn", {"quick": fs.handler(lambda v: v, name="echo"),
                                    "wait": wait})

    def renewed(ids: list[str]) -> bool:
        record = mem.read("request", ids[0], "$request") if ids else None
        return record is not None and record.version >= 2  # its first write and a renewal

    for attempt in range(3):
        for i in range(20):
            assert flow.run("quick", i, user="u", session="s", store=mem).ok
        if attempt:  # then let it end (the first time, the run comes while it still goes)
            assert wait_for(lambda: durable.RENEWER.thread is None
                            or not durable.RENEWER.thread.is_alive(), timeout=5)
        ids: list[str] = []
        release.clear()
        thread = threading.Thread(target=lambda: flow.run(
            "wait", attempt, user="u", session="s", store=mem,
            on_event=lambda e: ids.append(e["request_id"]) if e["type"] == "request" else None))
        thread.start()
        try:
            assert wait_for(lambda: renewed(ids), timeout=5), f"attempt {attempt}: not renewed"
        finally:
            release.set()
            thread.join()
        assert mem.read("request", ids[0], "$request").state["status"] == "ok"
