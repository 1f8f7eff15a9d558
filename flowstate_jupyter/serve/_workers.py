"""Threads with their own event loops, where the server runs flows and other blocking work.

A flow's synchronous handlers and every store call block their thread, so they must not run on
the server's event loop (it would stop answering and streaming meanwhile). Each job runs on an
idle worker thread's event loop; at most ``limit`` jobs run at once and the rest wait their turn.
Workers are kept and reused: a new thread and loop per request (``asyncio.run`` in a thread pool)
cost about 0.35 ms, a sixth of a small run.

A job, once started, finishes even when the request that started it goes away: it is a write,
and a half-done run helps no one. Only the wait for it is cancelled.

``limit=0`` runs every job on the server's own loop instead: no hand-over between threads (which
costs little on an idle machine, and a few milliseconds when its cores are oversubscribed), for
flows whose blocks never block for long — while a job runs, the server does nothing else.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["Workers"]


class _Worker:
    def __init__(self, number: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name=f"flowstate-serve-{number}")
        self.thread.start()

    def stop(self, deadline: float) -> None:
        try:
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:  # already closed
            return
        self.thread.join(max(0.0, deadline - time.monotonic()))
        if not self.thread.is_alive():
            self.loop.close()


class Workers:
    """Up to ``limit`` worker threads, each running one job at a time on its own loop."""

    def __init__(self, limit: int = 8) -> None:
        self.limit = limit
        self._idle: list[_Worker] = []
        self._all: list[_Worker] = []
        self._slots: asyncio.Semaphore | None = None  # made on the server's loop, when first used
        self._closed = False

    async def run(self, make: Callable[[], Awaitable[T]]) -> T:
        """Await ``make()`` on a worker's loop and return its result (or raise its error)."""
        if self._closed:
            raise RuntimeError("the server is shutting down")
        if self.limit == 0:
            return await make()
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limit)
        slots = self._slots
        await slots.acquire()
        worker = self._idle.pop() if self._idle else self._new()
        loop = asyncio.get_running_loop()

        def release(_: Any) -> None:  # in the worker's thread, when the job is done
            def back() -> None:
                self._idle.append(worker)
                slots.release()
            try:
                loop.call_soon_threadsafe(back)
            except RuntimeError:  # the server's loop is closed: nothing waits any more
                pass

        try:
            future = asyncio.run_coroutine_threadsafe(_call(make), worker.loop)
        except BaseException:
            self._idle.append(worker)
            slots.release()
            raise
        future.add_done_callback(release)
        return await asyncio.shield(asyncio.wrap_future(future))

    async def call(self, fn: Callable[[], T]) -> T:
        """Run the blocking function ``fn()`` on a worker and return its result."""
        async def job() -> T:
            return fn()
        return await self.run(job)

    def _new(self) -> _Worker:
        worker = _Worker(len(self._all) + 1)
        self._all.append(worker)
        return worker

    @property
    def threads(self) -> int:
        """How many worker threads exist (never more than ``limit``)."""
        return len(self._all)

    def close(self, timeout: float = 5.0) -> None:
        """Stop every worker thread (jobs still running get ``timeout`` seconds in all)."""
        self._closed = True
        deadline = time.monotonic() + timeout
        for worker in self._all:
            worker.stop(deadline)
        self._all.clear()
        self._idle.clear()


async def _call(make: Callable[[], Awaitable[T]]) -> T:
    return await make()
