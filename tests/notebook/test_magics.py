"""``%load_ext flowstate_jupyter``, ``%state``, ``%flow`` and ``%%flow`` in an InteractiveShell.

Every verb does what docs/guide.md, 'In a notebook', says; every refusal is one ``UsageError`` line
naming the field and what was expected, and leaves the store exactly as it was (records, history,
change log).
"""

from __future__ import annotations

import pytest
from _nbtools import GUIDE_CELL, fingerprint
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

import flowstate_jupyter as fs
from flowstate_jupyter.errors import StoreError
from flowstate_jupyter.notebook import (
    ClientDataPreview,
    FlowRunner,
    History,
    Inspector,
    kernel_state,
)
from flowstate_jupyter.notebook.magics import FlowStateMagics


def state(ip, line):
    return ip.run_line_magic("state", line)


def flow(ip, line):
    return ip.run_line_magic("flow", line)


def shown(captured) -> str:
    """Everything a cell showed: printed text plus the text and HTML of displayed objects."""
    parts = [captured.stdout]
    for output in captured.outputs:
        parts += [output.data.get("text/plain", ""), output.data.get("text/html", "")]
    return "\n".join(parts)


# -- loading -------------------------------------------------------------------------------------

def test_load_ext_opens_the_configured_store_as_the_configured_user_and_session(ip, db_path):
    ip.run_line_magic("load_ext", "flowstate_jupyter")
    kernel = kernel_state(ip)
    assert str(db_path) in kernel.store.url
    assert (kernel.user, kernel.session_id, kernel.project) == ("alice", "nb1", "default")
    assert kernel.current_flow is None
    assert ip.find_line_magic("state") is not None and ip.find_cell_magic("flow") is not None


def test_without_flowstate_store_the_store_is_under_the_notebook_folder(ip, tmp_path,
                                                                        monkeypatch):
    monkeypatch.delenv("FLOWSTATE_STORE")
    ip.run_line_magic("load_ext", "flowstate_jupyter")
    state(ip, "set session.seen true")
    assert (tmp_path / ".flowstate" / "flowstate.db").is_file()


def test_without_a_flow_state_is_free_form_json(ip):
    ip.run_line_magic("load_ext", "flowstate_jupyter")
    state(ip, 'set session.notes {"draft": {"title": "x"}}')
    state(ip, 'set session.notes.draft.title "y"')
    state(ip, "set session.tags.first 1")
    assert state(ip, "get session") == {"notes": {"draft": {"title": "y"}}, "tags": {"first": 1}}
    state(ip, "del session.notes.draft.title")
    assert state(ip, "get session.notes") == {"draft": {}}


def test_without_a_flow_state_shows_plain_scopes_and_flow_asks_for_one(ip):
    ip.run_line_magic("load_ext", "flowstate_jupyter")
    state(ip, "set session.count 2")
    inspector = state(ip, "")
    assert isinstance(inspector, Inspector) and "count=2" in repr(inspector)
    assert isinstance(state(ip, "client"), ClientDataPreview)
    for line in ("ui", "run chat", "show"):
        with pytest.raises(UsageError, match="no flow yet"):
            flow(ip, line)
    assert flow(ip, "list").rows == []
    assert flow(ip, "runs").rows == []


# -- %%flow --------------------------------------------------------------------------------------

def test_flow_cell_registers_the_last_expression_binds_it_and_shows_its_summary(ip):
    ip.run_line_magic("load_ext", "flowstate_jupyter")
    with capture_output() as captured:
        result = ip.run_cell_magic("flow", "assistant", GUIDE_CELL)
    assert result is None
    registered = ip.user_ns["assistant"]
    assert isinstance(registered, fs.Flow) and registered.kind == "assistant"
    kernel = kernel_state(ip)
    assert kernel.flows == {"assistant": registered} and kernel.current_flow == "assistant"
    text = shown(captured)
    # the summary: actions, merged scope fields, resources, client data keys
    for word in ("chat", "save", "message_count", "artifacts", "preferences", "artifact_count"):
        assert word in text, f"{word!r} missing from the %%flow summary:\n{text}"


