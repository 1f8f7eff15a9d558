"""PostgreSQL: writes per second with 1, 2, 4 and 8 writers, against raw psycopg.

Runs when a PostgreSQL server can be started the way the tests start one (Debian's binaries,
``tests/_pg.py``); without one the runner reports the module skipped and says why. The server is
a throwaway one configured as in production for what matters here: ``fsync``,
``synchronous_commit`` and ``full_page_writes`` on, autovacuum on (its folder is in ``/dev/shm``
when there is one, so an fsync costs little and the comparison is about CPU and locks, not the
disk).

**Writes per second.** ``w`` writers (threads of one process sharing one store object, or
processes with a store object each), each writing its own record (distinct records: no row lock
is shared), all starting together and writing for a fixed time. Ours: ``store.update(...)`` with a
function that increments a counter — ``SELECT ... FOR UPDATE``, the function, one conditional
``UPDATE``, a history row (pruned to 100 per record), a change-log row (pruned to 10,000) and a
``NOTIFY``. Baseline, raw psycopg doing the same durable work by hand on tables of the same shape:
``BEGIN``; ``SELECT state, version ... FOR UPDATE``; ``json.loads``, add one, ``json.dumps``;
``UPDATE ... WHERE id = %s AND version = %s``; ``INSERT`` into a history table; ``COMMIT``. The
change log starts at its steady-state size (10,000 rows, filled before the first run). Ours and
raw alternate in short runs (0.6 s; the order swaps every round); a full run measures nine rounds
per row and reports the round with the median ratio, and the range of the rounds' ratios (this
2-core machine is shared: one run alone moves by a factor of two). Target: ours / raw >= 0.7 at
every writer count (a throughput: higher is better), which needs writes that do not wait for each
other.

Run alone with ``python benchmarks/postgres.py [--quick]``.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
import threading
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parent), str(_HERE.parent / "tests")]
from _common import row, standalone  # noqa: E402
from _live import measure  # noqa: E402
from _live import rows as live_rows  # noqa: E402

try:
    import psycopg
except ImportError as exc:  # reported by the runner as a skip, with this reason
    raise ImportError("needs psycopg 3: pip install -e '.[postgres]'") from exc
import _pg  # noqa: E402  (tests/_pg.py: the throwaway server the tests use)

import flowstate_jupyter as fs  # noqa: E402

BINDIR = _pg.find_bindir()
if BINDIR is None:
    raise ImportError("no PostgreSQL server binaries (initdb, pg_ctl) to start a server; "
                      "apt-get install postgresql")

WRITERS = (1, 2, 4, 8)
MODES = ("threads", "processes")
TARGET = 0.7
CHANGELOG = 10_000  # the change log's default bound: its steady-state size
OURS, RAW = "bench_ours", "bench_raw"
ROUNDS = 9  # full runs: short runs of ours and raw, alternating; the median ratio is reported


# ===================================================================== the work, per writer

def _increment(record: Any) -> Any:
    from flowstate_jupyter.stores.base import Change
    n = record.state["n"] if record is not None else 0
    return Change(state={"n": n + 1}, operation="increment")


class _Raw:
    """One raw psycopg connection doing the baseline's durable read-modify-write."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        self.conn.execute(f"SET search_path = {RAW}")

    def write(self, rid: str) -> None:
        conn = self.conn
        conn.execute("BEGIN")
        try:
            text, version = conn.execute("SELECT state, version FROM raw_records WHERE id = %s "
                                         "FOR UPDATE", (rid,)).fetchone()
            state = json.loads(text)
            state["n"] += 1
            text = json.dumps(state)
            if conn.execute("UPDATE raw_records SET state = %s, version = version + 1 "
                            "WHERE id = %s AND version = %s",
                            (text, rid, version)).rowcount != 1:
                raise RuntimeError("lost a compare-and-swap race")
            conn.execute("INSERT INTO raw_history (id, version, ts, state) "
                         "VALUES (%s, %s, %s, %s)", (rid, version + 1, time.time(), text))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.conn.close()


def _loop(write: Any, start_at: float, seconds: float) -> int:
    """Wait for ``start_at`` (``time.monotonic``, one clock for the machine), then write until
    ``seconds`` later; the number of writes that finished in time."""
    pause = start_at - time.monotonic()
    if pause > 0:
        time.sleep(pause)
    deadline = start_at + seconds
    done = 0
    while time.monotonic() < deadline:
        write()
        done += 1
    return done


def _process(index: int, url: str, pipe: Any) -> None:
    """A writer process: opens its store and raw connection once, then runs what it is told."""
    store = fs.open_store(f"{url}?schema={OURS}", pool_size=2)
    raw = _Raw(url)
    rid = f"w{index}"
    work = {"ours": lambda: store.update("bench", rid, "", _increment),
            "raw": lambda: raw.write(rid)}
    pipe.send("ready")
    try:
        while True:
            command = pipe.recv()
            if command is None:
                break
            kind, start_at, seconds = command
            pipe.send(_loop(work[kind], start_at, seconds))
    finally:
        store.close()
        raw.close()


# ===================================================================== runs

