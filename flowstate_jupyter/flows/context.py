"""The run context: what a block sees as ``ctx`` while it runs, and the run's shared services.

``Context`` carries the scope handles (``ctx.request``, ``ctx.session``, ``ctx.user``,
``ctx.project``), the nearest stateful sequencer's instance state (``ctx.sequencer``), the run id,
``emit``, and what durable runs add (docs/concepts.md, 'Durable runs'): ``suspend``, ``run_once``
and ``idempotency_key``. ``RunServices`` is what one run shares between its blocks: the ordered
event list, the ``on_event`` callback and a thread pool for concurrent steps. ``current_context()``
gives the context of the block running in this task or thread (the Windmill layer uses it to find
the flow-step state path and the run's flow user state; the write hook below uses it to tag a run's
writes with the span that makes them).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import inspect
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from pydantic import BaseModel

from ..base.names import SEQUENCER_PREFIX
from ..errors import RunStateError
from ..handles.records import RecordHandle, install_write_hook
from ..model import ops, schema
from ..stores.base import Store
from .trace import RunLog, Suspended

__all__ = [
    "RESERVED_EVENT_TYPES",
    "Context",
    "RunServices",
    "SequencerState",
    "active",
    "current_context",
]

#: Event types the library itself produces; ``ctx.emit`` may not use them.
RESERVED_EVENT_TYPES = frozenset({"state_change", "resource_change", "request", "session",
                                  "journal"})

_KEEP = object()


# ---------------------------------------------------------------------------- context

_CURRENT: contextvars.ContextVar[Context | None] = contextvars.ContextVar(
    "flowstate_current_context", default=None)


def current_context() -> Context | None:
    """The ``ctx`` of the block running in this task or thread, or ``None`` outside blocks.

    Lets code that is not handed ``ctx`` (the Windmill-compatible API, helpers deep in a call
    stack) find the running flow, step and scopes.
    """
    return _CURRENT.get()


def _tag_write(request_id: str, scope: str, scope_id: str, name: str, operation: str) -> Any:
    """The write hook (``handles/records.py``): tag a run's write with the span making it."""
    ctx = _CURRENT.get()
    if ctx is None:
        return None
    frame = ctx._frame
    log = frame.log
    span = ctx._span
    if log is None or span is None or frame.run_id != request_id:
        return None
    return log.tag(span, f"{scope}/{scope_id}/{name}:{operation}")


install_write_hook(_tag_write)


@contextlib.contextmanager
def active(ctx: Context) -> Iterator[Context]:
    """Make ``ctx`` what :func:`current_context` returns while a block runs."""
    token = _CURRENT.set(ctx)
    try:
        yield ctx
    finally:
        _CURRENT.reset(token)


