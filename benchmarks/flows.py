"""Benchmark: what a run costs, against the least the same job can cost done by hand.

Rows (all on a SQLite file, ``synchronous=NORMAL``, each flow with its default configuration —
trace kept, durable — as users get it):

* ``flows.run_vs_floor``: one ``flow.run`` of a 1-step flow (a no-op handler, an existing
  session) against the floor: hand-written ``sqlite3`` recording the same run in one
  transaction — ``INSERT`` of a request row (the record as JSON, the same fields as ours) and
  ``UPDATE`` of its session row — on a file with the same pragmas (WAL, ``synchronous=NORMAL``).
  Medians of CPU time, interleaved. Target <= 3. The note gives the SQL statements, commits and
  WAL pages per run, ours and the floor's.
* ``flows.step_vs_lean``: per step of a 1,000-step sequencer of no-op handlers,
  ``(run of 1,000 steps - run of 1 step) / 999``, against a lean synchronous loop that calls the
  same function 1,000 times and keeps a span for each (path, name, input, output, start,
  duration, status, error: a list per step). Target <= 4; ``flows.step_us`` checks the same
  per-step time against 2 µs. Both sides are the fastest of runs interleaved with each other
  in one loop (CPU time): the figure least disturbed by other work on the machine, and taken
  by both in the same seconds.
* ``flows.step_vs_langgraph`` and ``flows.step_vs_burr``: reference rows without a target —
  our per-step time against LangGraph's ``StateGraph`` (a chain of no-op nodes, compiled as
  shipped, no checkpointer) and Burr's ``Application`` (a chain of no-op actions, built as its
  docs show, no persister), per step measured the same way. Skipped with a note when the
  package is not installed (the ``bench`` extra has both).
* ``flows.trace_overhead``: a whole 6-span run (sequencer, router, parallel, 3 writes) with its
  trace kept, against ``trace=False``. Target <= 1.10.
* ``flows.step_log_per_step``: per step of a sequencer whose handlers each make one state
  write, durable (step log) against ``durable=False``; per step = (51 steps - 1 step) / 50.
  Target <= 1.15.

Run it alone (``python benchmarks/flows.py [--quick] [--profile]``) or through
``benchmarks/run.py``. ``--profile`` prints where a 1-step run and a 1,000-step run spend their
time (cProfile).
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parent)]  # _common, and the package from a checkout
from _common import check_row, interleaved, row, standalone  # noqa: E402
from pydantic import BaseModel  # noqa: E402

import flowstate_jupyter as fs  # noqa: E402

STEPS = 1000
LOG_STEPS = 51
cpu = time.process_time_ns  # CPU time: a busy machine's waits for a core are not counted


def _noop(value: Any, ctx: Any) -> Any:
    return value


def _pipeline(steps: int) -> fs.Sequencer:
    seq = fs.sequencer(f"noop-{steps}")
    for i in range(steps):
        seq.then(fs.handler(_noop, name=f"step{i}"))
    return seq


def _noop_flow(steps: int) -> fs.Flow:
    return fs.define_flow("bench", {"long": _pipeline(steps), "short": _pipeline(1)})


# ---------------------------------------------------------------------------- run vs floor

class _Floor:
    """The least a hand-written recorder of runs does: one transaction per run, inserting the
    request row and updating the session row, on a file with the store's pragmas."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(str(path), isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.conn.execute("CREATE TABLE requests (id TEXT PRIMARY KEY, session TEXT NOT NULL, "
                          "record TEXT NOT NULL)")
        self.conn.execute("CREATE TABLE sessions (id TEXT PRIMARY KEY, user TEXT NOT NULL, "
                          "runs INTEGER NOT NULL, updated_at REAL NOT NULL)")
        self.conn.execute("INSERT INTO sessions VALUES ('bench', 'bench', 0, 0)")

    def run(self, value: Any) -> Any:
        """Run the no-op step and record it: what ``flow.run`` does, by hand."""
        started = time.time()
        clock0 = time.perf_counter()
        output = _noop(value, None)
        record = {"action": "short", "block": "noop-1", "flow": "bench", "session": "bench",
                  "user": "bench", "project": "default", "input": value, "output": output,
                  "error": None, "status": "ok", "started_at": started, "ended_at": time.time(),
                  "duration_s": time.perf_counter() - clock0}
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("INSERT INTO requests VALUES (?, ?, ?)",
                         (f"r-{uuid.uuid4().hex[:12]}", "bench", json.dumps(record)))
            conn.execute("UPDATE sessions SET runs = runs + 1, updated_at = ? WHERE id = ?",
                         (record["ended_at"], "bench"))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return output


