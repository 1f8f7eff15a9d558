"""PostgreSQL-specific behaviour: dropped connections, commits whose outcome is unknown, lock
timeouts, schema versioning, commit-ordered change log, URLs and options."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import uuid

import pytest
from _helpers import wait_for

from flowstate_jupyter.errors import StoreError, ValidationError
from flowstate_jupyter.stores import open_store
from flowstate_jupyter.stores.base import Change, prune_cutoff, recent_key

pytestmark = pytest.mark.postgres

S, SID = "session", "s1"


def increment(record):
    return Change(state={"n": (record.state["n"] if record else 0) + 1}, operation="increment")


def assert_counted_once(store, total, scope="project", scope_id="default"):
    record = store.read(scope, scope_id)
    assert (record.version, record.state) == (total, {"n": total})
    history = store.history(scope, scope_id)
    assert [h.version for h in history] == list(range(total, 0, -1))[:len(history)]
    assert all(h.state == {"n": h.version} for h in history)
    events = [e for _, e in store.changes() if e["scope_id"] == scope_id]
    assert [e["version"] for e in events] == list(range(1, total + 1))


# -- dropped connections -----------------------------------------------------------------------

def test_killed_connections_mid_run_lose_and_double_no_write(pg_backend):
    app = f"fs-kill-{uuid.uuid4().hex[:8]}"
    store = pg_backend.open(pool_size=4, application_name=app, history_limit=1000)
    other = pg_backend.open()
    events = []
    store.subscribe(events.append)  # its LISTEN connection gets killed too
    killed = []
    stop = threading.Event()

    def killer():
        with pg_backend.admin() as admin:
            while not stop.wait(0.1):
                rows = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = %s AND pid <> pg_backend_pid()", (app,)).fetchall()
                killed.append(sum(1 for (ok,) in rows if ok))

    def slow_increment(record):
        time.sleep(0.002)  # widen the window in which a kill lands inside a transaction
        return increment(record)

    thread = threading.Thread(target=killer)
    thread.start()
    versions = []
    try:
        started = time.monotonic()
        while time.monotonic() - started < 1.0 or sum(killed) < 6:
            versions.append(store.update("project", "default", "", slow_increment).version)
            assert time.monotonic() - started < 20, "the killer never got to kill anything"
    finally:
        stop.set()
        thread.join()
    for _ in range(20):  # and once the connections stop dying, writes go on as before
        versions.append(store.update("project", "default", "", increment).version)
    assert sum(killed) >= 6  # connections really were terminated during the run
    assert versions == list(range(1, len(versions) + 1))  # every call committed exactly once
    assert_counted_once(store, len(versions))
    own = [e for e in events if e["scope"] == "project"]
    assert [e["version"] for e in own] == versions  # each delivered once, none twice
    other.write(S, "after-storm", "", {"ok": True})  # the watcher has reconnected
    assert wait_for(lambda: any(e["scope_id"] == "after-storm" for e in events), timeout=3)


class CommitFaults:
    """Make a store's next COMMITs lose their connection, before or after the server commits."""

    def __init__(self, *plan: str) -> None:
        self.plan = list(plan)  # "after" | "before" per upcoming commit; then commits normally
        self.calls = 0

    def store_class(self):
        import psycopg

        from flowstate_jupyter.stores.postgres import PostgresStore
        faults = self

        class FaultyStore(PostgresStore):
            def _commit(self, conn, work=b""):
                faults.calls += 1
                step = faults.plan.pop(0) if faults.plan else None
                if step == "after":
                    super()._commit(conn, work)
                if step is not None:
                    conn.close()  # the server rolls back an uncommitted transaction
                    raise psycopg.OperationalError(
                        f"simulated: connection lost {step} the server committed")
                super()._commit(conn, work)

        return FaultyStore


def test_a_commit_whose_reply_was_lost_is_read_back_not_repeated(pg_backend):
    faults = CommitFaults("after")
    store = pg_backend.open(faults.store_class())
    events = []
    store.subscribe(events.append)
    record = store.write(S, SID, "", {"n": 1}, request_id="r1")
    assert (record.version, record.state) == (1, {"n": 1})
    assert faults.calls == 1  # not repeated
    history = store.history(S, SID)
    assert [(h.version, h.request_id) for h in history] == [(1, "r1")]
    assert len(store.changes()) == 1
    assert len(events) == 1
    assert store.update(S, SID, "", increment).version == 2


