"""SQLite-specific behaviour: pragmas, permissions, schema version, refusing foreign files."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
import time
from pathlib import Path

import pytest

from flowstate_jupyter.errors import StoreError
from flowstate_jupyter.stores import open_store
from flowstate_jupyter.stores.sqlite import APP_ID, SCHEMA_VERSION, SQLiteStore


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


def make_store_file(path: Path) -> None:
    with SQLiteStore(path) as store:
        store.write("session", "s1", "", {"n": 1})


def pragma(conn: sqlite3.Connection, name: str):
    return conn.execute(f"PRAGMA {name}").fetchone()[0]


def test_store_uses_wal_and_a_busy_timeout_of_at_least_five_seconds(db):
    with SQLiteStore(db) as store:
        assert pragma(store._conn, "journal_mode") == "wal"
        assert pragma(store._conn, "busy_timeout") >= 5000
    conn = sqlite3.connect(db)  # WAL is a property of the file, not just the connection
    assert pragma(conn, "journal_mode") == "wal"
    conn.close()


@pytest.mark.parametrize("durability, expected", [(None, 1), ("normal", 1), ("full", 2)])
def test_synchronous_is_normal_by_default_and_full_with_durability_full(db, durability,
                                                                          expected):
    options = {} if durability is None else {"durability": durability}
    with SQLiteStore(db, **options) as store:
        assert pragma(store._conn, "synchronous") == expected  # 1 NORMAL, 2 FULL


def test_durability_full_is_accepted_in_the_url(db):
    with open_store(f"sqlite:///{db}?durability=full") as store:
        assert isinstance(store, SQLiteStore)
        assert pragma(store._conn, "synchronous") == 2


def test_unknown_durability_is_refused(db):
    with pytest.raises(ValueError, match="durability"):
        SQLiteStore(db, durability="paranoid")
    assert not db.exists()


def test_new_file_and_new_folder_are_readable_by_the_owner_only(tmp_path):
    path = tmp_path / "fresh" / "flowstate.db"
    old_umask = os.umask(0)  # even with a permissive umask
    try:
        with SQLiteStore(path) as store:
            store.write("session", "s1", "", {"secret": True})
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_schema_version_and_app_are_recorded(db):
    make_store_file(db)
    conn = sqlite3.connect(db)
    meta = dict(conn.execute("SELECT key, value FROM fs_meta"))
    conn.close()
    assert meta == {"app": APP_ID, "schema_version": str(SCHEMA_VERSION)}


def test_reopening_a_store_keeps_its_records(db):
    make_store_file(db)
    with SQLiteStore(db) as store:
        record = store.read("session", "s1")
        assert (record.version, record.state) == (1, {"n": 1})
        assert store.write("session", "s1", "", {"n": 2}, expected=1).version == 2


def test_an_empty_file_becomes_a_store(db):
    db.touch(mode=0o600)
    with SQLiteStore(db) as store:
        assert store.write("session", "s1", "", {}).version == 1


# -- files it must refuse, untouched -----------------------------------------------------------

def _refused_untouched(path: Path, match: str) -> StoreError:
    before = path.read_bytes()
    mtime = path.stat().st_mtime_ns
    with pytest.raises(StoreError, match=match) as exc:
        SQLiteStore(path)
    assert path.read_bytes() == before
    assert path.stat().st_mtime_ns == mtime
    return exc.value


def test_a_file_that_is_not_sqlite_is_refused_untouched(db):
    db.write_text("name,value\nalice,1\n")
    error = _refused_untouched(db, "not a SQLite database")
    assert str(db) in str(error)


def test_another_apps_sqlite_file_is_refused_untouched(db):
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    conn.execute("INSERT INTO invoices (total) VALUES (9.5)")
    conn.commit()
    conn.close()
    error = _refused_untouched(db, "not a flowstate store")
    assert "invoices" in str(error)


def test_a_sqlite_file_with_a_foreign_fs_meta_is_refused_untouched(db):
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE fs_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute("INSERT INTO fs_meta VALUES ('app', 'someone-else')")
    conn.commit()
    conn.close()
    _refused_untouched(db, "not a flowstate store")


def test_a_file_with_a_valid_header_and_garbage_after_is_refused_untouched(db):
    db.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 64)
    _refused_untouched(db, "corrupt")


def test_a_store_whose_pages_were_overwritten_is_refused_untouched(db):
    make_store_file(db)
    data = bytearray(db.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    assert len(data) > page_size  # the store has pages beyond the first
    data[page_size:] = os.urandom(len(data) - page_size)
    db.write_bytes(bytes(data))
    _refused_untouched(db, "corrupt")


@pytest.mark.parametrize("found, hint", [(SCHEMA_VERSION + 1, "Upgrade"), (0, "Export")])
def test_a_store_with_another_schema_version_is_refused_untouched(db, found, hint):
    make_store_file(db)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE fs_meta SET value = ? WHERE key = 'schema_version'", (str(found),))
    conn.commit()
    conn.close()
    error = _refused_untouched(db, f"schema version {found}")
    assert hint in str(error)


def test_a_folder_is_refused_as_a_store_path(tmp_path):
    with pytest.raises(StoreError, match="is a folder"):
        SQLiteStore(tmp_path)


# -- locking -----------------------------------------------------------------------------------

def test_a_store_locked_past_its_timeout_raises_store_error_not_a_hang(db):
    store = SQLiteStore(db, timeout=0.3)
    store.write("session", "s1", "", {"n": 1})
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    try:
        started = time.monotonic()
        with pytest.raises(StoreError, match="locked"):
            store.write("session", "s1", "", {"n": 2})
        assert time.monotonic() - started < 3
        assert store.read("session", "s1").version == 1  # readers are not blocked (WAL)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert store.write("session", "s1", "", {"n": 2}, expected=1).version == 2
    store.close()


def test_a_writer_waits_for_a_short_lock_instead_of_failing(db):
    store = SQLiteStore(db, timeout=5)
    blocker = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, lambda: blocker.execute("COMMIT"))
    release.start()
    try:
        assert store.write("session", "s1", "", {"n": 1}).version == 1
    finally:
        release.join()
        blocker.close()
        store.close()


# The schema of version 1 (flowstate-jupyter before the last write moved onto the record).
_SCHEMA_1 = """
CREATE TABLE fs_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE records (
    scope TEXT NOT NULL, scope_id TEXT NOT NULL, name TEXT NOT NULL,
    version INTEGER NOT NULL, state TEXT NOT NULL, content TEXT,
    deleted INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, accessed_at REAL NOT NULL,
    PRIMARY KEY (scope, scope_id, name)
) WITHOUT ROWID;
CREATE INDEX records_by_name ON records (scope, name);
CREATE TABLE history (
    scope TEXT NOT NULL, scope_id TEXT NOT NULL, name TEXT NOT NULL, version INTEGER NOT NULL,
    ts REAL NOT NULL, operation TEXT NOT NULL, state TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0, request_id TEXT,
    PRIMARY KEY (scope, scope_id, name, version)
) WITHOUT ROWID;
CREATE TABLE changes (seq INTEGER PRIMARY KEY, origin TEXT NOT NULL, event TEXT NOT NULL);
INSERT INTO fs_meta VALUES ('app', 'flowstate-jupyter'), ('schema_version', '1');
INSERT INTO records VALUES ('session', 's1', '', 2, '{"n": 2}', NULL, 0, 1.0, 2.0, 2.0);
INSERT INTO history VALUES ('session', 's1', '', 1, 1.0, 'set', '{"n": 1}', 0, NULL),
                           ('session', 's1', '', 2, 2.0, 'increment', '{"n": 2}', 0, NULL);
