"""One store conformance suite, run against every backend (memory, SQLite, PostgreSQL).

Every test takes the ``store`` fixture (or ``backend`` to open store objects with options, or
``shared_backend`` for what needs two store objects or processes on the same data), so the same
assertions hold for each backend.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time

import pytest
from _helpers import run_python, wait_for

from flowstate_jupyter.errors import StoreError, ValidationError, VersionConflictError
from flowstate_jupyter.stores.base import KEEP, Change, Record, recent_key

S, SID = "session", "s1"


def state_of(store, scope=S, scope_id=SID, name=""):
    record = store.read(scope, scope_id, name)
    return None if record is None else record.state


def snapshot(store, scope=S, scope_id=SID, name=""):
    """Everything a refused write must leave untouched."""
    record = store.read(scope, scope_id, name)
    return (record, store.history(scope, scope_id, name), store.changes())


# -- versions and expected-version rules -------------------------------------------------------

def test_versions_start_at_one_and_grow_by_one(store):
    versions = [store.write(S, SID, "", {"n": i}).version for i in range(4)]
    assert versions == [1, 2, 3, 4]
    record = store.read(S, SID)
    assert (record.version, record.state, record.deleted) == (4, {"n": 3}, False)


def test_read_of_a_record_never_written_is_none(store):
    assert store.read(S, SID) is None
    assert store.history(S, SID) == []
    assert store.list() == []


def test_expected_absent_writes_only_where_there_was_never_a_record(store):
    assert store.write(S, SID, "plan", {"a": 1}, expected="absent").version == 1
    with pytest.raises(VersionConflictError) as live:
        store.write(S, SID, "plan", {"a": 2}, expected="absent")
    assert (live.value.current, live.value.deleted) == (1, False)
    store.delete(S, SID, "plan")
    with pytest.raises(VersionConflictError) as tomb:
        store.write(S, SID, "plan", {"a": 3}, expected="absent")
    assert (tomb.value.current, tomb.value.deleted) == (2, True)
    assert "tombstone" in str(tomb.value)
    assert store.read(S, SID, "plan").deleted


def test_expected_zero_creates_or_revives_but_refuses_a_live_record(store):
    assert store.write(S, SID, "plan", {"a": 1}, expected=0).version == 1
    with pytest.raises(VersionConflictError) as exc:
        store.write(S, SID, "plan", {"a": 2}, expected=0)
    assert exc.value.current == 1
    assert store.delete(S, SID, "plan").version == 2
    revived = store.write(S, SID, "plan", {"a": 3}, expected=0)
    assert (revived.version, revived.deleted, revived.state) == (3, False, {"a": 3})


def test_expected_version_must_be_the_current_one(store):
    store.write(S, SID, "", {"n": 1})
    assert store.write(S, SID, "", {"n": 2}, expected=1).version == 2
    for stale in (1, 3, 7):
        with pytest.raises(VersionConflictError) as exc:
            store.write(S, SID, "", {"n": 99}, expected=stale)
        assert exc.value.current == 2
        assert exc.value.deleted is False
    assert state_of(store) == {"n": 2}


def test_expected_version_on_a_missing_record_reports_no_current_version(store):
    with pytest.raises(VersionConflictError) as exc:
        store.write(S, SID, "", {"n": 1}, expected=1)
    assert exc.value.current is None
    assert store.read(S, SID) is None


def test_expected_version_on_a_tombstone_is_refused_as_deleted(store):
    store.write(S, SID, "plan", {"a": 1})
    store.delete(S, SID, "plan")
    with pytest.raises(VersionConflictError) as exc:
        store.write(S, SID, "plan", {"a": 2}, expected=2)
    assert (exc.value.current, exc.value.deleted) == (2, True)


def test_expected_any_writes_whatever_is_there(store):
    assert store.write(S, SID, "plan", {"a": 1}, expected="any").version == 1
    assert store.write(S, SID, "plan", {"a": 2}, expected="any").version == 2
    store.delete(S, SID, "plan")
    assert store.write(S, SID, "plan", {"a": 3}, expected="any").version == 4


@pytest.mark.parametrize("bad", [-1, True, "latest", 1.0])
def test_expected_of_the_wrong_kind_is_refused(store, bad):
    with pytest.raises(ValueError):
        store.write(S, SID, "", {"n": 1}, expected=bad)
    assert store.read(S, SID) is None


def test_a_refused_write_leaves_record_history_and_change_log_untouched(store):
    store.write(S, SID, "", {"n": 1})
    before = snapshot(store)
    with pytest.raises(VersionConflictError):
        store.write(S, SID, "", {"n": 2}, expected=5)
    assert snapshot(store) == before


def test_a_version_checked_write_keeps_content_and_creation_time_unless_given(store):
    first = store.write(S, SID, "plan", {"a": 1}, content="notes")
    kept = store.write(S, SID, "plan", {"a": 2}, expected=1)
    assert (kept.version, kept.state, kept.content, kept.created_at) == \
        (2, {"a": 2}, "notes", first.created_at)
    assert kept == store.read(S, SID, "plan")
    replaced = store.write(S, SID, "plan", {"a": 3}, expected=2, content=None)
    assert (replaced.content, store.read(S, SID, "plan").content) == (None, None)
    assert [h.version for h in store.history(S, SID, "plan")] == [3, 2, 1]
    assert [e["change_type"] for _, e in store.changes()] == ["created", "updated", "updated"]


@pytest.mark.parametrize("bad", [{"x": math.nan}, {"x": object()}, {"x": "y" * 3000}],
                         ids=["nan", "not-json", "oversize"])
def test_a_version_checked_write_of_a_bad_state_stores_nothing(backend, bad):
    store = backend.open(max_state_bytes=2048)
    store.write(S, SID, "", {"n": 1})
    before = snapshot(store)
    with pytest.raises(ValidationError):
        store.write(S, SID, "", bad, expected=1)
    assert snapshot(store) == before
    assert store.write(S, SID, "", {"n": 2}, expected=1).version == 2


def test_a_version_checked_write_inside_fn_is_rolled_back_with_the_outer_one(store):
    store.write(S, SID, "log", {"line": 1})
    before = snapshot(store, name="log")
    events = []
    store.subscribe(events.append)

    def fn(record):
        store.write(S, SID, "log", {"line": 2}, expected=1)
        raise RuntimeError("the outer write fails")

    with pytest.raises(RuntimeError):
        store.update(S, SID, "", fn)
    assert snapshot(store, name="log") == before
    assert store.read(S, SID) is None
    assert events == []  # no event for a write that was rolled back


def test_commit_next_commits_the_next_version_of_the_record_it_was_made_from(store):
    first = store.write(S, SID, "plan", {"a": 1}, content="notes")
    events = []
    store.subscribe(events.append)
    record = store.commit_next(first, Change(state={"a": 2}, operation="patch"))
    assert (record.version, record.state, record.content, record.created_at) == \
        (2, {"a": 2}, "notes", first.created_at)
    assert record == store.read(S, SID, "plan")
    assert [(h.version, h.operation) for h in store.history(S, SID, "plan")] == \
        [(2, "patch"), (1, "set")]
    assert [(e["version"], e["ts"]) for e in events] == [(2, record.updated_at)]
    assert store.changes()[-1][1] == events[0]


@pytest.mark.parametrize("since", ["written", "deleted", "rolled-back"])
def test_commit_next_from_a_record_that_is_no_longer_stored_writes_nothing(store, since):
    first = store.write(S, SID, "", {"n": 1})
    if since == "written":
        store.write(S, SID, "", {"n": 5}, expected=1)
    elif since == "deleted":
        store.delete(S, SID, "")
    else:  # the stored version has the number the caller knows, but is another write (the
        # caller's own was rolled back, and version numbers are reused after a rollback)
        stored = store.write(S, SID, "", {"n": 5}, expected=1)
        first = stored._replace(updated_at=stored.updated_at - 1.0)
    before = snapshot(store)
    events = []
    store.subscribe(events.append)
    assert store.commit_next(first, Change(state={"n": 99}, operation="increment")) is None
    assert snapshot(store) == before
    assert events == []


def test_commit_next_inside_another_write_is_undone_with_it(store):
    first = store.write(S, SID, "log", {"line": 1})
    before = snapshot(store, name="log")

    def fn(record):
        store.commit_next(first, Change(state={"line": 2}))
        raise RuntimeError("the outer write fails")

    with pytest.raises(RuntimeError):
        store.update(S, SID, "", fn)
    assert snapshot(store, name="log") == before
    assert store.read(S, SID) is None


# -- create: a record the writer believes new ------------------------------------------------

def test_create_writes_a_new_record_from_nothing_with_its_history_and_event(store):
    events = []
    store.subscribe(events.append)
    seen = []

    def fn(record):
        seen.append(record)
        return Change(state={"status": "running"}, content="log", request_id="r1",
                      event={"type": "request", "scope": S, "scope_id": SID, "request_id": "r1"})

    record = store.create(S, SID, "$run", fn)
    assert seen == [None]
    assert (record.version, record.state, record.content, record.deleted) == \
        (1, {"status": "running"}, "log", False)
    assert record == store.read(S, SID, "$run")
    assert [(h.version, h.request_id) for h in store.history(S, SID, "$run")] == [(1, "r1")]
    assert [(e["type"], e["version"], e["ts"]) for e in events] == \
        [("request", 1, record.updated_at)]
    assert store.changes()[-1][1] == events[0]


def test_a_runs_request_record_keeps_no_history_but_every_write_is_in_the_change_log(store):
    # docs/decisions.md, 'Request records keep no history': its versions are the run's life
    # (running, suspended, ok), which its trace, step log and change-log events already tell.
    before = len(store.changes())
    store.create("request", "r1", "$request",
                 lambda record: Change(state={"status": "running"}, request_id="r1"))
    store.write("request", "r1", "$request", {"status": "ok"}, expected=1, request_id="r1")
    store.update("request", "r1", "$request",
                 lambda record: Change(state={"status": "ok", "again": True}, request_id="r1"))
    assert (store.read("request", "r1", "$request").version,
            state_of(store, "request", "r1", "$request")) == (3, {"status": "ok", "again": True})
    assert store.history("request", "r1", "$request") == []
    assert [(e["scope"], e["version"]) for _, e in store.changes()[before:]] == \
        [("request", 1), ("request", 2), ("request", 3)]
    # the request's other records, and a record named $request in another scope, keep theirs
    store.write("request", "r1", "", {"step": 1})
    store.write(S, SID, "$request", {"n": 1})
    assert [h.version for h in store.history("request", "r1", "")] == [1]
    assert [h.version for h in store.history(S, SID, "$request")] == [1]


@pytest.mark.parametrize("there", ["live", "tombstone"])
def test_create_where_a_record_exists_raises_and_keeps_nothing_of_the_write(store, there):
    store.write(S, SID, "$run", {"n": 1})
    if there == "tombstone":
        store.delete(S, SID, "$run")
    before, other = snapshot(store, name="$run"), snapshot(store, name="other")
    events = []
    store.subscribe(events.append)

    def fn(record):
        store.write(S, SID, "other", {"written": "inside"})  # part of this write: undone
        return Change(state={"n": 99})

    with pytest.raises(VersionConflictError) as conflict:
        store.create(S, SID, "$run", fn)
    assert (conflict.value.current, conflict.value.deleted) == \
        ((1, False) if there == "live" else (2, True))
    assert snapshot(store, name="$run") == before
    assert snapshot(store, name="other") == other and store.read(S, SID, "other") is None
    assert events == []


def test_create_whose_function_returns_none_writes_nothing(store):
    assert store.create(S, SID, "$run", lambda record: None) is None
    assert store.read(S, SID, "$run") is None
    assert store.changes() == []


# -- tombstones and deletes --------------------------------------------------------------------

def test_delete_leaves_a_tombstone_with_the_last_state(store):
    store.write(S, SID, "plan", {"steps": ["a"]}, content="notes")
    tomb = store.delete(S, SID, "plan", request_id="r1")
    assert (tomb.version, tomb.deleted, tomb.live) == (2, True, False)
    record = store.read(S, SID, "plan")
    assert (record.version, record.deleted, record.state) == (2, True, {"steps": ["a"]})
    assert store.list(S, SID) == []
    assert [r.name for r in store.list(S, SID, include_deleted=True)] == ["plan"]
    newest = store.history(S, SID, "plan")[0]
    assert (newest.version, newest.deleted, newest.operation, newest.request_id) == \
        (2, True, "delete", "r1")


def test_versions_are_never_reused_across_delete_and_revive(store):
    seen = [store.write(S, SID, "plan", {"i": 0}).version]
    for i in range(3):
        seen.append(store.delete(S, SID, "plan").version)
        seen.append(store.write(S, SID, "plan", {"i": i + 1}, expected=0).version)
    assert seen == list(range(1, 8))
    assert [h.version for h in store.history(S, SID, "plan")] == list(range(7, 0, -1))


def test_deleting_nothing_returns_none_and_writes_nothing(store):
    assert store.delete(S, SID, "plan") is None
    store.write(S, SID, "plan", {})
    store.delete(S, SID, "plan")
    before = snapshot(store, name="plan")
    assert store.delete(S, SID, "plan") is None
    assert snapshot(store, name="plan") == before


def test_delete_with_a_stale_expected_version_is_refused(store):
    store.write(S, SID, "plan", {"a": 1})
    store.write(S, SID, "plan", {"a": 2})
    with pytest.raises(VersionConflictError) as exc:
        store.delete(S, SID, "plan", expected=1)
    assert exc.value.current == 2
    assert store.read(S, SID, "plan").live
    assert store.delete(S, SID, "plan", expected=2).deleted


def test_delete_all_tombstones_one_scope_instance_only(store):
    for scope, scope_id in ((S, "s1"), (S, "s2"), ("user", "s1")):
        for name in ("", "a", "b:1", "b:2"):
            store.write(scope, scope_id, name, {"where": f"{scope}/{scope_id}/{name}"})
    assert store.delete_all(S, "s1", prefix="b:") == 2
    assert [r.name for r in store.list(S, "s1")] == ["", "a"]
    assert store.delete_all(S, "s1") == 2
    assert store.list(S, "s1") == []
    assert len(store.list(S, "s1", include_deleted=True)) == 4
    assert all(r.deleted for r in store.list(S, "s1", include_deleted=True))
    assert len(store.list(S, "s2")) == 4
    assert len(store.list("user", "s1")) == 4
    assert store.delete_all(S, "s1") == 0


# -- listing -----------------------------------------------------------------------------------

def test_prefix_lookup_treats_percent_and_underscore_literally(store):
    names = ["a%b", "a%bc", "a_b", "axb", "aXbc", "ab", "a\\b", "a%", "b%b"]
    for name in names:
        store.write(S, SID, name, {"name": name})
    assert [r.name for r in store.list(S, SID, prefix="a%")] == ["a%", "a%b", "a%bc"]
    assert [r.name for r in store.list(S, SID, prefix="a_")] == ["a_b"]
    assert [r.name for r in store.list(S, SID, prefix="a\\")] == ["a\\b"]
    assert [r.name for r in store.list(S, SID, prefix="%")] == []
    assert [r.name for r in store.list(S, SID, prefix="_")] == []
    assert len(store.list(S, SID, prefix="")) == len(names)


def test_list_filters_by_scope_scope_id_and_exact_name(store):
    store.write(S, "s1", "plan", {})
    store.write(S, "s1", "plans", {})
    store.write(S, "s2", "plan", {})
    store.write("user", "u1", "plan", {})
    store.write("user", "u1", "", {})
    keys = lambda records: [(r.scope, r.scope_id, r.name) for r in records]
    assert keys(store.list(name="plan")) == [(S, "s1", "plan"), (S, "s2", "plan"),
                                              ("user", "u1", "plan")]
    assert keys(store.list(S)) == [(S, "s1", "plan"), (S, "s1", "plans"), (S, "s2", "plan")]
    assert keys(store.list(scope_id="u1")) == [("user", "u1", ""), ("user", "u1", "plan")]
    assert keys(store.list(S, "s1", name="plan")) == [(S, "s1", "plan")]
    assert keys(store.list(S, "s1", prefix="plan", name="plans")) == [(S, "s1", "plans")]


def test_list_is_sorted_by_code_point(store):
    names = ["b", "B", "a", "é", "Z", "a.b", "a-b", "10", "9", "日本"]
    for name in names:
        store.write(S, SID, name, {})
    assert [r.name for r in store.list(S, SID)] == sorted(names)


def test_list_hides_tombstones_unless_asked(store):
    store.write(S, SID, "keep", {})
    store.write(S, SID, "gone", {})
    store.delete(S, SID, "gone")
    assert [r.name for r in store.list(S, SID)] == ["keep"]
    listed = store.list(S, SID, include_deleted=True)
    assert [(r.name, r.deleted) for r in listed] == [("gone", True), ("keep", False)]


# -- newest first: list_recent -----------------------------------------------------------------

def _put(store, scope_id, state, *, name="$meta", updated=1.0, accessed=None, scope=S,
         deleted=False):
    """A record with the times given (through restore, which keeps them as they are)."""
    store.restore(Record(scope, scope_id, name, 1, state, None, deleted, updated, updated,
                         updated if accessed is None else accessed), [], replace=True)


@pytest.mark.parametrize("name", ["$meta", "it's", ""])
def test_list_recent_lists_live_records_of_one_name_newest_first_in_pages(store, name):
    for i, scope_id in enumerate(["a", "b", "c", "d", "e"]):
        _put(store, scope_id, {"i": i}, name=name, updated=100.0 + i)
    _put(store, "b", {"i": 1}, name=name, updated=101.0, accessed=200.0)  # touched last
    _put(store, "gone", {}, name=name, updated=300.0, deleted=True)
    _put(store, "x", {}, name="other", updated=400.0)
    _put(store, "y", {}, name=name, updated=500.0, scope="user")
    order = ["b", "e", "d", "c", "a"]
    assert [r.scope_id for r in store.list_recent(S, name)] == order
    assert [r.scope_id for r in store.list_recent(S, name, limit=None)] == order
    pages, after = [], None
    while True:
        page = store.list_recent(S, name, limit=2, after=after)
        if not page:
            break
        pages.append([r.scope_id for r in page])
        after = recent_key(page[-1])
    assert pages == [["b", "e"], ["d", "c"], ["a"]]
    assert recent_key(store.list_recent(S, name, limit=1)[0]) == (200.0, "b")
    assert store.list_recent(S, name, limit=1)[0].state == {"i": 1}


def test_list_recent_breaks_ties_by_scope_id_and_pages_through_them(store):
    for scope_id in ["m", "a", "z", "é", "b"]:
        _put(store, scope_id, {}, updated=7.0)
    _put(store, "new", {}, updated=8.0)
    expected = ["new", "é", "z", "m", "b", "a"]  # code points, descending
    assert [r.scope_id for r in store.list_recent(S, "$meta")] == expected
    after, seen = None, []
    for _ in range(6):
        page = store.list_recent(S, "$meta", limit=1, after=after)
        seen += [r.scope_id for r in page]
        after = recent_key(page[-1])
    assert seen == expected
    assert store.list_recent(S, "$meta", after=after) == []


def test_list_recent_matches_top_level_state_fields_exactly(store):
    states = {"s1": {"user": "ann", "flow": "chat", "n": 1, "on": True},
              "s2": {"user": "bob", "flow": "chat", "n": "1", "on": 1},
              "s3": {"user": "ann", "flow": "plan", "n": 1, "on": None},
              "s4": {"flow": "chat"},
              "s5": ["user", "ann"],
              "s6": {"user": {"name": "ann"}, "flow": "chat"},
              "s7": {"user": "ann's", "flow": "chat"}}
    for i, (scope_id, state) in enumerate(states.items()):
        _put(store, scope_id, state, updated=10.0 + i)
    ids = lambda **where: [r.scope_id for r in store.list_recent(S, "$meta", where=where)]
    assert ids(flow="chat") == ["s7", "s6", "s4", "s2", "s1"]
    assert ids(user="ann") == ["s3", "s1"]
    assert ids(user="ann", flow="chat") == ["s1"]
    assert ids(user="ann's") == ["s7"]
    assert ids(n=1) == ["s3", "s1"]
    assert ids(n="1") == ["s2"]
    assert ids(on=True) == ["s1"]
    assert ids(on=1) == ["s2"]
    assert ids(on=None) == ["s3"]
    assert ids(user="nobody") == []
    assert [r.scope_id for r in store.list_recent(S, "$meta", where={})] == list(states)[::-1]


@pytest.mark.parametrize("bad", [{"where": {"a.b": 1}}, {"where": {"a'": 1}}, {"where": {"": 1}},
                                 {"where": {"x": 1.5}}, {"where": {"x": {"a": 1}}},
                                 {"where": ["x"]}, {"limit": 0}, {"limit": True},
                                 {"after": (1.0,)}, {"after": ("x", "y")}, {"after": [1.0, "a"]}])
def test_list_recent_refuses_what_it_cannot_answer(store, bad):
    _put(store, "s1", {"x": 1})
    with pytest.raises(ValueError):
        store.list_recent(S, "$meta", **bad)


# -- a session's ended runs: ended_runs -------------------------------------------------------

def test_ended_runs_names_a_sessions_ended_runs_newest_first(store):
    def run(request_id, session, ended_at, deleted=False, **more):
        _put(store, request_id, {"session": session, "ended_at": ended_at, **more},
             name="$request", scope="request", deleted=deleted)

    run("r-a", "s1", 10.0)
    run("r-b", "s1", 30.5)
    run("r-c", "s1", 20)  # an int is a time too
    run("r-d", "s1", 20.0)  # a tie: the id decides, descending
    run("r-running", "s1", None, status="running")
    _put(store, "r-waiting", {"session": "s1"}, name="$request", scope="request")  # no ended_at
    run("r-other", "s2", 40.0)
    run("r-number", 1, 50.0)  # a session id is text: 1 is not "1"
    run("r-gone", "s1", 60.0, deleted=True)
    _put(store, "r-named", {"session": "s1", "ended_at": 70.0}, name="other", scope="request")
    _put(store, "s1", {"session": "s1", "ended_at": 80.0}, name="$request", scope="session")
    assert store.ended_runs("s1") == ["r-b", "r-d", "r-c", "r-a"]
    assert store.ended_runs("s1", skip=1) == ["r-d", "r-c", "r-a"]
    assert store.ended_runs("s1", skip=4) == [] and store.ended_runs("s1", skip=9) == []
    assert store.ended_runs("s2") == ["r-other"]
    assert store.ended_runs("1") == [] and store.ended_runs("nobody") == []
    store.purge("request", ["r-b"])
    assert store.ended_runs("s1", skip=1) == ["r-c", "r-a"]


# -- state, content, records -------------------------------------------------------------------

def test_state_round_trips_exactly(store):
    state = {"z": 1, "a": [1.5, -0.0, 10**15, None, True, "x"], "ü": {"日本": "語", "": ""},
             "big": 2**62, "nested": {"k": [{"deep": [[]]}]}, "nul": "a\u0000b"}
    store.write(S, SID, "", state)
    got = state_of(store)
    assert got == state
    assert list(got) == list(state)  # key order kept
    assert json.dumps(got, ensure_ascii=False) == json.dumps(state, ensure_ascii=False)
    for value in (None, [], "just a string", 3, {"": {}}):
        assert store.write(S, SID, "other", value).state == value
        assert state_of(store, name="other") == value


def test_returned_states_are_independent_copies(store):
    record = store.write(S, SID, "", {"items": [1]})
    record.state["items"].append(2)
    store.read(S, SID).state["items"].append(3)
    assert state_of(store) == {"items": [1]}


def test_content_is_kept_replaced_and_cleared(store):
    assert store.write(S, SID, "doc", {}, content="# one").content == "# one"
    assert store.write(S, SID, "doc", {"v": 2}).content == "# one"  # KEEP by default
    assert store.write(S, SID, "doc", {"v": 3}, content=KEEP).content == "# one"
    assert store.write(S, SID, "doc", {"v": 4}, content="").content == ""
    assert store.read(S, SID, "doc").content == ""
    assert store.write(S, SID, "doc", {"v": 5}, content=None).content is None
    assert store.read(S, SID, "doc").content is None


def test_timestamps_are_kept_and_touch_marks_use_without_a_new_version(store):
    first = store.write(S, SID, "doc", {})
    time.sleep(0.01)
    second = store.write(S, SID, "doc", {"v": 2})
    assert second.created_at == first.created_at
    assert second.updated_at > first.updated_at
    changes_before = store.changes()
    time.sleep(0.01)
    store.touch(S, SID, "doc")
    touched = store.read(S, SID, "doc")
    assert touched.version == 2
    assert touched.accessed_at > second.accessed_at
    assert touched.updated_at == pytest.approx(second.updated_at)
    assert store.changes() == changes_before
    store.touch(S, SID, "missing")  # no record: nothing happens
    assert store.read(S, SID, "missing") is None


# -- history -----------------------------------------------------------------------------------

def test_history_is_newest_first_with_operation_and_request_id(store):
    store.write(S, SID, "", {"n": 1}, operation="set", request_id="r1")
    store.write(S, SID, "", {"n": 2}, operation="increment", request_id="r2")
    history = store.history(S, SID)
    assert [(h.version, h.state, h.operation, h.request_id, h.deleted) for h in history] == [
        (2, {"n": 2}, "increment", "r2", False), (1, {"n": 1}, "set", "r1", False)]
    assert history[0].ts >= history[1].ts > 0
    assert [h.version for h in store.history(S, SID, limit=1)] == [2]


def test_history_is_pruned_to_its_limit_per_record(backend):
    store = backend.open(history_limit=3)
    for i in range(1, 8):
        store.write(S, SID, "", {"n": i})
        store.write(S, SID, "other", {"n": i})
        assert len(store.history(S, SID)) == min(i, 3)
    assert [(h.version, h.state) for h in store.history(S, SID)] == [
        (7, {"n": 7}), (6, {"n": 6}), (5, {"n": 5})]
    assert [h.version for h in store.history(S, SID, "other")] == [7, 6, 5]
    assert [h.version for h in store.history(S, SID, limit=2)] == [7, 6]


def _history_bytes(store, scope=S, scope_id=SID, name=""):
    """Bytes of state JSON a record's kept history holds (as the stores count them)."""
    return sum(len(json.dumps(h.state, separators=(", ", ": "), ensure_ascii=False).encode())
               for h in store.history(scope, scope_id, name))


