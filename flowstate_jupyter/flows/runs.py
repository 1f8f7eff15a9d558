"""Running a block as one request: the request record, events, scope handles, the result.

``flow.run`` / ``flow.arun`` / ``flow.run_block`` (``flows.py``) validate what they are given and
then call :func:`execute`, which

1. checks (or creates) the session's ``$meta`` record: the session's user and flow kind;
2. subscribes to the store and keeps, in order, every change event carrying this run's request
   id, plus what blocks ``ctx.emit``; each event also goes to ``on_event`` as it happens;
3. writes the request record ``request/<request id>/$request`` with status ``"running"``;
4. builds ``ctx`` (request, session, user and project handles typed by the flow's merged models)
   and awaits ``block.run(input, ctx)``;
5. rewrites the request record with status ``"ok"`` and the output, or ``"error"`` and the error's
   type and message, and returns a :class:`RunResult`.

An exception inside a block does not propagate: the run ends with ``status="error"``, the
exception is ``result.error`` (``result.raise_for_error()`` re-raises it), and every state write
committed before it stays. Mistakes found before anything runs (unknown action, refused input,
invalid ids, a session of another user) raise at once and leave nothing behind.
``KeyboardInterrupt`` and task cancellation are recorded as an error and then re-raised.

:func:`run_sync` runs a coroutine to completion from synchronous code, also when the calling
thread already runs an event loop (Jupyter): the coroutine then runs on the loop of a helper
thread while the caller waits.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import threading
import time
import traceback as _traceback
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic_core import to_jsonable_python

from ..base.names import REQUEST, SESSION_META
from ..base.text import short
from ..handles.scopes import ScopeHandle
from ..model.graph import FlowGraph
from ..stores.base import Store
from .blocks import Block
from .bookkeeping import ensure_session
from .context import Context, RunServices, SequencerState
from .graph import result_graph
from .spec import FlowSpec

__all__ = ["RunResult", "execute", "run_sync"]

#: Inputs and outputs larger than this (as JSON) are kept in the request record as a preview.
RECORD_VALUE_LIMIT = 64 * 1024

T = TypeVar("T")


@dataclass(repr=False)
class RunResult:
    """The outcome of one run (DESIGN §6).

    ``status`` is ``"ok"`` or ``"error"``; ``output`` is the block's output (``None`` on error);
    ``error`` the exception a block raised (``None`` when ok); ``events`` every event of the run
    in order (state and resource changes, ``request`` start/end, ``ctx.emit`` messages).
    """

    output: Any
    error: BaseException | None
    session_id: str
    request_id: str
    events: list[dict] = field(default_factory=list)
    duration_s: float = 0.0
    status: str = "ok"
    action: str | None = None
    user: str | None = None
    project: str | None = None
    #: The flow that ran (for :meth:`graph`); ``None`` for a result built by hand.
    flow: Any = field(default=None, compare=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def traceback(self) -> str | None:
        """The error's formatted traceback (``None`` when the run was ok)."""
        if self.error is None:
            return None
        return "".join(_traceback.format_exception(type(self.error), self.error,
                                                   self.error.__traceback__))

    def raise_for_error(self) -> Any:
        """Re-raise the block's exception if the run failed; else return the output."""
        if self.error is not None:
            raise self.error
        return self.output

    def graph(self) -> FlowGraph:
        """The picture of the action this run ran, with the path it took marked (from its
        trace when it has one, else from the block names in its events)."""
        if self.flow is None:
            raise ValueError("this RunResult does not know its flow; draw it with "
                             "flow.graph(action)")
        return result_graph(self.flow, self)

    def _repr_html_(self) -> str:
        from ..model.display import run_html
        return run_html(self)

    def __repr__(self) -> str:
        what = f"output={short(self.output)}" if self.error is None else \
            f"error={type(self.error).__name__}({short(str(self.error))})"
        return (f"RunResult(status={self.status!r}, {what}, session_id={self.session_id!r}, "
                f"request_id={self.request_id!r}, events={len(self.events)}, "
                f"duration_s={self.duration_s:.4f})")




# ---------------------------------------------------------------------------- sync bridge

def run_sync(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run the coroutine ``make()`` returns to completion and return its result.

    Without a running loop in this thread: ``asyncio.run``. Inside one (Jupyter, or a block
    calling ``flow.run``): on an idle helper thread's event loop (started the first time and
    kept for later runs: a new thread and loop per run cost as much as a short run), with this
    thread's context variables, while this thread waits. Interrupting the wait (Jupyter's stop
    button raises ``KeyboardInterrupt`` here) cancels the run, which records the request as an
    error, and then re-raises the interrupt.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    return _run_in_helper_thread(make)


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


