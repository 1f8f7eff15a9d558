"""``flow.replay(request_id)`` (docs/guide.md, 'Replay a run with edited code').

A replay runs a recorded run's action and input again with the flow's current code, on an
in-memory copy of the scopes as they were just before the run, and compares. These tests check
it the way it breaks: the real store is never written (every record, version, history entry and
change-log item unchanged), the copy is the state *before* the run even after later runs changed
it, only steps that are safe to skip are reused (a step whose code, input or preceding writes
changed runs), ``run_once`` never calls ``fn``, and missing history is a clear error.
"""

from __future__ import annotations

import html
import re

import pytest
from _helpers import fingerprint
from pydantic import BaseModel, Field

import flowstate_jupyter as fs
from flowstate_jupyter.model.diff import MISSING


class Doc(BaseModel):
    words: int = 0
    summaries: list[str] = Field(default_factory=list)


class Notes(BaseModel):
    items: list[str] = Field(default_factory=list)


NOTES = fs.define_resource(state=Notes, writable=True)
CALLS: dict[str, int] = {}


def called(name: str) -> None:
    CALLS[name] = CALLS.get(name, 0) + 1


@pytest.fixture(autouse=True)
def _calls():
    CALLS.clear()


def send_email(summary: str) -> dict:
    called("email")
    return {"sent": summary, "id": CALLS["email"]}


@fs.handler
def fetch(value, ctx):
    """Pure: its output is all it does (a replay may return its recorded output)."""
    called("fetch")
    return {"text": value["text"].strip()}


def make_flow(style: str = "plain", broken: bool = False) -> fs.Flow:
    """The digest flow; ``style`` and ``broken`` stand for edits of ``summarize``."""

    @fs.handler(session_state=Doc)
    def summarize(value, ctx):
        called("summarize")
        text = value["text"]
        if broken and len(text) > 20:
            raise ValueError("text too long to summarize")
        summary = text[:12] if style == "plain" else text.upper()[:12]
        ctx.session.inc_state(words=len(text.split()))
        ctx.session.push_state("summaries", summary)
        return {"summary": summary}

    @fs.handler(session_resources={"notes": NOTES})
    def save(value, ctx):
        called("save")
        receipt = ctx.run_once("email", lambda: send_email(value["summary"]))
        ctx.session.resources.notes.push_state("items", value["summary"])
        return {"saved": value["summary"], "receipt": receipt}

    pipeline = fs.sequencer("digest").then(fetch).then(summarize).then(save)
    return fs.define_flow(
        "digest", {"digest": pipeline},
        session=fs.scope(client_data={
            "last": lambda c: c.state.summaries[-1] if c.state.summaries else None,
            "notes": lambda c: len(c.resources.notes.state.items)}))


def run(flow, store, text, session="s1"):
    return flow.run("digest", {"text": text}, session=session, user="alice", store=store)


# -- the promise: what changed shows, the store does not change, unchanged steps are reused --