def test_flow_cell_registers_the_one_flow_the_cell_bound_to_a_name(ip):
    ip.run_line_magic("load_ext", "flowstate_jupyter")
    cell = GUIDE_CELL.replace("\nmake_flow()", "\nguide = make_flow()\nanswer = 42")
    with capture_output():
        ip.run_cell_magic("flow", "helper", cell)
    assert ip.user_ns["helper"] is ip.user_ns["guide"]
    assert ip.user_ns["answer"] == 42  # the cell ran in the user namespace
    assert kernel_state(ip).current_flow == "helper"


def test_flow_cell_with_several_new_flows_is_a_usage_error_and_registers_nothing(ip):
    ip.run_line_magic("load_ext", "flowstate_jupyter")
    cell = GUIDE_CELL.replace("\nmake_flow()", "\none = make_flow()\ntwo = make_flow()")
    with pytest.raises(UsageError) as info:
        ip.run_cell_magic("flow", "assistant", cell)
    message = str(info.value)
    assert "one" in message and "two" in message and "\n" not in message
    assert kernel_state(ip).flows == {} and "assistant" not in ip.user_ns


def test_flow_cell_without_a_flow_is_a_usage_error(ip):
    ip.run_line_magic("load_ext", "flowstate_jupyter")
    with pytest.raises(UsageError, match="no flow"):
        ip.run_cell_magic("flow", "assistant", "x = 1\n")
    with pytest.raises(UsageError, match="identifier"):
        ip.run_cell_magic("flow", "not a name", GUIDE_CELL)
    assert kernel_state(ip).flows == {}


# -- %state: reading -------------------------------------------------------------------------------

def test_state_get_reads_fields_scopes_resources_and_list_items(nb):
    assert state(nb, "get session.mode") == "chat"
    assert state(nb, "get mode") == "chat"  # the scope defaults to session
    assert state(nb, "get session") == {"mode": "chat", "message_count": 0}
    assert state(nb, "get user.resources.preferences.theme") == "light"
    state(nb, 'set session.resources.artifacts.titles ["a", "b"]')
    assert state(nb, "get session.resources.artifacts") == {"titles": ["a", "b"],
                                                             "last_saved": None}
    assert state(nb, "get session.resources.artifacts.titles.1") == "b"


def test_assigning_state_get_binds_the_value(nb):
    state(nb, "set session.mode agent")
    result = nb.run_cell("x = %state get session.mode")
    assert result.success
    assert nb.user_ns["x"] == "agent"


def test_bare_state_returns_a_live_inspector_of_the_current_session(nb):
    state(nb, "inc session.message_count 7")
    inspector = state(nb, "")
    assert isinstance(inspector, Inspector)
    assert "message_count=7" in repr(inspector)
    assert inspector.scopes[0]["id"] == "nb1"
    assert inspector.scopes[0]["state"]["message_count"] == 7


def test_state_client_returns_a_client_data_preview(nb):
    preview = state(nb, "client")
    assert isinstance(preview, ClientDataPreview)
    assert preview.snapshot["client_data"]["session"] == {"mode": "chat", "message_count": 0,
                                                          "artifact_count": 0}
    assert "session.mode" in repr(preview)


def test_state_path_returns_this_notebooks_windmill_state_path(nb):
    from flowstate_jupyter.windmill import get_state_path
    path = state(nb, "path")
    assert path == get_state_path()
    assert "alice" in path


# -- %state: writing -------------------------------------------------------------------------------

def test_state_set_writes_fields_resource_fields_and_whole_scopes(nb):
    with capture_output() as captured:
        state(nb, 'set session.mode "agent"')
    assert "session.mode: v1" in captured.stdout
    state(nb, "set user.resources.preferences.theme dark")  # a bare word is a string
    state(nb, 'set session {"message_count": 3}')  # missing fields take defaults
    kernel = kernel_state(nb)
    s = kernel.flow().session("nb1", user="alice", store=kernel.store)
    assert s.state_dict() == {"mode": "chat", "message_count": 3}
    assert s.user.resources["preferences"].state.theme == "dark"


def test_state_patch_merges_into_scopes_and_resources(nb):
    state(nb, 'patch session {"mode": "agent"}')
    state(nb, 'patch user.resources.preferences {"language": "fr"}')
    assert state(nb, "get session") == {"mode": "agent", "message_count": 0}
    assert state(nb, "get user.resources.preferences") == {"theme": "light", "language": "fr"}


