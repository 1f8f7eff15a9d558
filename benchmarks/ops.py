"""Single-operation latency: our SQLite store vs a hand-rolled versioned ``sqlite3`` store.

For ``inc_state``, ``patch_state`` and ``push_state`` this measures the median (p50) and p99
latency of one committed operation through a :class:`~flowstate_jupyter.ScopeHandle` on our
SQLite store, and of the same operation done the way a careful user would do it by hand with
``sqlite3`` — per operation, in one ``BEGIN IMMEDIATE`` transaction::

    SELECT state, version FROM records WHERE id = ?
    json.loads -> modify -> json.dumps
    UPDATE records SET state = ?, version = version + 1 WHERE id = ? AND version = ?
    COMMIT

Both run on the same machine, in the same process and run, on fresh files in one temporary
folder, in WAL mode with the same ``synchronous`` setting (NORMAL, then FULL as a second set of
rows). Calls are warmed up, then timed one by one, alternating between ours and raw in chunks
of five calls (ours, raw, raw, ours, ...) so that machine noise hits both alike. The ratio is
ours / raw; the target at the median is <= 1.3 under NORMAL (issue 19) and <= 2.0 under FULL
(issue 7). A full run measures each pair in three rounds on fresh files and reports the median
round (by ratio), with the range of the rounds in the note:
on a noisy 2-core machine one round's ratio moves by about ±0.15 from run to run.

Ours does more per operation than the baseline: typed validation with pydantic, the no-op
guard, a history row (pruned to the retention bound) and a change-log row. A third contender,
``raw+log``, is the same hand-rolled store also writing a history row and a change-log row in
its transaction; the "vs raw+history+log" rows show how much of the gap is that durable work.

Run standalone with ``python benchmarks/ops.py`` (``--quick`` for a short run,
``--profile`` to see where our time goes).
"""

from __future__ import annotations

import json
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parent)]  # _common, and the package from a checkout
from _common import interleaved, is_quick, row, standalone, summary_us  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402

import flowstate_jupyter as fs  # noqa: E402

#: Issue 19's bound under ``synchronous=NORMAL``; ``FULL`` keeps the first release's 2.0 (issue 7).
TARGETS = {"normal": 1.3, "full": 2.0}
OPERATIONS = ("inc_state", "patch_state", "push_state")
DURABILITIES = ("normal", "full")
ROUNDS = 3  # full runs: independent measurements of each pair; the median round is reported
PUSH_BLOCK = 50  # push_state's list is reset (untimed) every 50 calls: it holds 0..49 items


class BenchState(BaseModel):
    """A small, typical scope state: a counter, a few settings and a list."""

    count: int = 0
    name: str = ""
    mode: Literal["chat", "agent"] = "chat"
    items: list[int] = Field(default_factory=list)


INITIAL = BenchState().model_dump(mode="json")


class RawVersionedStore:
    """What a careful user writes by hand: a versioned JSON row, compare-and-swap per write."""

    def __init__(self, path: Path, durability: str, *, log: bool = False) -> None:
        self.log = log  # also keep a history row and a change-log row per write, as we do
        self.conn = sqlite3.connect(str(path), timeout=5.0, isolation_level=None)
        self.conn.execute("PRAGMA busy_timeout = 5000")
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute(f"PRAGMA synchronous = {'FULL' if durability == 'full' else 'NORMAL'}")
        self.conn.execute("CREATE TABLE IF NOT EXISTS records ("
                          "id TEXT PRIMARY KEY, version INTEGER NOT NULL, state TEXT NOT NULL)")
        self.conn.execute("CREATE TABLE IF NOT EXISTS history (id TEXT, version INTEGER, "
                          "ts REAL, state TEXT, PRIMARY KEY (id, version)) WITHOUT ROWID")
        self.conn.execute("CREATE TABLE IF NOT EXISTS changes (seq INTEGER PRIMARY KEY, "
                          "event TEXT)")

    def create(self, record_id: str, state: dict) -> None:
        self.conn.execute("INSERT OR REPLACE INTO records (id, version, state) VALUES (?, 1, ?)",
                          (record_id, json.dumps(state)))

    def update(self, record_id: str, modify: Callable[[dict], None]) -> int:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            text, version = conn.execute("SELECT state, version FROM records WHERE id = ?",
                                         (record_id,)).fetchone()
            state = json.loads(text)
            modify(state)
            text = json.dumps(state)
            cursor = conn.execute(
                "UPDATE records SET state = ?, version = version + 1 WHERE id = ? AND version = ?",
                (text, record_id, version))
            if cursor.rowcount != 1:
                raise RuntimeError("lost a compare-and-swap race")
            if self.log:
                now = time.time()
                conn.execute("INSERT INTO history VALUES (?, ?, ?, ?)",
                             (record_id, version + 1, now, text))
                conn.execute("INSERT INTO changes (event) VALUES (?)", (json.dumps(
                    {"id": record_id, "version": version + 1, "ts": now}),))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return version + 1

    def read(self, record_id: str) -> tuple[dict, int]:
        text, version = self.conn.execute("SELECT state, version FROM records WHERE id = ?",
                                          (record_id,)).fetchone()
        return json.loads(text), version

    def close(self) -> None:
        self.conn.close()


