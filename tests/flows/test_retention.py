"""Retention (docs/concepts.md, 'Retention'): request records, traces, step logs and tombstones stay
bounded.

10,000 runs over ten sessions, each creating an instance in a collection capped at 5 (so 10,000
evictions), leave at most ``trace_limit`` + one batch ended runs per session, at most
``tombstone_limit`` + one batch tombstones in the collection, and a SQLite file under
:data:`FILE_BOUND` bytes. A re-created key never reuses a version after its tombstone was
purged; ``flowstate prune`` applies the same bounds to a store written without them. A store
object looks at a session's ended runs every half batch of runs it ends, so runs are purged a
batch at a time and the bound holds after every run (plus half a batch for each further store
object ending runs of the same session).
"""

from __future__ import annotations

import pytest
from pydantic import BaseModel

import flowstate_jupyter as fs
from flowstate_jupyter.cli import main as cli
from flowstate_jupyter.flows.durable import (
    prune_store,
    retention_batch,
    retention_check_every,
)
from flowstate_jupyter.handles.resources import tombstone_batch

#: The documented bound on the file after 10,000 runs and 10,000 evictions (docs/concepts.md).
FILE_BOUND = 12 * 1024 * 1024


class Note(BaseModel):
    n: int = 0


class Count(BaseModel):
    runs: int = 0


notes = fs.define_resource_collection(pattern="notes/*", state=Note, writable=True,
                                      max_instances=5, eviction="oldest")


@fs.handler(session_state=Count, user_resources={"notes": notes})
def note(i, ctx):
    ctx.session.inc_state(runs=1)
    ctx.user.resources["notes"].create(f"notes/{i}", {"n": i})
    return i


def _flow() -> fs.Flow:
    return fs.define_flow("retention", {"note": fs.sequencer("note-seq").then(note)})


def _tombstones(store) -> list:
    return [r for r in store.list("user", "u", prefix="notes:", include_deleted=True)
            if r.deleted]


@pytest.mark.slow
def test_10000_runs_and_10000_evictions_leave_the_file_under_its_bound(tmp_path):
    store = fs.open_store(f"sqlite:///{tmp_path / 'kept.db'}")
    flow = _flow()
    try:
        for i in range(10_000):
            result = flow.run("note", i, user="u", session=f"s{i % 10}", store=store)
            assert result.ok, result.traceback
        runs_bound = store.trace_limit + retention_batch(store.trace_limit)
        per_session = {}
        for run in flow.runs(store=store):
            per_session[run["session"]] = per_session.get(run["session"], 0) + 1
        assert len(per_session) == 10
        assert all(store.trace_limit <= n <= runs_bound for n in per_session.values())
        assert len(store.list(scope="request")) == sum(per_session.values())  # nothing else
        tombs = _tombstones(store)
        assert store.tombstone_limit <= len(tombs) <= \
            store.tombstone_limit + tombstone_batch(store.tombstone_limit)
        assert len(store.list("user", "u", prefix="notes:")) == 5
        assert sum(flow.session(f"s{k}", store=store).state.runs for k in range(10)) == 10_000
        report = store.doctor()
        assert report["file_bytes"] < FILE_BOUND, report
        assert report["records"] < 1_500 and report["tombstones"] == len(tombs)
    finally:
        store.close()


def test_a_key_recreated_after_its_tombstone_was_purged_never_reuses_a_version(backend):
    store = backend.open(tombstone_limit=2)
    flow = _flow()
    for i in range(12):
        flow.run("note", i, user="u", session="s", store=store)
    gone = store.read("user", "u", "notes:notes/0")
    assert gone is None  # evicted, then its tombstone purged
    mark = store.read("user", "u", "$tombstones:notes")
    assert mark is not None and mark.state["version"] >= 2
    again = fs.ScopeHandle(store, "user", "u", resources={"notes": notes})
    again.resources["notes"].create("notes/0", {"n": 100})
    record = store.read("user", "u", "notes:notes/0")
    assert record.version > mark.state["version"] and record.state == {"n": 100}


def test_a_handle_that_saw_an_instance_alive_says_so_after_its_tombstone_was_purged(mem):
    handle = fs.ScopeHandle(mem, "user", "u", resources={"notes": notes})
    seen = handle.resources["notes"].create("notes/keep", {"n": 1})
    mem.delete("user", "u", "notes:notes/keep")
    mem.purge("user", ["u"], names=["notes:notes/keep"])
    with pytest.raises(fs.ResourceDeletedError, match="purged"):
        seen.patch_state(n=2)
    assert mem.read("user", "u", "notes:notes/keep") is None


def test_flowstate_prune_applies_the_bounds_to_a_store_written_without_them(tmp_path, capsys):
    path = tmp_path / "loose.db"
    loose = fs.open_store(f"sqlite:///{path}", trace_limit=1000, tombstone_limit=1000)
    flow = _flow()
    try:
        ids = [flow.run("note", i, user="u", session="s", store=loose).request_id
               for i in range(40)]
        assert len(flow.runs(store=loose)) == 40 and len(_tombstones(loose)) == 35
    finally:
        loose.close()
    assert cli(["--store", f"sqlite:///{path}", "prune", "--trace-limit", "10",
                "--tombstone-limit", "3", "--keep", "5"]) == 0
    said = capsys.readouterr().out
    assert "purged 30 runs" in said and "32 tombstones" in said
    store = fs.open_store(f"sqlite:///{path}")
    try:
        assert [r["request_id"] for r in flow.runs(store=store)] == ids[:-11:-1]
        assert len(_tombstones(store)) == 3
        assert all(len(store.history(r.scope, r.scope_id, r.name)) <= 5
                   for r in store.list())
        assert prune_store(store, trace_limit=10, tombstone_limit=3)["runs"] == 0
    finally:
        store.close()


def _echo_flow() -> fs.Flow:
    return fs.define_flow("echo", {"echo": fs.handler(lambda value: value, name="echo")})


def test_after_every_run_a_session_keeps_at_most_trace_limit_plus_a_batch(tmp_path):
    store = fs.open_store(f"sqlite:///{tmp_path / 'kept.db'}", trace_limit=40)
    limit, batch = 40, retention_batch(40)
    assert retention_check_every(limit) > 1  # the store object does not look after every run
    flow = _echo_flow()
    try:
        seen = []
        for i in range(150):
            flow.run("echo", i, user="u", session="s", store=store)
            seen.append(len(store.ended_runs("s")))
        assert seen[:limit] == list(range(1, limit + 1))
        assert all(limit <= n <= limit + batch for n in seen[limit:])
        assert max(seen) > limit  # purged a batch at a time, not one run per run
        newest = [r["request_id"] for r in flow.runs(store=store, session="s", limit=None)]
        assert len(newest) == seen[-1] and store.ended_runs("s") == newest
    finally:
        store.close()


def test_two_store_objects_ending_runs_of_one_session_stay_within_half_a_batch_more(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    stores = [fs.open_store(url, trace_limit=40), fs.open_store(url, trace_limit=40)]
    limit, batch, every = 40, retention_batch(40), retention_check_every(40)
    flow = _echo_flow()
    try:
        seen = []
        for i in range(200):
            flow.run("echo", i, user="u", session="s", store=stores[i % 2])
            seen.append(len(stores[0].ended_runs("s")))
        assert all(limit <= n <= limit + batch + every - 1 for n in seen[limit:])
        assert len(stores[1].ended_runs("s")) == seen[-1]
    finally:
        for store in stores:
            store.close()