def test_state_inc_adds_one_or_the_given_amount(nb):
    state(nb, "inc session.message_count")
    state(nb, "inc session.message_count 4")
    assert state(nb, "get session.message_count") == 5


def test_state_push_appends_to_a_list_field(nb):
    state(nb, 'push session.resources.artifacts.titles "first"')
    state(nb, "push session.resources.artifacts.titles second")
    assert state(nb, "get session.resources.artifacts.titles") == ["first", "second"]


def test_state_del_resets_a_field_to_its_default_and_deletes_a_resource(nb):
    state(nb, "set session.mode agent")
    state(nb, "del session.mode")
    assert state(nb, "get session.mode") == "chat"
    state(nb, "set user.resources.preferences.theme dark")
    with capture_output() as captured:
        state(nb, "del user.resources.preferences")
    assert "deleted" in captured.stdout
    store = kernel_state(nb).store
    assert store.read("user", "alice", "preferences").deleted
    assert state(nb, "get user.resources.preferences.theme") == "light"


def test_state_history_opens_the_history_widget_and_table_lists_versions(nb):
    state(nb, "set session.mode agent")
    state(nb, "inc session.message_count")
    history = state(nb, "history session")
    assert isinstance(history, History)
    assert [row[0] for row in history.rows] == [2, 1]
    assert isinstance(state(nb, "history user.resources.preferences"), History)
    table = state(nb, "history session --table")
    assert [row[0] for row in table.rows] == ["v2", "v1"]
    assert [row[2] for row in table.rows] == ["increment", "patch"]
    assert table.rows[0][3] == {"mode": "agent", "message_count": 1}
    assert len(state(nb, "history session --table --limit 1").rows) == 1
    html = table._repr_html_()
    assert "v2" in repr(table) and '<table class="fs-table">' in html
    # values as JSON, plain strings unquoted
    assert "<td>increment</td>" in html and "&quot;increment&quot;" not in html
    assert "&quot;mode&quot;: &quot;agent&quot;" in html
    with pytest.raises(UsageError, match="--table goes with history"):
        state(nb, "sessions --table")


def test_tables_read_as_tables_strings_unquoted_values_not_double_encoded(nb):
    with capture_output():
        flow(nb, 'run save {"title": "plan"}')
    runs = flow(nb, "runs")
    html = runs._repr_html_()
    assert "<td>save</td>" in html and "<td>ok</td>" in html
    assert "&quot;saved&quot;: &quot;plan&quot;" in html
    assert "\\&quot;" not in html and '\\"' not in html  # the output is not JSON of JSON
    assert runs.rows[0][5] == {"saved": "plan"}
    text = repr(runs)
    assert '{"saved": "plan"}' in text and '\\"' not in text
    sessions = state(nb, "sessions")._repr_html_()
    assert "<td>nb1</td>" in sessions and "<td>alice</td>" in sessions
    listing = flow(nb, "list")._repr_html_()
    assert "<td>assistant</td>" in listing and "the current flow" in listing
    with capture_output() as captured:
        flow(nb, "show")
    summary = shown(captured)
    assert "path f/flows/assistant" in summary and "f/flows/assistantactions" not in summary
    assert '<table class="fs-table">' in summary



def test_state_diff_shows_a_field_level_diff(nb):
    state(nb, "set session.mode agent")
    state(nb, "inc session.message_count 2")
    with capture_output() as captured:
        state(nb, "diff 1 2 session")
    assert captured.stdout.splitlines() == ["session v1 -> v2", "~ message_count: 0 -> 2"]
    with capture_output() as captured:
        state(nb, "diff v0 v2")
    assert '~ mode: "chat" -> "agent"' not in captured.stdout  # v0 is "nothing yet"
    assert "+ mode = \"agent\"" in captured.stdout


def test_state_undo_restores_the_previous_version_as_a_new_version(nb):
    state(nb, "set session.mode agent")
    state(nb, "inc session.message_count 3")
    with capture_output() as captured:
        state(nb, "undo session")
    assert "restored v1 as v3" in captured.stdout
    assert state(nb, "get session") == {"mode": "agent", "message_count": 0}
    store = kernel_state(nb).store
    assert store.read("session", "nb1").version == 3