class RunServices:
    """What every block of one run shares: the event list, the worker threads, counters.

    Created by the run machinery (``runs.py``), one per run. ``record`` keeps an event in order
    and passes it to the run's ``on_event`` callback at once, from whichever thread produced it.
    """

    __slots__ = ("_executor", "_instances", "_lock", "_on_event", "events", "request_id")

    def __init__(self, request_id: str,
                 on_event: Callable[[dict], None] | None = None) -> None:
        self.request_id = request_id
        self.events: list[dict] = []
        self._on_event = on_event
        self._lock = threading.Lock()  # making handles, worker threads and instance numbers
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._instances = 0  # numbers handed out by next_instance

    def record(self, event: dict) -> None:
        """Keep ``event`` on the run and hand it to ``on_event`` (whose errors are warned)."""
        self.events.append(event)  # (one append is atomic: no lock needed for the order)
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception as exc:  # noqa: BLE001 - a broken listener must not break a run
                warnings.warn(f"flowstate on_event callback failed: {exc!r}", RuntimeWarning,
                              stacklevel=2)

    def next_instance(self) -> int:
        """A number unique within this run, for sequencer instance-state records."""
        with self._lock:
            self._instances += 1
            return self._instances

    @property
    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        """Worker threads for synchronous handlers inside ``parallel`` / ``for_each``."""
        with self._lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=32, thread_name_prefix="flowstate-block")
            return self._executor

    def close(self) -> None:
        """Wait for and release the worker threads."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)


class _RunFrame:
    """The parts of ``ctx`` that stay the same for every block of one run.

    The scope handles may be given, or made by ``make(scope)`` when a block first asks for one
    (most blocks use one or two of the four).
    """

    __slots__ = (
        "_handles",
        "_make",
        "flow",
        "flow_path",
        "log",
        "run_id",
        "services",
        "store",
    )

    def __init__(self, request: Any, session: Any, user: Any, project: Any, run_id: str,
                 store: Store, flow: Any, flow_path: str, services: RunServices,
                 log: RunLog | None = None, make: Callable[[str], Any] | None = None) -> None:
        handles: dict[str, Any] = {}
        if request is not None or session is not None or user is not None \
                or project is not None:
            for scope, handle in (("request", request), ("session", session), ("user", user),
                                  ("project", project)):
                if handle is not None:
                    handles[scope] = handle
        self._handles = handles
        self._make = make
        self.run_id, self.store = run_id, store
        self.flow, self.flow_path = flow, flow_path
        self.services = services
        self.log = log

    def handle(self, scope: str) -> Any:
        """The run's handle on ``scope`` (made on first use)."""
        found = self._handles.get(scope)
        if found is None and self._make is not None:
            with self.services._lock:  # blocks in worker threads share one handle per scope
                found = self._handles.get(scope)
                if found is None:
                    found = self._handles[scope] = self._make(scope)
        return found


