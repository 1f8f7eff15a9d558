"""Scope-state handles: every operation of docs/concepts.md, 'State operations', its return value,
events and refusals."""

from __future__ import annotations

import warnings
from typing import Literal

import pytest
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

import flowstate_jupyter as fs


class ModeState(BaseModel):
    mode: Literal["chat", "agent"] = "chat"
    message_count: int = 0
    tags: list[str] = []
    notes: dict[str, str] = {}
    score: float = 0.0


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    s = fs.open_store("memory://" if request.param == "memory"
                      else f"sqlite:///{tmp_path}/state.db")
    yield s
    s.close()


@pytest.fixture
def session(store):
    return fs.ScopeHandle(store, "session", "s1", state=ModeState)


@pytest.fixture
def events(store):
    seen: list[dict] = []
    store.subscribe(seen.append)
    return seen


def _stored(store):
    """Everything a refused write must leave alone: record, history, change log."""
    record = store.read("session", "s1")
    return (record and (record.version, record.state), len(store.history("session", "s1")),
            len(store.changes()))


def test_state_starts_from_defaults_at_version_zero(session):
    assert session.version == 0
    assert session.state == ModeState()
    assert session.state.mode == "chat"


def test_state_snapshot_is_read_only(session):
    with pytest.raises(PydanticValidationError, match="frozen"):
        session.state.mode = "agent"


def test_patch_state_commits_and_returns_true_then_false_when_nothing_changes(session, events):
    assert session.patch_state(mode="agent") is True
    assert session.version == 1
    assert session.patch_state(mode="agent") is False  # the no-op guard
    assert session.version == 1
    assert len(events) == 1


def test_patch_state_to_the_defaults_of_a_never_written_scope_stores_nothing(session, store):
    assert session.patch_state(mode="chat", message_count=0) is False
    assert store.read("session", "s1") is None
    assert session.version == 0


def test_patch_state_accepts_a_dict_a_model_and_keywords(session):
    session.patch_state({"mode": "agent"}, message_count=2)
    assert (session.state.mode, session.state.message_count) == ("agent", 2)
    session.patch_state(ModeState(tags=["x"]))  # only the fields set on the instance
    assert session.state.tags == ["x"]
    assert session.state.mode == "agent"


def test_set_state_replaces_the_whole_state_and_missing_fields_take_defaults(session):
    session.patch_state(mode="agent", message_count=5)
    assert session.set_state({"message_count": 1}) is True
    assert session.state == ModeState(message_count=1)
    assert session.set_state(ModeState(message_count=1)) is False


def test_inc_state_adds_numbers_and_treats_a_missing_field_as_zero(session, events):
    assert session.inc_state(message_count=2) is True
    assert session.inc_state({"message_count": 3, "score": 0.5}) is True
    assert session.state.message_count == 5
    assert session.state.score == 0.5
    assert events[-1]["operation"] == "increment"
    assert events[-1]["delta"] == {"message_count": 3, "score": 0.5}


def test_inc_state_by_zero_is_a_no_op(session):
    session.inc_state(message_count=1)
    assert session.inc_state(message_count=0) is False
    assert session.version == 1


def test_push_state_appends_to_a_list(session, events):
    assert session.push_state("tags", "a") is True
    assert session.push_state("tags", "b") is True
    assert session.state.tags == ["a", "b"]
    assert (events[-1]["operation"], events[-1]["path"], events[-1]["delta"]) == \
        ("push", "tags", "b")


def test_set_and_delete_state_record_change_one_key(session):
    assert session.set_state_record("notes", "a", "1") is True
    assert session.set_state_record("notes", "b", "2") is True
    assert session.set_state_record("notes", "b", "2") is False
    assert session.delete_state_record("notes", "a") is True
    assert session.delete_state_record("notes", "missing") is False
    assert session.state.notes == {"b": "2"}
    assert session.version == 3


