"""Progress of a running run, for ``%flow run`` and FlowRunner.

A run's ``on_event`` callback sees every event as it happens: state and resource changes,
``progress`` events (``{"done", "total", "block"}`` from ``parallel`` and ``for_each``) and what
blocks ``ctx.emit`` (which carries the emitting ``block``). ``Progress`` counts them and keeps the
latest ``done`` / ``total`` and the block seen last, the one running now. A ticker thread calls
``show(progress)`` every ``TICK`` seconds once the run has lasted ``AFTER`` seconds, so a short
run shows nothing and a long one shows how far it got even while one block runs for a while.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

AFTER = 0.8
"""Seconds a run runs before its progress shows."""

TICK = 0.4
"""Seconds between two progress updates."""


class Progress:
    """Counts a run's events; ``snapshot()`` is what to show (see ``display.progress_text``)."""

    def __init__(self, action: str | None, show: Callable[[dict], None], *,
                 after: float = AFTER, tick: float = TICK) -> None:
        self.action = action
        self._show = show
        self._after, self._tick = after, tick
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._events = 0
        self._done: int | None = None
        self._total: int | None = None
        self._block: str | None = None
        self._request_id: str | None = None
        self._stop = threading.Event()
        self.shown = 0  # how many times progress was shown
        self._thread = threading.Thread(target=self._run, name="flowstate-progress",
                                        daemon=True)
        self._thread.start()

    def on_event(self, event: dict) -> None:
        """The run's ``on_event`` callback (called from the run's threads)."""
        with self._lock:
            self._events += 1
            self._request_id = self._request_id or event.get("request_id") or \
                (event.get("scope_id") if event.get("type") == "request" else None)
            raw = event.get("data")
            data: dict = raw if isinstance(raw, dict) else {}
            if event.get("type") == "progress" and data.get("total"):
                self._done = int(data.get("done") or 0)
                self._total = int(data["total"])
            block = data.get("block") if event.get("type") == "progress" else event.get("block")
            if block:
                self._block = str(block)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"action": self.action, "elapsed": time.monotonic() - self._started,
                    "events": self._events, "done": self._done, "total": self._total,
                    "block": self._block, "request_id": self._request_id}

    def _run(self) -> None:
        if self._stop.wait(self._after):
            return
        while not self._stop.is_set():
            self.shown += 1
            try:
                self._show(self.snapshot())
            except Exception:  # noqa: BLE001 - a display problem must not end the run
                return
            self._stop.wait(self._tick)

    def stop(self) -> None:
        """The run ended: no more updates (waits for one being sent)."""
        self._stop.set()
        self._thread.join(timeout=5)