class Context:
    """What a block receives as ``ctx`` (docs/concepts.md, 'Blocks, flows and bubbling').

    ``request``, ``session``, ``user``, ``project``: scope handles typed with the flow's merged
    models. ``sequencer``: the nearest stateful sequencer's instance state, or ``None``.
    ``run_id``: the request id. ``emit(kind, data)``: send a message a client would see.
    Also ``store``, ``flow``, ``flow_path`` (Windmill-style, ``f/flows/<kind>``) and ``step_id``
    (the name of the block running now).

    Each block gets its own small ``Context`` (its ``step_id`` and span differ); what is the
    same for the whole run is shared, so making one per step stays cheap.
    """

    __slots__ = ("_concurrent", "_frame", "_span", "_spare", "sequencer", "step_id")

    def __init__(self, *, request: Any, session: Any, user: Any, project: Any,
                 run_id: str, store: Store, flow: Any, flow_path: str,
                 services: RunServices, sequencer: Any = None, step_id: str | None = None,
                 concurrent: bool = False, log: RunLog | None = None,
                 handles: Callable[[str], Any] | None = None) -> None:
        self._frame = _RunFrame(request, session, user, project, run_id, store, flow,
                                flow_path, services, log, handles)
        self.step_id = step_id
        self.sequencer = sequencer
        self._concurrent = concurrent
        self._span: int | None = None  # this block's span: its index in the run's log
        self._spare: Context | None = None  # a step's context no one kept (blocks.py)

    request = property(lambda self: self._frame.handle("request"),
                       doc="The request scope handle.")
    session = property(lambda self: self._frame.handle("session"),
                       doc="The session scope handle.")
    user = property(lambda self: self._frame.handle("user"), doc="The user scope handle.")
    project = property(lambda self: self._frame.handle("project"),
                       doc="The project scope handle.")
    run_id = property(lambda self: self._frame.run_id, doc="This run's request id.")
    store = property(lambda self: self._frame.store, doc="The store this run writes to.")
    flow = property(lambda self: self._frame.flow, doc="The Flow being run.")
    flow_path = property(lambda self: self._frame.flow_path,
                         doc="The flow's Windmill-style path, e.g. 'f/flows/assistant'.")
    _services = property(lambda self: self._frame.services)

    def _derive(self, *, step_id: Any = _KEEP, sequencer: Any = _KEEP,
                concurrent: Any = _KEEP) -> Context:
        """A copy pointing at another step, sequencer instance or concurrency mode."""
        new = object.__new__(Context)
        new._frame = self._frame
        new.step_id = self.step_id if step_id is _KEEP else step_id
        new.sequencer = self.sequencer if sequencer is _KEEP else sequencer
        new._concurrent = self._concurrent if concurrent is _KEEP else concurrent
        new._span = self._span
        new._spare = None
        return new

    @staticmethod
    def _top(frame: _RunFrame, sequencer: Any) -> Context:
        """The context of a run's top block (``runs.py``), made as :meth:`_enter` makes one."""
        new = object.__new__(Context)
        new._frame = frame
        new.step_id = None
        new.sequencer = sequencer
        new._concurrent = False
        new._span = None
        new._spare = None
        return new

    def _enter(self, step_id: str, span: int | None) -> Context:
        """The context of a block starting here: its step id and span (the hot path)."""
        new = object.__new__(Context)
        new._frame = self._frame
        new.step_id = step_id
        new.sequencer = self.sequencer
        new._concurrent = self._concurrent
        new._span = span
        new._spare = None
        return new

    def emit(self, kind: str, data: Any = None) -> None:
        """Send a message to the run's events (and ``on_event``): ``{"type": kind, "data": ...}``.

        The event also carries ``block`` (the step that emitted it), ``request_id`` and ``ts``.
        ``data`` must be JSON; it is copied, so changing it later changes nothing.
        """
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"emit kind must be a non-empty string, not {kind!r}")
        if kind in RESERVED_EVENT_TYPES:
            raise ValueError(f"emit kind {kind!r} is reserved for the library's own events; "
                             f"use another name, e.g. 'message' or 'progress'")
        data = ops.copy_json(data, where=f"ctx.emit({kind!r})")
        self._services.record({"type": kind, "data": data, "block": self.step_id,
                               "request_id": self.run_id, "ts": time.time()})

    @property
    def events(self) -> list[dict]:
        """The events of this run so far (a copy)."""
        return list(self._services.events)

    # -- durable runs (docs/concepts.md, 'Durable runs') ----------------------------------------
    @property
    def span_path(self) -> str | None:
        """The stable path of the block running now (``None`` in an untraced, non-durable
        run)."""
        span = self._span
        return self._frame.log.sites[span][0] if span is not None else None  # type: ignore[union-attr]

    @property
    def idempotency_key(self) -> str:
        """``f"{request_id}:{span path}"``: the same for this block in every attempt of this run
        (resumes included), different for every other block and run. Hand it to an outside
        service that deduplicates requests (payments, email)."""
        span = self._span
        log = self._frame.log
        if log is not None and log.lease is not None:
            log.lease.start()  # an outside service is about to see this run: record it first
        path = log.sites[span][0] if span is not None and log is not None else self.step_id
        return f"{self.run_id}:{path}"

    def suspend(self, model: type[BaseModel], *, message: str | None = None,
                timeout_s: float | None = None) -> Any:
        """Pause the run until a person (or program) resumes it with a value for ``model``.

        The run ends for now with ``status == "suspended"`` and ``result.suspension``
        (``message``, ``schema`` — the model's JSON Schema — and ``expires_at``, ``timeout_s``
        from now, or ``None``). ``flow.resume(request_id, value)`` validates ``value`` against
        ``model`` and continues the same run: completed blocks are not run again, this block
        runs again from its start (its earlier writes are not repeated) and this call returns
        the validated model instance. A block may suspend more than once; each call is its own
        question. Needs a durable run (the default).
        """
        log = self._frame.log
        span = self._span
        if log is None or not log.durable or span is None:
            raise RunStateError("ctx.suspend needs a durable run (flow.run(..., durable=True), "
                                "the default), whose step log lets it be resumed")
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"ctx.suspend needs a pydantic model class, not {model!r}")
        if message is not None and not isinstance(message, str):
            raise TypeError(f"ctx.suspend message must be a str or None, not "
                            f"{type(message).__name__}")
        if timeout_s is not None and (isinstance(timeout_s, bool)
                                      or not isinstance(timeout_s, (int, float))
                                      or not 0 < timeout_s < float("inf")):
            raise ValueError(f"ctx.suspend timeout_s must be a positive number of seconds or "
                             f"None, not {timeout_s!r}")
        path = log.sites[span][0]
        asked = log.suspends.get(span, 0)
        key = f"{path}#{asked}"
        if not log.suspends:
            log.suspends = {}
        log.suspends[span] = asked + 1
        if key in log.resumed:
            return schema.validate_value(model, log.resumed[key],
                                         where=f"resume value for {path}")
        raise Suspended(key, path, model, message, timeout_s)

    def run_once(self, key: str, fn: Callable[[], Any]) -> Any:
        """Call ``fn()`` once per run and return its result as JSON; on resume, the recorded
        result is returned and ``fn`` is not called.

        ``key`` names the call within the run (give each distinct side effect its own key, e.g.
        ``f"email:{user}"`` inside a ``for_each``). The result must be JSON (a model is dumped);
        it is written to the run's step log before this returns, so a crash after ``fn``
        returned and before the log was written is the only case in which ``fn`` runs again.
        Outside a durable run ``fn`` is simply called.
        """
        log = self._check_once(key)
        if log is None:
            return fn()
        if key in log.once:
            return ops.copy_json(log.once[key], where=f"ctx.run_once({key!r})")
        result = fn()
        if inspect.isawaitable(result):
            close = getattr(result, "close", None)
            if close is not None:
                close()
            raise TypeError(f"ctx.run_once({key!r}): fn returned an awaitable; in an async "
                            f"block use `await ctx.arun_once(key, fn)`")
        return self._record_once(log, key, result)

    async def arun_once(self, key: str, fn: Callable[[], Any]) -> Any:
        """Async twin of :meth:`run_once`: ``fn()`` may return an awaitable."""
        log = self._check_once(key)
        if log is None:
            result = fn()
            return await result if inspect.isawaitable(result) else result
        if key in log.once:
            return ops.copy_json(log.once[key], where=f"ctx.run_once({key!r})")
        result = fn()
        if inspect.isawaitable(result):
            result = await result
        return self._record_once(log, key, result)

    def _check_once(self, key: Any) -> RunLog | None:
        if not isinstance(key, str) or not key:
            raise ValueError(f"ctx.run_once needs a non-empty string key, not {key!r}")
        log = self._frame.log
        return log if log is not None and log.durable else None

    @staticmethod
    def _record_once(log: RunLog, key: str, result: Any) -> Any:
        if isinstance(result, BaseModel):
            result = result.model_dump(mode="json")
        data = ops.copy_json(result, where=f"ctx.run_once({key!r}) result")
        log.once[key] = data
        if log.lease is not None:
            log.lease.flush()
        return ops.copy_json(data, where=f"ctx.run_once({key!r})")

    def __repr__(self) -> str:
        return f"<Context run {self.run_id} step {self.step_id!r} session {self.session.id!r}>"