def test_replay_after_redefining_a_block_shows_the_change_and_leaves_the_store_as_it_was(backend):
    store = backend.open()  # memory, SQLite and PostgreSQL
    original = run(make_flow(), store, "  the quick brown fox  ")
    assert original.ok and CALLS == {"fetch": 1, "summarize": 1, "save": 1, "email": 1}
    before = fingerprint(store)

    loud = make_flow(style="loud")  # the notebook re-ran the cell with the edited block
    replay = loud.replay(original.request_id, store=store)

    assert fingerprint(store) == before  # every record, version, history entry and change
    assert isinstance(replay, fs.ReplayResult)
    assert replay.original.request_id == replay.result.request_id == original.request_id
    assert replay.original.output == {"saved": "the quick br", "receipt": {"sent":
                                      "the quick br", "id": 1}}
    assert replay.result.output["saved"] == "THE QUICK BR"
    d = replay.diff
    assert d.status == ("ok", "ok") and not d.equal and bool(d)
    assert [(c.path, c.old, c.new) for c in d.output] == [
        (("saved",), "the quick br", "THE QUICK BR")]  # the receipt came from the log
    assert [(c.path, c.old, c.new) for c in d.state] == [
        (("session", "summaries", 0), "the quick br", "THE QUICK BR")]  # words: equal
    assert [(c.path, c.old, c.new) for c in d.resources] == [
        (("session", "notes", "state", "items", 0), "the quick br", "THE QUICK BR")]
    assert [(c.path, c.old, c.new) for c in d.client_data] == [
        (("session.last",), "the quick br", "THE QUICK BR")]
    assert d.error == []
    # fetch did not change and wrote nothing: its recorded output was returned
    assert replay.reused == ["digest/then[0]/fetch"]
    assert CALLS == {"fetch": 1, "summarize": 2, "save": 2, "email": 1}  # email: run_once
    assert replay.result.trace.span("digest/then[0]/fetch") is None  # it did not run
    # the original as its record keeps it: its trace, and its changes as events
    assert [s.path for s in replay.original.trace] == [s.path for s in original.trace]
    assert [(e["scope"], e["operation"]) for e in replay.original.events] == [
        ("session", "increment"), ("session", "push"), ("session", "push")]
    assert [e["operation"] for e in replay.result.events
            if e["type"] in ("state_change", "resource_change")] == ["increment", "push", "push"]
    assert replay.result.trace.span("digest/then[1]/summarize").status == "ok"


def test_a_run_that_failed_replays_with_the_fixed_code_and_the_diff_shows_error_to_ok(backend):
    store = backend.open()
    failed = run(make_flow(broken=True), store, "a text that is too long to summarize")
    assert failed.status == "error"
    before = fingerprint(store)
    replay = make_flow().replay(failed.request_id, store=store)
    assert fingerprint(store) == before
    d = replay.diff
    assert d.status == ("error", "ok")
    assert replay.original.status == "error" and replay.result.ok
    assert isinstance(replay.original.error, ValueError)  # a built-in type comes back as itself
    assert str(replay.original.error) == "text too long to summarize"
    assert [(c.path, c.old, c.new) for c in d.error] == [
        ((), {"type": "ValueError", "message": "text too long to summarize"}, MISSING)]
    assert len(d.output) == 1 and d.output[0].old is MISSING
    assert d.output[0].new["saved"] == "a text that "
    # the failed run never reached save: the replay's writes are all new, and so is the email
    assert [c.path for c in d.state] == [("session", "words"), ("session", "summaries")]
    assert d.state[0].old == 0 and d.state[0].new == 8
    # the failed run never reached save's run_once: the replay does not send the email
    assert replay.result.output["receipt"] is None and "email" not in CALLS
    assert any("ctx.run_once('email') in digest/then[2]/save" in n for n in replay.notes)


# -- the copy: the scopes just before the run ------------------------------------------------

def test_the_copy_is_the_state_before_the_run_even_after_later_runs_changed_it(backend):
    store = backend.open()
    flow = make_flow()
    first = run(flow, store, "one two")
    second = run(flow, store, "three four five")
    run(flow, store, "six")
    replay = flow.replay(second.request_id, store=store)
    # the replay started where the second run did: one summary, not three; same code, same
    # effects, so nothing differs and later runs' writes do not show
    assert replay.diff.equal, replay.text()
    assert replay.result.output["saved"] == "three four f"
    before, original, after = replay.diff._views
    assert before["state"]["session"] == {"words": 2, "summaries": ["one two"]}
    assert original["state"]["session"] == after["state"]["session"] == \
        {"words": 5, "summaries": ["one two", "three four f"]}
    assert first.request_id != second.request_id


def test_resources_and_collection_instances_are_copied_as_they_were_then(store):
    class File(BaseModel):
        size: int = 0

    files = fs.define_resource_collection(pattern="files/*", state=File)

    @fs.handler(session_resources={"files": files})
    def count_files(value, ctx):
        col = ctx.session.resources.files
        col.create(f"files/{value['name']}", {"size": len(value["name"])})
        return {"keys": col.list()}

    flow = fs.define_flow("files", {"add": count_files})
    s = flow.session("s1", user="alice", store=store)
    s.resources.files.create("files/old", {"size": 1})
    r = s.run("add", {"name": "new"})
    s.resources.files.delete("files/old")
    s.resources.files.create("files/later", {"size": 9})
    replay = flow.replay(r.request_id, store=store)
    assert replay.result.output == r.output == {"keys": ["files/new", "files/old"]}
    assert replay.diff.equal, replay.text()


