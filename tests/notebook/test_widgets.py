"""The live widgets on a guide-flow session in a SQLite store: what they show, that they follow
writes from this process and from other processes without a refresh call, the FlowRunner form,
History, text forms and the size of what a saved notebook would keep."""

from __future__ import annotations

import enum
import json
import os
import re
import subprocess
import sys
import time
from typing import Literal

import ipywidgets as W
import pytest
from _nbtools import TESTS_DIR, click_in_browser, fingerprint, typed_in_browser, wait_for
from pydantic import BaseModel, Field

import flowstate_jupyter as fs
from flowstate_jupyter.notebook import ClientDataPreview, FlowRunner, History, Inspector


def tree_state(inspector: Inspector, scope: str = "session") -> dict:
    """The state the Inspector's tab of ``scope`` shows (the data its front end draws)."""
    return next(v for v in inspector.scopes if v["scope"] == scope)["state"]


def resources(inspector: Inspector, scope: str = "session") -> dict:
    view = next(v for v in inspector.scopes if v["scope"] == scope)
    return {r["name"]: r for r in view["resources"]}


# -- Inspector ------------------------------------------------------------------------------------

def test_inspector_shows_state_version_and_resources_per_scope(session):
    session.patch_state(mode="agent")
    session.resources["artifacts"].push_state("titles", "Report")
    session.resources["artifacts"].write_content("# Report\n\nbody")
    session.user.resources["preferences"].patch_state(theme="dark")
    inspector = Inspector(session)
    assert [v["scope"] for v in inspector.scopes] == ["session", "user", "project"]
    assert inspector.scopes[0]["id"] == "s1" and inspector.scopes[0]["version"] == 1
    assert tree_state(inspector) == {"mode": "agent", "message_count": 0}
    artifacts = resources(inspector)["artifacts"]
    assert (artifacts["version"], artifacts["state"]["titles"]) == (2, ["Report"])
    assert artifacts["content"] == "# Report\n\nbody"
    assert resources(inspector, "user")["preferences"]["state"]["theme"] == "dark"
    assert inspector.windmill == []
    assert inspector.live and inspector.changed_at > 0
    # the snapshot a saved notebook keeps: the same facts as HTML, strings as tree leaves
    html = inspector.snapshot_html()
    assert "&#x27;s1&#x27; · v1" in html
    assert '<span class="fs-key">mode</span>: <span class="fs-str">&quot;agent&quot;</span>' \
        in html
    assert "Report" in html and "preferences" in html and "Windmill states" in html
    text = repr(inspector)
    assert text.startswith("Inspector\n")
    assert "session 's1' v1: mode=\"agent\", message_count=0" in text
    assert "resource artifacts v2" in text and "Report" in text
    assert "resource preferences v1" in text


def test_inspector_follows_a_write_in_this_process_without_refresh(session):
    inspector = Inspector(session)
    first = inspector.changed_at
    assert tree_state(inspector)["mode"] == "chat"
    session.patch_state(mode="agent")
    assert wait_for(lambda: tree_state(inspector)["mode"] == "agent", timeout=2.0)
    assert inspector.changed_at >= first
    session.user.resources["preferences"].patch_state(language="de")
    assert wait_for(lambda: resources(inspector, "user")["preferences"]["state"]["language"]
                    == "de", timeout=2.0)


WRITER = """
import sys
sys.path.insert(0, {flows!r})
import flowstate_jupyter as fs
from guide_flow import make_flow
store = fs.open_store({url!r})
make_flow().session("s1", user="alice", store=store).patch_state(message_count=4242)
store.close()
"""


def test_inspector_follows_a_write_by_another_process_within_two_seconds(session, db_path):
    inspector = Inspector(session)
    assert tree_state(inspector)["message_count"] == 0
    code = WRITER.format(flows=str(TESTS_DIR), url=f"sqlite:///{db_path}")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60,
                   env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    written = time.monotonic()
    assert wait_for(lambda: tree_state(inspector)["message_count"] == 4242, timeout=2.0), \
        "the Inspector did not show the other process's write within 2 s"
    assert time.monotonic() - written < 2.0
    assert "message_count=4242" in repr(inspector)
    assert '<span class="fs-numv">4242</span>' in inspector.snapshot_html()


