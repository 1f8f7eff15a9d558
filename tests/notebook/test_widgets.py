"""The live widgets on a guide-flow session in a SQLite store: what they show, that they follow
writes from this process and from other processes without a refresh call, the FlowRunner form,
History, text forms and the size of what a saved notebook would keep."""

from __future__ import annotations

import enum
import json
import os
import subprocess
import sys
import time
from typing import Literal

import ipywidgets as W
import pytest
from _nbtools import TESTS_DIR, fingerprint, wait_for
from pydantic import BaseModel, Field

import flowstate_jupyter as fs
from flowstate_jupyter.notebook import ClientDataPreview, FlowRunner, History, Inspector


def session_pane(inspector: Inspector) -> str:
    return inspector.tabs.children[0].value


def user_pane(inspector: Inspector) -> str:
    return inspector.tabs.children[1].value


# -- Inspector ------------------------------------------------------------------------------------

def test_inspector_shows_state_version_and_resources_per_scope(session):
    session.patch_state(mode="agent")
    session.resources["artifacts"].push_state("titles", "Report")
    session.user.resources["preferences"].patch_state(theme="dark")
    inspector = Inspector(session)
    titles = [inspector.tabs.get_title(i) for i in range(len(inspector.tabs.children))]
    assert titles[:3] == ["session", "user", "project"]
    html = session_pane(inspector)
    assert "&#x27;s1&#x27; · v1" in html
    assert "<td>mode</td><td>&quot;agent&quot;</td>" in html
    assert "<td>artifacts</td><td>v1</td>" in html and "Report" in html
    assert "<td>preferences</td><td>v1</td>" in user_pane(inspector)
    assert "dark" in user_pane(inspector)
    text = repr(inspector)
    assert text.startswith("Inspector\n")
    assert "session 's1' v1: mode=\"agent\", message_count=0" in text
    assert "resource artifacts v1" in text and "Report" in text
    assert "resource preferences v1" in text


def test_inspector_follows_a_write_in_this_process_without_refresh(session):
    inspector = Inspector(session)
    assert "&quot;agent&quot;" not in session_pane(inspector)
    session.patch_state(mode="agent")
    assert wait_for(lambda: "&quot;agent&quot;" in session_pane(inspector), timeout=2.0)
    session.user.resources["preferences"].patch_state(language="de")
    assert wait_for(lambda: "de&quot;" in user_pane(inspector), timeout=2.0)


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
    assert "4242" not in session_pane(inspector)
    code = WRITER.format(flows=str(TESTS_DIR), url=f"sqlite:///{db_path}")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60,
                   env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    written = time.monotonic()
    assert wait_for(lambda: "4242" in session_pane(inspector), timeout=2.0), \
        "the Inspector did not show the other process's write within 2 s"
    assert time.monotonic() - written < 2.0
    assert "message_count=4242" in repr(inspector)


def test_inspector_of_a_large_state_stays_small(session):
    big = [f"title {i:06d} " + "x" * 90 for i in range(2000)]  # ~200 KB
    session.resources["artifacts"].set_state({"titles": big})
    session.user.set_state({"notes": "y" * 200_000})
    assert len(json.dumps(session.resources["artifacts"].state_dict())) > 200_000
    inspector = Inspector(session)
    for pane in inspector.tabs.children:
        assert len(pane.value) < 10_000, len(pane.value)
        assert len(json.dumps(pane.get_state())) < 10_000
    assert "more characters" in session_pane(inspector)
    assert len(repr(inspector)) < 10_000


def test_closed_inspector_stops_following_the_store(session):
    inspector = Inspector(session)
    pane = inspector.tabs.children[0]
    before = pane.value
    inspector.close()
    session.patch_state(mode="agent")
    time.sleep(0.4)
    assert pane.value == before


# -- ClientDataPreview -----------------------------------------------------------------------------

def test_client_data_preview_marks_what_changed_since_the_last_update(session):
    preview = ClientDataPreview(session)
    assert preview.changed == set()
    assert 'class="fs-changed"' not in preview._pane.value
    assert preview.snapshot["client_data"]["session"]["message_count"] == 0
    session.run("chat", {"message": "hello"})
    assert wait_for(lambda: preview.changed == {"session.message_count"}, timeout=2.0), \
        preview.changed
    html = preview._pane.value
    assert '<tr class="fs-changed"><td>session.message_count</td><td>1</td>' in html
    assert '<tr><td>session.mode</td>' in html  # unchanged rows are not marked
    assert "1 changed since the last update" in html
    text = repr(preview)
    assert "* session.message_count = 1" in text and "  session.mode = \"chat\"" in text


def test_client_data_preview_shows_resource_client_data(session):
    preview = ClientDataPreview(session)
    session.run("save", {"title": "Plan", "body": "text", "theme": "dark"})
    assert wait_for(lambda: preview.snapshot["client_data"]["user"] == {"theme": "dark"} and
                    preview.snapshot["client_data"]["session"]["artifact_count"] == 1,
                    timeout=2.0)
    assert "session.resources.artifacts" in preview._pane.value
    assert "Plan" in preview._pane.value


# -- FlowRunner -----------------------------------------------------------------------------------