def test_an_update_whose_reply_was_lost_with_its_commit_is_read_back_not_repeated(pg_backend):
    faults = CommitFaults()
    store = pg_backend.open(faults.store_class())
    store.write(S, SID, "", {"n": 0})
    events = []
    store.subscribe(events.append)
    faults.plan.append("after")  # the update's statement and COMMIT ran; the reply was lost
    record = store.update(S, SID, "", increment)
    assert (record.version, record.state) == (2, {"n": 1})
    assert faults.calls == 2  # not repeated
    assert [h.version for h in store.history(S, SID)] == [2, 1]
    assert [e["version"] for _, e in store.changes()] == [1, 2]
    assert [e["version"] for e in events] == [2]


def test_a_commit_that_never_reached_the_server_runs_once_more(pg_backend):
    faults = CommitFaults("before")
    store = pg_backend.open(faults.store_class())
    store.write(S, SID, "", {"n": 0})
    faults.plan.append("before")
    record = store.update(S, SID, "", increment)
    assert (record.version, record.state) == (2, {"n": 1})
    assert faults.calls == 4  # create: lost + retried; increment: lost + retried
    assert [h.version for h in store.history(S, SID)] == [2, 1]
    assert [e["version"] for _, e in store.changes()] == [1, 2]


def test_losing_the_connection_during_commit_twice_raises_store_error_and_stores_nothing(
        pg_backend):
    faults = CommitFaults("before", "before")
    store = pg_backend.open(faults.store_class())
    with pytest.raises(StoreError, match="dropped while committing"):
        store.write(S, SID, "", {"n": 1})
    assert faults.calls == 2
    assert store.read(S, SID) is None
    assert store.changes() == []
    assert store.write(S, SID, "", {"n": 1}).version == 1


# -- locks, pool, reachability ----------------------------------------------------------------

def test_a_record_locked_past_the_timeout_raises_store_error_not_a_hang(pg_backend):
    store = pg_backend.open(timeout=0.3)
    store.write(S, SID, "", {"n": 1})
    with pg_backend.admin() as admin:
        admin.execute("BEGIN")
        admin.execute(f"SELECT * FROM {pg_backend.table('records')} WHERE scope_id = %s "
                      f"FOR UPDATE", (SID,))
        started = time.monotonic()
        with pytest.raises(StoreError, match="locked"):
            store.write(S, SID, "", {"n": 2})
        assert time.monotonic() - started < 3
        assert store.read(S, SID).version == 1  # readers are not blocked
        admin.execute("ROLLBACK")
    assert store.write(S, SID, "", {"n": 2}, expected=1).version == 2


def test_an_exhausted_pool_raises_store_error_after_pool_timeout(pg_backend):
    store = pg_backend.open(pool_size=1, pool_timeout=0.3)
    inside, release = threading.Event(), threading.Event()

    def hold(record):
        inside.set()
        release.wait(5)
        return None

    holder = threading.Thread(target=store.update, args=(S, SID, "", hold))
    holder.start()
    try:
        assert inside.wait(5)
        with pytest.raises(StoreError, match="pool_size"):
            store.write(S, "other", "", {"n": 1})
    finally:
        release.set()
        holder.join()
    assert store.write(S, "other", "", {"n": 1}).version == 1


def test_an_unreachable_server_raises_store_error_quickly():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    from flowstate_jupyter.stores.postgres import PostgresStore
    started = time.monotonic()
    with pytest.raises(StoreError, match="cannot connect") as exc:
        PostgresStore(f"postgresql://flow:hunter2@127.0.0.1:{port}/nowhere", connect_timeout=2)
    assert time.monotonic() - started < 5
    assert "hunter2" not in str(exc.value)
    assert f"127.0.0.1:{port}" in str(exc.value)


# -- schema ------------------------------------------------------------------------------------

def test_tables_are_created_in_the_schema_with_the_version_recorded(pg_backend):
    from flowstate_jupyter.stores.postgres import SCHEMA_VERSION
    pg_backend.open()
    with pg_backend.admin() as admin:
        tables = {r[0] for r in admin.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            (pg_backend.schema,))}
        meta = dict(admin.execute(f"SELECT key, value FROM {pg_backend.table('meta')}"))
    assert tables == {"flowstate_meta", "flowstate_records", "flowstate_history",
                      "flowstate_changes"}
    assert meta == {"app": "flowstate-jupyter", "schema_version": str(SCHEMA_VERSION)}