def _wal_pages_per_call(db: Path, fn: Callable[[], Any], calls: int) -> float:
    """WAL frames ``fn`` adds per call (the WAL is started over first; ``calls`` small enough
    that no checkpoint starts it over meanwhile)."""
    conn = sqlite3.connect(str(db), isolation_level=None)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        for _ in range(calls):
            fn()
        size = os.path.getsize(f"{db}-wal")
    finally:
        conn.close()
    return max(0, size - 32) / (page + 24) / calls


def _statements_per_call(conn: Any, fn: Callable[[], Any], calls: int) -> tuple[float, float]:
    """(SQL statements, commits) per call of ``fn`` on connection ``conn``. SQLite reports a
    statement once more for each statement its triggers run; those are not counted."""
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    try:
        for _ in range(calls):
            fn()
    finally:
        conn.set_trace_callback(None)
    top = [s for k, s in enumerate(seen) if k == 0 or s != seen[k - 1]]
    return len(top) / calls, sum(s.lstrip().upper().startswith("COMMIT") for s in top) / calls


def _run_vs_floor(folder: Path, quick: bool) -> list[dict]:
    store = fs.open_store(f"sqlite:///{folder / 'run.db'}")
    floor = _Floor(folder / "floor.db")
    flow = _noop_flow(1)
    try:
        flow.session("bench", user="bench", store=store)

        def ours(i: int) -> None:
            result = flow.run("short", i, session="bench", user="bench", store=store)
            if not result.ok:
                result.raise_for_error()

        def theirs(i: int) -> None:
            floor.run(i)

        timed = interleaved({"ours": ours, "floor": theirs}, warmup=100 if quick else 300,
                            calls=300 if quick else 3000, clock=cpu)
        med = {k: statistics.median(v) / 1e3 for k, v in timed.items()}
        conn = getattr(store, "_conn", None)  # the store's connection, to count statements
        sql_ours = _statements_per_call(conn, lambda: ours(0), 50) if conn is not None \
            else (float("nan"), float("nan"))
        sql_floor = _statements_per_call(floor.conn, lambda: theirs(0), 50)
        pages_ours = _wal_pages_per_call(folder / "run.db", lambda: ours(0), 40)
        pages_floor = _wal_pages_per_call(folder / "floor.db", lambda: theirs(0), 40)
    finally:
        store.close()
        floor.conn.close()
    note = (f"a 1-step flow.run (no-op handler, existing session, trace kept, durable) vs one "
            f"hand-written sqlite3 transaction (INSERT request row + UPDATE session row), both "
            f"WAL + synchronous=NORMAL; medians of CPU time, interleaved. Per run: "
            f"{sql_ours[0]:.1f} SQL statements, {sql_ours[1]:.2f} commits, "
            f"{pages_ours:.1f} WAL pages (floor: {sql_floor[0]:.0f}, {sql_floor[1]:.0f}, "
            f"{pages_floor:.1f})")
    return [row("flows.run_vs_floor", med["ours"], med["floor"], "µs", target=3.0,
                group="flows: a run and a step", note=note,
                statements=round(sql_ours[0], 2), commits=round(sql_ours[1], 2),
                wal_pages=round(pages_ours, 2), floor_wal_pages=round(pages_floor, 2))]


# ---------------------------------------------------------------------------- step vs lean loop

