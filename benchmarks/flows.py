"""Benchmark: per-step overhead of a flow against the same pipeline as plain Python calls.

A sequencer of 1,000 no-op handlers runs as one flow action, on a memory store and on a SQLite
file; the same 1,000 functions are also called one after another as plain Python. The per-step
cost of the flow is ``(time of the 1,000-step run - time of a 1-step run) / 999``, so the fixed
cost of a run (request record, session check, event subscription) is reported on its own row
instead of being smeared over the steps. Ratios are against the plain Python call.

Two more rows price what every run records (DESIGN §14-15), each against the same flow with
that switched off, timed interleaved (``_common.interleaved``) on a SQLite file:

* ``flows.trace_overhead``: the whole run of a small chat-like flow (a sequencer, a router and
  its route, a ``parallel`` of two handlers, three state writes; 6 spans) with its trace kept,
  against ``trace=False``. Target <= 1.10.
* ``flows.step_log_per_step``: the per-step cost of a sequencer of handlers that each make one
  state write, durable (step log: the writes tagged in their events, outputs kept for a
  resume) against ``durable=False``; per step = (run of 51 steps - run of 1 step) / 50.
  Target <= 1.15.

Run it alone (``python benchmarks/flows.py [--quick]``) or through ``benchmarks/run.py``, which
calls ``run(quick)`` and gets rows ``{"name", "value", "unit", "ratio", "note"}`` (step rows also
carry ``ours`` and ``baseline``, in microseconds).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parent)]  # _common, and the package from a checkout
from _common import interleaved, row  # noqa: E402
from pydantic import BaseModel  # noqa: E402

import flowstate_jupyter as fs  # noqa: E402

STEPS = 1000
LOG_STEPS = 51


def _noop(value: Any, ctx: Any) -> Any:
    return value


def _pipeline(steps: int) -> fs.Sequencer:
    seq = fs.sequencer(f"noop-{steps}")
    for i in range(steps):
        seq.then(fs.handler(_noop, name=f"step{i}"))
    return seq


def _best_time(fn: Callable[[], Any], repeats: int) -> float:
    """Shortest wall time of ``fn()`` over ``repeats`` runs (after one warm-up run).

    The minimum is the figure least disturbed by other work on the machine, for the flow and
    the baseline alike, so their ratio is stable.
    """
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _plain_step_s(repeats: int) -> float:
    functions = [_noop] * STEPS

    def pipeline() -> Any:
        value = 0
        for fn in functions:
            value = fn(value, None)
        return value

    inner = 200  # one pipeline is too quick to time alone
    return _best_time(lambda: [pipeline() for _ in range(inner)], repeats) / inner / STEPS


def _flow_times(store: fs.stores.Store, repeats: int) -> tuple[float, float]:
    """Seconds per step and seconds of fixed cost per run, on ``store``."""
    flow = fs.define_flow("bench", {"long": _pipeline(STEPS), "short": _pipeline(1)})
    session = flow.session("bench", user="bench", store=store)

    def run(action: str) -> None:
        result = flow.run(action, 0, session=session.id, user="bench", store=store)
        if not result.ok:
            result.raise_for_error()

    long = _best_time(lambda: run("long"), repeats)
    short = _best_time(lambda: run("short"), repeats)
    return (long - short) / (STEPS - 1), short


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


def _recording_rows(store: Any, quick: bool) -> list[dict]:
    """Trace on vs off (whole run), and the step log on vs off (per step), interleaved."""
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

    calls = 60 if quick else 400
    cpu = time.process_time_ns  # CPU time: a busy machine's waits for a core are not counted
    traced = interleaved({"on": chat_run(True), "off": chat_run(False)},
                         warmup=20, calls=calls, clock=cpu)
    on, off = (statistics.median(traced[k]) / 1e3 for k in ("on", "off"))
    rows = [row("flows.trace_overhead", on, off, "µs", target=1.10, group="flows",
                note="a 6-span run (sequencer, router, parallel, 3 writes) on SQLite with its "
                     "trace kept, vs trace=False; medians of CPU time, interleaved")]
    calls = 20 if quick else 200
    timed = interleaved({"long on": log_run("long", True), "long off": log_run("long", False),
                         "short on": log_run("short", True),
                         "short off": log_run("short", False)}, warmup=5, calls=calls,
                        chunk=2, clock=cpu)
    med = {k: statistics.median(v) / 1e3 for k, v in timed.items()}
    per_on = (med["long on"] - med["short on"]) / (LOG_STEPS - 1)
    per_off = (med["long off"] - med["short off"]) / (LOG_STEPS - 1)
    rows.append(row("flows.step_log_per_step", per_on, per_off, "µs", target=1.15,
                    group="flows",
                    note=f"per step of a {LOG_STEPS}-step sequencer whose handlers each make "
                         f"one state write, SQLite: durable (step log) vs durable=False"))
    return rows


def run(quick: bool = False) -> list[dict]:
    """Measure and return one row per figure (times in microseconds / milliseconds)."""
    repeats = 3 if quick else 15
    plain = _plain_step_s(repeats)
    plain_us = plain * 1e6
    rows = [{"name": "flows.plain_python_step", "value": round(plain_us, 4), "unit": "us",
             "ratio": 1.0, "group": "flows",
             "note": "one plain Python function call per step (the baseline)"}]
    with tempfile.TemporaryDirectory() as folder:
        stores = {"memory": fs.open_store("memory://"),
                  "sqlite": fs.open_store(f"sqlite:///{Path(folder) / 'bench.db'}")}
        try:
            for label, store in stores.items():
                per_step, fixed = _flow_times(store, repeats)
                rows.append({"name": f"flows.sequencer_step.{label}",
                             "value": round(per_step * 1e6, 3), "unit": "us",
                             "ours": round(per_step * 1e6, 3), "baseline": round(plain_us, 4),
                             "ratio": round(per_step / plain, 1), "group": "flows",
                             "note": f"per step of a {STEPS}-step sequencer of no-op handlers "
                                     f"({label} store), vs a plain call"})
                rows.append({"name": f"flows.run_fixed_cost.{label}",
                             "value": round(fixed * 1e3, 3), "unit": "ms", "ratio": None,
                             "group": "flows",
                             "note": f"one run of a 1-step flow ({label} store): request "
                                     f"record, session check, events"})
            rows += _recording_rows(stores["sqlite"], quick)
        finally:
            for store in stores.values():
                store.close()
    return rows


def main(argv: list[str]) -> None:
    rows = run(quick="--quick" in argv)
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        ratio = f"{r['ratio']:>8.2f}x" if r["ratio"] is not None else " " * 9
        value = r.get("value", r.get("ours"))
        print(f"{r['name']:<{width}}  {value:>10} {r['unit']:<2} {ratio}  {r['note']}")
    for r in rows:
        if r["name"].startswith("flows.sequencer_step."):
            print(f"ratio flow step / plain call ({r['name'].rsplit('.', 1)[1]}): "
                  f"{r['ratio']}x")


if __name__ == "__main__":
    main(sys.argv[1:])
