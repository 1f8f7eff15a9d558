"""Our store and flows against LangGraph's: ``SqliteStore`` put/get and a ``StateGraph`` run.

Two comparisons, each measured side by side in this one process, on fresh files in one
temporary folder (same machine, same disk):

**Store: versioned write and read vs** ``langgraph.store.sqlite.SqliteStore.put`` / ``get``.
The same JSON value (a counter, a name, five tags and a short text, about 200 bytes) is written
and read the same number of times by each contender, interleaved in chunks of five calls so a
slow moment of the machine hits all alike; the rows give the median (p50) per call and the ratio
ours / LangGraph (p99 is in the row's extra fields). Our contenders:

* ``store.write(..., expected=version)`` — a compare-and-swap write that also keeps a history
  row (pruned to the retention bound) and a change-log row; ``store.read(...)`` to read;
* ``ScopeHandle.set_state(...)`` / ``ScopeHandle.state`` — the same through a typed handle
  (pydantic validation of the state written and read), which is what flows use.

LangGraph's ``put`` is a last-write-wins ``INSERT ... ON CONFLICT DO UPDATE`` (no version, no
history); ``get`` a ``SELECT`` inside ``BEGIN``/``COMMIT``.

Durability. ``SqliteStore`` sets no pragma, so a store made as its docs show
(``SqliteStore.from_conn_string(path)``) runs on SQLite's defaults: rollback journal
(``journal_mode=DELETE``) and ``synchronous=FULL``, several fsyncs per commit. Ours always
runs in WAL mode, so three settings are measured, each stated in its rows (read back from both
connections, not assumed):

* ``as shipped``: LangGraph as its docs build it vs ours with ``durability="full"`` (WAL,
  ``synchronous=FULL``) — both survive a power loss after a commit returns. These are the
  paired rows with the target (ours faster): what a user gets from each library at the same
  durability;
* ``WAL+FULL``: LangGraph's connection switched to WAL, ``synchronous=FULL`` — the same
  pragmas on both sides;
* ``WAL+NORMAL``: both in WAL with ``synchronous=NORMAL`` (our default) — the same pragmas, no
  fsync per commit, so the ratio is mostly CPU and page writes: what each library does per call.

The two same-pragma settings are reference rows, without a target: they show what the work
itself costs. There ``put`` writes one page per commit (a last-write-wins upsert) and we write
three (the record, its history row and its change-log row, after a compare-and-swap), so we are
level to slower on writes; see ``benchmarks/README.md``.

**Flow: a 100-step counter flow vs the same** ``StateGraph``. Ours is a sequencer of 100
handlers, each ``ctx.session.inc_state(count=1)``, run as one action on a SQLite store;
LangGraph's is a ``StateGraph`` of 100 nodes in a chain, each returning ``count + 1``, compiled
with ``langgraph.checkpoint.sqlite.SqliteSaver``. Both start every run from a fresh session /
thread at 0 and must end at 100, checked after the timing on every run (the final counts are
printed and stated in the rows). Per-step cost is ``(run of 100 steps - run of 1 step) / 99``,
as in ``flows.py``, so each side's fixed cost per run (our request record and session check;
LangGraph's input checkpoint) is not smeared over the steps; the whole-run times are in the
notes. Runs of both sides alternate; the rows give medians.

``SqliteSaver`` sets WAL and leaves ``synchronous`` at FULL, so it is compared with ours at
``durability="full"`` (as shipped) and then with both at ``synchronous=NORMAL``. LangGraph runs
with ``durability="sync"`` (every step's checkpoint is committed before the next step starts,
which is what our per-step commit gives) and, in separate rows, with its default
``durability="async"`` (a step's checkpoint is written in the background while the next step
runs). Our step commits the counter with its history and change-log rows; LangGraph's step
commits its pending writes and a checkpoint of the whole state (two transactions).

Run alone with ``python benchmarks/langgraph_compare.py [--quick]``.
"""

from __future__ import annotations

import contextlib
import sqlite3
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parent)]  # _common, and the package from a checkout
from _common import interleaved, row, standalone, summary_us  # noqa: E402
from langgraph.checkpoint.sqlite import SqliteSaver  # noqa: E402
from langgraph.graph import END, START, StateGraph  # noqa: E402
from langgraph.store.sqlite import SqliteStore  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402