def _lean_loop(steps: int) -> Callable[[Any], Any]:
    """A lean synchronous engine: call each function, keep a span per step."""
    table = [(f"noop-{steps}/then[{i}]/step{i}", f"step{i}", _noop) for i in range(steps)]
    clock = time.perf_counter

    def run(value: Any) -> Any:
        spans = []
        for path, name, fn in table:
            t0 = clock()
            try:
                out = fn(value, None)
            except Exception as exc:
                spans.append([path, name, value, None, t0, clock() - t0, "error", exc])
                raise
            spans.append([path, name, value, out, t0, clock() - t0, "ok", None])
            value = out
        return value, spans

    return run


def _per_step(long: Callable[[int], Any], short: Callable[[int], Any], steps: int,
              calls: int, prepare: Callable[[str, int], None] | None = None) -> float:
    """Microseconds per step: (fastest ``long`` - fastest ``short``) / (steps - 1), the two
    interleaved, CPU time. The minimum is the figure least disturbed by other work on the
    machine, for every contender alike."""
    timed = interleaved({"long": long, "short": short}, warmup=3, calls=calls, chunk=1,
                        clock=cpu, prepare=prepare)
    return (min(timed["long"]) - min(timed["short"])) / 1e3 / (steps - 1)


def _our_and_lean_step(folder: Path, steps: int, calls: int) -> tuple[float, float]:
    """Microseconds per step, ours and the lean loop's, measured in one interleaved loop: on a
    shared machine a whole stretch of seconds can run slower (a busy neighbour on the same
    core), and two loops one after the other would then see different machines."""
    store = fs.open_store(f"sqlite:///{folder / 'steps.db'}")
    flow = _noop_flow(steps)
    loop = _lean_loop(steps)
    repeat = 20  # one lean loop is too quick to time alone
    try:
        flow.session("bench", user="bench", store=store)

        def run(action: str) -> Callable[[int], None]:
            def go(i: int) -> None:
                result = flow.run(action, 0, session="bench", user="bench", store=store)
                if not result.ok:
                    result.raise_for_error()
            return go

        def lean(i: int) -> None:
            for _ in range(repeat):
                loop(0)

        # (in chunks of ten calls: each side's caches as warm as when it runs alone)
        timed = interleaved({"long": run("long"), "short": run("short"), "lean": lean},
                            warmup=3, calls=calls, chunk=10, clock=cpu)
    finally:
        store.close()
    ours = (min(timed["long"]) - min(timed["short"])) / 1e3 / (steps - 1)
    return ours, min(timed["lean"]) / 1e3 / repeat / steps


def _langgraph_step(steps: int, calls: int) -> float | str:
    try:
        from langgraph.graph import END, START, StateGraph
    except ImportError as exc:
        return f"langgraph is not installed ({exc}); pip install 'flowstate-jupyter[bench]'"
    from typing import TypedDict

    class State(TypedDict):
        value: int

    def node(state: State) -> dict:
        return {"value": state["value"]}

    def graph(n: int) -> Any:
        built = StateGraph(State)
        previous = START
        for i in range(n):
            built.add_node(f"step{i}", node)
            built.add_edge(previous, f"step{i}")
            previous = f"step{i}"
        built.add_edge(previous, END)
        return built.compile()

    long, short = graph(steps), graph(1)
    config = {"recursion_limit": steps + 10}  # its default (25) stops longer chains
    return _per_step(lambda i: long.invoke({"value": 0}, config),
                     lambda i: short.invoke({"value": 0}, config), steps, calls)


