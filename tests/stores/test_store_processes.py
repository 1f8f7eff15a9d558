"""No lost updates at the store level: several processes increment one record through
``store.update`` at the same time, and every increment is accounted for exactly once."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from _helpers import ROOT, python_env

WORKER = r"""
import json, os, sys, time
from flowstate_jupyter.stores import open_store
from flowstate_jupyter.stores.base import Change

url, count, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
pid = os.getpid()

def increment(record):
    n = record.state["n"] if record is not None else 0
    return Change(state={"n": n + 1}, operation="increment", request_id=f"p{pid}")

store = open_store(url, history_limit=5000)
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.002)
seen = []
for _ in range(count):
    record = store.update("project", "default", "", increment)
    seen.append([record.version, record.state["n"]])
store.close()
print(json.dumps(seen), flush=True)
"""


def run_incrementers(url: str, processes: int, each: int, tmp_path) -> list[list[list[int]]]:
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, url, str(each), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=python_env(), cwd=ROOT) for _ in range(processes)]
    try:
        for proc in procs:  # all open and waiting, so they really run at the same time
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        go.touch()
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def check_every_increment_counted(store, results, total: int) -> None:
    # Each process saw its own increments commit, each at a distinct version, state == version.
    committed = [tuple(pair) for seen in results for pair in seen]
    assert all(version == n for version, n in committed)
    assert sorted(version for version, _ in committed) == list(range(1, total + 1))
    for seen in results:
        versions = [version for version, _ in seen]
        assert versions == sorted(versions)  # one process's writes commit in order
    record = store.read("project", "default")
    assert (record.version, record.state) == (total, {"n": total})
    history = store.history("project", "default")
    assert [h.version for h in history] == list(range(total, 0, -1))
    assert all(h.state == {"n": h.version} and h.operation == "increment" for h in history)
    assert len({h.request_id for h in history}) == len(results)
    events = [e for _, e in store.changes() if e["scope"] == "project"]
    assert sorted(e["version"] for e in events) == list(range(1, total + 1))


def test_four_processes_incrementing_one_sqlite_record_lose_nothing(tmp_path):
    from flowstate_jupyter.stores.sqlite import SQLiteStore
    path = tmp_path / "shared.db"
    started = time.monotonic()
    results = run_incrementers(f"sqlite:///{path}", 4, 250, tmp_path)
    assert time.monotonic() - started < 30
    with SQLiteStore(path, history_limit=5000) as store:
        check_every_increment_counted(store, results, 1000)


@pytest.mark.postgres
def test_two_processes_incrementing_one_postgres_record_lose_nothing(pg_backend, tmp_path):
    pg_backend.open().read("project", "default")  # tables exist before the race starts
    started = time.monotonic()
    results = run_incrementers(pg_backend.url, 2, 1000, tmp_path)
    assert time.monotonic() - started < 30
    check_every_increment_counted(pg_backend.open(history_limit=5000), results, 2000)


@pytest.mark.postgres
def test_postgres_processes_racing_to_create_the_record_lose_nothing(pg_backend, tmp_path):
    # No store opened first: the processes race to create the tables and the record.
    results = run_incrementers(pg_backend.url, 3, 20, tmp_path)
    check_every_increment_counted(pg_backend.open(), results, 60)