def test_state_reset_puts_a_scope_back_to_its_defaults(nb):
    state(nb, 'patch session {"mode": "agent", "message_count": 9}')
    state(nb, "reset session")
    assert state(nb, "get session") == {"mode": "chat", "message_count": 0}
    assert len(state(nb, "history").rows) == 2  # a new version, history kept


def test_state_use_switches_session_and_sessions_lists_them(nb):
    state(nb, "set session.mode agent")
    with capture_output() as captured:
        state(nb, "use --session s2")
    assert "session 's2'" in captured.stdout
    assert state(nb, "get session.mode") == "chat"  # a new session
    table = state(nb, "sessions")
    assert {row[0] for row in table.rows} == {"nb1", "s2"}
    assert all(row[1] == "alice" and row[2] == "assistant" for row in table.rows)
    state(nb, "use --session nb1 --flow assistant")
    assert state(nb, "get session.mode") == "agent"


def test_values_that_look_like_options_stay_inside_json(nb):
    flow(nb, 'run chat {"message": "hi --session elsewhere --user bob"}')
    assert nb.user_ns["_"].output["reply"] == "chat: hi --session elsewhere --user bob"
    assert nb.user_ns["_"].session_id == "nb1"
    state(nb, 'set session.resources.artifacts.last_saved "a --flow b"')
    assert state(nb, "get session.resources.artifacts.last_saved") == "a --flow b"


# -- refusals --------------------------------------------------------------------------------------

REFUSALS = [
    # (line, words the one-line message must contain)
    ('set session.message_count "many"', ["message_count", "int"]),
    ("set session.message_count 1.5", ["message_count", "int"]),
    ('set session.mode "robot"', ["mode", "Literal['chat', 'agent']"]),
    ('patch session {"mode": "robot"}', ["mode", "Literal['chat', 'agent']"]),
    ('set user.resources.preferences.theme "blue"', ["theme", "Literal['light', 'dark']"]),
    ("set session.resources.artifacts.last_saved 5", ["last_saved", "str"]),
    ("push session.resources.artifacts.titles 5", ["titles", "str"]),
    ('set session.mdoe "chat"', ["mdoe", "did you mean 'mode'"]),
    ("set session.nope.deeper 1", ["nope", "unknown field"]),
    ("set session.mode {oops", ["session.mode", "JSON"]),
    ("set session.message_count NaN", ["message_count", "NaN"]),
    ("inc session.mode", ["mode", "number"]),
    ('inc session.message_count "x"', ["session.message_count", "number"]),
    ("push session.mode 1", ["mode", "list"]),
    ("patch session [1]", ["patch", "object"]),
    ("frob session.mode", ["frob", "get"]),
    ("get", ["PATH"]),
    ("set session.mode", ["session.mode", "VALUE"]),
    ("get session.nope", ["nope", "mode"]),
    ("del session.nope", ["nope"]),
    ("set session.resources.plan.steps []", ["plan", "artifacts"]),
    ("get session..mode", ["empty segment"]),
    ("use --user bob", ["nb1", "alice", "bob"]),
    ("use --flow nothere", ["nothere", "assistant"]),
    ("get request.trace", ["request", "session"]),
    ("diff 1", ["V1 V2"]),
    ("diff 1 99", ["99"]),
]


