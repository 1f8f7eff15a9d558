"""Benchmark: per-step overhead of a flow against the same pipeline as plain Python calls.

A sequencer of 1,000 no-op handlers runs as one flow action, on a memory store and on a SQLite
file; the same 1,000 functions are also called one after another as plain Python. The per-step
cost of the flow is ``(time of the 1,000-step run - time of a 1-step run) / 999``, so the fixed
cost of a run (request record, session check, event subscription) is reported on its own row
instead of being smeared over the steps. Ratios are against the plain Python call.

Run it alone (``python benchmarks/flows.py [--quick]``) or through ``benchmarks/run.py``, which
calls ``run(quick)`` and gets rows ``{"name", "value", "unit", "ratio", "note"}`` (step rows also
carry ``ours`` and ``baseline``, in microseconds).
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    import flowstate_jupyter as fs
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import flowstate_jupyter as fs

STEPS = 1000


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
        finally:
            for store in stores.values():
                store.close()
    return rows


def main(argv: list[str]) -> None:
    rows = run(quick="--quick" in argv)
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        ratio = f"{r['ratio']:>8.1f}x" if r["ratio"] is not None else " " * 9
        print(f"{r['name']:<{width}}  {r['value']:>10} {r['unit']:<2} {ratio}  {r['note']}")
    for r in rows:
        if r["name"].startswith("flows.sequencer_step."):
            print(f"ratio flow step / plain call ({r['name'].rsplit('.', 1)[1]}): "
                  f"{r['ratio']}x")


if __name__ == "__main__":
    main(sys.argv[1:])
