"""Growth: how our costs move with the size of a state, the number of sessions and of writes.

Three measurements, each on fresh files in one temporary folder, in WAL mode with
``synchronous=NORMAL`` (our default durability) on both sides:

**State size.** ``patch_state(name=...)`` — one small field changed — on a session whose state
also holds a list of 100-character strings making the whole state about 1 KB, 100 KB and 1 MB
of JSON (1 MB = 1,000,000 bytes, under the default ``max_state_bytes`` of 1 MiB). Baseline: the
hand-rolled versioned ``sqlite3`` store of ``ops.py`` doing the same patch (``BEGIN
IMMEDIATE``, ``SELECT``, ``json.loads``, modify, ``json.dumps``, conditional ``UPDATE``,
``COMMIT``); its variant that also writes a history and a change-log row is in the note. Calls
alternate in chunks of five; rows give the medians. Ours validates the whole state with pydantic
on every write and keeps a full copy of it per history version (at most 100 versions and 8 MiB
per record by default), so its cost and its file grow with the state; the note gives the store
file's size after the run.

**Number of sessions.** A flow's sessions are created by writing, per session, the ``$meta``
record exactly as ``ensure_session`` shapes it (``{"user", "flow", "created_at"}``) and a small
state record, with ``store.write`` in a loop (running the flow once per session would take far
longer and store the same records). With 10, then 10,000, then 100,000 sessions (quick: 10,
1,000, 10,000) in the store this times

* ``flow.sessions(limit=None)`` — every session of the flow kind, newest first (the first page
  alone is ``sessions.py``'s row) — against the same query
  done by hand with ``sqlite3`` on the same file (select the ``$meta`` rows, ``json.loads``,
  filter by flow kind, sort by update time);
* reading one session's state, ``flow.session(id, user=...).state`` (which checks the
  session's owner and flow kind, then reads and validates its state), for random sessions,
  against the hand-rolled equivalent (select the ``$meta`` row, check user and flow, select
  the state row, ``json.loads``).

A listing must grow with the number of sessions; a read of one session should not. The
session-read rows also carry, as a checked row, the read time at the largest count over the
read time at 10 sessions (target ≤ 2: an indexed read stays flat).

**Writes to one record.** ``inc_state`` 100,000 times (quick: 20,000) on one record with the
default retention (100 history versions per record, 10,000 change-log items); the store file's
size (closed, so the WAL is folded in) after 10,000 writes and after all of them. History and
change log are pruned as they go, and SQLite reuses the freed pages, so the size must not grow
with the write count: the row's ratio is the size after all writes over the size after 10,000
(target ≤ 1.25).

Run alone with ``python benchmarks/growth.py [--quick]``.
"""

from __future__ import annotations

import json
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parent)]  # _common, and the package from a checkout
from _common import file_bytes, interleaved, row, standalone, summary_us  # noqa: E402
from ops import RawVersionedStore  # noqa: E402  (the hand-rolled baseline of ops.py)
from pydantic import BaseModel, Field  # noqa: E402

import flowstate_jupyter as fs  # noqa: E402

SIZES = {"1 KB": 1_000, "100 KB": 100_000, "1 MB": 1_000_000}
NOTE_CHARS = 100
KIND = "growth"
USER = "bench"
READ_FLAT_TARGET = 2.0
SIZE_BOUND_TARGET = 1.25
FIRST_WRITES = 10_000


# ============================================================================== state size

class Doc(BaseModel):
    """A session state with one small field and one that makes it big."""

    name: str = ""
    notes: list[str] = Field(default_factory=list)


