"""SQLite's files stay within their byte bounds (issue 13 §5).

* The WAL: several processes writing at once used to keep SQLite from ever starting the WAL over,
  so it grew for as long as they wrote (540 MB in 15 s with 4 writers) and never shrank while a
  store was open. It now stays under ``wal_limit_bytes`` (64 MiB by default).
* The change log and history: 300 patches of 500 KB made a 201 MB file (150 MB of it change log).
  Change-log items over ``changelog_item_bytes`` keep their delta out, and history keeps at most
  ``history_limit_bytes`` per record, so the same writes now stay within those bounds.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from _helpers import python_env
from pydantic import BaseModel

import flowstate_jupyter as fs
from flowstate_jupyter.stores.base import (
    DEFAULT_CHANGELOG_ITEM_BYTES,
    DEFAULT_CHANGELOG_LIMIT,
    DEFAULT_HISTORY_LIMIT_BYTES,
)
from flowstate_jupyter.stores.sqlite import DEFAULT_WAL_LIMIT_BYTES, SQLiteStore

MiB = 1024 * 1024

WRITER = r"""
import json, sys, time
import flowstate_jupyter as fs
from pydantic import BaseModel

class S(BaseModel):
    n: int = 0

store = fs.open_store(sys.argv[1])
handle = fs.ScopeHandle(store, "session", sys.argv[2], state=S)
print("ready", flush=True)
sys.stdin.readline()
deadline = time.monotonic() + float(sys.argv[3])
acked = 0
while time.monotonic() < deadline:
    acked += bool(handle.inc_state(n=1))
store.close()
print(json.dumps(acked))
"""


def test_four_writer_processes_keep_the_wal_under_its_documented_bound(tmp_path):
    db = tmp_path / "busy.db"
    url = f"sqlite:///{db}"
    with fs.open_store(url) as store:  # a database of about 2 MB, as in the issue
        for i in range(1200):
            store.write("project", f"p{i}", "", {"blob": "x" * 1000})
    assert db.stat().st_size > 1.5 * MiB
    seconds = 15.0
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, url, f"w{i}", str(seconds)],
                                env=python_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for i in range(4)]
    for proc in writers:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    watcher = fs.open_store(url)  # a store open the whole time, as a notebook would keep it
    try:
        for proc in writers:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        largest = 0
        while any(proc.poll() is None for proc in writers):
            try:
                largest = max(largest, os.stat(f"{db}-wal").st_size)
            except FileNotFoundError:
                pass
            time.sleep(0.01)
        acked = []
        for proc in writers:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            acked.append(json.loads(out.strip().splitlines()[-1]))
        after = os.stat(f"{db}-wal").st_size
        print(f"WAL: largest {largest / MiB:.1f} MiB (bound {DEFAULT_WAL_LIMIT_BYTES / MiB:.0f} "
              f"MiB), {after / MiB:.1f} MiB after, {sum(acked)} writes by 4 processes in "
              f"{seconds:g} s")
        assert largest < DEFAULT_WAL_LIMIT_BYTES
        assert after < DEFAULT_WAL_LIMIT_BYTES, "and it does not stay large while stores are open"
        assert all(count > 100 for count in acked)
        assert sum(watcher.read("session", f"w{i}").state["n"] for i in range(4)) == sum(acked)
        assert watcher.doctor()["problems"] == []
    finally:
        watcher.close()


class Doc(BaseModel):
    body: str = ""
    n: int = 0


def test_three_hundred_patches_of_500_kb_stay_within_the_change_log_and_history_bounds(tmp_path):
    db = tmp_path / "big.db"
    with fs.open_store(f"sqlite:///{db}") as store:
        handle = fs.ScopeHandle(store, "session", "s1", state=Doc)
        for i in range(300):
            assert handle.patch_state(body=f"{i:03d}" + "x" * 500_000, n=i)
        report = store.doctor()
        log = store.changes()
        history = store.history("session", "s1")
        file_bytes = db.stat().st_size
    print(f"300 patches of 500 KB: file {file_bytes / MiB:.1f} MiB, history "
          f"{report['history_bytes'] / MiB:.1f} MiB in {len(history)} versions, change log "
          f"{report['changelog_bytes'] / 1024:.0f} KiB in {report['changes']} items")
    assert history[0].state["n"] == 299 and len(history) >= 2
    assert report["history_bytes"] <= DEFAULT_HISTORY_LIMIT_BYTES
    assert report["changelog_bytes"] <= DEFAULT_CHANGELOG_LIMIT * DEFAULT_CHANGELOG_ITEM_BYTES
    assert all(event["delta"] is None and event["omitted"]["bytes"] > 500_000
               for _, event in log[1:])
    # history, the record itself, and SQLite's free pages (reused, never more than a prune)
    assert file_bytes < DEFAULT_HISTORY_LIMIT_BYTES + 4 * MiB, file_bytes
    assert report["integrity"] == "ok"


def test_history_bytes_kept_on_each_record_match_its_history(tmp_path):
    """The running count the byte bound relies on stays exact through both kinds of pruning."""
    db = tmp_path / "count.db"
    rng = random.Random(13)
    with SQLiteStore(db, history_limit=7, history_limit_bytes=20_000) as store:
        for i in range(400):
            name = rng.choice(["", "a", "b"])
            state = {"i": i, "text": "é" * rng.choice([0, 10, 800, 3000, 12_000])}
            if rng.random() < 0.1:
                store.delete("session", "s1", name)
            else:
                store.write("session", "s1", name, state)
            if i % 97 == 0:
                store.prune_history(3)
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT r.name, r.history_bytes, (SELECT COALESCE(SUM(length(CAST(h.state AS BLOB))),"
            " 0) FROM history AS h WHERE h.scope = r.scope AND h.scope_id = r.scope_id "
            "AND h.name = r.name), (SELECT COUNT(*) FROM history AS h WHERE h.scope = r.scope "
            "AND h.scope_id = r.scope_id AND h.name = r.name) FROM records AS r").fetchall()
    finally:
        conn.close()
    assert len(rows) == 3
    for name, counted, actual, versions in rows:
        assert counted == actual, name
        assert actual <= 20_000 or versions == 1, (name, actual, versions)  # newest always kept


def test_a_store_of_schema_4_gets_its_history_bytes_counted_when_upgraded(tmp_path):
    db = tmp_path / "v4.db"
    with SQLiteStore(db) as store:
        for i in range(5):
            store.write("session", "s1", "", {"i": i, "text": "x" * 100})
    conn = sqlite3.connect(db)  # make it a schema-4 file again
    conn.execute("ALTER TABLE records DROP COLUMN history_bytes")
    conn.execute("DROP INDEX records_runs")  # (schema 7's, over schema 9's column)
    conn.execute("ALTER TABLE records DROP COLUMN run_listed")
    conn.execute("UPDATE fs_meta SET value = '4' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with SQLiteStore(db, history_limit_bytes=400) as store:
        assert store.doctor()["history_bytes"] == sum(
            len(json.dumps(h.state, ensure_ascii=False)) for h in store.history("session", "s1"))
        store.write("session", "s1", "", {"i": 5, "text": "x" * 100})
        assert next(h.version for h in store.history("session", "s1")) == 6
        assert store.doctor()["history_bytes"] <= 400
    assert Path(db).exists()