def _burr_step(steps: int, calls: int) -> float | str:
    try:
        from burr.core import ApplicationBuilder, State, action, default
    except ImportError as exc:
        return f"burr is not installed ({exc}); pip install 'flowstate-jupyter[bench]'"

    @action(reads=["value"], writes=["value"])
    def step(state: State) -> State:
        return state

    def app(n: int) -> Any:
        builder = ApplicationBuilder().with_actions(**{f"step{i}": step for i in range(n)})
        if n > 1:
            builder = builder.with_transitions(*[(f"step{i}", f"step{i + 1}", default)
                                                 for i in range(n - 1)])
        return builder.with_state(value=0).with_entrypoint("step0").build()

    # An Application runs once from its entry point: each timed run gets a new one, built
    # untimed (as a compiled graph is, on the other sides).
    ready: dict[int, Any] = {}

    def prepare(name: str, i: int) -> None:  # (called for warm-up calls too)
        n = steps if name == "long" else 1
        ready[n] = app(n)

    def run(n: int) -> Callable[[int], None]:
        def go(i: int) -> None:
            ready[n].run(halt_after=[f"step{n - 1}"])
        return go

    return _per_step(run(steps), run(1), steps, calls, prepare)


def _step_rows(folder: Path, quick: bool) -> list[dict]:
    calls = 30 if quick else 60
    ours, lean = _our_and_lean_step(folder, STEPS, calls)
    group = "flows: a run and a step"
    rows = [
        row("flows.step_vs_lean", ours, lean, "µs", target=4.0, group=group,
            note=f"per step of a {STEPS}-step sequencer of no-op handlers (SQLite, trace kept, "
                 f"durable; (run of {STEPS} - run of 1) / {STEPS - 1}) vs a lean synchronous "
                 f"loop keeping a span per step; fastest of interleaved runs, CPU time"),
        check_row("flows.step_us", round(ours, 3), "µs", limit=2.0, group=group,
                  note="the same per-step time, against 2 µs"),
    ]
    ref = "flows: reference (as shipped, no target)"
    their_steps = 200 if quick else STEPS  # theirs take 30-400 µs a step
    their_calls = 3 if quick else 7
    for name, label, measure in (("langgraph", "LangGraph StateGraph", _langgraph_step),
                                 ("burr", "Burr Application", _burr_step)):
        theirs = measure(their_steps, their_calls)
        if isinstance(theirs, str):  # not installed: said, not silently left out
            rows.append({"name": f"flows.step_vs_{name}", "value": None, "unit": "µs",
                         "ratio": None, "group": ref, "note": f"skipped: {theirs}"})
            continue
        rows.append(row(f"flows.step_vs_{name}", ours, theirs, "µs", group=ref,
                        note=f"our step vs a {label} step (a chain of {their_steps} no-op "
                             f"nodes, no persistence; per step measured as ours)"))
    return rows


# ---------------------------------------------------------------------------- recording

class _Chat(BaseModel):
    mode: str = "chat"
    count: int = 0
    notes: list[str] = []


def _chat_flow() -> fs.Flow:
    """A small flow with the usual shapes: 6 spans, 3 state writes per run."""
    @fs.handler(session_state=_Chat)
    def switch(value: Any, ctx: Any) -> Any:
        ctx.session.patch_state(mode="agent" if value % 2 else "chat")
        return value

    @fs.handler(session_state=_Chat)
    def chat(value: Any, ctx: Any) -> Any:
        ctx.session.inc_state(count=1)
        return {"reply": f"chat {value}"}

    @fs.handler(session_state=_Chat)
    def agent(value: Any, ctx: Any) -> Any:
        ctx.session.inc_state(count=1)
        return {"reply": f"agent {value}"}

    router = fs.router(name="mode-router", routes=[chat, agent],
                       route=lambda v, ctx: agent if ctx.session.state.mode == "agent"
                       else chat)

    @fs.handler(session_state=_Chat)
    def note(value: Any, ctx: Any) -> Any:
        ctx.session.push_state("notes", value["reply"])
        return value

    @fs.handler
    def shout(value: Any) -> Any:
        return value["reply"].upper()

    seq = fs.sequencer("chat-pipeline").then(switch).then(router).parallel(
        {"note": note, "shout": shout}, max_concurrency=1)
    return fs.define_flow("bench-chat", {"chat": seq})


class _Counter(BaseModel):
    n: int = 0