def test_history_is_pruned_to_its_byte_bound_per_record_keeping_the_newest(backend):
    bound = 64 * 1024
    store = backend.open(history_limit_bytes=bound)
    for i in range(1, 31):
        store.write(S, SID, "", {"i": i, "blob": "x" * 10_000})
        store.write(S, SID, "small", {"i": i})  # another record: its own bound, untouched
        kept = store.history(S, SID)
        assert kept[0].version == i and kept[0].state["i"] == i, "the newest is always kept"
        assert _history_bytes(store) <= bound
    assert [h.version for h in kept] == list(range(30, 30 - len(kept), -1)), "newest first"
    assert len(kept) >= 4, "a byte bound, not a tiny one: 3/4 of it or more is kept"
    assert len(store.history(S, SID, "small")) == 30
    assert store.read(S, SID).state["i"] == 30


def test_a_state_over_the_history_byte_bound_is_still_kept_as_the_newest_version(backend):
    store = backend.open(history_limit_bytes=1000)
    for i in range(3):
        store.write(S, SID, "", {"i": i, "blob": "y" * 5000})
        assert [(h.version, h.state["i"]) for h in store.history(S, SID)] == [(i + 1, i)]
    store.write(S, SID, "", {"i": 3})
    assert [h.version for h in store.history(S, SID)] == [4]  # 5 KB more would not fit
    store.write(S, SID, "", {"i": 4})
    assert [h.version for h in store.history(S, SID)] == [5, 4]


