"""``%flow runs --status`` and ``%flow resume`` (docs/guide.md, 'In a notebook') in an
InteractiveShell.

A suspended run's ``%flow run`` output says how to resume it; ``%flow runs --status suspended``
lists it; ``%flow resume [REQUEST_ID] [VALUE_JSON]`` continues it (by default the session's
latest waiting run). Every refusal is one ``UsageError`` line and leaves the store as it was.
"""

from __future__ import annotations

import pytest
from _nbtools import GUIDE_CELL, fingerprint
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

import flowstate_jupyter as fs
from flowstate_jupyter.notebook import kernel_state


def flow(ip, line):
    return ip.run_line_magic("flow", line)


def shown(captured) -> str:
    parts = [captured.stdout]
    for output in captured.outputs:
        parts += [output.data.get("text/plain", ""), output.data.get("text/html", "")]
    return "\n".join(parts)

APPROVAL_CELL = GUIDE_CELL.replace("\nmake_flow()", """
import flowstate_jupyter as fs
from pydantic import BaseModel

class Approval(BaseModel):
    approved: bool
    note: str = ""

class Plans(BaseModel):
    decided: list[str] = []

@fs.handler(session_state=Plans)
def ask(topic, ctx):
    answer = ctx.suspend(Approval, message=f"approve {topic}?")
    ctx.session.push_state("decided", f"{topic}={answer.approved}")
    return answer.approved

fs.define_flow(kind="approvals", actions={"ask": ask})
""")


@pytest.fixture
def nb(ip):
    ip.run_line_magic("load_ext", "flowstate_jupyter")
    with capture_output():
        ip.run_cell_magic("flow", "approvals", APPROVAL_CELL)
    return ip


def test_a_suspended_run_says_how_to_resume_and_resume_continues_it(nb):
    with capture_output() as captured:
        flow(nb, 'run ask "launch"')
    suspended = nb.user_ns["_"]
    assert suspended.status == "suspended"
    text = shown(captured)
    assert "approve launch?" in text and f"%flow resume {suspended.request_id}" in text
    assert "approved" in text  # the fields the value needs
    waiting = flow(nb, "runs --status suspended")
    assert [(r[0], r[2]) for r in waiting.rows] == [(suspended.request_id, "suspended")]
    assert flow(nb, "runs --status ok").rows == []
    with capture_output() as captured:
        flow(nb, 'resume {"approved": true}')  # the session's latest waiting run
    result = nb.user_ns["_"]
    assert result.ok and result.request_id == suspended.request_id and result.output is True
    assert "output: true" in shown(captured).lower()
    assert [(r[0], r[2]) for r in flow(nb, "runs --status ok").rows] == \
        [(suspended.request_id, "ok")]


def test_resume_by_request_id_and_its_refusals_are_one_line_and_change_nothing(nb):
    with capture_output():
        flow(nb, 'run ask "a"')
    first = nb.user_ns["_"]
    store = kernel_state(nb).store
    before = fingerprint(store)
    with pytest.raises(UsageError, match="resume value for run") as info:
        flow(nb, f'resume {first.request_id} {{"approved": "maybe"}}')
    assert "\n" not in str(info.value)
    with pytest.raises(UsageError, match="no run 'r-nothing'"):
        flow(nb, 'resume r-nothing {"approved": true}')
    with pytest.raises(UsageError, match="not JSON"):
        flow(nb, f"resume {first.request_id} {{nope")
    with pytest.raises(UsageError, match="--status takes one of"):
        flow(nb, "runs --status waiting")
    assert fingerprint(store) == before
    with capture_output():
        flow(nb, f'resume {first.request_id} {{"approved": false}}')
    assert nb.user_ns["_"].output is False
    with pytest.raises(UsageError, match="is ok, not suspended"):
        flow(nb, f'resume {first.request_id} {{"approved": true}}')
    with pytest.raises(UsageError, match="has no suspended or interrupted run"):
        flow(nb, "resume")
    assert isinstance(nb.user_ns["_"], fs.RunResult)
