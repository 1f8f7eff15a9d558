"""A handle remembers the record it last wrote and writes on from it without reading first.

These tests make that memory stale on purpose (another store object, as another process
would, writes in between) and check that every operation still works on the stored record:
no lost update, no skipped write, and the error (or success) the stored state calls for.
"""

from __future__ import annotations

import pytest
from pydantic import BaseModel

import flowstate_jupyter as fs
from flowstate_jupyter.errors import ValidationError


class Counter(BaseModel):
    count: int = 0
    label: str = ""


@pytest.fixture
def two(shared_backend):
    """Two store objects on the same data, like two processes."""
    return shared_backend.open(), shared_backend.open()


def test_a_handle_that_missed_another_writer_increments_from_the_stored_value(two):
    mine = fs.ScopeHandle(two[0], "session", "s1", state=Counter)
    theirs = fs.ScopeHandle(two[1], "session", "s1", state=Counter)
    mine.inc_state(count=1)
    theirs.inc_state(count=10)
    mine.inc_state(count=1)
    assert (theirs.state.count, theirs.version) == (12, 3)
    assert [e.state["count"] for e in theirs.history()] == [12, 11, 1]


def test_a_write_equal_to_the_handles_last_state_is_not_skipped_after_another_writer(two):
    mine = fs.ScopeHandle(two[0], "session", "s1", state=Counter)
    theirs = fs.ScopeHandle(two[1], "session", "s1", state=Counter)
    mine.patch_state(label="a")
    theirs.patch_state(label="b")
    assert mine.patch_state(label="a") is True, "the stored label is 'b', so this is a change"
    assert (theirs.state.label, theirs.version) == ("a", 3)


def test_an_error_the_stale_state_would_raise_does_not_stand_if_the_stored_state_is_fine(two):
    mine = fs.ScopeHandle(two[0], "session", "s1")  # free-form: any JSON
    theirs = fs.ScopeHandle(two[1], "session", "s1")
    mine.set_state({"n": "text"})
    theirs.set_state({"n": 1})
    assert mine.inc_state(n=1) is True
    assert (theirs.state_dict(), theirs.version) == ({"n": 2}, 3)


def test_an_error_on_the_stored_state_stands_and_stores_nothing(two):
    mine = fs.ScopeHandle(two[0], "session", "s1")
    theirs = fs.ScopeHandle(two[1], "session", "s1")
    mine.set_state({"n": 1})
    theirs.set_state({"n": "text"})
    with pytest.raises(ValidationError, match="holds str"):
        mine.inc_state(n=1)
    assert (theirs.state_dict(), theirs.version) == ({"n": "text"}, 2)
    assert len(theirs.history(limit=None)) == 2


def test_a_write_made_inside_an_atomic_function_commits_together_with_it(store):
    main = fs.ScopeHandle(store, "session", "s1", state=Counter)
    side = fs.ScopeHandle(store, "session", "s2", state=Counter)
    main.inc_state(count=1)

    def bump_side_too(state: Counter) -> dict:
        side.inc_state(count=5)
        return {"count": state.count + 1}

    assert main.atomic_state(bump_side_too) is True
    assert (main.state.count, side.state.count) == (2, 5)

    def bump_side_then_fail(state: Counter) -> dict:
        side.inc_state(count=5)
        return {"count": "not a number"}

    with pytest.raises(ValidationError):
        main.atomic_state(bump_side_then_fail)
    assert (main.state.count, main.version) == (2, 2)
    assert (side.state.count, side.version) == (5, 1), "the side write rolled back with it"


def test_an_interrupt_inside_an_atomic_function_leaves_nothing_open_or_half_written(two):
    main = fs.ScopeHandle(two[0], "session", "s1", state=Counter)
    side = fs.ScopeHandle(two[0], "session", "s2", state=Counter)
    main.inc_state(count=1)  # main now writes from what it last wrote

    def interrupted(state: Counter) -> dict:
        side.inc_state(count=5)  # a write of its own, then Ctrl-C
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        main.atomic_state(interrupted)
    other = fs.ScopeHandle(two[1], "session", "s2", state=Counter)
    other.inc_state(count=1)  # another connection can write at once: no lock left held
    assert (other.state.count, other.version) == (1, 1), "the side write was rolled back"
    assert main.inc_state(count=1) is True
    assert (main.state.count, main.version) == (2, 2)