import flowstate_jupyter as fs  # noqa: E402

TARGET = 1.0  # "ours faster than LangGraph" on every paired row (as both ship)
SHIPPED = "as shipped"
REFERENCE = "reference, no target: the same pragmas on both sides"
STEPS = 100
SYNC_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


# ==================================================================================== store

class Item(BaseModel):
    """The value both stores keep: a small, typical record."""

    count: int = 0
    name: str = ""
    tags: list[str] = Field(default_factory=list)
    text: str = ""


def _value(i: int) -> dict:
    return {"count": i, "name": f"item-{i}", "tags": ["a", "b", "c", "d", f"t{i % 7}"],
            "text": "lorem ipsum dolor sit amet, consectetur adipiscing elit " * 2}


# (label, LangGraph pragmas or None for as shipped, our durability)
STORE_SETTINGS = (
    (SHIPPED, None, "full"),
    ("WAL+FULL", ("WAL", "FULL"), "full"),
    ("WAL+NORMAL", ("WAL", "NORMAL"), "normal"),
)


def _pragmas(conn: sqlite3.Connection) -> str:
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    sync = conn.execute("PRAGMA synchronous").fetchone()[0]
    return f"journal={str(mode).upper()}, synchronous={SYNC_NAMES.get(sync, sync)}"


def _our_pragmas(store: Any) -> str:
    report = store.doctor()
    return f"journal={str(report['journal_mode']).upper()}, synchronous={report['synchronous']}"


def _store_sizes(quick: bool, fsync: bool) -> dict[str, dict[str, int]]:
    """Warm-up and timed calls per contender: fewer when every commit waits for the disk."""
    if fsync:
        write = {"warmup": 10, "calls": 30 if quick else 200}
    else:
        write = {"warmup": 200, "calls": 500 if quick else 3000}
    return {"write": write, "read": {"warmup": 200, "calls": 500 if quick else 5000}}


def measure_store(label: str, lg_pragmas: tuple[str, str] | None, durability: str,
                  quick: bool, folder: Path) -> list[dict]:
    """One durability setting: p50 rows for write and read, plain and typed, vs LangGraph."""
    tag = label.replace(" ", "-").replace("+", "-").lower()
    with contextlib.ExitStack() as stack:
        lg_path = str(folder / f"lg-store-{tag}.db")
        if lg_pragmas is None:  # exactly as LangGraph's docs build it
            lg = stack.enter_context(SqliteStore.from_conn_string(lg_path))
        else:
            conn = sqlite3.connect(lg_path, check_same_thread=False, isolation_level=None)
            stack.callback(conn.close)
            conn.execute(f"PRAGMA journal_mode = {lg_pragmas[0]}")
            conn.execute(f"PRAGMA synchronous = {lg_pragmas[1]}")
            lg = SqliteStore(conn)
        lg.setup()
        store = fs.open_store(f"sqlite:///{folder / f'ours-store-{tag}.db'}",
                              durability=durability)
        stack.callback(store.close)
        handle = fs.ScopeHandle(store, "session", "typed", state=Item)
        ns, key = ("session", "plain"), "state"
        versions = {"plain": store.write("session", "plain", "", _value(0)).version}
        handle.set_state(_value(0))
        lg.put(ns, key, _value(0))

        def ours_write(i: int) -> None:
            rec = store.write("session", "plain", "", _value(i), expected=versions["plain"])
            versions["plain"] = rec.version

        writes: dict[str, Callable[[int], Any]] = {
            "ours": ours_write,
            "ours typed": lambda i: handle.set_state(_value(i)),
            "langgraph": lambda i: lg.put(ns, key, _value(i)),
        }
        reads: dict[str, Callable[[int], Any]] = {
            "ours": lambda i: store.read("session", "plain", ""),
            "ours typed": lambda i: handle.state,
            "langgraph": lambda i: lg.get(ns, key),
        }
        sizes = _store_sizes(quick, fsync=durability == "full")
        w = {k: summary_us(v) for k, v in interleaved(writes, **sizes["write"]).items()}
        _check_same_value(store, handle, lg)
        r = {k: summary_us(v) for k, v in interleaved(reads, **sizes["read"]).items()}
        ours_p, lg_p = _our_pragmas(store), _pragmas(lg.conn)

    group = f"store vs LangGraph SqliteStore — {label}"
    settings = f"ours {ours_p}; LangGraph {lg_p}"
    rows = []
    for op, stats, plain, typed, theirs in (
            ("write", w, "store.write(expected=v)", "handle.set_state", "put"),
            ("read", r, "store.read", "handle.state", "get")):
        for who, what in (("ours", plain), ("ours typed", typed)):
            name = f"{op}: {what} vs {theirs} [{label}]"
            rows.append(row(name, stats[who]["p50"], stats["langgraph"]["p50"], "µs",
                            target=TARGET if label == SHIPPED else None, group=group,
                            stat="p50", ours_p99=round(stats[who]["p99"], 3),
                            baseline_p99=round(stats["langgraph"]["p99"], 3),
                            samples=int(stats[who]["n"]),
                            note=_note(label, f"p50 per call; {settings}")))
    return rows