def test_an_import_keeps_only_the_history_its_bounds_allow(backend):
    from flowstate_jupyter.stores.base import HistoryEntry, Record

    store = backend.open(history_limit=50, history_limit_bytes=20_000)
    history = [HistoryEntry(v, float(v), "set", {"v": v, "blob": "z" * 5000}) for v in
               range(1, 11)]
    store.restore(Record(S, SID, "", 10, {"v": 10, "blob": "z" * 5000}, None, False, 1.0,
                         10.0, 10.0), history)
    kept = store.history(S, SID)
    assert [h.version for h in kept] == [10, 9, 8]  # the newest, within 20,000 bytes
    assert _history_bytes(store) <= 20_000
    store.write(S, SID, "", {"v": 11})
    assert store.history(S, SID)[0].version == 11 and _history_bytes(store) <= 20_000


def test_a_large_delta_is_summarized_in_the_change_log_and_history_keeps_the_state(backend):
    store = backend.open(changelog_item_bytes=2048)
    delivered = []
    store.subscribe(delivered.append)
    big = {"text": "é" * 6000}  # 12,000 bytes of UTF-8
    event = {"type": "state_change", "scope": S, "scope_id": SID, "operation": "patch",
             "path": None, "delta": big, "request_id": "r-big"}
    store.write(S, SID, "", big, operation="patch", event=event, request_id="r-big")
    small = dict(event, delta={"text": "short"}, request_id="r-small")
    store.write(S, SID, "", {"text": "short"}, operation="patch", event=small)
    (seq1, logged), (_, kept_whole) = store.changes()
    assert logged["delta"] is None
    assert logged["omitted"]["fields"] == ["delta"]
    assert logged["omitted"]["bytes"] > 12_000
    assert {k: logged[k] for k in ("type", "scope", "scope_id", "operation", "request_id",
                                   "version")} == {
        "type": "state_change", "scope": S, "scope_id": SID, "operation": "patch",
        "request_id": "r-big", "version": 1}
    assert len(json.dumps(logged, ensure_ascii=False).encode()) <= 2048
    assert kept_whole["delta"] == {"text": "short"} and "omitted" not in kept_whole
    assert [h.state for h in store.history(S, SID)] == [{"text": "short"}, big]
    assert delivered[0]["delta"] == big, "this store object's subscribers get the whole event"
    assert store.changes(after=seq1 - 1)[0][1] == logged