class _Bench:
    def __init__(self, url: str) -> None:
        self.url = url
        self.store = fs.open_store(f"{url}?schema={OURS}", pool_size=max(WRITERS) + 1)
        self.raws = [_Raw(url) for _ in range(max(WRITERS))]
        self.procs: list[tuple[Any, Any]] = []

    def setup(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {RAW}")
            conn.execute(f"CREATE TABLE {RAW}.raw_records (id TEXT PRIMARY KEY, "
                         f"version BIGINT NOT NULL, state TEXT NOT NULL)")
            conn.execute(f"CREATE TABLE {RAW}.raw_history (id TEXT NOT NULL, "
                         f"version BIGINT NOT NULL, ts DOUBLE PRECISION NOT NULL, "
                         f"state TEXT NOT NULL, PRIMARY KEY (id, version))")
            for i in range(max(WRITERS)):
                conn.execute(f"INSERT INTO {RAW}.raw_records VALUES (%s, 1, %s)",
                             (f"w{i}", json.dumps({"n": 0})))
                self.store.write("bench", f"w{i}", "", {"n": 0})
            # the change log at its steady-state size: full up to its bound
            conn.execute(f'INSERT INTO {OURS}.flowstate_changes (origin, event) '
                         f'SELECT %s, %s FROM generate_series(1, %s)',
                         ("prefill", json.dumps({"type": "state_change", "scope": "bench",
                                                 "scope_id": "prefill", "version": 1,
                                                 "ts": time.time()}), CHANGELOG))
            conn.execute("VACUUM ANALYZE")

    def start_processes(self) -> None:
        ctx = mp.get_context("spawn")
        for i in range(max(WRITERS)):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=_process, args=(i, self.url, theirs), daemon=True)
            proc.start()
            self.procs.append((proc, mine))
        for _, pipe in self.procs:
            if not pipe.poll(120) or pipe.recv() != "ready":
                raise RuntimeError("a writer process did not start")

    def run(self, kind: str, mode: str, writers: int, seconds: float) -> float:
        """Writes per second of ``writers`` writers of ``kind`` for ``seconds``."""
        start_at = time.monotonic() + 0.05
        if mode == "processes":
            for _, pipe in self.procs[:writers]:
                pipe.send((kind, start_at, seconds))
            done = sum(pipe.recv() for _, pipe in self.procs[:writers])
            return done / seconds
        counts = [0] * writers

        def thread(i: int) -> None:
            rid = f"w{i}"
            write = (lambda: self.store.update("bench", rid, "", _increment)) if kind == "ours" \
                else (lambda: self.raws[i].write(rid))
            counts[i] = _loop(write, start_at, seconds)

        threads = [threading.Thread(target=thread, args=(i,)) for i in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(counts) / seconds

    def check(self) -> str:
        """Both sides stored every write they counted (a sanity check of the comparison)."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            raw = conn.execute(f"SELECT sum(version - 1), sum((state::json->>'n')::int) "
                               f"FROM {RAW}.raw_records").fetchone()
            changes = conn.execute(f"SELECT count(*) FROM {OURS}.flowstate_changes"
                                   ).fetchone()[0]
        ours = [self.store.read("bench", f"w{i}") for i in range(max(WRITERS))]
        ours_writes = sum(r.version - 1 for r in ours)
        if raw[0] != raw[1] or any(r.state["n"] != r.version - 1 for r in ours):
            raise AssertionError("a counter does not match its version: a write was lost")
        return f"{ours_writes:,} writes by ours, {raw[0]:,} by raw; change log {changes:,} rows"

    def close(self) -> None:
        for _, pipe in self.procs:
            try:
                pipe.send(None)
            except OSError:
                pass
        for proc, _ in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
        self.store.close()
        for raw in self.raws:
            raw.close()


def measure_writes(url: str, quick: bool) -> list[dict]:
    seconds = 0.1 if quick else 0.6
    rounds = 1 if quick else ROUNDS
    bench = _Bench(url)
    rows = []
    try:
        bench.setup()
        bench.start_processes()
        for kind in ("ours", "raw"):  # warm up: connections, caches, prepared statements
            bench.run(kind, "threads", max(WRITERS), 0.05 if quick else 0.3)
        for mode in MODES:
            for writers in WRITERS:
                results = []
                for r in range(rounds):
                    order = ("ours", "raw") if r % 2 == 0 else ("raw", "ours")
                    rate = {kind: bench.run(kind, mode, writers, seconds) for kind in order}
                    results.append(rate)
                ratios = [x["ours"] / x["raw"] for x in results]
                middle = sorted(range(rounds), key=ratios.__getitem__)[rounds // 2]
                best = results[middle]
                spread = "" if rounds == 1 else (
                    f"the median of {rounds} rounds (ratios {min(ratios):.2f}–{max(ratios):.2f}); ")
                rows.append(row(
                    f"writes/s, {writers} writer{'s' if writers > 1 else ''} ({mode})",
                    best["ours"], best["raw"], "writes/s", target=TARGET, better="higher",
                    group="PostgreSQL writes per second, distinct records, change log at "
                          f"{CHANGELOG:,} rows (higher is better)",
                    writers=writers, mode=mode,
                    note=f"{spread}{seconds:g} s per run"))
        rows[-1]["note"] += f"; {bench.check()}"
    finally:
        bench.close()
    return rows


def measure_live(url: str, quick: bool) -> list[dict]:
    """Another process's write -> subscriber, and the idle cost of a subscriber (``_live.py``)."""
    store_url = f"{url}?schema=bench_live"
    store = fs.open_store(store_url)
    try:
        store.write("session", "live", "", {"i": -1})
        result = measure(store, store_url, events=10 if quick else 100,
                         idle_s=1.0 if quick else 20.0)
    finally:
        store.close()
    return live_rows("PostgreSQL", result, group="live updates from another process "
                                                 "(PostgreSQL)", idle_limit_cpu_s_per_min=0.1)


def run(quick: bool) -> list[dict]:
    server = _pg.TempPostgres(BINDIR, durable=True, settings={"autovacuum": "on"})
    try:
        url = server.start()
        return measure_writes(url, quick) + measure_live(url, quick)
    finally:
        server.stop()


def main(argv: list[str]) -> int:
    return standalone(run, argv, missed=f"below the target ratio {TARGET:g}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