def test_atomic_state_merges_the_partial_dict_its_function_returns(session, events):
    session.inc_state(message_count=3)
    assert session.atomic_state(lambda s: {"message_count": s.message_count * 10,
                                           "mode": "agent"}) is True
    assert session.state.message_count == 30
    assert events[-1]["operation"] == "atomic"
    assert events[-1]["delta"] == {"message_count": 30, "mode": "agent"}
    assert session.atomic_state(lambda s: {"mode": s.mode}) is False
    assert session.atomic_state(lambda s: None) is False


def test_each_committed_write_emits_one_event_with_version_and_request_id(store, events):
    handle = fs.ScopeHandle(store, "session", "s1", state=ModeState, request_id="r-1")
    handle.patch_state(mode="agent")
    handle.inc_state(message_count=1)
    assert [e["version"] for e in events] == [1, 2]
    first = events[0]
    assert first["type"] == "state_change"
    assert (first["scope"], first["scope_id"], first["operation"]) == ("session", "s1", "patch")
    assert first["delta"] == {"mode": "agent"}
    assert first["request_id"] == "r-1"
    assert isinstance(first["ts"], float)
    assert [seq for seq, _ in store.changes()] == sorted(seq for seq, _ in store.changes())


def test_history_keeps_the_state_after_each_version_newest_first(session):
    session.patch_state(mode="agent")
    session.inc_state(message_count=1)
    history = session.history()
    assert [h.version for h in history] == [2, 1]
    assert [h.operation for h in history] == ["increment", "patch"]
    assert history[0].state["message_count"] == 1
    assert history[1].state["mode"] == "agent"


def test_two_handles_on_one_record_see_each_others_writes(store):
    a = fs.ScopeHandle(store, "user", "alice", state=ModeState)
    b = fs.ScopeHandle(store, "user", "alice", state=ModeState)
    a.inc_state(message_count=1)
    b.inc_state(message_count=1)
    assert a.state.message_count == 2
    assert a.version == b.version == 2


def test_free_form_scope_without_a_schema_takes_any_json(store):
    handle = fs.ScopeHandle(store, "project", "default")
    handle.patch_state(anything={"nested": [1, 2]})
    assert handle.state["anything"] == {"nested": [1, 2]}


@pytest.mark.parametrize("bad_id", ["", "has space", "a/b", "x" * 129, "é", None, 5])
def test_invalid_scope_ids_are_refused(store, bad_id):
    with pytest.raises(fs.InvalidIdError, match="1-128 characters"):
        fs.ScopeHandle(store, "session", bad_id)


def test_unknown_scope_is_refused(store):
    with pytest.raises(fs.InvalidIdError, match="scopes are request, session, user, project"):
        fs.ScopeHandle(store, "team", "t1")


def test_a_schema_field_without_a_default_is_refused_naming_model_and_field(store):
    class Broken(BaseModel):
        name: str

    with pytest.raises(fs.SchemaError, match=r"Broken\.name"):
        fs.ScopeHandle(store, "session", "s1", state=Broken)


# -- refused writes leave state, version, history and change log untouched ---------------------

@pytest.mark.parametrize("write, error, message", [
    (lambda h: h.patch_state(message_count="many"), fs.ValidationError, "message_count"),
    (lambda h: h.patch_state(mode="shout"), fs.ValidationError, "mode"),
    (lambda h: h.patch_state(mesage_count=1), fs.ValidationError,
     "did you mean 'message_count'"),
    (lambda h: h.inc_state(mode=1), fs.ValidationError, "mode"),
    (lambda h: h.inc_state(message_count="1"), fs.ValidationError, "message_count"),
    (lambda h: h.push_state("mode", "x"), fs.ValidationError, "mode"),
    (lambda h: h.push_state("tags", {1, 2}), fs.ValidationError, "set"),
    (lambda h: h.patch_state(score=float("nan")), fs.ValidationError, "score"),
    (lambda h: h.set_state_record("notes", "k", 5), fs.ValidationError, "notes"),
    (lambda h: h.set_state("not a dict"), fs.ValidationError, "dict"),
    (lambda h: h.atomic_state(lambda s: {"nope": 1}), fs.ValidationError, "nope"),
])
def test_refused_write_leaves_everything_untouched(store, session, write, error, message):
    session.patch_state(mode="agent", tags=["a"])
    before = _stored(store)
    with pytest.raises(error, match=message):
        write(session)
    assert _stored(store) == before
    assert session.version == 1