def test_inspector_of_a_large_state_stays_small(session):
    big = [f"title {i:06d} " + "x" * 90 for i in range(2000)]  # ~200 KB
    session.resources["artifacts"].set_state({"titles": big})
    session.user.set_state({"notes": "y" * 200_000})
    assert len(json.dumps(session.resources["artifacts"].state_dict())) > 200_000
    inspector = Inspector(session)
    data = json.dumps([inspector.scopes, inspector.windmill])
    assert len(data) < 30_000, len(data)
    state = {k: v for k, v in inspector.get_state().items() if k not in ("_esm", "_css")}
    assert len(json.dumps(state, default=str)) < 30_000
    titles = resources(inspector)["artifacts"]["state"]["titles"]
    assert titles[-1] == {"$more": 2000 - (len(titles) - 1)}  # what was left out, counted
    assert "more characters" in tree_state(inspector, "user")["notes"]
    from flowstate_jupyter.notebook._show import SNAPSHOT_CHARS
    assert len(inspector.snapshot_html()) < SNAPSHOT_CHARS
    assert "more characters" in inspector.snapshot_html()
    assert len(repr(inspector)) < 10_000
    # the front-end code is shipped once per view, and stays small too
    assert len(inspector._esm) + len(inspector._css) < 60_000


def test_closed_inspector_stops_following_the_store(session):
    inspector = Inspector(session)
    before = list(inspector.scopes)
    inspector.close()
    session.patch_state(mode="agent")
    time.sleep(0.4)
    assert inspector.scopes == before


# -- ClientDataPreview -----------------------------------------------------------------------------

def test_client_data_preview_marks_what_changed_since_the_last_update(session):
    preview = ClientDataPreview(session)
    assert preview.changed == set()
    assert 'class="fs-changed"' not in preview.snapshot_html()
    assert preview.snapshot["client_data"]["session"]["message_count"] == 0
    assert preview.data["session"]["message_count"] == 0
    session.run("chat", {"message": "hello"})
    assert wait_for(lambda: preview.changed == {"session.message_count"}, timeout=2.0), \
        preview.changed
    assert preview.data["session"]["message_count"] == 1
    html = preview.snapshot_html()
    assert '<span class="fs-changed"><span class="fs-key">message_count</span>' in html
    assert html.count('class="fs-changed"') == 1  # unchanged keys are not marked
    assert "1 changed in the last update" in html
    text = repr(preview)
    assert "* session.message_count = 1" in text and "  session.mode = \"chat\"" in text


def test_client_data_preview_shows_resource_client_data(session):
    preview = ClientDataPreview(session)
    session.run("save", {"title": "Plan", "body": "text", "theme": "dark"})
    assert wait_for(lambda: preview.snapshot["client_data"]["user"] == {"theme": "dark"} and
                    preview.snapshot["client_data"]["session"]["artifact_count"] == 1,
                    timeout=2.0)
    assert preview.data["session"]["resources"]["artifacts"] == {"count": 1, "titles": ["Plan"]}
    assert "session.resources.artifacts" in preview.changed
    assert "Plan" in preview.snapshot_html()


# -- FlowRunner -----------------------------------------------------------------------------------

class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Step(BaseModel):
    title: str
    done: bool = False


class FormInput(BaseModel):
    name: str = Field(min_length=1, description="who asks")
    level: Literal["low", "high"] = "high"
    color: Color = Color.BLUE
    urgent: bool = False
    count: int = 3
    ratio: float = 0.5
    tags: list[str] = Field(default_factory=list)
    size: Literal["s", "m"] | None = None
    note: str | None = None
    limit: int | None = None
    body: str = Field("", json_schema_extra={"format": "markdown"})
    summary: str = Field("", max_length=5000)
    steps: list[Step] = Field(default_factory=list)
    budget: int


class ManyInput(BaseModel):
    n: int = 50


@fs.handler
def echo(input, ctx):
    ctx.session.inc_state(runs=1)
    return input.model_dump(mode="json")