def test_replay_with_pruned_history_raises_a_clear_error_and_changes_nothing(backend):
    store = backend.open(history_limit=4)
    flow = make_flow()
    flow.session("s1", user="alice", store=store).patch_state(words=1)
    original = run(flow, store, "one two three")
    s = flow.session("s1", store=store)
    for _ in range(12):  # the version before the run falls out of the kept history
        s.inc_state(words=1)
    before = fingerprint(store)
    with pytest.raises(fs.HistoryNotKeptError) as info:
        flow.replay(original.request_id, store=store)
    message = str(info.value)
    assert original.request_id in message and "session 's1' state" in message
    assert "no longer kept" in message and "history_limit" in message
    assert re.search(r"kept: versions \d+\.\.\d+", message)
    assert fingerprint(store) == before
    assert CALLS["summarize"] == 1  # nothing ran


def test_a_resource_whose_content_was_rewritten_since_is_copied_with_a_note(mem):
    doc = fs.define_resource(writable=True)

    @fs.handler(session_resources={"doc": doc})
    def write(value, ctx):
        ctx.session.resources.doc.write_content(value["text"])
        return len(ctx.session.resources.doc.read_content_raw())

    flow = fs.define_flow("docs", {"write": write})
    s = flow.session("s1", user="alice", store=mem)
    s.resources.doc.write_content("first")
    r = s.run("write", {"text": "second"})
    replay = flow.replay(r.request_id, store=mem)
    assert replay.diff.equal
    assert any("content before the run is not kept" in n for n in replay.notes)
    s.resources.doc.write_content("third")  # now the original's content is not known either
    replay = flow.replay(r.request_id, store=mem)
    assert any("left out of the comparison" in n for n in replay.notes)
    assert replay.diff.resources == []


# -- what the replay takes from the original -------------------------------------------------

def test_run_once_is_not_called_during_replay(backend):
    store = backend.open()
    original = run(make_flow(), store, "hello world")
    assert CALLS["email"] == 1
    replay = make_flow(style="loud").replay(original.request_id, store=store)
    assert CALLS["email"] == 1
    assert replay.result.output["receipt"] == {"sent": "hello world", "id": 1}  # recorded


def test_run_once_with_a_key_the_original_did_not_record_is_not_called_either(mem):
    @fs.handler
    def notify(value, ctx):
        return ctx.run_once(value["key"], lambda: called("side effect") or "done")

    flow = fs.define_flow("notify", {"go": notify})
    original = flow.run("go", {"key": "a"}, store=mem)
    assert original.output == "done" and CALLS == {"side effect": 1}

    @fs.handler
    async def notify_twice(value, ctx):
        first = ctx.run_once("a", lambda: called("side effect") or "again")
        return [first, await ctx.arun_once("b", lambda: called("side effect") or "new")]

    edited = fs.define_flow("notify", {"go": notify_twice})
    replay = edited.replay(original.request_id, store=mem)
    assert CALLS == {"side effect": 1}
    assert replay.result.output == ["done", None]
    assert replay.notes == ["ctx.run_once('b') in go: the original run recorded no result "
                            "under this key; the replay did not call fn (it makes no side "
                            "effects) and returned None"]
    assert html.escape("ctx.run_once('b')") in replay._repr_html_()
    assert "ctx.run_once('b')" in repr(replay)