def _note(label: str, text: str) -> str:
    return text if label == SHIPPED else f"{REFERENCE}; {text}"


def _check_same_value(store: Any, handle: fs.ScopeHandle, lg: SqliteStore) -> None:
    """Every contender must hold the same last value, or the comparison means nothing."""
    ours = store.read("session", "plain", "").state
    typed = handle.state_dict()
    theirs = lg.get(("session", "plain"), "state").value
    if not ours == typed == theirs:
        raise AssertionError(f"stores disagree after the writes: {ours!r}, {typed!r}, "
                             f"{theirs!r}")


# ===================================================================================== flow

class Count(BaseModel):
    """The session state our counter flow declares."""

    count: int = 0


class GraphState(TypedDict):
    """The state of LangGraph's counter graph."""

    count: int


def _inc(value: Any, ctx: fs.Context) -> Any:
    ctx.session.inc_state(count=1)
    return value


def our_flow() -> fs.Flow:
    """Two actions: ``count`` (100 incrementing steps) and ``one`` (1 step)."""
    actions = {}
    for action, steps in (("count", STEPS), ("one", 1)):
        seq = fs.sequencer(f"counter-{steps}")
        for i in range(steps):
            seq.then(fs.handler(_inc, name=f"inc{i}", session_state=Count))
        actions[action] = seq
    return fs.define_flow(kind="counter", actions=actions)


def _node(state: GraphState) -> dict:
    return {"count": state["count"] + 1}


def their_graph(steps: int, saver: SqliteSaver) -> Any:
    """``steps`` nodes in a chain, each returning ``count + 1``, with a SQLite checkpointer."""
    graph = StateGraph(GraphState)
    previous = START
    for i in range(steps):
        graph.add_node(f"inc{i}", _node)
        graph.add_edge(previous, f"inc{i}")
        previous = f"inc{i}"
    graph.add_edge(previous, END)
    return graph.compile(checkpointer=saver)