def _log_flow() -> fs.Flow:
    @fs.handler(session_state=_Counter)
    def bump(value: Any, ctx: Any) -> Any:
        ctx.session.inc_state(n=1)
        return value + 1

    def pipeline(steps: int) -> fs.Sequencer:
        seq = fs.sequencer(f"bump-{steps}")
        for i in range(steps):
            seq.then(fs.handler(bump.fn, name=f"bump{i}", session_state=_Counter))
        return seq

    return fs.define_flow("bench-log", {"long": pipeline(LOG_STEPS), "short": pipeline(1)})


def _recording_rows(folder: Path, quick: bool) -> list[dict]:
    """Trace on vs off (whole run), and the step log on vs off (per step), interleaved."""
    store = fs.open_store(f"sqlite:///{folder / 'recording.db'}")
    chat = _chat_flow()
    log = _log_flow()

    def chat_run(trace: bool) -> Any:
        def go(i: int) -> None:
            result = chat.run("chat", i, session="trace", user="bench", store=store,
                              trace=trace)
            if not result.ok:
                result.raise_for_error()
        return go

    def log_run(action: str, durable: bool) -> Any:
        def go(i: int) -> None:
            result = log.run(action, 0, session="log", user="bench", store=store,
                             durable=durable)
            if not result.ok:
                result.raise_for_error()
        return go

    try:
        calls = 60 if quick else 400
        traced = interleaved({"on": chat_run(True), "off": chat_run(False)},
                             warmup=20, calls=calls, clock=cpu)
        on, off = (statistics.median(traced[k]) / 1e3 for k in ("on", "off"))
        group = "flows: what a run records"
        rows = [row("flows.trace_overhead", on, off, "µs", target=1.10, group=group,
                    note="a 6-span run (sequencer, router, parallel, 3 writes) on SQLite with "
                         "its trace kept, vs trace=False; medians of CPU time, interleaved")]
        calls = 20 if quick else 200
        timed = interleaved({"long on": log_run("long", True),
                             "long off": log_run("long", False),
                             "short on": log_run("short", True),
                             "short off": log_run("short", False)}, warmup=5, calls=calls,
                            chunk=2, clock=cpu)
    finally:
        store.close()
    med = {k: statistics.median(v) / 1e3 for k, v in timed.items()}
    per_on = (med["long on"] - med["short on"]) / (LOG_STEPS - 1)
    per_off = (med["long off"] - med["short off"]) / (LOG_STEPS - 1)
    rows.append(row("flows.step_log_per_step", per_on, per_off, "µs", target=1.15,
                    group=group,
                    note=f"per step of a {LOG_STEPS}-step sequencer whose handlers each make "
                         f"one state write, SQLite: durable (step log) vs durable=False"))
    return rows


# ---------------------------------------------------------------------------- entry points

def run(quick: bool = False) -> list[dict]:
    """Measure and return one row per figure (times in microseconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = _run_vs_floor(folder, quick)
        rows += _step_rows(folder, quick)
        rows += _recording_rows(folder, quick)
    return rows


def profile() -> None:
    """Where a 1-step run and a 1,000-step run spend their time (cProfile, top functions)."""
    import cProfile
    import pstats

    with tempfile.TemporaryDirectory() as tmp:
        store = fs.open_store(f"sqlite:///{Path(tmp) / 'profile.db'}")
        flow = _noop_flow(STEPS)
        flow.session("bench", user="bench", store=store)
        try:
            for action, times in (("short", 3000), ("long", 30)):
                for _ in range(times // 10):
                    flow.run(action, 0, session="bench", user="bench", store=store)
                profiler = cProfile.Profile()
                profiler.enable()
                for _ in range(times):
                    flow.run(action, 0, session="bench", user="bench", store=store)
                profiler.disable()
                print(f"\n== {times} runs of {action!r}")
                pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
        finally:
            store.close()


if __name__ == "__main__":
    if "--profile" in sys.argv:
        profile()
    else:
        sys.exit(standalone(run, sys.argv[1:]))
