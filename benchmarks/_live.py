"""Live updates, measured the same way on every backend (used by ``live.py`` and ``postgres.py``).

* **Latency**: this process subscribes to a store; another process (started with the same store
  URL) writes one record at random intervals of 20 to 60 ms. Each event carries ``ts``, the time
  the writer's store stamped the write, just before it committed; the subscriber notes the wall
  clock when its callback runs. Latency = callback time - ``ts`` (one clock: the same machine).
* **Idle cost**: with one subscriber and nothing written, the CPU this process uses
  (``time.process_time``: every thread) over a few seconds, as CPU-seconds per minute and as a
  percentage of one core.
* **Threads**: watcher threads still running after the last subscriber unsubscribed (must be 0).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from _common import check_row, percentile

_ROOT = Path(__file__).resolve().parent.parent

_WRITER = r"""
import random, sys, time
sys.path.insert(0, sys.argv[3])
from flowstate_jupyter.stores import open_store
url, count = sys.argv[1], int(sys.argv[2])
rng = random.Random(11)
with open_store(url) as store:
    print("ready", flush=True)
    sys.stdin.readline()
    for i in range(count):
        time.sleep(rng.uniform(0.02, 0.06))
        store.write("session", "live", "", {"i": i})
"""


def _watchers() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("flowstate-"))


def measure(store: Any, url: str, *, events: int, idle_s: float) -> dict:
    """Latency percentiles (ms), idle CPU and watcher threads left, for ``store``."""
    delays: list[float] = []
    done = threading.Event()

    def on_event(event: dict) -> None:
        if event.get("scope_id") == "live":
            delays.append((time.time() - event["ts"]) * 1000)
            if len(delays) >= events:
                done.set()

    before = _watchers()
    unsubscribe = store.subscribe(on_event)
    try:
        writer = subprocess.Popen([sys.executable, "-c", _WRITER, url, str(events), str(_ROOT)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert writer.stdout is not None and writer.stdin is not None
            if writer.stdout.readline().strip() != "ready":
                raise RuntimeError("the writer process did not start")
            writer.stdin.write("go\n")
            writer.stdin.flush()
            if not done.wait(30 + events * 0.2):
                raise RuntimeError(f"only {len(delays)} of {events} events arrived")
        finally:
            writer.wait(timeout=60)
        time.sleep(0.3)  # let the writer's exit settle before measuring idleness
        cpu0, wall0 = time.process_time(), time.perf_counter()
        time.sleep(idle_s)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        unsubscribe()
    deadline = time.monotonic() + 2
    while _watchers() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    return {"p50": statistics.median(delays), "p90": percentile(delays, 90),
            "idle_cpu_per_min": cpu / wall * 60, "idle_core_pct": cpu / wall * 100,
            "watchers_left": _watchers() - before, "events": len(delays), "idle_s": wall}


def rows(backend: str, result: dict, *, group: str, p50_limit_ms: float = 50.0,
         idle_limit_cpu_s_per_min: float | None = None) -> list[dict]:
    """Check rows for one backend's ``measure`` result."""
    idle_note = (f"{result['idle_core_pct']:.3f}% of a core; {result['idle_s']:.0f} s with one "
                 f"subscriber and no writes (every thread of this process)")
    out = [
        check_row(f"{backend}: another process's write -> subscriber, p50", result["p50"], "ms",
                  limit=p50_limit_ms, group=group,
                  note=f"{result['events']} writes 20-60 ms apart; p90 "
                       f"{result['p90']:.1f} ms"),
        {"name": f"{backend}: another process's write -> subscriber, p90",
         "value": round(result["p90"], 2), "unit": "ms", "group": group},
    ]
    if idle_limit_cpu_s_per_min is None:  # a share of one core (1% = 0.6 CPU-s per minute)
        out.append(check_row(f"{backend}: idle CPU with a subscriber", result["idle_core_pct"],
                             "% of a core", limit=1.0, group=group,
                             note=f"{result['idle_cpu_per_min']:.3f} CPU-s per minute; "
                                  + idle_note))
    else:
        out.append(check_row(f"{backend}: idle CPU with a subscriber",
                             result["idle_cpu_per_min"], "CPU-s/min",
                             limit=idle_limit_cpu_s_per_min, group=group, note=idle_note))
    out.append(check_row(f"{backend}: watcher threads after the last unsubscribe",
                         result["watchers_left"], "threads", limit=0, group=group))
    return out
