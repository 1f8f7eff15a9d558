"""``Store.purge`` and ``Change.first_version`` on every backend (what retention is built on).

A purge removes records and their history for good — no tombstone, no event — and only what it
names; inside an ``update`` function it belongs to that write and rolls back with it. A record
created from nothing may start at a version above 1, so a key whose tombstone was purged never
hands out a version it had before.
"""

from __future__ import annotations

import pytest

from flowstate_jupyter.stores.base import Change


def _fill(store) -> None:
    for rid in ("r1", "r2"):
        store.write("request", rid, "$request", {"status": "ok"})
        store.write("request", rid, "$request", {"status": "ok", "again": True})
        store.write("request", rid, "", {"step": 1})
        store.write("request", rid, "", {"step": 2})
    store.write("session", "s1", "files:a", {"n": 1})
    store.write("session", "s1", "files:b", {"n": 1})
    store.delete("session", "s1", "files:a")


def test_purge_removes_whole_scope_instances_with_their_history_and_nothing_else(backend):
    store = backend.open()
    _fill(store)
    changes = len(store.changes())
    assert store.purge("request", ["r1", "missing"]) == 2
    assert store.list("request", "r1", include_deleted=True) == []
    assert store.history("request", "r1", "") == []
    assert store.read("request", "r2", "$request").state == {"status": "ok", "again": True}
    assert len(store.history("request", "r2", "")) == 2
    assert len(store.changes()) == changes  # no event, no change-log row


def test_purge_of_named_records_and_of_tombstones_only(backend):
    store = backend.open()
    _fill(store)
    assert store.purge("session", ["s1"], names=["files:a", "files:b"], only_deleted=True) == 1
    assert store.read("session", "s1", "files:a") is None
    assert store.read("session", "s1", "files:b").state == {"n": 1}  # alive: kept
    assert store.purge("request", ["r2"], names=[""]) == 1
    assert [r.name for r in store.list("request", "r2")] == ["$request"]


def test_a_purge_inside_a_write_rolls_back_with_it(backend):
    store = backend.open()
    _fill(store)

    def fn(record):
        store.purge("request", ["r1"])
        raise RuntimeError("the outer write fails")

    with pytest.raises(RuntimeError):
        store.update("session", "s1", "mark", fn)
    assert store.read("request", "r1", "$request") is not None
    assert len(store.history("request", "r1", "")) == 2

    def ok(record):
        store.purge("request", ["r1"])
        return Change(state={"purged": 1})

    store.update("session", "s1", "mark", ok)
    assert store.read("request", "r1", "$request") is None


def test_a_record_created_from_nothing_may_start_above_version_1(backend):
    store = backend.open()
    record = store.update("session", "s1", "files:c",
                          lambda r: Change(state={"n": 1}, first_version=7))
    assert record.version == 7
    assert store.read("session", "s1", "files:c").version == 7
    assert [h.version for h in store.history("session", "s1", "files:c")] == [7]
    again = store.update("session", "s1", "files:c",
                         lambda r: Change(state={"n": 2}, first_version=100))
    assert again.version == 8  # only a record that does not exist starts there
