"""``flow.sessions()`` with 100,000 sessions in a SQLite store: the first page, and the next.

The store holds 100,000 sessions of the flow kind listed (10 users) and 10,000 of another kind.
Their ``$meta`` records are shaped exactly as ``ensure_session`` writes them (``{"user", "flow",
"created_at"}``), with update times spread over a day, and are inserted in one transaction
straight into the store's file (writing them one by one through the store would take minutes,
and only these records matter to a listing). Times are the median of calls alternating with the
baseline:

* ``flow.sessions()`` — the newest page (the default 100), filtered by flow kind, ordered and
  paged by the store (``Store.list_recent``) — target <= 5 ms;
* ``flow.sessions(user=...)`` — one user's newest page (a tenth of the sessions match);
* the next page, ``flow.sessions(after=page[-1])``;
* for reference, every session at once (``limit=None``).

Baseline: the same newest page queried by hand on the same file (the indexed ``ORDER BY ...
LIMIT`` and ``json.loads`` of each row), so the ratio is our overhead over the query itself.

Run alone with ``python benchmarks/sessions.py [--quick]``.
"""

from __future__ import annotations

import json
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parent)]  # _common, and the package from a checkout
from _common import check_row, interleaved, row, standalone, summary_us  # noqa: E402
from pydantic import BaseModel  # noqa: E402

import flowstate_jupyter as fs  # noqa: E402

SESSIONS = 100_000
OTHERS = 10_000
USERS = 10
KIND = "listed"
FIRST_PAGE_MS = 5.0


class SessionState(BaseModel):
    count: int = 0


def _noop(value: Any, ctx: Any) -> Any:
    return value


def _fill(path: Path) -> None:
    """The ``$meta`` records, inserted in one transaction (see the module docstring)."""
    rng = random.Random(5)
    now = time.time()
    rows = []
    for i in range(SESSIONS + OTHERS):
        kind = KIND if i < SESSIONS else "other"
        created = now - 86_400 + rng.random() * 3_600
        updated = created + rng.random() * 80_000
        meta = {"user": f"u{i % USERS}", "flow": kind, "created_at": created}
        rows.append(("session", f"s-{i:06d}", "$meta", 1, json.dumps(meta), None, 0, created,
                     created, updated, len(json.dumps(meta))))
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO records (scope, scope_id, name, version, state, content, "
                     "deleted, created_at, updated_at, accessed_at, history_bytes) "
                     "VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
    conn.execute("COMMIT")
    conn.close()


def _by_hand(conn: sqlite3.Connection) -> list[dict]:
    """The newest page, queried by hand on the same file with the same index."""
    out = []
    for scope_id, state, updated, accessed in conn.execute(
            "SELECT scope_id, state, updated_at, accessed_at FROM records "
            "WHERE scope = 'session' AND name = '$meta' AND deleted = 0 "
            "AND json_extract(state, '$.flow') = ? "
            "ORDER BY max(updated_at, accessed_at) DESC, scope_id DESC LIMIT 100", (KIND,)):
        meta = json.loads(state)
        out.append({"id": scope_id, "user": meta["user"], "updated_at": max(updated, accessed)})
    return out


def run(quick: bool) -> list[dict]:
    flow = fs.define_flow(kind=KIND, actions={"noop": fs.handler(_noop, name="noop")},
                          session=SessionState)
    group = f"flow.sessions() with {SESSIONS:,} sessions (SQLite)"
    calls = 30 if quick else 400
    with tempfile.TemporaryDirectory(prefix="flowstate-bench-sessions-") as tmp:
        path = Path(tmp) / "sessions.db"
        store = fs.open_store(f"sqlite:///{path}")
        conn = sqlite3.connect(str(path), isolation_level=None)
        try:
            started = time.perf_counter()
            _fill(path)
            build_s = time.perf_counter() - started
            first = flow.sessions(store=store)
            if [s["id"] for s in first] != [s["id"] for s in _by_hand(conn)]:
                raise AssertionError("flow.sessions() and the query by hand list other sessions")
            mine = flow.sessions(user="u3", store=store)
            if len(first) != 100 or len(mine) != 100 or {s["user"] for s in mine} != {"u3"}:
                raise AssertionError("a first page is not 100 sessions of the flow (and user)")
            cursor = first[-1]
            timed = interleaved({
                "first": lambda i: flow.sessions(store=store),
                "user": lambda i: flow.sessions(user="u3", store=store),
                "next": lambda i: flow.sessions(after=cursor, store=store),
                "hand": lambda i: _by_hand(conn)}, warmup=10, calls=calls, chunk=1)
            stats = {k: summary_us(v) for k, v in timed.items()}
            whole, listed = [], 0
            for _ in range(1 if quick else 3):
                t0 = time.perf_counter_ns()
                listed = len(flow.sessions(limit=None, store=store))
                whole.append(time.perf_counter_ns() - t0)
        finally:
            conn.close()
            store.close()
    first_ms, hand_ms = stats["first"]["p50"] / 1000, stats["hand"]["p50"] / 1000
    note = f"{calls} calls; the store filled in {build_s:.1f} s"
    return [
        check_row(f"flow.sessions() first page, {SESSIONS:,} sessions", first_ms, "ms",
                  limit=FIRST_PAGE_MS, group=group,
                  note=f"p50 of {note}; the same page queried by hand: {hand_ms:.2f} ms"),
        row("flow.sessions() first page vs the query by hand", first_ms, hand_ms, "ms",
            group=group, note="our overhead over the indexed query and its json.loads"),
        {"name": f"flow.sessions(user=...) first page, {SESSIONS:,} sessions",
         "value": round(stats["user"]["p50"] / 1000, 3), "unit": "ms", "group": group,
         "note": "one user's newest 100: a tenth of the sessions match, so about 1,000 are "
                 "read and their JSON tested (the index orders, it does not filter by user)"},
        {"name": "flow.sessions(after=page[-1]): the next page",
         "value": round(stats["next"]["p50"] / 1000, 3), "unit": "ms", "group": group},
        {"name": f"flow.sessions(limit=None): all {listed:,}",
         "value": round(summary_us(whole)["p50"] / 1000, 1), "unit": "ms", "group": group,
         "note": "for reference: every session at once (what flow.sessions() returned before "
                 "it had pages)"},
    ]


def main(argv: list[str]) -> int:
    return standalone(run, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
