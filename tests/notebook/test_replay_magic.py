"""``%flow replay [REQUEST_ID]`` (docs/guide.md, 'Replay a run with edited code') in an
InteractiveShell.

The notebook loop: run, edit the block in its cell, replay the last run — the diff shows what the
edit changes, the store stays as it was, and the step that did not change is reused. Each cell
the kernel runs starts a new fingerprint generation, so a run after an edit records fresh
fingerprints. Mistakes are one ``UsageError`` line and change nothing.
"""

from __future__ import annotations

import pytest
from _nbtools import fingerprint
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

import flowstate_jupyter as fs
from flowstate_jupyter.flows.fingerprint import generation
from flowstate_jupyter.notebook import kernel_state
from flowstate_jupyter.notebook.magics import FlowStateMagics

NOTES_CELL = """
import flowstate_jupyter as fs
from pydantic import BaseModel

class Notes(BaseModel):
    items: list[str] = []

@fs.handler
def tidy(value, ctx):
    return value.strip()

@fs.handler(session_state=Notes)
def note(value, ctx):
    ctx.session.push_state("items", value)
    return f"noted {value}"

fs.define_flow(kind="notes", actions={"note": fs.sequencer("note").then(tidy).then(note)},
               session=fs.scope(client_data={
                   "last": lambda c: c.state.items[-1] if c.state.items else None}))
"""

EDITED_CELL = NOTES_CELL.replace('push_state("items", value)', 'push_state("items", value.upper())')


def flow(ip, line):
    return ip.run_line_magic("flow", line)


@pytest.fixture
def nb(ip):
    ip.run_line_magic("load_ext", "flowstate_jupyter")
    with capture_output():
        ip.run_cell_magic("flow", "notes", NOTES_CELL)
    return ip


def test_flow_replay_shows_what_an_edited_block_changes_and_leaves_the_store_alone(nb):
    store = kernel_state(nb).store
    with capture_output():
        flow(nb, 'run note "  hi  "')
    run = nb.user_ns["_"]
    assert run.ok and run.output == "noted hi"
    with capture_output():
        nb.run_cell_magic("flow", "notes", EDITED_CELL)  # the edited block, re-registered
    before = fingerprint(store)

    with capture_output():
        replay = nb.run_cell("%flow replay").result  # what the cell shows
    assert isinstance(replay, fs.ReplayResult) and replay.request_id == run.request_id
    assert fingerprint(store) == before
    assert replay.reused == ["note/then[0]/tidy"]  # the same code in the new cell
    assert [(c.path, c.old, c.new) for c in replay.diff.state] == [
        (("session", "items", 0), "hi", "HI")]
    assert [(c.path, c.old, c.new) for c in replay.diff.client_data] == [
        (("session.last",), "hi", "HI")]
    assert replay.diff.output == []  # the output did not change
    shown, _ = nb.display_formatter.format(replay)
    page = shown["text/html"]
    assert "fs-cmp-diff" in page and "session.items" in page and "note/then[0]/tidy" in page
    assert shown["text/plain"].startswith(f"replay of run {run.request_id} (note)")

    named = flow(nb, f"replay {run.request_id}")
    assert named.request_id == run.request_id and named.diff.state == replay.diff.state
    assert fingerprint(store) == before


def test_each_cell_starts_a_new_fingerprint_generation(nb):
    now = generation()
    nb.run_cell("x = 1")
    nb.run_cell("y = 2")
    assert generation() == now + 2


@pytest.mark.parametrize("line, message", [
    ("replay", "has no ended run of flow 'notes'"),
    ("replay r-a r-b", "one request id at most"),
    ("replay bad/id", "invalid request id"),
    ("replay r-missing", "no run 'r-missing'"),
])
def test_flow_replay_mistakes_are_one_line_and_change_nothing(nb, line, message):
    store = kernel_state(nb).store
    before = fingerprint(store)
    with pytest.raises(UsageError, match=message) as info:
        flow(nb, line)
    assert "\n" not in str(info.value)
    assert fingerprint(store) == before
    assert "%flow replay" in FlowStateMagics.flow_line.__doc__