def measure_flow(durability: str, quick: bool, folder: Path) -> list[dict]:
    """Per-step and whole-run times of the counter flow, ours vs LangGraph, at one setting."""
    with contextlib.ExitStack() as stack:
        lg_path = str(folder / f"lg-flow-{durability}.db")
        saver = stack.enter_context(SqliteSaver.from_conn_string(lg_path))  # as its docs show
        saver.setup()  # sets WAL; synchronous stays at SQLite's default, FULL
        if durability == "normal":
            saver.conn.execute("PRAGMA synchronous = NORMAL")
        store = fs.open_store(f"sqlite:///{folder / f'ours-flow-{durability}.db'}",
                              durability=durability)
        stack.callback(store.close)
        flow = our_flow()
        graphs = {STEPS: their_graph(STEPS, saver), 1: their_graph(1, saver)}
        sessions: list[str] = []
        threads: list[tuple[str, int, int]] = []  # (thread id, steps, count returned)

        def ours(action: str) -> Callable[[int], None]:
            def call(i: int) -> None:
                sid = f"{action}-{i}"
                result = flow.run(action, None, session=sid, user="bench", store=store)
                if not result.ok:
                    result.raise_for_error()
                if action == "count":
                    sessions.append(sid)
            return call

        def theirs(steps: int, mode: str) -> Callable[[int], None]:
            def call(i: int) -> None:
                tid = f"{mode}-{steps}-{i}"
                out = graphs[steps].invoke(
                    {"count": 0}, {"configurable": {"thread_id": tid},
                                   "recursion_limit": steps + 10}, durability=mode)
                threads.append((tid, steps, out["count"]))
            return call

        contenders = {"ours": ours("count"), "ours 1": ours("one"),
                      "lg sync": theirs(STEPS, "sync"), "lg sync 1": theirs(1, "sync"),
                      "lg async": theirs(STEPS, "async"), "lg async 1": theirs(1, "async")}
        repeats = (1 if durability == "full" else 3) if quick else 9
        samples = interleaved(contenders, warmup=1, calls=repeats, chunk=1)
        ours_count, their_count = _check_counts(flow, store, sessions, graphs[STEPS],
                                                threads)
        ours_p, lg_p = _our_pragmas(store), _pragmas(saver.conn)

    ms = {name: statistics.median(v) / 1e6 for name, v in samples.items()}
    per_step = {who: (ms[who] - ms[f"{who} 1"]) / (STEPS - 1) * 1000  # µs
                for who in ("ours", "lg sync", "lg async")}
    label = SHIPPED if durability == "full" else "WAL+NORMAL"
    group = f"{STEPS}-step counter flow vs LangGraph StateGraph + SqliteSaver — {label}"
    counts = f"final count ours {ours_count}, LangGraph {their_count}"
    rows = []
    for who, mode in (("lg sync", "sync"), ("lg async", "async, its default")):
        rows.append(row(
            f"flow step: ours vs StateGraph durability={mode.split(',')[0]} [{label}]",
            per_step["ours"], per_step[who], "µs",
            target=TARGET if label == SHIPPED else None, group=group,
            stat="median of runs", runs=repeats,
            ours_run_ms=round(ms["ours"], 3), baseline_run_ms=round(ms[who], 3),
            note=_note(label, f"per step = (100-step run - 1-step run) / 99; whole run ours "
                              f"{ms['ours']:.1f} ms vs {ms[who]:.1f} ms; LangGraph "
                              f"durability={mode}; {counts}; ours {ours_p}; LangGraph {lg_p}")))
    return rows


def _check_counts(flow: fs.Flow, store: Any, sessions: list[str], graph: Any,
                  threads: list[tuple[str, int, int]]) -> tuple[int, int]:
    """Every 100-step run must have ended at 100, on both sides; returns the last counts."""
    ours = [flow.session(sid, user="bench", store=store).state.count for sid in sessions]
    returned = [count for _, steps, count in threads if steps == STEPS]
    last = next(tid for tid, steps, _ in reversed(threads) if steps == STEPS)
    stored = graph.get_state({"configurable": {"thread_id": last}}).values["count"]
    print(f"counter flow: ours ended at {sorted(set(ours))} over {len(ours)} runs; LangGraph "
          f"returned {sorted(set(returned))} over {len(returned)} runs, checkpoint holds "
          f"{stored}", file=sys.stderr)
    if set(ours) != {STEPS} or set(returned) != {STEPS} or stored != STEPS:
        raise AssertionError(f"a counter flow did not end at {STEPS}: ours {ours}, "
                             f"LangGraph {returned} (checkpoint {stored})")
    return ours[-1], stored


# ====================================================================================== run

def run(quick: bool) -> list[dict]:
    """Both comparisons at every setting; one row per paired median."""
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="flowstate-bench-lg-") as tmp:
        folder = Path(tmp)
        for label, pragmas, durability in STORE_SETTINGS:
            rows += measure_store(label, pragmas, durability, quick, folder)
        for durability in ("full", "normal"):
            rows += measure_flow(durability, quick, folder)
    return rows


def main(argv: list[str]) -> int:
    return standalone(run, argv, missed="not faster than LangGraph")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