@fs.handler
def boom(input, ctx):
    raise RuntimeError("the block broke")


@fs.handler
def square(x, ctx):
    return x * x


def make_form_flow() -> fs.Flow:
    class FormSession(BaseModel):
        runs: int = 0
    many = fs.sequencer("many", input=ManyInput).map(lambda v, ctx: list(range(v.n))) \
        .for_each(square, max_concurrency=4)
    return fs.define_flow(kind="forms",
                          actions={"form": fs.action(echo, input=FormInput), "boom": boom,
                                   "many": many},
                          session=FormSession)


@pytest.fixture
def form_runner(store):
    flow = make_form_flow()
    session = flow.session("f1", user="alice", store=store)
    return FlowRunner(flow, session), session


def test_flow_runner_builds_a_form_from_the_input_model(form_runner):
    runner, _ = form_runner
    assert list(runner.action.options) == ["form", "boom", "many"]
    controls = {name: control for name, (control, _) in runner._controls.items()}
    assert type(controls["name"]) is W.Text and controls["name"].value == ""
    assert type(controls["level"]) is W.Dropdown
    assert [v for _, v in controls["level"].options] == ["low", "high"]
    assert controls["level"].value == "high"
    assert type(controls["color"]) is W.Dropdown and controls["color"].value == "blue"
    assert type(controls["urgent"]) is W.Checkbox
    assert type(controls["count"]) is W.IntText and controls["count"].value == 3
    assert type(controls["ratio"]) is W.FloatText and controls["ratio"].value == 0.5
    assert type(controls["tags"]) is W.Textarea and controls["tags"].value == "[]"
    # optional fields can stay unset: a "(none)" choice, empty text
    assert type(controls["size"]) is W.Dropdown
    assert controls["size"].label == "(none)" and controls["size"].value is None
    assert type(controls["note"]) is W.Text and controls["note"].value == ""
    assert type(controls["limit"]) is W.Text and controls["limit"].value == ""
    # long or Markdown strings get several lines; nested models are JSON
    assert type(controls["body"]) is W.Textarea and type(controls["summary"]) is W.Textarea
    assert type(controls["steps"]) is W.Textarea
    # a required number has no invented value: an empty box
    assert type(controls["budget"]) is W.Text and controls["budget"].value == ""
    fields = runner.fields
    assert [n for n, f in fields.items() if f.required] == ["name", "budget"]
    assert "fs-required-field" in fields["name"].row._dom_classes
    assert "who asks" in fields["name"].help.value
    assert list(runner.form.children)[:len(fields)] == [f.row for f in fields.values()]
    runner.action.value = "many"
    assert list(runner._controls) == ["n"] and type(runner._controls["n"][0]) is W.IntText


def test_flow_runner_run_button_shows_output_events_and_the_last_runs(form_runner):
    runner, session = form_runner
    body = "# Plan\n\n* first line\n* second line"
    runner.set_input(name="Ada", level="low", color="red", urgent=True, count=7, ratio=1.5,
                     tags=["a", "b"], body=body, budget=12,
                     steps=[{"title": "write"}, {"title": "test", "done": True}])
    runner.run_button.click()
    assert runner.result is not None and runner.result.ok
    output = runner.result.output
    assert output["body"] == body  # newlines kept
    assert output["budget"] == 12 and output["steps"][1] == {"title": "test", "done": True}
    assert (output["name"], output["level"], output["color"], output["tags"]) == \
        ("Ada", "low", "red", ["a", "b"])
    assert (output["size"], output["note"], output["limit"]) == (None, None, None)
    assert runner.output.value == output and runner.output.layout.display != "none"
    assert "session.increment v1" in runner.events.value
    assert "request form ok" in runner.events.value
    assert session.state.runs == 1
    assert runner.run_button.disabled is False
    assert "last runs" in runner.runs.value and "form" in runner.runs.value
    assert "last output" in repr(runner) and "Ada" in repr(runner)
    runner.set_input(size="m", note="hi", limit=5)
    output = runner.run().output
    assert (output["size"], output["note"], output["limit"]) == ("m", "hi", 5)
    runner.set_input(size=None, note=None, limit=None)
    output = runner.run().output
    assert (output["size"], output["note"], output["limit"]) == (None, None, None)
    assert runner.runs.value.count("<tr>") == 1 + 3  # header and the three runs
    snapshot = runner.snapshot_html()
    assert "last output" in snapshot and "last runs" in snapshot


