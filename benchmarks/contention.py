"""Contention: 1, 2 and 4 processes incrementing one counter in one SQLite file.

Each process increments the same record a fixed number of times, all starting together, and
afterwards the counter must equal processes x increments: anything less is a lost update. The
same runs are made, on fresh files, with

* **ours**: ``ScopeHandle.inc_state(count=1)`` on our SQLite store (default durability: WAL,
  ``synchronous=NORMAL``, ``busy_timeout`` 5 s), whose read-modify-write happens inside one
  ``BEGIN IMMEDIATE`` transaction;
* **raw sqlite3** (the baseline of the paired rows): the hand-rolled versioned store of
  ``ops.py`` — ``BEGIN IMMEDIATE``, ``SELECT``, ``UPDATE ... WHERE version = ?``, ``COMMIT`` —
  with the same pragmas;
* **LangGraph** ``SqliteStore`` ``get`` then ``put`` (reference only): its store has no
  compare-and-swap or increment, so a counter is a read followed by a last-write-wins write.
  Its connection is given the same pragmas (WAL, ``synchronous=NORMAL``). Its lost updates are
  stated in the lost-update rows' notes, not checked: they show what the missing
  compare-and-swap costs, not a bug.

The processes are spawned (not forked) once, four of them, and take part in every run with as
many processes as their index allows. All four first import everything and wait for each
other; then, before each run, every process taking part waits at a ``multiprocessing``
barrier, so all start together, and the idle ones block without using a CPU. Each process
records when it started and finished (``time.monotonic``, one clock for the whole machine); a
run's time is from the first start to the last finish, and its throughput is all increments
over that time. Rows per process count: the time per increment, ours vs raw
(the ratio; wall time / increments, so lower is better), the throughput of each, and the lost
updates (ours must be 0; checked, the run reports a miss). SQLite lets one writer in at a
time, so more processes cannot raise the throughput; with 2 cores, 4 processes mostly measure
how each side copes with waiting for the write lock (SQLite's busy handler sleeps between
retries, and the longer a writer holds the lock, the more the others sleep).

Run alone with ``python benchmarks/contention.py [--quick]``.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parent)]  # _common, and the package from a checkout
from _common import check_row, row, standalone  # noqa: E402
from pydantic import BaseModel  # noqa: E402

import flowstate_jupyter as fs  # noqa: E402

PROCESSES = (1, 2, 4)
KINDS = ("ours", "raw", "langgraph")
RECORD = "session:counter"  # the raw store's row id
NAMESPACE, KEY = ("session", "counter"), "state"  # LangGraph's item
TIMEOUT_S = 300


class Counter(BaseModel):
    """The state every process increments."""

    count: int = 0


def _path(folder: Path, n: int, kind: str) -> Path:
    return folder / f"{kind}-{n}.db"


# ============================================================================ the processes

def _open(kind: str, path: Path) -> tuple[Any, Any]:
    """``(increment, close)`` for one contender on one file, opened before the start."""
    if kind == "ours":
        store = fs.open_store(f"sqlite:///{path}")
        handle = fs.ScopeHandle(store, "session", "counter", state=Counter)
        return (lambda: handle.inc_state(count=1)), store.close
    if kind == "raw":
        from ops import RawVersionedStore, _raw_inc
        raw = RawVersionedStore(path, "normal")
        return (lambda: raw.update(RECORD, _raw_inc)), raw.close
    lg = _langgraph(path)

    def get_then_put() -> None:  # what its API allows: read, add one, write back
        item = lg.get(NAMESPACE, KEY)
        lg.put(NAMESPACE, KEY, {"count": item.value["count"] + 1})
    return get_then_put, lg.conn.close


def _langgraph(path: Path) -> Any:
    import sqlite3

    from langgraph.store.sqlite import SqliteStore
    conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None,
                           timeout=5.0)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    store = SqliteStore(conn)
    store.setup()
    return store


def _worker(index: int, folder: str, increments: int, barriers: dict, results: Any) -> None:
    """One process: for every run it takes part in, wait at the barrier, then increment.

    Everything is imported first and all processes wait for each other once before the first
    run, so no process is still starting up (a second of CPU) while another is being timed.
    """
    import langgraph.store.sqlite  # noqa: F401  (imported now, not during another's run)
    import ops  # noqa: F401
    barriers["ready"].wait(timeout=TIMEOUT_S)
    for n in PROCESSES:
        if index >= n:
            continue
        for kind in KINDS:
            increment, close = _open(kind, _path(Path(folder), n, kind))
            done, errors, first_error = 0, 0, None
            barriers[(n, kind)].wait(timeout=TIMEOUT_S)
            start = time.monotonic()
            for _ in range(increments):
                try:
                    increment()
                    done += 1
                except Exception as exc:
                    errors += 1
                    first_error = first_error or f"{type(exc).__name__}: {exc}"
            end = time.monotonic()
            close()
            results.put((n, kind, index, start, end, done, errors, first_error))


# ============================================================================== the parent

def _prepare(folder: Path) -> None:
    """Create every file with its counter at 0, so no process races to create it."""
    for n in PROCESSES:
        for kind in KINDS:
            path = _path(folder, n, kind)
            if kind == "ours":
                with fs.open_store(f"sqlite:///{path}") as store:
                    store.write("session", "counter", "", {"count": 0})
            elif kind == "raw":
                from ops import RawVersionedStore
                raw = RawVersionedStore(path, "normal")
                raw.create(RECORD, {"count": 0})
                raw.close()
            else:
                lg = _langgraph(path)
                lg.put(NAMESPACE, KEY, {"count": 0})
                lg.conn.close()


def _final_count(kind: str, path: Path) -> int:
    if kind == "ours":
        with fs.open_store(f"sqlite:///{path}") as store:
            return fs.ScopeHandle(store, "session", "counter", state=Counter).state.count
    if kind == "raw":
        from ops import RawVersionedStore
        raw = RawVersionedStore(path, "normal")
        try:
            return raw.read(RECORD)[0]["count"]
        finally:
            raw.close()
    lg = _langgraph(path)
    try:
        return lg.get(NAMESPACE, KEY).value["count"]
    finally:
        lg.conn.close()


def measure(quick: bool, folder: Path) -> dict[tuple[int, str], dict]:
    """Run every (processes, contender) pair; returns time, throughput and lost updates."""
    increments = 300 if quick else 2000
    _prepare(folder)
    ctx = mp.get_context("spawn")
    barriers: dict[Any, Any] = {(n, kind): ctx.Barrier(n) for n in PROCESSES for kind in KINDS}
    barriers["ready"] = ctx.Barrier(max(PROCESSES))
    results = ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(i, str(folder), increments, barriers, results),
                           name=f"bench-contention-{i}") for i in range(max(PROCESSES))]
    for w in workers:
        w.start()
    expected_reports = sum(n * len(KINDS) for n in PROCESSES)
    reports = []
    try:
        for _ in range(expected_reports):
            reports.append(results.get(timeout=TIMEOUT_S))
    finally:
        for w in workers:
            w.join(timeout=30)
            if w.is_alive():
                w.terminate()
                w.join()
    out: dict[tuple[int, str], dict] = {}
    for n in PROCESSES:
        for kind in KINDS:
            mine = [r for r in reports if r[0] == n and r[1] == kind]
            seconds = max(r[4] for r in mine) - min(r[3] for r in mine)
            done = sum(r[5] for r in mine)
            final = _final_count(kind, _path(folder, n, kind))
            out[(n, kind)] = {
                "seconds": seconds, "done": done, "attempted": n * increments,
                "errors": sum(r[6] for r in mine),
                "first_error": next((r[7] for r in mine if r[7]), None),
                "final": final, "lost": done - final,  # committed increments not in the count
                "ops_per_s": done / seconds if seconds > 0 else float("nan"),
                "us_per_op": seconds / done * 1e6 if done else float("nan"),
            }
    return out


def run(quick: bool) -> list[dict]:
    """Rows per process count: time per increment (ours vs raw), throughput, lost updates."""
    with tempfile.TemporaryDirectory(prefix="flowstate-bench-contention-") as tmp:
        results = measure(quick, Path(tmp))
    rows: list[dict] = []
    for n in PROCESSES:
        ours, raw, lg = (results[(n, k)] for k in KINDS)
        group = f"contention: {n} process{'es' if n > 1 else ''} incrementing one counter " \
                f"(WAL, synchronous=NORMAL)"
        where = f"{n} process{'es' if n > 1 else ''}"
        errors = ", ".join(f"{k}: {results[(n, k)]['errors']} failed "
                           f"({results[(n, k)]['first_error']})"
                           for k in KINDS if results[(n, k)]["errors"])
        rows.append(row(f"inc_state, {where}: wall time per increment", ours["us_per_op"],
                        raw["us_per_op"], "µs", group=group, processes=n,
                        increments=ours["done"],
                        note=f"baseline: raw sqlite3 BEGIN IMMEDIATE + conditional UPDATE; "
                             f"{ours['done']:,} increments each" + (f"; {errors}" if errors
                                                                    else "")))
        rows.append({"name": f"inc_state, {where}: throughput", "ours": round(ours["ops_per_s"]),
                     "baseline": round(raw["ops_per_s"]), "unit": "ops/s", "ratio": None,
                     "group": group, "processes": n,
                     "note": f"higher is better; LangGraph get+put {lg['ops_per_s']:,.0f} "
                             f"ops/s"})
        rows.append(check_row(
            f"inc_state, {where}: lost updates", ours["lost"], "updates", limit=0, group=group,
            processes=n, expected=ours["done"], final=ours["final"],
            note=f"final count {ours['final']:,} of {ours['done']:,} committed increments; "
                 f"raw sqlite3 lost {raw['lost']:,}; LangGraph get+put (no compare-and-swap) "
                 f"lost {lg['lost']:,} of {lg['done']:,}"))
    return rows


def main(argv: list[str]) -> int:
    return standalone(run, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
