"""Refresh a view when the store changes: debounced, from a timer thread.

Store callbacks arrive in the writing thread (own writes) or the store's watcher thread (other
processes). A flow run may write hundreds of times a second, so a view is refreshed at most once
per ``interval`` seconds (0.05: a burst becomes one refresh, a single write shows at once), never
inside the write itself.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable

from ..stores.base import Store


class Live:
    """Call ``refresh()`` soon after each change for which ``wants(event)`` is true."""

    def __init__(self, store: Store, wants: Callable[[dict], bool],
                 refresh: Callable[[], None], interval: float = 0.05) -> None:
        self._wants = wants
        self._refresh = refresh
        self._interval = interval
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._closed = False
        self._store = store
        self._unsubscribe = store.subscribe(self._on_event)

    def _on_event(self, event: dict) -> None:
        if self._closed or not self._wants(event):
            return
        with self._lock:
            if self._timer is not None:
                return
            self._timer = threading.Timer(self._interval, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            self._timer = None
        if self._closed:
            return
        if getattr(self._store, "_closed", False):  # the store was closed: the view is done
            self.close()
            return
        try:
            self._refresh()
        except Exception as exc:  # noqa: BLE001 - a failed refresh must not end the thread quietly
            # (stacklevel 1: this timer thread has no caller to point at)
            warnings.warn(f"flowstate view refresh failed: {exc!r}", RuntimeWarning, stacklevel=1)

    def close(self) -> None:
        self._closed = True
        self._unsubscribe()
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
