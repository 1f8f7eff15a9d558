"""Magic lines are data (docs/decisions.md, 'Magic lines are data'): no ``$name`` / ``{expr}``
expansion, JSON values only, and a trailing ``# comment`` is ignored.

Every line goes through ``ip.run_cell``, as typed in a notebook cell, so IPython's own input
transformation runs too.
"""

from __future__ import annotations

import pytest
from _helpers import fingerprint
from IPython.core.error import UsageError

from flowstate_jupyter.notebook import kernel_state


def cell(ip, source):
    """Run ``source`` as a cell; return its result (re-raising what the cell raised)."""
    result = ip.run_cell(source)
    result.raise_error()
    return result.result


@pytest.fixture
def free(ip):
    """The shell with the extension and no flow: free-form JSON state."""
    ip.run_line_magic("load_ext", "flowstate_jupyter")
    return ip


@pytest.fixture
def calls(ip):
    """A function in the notebook namespace that records every call: it must never run."""
    seen = []
    ip.user_ns["boom"] = lambda *a: seen.append(a) or "EXPANDED"
    ip.user_ns["secret"] = "s3cr3t"
    return seen


@pytest.mark.parametrize("text", [
    "{1+1}", "$secret", "{secret}", "{boom()}", "$boom", "{__import__('os').getpid()}",
    "a {boom()} b $secret c", "{{1+1}}", "$$secret",
])
def test_state_set_stores_braces_and_dollars_as_written_and_runs_nothing(free, calls, text):
    cell(free, f'%state set session.note "{text}"')
    assert cell(free, "%state get session.note") == text
    assert calls == []


def test_braces_and_dollars_inside_json_objects_and_lists_are_kept(free, calls):
    cell(free, '%state patch session {"a": "{boom()}", "b": ["$secret", "{1+1}"]}')
    assert cell(free, "%state get session") == {"a": "{boom()}", "b": ["$secret", "{1+1}"]}
    assert calls == []


def test_an_unquoted_expression_is_refused_as_not_json_and_runs_nothing(free, calls):
    store = kernel_state(free).store
    before = fingerprint(store)
    for line in ("%state set session.n {boom()}", "%state set session.n {1+1}",
                 "%state set session.n $secret", "%state inc session.n {1+1}"):
        with pytest.raises(UsageError) as info:
            cell(free, line)
        assert "JSON" in str(info.value) or "number" in str(info.value)
    assert calls == []
    assert fingerprint(store) == before


def test_flow_run_input_is_data(nb, calls):
    cell(nb, '%flow run chat {"message": "{boom()} and $secret"}')
    assert nb.user_ns["_"].output["reply"] == "chat: {boom()} and $secret"
    assert calls == []


def test_options_are_not_expanded_either(nb, calls):
    with pytest.raises(UsageError, match=r"\$secret"):
        cell(nb, "%state use --session $secret")
    with pytest.raises(UsageError, match="boom"):
        cell(nb, "%flow run chat {\"message\": \"x\"} --flow {boom()}")
    assert calls == []
    assert kernel_state(nb).session_id == "nb1"


def test_flow_cell_name_is_not_expanded(ip, calls):
    ip.run_line_magic("load_ext", "flowstate_jupyter")
    with pytest.raises(UsageError, match="identifier"):
        ip.run_cell_magic("flow", "{boom()}", "x = 1")
    assert calls == []


# -- comments ------------------------------------------------------------------------------------

def test_a_trailing_comment_is_ignored_as_in_the_readme(nb):
    cell(nb, '%state set session.mode "agent"      # refused writes are one UsageError line')
    assert cell(nb, "%state get session.mode  # read it back") == "agent"
    cell(nb, "%state inc session.message_count 2 # two more")
    cell(nb, "x = %state get session.message_count   # bind it")
    assert nb.user_ns["x"] == 2
    cell(nb, '%flow run chat {"message": "hi"}     # output, events, changed client data')
    assert nb.user_ns["_"].output["reply"] == "agent: hi"
    cell(nb, "%state use --session s2   # another conversation")
    assert kernel_state(nb).session_id == "s2"
    cell(nb, "%state set session.mode agent # a bare word, then a comment")
    assert cell(nb, "%state get session.mode") == "agent"


def test_a_hash_inside_a_json_string_or_a_bracket_is_data(free):
    cell(free, '%state set session.note "a # b"  # the comment goes, the string stays')
    assert cell(free, "%state get session.note") == "a # b"
    cell(free, '%state set session.tags ["#1", "# 2"]')
    assert cell(free, "%state get session.tags") == ["#1", "# 2"]
    cell(free, '%state set session.esc "quote \\" # still inside"')
    assert cell(free, "%state get session.esc") == 'quote " # still inside'


def test_a_hash_without_a_space_before_it_is_not_a_comment(free):
    store = kernel_state(free).store
    before = fingerprint(store)
    with pytest.raises(UsageError, match="not JSON"):
        cell(free, "%state set session.word a#b")
    assert fingerprint(store) == before


def test_a_line_that_is_only_a_comment_after_the_verb_asks_for_the_value(free):
    with pytest.raises(UsageError, match="VALUE"):
        cell(free, "%state set session.mode # nothing to set")


def test_flow_cell_name_may_carry_a_comment(ip):
    from _nbtools import GUIDE_CELL
    ip.run_line_magic("load_ext", "flowstate_jupyter")
    ip.run_cell_magic("flow", "assistant   # the guide's flow", GUIDE_CELL)
    assert kernel_state(ip).current_flow == "assistant"


# -- size ----------------------------------------------------------------------------------------

def test_an_80_kb_value_full_of_braces_and_dollars_round_trips(free, calls):
    """IPython's expansion was quadratic (60 s for 80 KB); the line is now read as it is."""
    text = ("{boom()} $secret {1+1} " * 4000)[:80_000]
    cell(free, f'%state set session.big "{text}"  # a comment after it')
    assert cell(free, "%state get session.big") == text
    assert calls == []
    cell(free, f"%state set session.items {list(range(10_000))}")
    assert cell(free, "%state get session.items") == list(range(10_000))


def test_a_value_nested_10000_deep_is_one_usage_error_and_writes_nothing(free):
    store = kernel_state(free).store
    cell(free, "%state set session.n 1")
    before = fingerprint(store)
    for value in ("[" * 10_000 + "]" * 10_000, '{"a":' * 10_000 + "1" + "}" * 10_000,
                  "[" * 250 + "]" * 250):
        with pytest.raises(UsageError) as info:
            cell(free, f"%state set session.deep {value}")
        assert "\n" not in str(info.value) and "nest" in str(info.value)
    assert fingerprint(store) == before