def test_a_newer_schema_version_is_refused_and_left_alone(pg_backend):
    from flowstate_jupyter.stores.postgres import SCHEMA_VERSION
    newer = str(SCHEMA_VERSION + 1)
    store = pg_backend.open()
    store.write(S, SID, "", {"n": 1})
    with pg_backend.admin() as admin:
        admin.execute(f"UPDATE {pg_backend.table('meta')} SET value = %s "
                      f"WHERE key = 'schema_version'", (newer,))
    with pytest.raises(StoreError, match=f"schema version '{newer}'.*Upgrade"):
        pg_backend.open()
    with pg_backend.admin() as admin:
        assert admin.execute(f"SELECT value FROM {pg_backend.table('meta')} "
                             f"WHERE key = 'schema_version'").fetchone() == (newer,)
        assert admin.execute(f"SELECT count(*) FROM {pg_backend.table('records')}"
                             ).fetchone() == (1,)


def test_a_schema_with_someone_elses_meta_table_is_refused(pg_backend):
    with pg_backend.admin() as admin:
        admin.execute(f'CREATE SCHEMA "{pg_backend.schema}"')
        admin.execute(f"CREATE TABLE {pg_backend.table('meta')} (key TEXT, value TEXT)")
        admin.execute(f"INSERT INTO {pg_backend.table('meta')} VALUES ('app', 'billing')")
    with pytest.raises(StoreError, match="does not belong to flowstate"):
        pg_backend.open()


def test_flowstate_tables_without_a_meta_table_are_refused(pg_backend):
    with pg_backend.admin() as admin:
        admin.execute(f'CREATE SCHEMA "{pg_backend.schema}"')
        admin.execute(f"CREATE TABLE {pg_backend.table('records')} (id INT)")
    with pytest.raises(StoreError, match="not a flowstate store"):
        pg_backend.open()


def test_without_a_schema_option_the_connections_current_schema_is_used(pg_backend):
    from flowstate_jupyter.stores.postgres import PostgresStore
    search_path = f"-csearch_path={pg_backend.schema}"
    with pytest.raises(StoreError, match="schema=NAME"):  # that schema does not exist yet
        PostgresStore(pg_backend.pg_url, options=search_path)
    with pg_backend.admin() as admin:
        admin.execute(f'CREATE SCHEMA "{pg_backend.schema}"')
    store = PostgresStore(pg_backend.pg_url, options=search_path)
    pg_backend.stores.append(store)
    assert store.schema == pg_backend.schema
    store.write(S, SID, "", {"n": 1})
    assert pg_backend.open().read(S, SID).state == {"n": 1}


# -- change log ordering, values, URLs ---------------------------------------------------------

def test_a_slow_commit_holds_up_no_other_writer_and_no_reader_misses_it(pg_backend):
    """No store-wide lock is held to commit: a write whose COMMIT is held back does not stop
    another writer, and readers place the late commit after what they have already read."""
    from flowstate_jupyter.stores.postgres import PostgresStore

    in_commit, release = threading.Event(), threading.Event()

    class HeldCommit(PostgresStore):
        def _commit(self, conn, work=b""):
            in_commit.set()
            assert release.wait(20)  # its change-log row is written, not committed
            super()._commit(conn, work)

    slow, fast, reader = pg_backend.open(HeldCommit), pg_backend.open(), pg_backend.open()
    seen = []
    reader.subscribe(seen.append)
    slow_writer = threading.Thread(target=slow.write, args=(S, "slow", "", {}))
    slow_writer.start()
    try:
        assert in_commit.wait(10)
        fast_writer = threading.Thread(target=fast.write, args=(S, "fast", "", {}))
        fast_writer.start()
        fast_writer.join(timeout=10)
        assert not fast_writer.is_alive(), "a writer waited for another writer's commit"
        first = reader.changes()
        assert [e["scope_id"] for _, e in first] == ["fast"]  # the slow one is not committed
    finally:
        release.set()
        slow_writer.join()
    later = reader.changes(after=first[-1][0])
    assert [e["scope_id"] for _, e in later] == ["slow"]  # placed after what was read
    log = reader.changes()
    assert [e["scope_id"] for _, e in log] == ["fast", "slow"]
    assert log[0][0] < log[1][0]
    assert wait_for(lambda: len(seen) == 2, timeout=5)
    time.sleep(0.3)
    assert sorted(e["scope_id"] for e in seen) == ["fast", "slow"]  # each once


