"""From synchronous code to a run: with no event loop at all, on this thread's loop, or on a
helper thread's.

``flow.run`` is synchronous; blocks may be ``async def``. :func:`run_sync` picks the cheapest
way to run a run to completion from the calling thread:

* **No event loop in this thread, and every block of the tree is a plain function** (``def``
  handlers, routes, conditions, sequencers of them): the run executes synchronously, with no
  event loop at all. A plain function that returns an awaitable after all has it awaited by
  :func:`drive`, on a short-lived loop.
* **No event loop in this thread, something async in the tree**: ``asyncio.run``; in the main
  thread on a loop kept from run to run (Python 3.11+: ``asyncio.Runner``, closed at exit;
  building and closing a loop per run cost about a third of a short run). As with
  ``asyncio.run``, Ctrl+C cancels the run, which records the request as an error, and tasks a
  block left running are cancelled when the run ends.
* **Inside a running loop** (Jupyter, or a block calling ``flow.run``): on an idle helper
  thread's event loop (started the first time and kept for later runs), with this thread's
  context variables, while this thread waits. Interrupting the wait (Jupyter's stop button
  raises ``KeyboardInterrupt`` here) cancels the run, which records the request as an error,
  and then re-raises the interrupt.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["drive", "run_sync"]

T = TypeVar("T")


def run_sync(make: Callable[[], Coroutine[Any, Any, T]],
             now: Callable[[], T] | None = None) -> T:
    """Run the coroutine ``make()`` returns to completion and return its result.

    ``now``, if given, does the same job without an event loop; it is called instead when no
    loop runs in this thread (see the module doc).
    """
    # ``_get_running_loop`` (public in ``asyncio.events``) answers None where no loop runs;
    # ``get_running_loop`` raises, and a raised and caught exception costs a run ~0.3 µs
    if asyncio._get_running_loop() is None:
        if now is not None:
            return now()
        return _run_here(make)
    return _run_in_helper_thread(make)


def drive(awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` from synchronous code (a plain function of a block returned one)."""
    async def wait() -> T:
        return await awaitable
    return run_sync(wait)


# ---------------------------------------------------------------------------- this thread's loop

_MAIN: dict[str, Any] = {}  # the main thread's asyncio.Runner, and whether it runs a run now


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel the tasks a run left behind and let them finish (what ``asyncio.run`` does)."""
    left = [task for task in asyncio.all_tasks(loop) if not task.done()]
    if not left:
        return
    for task in left:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))


def _run_here(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``make()`` to completion in this thread (no loop runs in it).

    The main thread keeps its loop from run to run (Python 3.11+: ``asyncio.Runner``, closed
    when the interpreter exits); other threads, which may end at any time, use a loop per run
    (``asyncio.run``).
    """
    if sys.version_info < (3, 11) or threading.current_thread() is not threading.main_thread() \
            or _MAIN.get("busy"):
        return asyncio.run(make())
    runner = _MAIN.get("runner")
    if runner is None:
        runner = _MAIN["runner"] = asyncio.Runner()
        atexit.register(runner.close)
    _MAIN["busy"] = True
    try:
        return runner.run(make())
    finally:
        try:
            _cancel_leftovers(runner.get_loop())
        finally:
            _MAIN["busy"] = False


# ---------------------------------------------------------------------------- helper threads

class _LoopThread:
    """A daemon thread running an event loop forever, to run flows on from inside a loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="flowstate-run",
                                       daemon=True)
        self.thread.start()


_IDLE_LOOPS: list[_LoopThread] = []  # helper threads not running a flow now
_IDLE_LOCK = threading.Lock()


def _run_in_helper_thread(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``make()`` on an idle helper loop while this thread waits (see :func:`run_sync`).

    An interrupt (``KeyboardInterrupt``) may arrive at any instruction of this thread, also while
    the run is being scheduled, for instance from the block itself an instant after it starts.
    Everything from scheduling on is therefore inside one ``try``, and the cancel request goes
    through the helper's loop, which runs callbacks in the order they were scheduled: it runs
    after ``start`` if ``start`` was scheduled at all. So the run is either never started or
    cancelled, and the interrupt propagates only after the run has recorded its outcome.
    """
    with _IDLE_LOCK:
        helper = _IDLE_LOOPS.pop() if _IDLE_LOOPS else None
    if helper is None:  # the first run, or every helper is busy (a run started inside a run)
        helper = _LoopThread()
    context = contextvars.copy_context()
    box: dict[str, Any] = {}
    finished = threading.Event()

    def start() -> None:  # on the helper's loop
        try:
            task: asyncio.Task[T] = context.run(lambda: helper.loop.create_task(make()))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            box["error"] = exc
            finished.set()
            return
        box["task"] = task
        task.add_done_callback(done)

    def done(task: asyncio.Task) -> None:
        if task.cancelled():
            box["error"] = asyncio.CancelledError()
        elif task.exception() is not None:
            box["error"] = task.exception()
        else:
            box["result"] = task.result()
        finished.set()

    def cancel() -> None:  # on the helper's loop, after start() if start() was scheduled
        if "task" in box:
            box["task"].cancel()  # done() sets `finished` once the run has recorded it
        elif not finished.is_set():  # start() was never scheduled: nothing runs
            finished.set()

    try:
        helper.loop.call_soon_threadsafe(start)
        while not finished.wait(0.1):  # short waits: a pending interrupt is noticed quickly
            pass
    except KeyboardInterrupt:
        # A second interrupt while waiting stops the wait; the run still ends (cancelled) on
        # its own and records that.
        helper.loop.call_soon_threadsafe(cancel)
        finished.wait()
        raise
    finally:
        if finished.is_set():
            with _IDLE_LOCK:
                _IDLE_LOOPS.append(helper)
    if "error" in box:
        raise box["error"]
    return box["result"]
