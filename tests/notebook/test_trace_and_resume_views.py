"""The trace view (``%flow trace``) and the resume form of a suspended run (docs/guide.md, 'In a
notebook'), on a SQLite store: what they show, that they follow the run's record, what they refuse,
and what a saved notebook or a terminal gets of them."""

from __future__ import annotations

import html
import json
import subprocess
import sys
import textwrap
import time

import ipywidgets as W
import pytest
from _helpers import python_env
from _nbtools import TESTS_DIR, click_in_browser, fingerprint, typed_in_browser, wait_for
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from planner_flow import Approval, make_flow
from pydantic import BaseModel

import flowstate_jupyter as fs
from flowstate_jupyter.notebook import FlowRunner, ResumeForm, TraceView, kernel_state
from flowstate_jupyter.notebook._show import SNAPSHOT_CHARS, WIDGET_VIEW


@pytest.fixture
def planner():
    return make_flow()


def suspended_run(planner, store, goal="launch", action="plan"):
    result = planner.run(action, goal, store=store, session="s1", user="alice")
    assert result.status == "suspended", result
    return result


def status_of(store, request_id) -> str:
    return next(r for r in make_flow().runs(store=store)
                if r["request_id"] == request_id)["status"]


# -- the trace view -------------------------------------------------------------------------------

def test_trace_view_shows_spans_as_a_tree_with_bars_and_opens_at_the_failing_block(planner,
                                                                                   store):
    result = planner.run("plan", "", store=store, session="s1", user="alice")
    assert result.status == "error"
    view = TraceView(store, result.request_id)
    paths = [s["path"] for s in view.spans]
    assert paths == ["plan", "plan/then[0]/draft"]
    root, failed = view.spans
    assert (failed["name"], failed["parent"], failed["kind"]) == ("then[0]/draft", "plan",
                                                                  "handler")
    assert failed["origin"] and not root["origin"] and root["error"] is not None
    assert view.selected == "plan/then[0]/draft"  # the error's origin, not its parent
    assert failed["error"]["type"] == "ValueError"
    assert failed["error"]["message"] == "a goal is needed"
    assert 'raise ValueError("a goal is needed")' in failed["error"]["traceback"]
    assert failed["input"] == "" and failed["output"] is None
    for span in view.spans:  # bars on one axis: inside the run, the root spans it
        left, width = span["bar"]
        assert left >= 0 and left + width <= 100.01
    assert root["bar"] == [0.0, 100.0]
    assert view.trace["status"] == "error" and view.trace["action"] == "plan"
    text = repr(view)
    assert text.startswith(f"trace of run {result.request_id}: plan · error")
    assert "then[0]/draft [handler draft] error" in text
    assert "error at plan/then[0]/draft: ValueError: a goal is needed" in text
    html = view.snapshot_html()
    assert 'data-span="plan/then[0]/draft" open' in html and "a goal is needed" in html


def test_a_span_shows_its_input_output_and_the_changes_it_committed(planner, store):
    first = suspended_run(planner, store)
    done = planner.resume(first.request_id, {"approved": True, "note": "ok"}, store=store)
    view = TraceView(store, done.request_id)
    assert view.selected == ""  # nothing failed: the person picks a span
    applied = view.span("plan/then[2]/apply")
    assert applied["input"]["approved"] is True and applied["output"] == {"goal": "launch",
                                                                         "applied": True}
    assert [c["label"] for c in applied["changes"]] == ["session.push v1"]
    assert applied["changes"][0]["change"]["delta"] == "launch"
    assert view.span("plan/then[0]/draft")["changes"] == []
    # a resumed run: its spans from both attempts, the wait for a person drawn short
    attempts = {s["path"]: s["attempt"] for s in view.spans}
    assert attempts["plan/then[0]/draft"] == 1 and attempts["plan/then[2]/apply"] == 2
    draft_bar, apply_bar = view.span("plan/then[0]/draft")["bar"], applied["bar"]
    assert apply_bar[0] > draft_bar[0] + draft_bar[1]
    assert apply_bar[1] > 5, "the wait between the attempts took the whole axis"
    view.selected = "plan/then[2]/apply"  # what a click does
    assert "2 attempts" in view.trace["subtitle"]