"""


# Version 2 added the last write's operation, request id and event to the record.
_SCHEMA_2 = (_SCHEMA_1.replace("accessed_at REAL NOT NULL,\n    PRIMARY",
                               "accessed_at REAL NOT NULL,\n    operation TEXT, request_id TEXT, "
                               "event TEXT,\n    PRIMARY", 1)
             .replace("('schema_version', '1')", "('schema_version', '2')")
             .replace("NULL, 0, 1.0, 2.0, 2.0)",
                      "'{\"a\": 1}', 0, 1.0, 2.0, 2.5, 'increment', 'r2', "
                      "NULL), ('session', 's1', 'plan', 1, '{}', NULL, 1, 1.0, 1.0, 1.0, 'delete', "
                      "NULL, NULL)"))


# Version 3 made ``records`` a rowid table; its change-log rows carry version and ts in the text.
_OLD_EVENT = {"version": 2, "ts": 2.5, "type": "state_change", "scope": "session",
              "scope_id": "s1", "operation": "increment", "path": None, "delta": {"n": 1},
              "request_id": "r2"}
_SCHEMA_3 = (_SCHEMA_2.replace(",\n    PRIMARY KEY (scope, scope_id, name)\n) WITHOUT ROWID;",
                               ",\n    UNIQUE (scope, scope_id, name)\n);", 1)
             .replace("('schema_version', '2')", "('schema_version', '3')")
             + f"INSERT INTO changes VALUES (7, 'elsewhere', '{json.dumps(_OLD_EVENT)}');\n")


@pytest.mark.parametrize("old_schema", [_SCHEMA_1, _SCHEMA_2, _SCHEMA_3],
                         ids=["schema-1", "schema-2", "schema-3"])
def test_an_older_store_is_upgraded_in_place_keeping_records_and_history(db, old_schema):
    db.touch(mode=0o600)
    conn = sqlite3.connect(db)
    conn.executescript(old_schema)
    before = conn.execute("SELECT scope, scope_id, name, version, state, content, deleted, "
                          "created_at, updated_at, accessed_at FROM records "
                          "ORDER BY name").fetchall()
    conn.close()
    with SQLiteStore(db) as store:
        assert [tuple(r) for r in store.list(include_deleted=True)] == [
            (*row[:4], json.loads(row[4]), row[5], bool(row[6]), *row[7:]) for row in before]
        store.write("session", "s1", "", {"n": 3}, expected=2)
        assert [(e.version, e.state) for e in store.history("session", "s1")] == \
            [(3, {"n": 3}), (2, {"n": 2}), (1, {"n": 1})]
        assert store.changes()[-1][1]["version"] == 3
        if old_schema is _SCHEMA_3:  # a change-log row written before the upgrade reads as it did
            assert store.changes()[0] == (7, _OLD_EVENT)
        assert store.doctor()["integrity"] == "ok"
    conn = sqlite3.connect(db)
    assert dict(conn.execute("SELECT key, value FROM fs_meta")) == \
        {"app": APP_ID, "schema_version": str(SCHEMA_VERSION)}
    assert "WITHOUT ROWID" not in conn.execute(
        "SELECT sql FROM sqlite_master WHERE name = 'records'").fetchone()[0]
    indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master "
                                              "WHERE type = 'index' AND sql IS NOT NULL")}
    assert indexes == {"records_by_name", "records_recent", "records_runs"}
    assert conn.execute("SELECT sql FROM sqlite_master WHERE name = 'records_by_name'"
                        ).fetchone()[0].endswith("WHERE scope <> 'request'")
    conn.close()


def test_a_run_record_adds_no_by_name_index_entry_and_listing_by_name_finds_every_scope(db):
    with SQLiteStore(db) as store:
        for i in range(3):
            store.write("request", f"r-{i}", "$request", {"session": "s1"})
            store.write("session", f"s-{i}", "$meta", {"user": "u"})
        store.write("o'brien", "x", "$meta", {"quoted": True})  # a scope the SQL must quote
        conn = store._conn
        partial = {row[1]: row[4] for row in conn.execute("PRAGMA index_list(records)")}
        assert partial["records_by_name"] == 1
        entries = conn.execute("SELECT scope, name FROM records INDEXED BY records_by_name "
                               "WHERE scope <> 'request' AND name >= ''").fetchall()
        assert sorted(entries) == [("o'brien", "$meta")] + [("session", "$meta")] * 3
        assert [r.scope_id for r in store.list("request", name="$request")] == \
            ["r-0", "r-1", "r-2"]
        assert [r.scope_id for r in store.list("session", name="$meta")] == ["s-0", "s-1", "s-2"]
        assert [r.state for r in store.list("o'brien", name="$meta")] == [{"quoted": True}]
        store.write("nul\x00scope", "x", "n", {"n": 1})  # SQL text cannot hold it: bound instead
        assert [r.state for r in store.list("nul\x00scope", name="n")] == [{"n": 1}]


def test_a_sessions_ended_runs_are_found_from_an_index_without_reading_all_runs(db):
    with SQLiteStore(db) as store:
        for i in range(3):
            store.write("request", f"r-{i}", "$request", {"session": "s1", "ended_at": 1.0 + i})
        seen: list[str] = []
        store._conn.set_trace_callback(seen.append)
        assert store.ended_runs("s1", skip=1) == ["r-1", "r-0"]
        store._conn.set_trace_callback(None)
        query = next(s for s in seen if s.startswith("SELECT"))
        plan = " ".join(str(row[3]) for row in store._conn.execute("EXPLAIN QUERY PLAN " + query))
        listing = next(s for s in seen if s.startswith("UPDATE"))  # the runs written since
        listing_plan = [row[3] for row in store._conn.execute("EXPLAIN QUERY PLAN " + listing)]
    assert "USING INDEX records_runs" in plan and "SCAN" not in plan, plan
    assert "SEARCH records USING INTEGER PRIMARY KEY (rowid>?)" in listing_plan, listing_plan


def _indexed_runs(conn) -> list[str]:
    """The request records in ``records_runs`` (read from the index alone)."""
    return sorted(row[0] for row in conn.execute(
        "SELECT scope_id FROM records INDEXED BY records_runs WHERE scope = 'request' "
        "AND name = '$request' AND deleted = 0 AND run_listed = 1 "
        "AND json_extract(state, '$.session') >= ''"))


def test_a_run_enters_the_runs_index_when_ended_runs_next_looks_not_when_written(db):
    with SQLiteStore(db) as store, SQLiteStore(db) as other:
        for i in range(3):
            store.write("request", f"r-{i}", "$request", {"session": "s1", "ended_at": 1.0 + i})
        assert _indexed_runs(store._conn) == []
        assert other.ended_runs("s1") == ["r-2", "r-1", "r-0"]  # another connection lists them
        assert _indexed_runs(store._conn) == ["r-0", "r-1", "r-2"]
        store.write("request", "r-3", "$request", {"session": "s1", "ended_at": 9.0})
        store.write("request", "r-4", "$request", {"session": "s2", "ended_at": None})
        assert _indexed_runs(store._conn) == ["r-0", "r-1", "r-2"]
        assert store.ended_runs("s2") == [] and store.ended_runs("s1", skip=1) == [
            "r-2", "r-1", "r-0"]
        assert _indexed_runs(store._conn) == ["r-0", "r-1", "r-2", "r-3", "r-4"]
        # a run listed while unended is found once it ends (its index entry follows its state)
        store.write("request", "r-4", "$request", {"session": "s2", "ended_at": 3.0})
        assert store.ended_runs("s2") == ["r-4"]


def test_ended_runs_finds_every_run_after_purges_restores_and_other_writers_as_memory_does(db):
    """Every run not listed yet has a rowid above the highest listed one, whatever happened in
    between: the newest rows purged (their rowids handed out again), a listed run restored over
    (a new row), runs written through another connection, inside a transaction and rolled back."""
    from flowstate_jupyter.stores.memory import MemoryStore

    memory = MemoryStore()
    with SQLiteStore(db) as store, SQLiteStore(db) as other:
        def both(action) -> None:
            action(store)
            action(memory)

        def run(rid: str, session: str, ended: float | None, via=None) -> None:
            state = {"session": session, "ended_at": ended}
            (via or store).write("request", rid, "$request", state)
            memory.write("request", rid, "$request", state)

        def check() -> None:
            for session in ("s1", "s2"):
                for skip in (0, 1):
                    assert store.ended_runs(session, skip=skip) == \
                        memory.ended_runs(session, skip=skip), (session, skip)

        for i in range(4):
            run(f"r-{i}", "s1", 1.0 + i)
        check()  # all listed
        both(lambda s: s.purge("request", ["r-3", "r-2"]))  # the two newest rows go
        run("r-5", "s1", 5.0)  # its rowid was r-2's
        run("r-6", "s2", 6.0, via=other)
        check()
        record = store.read("request", "r-1", "$request")
        both(lambda s: s.restore(record._replace(state={"session": "s2", "ended_at": 7.0}), [],
                                 replace=True))
        run("r-8", "s1", None)
        check()
        run("r-8", "s1", 8.0)  # ended after it was listed
        with pytest.raises(RuntimeError):
            def fail(current):
                store.ended_runs("s1")  # lists inside the write, which then rolls back
                raise RuntimeError("rolled back")
            store.update("request", "r-9", "$request", fail)
        run("r-10", "s2", 10.0)
        check()
        assert _indexed_runs(store._conn) == sorted(
            ["r-0", "r-1", "r-5", "r-6", "r-8", "r-10"])


def test_runs_written_by_an_older_version_into_an_upgraded_file_are_found_too(db):
    """A process of schema 8 still open on the file when another upgrades it writes rows without
    ``run_listed``: the column's default keeps them (and every run around them) findable."""
    with SQLiteStore(db) as store:
        store.write("request", "r-0", "$request", {"session": "s1", "ended_at": 1.0})
        assert store.ended_runs("s1") == ["r-0"]
        store.write("request", "r-1", "$request", {"session": "s1", "ended_at": 2.0})
        old = sqlite3.connect(db)  # schema 8's INSERT, as that version's store sends it
        old.execute("INSERT INTO records (scope, scope_id, name, version, state, content, "
                    "deleted, created_at, updated_at, accessed_at, operation, request_id, event, "
                    "history_bytes) VALUES ('request', 'r-old', '$request', 1, ?, NULL, 0, 3.0, "
                    "3.0, 3.0, 'set', 'r-old', NULL, 0)",
                    (json.dumps({"session": "s1", "ended_at": 3.0}),))
        old.commit()
        old.close()
        store.write("request", "r-2", "$request", {"session": "s1", "ended_at": 4.0})
        assert store.ended_runs("s1") == ["r-2", "r-old", "r-1", "r-0"]