def test_a_store_of_schema_1_is_upgraded_in_place_and_its_change_log_goes_on(pg_backend):
    from flowstate_jupyter.stores import postgres

    names = postgres._names(pg_backend.schema)
    with pg_backend.admin() as admin:  # a store as the previous version left it
        admin.execute(f'CREATE SCHEMA "{pg_backend.schema}"')
        for statement in postgres._DDL.format(**names).split(";"):
            admin.execute(statement)
        admin.execute(f"INSERT INTO {names['meta']} VALUES ('app', 'flowstate-jupyter'), "
                      f"('schema_version', '1')")
        admin.execute(f"INSERT INTO {names['records']} (scope, scope_id, name, version, state, "
                      f"created_at, updated_at, accessed_at) VALUES ('session', 's1', '', 2, "
                      f"'{{\"n\": 2}}', 1, 2, 2)")
        for version in (1, 2):
            admin.execute(f"INSERT INTO {names['history']} (scope, scope_id, name, version, ts, "
                          f"operation, state) VALUES ('session', 's1', '', %s, %s, 'set', %s)",
                          (version, float(version), f'{{"n": {version}}}'))
            admin.execute(f"INSERT INTO {names['changes']} (origin, event) VALUES ('old', %s)",
                          (f'{{"type": "state_change", "scope": "session", "scope_id": "s1", '
                           f'"version": {version}, "ts": {float(version)}}}',))
    store = pg_backend.open()
    assert [(seq, e["version"]) for seq, e in store.changes()] == [(1, 1), (2, 2)]
    store.update(S, "s1", "", increment)
    assert [(seq, e["version"]) for seq, e in store.changes()] == [(1, 1), (2, 2), (3, 3)]
    assert [h.version for h in store.history(S, "s1")] == [3, 2, 1]
    with pg_backend.admin() as admin:
        assert admin.execute(f"SELECT value FROM {names['meta']} WHERE key = 'schema_version'"
                             ).fetchone() == (str(postgres.SCHEMA_VERSION),)
        assert admin.execute("SELECT to_regclass(%s)", (  # ended_runs has its index
            f'"{pg_backend.schema}".{names["runs_index"]}',)).fetchone()[0] is not None
    store.write("request", "r-1", "$request", {"session": "s1", "ended_at": 5.0})
    assert store.ended_runs("s1") == ["r-1"]
    pg_backend.open().close()  # opening it again finds it current


# -- HOT updates: the indexes name no column a plain record's write changes (schema 4) ---------

def _counted_updates(store, admin, table):
    """(updates, HOT updates) the server has counted for ``table`` so far. ``store`` has one
    pooled connection, which is asked to report its counts first (a backend sends them only
    now and then); ``admin`` is in autocommit, so each read is a fresh snapshot of them."""
    store._run_read("SELECT pg_stat_force_next_flush()", ())
    return admin.execute("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
                         "WHERE relid = %s::regclass", (table,)).fetchone()


def test_writes_and_touches_of_a_plain_record_are_hot_updates(pg_backend):
    """No index of the records table names a column a plain record's write or touch changes,
    so the server updates its row without new index entries (a HOT update), and so does a
    running run's request record, until the write that ends the run."""
    store = pg_backend.open(pool_size=1)
    store.write(S, SID, "", {"n": 0})
    store.write(S, SID, "$meta", {"user": "ann"})  # rows the partial indexes hold
    store.write("request", "r-0", "$request", {"session": SID, "ended_at": 1.0})
    store.write("request", "r-1", "$request", {"session": SID, "status": "running"})
    n = 40
    with pg_backend.admin() as admin:
        table = pg_backend.table("records")
        before = _counted_updates(store, admin, table)
        for _ in range(n):
            store.update(S, SID, "", increment)
            store.touch(S, SID, "")
        writes = _counted_updates(store, admin, table)
        for i in range(n):
            store.write("request", "r-1", "$request",
                        {"session": SID, "status": "running", "step": i})
        runs = _counted_updates(store, admin, table)
    assert writes[0] - before[0] == 2 * n
    assert writes[1] - before[1] >= 2 * n * 0.9  # (one finding its page full is not HOT)
    assert runs[0] - writes[0] == n
    assert runs[1] - writes[1] >= n * 0.9
    assert store.read(S, SID).state == {"n": n}
    assert store.ended_runs(SID) == ["r-0"]