def test_no_change_log_item_is_larger_than_its_bound_whatever_the_event(backend):
    bound = 2048
    store = backend.open(changelog_item_bytes=bound)
    events = [
        {"type": "x", "delta": None, "path": "p" * 5000},
        {"type": "x", "delta": None, **{f"field{i}": i for i in range(1000)}},
        {"type": "x" * 200, "scope": "s" * 129, "delta": [1] * 3000},
        {"type": "x", "delta": {"k": "\u0001" * 1000}, "note": "\u0001" * 100},
    ]
    for i, event in enumerate(events):
        store.write(S, SID, f"r{i}", {"i": i}, event=event)
    for _, item in store.changes():
        item_bytes = len(json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode())
        assert item_bytes <= bound, item
        assert "omitted" in item and item["omitted"]["bytes"] > bound


def test_byte_bounds_are_options_in_the_url_and_refuse_nonsense(backend):
    from flowstate_jupyter.stores import open_store

    sep = "&" if "?" in backend.url else "?"
    if backend.kind == "memory":
        store = open_store("memory://?history_limit_bytes=5000&changelog_item_bytes=3000")
    else:
        store = open_store(f"{backend.url}{sep}history_limit_bytes=5000&changelog_item_bytes=3000")
        backend.stores.append(store)
    assert (store.history_limit_bytes, store.changelog_item_bytes) == (5000, 3000)
    for bad in ({"history_limit_bytes": 0}, {"changelog_item_bytes": 100},
                {"changelog_item_bytes": True}, {"history_limit_bytes": "big"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            backend.open(**bad)


def test_a_byte_prune_inside_a_nested_write_is_undone_with_the_outer_write(backend):
    store = backend.open(history_limit_bytes=12_000)
    for i in range(2):
        store.write(S, SID, "inner", {"i": i, "blob": "b" * 5000})
    before = snapshot(store, name="inner")

    def outer(record):
        store.write(S, SID, "inner", {"i": 9, "blob": "b" * 5000})  # prunes version 1
        assert [h.version for h in store.history(S, SID, "inner")][-1] > 1
        raise RuntimeError("outer write fails")

    with pytest.raises(RuntimeError):
        store.update(S, SID, "", outer)
    assert snapshot(store, name="inner") == before
    assert [h.version for h in store.history(S, SID, "inner")] == [2, 1]


# -- change log and events ---------------------------------------------------------------------

def test_change_log_never_grows_past_its_limit(backend):
    store = backend.open(changelog_limit=5)
    for i in range(12):
        store.write(S, f"s{i % 3}", "", {"i": i})
        log = store.changes()
        assert len(log) <= 5
        assert len(log) == min(i + 1, 5)
    seqs = [seq for seq, _ in log]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    assert [event["scope_id"] for _, event in log] == [f"s{i % 3}" for i in range(7, 12)]
    assert store.changes(after=seqs[2]) == log[3:]
    assert store.changes(limit=2) == log[:2]


def test_change_log_sequence_numbers_only_grow(store):
    seqs = []
    for i in range(5):
        store.write(S, SID, "", {"i": i})
        seqs.append(store.changes()[-1][0])
    store.delete(S, SID, "")
    seqs.append(store.changes()[-1][0])
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_events_carry_version_and_ts(store):
    store.write(S, SID, "", {"n": 1}, operation="patch", request_id="req")
    store.write(S, SID, "plan", {"a": 1})
    store.write(S, SID, "plan", {"a": 2})
    store.delete(S, SID, "plan")
    events = [event for _, event in store.changes()]
    assert events[0] == {"type": "state_change", "scope": S, "scope_id": SID,
                         "operation": "patch", "path": None, "delta": None,
                         "request_id": "req", "version": 1, "ts": events[0]["ts"]}
    assert [(e["type"], e.get("change_type"), e["version"]) for e in events[1:]] == [
        ("resource_change", "created", 1), ("resource_change", "updated", 2),
        ("resource_change", "deleted", 3)]
    assert all(isinstance(e["ts"], float) and e["ts"] > 0 for e in events)
    assert events[1]["resource"] == "plan"


def test_a_callers_event_is_kept_with_version_and_ts_added(store):
    event = {"type": "state_change", "scope": S, "scope_id": SID, "operation": "increment",
             "path": None, "delta": {"n": 1}, "request_id": "r9"}
    store.write(S, SID, "", {"n": 1}, event=event)
    store.write(S, SID, "", {"n": 2}, event=event)
    (_, first), (_, second) = store.changes()
    assert first == {**event, "version": 1, "ts": first["ts"]}
    assert second["version"] == 2 and second["delta"] == {"n": 1}
    assert "version" not in event  # the caller's dict is not modified


def test_subscribe_delivers_own_changes_synchronously_and_unsubscribe_stops_them(store):
    seen: list[tuple[dict, int]] = []
    unsubscribe = store.subscribe(lambda e: seen.append((e, threading.get_ident())))
    record = store.write(S, SID, "", {"n": 1})
    assert len(seen) == 1  # delivered before write() returned
    event, thread = seen[0]
    assert thread == threading.get_ident()
    assert (event["version"], event["scope_id"]) == (record.version, SID)
    assert event == store.changes()[-1][1]
    unsubscribe()
    store.write(S, SID, "", {"n": 2})
    time.sleep(0.3)
    assert len(seen) == 1
    unsubscribe()  # twice is harmless


def test_a_failing_subscriber_does_not_break_the_write(store):
    def broken(event):
        raise RuntimeError("listener bug")

    seen = []
    store.subscribe(broken)
    store.subscribe(seen.append)
    with pytest.warns(RuntimeWarning, match="listener bug"):
        record = store.write(S, SID, "", {"n": 1})
    assert record.version == 1
    assert state_of(store) == {"n": 1}
    assert len(seen) == 1


def test_a_subscriber_that_subscribes_or_unsubscribes_mid_delivery_changes_no_delivery(store):
    """A delivery goes through the subscribers as they were when it began: one that unsubscribes
    another and subscribes a third while it is called leaves that event's other deliveries as
    they were, and the next event reaches the new set."""
    seen: list[tuple[str, int]] = []
    later: list[int] = []
    remove_second: list = []

    def first(event):
        seen.append(("first", event["version"]))
        if event["version"] == 1:
            remove_second[0]()
            store.subscribe(lambda e: later.append(e["version"]))

    store.subscribe(first)
    remove_second.append(store.subscribe(lambda e: seen.append(("second", e["version"]))))
    store.write(S, SID, "", {"n": 1})
    assert seen == [("first", 1), ("second", 1)]
    assert later == []
    store.write(S, SID, "", {"n": 2})
    assert seen == [("first", 1), ("second", 1), ("first", 2)]
    assert later == [2]


def test_subscribes_and_unsubscribes_from_many_threads_lose_none(store):
    """Threads subscribing and unsubscribing at once (thread switches forced often) leave
    exactly the callbacks still subscribed: each gets the next event once."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    got: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def churn(n: int) -> None:
        try:
            for i in range(100):
                store._listen(lambda e: None)()  # in and out again
                store._listen(lambda e, key=(n, i): got.append(key))  # stays
        except BaseException as exc:  # reported below
            errors.append(exc)

    try:
        threads = [threading.Thread(target=churn, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    store.write(S, SID, "", {"n": 1})
    assert sorted(got) == [(n, i) for n in range(6) for i in range(100)]


def test_a_touch_inside_a_write_is_part_of_it_and_another_threads_is_its_own(store):
    """A touch made inside a write commits or rolls back with it; one from another thread while
    the write is open is not part of it: it is kept although the write rolls back."""
    record = store.write(S, SID, "doc", {})

    def touch_then_fail(current):
        store.touch(S, SID, "doc")
        raise RuntimeError("refused")

    with pytest.raises(RuntimeError):
        store.update(S, SID, "doc", touch_then_fail)
    assert store.read(S, SID, "doc").accessed_at == record.accessed_at

    started = threading.Event()

    def touch_elsewhere():
        started.set()
        store.touch(S, SID, "doc")

    other = threading.Thread(target=touch_elsewhere)

    def wait_then_fail(current):
        other.start()
        started.wait(10)
        other.join(0.3)  # it waits for this write (or, if it were part of it, has run)
        raise RuntimeError("refused")

    with pytest.raises(RuntimeError):
        store.update(S, SID, "doc", wait_then_fail)
    other.join(10)
    touched = store.read(S, SID, "doc")
    assert touched.accessed_at > record.accessed_at
    assert touched.version == record.version


# -- refused writes change nothing -------------------------------------------------------------

def test_oversize_state_is_refused_and_nothing_is_stored(backend):
    store = backend.open(max_state_bytes=200)
    store.write(S, SID, "", {"n": 1})
    before = snapshot(store)
    events = []
    store.subscribe(events.append)
    with pytest.raises(ValidationError) as exc:
        store.write(S, SID, "", {"blob": "x" * 300})
    assert exc.value.reason == "oversize"
    assert "max_state_bytes" in str(exc.value)
    with pytest.raises(ValidationError):  # multi-byte characters count as bytes
        store.write(S, SID, "", {"blob": "é" * 120})
    with pytest.raises(ValidationError):
        store.write(S, SID, "new", {"blob": "x" * 300})
    assert snapshot(store) == before
    assert store.read(S, SID, "new") is None
    assert events == []
    assert store.write(S, SID, "", {"blob": "x" * 150}).version == 2  # under the limit


@pytest.mark.parametrize("bad", [float("nan"), math.inf, -math.inf, {1, 2}, b"bytes", object(),
                                 "lone \ud800 surrogate"],
                         ids=["nan", "inf", "-inf", "set", "bytes", "object", "lone-surrogate"])
def test_non_json_state_is_refused_and_nothing_is_stored(store, bad):
    store.write(S, SID, "", {"n": 1})
    before = snapshot(store)
    with pytest.raises(ValidationError) as exc:
        store.write(S, SID, "", {"n": 2, "bad": [bad]})
    assert "not JSON" in str(exc.value)
    with pytest.raises(ValidationError):
        store.write(S, SID, "new", {"bad": bad})
    assert snapshot(store) == before
    assert store.read(S, SID, "new") is None


def test_non_json_event_is_refused_and_nothing_is_stored(store):
    with pytest.raises(ValidationError):
        store.write(S, SID, "", {"n": 1}, event={"type": "state_change", "delta": math.nan})
    assert store.read(S, SID) is None
    assert store.changes() == []


# -- update(): fn semantics, nesting -----------------------------------------------------------

def test_update_passes_the_current_record_and_returns_the_committed_one(store):
    seen = []

    def fn(record):
        seen.append(record)
        n = record.state["n"] if record else 0
        return Change(state={"n": n + 1}, operation="increment", request_id="r")

    assert store.update(S, SID, "", fn).state == {"n": 1}
    committed = store.update(S, SID, "", fn)
    assert (committed.version, committed.state) == (2, {"n": 2})
    assert seen[0] is None and seen[1].version == 1 and seen[1].state == {"n": 1}
    assert store.history(S, SID)[0].operation == "increment"


def test_fn_returning_none_writes_nothing(store):
    events = []
    store.subscribe(events.append)
    assert store.update(S, SID, "", lambda record: None) is None
    assert store.read(S, SID) is None
    store.write(S, SID, "", {"n": 1})
    before = snapshot(store)
    assert store.update(S, SID, "", lambda record: None) is None
    assert snapshot(store) == before
    assert len(events) == 1


def test_fn_raising_rolls_back_everything_it_did(store):
    store.write(S, SID, "", {"n": 1})
    before, other_before = snapshot(store), snapshot(store, name="other")
    events = []
    store.subscribe(events.append)

    def fn(record):
        store.write(S, SID, "other", {"written": "inside fn"})  # nested write, then failure
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        store.update(S, SID, "", fn)
    assert snapshot(store) == before
    assert snapshot(store, name="other") == other_before
    assert events == []
    assert store.write(S, SID, "", {"n": 2}, expected=1).version == 2  # nothing left locked


def test_a_nested_write_to_another_record_commits_with_the_outer_one(store):
    events = []
    store.subscribe(events.append)
    seen_inside = []

    def fn(record):
        store.write(S, SID, "log", {"line": 1})
        seen_inside.append(list(events))  # nothing delivered before the outer commit
        seen_inside.append(state_of(store, name="log"))  # visible inside the transaction
        return Change(state={"n": 1})

    assert store.update(S, SID, "", fn).version == 1
    assert seen_inside == [[], {"line": 1}]
    assert state_of(store, name="log") == {"line": 1}
    assert [(e["scope_id"], e.get("resource"), e["version"]) for e in events] == [
        (SID, "log", 1), (SID, None, 1)]


@pytest.mark.parametrize("existing", [True, False], ids=["existing", "new"])
def test_a_reentrant_write_of_the_same_record_inside_fn_conflicts(store, existing):
    if existing:
        store.write(S, SID, "", {"n": 1})
    before = snapshot(store)
    events = []
    store.subscribe(events.append)

    def fn(record):
        store.write(S, SID, "", {"n": "sneaky"})
        return Change(state={"n": "outer"})

    with pytest.raises(VersionConflictError) as exc:
        store.update(S, SID, "", fn)
    assert exc.value.current == (2 if existing else 1)
    assert snapshot(store) == before  # the nested write is rolled back with the outer one
    assert events == []


def test_closed_store_raises_store_error(store):
    store.write(S, SID, "", {"n": 1})
    store.close()
    for call in (lambda: store.read(S, SID), lambda: store.list(),
                 lambda: store.history(S, SID), lambda: store.changes(),
                 lambda: store.write(S, SID, "", {"n": 2}),
                 lambda: store.update(S, SID, "", lambda r: None),
                 lambda: store.delete(S, SID, ""), lambda: store.touch(S, SID, "")):
        with pytest.raises(StoreError, match="closed"):
            call()
    store.close()  # closing twice is fine


# -- concurrency -------------------------------------------------------------------------------

def _stores_for_threads(backend, count):
    """Store objects the threads use: one for memory, two alternating where data is shared."""
    first = backend.open()
    if not backend.shared:
        return [first] * count
    second = backend.open()
    return [first if i % 2 else second for i in range(count)]


def _run_threads(targets):
    errors = []

    def guard(target):
        try:
            target()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=guard, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert errors == []


@pytest.mark.parametrize("expected", ["absent", 0])
def test_a_create_race_has_exactly_one_winner(backend, expected):
    stores = _stores_for_threads(backend, 8)
    barrier = threading.Barrier(len(stores))
    outcomes = []

    def racer(store, i):
        def run():
            barrier.wait()
            try:
                store.write(S, SID, "plan", {"winner": i}, expected=expected)
                outcomes.append(("won", i))
            except VersionConflictError as exc:
                outcomes.append(("lost", exc.current))
        return run

    _run_threads([racer(store, i) for i, store in enumerate(stores)])
    winners = [i for kind, i in outcomes if kind == "won"]
    assert len(winners) == 1
    assert sorted(current for kind, current in outcomes if kind == "lost") == [1] * 7
    record = stores[0].read(S, SID, "plan")
    assert (record.version, record.state) == (1, {"winner": winners[0]})
    assert len(stores[0].changes()) == 1


def test_concurrent_any_writes_to_a_new_record_all_succeed_with_distinct_versions(backend):
    stores = _stores_for_threads(backend, 8)
    barrier = threading.Barrier(len(stores))
    versions = []

    def writer(store, i):
        def run():
            barrier.wait()
            versions.append(store.write(S, SID, "plan", {"i": i}, expected="any").version)
        return run

    _run_threads([writer(store, i) for i, store in enumerate(stores)])
    assert sorted(versions) == list(range(1, 9))
    assert stores[0].read(S, SID, "plan").version == 8


def test_concurrent_updates_from_threads_lose_nothing(backend):
    stores = _stores_for_threads(backend, 6)
    per_thread = 30

    def inc(record):
        return Change(state={"n": (record.state["n"] if record else 0) + 1},
                      operation="increment")

    def worker(store):
        def run():
            for _ in range(per_thread):
                store.update(S, SID, "", inc)
        return run

    _run_threads([worker(store) for store in stores])
    total = per_thread * len(stores)
    record = stores[0].read(S, SID)
    assert (record.state, record.version) == ({"n": total}, total)
    history = stores[0].history(S, SID)
    assert all(h.state == {"n": h.version} for h in history)
    assert [e["version"] for _, e in stores[0].changes()] == list(range(1, total + 1))


# -- other store objects and processes (backends that share data) -------------------------------

def test_another_store_objects_changes_reach_subscribers_once(shared_backend):
    mine, theirs = shared_backend.open(), shared_backend.open()
    events = []
    mine.subscribe(events.append)
    mine.write(S, SID, "", {"by": "mine"})
    started = time.monotonic()
    theirs.write(S, SID, "plan", {"by": "theirs"})
    assert wait_for(lambda: len(events) >= 2, timeout=3)
    assert time.monotonic() - started < 1.5
    time.sleep(0.4)  # nothing more arrives: own changes are not delivered twice
    assert [(e.get("resource"), e["version"]) for e in events] == [(None, 1), ("plan", 1)]
    assert isinstance(events[1]["ts"], float)


def test_another_process_changes_reach_subscribers(shared_backend):
    mine = shared_backend.open()
    mine.write(S, SID, "", {"n": 0})  # the store exists before the other process opens it
    events = []
    mine.subscribe(events.append)
    code = ("import sys\n"
            "from flowstate_jupyter.stores import open_store\n"
            "with open_store(sys.argv[1]) as store:\n"
            "    store.write('session', 's1', 'from-process', {'pid': 1}, request_id='rp')\n")
    run_python(code, shared_backend.url)
    assert wait_for(lambda: events, timeout=1.5), "no event from the other process within 1.5 s"
    assert [(e["resource"], e["version"], e["request_id"]) for e in events] == [
        ("from-process", 1, "rp")]
    assert mine.read(S, SID, "from-process").state == {"pid": 1}


def _watchers():
    return [t for t in threading.enumerate() if t.name.startswith(("flowstate-watch",
                                                                     "flowstate-listen"))]


def test_a_watcher_runs_only_while_someone_subscribes(shared_backend):
    mine, theirs = shared_backend.open(), shared_backend.open()
    before = len(_watchers())
    first, second = [], []
    stop_first = mine.subscribe(first.append)
    stop_second = mine.subscribe(second.append)
    assert len(_watchers()) == before + 1  # one per store object, however many subscribers
    theirs.write(S, SID, "", {"n": 1})
    assert wait_for(lambda: len(first) == len(second) == 1, timeout=3)
    stop_first()
    assert len(_watchers()) == before + 1  # one subscriber is left
    stop_second()
    assert wait_for(lambda: len(_watchers()) == before, timeout=3), "the watcher kept running"
    theirs.write(S, SID, "", {"n": 2})  # nobody listens: nothing is delivered, later either
    again = []
    stop_again = mine.subscribe(again.append)
    theirs.write(S, SID, "", {"n": 3})
    assert wait_for(lambda: again, timeout=3)
    time.sleep(0.3)
    assert [e["version"] for e in again] == [3]
    assert [e["version"] for e in first + second] == [1, 1]
    stop_again()
    assert wait_for(lambda: len(_watchers()) == before, timeout=3)