# ---------------------------------------------------------------------------- the run

def for_record(value: Any) -> Any:
    """``value`` as JSON for the request record: models dumped, odd objects as ``repr``.

    Values above :data:`RECORD_VALUE_LIMIT` bytes of JSON are kept as
    ``{"$truncated": True, "preview": <first 2,000 characters>}``.
    """
    try:
        data = to_jsonable_python(value, fallback=repr)
        text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        data = repr(value)
        text = json.dumps(data)
    if len(text) > RECORD_VALUE_LIMIT:
        return {"$truncated": True, "preview": text[:2000]}
    return data


def _error_summary(exc: BaseException) -> dict:
    return {"type": type(exc).__name__, "message": str(exc)}


async def execute(flow: FlowSpec, block: Block, value: Any, *, action: str | None,
                  session_id: str, user: str | None, project: str, store: Store,
                  request_id: str, on_event: Callable[[dict], None] | None = None,
                  input_for_record: Any = None) -> RunResult:
    """Run ``block`` on ``value`` as request ``request_id`` of ``session_id`` (see module doc).

    ``value`` has been validated by the caller. Raises only for problems found before the block
    starts (a session of another user or flow kind, an unreachable store).
    """
    services = RunServices(request_id, on_event)

    def keep(event: dict) -> None:
        if event.get("request_id") == request_id:
            services.record(event)

    unsubscribe = store.subscribe(keep)
    try:
        owner = ensure_session(store, session_id, user=user, flow_kind=flow.kind,
                               request_id=request_id)
        started = time.time()
        clock = time.perf_counter()
        record = {"action": action, "block": block.name, "flow": flow.kind,
                  "session": session_id, "user": owner, "project": project,
                  "input": for_record(input_for_record if input_for_record is not None
                                      else value),
                  "output": None, "error": None, "status": "running",
                  "started_at": started, "ended_at": None, "duration_s": None}
        _write_request(store, request_id, record)
        ctx = _root_context(flow, block, store, request_id, session_id, owner, project,
                            services)
        output: Any = None
        error: BaseException | None = None
        interrupt: BaseException | None = None
        try:
            output = await block.run(value, ctx)
        except Exception as exc:  # noqa: BLE001 - the run ends with status "error"
            error = exc
        except BaseException as exc:  # noqa: BLE001 - cancelled or interrupted: recorded, re-raised
            error = interrupt = exc
        duration = time.perf_counter() - clock
        services.close()  # every job has finished by now: this only releases the threads
        record.update(status="ok" if error is None else "error", ended_at=time.time(),
                      duration_s=duration,
                      output=for_record(output) if error is None else None,
                      error=None if error is None else _error_summary(error))
        _write_request(store, request_id, record)
        store.touch("session", session_id, SESSION_META)
    finally:
        unsubscribe()
    if interrupt is not None:
        raise interrupt
    return RunResult(output=output, error=error, session_id=session_id, request_id=request_id,
                     events=list(services.events), duration_s=duration,
                     status=record["status"], action=action, user=owner, project=project,
                     flow=flow)


def _write_request(store: Store, request_id: str, record: dict) -> None:
    event = {"type": "request", "scope": "request", "scope_id": request_id,
             "status": record["status"], "action": record["action"],
             "block": record["block"], "flow": record["flow"], "session": record["session"],
             "user": record["user"], "error": record["error"], "request_id": request_id}
    store.write("request", request_id, REQUEST, dict(record), operation="set",
                event=event, request_id=request_id)


def _root_context(flow: FlowSpec, block: Block, store: Store, request_id: str, session_id: str,
                  user: str, project: str, services: RunServices) -> Context:
    """The ``ctx`` the top block of a run receives."""
    def handle(scope: str, scope_id: str) -> ScopeHandle:
        return ScopeHandle(store, scope, scope_id, state=flow.state_model(scope),
                           resources=flow.resources(scope), request_id=request_id)

    sequencer = None
    model, needed = flow.root_sequencer_model(block)
    if needed:  # blocks declare sequencer_state with no stateful sequencer above them
        sequencer = SequencerState(store, request_id, block.name, services.next_instance(),
                                   model)
    return Context(request=handle("request", request_id), session=handle("session", session_id),
                   user=handle("user", user), project=handle("project", project),
                   run_id=request_id, store=store, flow=flow, flow_path=flow.path,
                   services=services, sequencer=sequencer)
