"""PostgreSQL-specific behaviour: dropped connections, commits whose outcome is unknown, lock
timeouts, schema versioning, commit-ordered change log, URLs and options."""

from __future__ import annotations

import socket
import threading
import time
import uuid

import pytest
from _helpers import wait_for

from flowstate_jupyter.errors import StoreError, ValidationError
from flowstate_jupyter.stores import open_store
from flowstate_jupyter.stores.base import Change

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
            def _commit(self, conn):
                faults.calls += 1
                step = faults.plan.pop(0) if faults.plan else None
                if step == "after":
                    conn.execute("COMMIT")
                if step is not None:
                    conn.close()  # the server rolls back an uncommitted transaction
                    raise psycopg.OperationalError(
                        f"simulated: connection lost {step} the server committed")
                super()._commit(conn)

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
        def _commit(self, conn):
            in_commit.set()
            assert release.wait(20)  # its change-log row is written, not committed
            super()._commit(conn)

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