def _runner_controls(runner: FlowRunner) -> list:
    return [runner.action, *(control for control, _ in runner._controls.values())]


def test_run_runs_what_the_form_shows_even_before_the_last_keystrokes_reach_the_kernel(
        form_runner):
    runner, session = form_runner
    name, budget, body = (runner.fields[n].control for n in ("name", "budget", "body"))
    # ipywidgets sent each box's first keystroke and holds the rest back until the kernel
    # answers; the click goes at once, so it arrives before them
    typed_in_browser(name, value="A")
    typed_in_browser(budget, value="1")
    typed_in_browser(body, value="# P")
    shown = {name: "Ada", budget: "12", body: "# Plan\n\n1. write"}
    click_in_browser(runner.run_button, _runner_controls(runner), shown)()
    assert runner.result is not None and runner.result.ok, runner.message.value
    output = runner.result.output
    assert (output["name"], output["budget"], output["body"]) == ("Ada", 12, "# Plan\n\n1. write")
    [run] = session.runs()
    assert (run["input"]["name"], run["input"]["budget"]) == ("Ada", 12)
    # the form holds what was shown; the held-back updates, arriving now, change nothing
    assert (name.value, budget.value) == ("Ada", "12")
    for control, value in shown.items():
        typed_in_browser(control, value=value)
    assert len(session.runs()) == 1 and runner.result.output == output


def test_a_run_click_carries_choices_and_checkboxes_too(form_runner):
    runner, _ = form_runner
    fields = runner.fields
    typed_in_browser(fields["name"].control, value="Ada")
    typed_in_browser(fields["budget"].control, value="5")
    shown = {fields["level"].control: 0, fields["color"].control: 0,  # low, RED (indexes)
             fields["urgent"].control: True, fields["count"].control: 9,
             fields["size"].control: 2}  # m ((none) is first)
    click_in_browser(runner.run_button, _runner_controls(runner), shown)()
    output = runner.result.output
    assert (output["level"], output["color"], output["urgent"], output["count"],
            output["size"]) == ("low", "red", True, 9, "m")


def test_a_click_on_a_form_the_kernel_has_since_rebuilt_runs_nothing_and_says_so(form_runner):
    runner, session = form_runner
    runner.set_input(name="Ada", budget=12)
    # another action chosen: its update reaches the kernel, which rebuilds the form, after
    # the click on the old form left the browser
    click = click_in_browser(runner.run_button, _runner_controls(runner))
    typed_in_browser(runner.action, index=2)
    click()
    assert runner.result is None and session.runs() == []
    assert "the form changed as you clicked" in runner.message.value
    # the other way round: the choice waits in the browser, the click carries it, with the
    # fields of the form the browser still shows (the kernel had not rebuilt it yet)
    typed_in_browser(runner.action, index=0)
    runner.set_input(name="Ada", budget=12)
    click_in_browser(runner.run_button, _runner_controls(runner), {runner.action: 2})()
    assert runner.result is None and session.runs() == []
    assert runner.action.value == "many" and list(runner.fields) == ["n"]
    assert "the form changed as you clicked" in runner.message.value
    # a click on the form as it is now runs
    click_in_browser(runner.run_button, _runner_controls(runner),
                     {runner.fields["n"].control: 4})()
    assert runner.result.ok and runner.result.output == [0, 1, 4, 9]
    assert [r["action"] for r in session.runs()] == ["many"]