def test_a_suspended_and_resumed_run_replays_with_the_value_it_was_given(mem):
    class Approval(BaseModel):
        approved: bool

    @fs.handler
    def ask(value, ctx):
        answer = ctx.suspend(Approval, message="ok?")
        return {"approved": answer.approved, "note": value["note"]}

    flow = fs.define_flow("ask", {"ask": ask})
    waiting = flow.run("ask", {"note": "x"}, store=mem)
    assert waiting.status == "suspended"
    replay = flow.replay(waiting.request_id, store=mem)  # nobody answered yet: waits again
    assert replay.diff.status == ("suspended", "suspended") and replay.diff.equal
    done = flow.resume(waiting.request_id, {"approved": True}, store=mem)
    assert done.ok

    @fs.handler
    def ask_louder(value, ctx):
        answer = ctx.suspend(Approval, message="OK?")
        return {"approved": answer.approved, "note": value["note"].upper()}

    replay = fs.define_flow("ask", {"ask": ask_louder}).replay(done.request_id, store=mem)
    assert replay.result.ok and replay.result.output == {"approved": True, "note": "X"}
    assert [(c.path, c.old, c.new) for c in replay.diff.output] == [(("note",), "x", "X")]


# -- reuse: only what is safe to skip ---------------------------------------------------------

def test_a_step_is_not_reused_when_its_input_or_the_writes_before_it_changed(mem):
    @fs.handler
    def shout(value, ctx):
        called("shout")
        return value.upper()

    @fs.handler
    def reads_state(value, ctx):  # pure, but its output depends on state
        called("reads_state")
        return f"{value} ({ctx.session.state.get('n', 0)})"

    def build(step: int, prefix: str) -> fs.Flow:
        @fs.handler
        def bump(value, ctx):
            ctx.session.inc_state(n=step)
            return f"{prefix}{value}"
        return fs.define_flow("reuse", {"go": fs.sequencer("go").then(bump).then(shout)
                                        .then(reads_state)})

    original = build(1, "").run("go", "a", store=mem)
    assert original.output == "A (1)"
    same = build(1, "").replay(original.request_id, store=mem)
    assert same.reused == ["go/then[1]/shout", "go/then[2]/reads_state"] and same.diff.equal
    assert CALLS == {"shout": 1, "reads_state": 1}

    new_input = build(1, ">").replay(original.request_id, store=mem)
    assert new_input.reused == []  # shout's input changed; reads_state's too
    assert new_input.result.output == ">A (1)"

    other_writes = build(2, "").replay(original.request_id, store=mem)
    # shout's input is the same and the state it could read differs, but shout is pure and
    # the writes before it differ: not reused either (the replay cannot know it reads nothing)
    assert other_writes.reused == []
    assert other_writes.result.output == "A (2)"
    assert [(c.path, c.old, c.new) for c in other_writes.diff.output] == [((), "A (1)", "A (2)")]

    every_step = build(1, "").replay(original.request_id, store=mem, reuse=False)
    assert every_step.reused == [] and every_step.diff.equal


def test_a_step_that_wrote_runs_again_so_its_writes_land_in_the_copy(mem):
    original = run(make_flow(), mem, "some words here")
    replay = make_flow().replay(original.request_id, store=mem)
    # same code: fetch is reused; summarize and save wrote, so they ran (and wrote the same)
    assert replay.reused == ["digest/then[0]/fetch"]
    assert replay.diff.equal and CALLS["summarize"] == 2 and CALLS["save"] == 2


class Reply(BaseModel):
    text: str


def test_a_model_output_is_reused_as_the_model_and_a_local_class_is_not_reused(mem):
    class LocalReply(BaseModel):  # not importable by name: its JSON cannot be made one again
        text: str

    def build(cls: type[BaseModel]) -> fs.Flow:
        @fs.handler
        def make(value, ctx):
            called("make")
            return cls(text=value)

        @fs.handler
        def use(value, ctx):
            called("use")
            ctx.session.inc_state(n=1)  # the action writes: it runs; its steps may be reused
            return value.text + "!"  # attribute access: needs the model back

        return fs.define_flow("models", {"go": fs.sequencer("go").then(make).then(use)})

    flow = build(Reply)
    original = flow.run("go", "hi", store=mem)
    replay = flow.replay(original.request_id, store=mem)
    assert replay.reused == ["go/then[0]/make"]
    assert replay.result.output == "hi!" and CALLS == {"make": 1, "use": 2}
    assert replay.diff.equal

    CALLS.clear()
    local = build(LocalReply)
    original = local.run("go", "hi", store=mem)
    assert original.trace.span("go/then[0]/make").output_type.endswith("<locals>.LocalReply")
    replay = local.replay(original.request_id, store=mem)
    assert replay.reused == [] and replay.result.output == "hi!" and CALLS["make"] == 2


