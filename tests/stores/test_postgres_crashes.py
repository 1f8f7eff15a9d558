"""A PostgreSQL server that crashes mid-write: every write that returned is stored, exactly once.

docs/concepts.md, 'Stores and what "committed" means': a write that returned is in the store for
every process that opens it afterwards, and when the outcome of a ``COMMIT`` cannot be known the
call raises ``StoreError`` saying so. These tests kill a throwaway server of their own with SIGKILL
and restart it (crash recovery). It runs with fsync, ``synchronous_commit`` and ``full_page_writes``
on, unlike the suite's shared server, which turns them off for speed and would legitimately lose
acknowledged writes in a crash.

* A write whose ``COMMIT`` dies with the server, and whose transaction id the restarted server
  hands to another writer, is not reported stored unless it is (the server's ``txid_status`` then
  says "committed" about someone else's transaction).
* Without a crash: a lost ``COMMIT`` the write's own rows cannot decide (the change log was
  pruned past it) raises "the outcome is unknown"; a collection create that also evicts resolves
  through its first row; a restore whose reply was lost says its outcome is unknown.
* A loop of 60 kills (SIGKILL) while several processes write (``inc_state``, ``set_state``,
  ``patch_state``): afterwards a fresh store object finds every acknowledged write exactly once,
  nothing that was reported not stored, and each write whose outcome was reported unknown at
  most once; every failed call raised ``StoreError``.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter

import _pg
import pytest
from _helpers import ROOT, python_env, wait_for

from flowstate_jupyter.errors import StoreError
from flowstate_jupyter.stores.base import HistoryEntry, Record

pytestmark = pytest.mark.postgres

S = "session"
UNKNOWN = "the outcome is unknown"


@pytest.fixture(scope="module")
def server():
    """A durable throwaway server that the tests may kill (not the suite's shared one)."""
    in_ci = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        problem = "psycopg 3 is not installed; pip install -e '.[postgres]' (make test does)"
    else:
        bindir = _pg.find_bindir()
        problem = None if bindir else ("no PostgreSQL server binaries (initdb, pg_ctl) to start "
                                       "a server these tests may kill; apt-get install postgresql")
    if problem:
        if in_ci:
            pytest.fail(f"crash tests cannot run under CI=true: {problem}", pytrace=False)
        pytest.skip(f"crash tests skipped: {problem} (with CI=true this fails instead)")
    pg = _pg.TempPostgres(bindir, durable=True)
    pg.start()
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture
def schema(server):
    name = f"fs_crash_{os.urandom(6).hex()}"
    yield name
    import psycopg
    if not server.started:
        server.restart()
    with psycopg.connect(server.url, autocommit=True) as admin:
        admin.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def open_pg(server, schema, cls=None, **options):
    from flowstate_jupyter.stores.postgres import PostgresStore
    return (cls or PostgresStore)(server.url, schema=schema, **options)


def crash_and_restart(server, *, everything: bool = False) -> None:
    server.crash(everything=everything)
    server.restart()


def take_transaction_ids_up_to(url: str, xid: int) -> bool:
    """Commit transactions on the (restarted) server until one gets ``xid`` or a later id;
    True if one got ``xid`` itself, i.e. the server handed it out a second time."""
    import psycopg
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            got = conn.execute("SELECT txid_current()").fetchone()[0]
            if got >= xid:
                return got == xid


def crashing_store(server, *, when: str):
    """A store class whose next COMMIT meets a crash: ``before`` the server got it (its commit
    record never reaches the disk) or ``after`` it committed (the reply is lost)."""
    import psycopg

    from flowstate_jupyter.stores.postgres import PostgresStore

    class CrashingStore(PostgresStore):
        armed = False
        commits = 0
        xid_reused: bool | None = None

        def _commit(self, conn, work=b""):
            type(self).commits += 1
            if not type(self).armed:
                return super()._commit(conn, work)
            type(self).armed = False
            xid = conn.execute("SELECT txid_current()").fetchone()[0]
            if when == "after":
                super()._commit(conn, work)
            crash_and_restart(server)
            type(self).xid_reused = take_transaction_ids_up_to(server.url, xid)
            if when == "after":
                conn.close()
                raise psycopg.OperationalError("simulated: the reply to COMMIT was lost")
            super()._commit(conn, work)  # on the dead connection: fails as a real lost COMMIT does

    return CrashingStore


def stored_once(server, schema, record: Record) -> None:
    """A fresh store object sees ``record`` as the current version, written exactly once."""
    fresh = open_pg(server, schema)
    try:
        now = fresh.read(record.scope, record.scope_id, record.name)
        assert (now.version, now.state) == (record.version, record.state)
        history = fresh.history(record.scope, record.scope_id, record.name)
        assert [h.version for h in history] == list(range(record.version, 0, -1))
        assert sum(1 for h in history if h.state == record.state) == 1
        events = [e for _, e in fresh.changes() if e["scope_id"] == record.scope_id]
        assert [e["version"] for e in events] == list(range(1, record.version + 1))
    finally:
        fresh.close()


# -- deterministic: one crash during one COMMIT ------------------------------------------------

def test_a_write_whose_commit_died_with_the_server_and_whose_xid_was_reused_is_not_reported_stored(
        server, schema):
    cls = crashing_store(server, when="before")
    store = open_pg(server, schema, cls)
    try:
        store.write(S, "s1", "", {"n": 1})
        cls.armed = True
        try:
            record = store.write(S, "s1", "", {"n": 2})
        except StoreError as exc:  # allowed: it must then say the outcome is unknown
            assert UNKNOWN in str(exc)
            record = None
    finally:
        store.close()
    assert cls.xid_reused is True  # the scenario: another transaction committed under its id
    if record is None:
        fresh = open_pg(server, schema)
        assert fresh.read(S, "s1").state in ({"n": 1}, {"n": 2})
        fresh.close()
    if record is not None:  # it returned: then it is stored, once (here: it ran once more)
        assert (record.version, record.state) == (2, {"n": 2})
        stored_once(server, schema, record)
        assert cls.commits == 3  # the first write, the lost COMMIT, the second try


def test_a_write_that_committed_just_before_the_server_crashed_is_read_back_not_repeated(
        server, schema):
    cls = crashing_store(server, when="after")
    store = open_pg(server, schema, cls)
    events = []
    store.subscribe(events.append)
    try:
        store.write(S, "s1", "", {"n": 1})
        cls.armed = True
        record = store.write(S, "s1", "", {"n": 2}, request_id="r2")
        assert (record.version, record.state) == (2, {"n": 2})
        assert cls.commits == 2  # not run again
        stored_once(server, schema, record)
        assert store.history(S, "s1")[0].request_id == "r2"
        assert wait_for(lambda: [e["version"] for e in events] == [1, 2], timeout=3)
    finally:
        store.close()


def test_a_commit_lost_while_the_server_stays_down_raises_outcome_unknown(server, schema):
    from flowstate_jupyter.stores.postgres import PostgresStore

    class DiesInCommit(PostgresStore):
        armed = False

        def _commit(self, conn, work=b""):
            if type(self).armed:
                type(self).armed = False
                server.crash()  # and it stays down while the store asks
            super()._commit(conn, work)

    store = open_pg(server, schema, DiesInCommit, pool_timeout=1, timeout=1)
    try:
        store.write(S, "s1", "", {"n": 1})
        DiesInCommit.armed = True
        with pytest.raises(StoreError) as caught:
            store.write(S, "s1", "", {"n": 2})
        message = str(caught.value)
        assert UNKNOWN in message and "may or may not be stored" in message
        assert "session 's1'" in message and "retry" in message
        server.restart()
        assert store.read(S, "s1").state in ({"n": 1}, {"n": 2})  # the pool reconnects
    finally:
        store.close()


# -- deterministic, no crash: when the write's own rows cannot decide --------------------------

def lose_commit(store_cls, *, when: str = "before", before_resolve=None):
    """A subclass whose next COMMIT loses its connection ``before`` reaching the server (which
    rolls back) or ``after`` it committed; then ``before_resolve()`` runs, as other writers
    would, before the store looks for its rows."""
    import psycopg

    class LosesCommit(store_cls):
        armed = False
        commits = 0

        def _commit(self, conn, work=b""):
            type(self).commits += 1
            if not type(self).armed:
                return super()._commit(conn, work)
            type(self).armed = False
            if when == "after":
                super()._commit(conn, work)
            conn.close()
            if before_resolve is not None:
                before_resolve()
            raise psycopg.OperationalError(f"simulated: connection lost {when} COMMIT")

    return LosesCommit


def test_a_lost_commit_whose_change_log_was_pruned_past_it_raises_outcome_unknown(
        server, schema):
    from flowstate_jupyter.stores.postgres import PostgresStore
    other = open_pg(server, schema, changelog_limit=1)
    cls = lose_commit(PostgresStore,
                      before_resolve=lambda: [other.write(S, "other", "", {"i": i})
                                              for i in range(3)])
    store = open_pg(server, schema, cls, changelog_limit=1)
    try:
        store.write(S, "s1", "", {"n": 1})
        cls.armed = True
        with pytest.raises(StoreError, match=UNKNOWN):
            store.write(S, "s1", "", {"n": 2})
        # (it was not stored; the store could not prove that, so it did not claim it)
        assert store.read(S, "s1").state == {"n": 1}
        assert [h.version for h in store.history(S, "s1")] == [1]
    finally:
        store.close()
        other.close()


def test_a_lost_commit_of_the_first_write_in_a_fresh_store_runs_once_more(server, schema):
    from flowstate_jupyter.stores.postgres import PostgresStore
    cls = lose_commit(PostgresStore)
    store = open_pg(server, schema, cls)
    try:
        cls.armed = True
        record = store.write(S, "s1", "", {"n": 1})
        stored_once(server, schema, record)
    finally:
        store.close()


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_collection_create_that_evicts_and_loses_its_commit_evicts_and_creates_once(
        server, schema, when):
    import flowstate_jupyter as fs
    from flowstate_jupyter.stores.postgres import PostgresStore
    cls = lose_commit(PostgresStore, when=when)
    store = open_pg(server, schema, cls)
    try:
        definition = fs.define_resource_collection(pattern="files/*", max_instances=2,
                                                   eviction="oldest")
        files = fs.ScopeHandle(store, S, "s1", resources={"files": definition}).resources.files
        files.create("files/a")
        files.create("files/b")
        cls.armed = True  # this create's transaction also deletes files/a, to make room
        files.create("files/c")
        assert cls.commits == (4 if when == "before" else 3)  # run again only if not stored
        fresh = open_pg(server, schema)
        try:
            live = [r.name for r in fresh.list(S, "s1")]
            assert live == ["files:files/b", "files:files/c"]
            assert [h.version for h in fresh.history(S, "s1", "files:files/a")] == [2, 1]
            assert [h.version for h in fresh.history(S, "s1", "files:files/c")] == [1]
            assert len(fresh.changes()) == 4  # a and b created, a deleted, c created
        finally:
            fresh.close()
    finally:
        store.close()


def test_a_restore_whose_commit_reply_was_lost_says_the_outcome_is_unknown(server, schema):
    import psycopg

    from flowstate_jupyter.stores.postgres import PostgresStore

    class ReplyLost(PostgresStore):
        armed = False

        def _commit(self, conn, work=b""):
            super()._commit(conn, work)
            if type(self).armed:
                type(self).armed = False
                conn.close()
                raise psycopg.OperationalError("simulated: the reply to COMMIT was lost")

    store = open_pg(server, schema, ReplyLost)
    try:
        record = Record(S, "s1", "", 3, {"n": 3}, None, False, 1.0, 2.0, 2.0)
        history = [HistoryEntry(v, float(v), "set", {"n": v}, False, None) for v in (3, 2, 1)]
        ReplyLost.armed = True
        with pytest.raises(StoreError) as caught:
            store.restore(record, history)
        assert UNKNOWN in str(caught.value) and "restore it again" in str(caught.value)
        assert store.read(S, "s1").version == 3  # (it had committed: it said so, no guess)
    finally:
        store.close()


# -- the kill loop -----------------------------------------------------------------------------

WRITER = r"""
import json, os, random, sys, threading
from pydantic import BaseModel
import flowstate_jupyter as fs
from flowstate_jupyter.stores.postgres import PostgresStore

url, me, threads, stop = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
UNKNOWN = "the outcome is unknown"

class Counter(BaseModel):
    n: int = 0

class Mine(BaseModel):
    k: int = 0
    note: str = ""

resolved = {"committed": 0, "not committed": 0, "unknown": 0}
resolve = PostgresStore._resolve
def counting(self, tx, exc):  # only counts how each lost COMMIT was decided, for the figures
    try:
        result = resolve(self, tx, exc)
    except fs.StoreError:
        resolved["unknown"] += 1
        raise
    resolved["committed" if result else "not committed"] += 1
    return result
PostgresStore._resolve = counting

store = fs.open_store(url, history_limit=1_000_000, pool_size=threads + 1, pool_timeout=20)
print("ready", flush=True)
print_lock = threading.Lock()
results = []

def writer(t):
    rng = random.Random()
    counter = fs.ScopeHandle(store, "project", "default", state=Counter)
    mine = fs.ScopeHandle(store, "session", f"{me}-{t}", state=Mine)
    out = {"id": f"{me}-{t}", "inc": {"acked": 0, "unknown": 0, "failed": 0},
           "k": {"acked": [], "unknown": [], "failed": []}, "raw": []}
    k = 0
    while not os.path.exists(stop):
        op = rng.choice(("inc", "set", "patch"))
        if op != "inc":
            k += 1
        try:
            if op == "inc":
                ok = counter.inc_state(n=1)
            elif op == "set":
                ok = mine.set_state({"k": k, "note": f"set {k}"})
            else:
                ok = mine.patch_state(k=k)
            if ok is not True:
                out["raw"].append(f"{op} returned {ok!r}")
                continue
            outcome = "acked"
            with print_lock:
                print("a", flush=True)
        except fs.StoreError as exc:
            outcome = "unknown" if UNKNOWN in str(exc) else "failed"
        except Exception as exc:
            out["raw"].append(f"{op}: {type(exc).__name__}: {exc}")
            continue
        if op == "inc":
            out["inc"][outcome] += 1
        else:
            out["k"][outcome].append(k)
    results.append(out)

workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
store.close()
print("result " + json.dumps({"writers": results, "resolved": resolved}), flush=True)
"""

KILLS = 60
PROCESSES = 3
THREADS = 2


class Writers:
    """Writer processes, and a count of the writes they were told were stored."""

    def __init__(self, url: str, stop_file) -> None:
        self.stop_file = stop_file
        self.acked = 0
        self.ready = 0
        self.finals: list[str] = []
        self._lock = threading.Lock()
        # stderr to files: the pool logs a warning for each failed reconnection attempt
        # (closed in finish())
        self.stderr = [open(stop_file.parent / f"writer-{i}.err", "w+")  # noqa: SIM115
                       for i in range(PROCESSES)]
        self.procs = [subprocess.Popen(
            [sys.executable, "-c", WRITER, url, f"p{i}", str(THREADS), str(stop_file)],
            stdout=subprocess.PIPE, stderr=self.stderr[i], text=True, env=python_env(),
            cwd=ROOT) for i in range(PROCESSES)]
        self.readers = [threading.Thread(target=self._read, args=(p,), daemon=True)
                        for p in self.procs]
        for reader in self.readers:
            reader.start()

    def _read(self, proc) -> None:
        for line in proc.stdout:
            if line == "a\n":
                with self._lock:
                    self.acked += 1
            elif line == "ready\n":
                with self._lock:
                    self.ready += 1
            elif line.startswith("result "):
                self.finals.append(line[len("result "):])

    def finish(self) -> tuple[list[dict], Counter]:
        self.stop_file.touch()
        errors = []
        for proc, err in zip(self.procs, self.stderr):
            proc.wait(timeout=120)
            if proc.returncode != 0:
                err.seek(0)
                errors.append(err.read()[-3000:])
            err.close()
        for reader in self.readers:
            reader.join(timeout=30)
        assert not errors, errors
        writers, resolved = [], Counter()
        for text in self.finals:
            data = json.loads(text)
            writers += data["writers"]
            resolved.update(data["resolved"])
        assert len(writers) == PROCESSES * THREADS
        return writers, resolved

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for err in self.stderr:
            err.close()


@pytest.mark.slow
def test_every_write_acknowledged_through_sixty_server_kills_is_stored_exactly_once(
        server, schema, tmp_path):
    rng = random.Random()
    url = f"{server.url}?schema={schema}"
    setup = open_pg(server, schema)
    setup.write("project", "default", "", {"n": 0})  # the shared counter, at version 1
    setup.close()
    writers = Writers(url, tmp_path / "stop")
    started = time.monotonic()
    kills = 0
    try:
        assert wait_for(lambda: writers.ready == PROCESSES and writers.acked >= 20, timeout=60), \
            "the writers never started"
        while kills < KILLS:
            # Kill only while writes flow: some acknowledged since the last restart.
            target = writers.acked + 5
            assert wait_for(lambda: writers.acked >= target, timeout=60), \
                f"no writes acknowledged after restart {kills}"
            time.sleep(rng.uniform(0.0, 0.15))
            # The postmaster alone (its backends finish the statement they are running, a
            # COMMIT included, then exit), or every server process at once (a COMMIT under way
            # dies with its backend).
            crash_and_restart(server, everything=kills % 2 == 1)
            kills += 1
        target = writers.acked + 20  # and writes go on after the last restart
        assert wait_for(lambda: writers.acked >= target, timeout=60)
        results, resolved = writers.finish()
    finally:
        writers.kill()
    elapsed = time.monotonic() - started

    assert [r["raw"] for r in results] == [[]] * len(results)  # StoreError, or True: nothing else
    fresh = open_pg(server, schema)
    try:
        found = 0
        # The shared counter: each acknowledged increment counted exactly once.
        acked = sum(r["inc"]["acked"] for r in results)
        unknown = sum(r["inc"]["unknown"] for r in results)
        failed = sum(r["inc"]["failed"] for r in results)
        counter = fresh.read("project", "default")
        assert acked <= counter.state["n"] <= acked + unknown
        assert counter.version == counter.state["n"] + 1
        found += acked
        # Each writer's own record: its history lists each k it was told is stored exactly once,
        # none it was told is not stored, each unknown one at most once, in order.
        k_acked = k_unknown = k_failed = 0
        for r in results:
            record = fresh.read(S, r["id"])
            history = fresh.history(S, r["id"], limit=None)
            assert [h.version for h in history] == list(range(record.version, 0, -1))
            ks = [h.state["k"] for h in reversed(history)]
            times = Counter(ks)
            assert ks == sorted(ks) and max(times.values()) == 1, "a write was stored twice"
            assert all(times[k] == 1 for k in r["k"]["acked"]), "an acknowledged write is lost"
            assert not any(times[k] for k in r["k"]["failed"]), "a refused write was stored"
            assert set(ks) <= set(r["k"]["acked"]) | set(r["k"]["unknown"])
            assert record.state["k"] == ks[-1]
            found += sum(times[k] for k in r["k"]["acked"])
            k_acked += len(r["k"]["acked"])
            k_unknown += len(r["k"]["unknown"])
            k_failed += len(r["k"]["failed"])
    finally:
        fresh.close()
    total_acked = acked + k_acked
    assert found == total_acked
    print(f"\n{kills} kills in {elapsed:.0f} s: {total_acked} writes acknowledged, {found} found; "
          f"{unknown + k_unknown} outcome-unknown errors (increments: the counter is "
          f"{counter.state['n']} for {acked} acknowledged + {unknown} unknown), "
          f"{failed + k_failed} refused as not stored; lost COMMITs decided: {dict(resolved)}")
