"""Hostile ``%state`` and ``%flow run`` lines (issue 13 §7), in a real InteractiveShell.

Every line either works or raises a one-line ``UsageError``, and a refused line leaves the store
exactly as it was (records, versions, history, change log). See ``tests/_fuzz.py``; the tally of
outcomes is printed at the end (``pytest -s``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from _fuzz import FUZZ, SMALL_LOGS, TALLY, json_like, report, text
from _helpers import fingerprint
from hypothesis import given
from hypothesis import strategies as st


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    report()


# -- %state --------------------------------------------------------------------------------------

MAGIC_VALUES = ['"\\ud800"', '{"\\udfff": 1}', "[" * 10_000 + "]" * 10_000,
                '{"a":' * 5_000 + "1" + "}" * 5_000, "1" * 5_000, "1e400", "-1e400", "NaN",
                "Infinity", '"' + "x" * 2_000_000 + '"', "\ud800", '"\x00"', "{oops",
                '"{1+1}"', "$secret", "true", "null", "[1, 2]", '{"a": 1}', "'single'",
                "9" * 400, "0x10", '"a" # comment']
MAGIC_PATHS = ["session.count", "session.ratio", "session.name", "session.tags",
               "session.notes.k", "session.data", "session", "session.\ud800", "session..x",
               "session.resources.plan.name", "session.resources.files[files/a.md].data",
               "session.resources.files[files/../x].data", "session.resources.files[].x",
               "user.resources.nope.x", "session." + "a." * 500 + "b", "request.x",
               "session.tags.99999999999999999999", "session.tags.-1", "nope.x", "session.[x]"]


FLOW_CELL = """
import flowstate_jupyter as fs
from _fuzz import RESOURCES, Typed

@fs.handler(session_state=Typed)
def chat(input, ctx):
    ctx.session.inc_state(count=1)
    return {"echo": input}

fs.define_flow("fuzzed", {"chat": chat}, session=fs.scope(state=Typed, resources=RESOURCES))
"""


@pytest.fixture
def magic_shell(ip: Any, db_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    options = "&".join(f"{k}={v}" for k, v in SMALL_LOGS.items())
    monkeypatch.setenv("FLOWSTATE_STORE", f"sqlite:///{db_path}?{options}")
    ip.run_line_magic("load_ext", "flowstate_jupyter")
    ip.run_cell_magic("flow", "fuzzed", FLOW_CELL)
    ip.run_line_magic("state", "set session.count 1")
    return ip


def magic(shell: Any, name: str, line: str, kind: str) -> None:
    """Run ``%name line``: it works, or raises a one-line UsageError and changes nothing."""
    from IPython.core.error import UsageError

    from flowstate_jupyter.notebook import kernel_state

    store = kernel_state(shell).store
    before = fingerprint(store)
    try:
        shell.run_line_magic(name, line)
    except UsageError as exc:
        message = str(exc)
        assert "\n" not in message and len(message) < 4000, message[:300]
        assert fingerprint(store) == before, f"%{name} {line[:200]!r} changed the store"
        TALLY[kind]["UsageError"] += 1
    else:
        TALLY[kind]["ok"] += 1


VERBS = ["set", "patch", "inc", "push", "del", "get", "history", "diff", "undo",
         "use --session", "use --user", "frob"]


def test_every_hostile_value_and_path_in_every_state_verb(magic_shell):
    for verb in VERBS:
        for value in MAGIC_VALUES:
            magic(magic_shell, "state", f"{verb} session.data {value}", f"%state {verb}")
        for path in MAGIC_PATHS:
            magic(magic_shell, "state", f"{verb} {path} 1", f"%state {verb}")


def test_every_hostile_input_and_option_in_flow_run(magic_shell):
    for value in MAGIC_VALUES:
        magic(magic_shell, "flow", f"run chat {value}", "%flow run")
    for option in FLOW_OPTIONS:
        magic(magic_shell, "flow", f"run chat 1 {option}", "%flow run")


@FUZZ
@given(verb=st.sampled_from(VERBS),
       path=st.one_of(st.sampled_from(MAGIC_PATHS), text),
       value=st.one_of(st.sampled_from(MAGIC_VALUES), text,
                       json_like.map(lambda v: json.dumps(v, allow_nan=True)
                                     if _dumpable(v) else "x")))
def test_state_lines(magic_shell, verb, path, value):
    magic(magic_shell, "state", f"{verb} {path} {value}", f"%state {verb}")


FLOW_OPTIONS = ["", "--session \ud800", "--user ../x", "--flow nope", "--session s2",
                "--user " + "u" * 300, "--session $secret", "--flow {boom()}"]


@FUZZ
@given(action=st.one_of(st.sampled_from(["chat", "nope"]), text),
       value=st.one_of(st.sampled_from(MAGIC_VALUES), text),
       option=st.sampled_from(FLOW_OPTIONS))
def test_flow_run_lines(magic_shell, action, value, option):
    magic(magic_shell, "flow", f"run {action} {value} {option}", "%flow run")


def _dumpable(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        return False
    return True