def _raw_inc(state: dict) -> None:
    state["count"] = state.get("count", 0) + 1


def _contenders(op: str, handle: fs.ScopeHandle, raw: RawVersionedStore,
                raw_log: RawVersionedStore) -> dict[str, Callable[[int], Any]]:
    """The implementations of ``op`` as ``f(i)`` calls (every call commits a write)."""
    both = _pair(op, handle, raw)
    both["raw+log"] = _pair(op, handle, raw_log)["raw"]
    return both


def _pair(op: str, handle: fs.ScopeHandle, raw: RawVersionedStore
          ) -> dict[str, Callable[[int], Any]]:
    rid = "session:bench"
    if op == "inc_state":
        return {"ours": lambda i: handle.inc_state(count=1),
                "raw": lambda i: raw.update(rid, _raw_inc)}
    if op == "patch_state":
        def raw_patch(i: int) -> int:
            return raw.update(rid, lambda s: s.update(name=f"n{i}"))
        return {"ours": lambda i: handle.patch_state(name=f"n{i}"), "raw": raw_patch}
    if op == "push_state":
        def raw_push(i: int) -> int:
            return raw.update(rid, lambda s: s.setdefault("items", []).append(i))
        return {"ours": lambda i: handle.push_state("items", i), "raw": raw_push}
    raise ValueError(op)


def _sizes(quick: bool, durability: str) -> dict[str, int]:
    if durability == "full":  # an fsync per commit: fewer calls, each much slower
        return {"warmup": 20, "calls": 100 if quick else 500}
    return {"warmup": 200, "calls": 500 if quick else 3000}


def measure(op: str, durability: str, quick: bool, folder: Path) -> dict[str, dict[str, float]]:
    """p50/p99 (µs) of ``op`` for ours and raw, on fresh files in ``folder``."""
    tag = f"{op}-{durability}"
    store = fs.open_store(f"sqlite:///{folder / f'ours-{tag}.db'}", durability=durability)
    raw = RawVersionedStore(folder / f"raw-{tag}.db", durability)
    raw_log = RawVersionedStore(folder / f"rawlog-{tag}.db", durability, log=True)
    try:
        handle = fs.ScopeHandle(store, "session", "bench", state=BenchState)
        handle.set_state(INITIAL)
        handle.patch_state(name="start")  # the record exists: every timed call is an update
        raw.create("session:bench", {**INITIAL, "name": "start"})
        raw_log.create("session:bench", {**INITIAL, "name": "start"})
        contenders = _contenders(op, handle, raw, raw_log)

        def reset(name: str, i: int) -> None:  # untimed: keep push_state's list short, equal
            if op != "push_state" or i % PUSH_BLOCK:
                return
            if name == "ours":
                handle.patch_state(items=[])
            else:
                (raw if name == "raw" else raw_log).update("session:bench",
                                                           lambda s: s.update(items=[]))

        samples = interleaved(contenders, prepare=reset, **_sizes(quick, durability))
        _check_same_work(op, handle, raw)
        return {name: summary_us(values) for name, values in samples.items()}
    finally:
        store.close()
        raw.close()
        raw_log.close()