def test_a_run_of_a_single_block_replays_too(mem):
    s = make_flow().session("s1", user="alice", store=mem)
    original = s.run_block(fetch, {"text": " x "})
    replay = make_flow().replay(original.request_id, store=mem)
    assert replay.original.action is None and replay.reused == ["fetch"]
    assert replay.result.output == {"text": "x"} and replay.diff.equal


# -- refusals --------------------------------------------------------------------------------

def test_runs_that_cannot_be_replayed_are_refused_with_what_to_do(mem):
    flow = make_flow()
    original = run(flow, mem, "hello")
    with pytest.raises(fs.RunStateError, match="no run 'r-nope'"):
        flow.replay("r-nope", store=mem)
    other = fs.define_flow("other", {"digest": fetch})
    with pytest.raises(fs.RunStateError, match="belongs to flow 'digest'"):
        other.replay(original.request_id, store=mem)

    class Strict(BaseModel):
        text: str
        lang: str  # required now: the recorded input lacks it

    strict = fs.define_flow("digest", {"digest": fs.action(fetch, input=Strict)})
    before = fingerprint(mem)
    with pytest.raises(fs.ValidationError, match="lang"):
        strict.replay(original.request_id, store=mem)
    assert fingerprint(mem) == before


def test_an_interrupted_run_is_refused_until_it_is_resumed(mem):
    flow = make_flow()
    original = run(flow, mem, "hello")
    record = mem.read("request", original.request_id, "$request")
    mem.write("request", original.request_id, "$request",  # its process died: lease passed
              {**record.state, "status": "running", "lease_until": 1.0}, content=record.content)
    before = fingerprint(mem)
    with pytest.raises(fs.RunStateError, match=r"was interrupted.*flow\.resume"):
        flow.replay(original.request_id, store=mem)
    assert fingerprint(mem) == before


def test_a_run_without_trace_or_step_log_replays_without_reuse(mem):
    flow = make_flow()
    original = flow.run("digest", {"text": "plain run"}, store=mem, trace=False, durable=False)
    replay = make_flow(style="loud").replay(original.request_id, store=mem)
    assert replay.original.trace is None and replay.reused == []
    assert CALLS["email"] == 1 and replay.result.output["receipt"] is None
    assert any("kept no step log (durable=False)" in n for n in replay.notes)
    assert [c.path for c in replay.diff.output] == [("saved",), ("receipt",)]


def test_a_running_run_is_not_replayed(mem):
    flow = make_flow()
    seen = {}

    @fs.handler
    def peek(value, ctx):
        with pytest.raises(fs.RunStateError, match="still running"):
            flow.replay(ctx.run_id, store=mem)
        seen["checked"] = True
        return value

    flow = fs.define_flow("digest", {"digest": peek})
    assert flow.run("digest", {"text": "x"}, store=mem).ok and seen == {"checked": True}


# -- the view ---------------------------------------------------------------------------------

def test_the_replay_shows_side_by_side_in_html_and_text(mem):
    original = run(make_flow(), mem, "the quick brown fox")
    replay = make_flow(style="loud").replay(original.request_id, store=mem)
    page = replay._repr_html_()
    assert "fs-cmp-diff" in page and "≠" in page and "reused steps" in page
    assert "digest/then[0]/fetch" in page and "THE QUICK BR" in page
    # colours only from JupyterLab's variables
    assert not re.search(r"#[0-9a-fA-F]{3,8}\b|rgb\(|hsl\(", page.replace("&#", ""))
    text = repr(replay)
    assert text.startswith(f"replay of run {original.request_id} (digest)")
    assert "~ saved: \"the quick br\" -> \"THE QUICK BR\"" in text
    assert "reused: digest/then[0]/fetch" in text
    same = make_flow().replay(original.request_id, store=mem)
    assert "same outcome and effects" in repr(same)
