"""``%flow graph``, the picture in the ``%%flow`` summary, ``%state compare`` and the parents in
``%state sessions`` (issue 16 §3-4), in an InteractiveShell with the guide flow."""

from __future__ import annotations

import pytest
from _nbtools import GUIDE_CELL, fingerprint
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

import flowstate_jupyter as fs
from flowstate_jupyter.model.graph import FlowGraph
from flowstate_jupyter.notebook import kernel_state
from flowstate_jupyter.notebook.magics import FlowStateMagics


def state(ip, line):
    return ip.run_line_magic("state", line)


def flow(ip, line):
    return ip.run_line_magic("flow", line)


def test_flow_cell_shows_the_summary_and_then_the_picture(ip):
    ip.run_line_magic("load_ext", "flowstate_jupyter")
    with capture_output() as captured:
        ip.run_cell_magic("flow", "assistant", GUIDE_CELL)
    summary, picture = captured.outputs
    assert "message_count" in summary.data["text/html"]
    assert picture.data["text/vnd.mermaid"].startswith("flowchart TD")
    assert "chat-pipeline" in picture.data["text/plain"]
    assert "mode-router" in picture.data["text/vnd.mermaid"]


def test_flow_graph_returns_the_picture_of_the_named_or_current_flow(nb):
    current = flow(nb, "graph")
    named = flow(nb, "graph assistant")
    assert isinstance(current, FlowGraph) and isinstance(named, FlowGraph)
    assert current.mermaid() == named.mermaid() == nb.user_ns["assistant"].graph().mermaid()
    assert {"chat", "chat/then[2]/mode-router/agent_reply", "save"} <= set(named.nodes)
    with pytest.raises(UsageError, match="no flow named 'other'"):
        flow(nb, "graph other")
    assert "%flow graph" in FlowStateMagics.flow_line.__doc__


def test_state_compare_shows_two_sessions_side_by_side(nb):
    assistant = nb.user_ns["assistant"]
    store = kernel_state(nb).store
    s1 = assistant.session("nb1", store=store)
    s1.patch_state(mode="agent")
    s1.fork("nb2").inc_state(message_count=3)
    comparison = state(nb, "compare nb1 nb2")
    assert [(c.path, c.old, c.new) for c in comparison.state] == [(("message_count",), 0, 3)]
    assert "fs-cmp-diff" in comparison._repr_html_()
    assert state(nb, "compare nb1 nb1").equal


@pytest.mark.parametrize("line, message", [
    ("compare nb1", "two session ids"),
    ("compare nb1 nb2 nb3", "two session ids"),
    ("compare nb1 ghost", "no session 'ghost'"),
    ("compare nb1 bad/id", "invalid session id"),
])
def test_state_compare_mistakes_are_one_line_and_create_nothing(nb, line, message):
    store = kernel_state(nb).store
    nb.user_ns["assistant"].session("nb1", store=store)
    before = fingerprint(store)
    with pytest.raises(UsageError, match=message) as info:
        state(nb, line)
    assert "\n" not in str(info.value)
    assert fingerprint(store) == before


def test_state_sessions_shows_what_each_session_was_forked_from(nb):
    assistant = nb.user_ns["assistant"]
    store = kernel_state(nb).store
    s1 = assistant.session("nb1", store=store)
    s1.patch_state(mode="agent")
    s1.fork("branch", at_version=1)
    table = state(nb, "sessions")
    assert table.header[-1] == "forked from"
    assert {row[0]: row[-1] for row in table.rows} == {"nb1": "", "branch": "nb1 @ v1"}


def test_compare_is_on_the_package_face():
    assert "compare" in fs.__all__ and fs.compare.__module__ == "flowstate_jupyter.flows.compare"