class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class FormInput(BaseModel):
    name: str = Field(min_length=1)
    level: Literal["low", "high"] = "high"
    color: Color = Color.BLUE
    urgent: bool = False
    count: int = 3
    ratio: float = 0.5
    tags: list[str] = Field(default_factory=list)
    size: Literal["s", "m"] | None = None
    note: str | None = None
    limit: int | None = None


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
    assert type(controls["name"]) is W.Text
    assert type(controls["level"]) is W.Dropdown
    assert list(controls["level"].options) == ["low", "high"]
    assert controls["level"].value == "high"
    assert type(controls["color"]) is W.Dropdown and controls["color"].value == "blue"
    assert type(controls["urgent"]) is W.Checkbox
    assert type(controls["count"]) is W.IntText and controls["count"].value == 3
    assert type(controls["ratio"]) is W.FloatText and controls["ratio"].value == 0.5
    assert type(controls["tags"]) is W.Textarea and controls["tags"].value == "[]"
    # optional fields can stay unset: a "(none)" choice, empty text, empty JSON
    assert type(controls["size"]) is W.Dropdown
    assert controls["size"].label == "(none)" and controls["size"].value is None
    assert type(controls["note"]) is W.Text and controls["note"].value == ""
    assert type(controls["limit"]) is W.Textarea and controls["limit"].value == ""
    assert list(runner.form.children) == list(controls.values())
    runner.action.value = "many"
    assert list(runner._controls) == ["n"] and type(runner._controls["n"][0]) is W.IntText


def test_flow_runner_run_button_shows_output_and_events(form_runner):
    runner, session = form_runner
    runner.set_input(name="Ada", level="low", color="red", urgent=True, count=7, ratio=1.5,
                     tags=["a", "b"])
    runner.run_button.click()
    assert runner.result is not None and runner.result.ok
    assert runner.result.output == {"name": "Ada", "level": "low", "color": "red",
                                    "urgent": True, "count": 7, "ratio": 1.5,
                                    "tags": ["a", "b"], "size": None, "note": None,
                                    "limit": None}
    assert "Ada" in runner.output.value and 'class="fs-error"' not in runner.output.value
    assert "session.increment v1" in runner.events.value
    assert "request form ok" in runner.events.value
    assert session.state.runs == 1
    assert runner.run_button.disabled is False
    assert "last output" in repr(runner) and "Ada" in repr(runner)
    runner.set_input(size="m", note="hi", limit=5)
    output = runner.run().output
    assert (output["size"], output["note"], output["limit"]) == ("m", "hi", 5)
    runner.set_input(size=None, note=None, limit=None)
    output = runner.run().output
    assert (output["size"], output["note"], output["limit"]) == (None, None, None)


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
    assert 'class="fs-error"' in runner.output.value
    assert "RuntimeError" in runner.output.value and "the block broke" in runner.output.value
    assert "request boom error" in runner.events.value


@pytest.mark.parametrize("bad", [dict(name=""), dict(name="Ada", tags="not json")],
                         ids=["refused-by-the-model", "not-json"])
def test_flow_runner_shows_invalid_input_inline_and_runs_nothing(form_runner, store, bad):
    runner, session = form_runner
    if bad.get("tags") == "not json":
        runner.set_input(name="Ada")
        runner._controls["tags"][0].value = "[not json"
    else:
        runner.set_input(**bad)
    before = fingerprint(store)
    assert runner.run() is None
    assert 'class="fs-error"' in runner.output.value
    assert ("name" if "name" in bad and not bad["name"] else "tags") in runner.output.value
    assert fingerprint(store) == before
    assert session.runs() == [] and runner.result is None


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


# -- History --------------------------------------------------------------------------------------

def test_history_lists_versions_diffs_two_and_restores_an_old_state(session):
    session.patch_state(mode="agent")
    session.inc_state(message_count=2)
    session.inc_state(message_count=3)
    history = History(session)
    assert list(history.newer.options) == [3, 2, 1]
    assert (history.older.value, history.newer.value) == (2, 3)
    table = history._table.value
    for version in ("v3", "v2", "v1"):
        assert f"<td>{version}</td>" in table
    assert "~ message_count: 2 -&gt; 5" in history._diff.value
    history.older.value = 1
    assert "~ message_count: 0 -&gt; 5" in history._diff.value
    text = repr(history)
    assert text.startswith("History of session 's1'\n") and "v3" in text and "increment" in text
    assert history.restore(1) is True
    assert session.version == 4
    assert session.state_dict() == {"mode": "agent", "message_count": 0}
    assert session.history(limit=1)[0].operation == "set"
    assert "restored v1" in history._message.value
    assert wait_for(lambda: list(history.newer.options) == [4, 3, 2, 1], timeout=2.0)
    assert history.restore(4) is False  # already that state: no new version
    assert session.version == 4


def test_history_restore_button_restores_the_from_version(session):
    session.patch_state(mode="agent")
    session.patch_state(mode="chat")
    history = History(session)
    history.older.value = 1
    history.restore_button.click()
    assert session.state.mode == "agent" and session.version == 3


def test_history_of_a_resource_and_an_empty_history(session):
    empty = History(session.resources["artifacts"])
    assert list(empty.newer.options) == []
    assert repr(empty).startswith("History")
    assert "no versions" in repr(empty)
    session.resources["artifacts"].push_state("titles", "a")
    session.resources["artifacts"].push_state("titles", "b")
    assert wait_for(lambda: list(empty.newer.options) == [2, 1], timeout=2.0)
    assert '~ titles: ["a"] -&gt; ["a","b"]' in empty._diff.value or \
        "titles" in empty._diff.value


# -- text forms ------------------------------------------------------------------------------------

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