def test_flow_runner_leaves_an_optional_choice_unset_by_default(store):
    from guide_flow import make_flow
    flow = make_flow()
    session = flow.session("s1", user="alice", store=store)
    session.user.resources["preferences"].patch_state(theme="dark")
    runner = FlowRunner(flow, session)
    runner.action.value = "save"
    runner.set_input(title="Notes", body="text")
    result = runner.run()
    assert result.ok and result.output == {"saved": "Notes"}
    # the form did not invent a theme: the user's preference is untouched
    assert session.user.resources["preferences"].state.theme == "dark"
    runner.set_input(theme="light")
    assert runner.run().ok
    assert session.user.resources["preferences"].state.theme == "light"


def test_flow_runner_shows_an_error_in_a_block_inline(form_runner):
    runner, _ = form_runner
    runner.action.value = "boom"
    result = runner.run()
    assert result is not None and result.error is not None
    assert 'class="fs-error"' in runner.message.value
    assert "RuntimeError" in runner.message.value and "the block broke" in runner.message.value
    assert "request boom error" in runner.events.value
    assert runner.output.layout.display == "none"


def test_flow_runner_refuses_a_missing_required_field_as_flow_run_does(form_runner, store):
    runner, session = form_runner
    runner.set_input(budget=5)  # name left empty: not sent, so the model refuses it
    before = fingerprint(store)
    assert runner.run() is None
    name = runner.fields["name"]
    assert "Field required" in name.error.value and "fs-invalid" in name.row._dom_classes
    assert runner.fields["budget"].error.value == ""
    assert "field &#x27;name&#x27;: Field required" in runner.message.value
    assert fingerprint(store) == before
    assert session.runs() == [] and runner.result is None
    # the same refusal as %flow run: the library's own message
    with pytest.raises(fs.errors.ValidationError, match="field 'name': Field required"):
        session.run("form", {"budget": 5})
    # filled in, it runs, and the inline error goes
    runner.set_input(name="Ada")
    assert runner.run().ok and name.error.value == ""


@pytest.mark.parametrize("field, text, expected", [
    ("tags", "[not json", "Invalid JSON"),
    ("tags", '["a", 3]', "1: Input should be a valid string"),
    ("steps", '[{"done": true}]', "0.title: Field required"),
    ("budget", "many", "unable to parse string as an integer"),
], ids=["not-json", "wrong-item-type", "nested-model-missing-field", "not-a-number"])
def test_flow_runner_shows_pydantic_messages_next_to_the_field_and_runs_nothing(
        form_runner, store, field, text, expected):
    runner, session = form_runner
    runner.set_input(name="Ada", budget=1)
    runner.fields[field].control.value = text
    before = fingerprint(store)
    assert runner.run() is None
    error = runner.fields[field].error.value
    assert expected in error, error
    assert "Expecting value" not in error  # not the json module's message
    assert all(f.error.value == "" for n, f in runner.fields.items() if n != field)
    assert fingerprint(store) == before and session.runs() == []


def test_flow_runner_checks_a_json_field_as_it_is_left(form_runner):
    runner, _ = form_runner
    runner.fields["steps"].control.value = '[{"title": 1}]'
    assert "0.title: Input should be a valid string" in runner.fields["steps"].error.value
    runner.fields["steps"].control.value = '[{"title": "ok"}]'
    assert runner.fields["steps"].error.value == ""


def test_a_new_refusal_clears_the_previous_runs_events_and_output(form_runner):
    runner, _ = form_runner
    runner.set_input(name="Ada", budget=1)
    assert runner.run().ok
    assert runner.events.value and runner.output.layout.display != "none"
    runner.set_input(name="")
    assert runner.run() is None
    assert runner.events.value == "" and runner.output.layout.display == "none"
    assert "Field required" in runner.message.value


def test_flow_runner_progress_bar_reaches_the_total_of_a_long_for_each(form_runner):
    runner, _ = form_runner
    runner.action.value = "many"
    runner.set_input(n=120)
    seen = []
    runner.progress.observe(lambda change: seen.append(change["new"]), "value")
    result = runner.run()
    assert result.ok and result.output == [i * i for i in range(120)]
    assert (runner.progress.value, runner.progress.max) == (120, 120)
    assert runner.progress.layout.visibility == "visible"
    assert len(seen) > 10 and seen == sorted(seen)  # it moved, forward