def _state_of_size(size: int) -> dict:
    """A ``Doc`` state whose JSON is ``size`` bytes, give or take one note (100 bytes)."""
    note = "x" * NOTE_CHARS
    per_note = len(json.dumps(note)) + 2  # quotes, comma and space
    base = len(json.dumps({"name": "n0000", "notes": []}))
    notes = [note] * max(1, (size - base) // per_note)
    return {"name": "n0000", "notes": notes}


def _size_sizes(size: int, quick: bool) -> dict[str, int]:
    if size >= 1_000_000:
        return {"warmup": 3, "calls": 15 if quick else 60}
    if size >= 100_000:
        return {"warmup": 10, "calls": 50 if quick else 300}
    return {"warmup": 100, "calls": 300 if quick else 2000}


def measure_sizes(quick: bool, folder: Path) -> list[dict]:
    """``patch_state`` p50 at every state size, ours vs raw sqlite3 (and raw + history)."""
    rows = []
    group = "state size: patch_state of one small field (WAL, synchronous=NORMAL)"
    for label, size in SIZES.items():
        tag = label.replace(" ", "")
        initial = _state_of_size(size)
        state_bytes = len(json.dumps(initial, separators=(", ", ": ")))
        path = folder / f"ours-size-{tag}.db"
        store = fs.open_store(f"sqlite:///{path}")
        raw = RawVersionedStore(folder / f"raw-size-{tag}.db", "normal")
        raw_log = RawVersionedStore(folder / f"rawlog-size-{tag}.db", "normal", log=True)
        try:
            handle = fs.ScopeHandle(store, "session", "big", state=Doc)
            handle.set_state(initial)
            raw.create("session:big", initial)
            raw_log.create("session:big", initial)
            contenders: dict[str, Callable[[int], Any]] = {
                "ours": lambda i: handle.patch_state(name=f"n{i}"),
                "raw": lambda i: raw.update("session:big", lambda s: s.update(name=f"n{i}")),
                "raw+log": lambda i: raw_log.update("session:big",
                                                    lambda s: s.update(name=f"n{i}")),
            }
            samples = interleaved(contenders, **_size_sizes(size, quick))
            versions = handle.version
            if handle.state.name != raw.read("session:big")[0]["name"]:
                raise AssertionError(f"{label}: ours and raw hold different names")
        finally:
            store.close()
            raw.close()
            raw_log.close()
        stats = {k: summary_us(v) for k, v in samples.items()}
        rows.append(row(
            f"patch_state, {label} state", stats["ours"]["p50"], stats["raw"]["p50"], "µs",
            group=group, stat="p50", state_bytes=state_bytes, samples=int(stats["ours"]["n"]),
            ours_p99=round(stats["ours"]["p99"], 3), baseline_p99=round(stats["raw"]["p99"], 3),
            note=f"state {state_bytes:,} bytes of JSON; raw+history+log "
                 f"{stats['raw+log']['p50']:,.0f} µs; our store file after {versions} "
                 f"versions: {file_bytes(path) / 1e6:,.1f} MB (history keeps full copies)"))
    return rows


# ======================================================================== number of sessions

class SessionState(BaseModel):
    """The growth flow's session state."""

    count: int = 0
    mode: str = "chat"


def _noop(value: Any, ctx: Any) -> Any:
    return value


def growth_flow() -> fs.Flow:
    """A one-action flow: only its kind and session model matter here (no run is timed)."""
    return fs.define_flow(kind=KIND, actions={"noop": fs.handler(_noop, name="noop")},
                          session=SessionState)


def _add_sessions(store: Any, start: int, stop: int) -> None:
    """Sessions ``g-<start>`` .. ``g-<stop - 1>``: ``$meta`` as ``ensure_session`` writes it."""
    for i in range(start, stop):
        sid = f"g-{i:06d}"
        store.write("session", sid, "$meta",
                    {"user": USER, "flow": KIND, "created_at": time.time()})
        store.write("session", sid, "", {"count": i, "mode": "chat"})


def _raw_sessions(conn: sqlite3.Connection) -> list[dict]:
    """``flow.sessions()`` done by hand on our file: the same items, newest first."""
    out = []
    for scope_id, state, created, updated, accessed in conn.execute(
            "SELECT scope_id, state, created_at, updated_at, accessed_at FROM records "
            "WHERE scope = 'session' AND name = '$meta' AND deleted = 0"):
        meta = json.loads(state)
        if meta.get("flow") != KIND:
            continue
        out.append({"id": scope_id, "user": meta.get("user"), "flow": KIND,
                    "created_at": meta.get("created_at", created),
                    "updated_at": max(updated, accessed)})
    out.sort(key=lambda item: (item["updated_at"], item["id"]), reverse=True)
    return out


def _raw_session_state(conn: sqlite3.Connection, sid: str) -> dict:
    """A session read done by hand: check owner and flow kind, then read the state."""
    (meta,) = conn.execute("SELECT state FROM records WHERE scope = 'session' AND "
                           "scope_id = ? AND name = '$meta'", (sid,)).fetchone()
    meta = json.loads(meta)
    if meta.get("user") != USER or meta.get("flow") != KIND:
        raise PermissionError(sid)
    (state,) = conn.execute("SELECT state FROM records WHERE scope = 'session' AND "
                            "scope_id = ? AND name = ''", (sid,)).fetchone()
    return json.loads(state)


def measure_sessions(quick: bool, folder: Path) -> list[dict]:
    """``flow.sessions()`` and one session read at growing session counts, vs raw SQL."""
    counts = (10, 1_000, 10_000) if quick else (10, 10_000, 100_000)
    flow = growth_flow()
    path = folder / "ours-sessions.db"
    store = fs.open_store(f"sqlite:///{path}")
    conn = sqlite3.connect(str(path), isolation_level=None)
    rng = random.Random(7)
    rows, read_p50 = [], {}
    try:
        have = 0
        for n in counts:
            started = time.perf_counter()
            _add_sessions(store, have, n)
            build_s, added, have = time.perf_counter() - started, n - have, n
            ids = [f"g-{rng.randrange(n):06d}" for _ in range(4096)]
            listing = {"ours": lambda i: flow.sessions(limit=None, store=store),
                       "raw": lambda i: _raw_sessions(conn)}
            repeats = 3 if n >= 10_000 else 10
            if not quick:
                repeats = 5 if n >= 100_000 else 20
            lst = {k: summary_us(v) for k, v in
                   interleaved(listing, warmup=1, calls=repeats, chunk=1).items()}
            got = flow.sessions(limit=None, store=store)
            if len(got) != n or [s["id"] for s in got] != [s["id"] for s in _raw_sessions(conn)]:
                raise AssertionError(f"flow.sessions() listed {len(got)} sessions, not {n}, "
                                     f"or not in the hand-rolled order")
            reads = {"ours": lambda i: flow.session(ids[i % 4096], user=USER,
                                                    store=store).state,
                     "raw": lambda i: _raw_session_state(conn, ids[i % 4096])}
            rd = {k: summary_us(v) for k, v in
                  interleaved(reads, warmup=50, calls=300 if quick else 2000).items()}
            sid = ids[0]
            if flow.session(sid, user=USER, store=store).state.count != \
                    _raw_session_state(conn, sid)["count"]:
                raise AssertionError(f"session {sid}: ours and raw read different states")
            read_p50[n] = rd["ours"]["p50"]
            group = "number of sessions (WAL, synchronous=NORMAL)"
            rows.append(row(
                f"flow.sessions(limit=None), {n:,} sessions", lst["ours"]["p50"] / 1000,
                lst["raw"]["p50"] / 1000, "ms", group=group, sessions=n, stat="p50",
                note=f"{lst['ours']['p50'] / n:,.2f} µs per session listed (raw "
                     f"{lst['raw']['p50'] / n:,.2f}); baseline: the same query by hand on the "
                     f"same file; {repeats} calls; {added:,} sessions added in "
                     f"{build_s:,.1f} s"))
            rows.append(row(
                f"session read, {n:,} sessions", rd["ours"]["p50"], rd["raw"]["p50"], "µs",
                group=group, sessions=n, stat="p50",
                note="flow.session(id, user=...).state vs the same checks and reads by hand"))
    finally:
        conn.close()
        store.close()
    low, high = counts[0], counts[-1]
    rows.append(row(
        f"session read, {high:,} vs {low} sessions", read_p50[high], read_p50[low], "µs",
        target=READ_FLAT_TARGET, group="number of sessions (WAL, synchronous=NORMAL)",
        note=f"ours vs ours: the read at {high:,} sessions over the read at {low}; an indexed "
             f"read must stay flat"))
    return rows


# ============================================================================ writes to one record

class Counter(BaseModel):
    """A small session state (about 60 bytes of JSON), written again and again."""

    count: int = 0
    name: str = "a session state of typical size"


def _write_until(path: Path, start: int, stop: int) -> dict:
    """``inc_state`` from write ``start`` to ``stop`` on one record; then the store's facts."""
    store = fs.open_store(f"sqlite:///{path}")
    try:
        handle = fs.ScopeHandle(store, "session", "one", state=Counter)
        for _ in range(start, stop):
            handle.inc_state(count=1)
        report = store.doctor()
        version = handle.version
    finally:
        store.close()  # the last connection folds the WAL into the file
    return {"bytes": file_bytes(path), "history": report["history_rows"],
            "changes": report["changes"], "free_pages": report["free_pages"],
            "version": version}


def measure_writes(quick: bool, folder: Path) -> list[dict]:
    """File size after 10,000 and after all writes to one record, default retention."""
    total = 20_000 if quick else 100_000
    path = folder / "ours-writes.db"
    started = time.perf_counter()
    first = _write_until(path, 0, FIRST_WRITES)
    last = _write_until(path, FIRST_WRITES, total)
    seconds = time.perf_counter() - started
    if last["version"] != total:
        raise AssertionError(f"after {total:,} writes the record is at version "
                             f"{last['version']:,}")
    return [row(
        f"store file after {total:,} writes to one record", last["bytes"] / 1024,
        first["bytes"] / 1024, "KiB", target=SIZE_BOUND_TARGET,
        group="writes to one record (default retention: 100 versions, 10,000 changes)",
        writes=total, history_rows=last["history"], changelog_rows=last["changes"],
        note=f"baseline: the same file after {FIRST_WRITES:,} writes (bounded: ratio ~1); "
             f"history rows {first['history']} then {last['history']}, change-log rows "
             f"{first['changes']:,} then {last['changes']:,}, free pages {last['free_pages']}; "
             f"{total / seconds:,.0f} writes/s")]


# ==================================================================================== run

def run(quick: bool) -> list[dict]:
    """All three growth measurements."""
    with tempfile.TemporaryDirectory(prefix="flowstate-bench-growth-") as tmp:
        folder = Path(tmp)
        return (measure_sizes(quick, folder) + measure_sessions(quick, folder)
                + measure_writes(quick, folder))


def main(argv: list[str]) -> int:
    return standalone(run, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