@pytest.mark.parametrize("line,words", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_a_refused_command_is_one_usage_error_line_and_writes_nothing(nb, line, words):
    state(nb, "set session.mode agent")  # some state, so that "unchanged" means something
    state(nb, 'push session.resources.artifacts.titles "kept"')
    kernel = kernel_state(nb)
    before = fingerprint(kernel.store)
    where = (kernel.current_flow, kernel.session_id, kernel.user, kernel.project)
    with pytest.raises(UsageError) as info:
        state(nb, line)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert fingerprint(kernel.store) == before
    assert (kernel.current_flow, kernel.session_id, kernel.user, kernel.project) == where


def test_use_with_another_users_session_is_refused_and_keeps_the_kernel_state(nb):
    kernel = kernel_state(nb)
    kernel.flow().session("bobs", user="bob", store=kernel.store)
    state(nb, "set session.mode agent")
    before = fingerprint(kernel.store)
    with pytest.raises(UsageError) as info:
        state(nb, "use --session bobs")
    assert "'bob'" in str(info.value) and "bobs" in str(info.value)
    assert (kernel.session_id, kernel.user, kernel.current_flow) == ("nb1", "alice", "assistant")
    assert fingerprint(kernel.store) == before
    assert state(nb, "get session.mode") == "agent"


def test_a_write_to_a_read_only_resource_is_refused(nb):
    cell = GUIDE_CELL.replace("\nmake_flow()", """
import flowstate_jupyter as fs
from pydantic import BaseModel
class Limits(BaseModel):
    max_tokens: int = 100
limits = fs.define_resource(state=Limits, writable=False)
@fs.handler(session_resources={"limits": limits})
def read_limits(input, ctx):
    return ctx.session.resources.limits.state.max_tokens
fs.define_flow(kind="limited", actions={"read": read_limits})
""")
    with capture_output():
        nb.run_cell_magic("flow", "limited", cell)
    state(nb, "use --session lim1")
    kernel = kernel_state(nb)
    before = fingerprint(kernel.store)
    with pytest.raises(UsageError) as info:
        state(nb, "set session.resources.limits.max_tokens 5")
    assert "limits" in str(info.value) and "read-only" in str(info.value)
    assert fingerprint(kernel.store) == before
    assert state(nb, "get session.resources.limits.max_tokens") == 100


def test_a_refused_write_to_a_new_collection_instance_creates_nothing(nb):
    cell = GUIDE_CELL.replace("\nmake_flow()", """
import flowstate_jupyter as fs
from pydantic import BaseModel
class FileInfo(BaseModel):
    size: int = 0
    tags: list[str] = []
files = fs.define_resource_collection(pattern="**", state=FileInfo)
@fs.handler(session_resources={"files": files})
def stat(input, ctx):
    return ctx.session.resources.files.list()
fs.define_flow(kind="files", actions={"stat": stat})
""")
    with capture_output():
        nb.run_cell_magic("flow", "files", cell)
    state(nb, "use --session f1")
    kernel = kernel_state(nb)
    before = fingerprint(kernel.store)
    with pytest.raises(UsageError) as info:
        state(nb, 'set session.resources.files[docs/a.md].size "big"')
    assert "size" in str(info.value) and "int" in str(info.value)
    assert fingerprint(kernel.store) == before
    assert state(nb, "get session.resources.files") == []
    # a valid write creates the instance in one version
    state(nb, "set session.resources.files[docs/a.md].size 3")
    state(nb, "push session.resources.files[docs/b.md].tags new")
    assert state(nb, "get session.resources.files") == ["docs/a.md", "docs/b.md"]
    assert state(nb, "get session.resources.files[docs/a.md]") == {"size": 3, "tags": []}
    assert state(nb, "get session.resources.files[docs/b.md].tags") == ["new"]
    assert kernel.store.read("session", "f1", "files:docs/a.md").version == 1


def test_traceback_flag_raises_the_real_exception_instead_of_a_usage_error(nb):
    state(nb, "set session.mode agent")
    store = kernel_state(nb).store
    before = fingerprint(store)
    with pytest.raises(fs.ValidationError) as info:
        state(nb, '-t set session.mode "robot"')
    assert not isinstance(info.value, UsageError)
    with pytest.raises(fs.UnknownActionError):
        flow(nb, '-t run chatt {"message": "hi"}')
    assert fingerprint(store) == before


# -- %flow -----------------------------------------------------------------------------------------

def test_flow_run_shows_output_events_and_changed_client_data_and_sets_underscore(nb):
    with capture_output() as captured:
        returned = flow(nb, 'run chat {"message": "hi"}')
    assert returned is None
    result = nb.user_ns["_"]
    assert isinstance(result, fs.RunResult) and result.ok
    assert result.output == {"reply": "chat: hi", "count": 1}
    text = shown(captured)
    assert "chat: hi" in text
    assert "session.increment v1" in text  # the event timeline
    assert "session.message_count = 1" in text  # client data that changed
    assert "session.mode =" not in text  # ... and only that
    assert state(nb, "get session.message_count") == 1


def test_flow_run_with_session_and_user_options_runs_elsewhere(nb):
    with capture_output():
        flow(nb, 'run save {"title": "Plan", "theme": "dark"} --session s9 --user bob')
    result = nb.user_ns["_"]
    assert (result.session_id, result.user) == ("s9", "bob")
    store = kernel_state(nb).store
    assert store.read("user", "bob", "preferences").state["theme"] == "dark"
    assert store.read("user", "alice", "preferences") is None
    assert kernel_state(nb).session_id == "nb1"  # options apply to this run only


def test_flow_run_refuses_bad_input_and_unknown_actions_without_writing(nb):
    state(nb, "inc session.message_count")
    store = kernel_state(nb).store
    before = fingerprint(store)
    with pytest.raises(UsageError) as info:
        flow(nb, 'run chat {"message": 3}')
    assert "message" in str(info.value) and "str" in str(info.value)
    with pytest.raises(UsageError, match="did you mean 'chat'"):
        flow(nb, "run chatt")
    with pytest.raises(UsageError, match="not JSON"):
        flow(nb, "run chat {nope")
    with pytest.raises(UsageError, match="unknown %flow verb"):
        flow(nb, "jump")
    with pytest.raises(UsageError):
        flow(nb, "")
    assert fingerprint(store) == before


def test_flow_list_show_runs_and_ui(nb):
    table = flow(nb, "list")
    assert table.rows == [("* assistant", "assistant", "chat, save")]
    with capture_output() as captured:
        flow(nb, "show assistant")
    assert "message_count" in shown(captured)
    with capture_output():
        flow(nb, 'run chat {"message": "one"}')
    request_id = nb.user_ns["_"].request_id
    runs = flow(nb, "runs")
    assert [(r[0], r[1], r[2]) for r in runs.rows] == [(request_id, "chat", "ok")]
    runner = flow(nb, "ui")
    assert isinstance(runner, FlowRunner)
    assert list(runner.action.options) == ["chat", "save"]
    assert runner.session.id == "nb1"
    with pytest.raises(UsageError, match="no flow named 'other'"):
        flow(nb, "show other")


def test_flow_run_refuses_unknown_input_keys_unless_the_model_allows_extras(nb):
    state(nb, "get session")  # the session exists before the refused run
    store = kernel_state(nb).store
    before = fingerprint(store)
    with pytest.raises(UsageError, match="unknown field 'titel'; did you mean 'title'"):
        flow(nb, 'run save {"titel": "typo"}')
    assert fingerprint(store) == before
    cell = GUIDE_CELL.replace("\nmake_flow()", """
import flowstate_jupyter as fs
from pydantic import BaseModel, ConfigDict
class Loose(BaseModel):
    model_config = ConfigDict(extra="allow")
    title: str
@fs.handler
def keep(input, ctx):
    return input.model_dump()
fs.define_flow(kind="loose", actions={"keep": fs.action(keep, input=Loose)})
""")
    with capture_output():
        nb.run_cell_magic("flow", "loose", cell)
    state(nb, "use --session l1")
    with capture_output():
        flow(nb, 'run keep {"title": "x", "extra": 1}')
    assert nb.user_ns["_"].output == {"title": "x", "extra": 1}


def test_flow_run_of_a_long_run_shows_its_progress_then_the_summary(nb, monkeypatch):
    from flowstate_jupyter.notebook import _show
    monkeypatch.setattr(_show, "in_kernel", lambda: True)  # show progress as in a notebook
    cell = GUIDE_CELL.replace("\nmake_flow()", """
import flowstate_jupyter as fs
from _nbtools import wait_for
shown = []
@fs.handler
def crunch(x, ctx):
    ctx.emit("message", {"step": x})
    # the run lasts until its progress has shown (or 20 s: then the test fails below)
    wait_for(lambda: shown, timeout=20.0, interval=0.05)
    return x * 2
fs.define_flow(kind="crunching", actions={"go": fs.sequencer("go").for_each(crunch)})
""")
    with capture_output():
        nb.run_cell_magic("flow", "crunching", cell)
    state(nb, "use --session c1")
    from flowstate_jupyter.notebook import _run_display
    original = _run_display.RunDisplay._show

    def spy(self, progress):
        original(self, progress)
        nb.user_ns["shown"].append(progress)
    monkeypatch.setattr(_run_display.RunDisplay, "_show", spy)
    with capture_output() as captured:
        flow(nb, "run go [1, 2, 3]")
    assert nb.user_ns["_"].output == [2, 4, 6]
    progress = nb.user_ns["shown"][0]
    assert progress["action"] == "go" and progress["elapsed"] > 0
    assert progress["block"] == "crunch" and progress["events"] >= 1
    texts = [o.data.get("text/plain", "") for o in captured.outputs]
    assert any("running go" in t and "now: crunch" in t for t in texts), texts
    # the summary replaced the progress in the same output (a display update)
    assert "output: [2, 4, 6]" in texts[-1]


def test_flow_run_shows_a_block_error_and_keeps_the_result(nb):
    cell = GUIDE_CELL.replace("\nmake_flow()", """
import flowstate_jupyter as fs
@fs.handler
def fail(input, ctx):
    raise KeyError("no such plan")
fs.define_flow(kind="failing", actions={"fail": fail})
""")
    with capture_output():
        nb.run_cell_magic("flow", "failing", cell)
    with capture_output() as captured:
        flow(nb, "run fail --session x1")
    result = nb.user_ns["_"]
    assert result.status == "error" and isinstance(result.error, KeyError)
    text = shown(captured)
    assert "error: KeyError" in text and "no such plan" in text
    assert 'class="fs-error"' in text


# -- unload / load ---------------------------------------------------------------------------------

def test_unload_closes_the_store_and_load_finds_the_same_state_and_flows(nb):
    state(nb, "set session.mode agent")
    old_store = kernel_state(nb).store
    nb.run_line_magic("unload_ext", "flowstate_jupyter")
    with pytest.raises(StoreError):
        old_store.read("session", "nb1")
    with pytest.raises(UsageError):
        state(nb, "get session.mode")  # the magic is gone
    nb.run_line_magic("load_ext", "flowstate_jupyter")
    kernel = kernel_state(nb)
    assert kernel.store is not old_store
    assert kernel.current_flow == "assistant" and "assistant" in kernel.flows
    assert state(nb, "get session.mode") == "agent"
    assert flow(nb, "list").rows[0][0] == "* assistant"


# -- help ------------------------------------------------------------------------------------------

def test_magic_help_shows_usage_and_every_verb():
    doc = FlowStateMagics.state.__doc__
    assert "%state [-t]" in doc  # the argparse usage line, as %state? shows it
    for verb in ("get", "set", "patch", "inc", "push", "del", "history", "diff", "undo",
                 "reset", "use", "sessions", "client", "path"):
        assert f"%state {verb}" in doc, verb
    flow_doc = FlowStateMagics.flow_line.__doc__
    assert "%flow [-t]" in flow_doc
    for verb in ("run", "list", "show", "runs", "ui"):
        assert f"%flow {verb}" in flow_doc, verb
    assert "%%flow NAME" in FlowStateMagics.flow_cell.__doc__


def test_pinfo_on_the_magic_prints_its_usage(nb):
    with capture_output() as captured:
        nb.run_line_magic("pinfo", "%state")
    assert "%state [-t]" in captured.stdout


def test_side_opens_the_view_in_a_side_panel_and_keeps_a_folded_snapshot(nb, monkeypatch):
    from sidecar import Sidecar

    from flowstate_jupyter.notebook import _show
    monkeypatch.setattr(_show, "in_kernel", lambda: True)
    with capture_output() as captured:
        assert state(nb, "--side") is None
    panel = _show._PANELS["flowstate · state"]
    assert isinstance(panel, Sidecar) and panel.anchor == "split-right"
    html = [o.data.get("text/html", "") for o in captured.outputs]
    assert any("fs-side-snapshot" in h and "open in the side panel" in h for h in html), html
    with capture_output():
        state(nb, "--side")  # again: the old panel is closed, a new one opens
    assert _show._PANELS["flowstate · state"] is not panel
    assert panel.comm is None  # closed
    with capture_output():
        state(nb, "client --side")
    assert "flowstate · client data" in _show._PANELS
    with pytest.raises(UsageError, match="--side opens a live view"):
        state(nb, "get session --side")
    for open_panel in list(_show._PANELS.values()):
        open_panel.close()
    _show._PANELS.clear()