def test_a_long_run_shows_the_block_running_now_while_it_runs(store):
    seen: list[str] = []

    @fs.handler
    def slow(input, ctx):
        ctx.emit("message", {"text": "thinking"})
        # the run only ends once the runner has said what is running (or after 20 s: fail)
        wait_for(lambda: "now: slow" in runner.status.value, timeout=20.0, interval=0.05)
        seen.append(runner.status.value)
        return "done"

    flow = fs.define_flow(kind="slowpoke", actions={"go": slow})
    runner = FlowRunner(flow, flow.session("p1", user="alice", store=store))
    result = runner.run()
    assert result.ok and seen and "now: slow" in seen[0], seen
    assert "running go" in seen[0] and re.search(r"\b[1-9]\d* events\b", seen[0])
    assert "ok ·" in runner.status.value  # replaced by the outcome when the run ended


# -- History --------------------------------------------------------------------------------------

def test_history_lists_versions_diffs_two_and_restores_an_old_state(session):
    session.patch_state(mode="agent")
    session.inc_state(message_count=2)
    session.inc_state(message_count=3)
    history = History(session)
    assert [v for _, v in history.newer.options] == [3, 2, 1]
    labels = [label for label, _ in history.newer.options]
    assert re.fullmatch(r"v3 · \d\d:\d\d:\d\d · increment", labels[0]), labels
    assert labels[2].endswith("· patch")
    assert (history.older.value, history.newer.value) == (2, 3)
    table = history._table.value
    for version in ("v3", "v2", "v1"):
        assert f'<td class="fs-nowrap">{version}</td>' in table
    assert "~ message_count: 2 -&gt; 5" in history._diff.value
    history.older.value = 1
    assert "~ message_count: 0 -&gt; 5" in history._diff.value
    text = repr(history)
    assert text.startswith("History of session 's1'\n") and "v3" in text and "increment" in text
    assert history.restore(1) is True
    assert session.version == 4
    assert session.state_dict() == {"mode": "agent", "message_count": 0}
    assert session.history(limit=1)[0].operation == "set"
    assert "restored v1 as v4" in history._message.value
    assert [v for _, v in history.newer.options] == [4, 3, 2, 1]
    # what was selected stays selected; 'to' follows the newest version
    assert (history.older.value, history.newer.value) == (1, 4)
    assert history.restore(4) is False  # already that state: no new version
    assert session.version == 4


def test_history_shows_versions_page_by_page(session):
    for _ in range(23):
        session.inc_state(message_count=1)
    history = History(session, page_size=10)
    assert history.pages == 3 and history.page == 0
    assert history.prev_button.disabled and not history.next_button.disabled
    first = re.findall(r'<td class="fs-nowrap">v(\d+)</td>', history._table.value)
    assert first == [str(v) for v in range(23, 13, -1)]
    assert "page 1 of 3" in history._page_label.value
    history.next_button.click()
    second = re.findall(r'<td class="fs-nowrap">v(\d+)</td>', history._table.value)
    assert second == [str(v) for v in range(13, 3, -1)]
    history.next_button.click()
    assert re.findall(r'<td class="fs-nowrap">v(\d+)</td>', history._table.value) == \
        ["3", "2", "1"]
    assert history.next_button.disabled and "page 3 of 3" in history._page_label.value
    # a restore keeps the page, the selection and shows the new version
    history.older.value = 2
    history.restore_button.click()
    assert session.version == 24 and session.state.message_count == 2
    assert history.page == 2 and history.older.value == 2
    assert history.rows[0][0] == 24 and len(history.rows) == 24


def test_history_restore_button_restores_the_from_version(session):
    session.patch_state(mode="agent")
    session.patch_state(mode="chat")
    history = History(session)
    history.older.value = 1
    history.restore_button.click()
    assert session.state.mode == "agent" and session.version == 3


def _choose_in_browser(select: W.Widget, version: object) -> None:
    """What the browser sends when a person picks a version in a History list."""
    select._handle_msg({"content": {"data": {"method": "custom",
                                             "content": {"choose": version}}},
                        "buffers": []})