def _derived_columns_wrong(admin, table):
    """Rows whose indexed columns (schema 4) disagree with the record."""
    return admin.execute(
        f"SELECT scope, scope_id, name FROM {table} WHERE recent_at IS DISTINCT FROM "
        f"(CASE WHEN name = '$meta' THEN GREATEST(updated_at, accessed_at) END) "
        f"OR run_session IS DISTINCT FROM (CASE WHEN scope = 'request' AND name = '$request' "
        f"AND NOT deleted THEN state::jsonb -> 'session' END) "
        f"OR run_ended_at IS DISTINCT FROM (CASE WHEN scope = 'request' AND name = '$request' "
        f"AND NOT deleted THEN state::jsonb -> 'ended_at' END)").fetchall()


def test_every_write_path_keeps_the_columns_the_indexes_read(pg_backend):
    """After creates, updates, touches, deletes, nested writes, restores and imports, the
    columns ``list_recent`` and ``ended_runs`` read say what the records say, and both answer
    as the memory store does after the same operations."""
    from flowstate_jupyter.stores.base import HistoryEntry, Record
    from flowstate_jupyter.stores.memory import MemoryStore

    pg = pg_backend.open()
    memory = MemoryStore()

    def both(action):
        action(memory)
        action(pg)
        time.sleep(0.002)  # distinct times, so that the order is the same on both

    def run(scope_id, **state):
        return lambda store: store.write("request", scope_id, "$request", state)

    for sid in ("s1", "s2", "s3"):
        both(lambda store, sid=sid: store.write(S, sid, "$meta", {"user": "ann"}))
    both(run("r-1", session="s1", status="running"))
    both(run("r-2", session="s1", ended_at=5.0))
    both(run("r-3", session="s1", ended_at=7.5))
    both(run("r-1", session="s1", ended_at=6))  # ended by an update
    both(lambda store: store.touch(S, "s1", "$meta"))
    both(lambda store: store.update(S, "s2", "$meta", lambda r: Change(state={"user": "bob"})))
    both(lambda store: store.touch(S, "s1", ""))  # no record: nothing
    both(lambda store: store.delete(S, "s3", "$meta"))
    both(lambda store: store.delete("request", "r-3", "$request"))
    both(run("r-4", session="s2", ended_at=1.0))
    both(lambda store: store.delete("request", "r-4", "$request"))
    both(run("r-4", session="s2", ended_at=2.0))  # written again after its tombstone

    def nested(store):
        def outer(record):
            store.write("request", "r-5", "$request", {"session": "s2", "ended_at": 3.0})
            return Change(state={"user": "cy"})
        store.update(S, "s4", "$meta", outer)
    both(nested)
    restored = [Record(S, "s5", "$meta", 3, {"user": "dee"}, None, False, 50.0, 50.0, 90.0),
                Record("request", "r-6", "$request", 2, {"session": "s2", "ended_at": 4.0},
                       None, False, 1.0, 1.0, 1.0),
                Record("request", "r-7", "$request", 2, {"session": "s2", "ended_at": 9.0},
                       None, True, 1.0, 1.0, 1.0)]
    both(lambda store: store.restore(restored[0], [HistoryEntry(3, 50.0, "set", {}, False)]))
    both(lambda store: store.restore_many([(r, []) for r in restored[1:]]))
    both(lambda store: store.restore(  # over a live run: it is deleted now
        Record("request", "r-2", "$request", 9, {"session": "s1", "ended_at": 5.0}, None,
               True, 1.0, 1.0, 1.0), [], replace=True))

    for store in (memory, pg):
        assert [r.scope_id for r in store.list_recent(S, "$meta")] == \
            ["s4", "s2", "s1", "s5"]
        assert store.ended_runs("s1") == ["r-1"]
        assert store.ended_runs("s2") == ["r-6", "r-5", "r-4"]
    page = pg.list_recent(S, "$meta", limit=2)
    assert [r.scope_id for r in pg.list_recent(S, "$meta", after=recent_key(page[-1]))] == \
        ["s1", "s5"]
    with pg_backend.admin() as admin:
        table = pg_backend.table("records")
        assert _derived_columns_wrong(admin, table) == []
        assert admin.execute(f"SELECT count(recent_at), count(run_session) FROM {table}"
                             ).fetchone() == (5, 4)  # s1-s5 ($meta); r-1, r-4, r-5, r-6