def test_validation_error_names_the_scope_and_the_field(session):
    with pytest.raises(fs.ValidationError) as info:
        session.patch_state(message_count="many")
    assert "session 's1'" in str(info.value)
    assert info.value.path[0] == "message_count"
    assert isinstance(info.value, ValueError)


def test_oversize_state_is_refused_with_the_limit_and_nothing_is_stored(tmp_path):
    store = fs.open_store(f"sqlite:///{tmp_path}/small.db", max_state_bytes=1000)
    handle = fs.ScopeHandle(store, "session", "s1", state=ModeState)
    handle.patch_state(mode="agent")
    before = (store.read("session", "s1").state, handle.version, len(store.changes()))
    with pytest.raises(fs.ValidationError, match="over the limit of 1,000 bytes"):
        handle.push_state("tags", "x" * 2000)
    assert (store.read("session", "s1").state, handle.version, len(store.changes())) == before


def test_default_state_limit_is_one_mebibyte(store):
    handle = fs.ScopeHandle(store, "session", "big", state=ModeState)
    assert handle.push_state("tags", "x" * 1_000_000) is True
    with pytest.raises(fs.ValidationError, match="over the limit"):
        handle.push_state("tags", "x" * 100_000)
    assert len(handle.state.tags) == 1


def test_stored_data_from_an_older_schema_reads_with_defaults_and_a_warning(store):
    store.write("session", "old", "", {"mode": "legacy", "message_count": 4, "gone": True})
    handle = fs.ScopeHandle(store, "session", "old", state=ModeState)
    with pytest.warns(fs.FlowStateWarning, match=r"v1: stored field 'mode'"):
        state = handle.state
    assert (state.mode, state.message_count, state.tags) == ("chat", 4, [])
    assert store.read("session", "old").state["mode"] == "legacy"  # never rewritten on read
    assert store.read("session", "old").version == 1


def test_a_missing_field_in_stored_data_takes_its_default_without_warning(store):
    store.write("session", "old", "", {"mode": "agent"})
    handle = fs.ScopeHandle(store, "session", "old", state=ModeState)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert handle.state.message_count == 0
        assert handle.state.mode == "agent"


def test_atomic_state_reruns_its_function_when_the_record_changed_under_it(store):
    handle = fs.ScopeHandle(store, "session", "s1", state=ModeState)
    other = fs.ScopeHandle(store, "session", "s1", state=ModeState)
    calls = []

    def fn(state):
        calls.append(state.message_count)
        if len(calls) == 1:
            other.inc_state(message_count=1)  # interferes once
        return {"message_count": state.message_count + 10}

    assert handle.atomic_state(fn) is True
    assert len(calls) == 2
    assert handle.state.message_count == calls[-1] + 10


def test_a_writer_that_always_interferes_ends_in_concurrent_modification_after_four_attempts(
        store):
    handle = fs.ScopeHandle(store, "session", "s1", state=ModeState)
    other = fs.ScopeHandle(store, "session", "s1", state=ModeState)
    calls = []

    def fn(state):
        calls.append(1)
        other.inc_state(message_count=1)
        return {"mode": "agent"}

    with pytest.raises(fs.ConcurrentModificationError) as info:
        handle.atomic_state(fn)
    assert info.value.attempts == 4
    assert len(calls) == 4
    assert handle.state.mode == "chat"
