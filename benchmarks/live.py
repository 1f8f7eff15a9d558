"""Live updates on SQLite: how soon another process's write reaches a subscriber, and the cost of
waiting for one.

A store object in this process subscribes; another process opens the same file and writes one
record at random intervals of 20 to 60 ms (see ``_live.py``). Rows: the latency from the write
(its ``ts``) to the callback, p50 (target <= 50 ms) and p90; the CPU this process uses while
subscribed and idle (target <= 1% of a core); and the watcher threads left once the last
subscriber has unsubscribed (target 0: no thread without a subscriber). Other processes' writes
are noticed by a watcher thread that polls ``PRAGMA data_version`` every ``poll_interval``.

Run alone with ``python benchmarks/live.py [--quick]``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parent)]  # _common, and the package from a checkout
from _common import standalone  # noqa: E402
from _live import measure, rows  # noqa: E402

import flowstate_jupyter as fs  # noqa: E402


def run(quick: bool) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="flowstate-bench-live-") as tmp:
        url = f"sqlite:///{tmp}/live.db"
        store = fs.open_store(url)
        try:
            store.write("session", "live", "", {"i": -1})  # the file exists for the writer
            result = measure(store, url, events=10 if quick else 100,
                             idle_s=1.0 if quick else 10.0)
        finally:
            store.close()
    return rows("SQLite", result, group="live updates from another process (SQLite)")


def main(argv: list[str]) -> int:
    return standalone(run, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