def test_a_store_of_schema_3_is_upgraded_and_lists_its_sessions_and_runs_as_before(pg_backend):
    """The upgrade to schema 4 fills the new columns of the rows schema-3 code wrote and swaps
    the indexes; ``list_recent`` and ``ended_runs`` answer as the memory store does with the
    same records, and go on doing so after more writes, those of schema-3 code still running
    elsewhere (which knows nothing of the new columns) included."""
    from flowstate_jupyter.stores import postgres
    from flowstate_jupyter.stores.base import Record
    from flowstate_jupyter.stores.memory import MemoryStore

    names = postgres._names(pg_backend.schema)
    records = [Record(S, f"s{i}", "$meta", 1, {"user": "ann" if i % 2 else "bob"}, None,
                      i == 3, 100.0 + i, 100.0 + i, 100.0 + i + (50 if i == 2 else 0))
               for i in range(6)]
    records += [Record(S, "s1", "", 4, {"n": 4}, None, False, 1.0, 500.0, 500.0),
                Record("user", "u1", "$meta", 1, {}, None, False, 1.0, 600.0, 600.0)]
    for i, (session, ended_at, deleted) in enumerate([
            ("s1", 10.0, False), ("s1", 30, False), ("s1", None, False), ("s1", 20.0, False),
            ("s1", 40.0, True), ("s2", 5.0, False), (1, 50.0, False)]):
        state = {"session": session, "status": "ended"}
        if ended_at is not None:
            state["ended_at"] = ended_at
        records.append(Record("request", f"r-{i}", "$request", 2, state, None, deleted,
                              1.0, 1.0, 1.0))
    with pg_backend.admin() as admin:  # a store as schema-3 code left it
        admin.execute(f'CREATE SCHEMA "{pg_backend.schema}"')
        for statement in postgres._DDL.format(**names).split(";"):
            admin.execute(statement)
        for step in postgres.MIGRATIONS[:2]:
            for statement in step:
                admin.execute(statement.format(**names))
        admin.execute(f"INSERT INTO {names['meta']} VALUES ('app', 'flowstate-jupyter'), "
                      f"('schema_version', '3')")
        for r in records:
            admin.execute(f"INSERT INTO {names['records']} ({postgres._COLUMNS}) "
                          f"VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                          (r.scope, r.scope_id, r.name, r.version, json.dumps(r.state),
                           r.content, r.deleted, r.created_at, r.updated_at, r.accessed_at))
    memory = MemoryStore()
    memory.restore_many((r, []) for r in records)
    store = pg_backend.open()

    def same_answers():
        for scope in (S, "user"):
            expected = [r.scope_id for r in memory.list_recent(scope, "$meta")]
            assert [r.scope_id for r in store.list_recent(scope, "$meta")] == expected
            assert [r.scope_id for r in store.list_recent(scope, "$meta", limit=2, after=(
                101.0, "s1"))] == [r.scope_id for r in memory.list_recent(
                    scope, "$meta", limit=2, after=(101.0, "s1"))]
            assert [r.scope_id for r in store.list_recent(scope, "$meta", where={
                "user": "ann"})] == [r.scope_id for r in memory.list_recent(
                    scope, "$meta", where={"user": "ann"})]
        for session in ("s1", "s2", "1", "s9"):
            assert store.ended_runs(session) == memory.ended_runs(session)
            assert store.ended_runs(session, skip=1) == memory.ended_runs(session, skip=1)

    same_answers()
    assert [r.scope_id for r in store.list_recent(S, "$meta")] == ["s2", "s5", "s4", "s1", "s0"]
    assert store.ended_runs("s1") == ["r-1", "r-3", "r-0"]
    with pg_backend.admin() as admin:
        assert admin.execute(f"SELECT value FROM {names['meta']} WHERE key = 'schema_version'"
                             ).fetchone() == (str(postgres.SCHEMA_VERSION),)
        assert _derived_columns_wrong(admin, names["records"]) == []
        indexes = dict(admin.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s AND "
            "tablename = 'flowstate_records'", (pg_backend.schema,)).fetchall())
    assert "recent_at" in indexes["flowstate_records_recent"]
    assert "run_session" in indexes["flowstate_records_runs"]
    written = re.compile(r"\b(state|updated_at|accessed_at|deleted)\b")  # by every write
    assert not any(written.search(d.split(" USING ")[1]) for d in indexes.values()), indexes
    for each in (memory, store):  # and on from there
        each.touch(S, "s0", "$meta")
        each.write("request", "r-2", "$request", {"session": "s1", "ended_at": 35.0})
        each.delete("request", "r-1", "$request")
    same_answers()
    assert store.list_recent(S, "$meta")[0].scope_id == "s0"
    assert store.ended_runs("s1") == ["r-2", "r-3", "r-0"]
    touched = Record(S, "s4", "$meta", 1, {"user": "bob"}, None, False, 104.0, 104.0, 4e9)
    ended = Record("request", "r-9", "$request", 1, {"session": "s1", "ended_at": 99.0}, None,
                   False, 1.0, 1.0, 1.0)
    with pg_backend.admin() as admin:  # as schema-3 code's statements write them
        admin.execute(f"UPDATE {names['records']} SET accessed_at = %s WHERE scope = %s "
                      f"AND scope_id = %s AND name = %s", (touched.accessed_at, S, "s4", "$meta"))
        admin.execute(f"INSERT INTO {names['records']} ({postgres._COLUMNS}) "
                      f"VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                      (ended.scope, ended.scope_id, ended.name, ended.version,
                       json.dumps(ended.state), None, False, 1.0, 1.0, 1.0))
        assert _derived_columns_wrong(admin, names["records"]) == []
    memory.restore_many([(touched, []), (ended, [])], replace=True)
    same_answers()
    assert store.list_recent(S, "$meta")[0].scope_id == "s4"
    assert store.ended_runs("s1") == ["r-9", "r-2", "r-3", "r-0"]
    pg_backend.open().close()  # opening it again finds it current