class SequencerState(RecordHandle):
    """Instance state of one execution of a sequencer that declares ``state=`` (``ctx.sequencer``).

    It lives for one run, kept as a bookkeeping record of the request
    (``request/<run id>/$sequencer:<name>#<instance>``) with the usual operations, versions and
    events (``scope`` is ``"sequencer"`` in its events). ``instance`` is the sequencer's span path
    when the run keeps spans (stable across a resume, so a re-run sequencer finds its state),
    else a number counted in the run.
    """

    def __init__(self, store: Store, request_id: str, sequencer_name: str, instance: int | str,
                 model: type[BaseModel] | None) -> None:
        super().__init__(store, "request", request_id,
                         f"{SEQUENCER_PREFIX}{sequencer_name}#{instance}", model,
                         where=f"sequencer {sequencer_name!r} instance state",
                         request_id=request_id)
        self.name = sequencer_name
        self.instance = instance

    @property
    def model(self) -> type[BaseModel] | None:
        return self._model

    def _event(self, operation: str, delta: Any, path: str | None, existed: bool) -> dict:
        return {"type": "state_change", "scope": "sequencer", "scope_id": self._scope_id,
                "sequencer": self.name, "instance": self.instance, "operation": operation,
                "path": path, "delta": delta, "request_id": self._request_id}

    def __repr__(self) -> str:
        return f"<SequencerState {self.name!r} #{self.instance} v{self.version}>"