def test_the_trace_view_follows_a_run_resumed_in_another_process(planner, store, db_path):
    first = suspended_run(planner, store)
    view = TraceView(store, first.request_id)
    assert view.trace["status"] == "suspended"
    assert [s["status"] for s in view.spans] == ["suspended", "ok", "suspended"]
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS_DIR)!r})
        import flowstate_jupyter as fs
        from planner_flow import make_flow
        store = fs.open_store({f"sqlite:///{db_path}"!r})
        make_flow().resume({first.request_id!r}, {{"approved": False}}, store=store)
        store.close()
    """)
    done = subprocess.run([sys.executable, "-c", code], env=python_env(), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert wait_for(lambda: view.trace["status"] == "ok", timeout=10)
    assert view.span("plan/then[2]/apply")["output"] == {"goal": "launch", "applied": False}
    assert view.changed_at > 0
    view.close()


def test_a_large_trace_keeps_its_snapshot_and_text_bounded(store):
    @fs.handler
    def echo(x, ctx):
        ctx.emit("tick", {"n": x})
        return {"x": x, "pad": "p" * 5000}

    flow = fs.define_flow(kind="wide", actions={"go": fs.sequencer("each").for_each(echo)})
    result = flow.run("go", list(range(300)), store=store)
    view = TraceView(store, result.request_id)
    assert len(view.spans) == 250 and view.trace["dropped"] > 0
    assert len(json.dumps(view.trace)) < 2_000_000
    html = view.snapshot_html()
    assert len(html) < 45_000 and "more spans" in html
    assert f"%flow trace {result.request_id}" in html
    assert len(repr(view).splitlines()) <= 301
    bundle = view.snapshots.bundle()
    assert len(bundle["text/html"]) < SNAPSHOT_CHARS + 10_000


class Reply(BaseModel):
    text: str


def test_an_output_that_is_not_plain_json_names_its_class(store):
    @fs.handler
    def answer(x, ctx):
        return Reply(text=f"hi {x}")

    flow = fs.define_flow(kind="replies", actions={"go": fs.sequencer("go").then(answer)})
    view = TraceView(store, flow.run("go", "ada", store=store).request_id)
    span = view.span("go/then[0]/answer")
    assert span["output"] == {"text": "hi ada"}
    assert span["output_type"] == f"{__name__}:Reply"
    assert f"output ({__name__}:Reply)" in view.snapshot_html()


def test_a_run_that_kept_no_trace_says_so(planner, store):
    result = planner.run("plan", "", store=store, trace=False)
    view = TraceView(store, result.request_id)
    assert view.spans == [] and view.selected == ""
    assert "the run kept no trace" in view.snapshot_html()
    assert repr(view).startswith(f"trace of run {result.request_id}: plan · error · ")


# -- %flow trace ----------------------------------------------------------------------------------

PLANNER_CELL = f"""
import sys
sys.path.insert(0, {str(TESTS_DIR)!r})  # in the kernel
from planner_flow import make_flow
make_flow()
"""


@pytest.fixture
def nb(ip):
    ip.run_line_magic("load_ext", "flowstate_jupyter")
    with capture_output():
        ip.run_cell_magic("flow", "planner", PLANNER_CELL)
    return ip


def shown(captured) -> str:
    parts = [captured.stdout]
    for output in captured.outputs:
        parts += [output.data.get("text/plain", ""), output.data.get("text/html", "")]
    return "\n".join(parts)


def test_a_failed_run_says_how_to_open_its_trace_and_flow_trace_opens_the_last_run(nb):
    with pytest.raises(UsageError, match="has no runs yet"):
        nb.run_line_magic("flow", "trace")
    with capture_output() as captured:
        nb.run_line_magic("flow", 'run plan ""')
    failed = nb.user_ns["_"]
    assert failed.status == "error"
    text = shown(captured)
    assert f"%flow trace {failed.request_id}" in text
    assert text.count(f"%flow trace {failed.request_id}") == 2  # text and HTML
    view = nb.run_line_magic("flow", "trace")
    assert isinstance(view, TraceView) and view.request_id == failed.request_id
    assert view.selected == "plan/then[0]/draft"
    by_id = nb.run_line_magic("flow", f"trace {failed.request_id}  # that one")
    assert by_id.trace == view.trace
    with pytest.raises(UsageError, match="no run 'r-nothing'"):
        nb.run_line_magic("flow", "trace r-nothing")
    with pytest.raises(UsageError, match="request id"):
        nb.run_line_magic("flow", "trace ../etc")


def test_flow_trace_shows_as_a_snapshot_and_the_live_view_in_a_kernel(nb, monkeypatch):
    from flowstate_jupyter.notebook import _show
    with capture_output():
        nb.run_line_magic("flow", 'run plan ""')
    view = nb.run_line_magic("flow", "trace")
    monkeypatch.setattr(_show, "in_kernel", lambda: True)
    with capture_output() as captured:
        view._ipython_display_()
    snapshot, live = captured.outputs
    assert 'class="fs-snapshot" data-fs-view="trace view"' in snapshot.data["text/html"]
    assert snapshot.data["text/plain"] == repr(view)
    assert live.data[WIDGET_VIEW]["model_id"] == view.model_id


# -- the resume form ------------------------------------------------------------------------------

def test_the_resume_form_is_built_from_the_suspensions_model(planner, store):
    first = suspended_run(planner, store)
    form = ResumeForm(planner, first.request_id, store=store)
    assert form.state == "waiting" and list(form.fields) == ["approved", "note"]
    approved, note = form.fields["approved"], form.fields["note"]
    assert isinstance(approved.control, W.ToggleButtons)
    assert approved.control.options == (("yes", True), ("no", False))
    assert approved.control.value is None, "a decision starts unmade"
    assert approved.required and not note.required
    assert "go ahead with this plan?" in approved.help.value
    assert isinstance(note.control, W.Textarea), "Markdown gets several lines"
    assert "Approve the plan for launch?" in form._ask.value
    assert "expires" in form._head.value
    text = repr(form)
    assert text.splitlines()[0] == f"run {first.request_id} is waiting: Approve the plan for " \
                                   f"launch?"
    assert "fields: approved* (bool), note (str)" in text
    assert f'%flow resume {first.request_id} {{"approved": true}}' in text
    html = form.snapshot_html()
    assert "waiting for you" in html and "approved *" in html
    assert f"%flow resume {first.request_id} {{&quot;approved&quot;: true}}" in html


def test_enums_are_toggles_or_a_dropdown_numbers_and_lists_are_typed(planner, store):
    first = planner.run("twice", "go", store=store)
    first = planner.resume(first.request_id, {"approved": True}, store=store)
    assert first.suspension.message == "Details, please"
    form = ResumeForm(planner, first.request_id, store=store)
    size, channel = form.fields["size"], form.fields["channel"]
    assert isinstance(size.control, W.ToggleButtons)
    assert size.control.options == (("S", "S"), ("L", "L")) and size.control.value is None
    assert isinstance(channel.control, W.Dropdown) and channel.control.value == "mail"
    assert (form.fields["budget"].kind, form.fields["owners"].kind) == ("number", "json")
    form.set_value(size="L", budget="12")
    form.fields["owners"].control.value = '["ada", 3]'
    assert form.fields["owners"].error.value and "string" in form.fields["owners"].error.value
    assert form.submit() is None and form.state == "waiting"
    form.fields["owners"].control.value = '["ada"]'
    result = form.submit()
    assert result.ok and result.output == {"goal": "go", "applied": True}
    assert form.state == "done"


def test_a_refused_value_shows_next_to_its_field_and_leaves_the_run_suspended(planner, store):
    first = suspended_run(planner, store)
    form = ResumeForm(planner, first.request_id, store=store)
    before = fingerprint(store)
    assert form.submit() is None  # nothing chosen
    assert "Field required" in form.fields["approved"].error.value
    assert "fs-invalid" in form.fields["approved"].row._dom_classes
    assert "still waits" in form.status.value
    assert form.state == "waiting" and not form.resume_button.disabled
    assert fingerprint(store) == before
    assert status_of(store, first.request_id) == "suspended"


def test_submitting_the_form_resumes_the_run_and_shows_its_outcome(planner, store):
    first = suspended_run(planner, store)
    form = ResumeForm(planner, first.request_id, store=store)
    form.set_value(approved=True, note="# yes\n\nship it")
    result = form.submit()
    assert result.ok and result.request_id == first.request_id
    assert form.state == "done" and form.result is result
    assert form.output.value == {"goal": "launch", "applied": True}
    assert form.output.layout.display == "" and form.form.children == ()
    assert "resumed here: ok" in form.status.value
    session = planner.session("s1", user="alice", store=store)
    assert session.state.applied == ["launch"]
    assert status_of(store, first.request_id) == "ok"
    assert planner.trace(first.request_id, store=store).span("plan/then[1]/approve").output[
        "note"] == "# yes\n\nship it"
    assert form.submit() is None, "a form resumes its run once"
    again = ResumeForm(planner, first.request_id, store=store)
    assert again.state == "closed" and "is ok, not suspended" in again.note
    assert "resumed here: ok" in repr(form)


def test_resume_sends_what_the_form_shows_even_before_the_last_keystrokes_reach_the_kernel(
        planner, store):
    first = suspended_run(planner, store)
    form = ResumeForm(planner, first.request_id, store=store)
    approved, note = form.fields["approved"].control, form.fields["note"].control
    # ipywidgets sent the box's first keystroke and holds the rest back until the kernel
    # answers; the click goes at once, so it arrives before them
    typed_in_browser(approved, index=0)  # yes
    typed_in_browser(note, value="S")
    click_in_browser(form.resume_button, [approved, note], {note: "Ship it\n**this week**."})()
    assert form.state == "done" and form.result.ok, form.message.value
    assert planner.trace(first.request_id, store=store).span("plan/then[1]/approve").output[
        "note"] == "Ship it\n**this week**."


def test_a_click_on_a_resume_form_the_run_has_since_replaced_resumes_nothing(planner, store):
    first = planner.run("twice", "go", store=store)
    form = ResumeForm(planner, first.request_id, store=store)
    approved = form.fields["approved"].control
    click = click_in_browser(form.resume_button, [f.control for f in form.fields.values()],
                             {approved: 0})
    form.set_value(approved=True)
    assert form.submit().status == "suspended"  # the run asks again: a new form
    before = fingerprint(store)
    click()  # the click on the first form arrives after it
    assert form.state == "waiting" and "the form changed as you clicked" in form.message.value
    assert fingerprint(store) == before
    assert status_of(store, first.request_id) == "suspended"


def test_a_run_that_asks_twice_shows_the_next_form(planner, store):
    first = planner.run("twice", "go", store=store)
    form = ResumeForm(planner, first.request_id, store=store)
    form.set_value(approved=True)
    result = form.submit()
    assert result.status == "suspended" and form.state == "waiting"
    assert list(form.fields) == ["size", "channel", "budget", "owners"]
    assert "asks again" in form.message.value
    assert "Details, please" in form._ask.value


def test_a_form_says_when_its_run_was_resumed_elsewhere_or_has_expired(planner, store):
    first = suspended_run(planner, store)
    form = ResumeForm(planner, first.request_id, store=store)
    planner.resume(first.request_id, {"approved": False}, store=store)
    assert wait_for(lambda: form.state == "closed", timeout=5)
    assert "was resumed elsewhere (it is ok now)" in form.note
    assert form.resume_button.disabled and form.form.children == ()

    @fs.handler
    def hurry(x, ctx):
        return ctx.suspend(Approval, message="quick", timeout_s=0.5).approved

    quick = fs.define_flow(kind="quick", actions={"go": hurry})
    waiting = quick.run("go", store=store)
    drawn = ResumeForm(quick, waiting.request_id, store=store)  # before it expires
    assert drawn.state == "waiting"
    time.sleep(0.6)
    drawn.set_value(approved=True)
    before = fingerprint(store)
    assert drawn.submit() is None
    assert drawn.state == "closed" and "expired" in drawn.note
    assert fingerprint(store) == before
    late = ResumeForm(quick, waiting.request_id, store=store)
    assert late.state == "closed" and "expired" in late.note


def test_without_the_model_class_the_schema_checks_the_value_next_to_its_field(store):
    def build():
        class Local(BaseModel):  # defined in a function: its class cannot be imported
            count: int
            tag: str = ""

        @fs.handler
        def ask(x, ctx):
            return ctx.suspend(Local, message="count?").count

        return fs.define_flow(kind="local", actions={"go": ask})

    flow = build()
    waiting = flow.run("go", store=store)
    assert waiting.suspension.model is None
    form = ResumeForm(flow, waiting.request_id, store=store)
    before = fingerprint(store)
    form.set_value(count="many")
    assert form.submit() is None
    assert "'many' is not of type 'integer'" in html.unescape(form.fields["count"].error.value)
    form.set_value(count=None)
    assert form.submit() is None
    assert "'count' is a required property" in html.unescape(form.fields["count"].error.value)
    assert fingerprint(store) == before
    form.set_value(count="7")
    assert form.submit().output == 7


# -- in the magics and FlowRunner -----------------------------------------------------------------

def test_flow_run_of_a_suspending_action_shows_the_form_and_resume_without_a_value_too(nb):
    with capture_output() as captured:
        nb.run_line_magic("flow", 'run plan "launch"')
    waiting = nb.user_ns["_"]
    # outside a kernel the form prints its text form under the run's summary
    assert captured.stdout.count(f"run {waiting.request_id} is waiting: Approve the plan for "
                                 f"launch?") == 1
    assert f'%flow resume {waiting.request_id} {{"approved": true}}' in captured.stdout
    assert "waiting for" in shown(captured)
    form = nb.run_line_magic("flow", "resume")  # no value: the latest waiting run's form
    assert isinstance(form, ResumeForm) and form.request_id == waiting.request_id
    assert status_of(kernel_state(nb).store, waiting.request_id) == "suspended"
    form.set_value(approved=True)
    assert form.submit().ok
    with pytest.raises(UsageError, match="has no suspended or interrupted run"):
        nb.run_line_magic("flow", "resume")


def test_flow_runs_says_what_each_waiting_run_waits_for(nb):
    with capture_output():
        nb.run_line_magic("flow", 'run plan "launch"')
        nb.run_line_magic("flow", 'run plan ""')
    table = nb.run_line_magic("flow", "runs --status suspended")
    assert table.title == "suspended runs of session 'nb1'"
    (row,) = table.rows
    assert row[2] == "suspended" and row[5].startswith(
        "waiting: Approve the plan for launch? · fields approved*, note · expires ")
    assert "%flow resume REQUEST_ID shows its form" in table.subtitle
    everything = nb.run_line_magic("flow", "runs")
    assert "%flow trace REQUEST_ID shows where" in everything.subtitle
    assert "outcome" in everything.header
    assert "waiting: Approve the plan" in repr(everything)


def test_flow_runner_shows_the_form_of_a_suspended_run_and_opens_a_trace(planner, store):
    session = planner.session("r1", user="alice", store=store)
    runner = FlowRunner(planner, session)
    runner.action.value = "plan"
    runner._free_input.value = '"launch"'
    result = runner.run()
    assert result.status == "suspended"
    (form,) = runner.pending.children
    assert isinstance(form, ResumeForm) and form.request_id == result.request_id
    # the record's suspension, not only the result's summary of it: the key it waits on and
    # the model to import (so pydantic checks the value before the run is touched)
    assert form.suspension["key"] and form.suspension["model"] == "planner_flow:Approval"
    form.refresh()  # a change of the record that did not resume it
    assert form.state == "waiting" and "asks again" not in form.message.value
    assert runner.output.layout.display == "none"
    assert "waiting for you" in runner.snapshot_html()
    form.set_value(approved=True)
    assert form.submit().ok
    assert session.state.applied == ["launch"]
    view = runner.toggle_trace()
    assert isinstance(view, TraceView) and runner.trace_box.children == (view,)
    assert view.trace["status"] == "ok" and runner.trace_button.description == "close trace"
    runner._free_input.value = '""'
    failed = runner.run()
    assert failed.status == "error" and runner.pending.children == ()
    assert runner.trace_box.children == () and runner.trace_button.layout.display == ""
    assert runner.toggle_trace().selected == "plan/then[0]/draft"
    assert runner.toggle_trace() is None and runner.trace_box.children == ()