def test_list_recent_and_ended_runs_are_answered_from_their_indexes(pg_backend):
    """The queries imply the partial indexes' predicates, with a generic plan too (the store
    plans its statements once per connection): with sequential scans off, they use them."""
    store = pg_backend.open(pool_size=1, options="-c enable_seqscan=off")
    for i in range(3):
        store.write(S, f"s{i}", "$meta", {"user": "ann"})
        store.write("request", f"r-{i}", "$request", {"session": "s1", "ended_at": float(i)})
    for _ in range(6):  # past psycopg's prepare threshold (5)
        assert [r.scope_id for r in store.list_recent(S, "$meta", limit=2)] == ["s2", "s1"]
        assert store.ended_runs("s1", skip=1) == ["r-1", "r-0"]
    store._run_read("SELECT pg_stat_force_next_flush()", ())
    with pg_backend.admin() as admin:
        scans = dict(admin.execute(
            "SELECT indexrelname, idx_scan FROM pg_stat_user_indexes WHERE schemaname = %s",
            (pg_backend.schema,)).fetchall())
    assert scans["flowstate_records_recent"] >= 6
    assert scans["flowstate_records_runs"] >= 6


# -- how a write reaches the server: two round trips, values as literals -----------------------

def test_a_write_is_sent_with_its_commit_unless_its_history_needs_pruning(pg_backend):
    """A write's statement goes to the server with ``COMMIT``, in one round trip; when the
    write prunes its record's history, or writes nested writes, ``COMMIT`` follows alone."""
    from flowstate_jupyter.stores.postgres import PostgresStore
    sent = []

    class Counting(PostgresStore):
        def _commit(self, conn, work=b""):
            sent.append(work[:26])
            super()._commit(conn, work)

    store = pg_backend.open(Counting, pool_size=1, history_limit=4)
    store.update(S, SID, "", increment)
    assert sent == [b"EXECUTE flowstate_insert ("]
    for _ in range(9):
        store.update(S, SID, "", increment)
    pruned = [v for v in range(2, 11) if prune_cutoff(v, 4)]
    assert pruned and len(pruned) < 9
    assert sent[1:] == [b"" if v in pruned else b"EXECUTE flowstate_update ("
                        for v in range(2, 11)]

    def nested(record):  # a write inside the write: its own statement, then the outer one's
        store.update(S, "other", "", increment)
        return increment(record)

    del sent[:]
    assert store.update(S, SID, "", nested).version == 11
    assert sent == [b""]
    assert_counted_once(store, 11, S, SID)  # (history: the newest versions)
    assert_counted_once(store, 1, S, "other")
    numbers = [seq for seq, _ in store.changes()]
    assert numbers == sorted(numbers) and len(set(numbers)) == 12


def test_a_write_whose_prepared_statements_were_dropped_prepares_them_and_commits_once(
        pg_backend):
    store = pg_backend.open(pool_size=1)
    events = []
    store.subscribe(events.append)
    store.update("project", "default", "", increment)
    store._run_read("DEALLOCATE ALL", ())  # between writes, on the one pooled connection
    store.update("project", "default", "", increment)
    calls = []

    def drops_them_mid_write(record):  # inside the write's transaction, before its UPDATE
        calls.append(record.version)
        if len(calls) == 1:
            store._run_read("DEALLOCATE ALL", ())
        return increment(record)

    assert store.update("project", "default", "", drops_them_mid_write).version == 3
    assert calls == [2, 2]  # the first attempt stored nothing; fn ran again
    assert store.update("project", "default", "", increment).version == 4
    assert_counted_once(store, 4)
    assert [e["version"] for e in events] == [1, 2, 3, 4]