def _median_round(op: str, durability: str, quick: bool, folder: Path
                  ) -> tuple[dict[str, dict[str, float]], str | None]:
    """``measure`` once (quick) or ``ROUNDS`` times on fresh files: the round with the median
    p50 ratio, and a note giving every round's ratio."""
    rounds = []
    for r in range(1 if quick else ROUNDS):
        place = folder / f"round{r}"
        place.mkdir(exist_ok=True)
        rounds.append(measure(op, durability, quick, place))
    ratios = [s["ours"]["p50"] / s["raw"]["p50"] for s in rounds]
    middle = sorted(range(len(rounds)), key=ratios.__getitem__)[len(rounds) // 2]
    if len(rounds) == 1:
        return rounds[0], None
    return rounds[middle], (f"median of {len(rounds)} rounds; round ratios "
                            + ", ".join(f"{x:.2f}" for x in ratios))


def _check_same_work(op: str, handle: fs.ScopeHandle, raw: RawVersionedStore) -> None:
    """Both sides must have ended in the same state: otherwise the comparison is meaningless."""
    ours = handle.state_dict()
    theirs, _ = raw.read("session:bench")
    if op == "inc_state" and ours["count"] != theirs["count"]:
        raise AssertionError(f"inc_state: ours counted {ours['count']}, raw {theirs['count']}")
    if op == "push_state" and ours["items"] != theirs["items"]:
        raise AssertionError("push_state: ours and raw hold different lists")
    if op == "patch_state" and ours["name"] != theirs["name"]:
        raise AssertionError("patch_state: ours and raw hold different names")


def run(quick: bool) -> list[dict]:
    """Measure every operation at both durabilities; one p50 row and one p99 row per pair."""
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="flowstate-bench-ops-") as tmp:
        folder = Path(tmp)
        for durability in DURABILITIES:
            sync = "FULL" if durability == "full" else "NORMAL"
            group = f"single-op latency vs raw sqlite3 (WAL, synchronous={sync})"
            for op in OPERATIONS:
                stats, spread = _median_round(op, durability, quick, folder)
                ours, base = stats["ours"], stats["raw"]
                common = {"group": group, "op": op, "durability": durability,
                          "samples": int(ours["n"])}
                rows.append(row(f"{op} p50 [{durability}]", ours["p50"], base["p50"], "µs",
                                target=TARGETS[durability], stat="p50", note=spread, **common))
                rows.append(row(f"{op} p99 [{durability}]", ours["p99"], base["p99"], "µs",
                                stat="p99", **common))
                rows.append(row(f"{op} p50 [{durability}] vs raw+history+log",
                                ours["p50"], stats["raw+log"]["p50"], "µs",
                                stat="p50", **common))
    return rows


def profile(quick: bool = True, top: int = 25) -> None:
    """cProfile our side of each operation (NORMAL durability) and print the hot functions."""
    import cProfile
    import pstats

    with tempfile.TemporaryDirectory(prefix="flowstate-bench-prof-") as tmp:
        store = fs.open_store(f"sqlite:///{tmp}/prof.db")
        handle = fs.ScopeHandle(store, "session", "bench", state=BenchState)
        handle.patch_state(name="start")
        n = 2000 if quick else 10000
        calls = {
            "inc_state": lambda i: handle.inc_state(count=1),
            "patch_state": lambda i: handle.patch_state(name=f"n{i}"),
            "push_state": lambda i: (handle.push_state("items", i) if i % PUSH_BLOCK
                                     else handle.patch_state(items=[])),
        }
        for op, call in calls.items():
            for i in range(200):
                call(i)
            profiler = cProfile.Profile()
            profiler.enable()
            for i in range(n):
                call(i)
            profiler.disable()
            print(f"\n=== {op}: {n} calls, sorted by own time ===")
            pstats.Stats(profiler).sort_stats("tottime").print_stats(top)
        store.close()


def main(argv: list[str]) -> int:
    if "--profile" in argv:
        profile(is_quick(argv))
        return 0
    return standalone(run, argv, missed="above the target ratio (1.3 NORMAL, 2.0 FULL)")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
