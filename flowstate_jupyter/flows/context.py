"""The run context: what a block sees as ``ctx`` while it runs, and the run's shared services.

``Context`` carries the scope handles (``ctx.request``, ``ctx.session``, ``ctx.user``,
``ctx.project``), the nearest stateful sequencer's instance state (``ctx.sequencer``), the run id
and ``emit``. ``RunServices`` is what one run shares between its blocks: the ordered event list,
the ``on_event`` callback and a thread pool for concurrent steps. ``current_context()`` gives the
context of the block running in this task or thread (the Windmill layer uses it to find the
flow-step state path and the run's flow user state).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import itertools
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from pydantic import BaseModel

from ..base.names import SEQUENCER_PREFIX
from ..handles.records import TypedRecord
from ..model import ops
from ..stores.base import Store

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

    def __init__(self, request_id: str,
                 on_event: Callable[[dict], None] | None = None) -> None:
        self.request_id = request_id
        self.events: list[dict] = []
        self._on_event = on_event
        self._lock = threading.Lock()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._instances = itertools.count(1)

    def record(self, event: dict) -> None:
        """Keep ``event`` on the run and hand it to ``on_event`` (whose errors are warned)."""
        with self._lock:
            self.events.append(event)
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception as exc:  # noqa: BLE001 - a broken listener must not break a run
                warnings.warn(f"flowstate on_event callback failed: {exc!r}", RuntimeWarning,
                              stacklevel=2)

    def next_instance(self) -> int:
        """A number unique within this run, for sequencer instance-state records."""
        return next(self._instances)

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
    """The parts of ``ctx`` that stay the same for every block of one run."""

    __slots__ = (
        "flow",
        "flow_path",
        "project",
        "request",
        "run_id",
        "services",
        "session",
        "store",
        "user",
    )

    def __init__(self, request: Any, session: Any, user: Any, project: Any, run_id: str,
                 store: Store, flow: Any, flow_path: str, services: RunServices) -> None:
        self.request, self.session, self.user, self.project = request, session, user, project
        self.run_id, self.store, self.flow, self.flow_path = run_id, store, flow, flow_path
        self.services = services


class Context:
    """What a block receives as ``ctx`` (DESIGN §6).

    ``request``, ``session``, ``user``, ``project``: scope handles typed with the flow's merged
    models. ``sequencer``: the nearest stateful sequencer's instance state, or ``None``.
    ``run_id``: the request id. ``emit(kind, data)``: send a message a client would see.
    Also ``store``, ``flow``, ``flow_path`` (Windmill-style, ``f/flows/<kind>``) and ``step_id``
    (the name of the block running now).

    Each block gets its own small ``Context`` (its ``step_id`` differs); what is the same for
    the whole run is shared, so making one per step stays cheap.
    """

    __slots__ = ("_concurrent", "_frame", "sequencer", "step_id")

    def __init__(self, *, request: Any, session: Any, user: Any, project: Any,
                 run_id: str, store: Store, flow: Any, flow_path: str,
                 services: RunServices, sequencer: Any = None, step_id: str | None = None,
                 concurrent: bool = False) -> None:
        self._frame = _RunFrame(request, session, user, project, run_id, store, flow,
                                flow_path, services)
        self.step_id = step_id
        self.sequencer = sequencer
        self._concurrent = concurrent

    request = property(lambda self: self._frame.request, doc="The request scope handle.")
    session = property(lambda self: self._frame.session, doc="The session scope handle.")
    user = property(lambda self: self._frame.user, doc="The user scope handle.")
    project = property(lambda self: self._frame.project, doc="The project scope handle.")
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

    def __repr__(self) -> str:
        return f"<Context run {self.run_id} step {self.step_id!r} session {self.session.id!r}>"


class SequencerState(TypedRecord):
    """Instance state of one execution of a sequencer that declares ``state=`` (``ctx.sequencer``).

    It lives for one run, kept as a bookkeeping record of the request
    (``request/<run id>/$sequencer:<name>#<n>``) with the usual operations, versions and events
    (``scope`` is ``"sequencer"`` in its events).
    """

    def __init__(self, store: Store, request_id: str, sequencer_name: str, instance: int,
                 model: type[BaseModel] | None) -> None:
        super().__init__(store, "request", request_id,
                         f"{SEQUENCER_PREFIX}{sequencer_name}#{instance}", model,
                         request_id=request_id)
        self.name = sequencer_name
        self.instance = instance

    @property
    def model(self) -> type[BaseModel] | None:
        return self._model

    def _where(self) -> str:
        return f"sequencer {self.name!r} instance state"

    def _event(self, operation: str, delta: Any, path: str | None, existed: bool) -> dict:
        return {"type": "state_change", "scope": "sequencer", "scope_id": self._scope_id,
                "sequencer": self.name, "instance": self.instance, "operation": operation,
                "path": path, "delta": delta, "request_id": self._request_id}

    def __repr__(self) -> str:
        return f"<SequencerState {self.name!r} #{self.instance} v{self.version}>"