HOSTILE_KEYS = ["it's", "a\\b", "E'\\x41'", "$1", "'); COMMIT; DROP TABLE x; --", "%(scope)s",
                "%s %%", "é€😀", "\u202e", "line\nbreak", "tab\t", " ", "x" * 1000]


@pytest.mark.parametrize("text", HOSTILE_KEYS, ids=range(len(HOSTILE_KEYS)))
def test_keys_and_values_full_of_quotes_are_stored_exactly(pg_backend, text):
    store = pg_backend.open()
    state = {"text": text, text: [text]}
    first = store.write(S, text, text, state, content=text, request_id=text)
    second = store.update(S, text, text, lambda r: Change(state={**r.state, "n": 2},
                                                          operation=text, request_id=text))
    assert (first.version, second.version) == (1, 2)
    fresh = pg_backend.open()
    record = fresh.read(S, text, text)
    assert (record.scope_id, record.name, record.state, record.content) == \
        (text, text, {**state, "n": 2}, text)
    assert [(h.version, h.operation, h.request_id) for h in fresh.history(S, text, text)] == \
        [(2, text, text), (1, "set", text)]
    assert [e["scope_id"] for _, e in fresh.changes()] == [text, text]


@pytest.mark.parametrize("where", ["scope_id", "name", "request_id", "operation"])
def test_a_nul_or_lone_surrogate_in_a_key_is_refused_and_nothing_is_stored(pg_backend, where):
    store = pg_backend.open()
    store.write(S, SID, "", {"n": 1})
    for bad in ("a\x00b", "lone \ud800"):
        key = {"scope_id": SID, "name": ""}
        extra = {}
        if where in key:
            key[where] = bad
        else:
            extra[where] = bad
        with pytest.raises(ValidationError):
            store.update(S, key["scope_id"], key["name"],
                         lambda r, extra=extra: Change(state={"n": 2}, **extra))
    assert (store.read(S, SID).version, len(store.history(S, SID)), len(store.changes())) == \
        (1, 1, 1)


def test_nul_characters_in_content_are_refused_and_nothing_is_stored(pg_backend):
    store = pg_backend.open()
    with pytest.raises(ValidationError, match="NUL"):
        store.write(S, SID, "doc", {}, content="a\x00b")
    assert store.read(S, SID, "doc") is None
    assert store.changes() == []


def test_open_store_takes_postgres_urls_with_options(pg_backend):
    from flowstate_jupyter.stores.postgres import PostgresStore
    store = open_store(pg_backend.url + "&pool_size=2&history_limit=7&timeout=1.5")
    pg_backend.stores.append(store)
    assert isinstance(store, PostgresStore)
    assert (store.schema, store.pool_size, store.history_limit, store.timeout) == \
        (pg_backend.schema, 2, 7, 1.5)
    for i in range(9):
        store.write(S, SID, "", {"i": i})
    assert len(store.history(S, SID)) == 7


def test_the_password_never_shows_in_the_url_or_repr(pg_backend):
    from psycopg.conninfo import conninfo_to_dict

    from flowstate_jupyter.stores.postgres import PostgresStore, redact
    url = pg_backend.pg_url
    secret = conninfo_to_dict(url).get("password")
    if secret is None:  # the throwaway server trusts loopback, so any password connects
        secret = "s3cret"
        url = url.replace("://postgres@", f"://postgres:{secret}@", 1)
    assert secret in url
    store = PostgresStore(url, schema=pg_backend.schema)
    pg_backend.stores.append(store)
    assert secret not in store.url and secret not in repr(store)
    assert redact("postgresql://u:p%40ss@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"


@pytest.mark.parametrize("durability, expected", [("normal", None), ("full", "on")])
def test_durability_full_forces_synchronous_commit(pg_backend, durability, expected):
    store = pg_backend.open(durability=durability)
    with pg_backend.admin() as admin:
        server_default = admin.execute("SHOW synchronous_commit").fetchone()[0]
    setting = store._run_read("SHOW synchronous_commit", ())[0][0]
    assert setting == (expected or server_default)


def test_an_unknown_option_is_refused_naming_the_valid_ones():
    from flowstate_jupyter.stores.postgres import PostgresStore
    with pytest.raises(StoreError, match=r"poolsize.*pool_size"):
        PostgresStore("postgresql://postgres@127.0.0.1:1/x", poolsize=3)