def test_history_restores_the_version_chosen_even_if_a_version_arrived_after_the_list_was_drawn(
        session):
    for _ in range(5):
        session.inc_state(message_count=1)
    history = History(session)
    drawn = list(history.older.options)  # the list as the browser drew it, newest first
    label, version = next(o for o in drawn if o[0].startswith("v3 · "))
    session.inc_state(message_count=1)  # a version arrives (here, or from another process)
    new = session.version
    # the kernel's list moved down by one
    assert wait_for(lambda: list(history.older.options)[1:] == drawn, timeout=5.0)
    _choose_in_browser(history.older, version)  # the choice arrives after the new list
    assert history.older.value == 3, label
    assert f"v3 → v{new}" in history._diff.value
    state = next(e.state for e in session.history(limit=None) if e.version == 3)
    passed_through: list = []  # what 'from' showed on the way (ipywidgets' Dropdown: the newest)
    history.older.observe(lambda change: passed_through.append(change.new), "value")
    newest_when_said: list = []
    history._message.observe(lambda _: newest_when_said.append(history.older.options[0][1]),
                             "value")
    history.restore_button.click()
    assert f"restored v3 as v{new + 1}" in history._message.value
    assert session.version == new + 1 and session.state_dict() == state
    assert history.older.value == 3 and passed_through == []  # still what the person chose
    assert newest_when_said == [new + 1]  # the lists had the new version when it was said


def test_history_ignores_a_choice_that_is_not_a_version(session):
    session.inc_state(message_count=1)
    session.inc_state(message_count=1)
    history = History(session)
    chosen = history.older.value
    for bad in ("1", True, 1.5, [1], {"v": 1}):
        _choose_in_browser(history.older, bad)
        assert history.older.value == chosen, bad
    history.older._handle_msg({"content": {"data": {"method": "custom",
                                                    "content": "choose"}}, "buffers": []})
    _choose_in_browser(history.older, 99)  # a version that is not kept: said, not restored
    before = session.version
    assert history.restore() is False and "v99 is not kept" in history._message.value
    assert session.version == before


def test_history_of_a_resource_and_an_empty_history(session):
    empty = History(session.resources["artifacts"])
    assert list(empty.newer.options) == []
    assert repr(empty).startswith("History")
    assert "no versions" in repr(empty)
    assert "no versions yet" in empty._table.value
    session.resources["artifacts"].push_state("titles", "a")
    session.resources["artifacts"].push_state("titles", "b")
    assert wait_for(lambda: [v for _, v in empty.newer.options] == [2, 1], timeout=2.0)
    assert "titles" in empty._diff.value


# -- text forms and snapshots -------------------------------------------------------------------

def test_every_widget_has_a_readable_text_form(session, guide_flow):
    session.patch_state(mode="agent")
    widgets = [Inspector(session), ClientDataPreview(session), FlowRunner(guide_flow, session),
               History(session)]
    for widget in widgets:
        text = repr(widget)
        name = type(widget).__name__
        assert text.startswith(name), text
        assert "<" not in text and "object at 0x" not in text, text
        assert len(text.splitlines()) >= 1 and len(text) > len(name)
    assert "agent" in repr(widgets[0]) and "agent" in repr(widgets[1])
    assert "chat, save" in repr(widgets[2])
    assert "v1" in repr(widgets[3])


def test_every_view_has_a_bounded_snapshot_that_says_what_it_is(session, guide_flow):
    from flowstate_jupyter.notebook._show import SNAPSHOT_CHARS
    session.patch_state(mode="agent")
    for view in (Inspector(session), ClientDataPreview(session), History(session),
                 FlowRunner(guide_flow, session)):
        bundle = view.snapshots.bundle()
        html = bundle["text/html"]
        assert html.count("<style>") == 1, "the style sheet goes in once"
        assert 'class="fs-snapshot"' in html and "snapshot of the live" in html
        assert len(html) < SNAPSHOT_CHARS + 10_000
        assert bundle["text/plain"] == repr(view)
        side = view.snapshots.bundle(side=True, where="'panel'")["text/html"]
        assert "fs-side-snapshot" in side and "open in the side panel" in side