def test_a_store_of_schema_8_lists_its_runs_and_new_ones_after_the_upgrade(db):
    from flowstate_jupyter.stores.sqlite import _RUNS_INDEX

    with SQLiteStore(db) as store:
        for i in range(3):
            store.write("request", f"r-{i}", "$request", {"session": "s1", "ended_at": 1.0 + i})
    conn = sqlite3.connect(db)  # make it a schema-8 file again, its runs in schema 7's index
    conn.execute("DROP INDEX records_runs")
    conn.execute("ALTER TABLE records DROP COLUMN run_listed")
    conn.execute(_RUNS_INDEX)
    conn.execute("UPDATE fs_meta SET value = '8' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with SQLiteStore(db) as store:
        assert _indexed_runs(store._conn) == ["r-0", "r-1", "r-2"]  # listed as they were
        store.write("request", "r-3", "$request", {"session": "s1", "ended_at": 4.0})
        assert store.ended_runs("s1") == ["r-3", "r-2", "r-1", "r-0"]
        assert store.doctor()["integrity"] == "ok"
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT value FROM fs_meta WHERE key = 'schema_version'"
                        ).fetchone()[0] == str(SCHEMA_VERSION) == "9"
    assert conn.execute("SELECT sql FROM sqlite_master WHERE name = 'records_runs'"
                        ).fetchone()[0].endswith("AND run_listed = 1")
    conn.close()
