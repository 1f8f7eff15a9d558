"""Running a block as one request: the request record, events, scope handles, the result.

``flow.run`` / ``flow.arun`` / ``flow.run_block`` (``flows.py``) validate what they are given and
then call :func:`execute`, which

1. checks (or creates) the session's ``$meta`` record: the session's user and flow kind;
2. subscribes to the store and keeps, in order, every change event carrying this run's request
   id, plus what blocks ``ctx.emit``; each event also goes to ``on_event`` as it happens;
3. writes the request record ``request/<request id>/$request`` with status ``"running"`` and a
   lease (``durable.py``) — for an action with ``concurrency="reject"`` or ``"queue"``, in one
   transaction with taking the action's slot on the session, and for a resume as its claim.
   A run whose blocks declare no state or resources puts that write off until it is needed:
   before its first state or resource write, its first ``ctx.run_once`` or
   ``ctx.idempotency_key``, or once it has lasted :data:`durable.START_AFTER_S`; one that ends
   sooner writes its record once, at its end (docs/decisions.md). Its ``"running"`` event is
   among the run's events either way;
4. builds ``ctx`` (request, session, user and project handles typed by the flow's merged models,
   each made when a block first uses it) and runs the block — ``await block.run(input, ctx)``,
   or, for a tree of plain functions with no event loop in the thread, :meth:`_Run.execute_now`
   calls it without one — keeping spans and the step log in memory (``trace.py``);
5. rewrites the request record with status ``"ok"`` and the output, or ``"error"`` and the error's
   type and message, with the trace as its content, in one transaction with touching the
   session's ``$meta`` record (its last use) and, every half batch of the session's runs this
   store object ends, finding its oldest ended runs beyond the store's ``trace_limit``, which it
   then purges (``durable.runs_to_purge``), and returns a :class:`RunResult`. A record written
   for the first time (a short run's only write) is inserted without being read
   (``Store.create``). A block that called
   ``ctx.suspend`` ends the run as ``"suspended"`` instead, its step log kept for the resume.

:func:`execute` also continues a run that ``flow.resume`` claimed (``resumption``): same request
id, the block run again from the top, completed blocks answered from the log.

An exception inside a block does not propagate: the run ends with ``status="error"``, the
exception is ``result.error`` (``result.raise_for_error()`` re-raises it), and every state write
committed before it stays. Mistakes found before anything runs (unknown action, refused input,
invalid ids, a session of another user) raise at once and leave nothing behind.
``KeyboardInterrupt`` and task cancellation are recorded as an error and then re-raised.

:func:`run_sync` (``bridge.py``) runs a run to completion from synchronous code: without an
event loop when it can, on this thread's loop, or, when the calling thread already runs an event
loop (Jupyter), on the loop of a helper thread while the caller waits.
"""

from __future__ import annotations

import json
import time
import traceback as _traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pydantic_core import to_jsonable_python

from ..base.env import lease_seconds
from ..base.names import SESSION_META
from ..base.text import short
from ..errors import RunStateError
from ..handles.scopes import ScopeHandle
from ..model.graph import FlowGraph
from ..stores.base import Record, Store
from .blocks import Block
from .bookkeeping import ensure_session
from .bridge import run_sync
from .context import Context, RunServices, SequencerState, _RunFrame
from .durable import (
    RENEWER,
    Lease,
    Suspension,
    acquire_slot,
    owner_token,
    release_slot,
    runs_to_purge,
    suspension_record,
)
from .graph import result_graph
from .spec import FlowSpec
from .trace import RunLog, Suspended, Trace, read_content, trace_rows

__all__ = ["Resumption", "RunResult", "execute", "run_sync"]

#: Inputs and outputs larger than this (as JSON) are kept in the request record as a preview.
RECORD_VALUE_LIMIT = 64 * 1024

@dataclass(repr=False)
class RunResult:
    """The outcome of one run (docs/concepts.md, 'Blocks, flows and bubbling').

    ``status`` is ``"ok"``, ``"error"`` or ``"suspended"``; ``output`` is the block's output
    (``None`` otherwise); ``error`` the exception a block raised (``None`` when ok); ``events``
    every event of the run (of this attempt, for a resumed run) in order (state and resource
    changes, ``request`` start/end, ``ctx.emit`` messages); ``trace`` the run's :class:`Trace`
    (``None`` when tracing was off); ``suspension`` what a suspended run waits for
    (:class:`Suspension`; resume with ``flow.resume(result.request_id, value)``).
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
    trace: Trace | None = None
    suspension: Suspension | None = None
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
        if self.suspension is not None:
            what = f"suspension={short(self.suspension.message or self.suspension.path)}"
        return (f"RunResult(status={self.status!r}, {what}, session_id={self.session_id!r}, "
                f"request_id={self.request_id!r}, events={len(self.events)}, "
                f"duration_s={self.duration_s:.4f})")




# ---------------------------------------------------------------------------- the run

_SHORT_TEXT = RECORD_VALUE_LIMIT // 6 - 2  # a str this long is under the limit as JSON
_BIG_INT = 1 << 63


def _plain(value: Any) -> bool:
    """``value`` is its own JSON and within :data:`RECORD_VALUE_LIMIT` (checked without
    encoding it): ``None``, a bool, an int of up to 64 bits or a short str."""
    kind = type(value)
    if kind is int:
        return -_BIG_INT <= value < _BIG_INT
    return value is None or kind is bool or (kind is str and len(value) <= _SHORT_TEXT)


def for_record(value: Any) -> Any:
    """``value`` as JSON for the request record: models dumped, odd objects as ``repr``.

    Values above :data:`RECORD_VALUE_LIMIT` bytes of JSON are kept as
    ``{"$truncated": True, "preview": <first 2,000 characters>}``.
    """
    if _plain(value):
        return value
    try:
        data = to_jsonable_python(value, fallback=repr)
        text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        data = repr(value)
        text = json.dumps(data)
    if len(text) > RECORD_VALUE_LIMIT:
        return {"$truncated": True, "preview": text[:2000]}
    return data


def _logged_input(value: Any) -> Any:
    """The run's input as JSON for its step log (``None`` if it is not JSON)."""
    try:
        data = to_jsonable_python(value)
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return None
    return data


def _error_summary(exc: BaseException) -> dict:
    return {"type": type(exc).__name__, "message": str(exc)}


@dataclass
class Resumption:
    """A run ``flow.resume`` is continuing: its record as read, its step log, the value."""

    record: Record
    state: dict
    logged: dict
    value: Any


def _request_event(request_id: str, record: dict) -> dict:
    return {"type": "request", "scope": "request", "scope_id": request_id,
            "status": record["status"], "action": record["action"], "block": record["block"],
            "flow": record["flow"], "session": record["session"], "user": record["user"],
            "error": record["error"], "request_id": request_id}


class _Run:
    """One run from its start to its end (:func:`execute` makes one and runs it).

    ``begin`` does everything before the block runs and returns its ``ctx``; ``end`` records
    the outcome and builds the :class:`RunResult`; ``close`` lets go of the subscription and
    the lease, whatever happened. :meth:`execute` and :meth:`execute_now` do all three.
    """

    __slots__ = ("action", "block", "clock0", "concurrency", "dropped", "durable", "flow",
                 "input_for_record", "lease", "log", "owner", "previous_duration", "project",
                 "queue_timeout_s", "record", "request_id", "resumption", "root", "services",
                 "session_id", "store", "trace", "unsubscribe", "user", "value", "wall0")

    def __init__(self, flow: FlowSpec, block: Block, value: Any, *, action: str | None,
                 session_id: str, user: str | None, project: str, store: Store,
                 request_id: str, on_event: Callable[[dict], None] | None = None,
                 input_for_record: Any = None, trace: bool = True, durable: bool = True,
                 concurrency: str = "allow", queue_timeout_s: float = 30.0,
                 resumption: Resumption | None = None,
                 run_log: RunLog | None = None) -> None:
        # (pairs and triples: a four-way assignment builds a tuple)
        self.flow, self.block = flow, block
        self.value, self.action = value, action
        self.session_id, self.user = session_id, user
        self.project, self.store = project, store
        self.request_id, self.input_for_record = request_id, input_for_record
        self.trace, self.durable, self.resumption = trace, durable, resumption
        self.concurrency, self.queue_timeout_s = concurrency, queue_timeout_s
        self.root = action if action is not None else block.name
        self.services = RunServices(request_id, on_event)
        self.lease: Lease | None = None
        self.unsubscribe: Callable[[], None] | None = None
        self.log: RunLog | None = run_log
        self.dropped: list[str] | None = None  # the runs retention purges (``end``)

    def begin(self) -> Context:
        """Check the session, claim (or put off) the request record, build ``ctx``.

        Raises only for problems found before the block starts (a session of another user or
        flow kind, an unreachable store, a run of the action in flight with
        ``concurrency="reject"``, a resume another process won).
        """
        self.wall0 = wall0 = time.time()
        self.clock0 = clock0 = time.perf_counter()
        store, request_id, services = self.store, self.request_id, self.services
        resumption, trace, durable = self.resumption, self.trace, self.durable
        action, session_id = self.action, self.session_id
        flow, block = self.flow, self.block
        seconds = lease_seconds()
        if resumption is not None:
            trace = self.trace = bool(resumption.state.get("trace", True))
            durable = self.durable = True
            rows = trace_rows(read_content(resumption.record.content).get("trace"))
            attempt = int(resumption.state.get("attempt") or 1) + 1
            log: RunLog | None = RunLog(request_id, trace=trace, durable=True, wall0=wall0,
                                        clock0=clock0, attempt=attempt,
                                        logged=resumption.logged, previous=rows)
        elif self.log is not None:  # a replay's, which starts from what the original recorded
            log = self.log
            log.wall0, log.clock0 = wall0, clock0
        elif trace or durable:
            log = RunLog(request_id, trace=trace, durable=durable, wall0=wall0, clock0=clock0)
        else:
            log = None
        self.log = log
        self.unsubscribe = store._listen(self._keep)  # its own writes: no watcher
        content: str | None = None
        if resumption is None:
            owner = ensure_session(store, session_id, user=self.user, flow_kind=flow.kind,
                                   request_id=request_id)
            value = self.value
            shown = self.input_for_record if self.input_for_record is not None else value
            plain = shown is value and _plain(value)
            logged_input = value if plain else _logged_input(value)
            if plain or (logged_input is not None and shown is value and
                         len(json.dumps(logged_input)) <= RECORD_VALUE_LIMIT):
                shown_json, in_record = logged_input, True  # the record keeps it whole
            else:
                shown_json, in_record = for_record(shown), False
            if log is not None and durable:
                log.input_json = logged_input
            record = {"action": action, "block": block.name, "flow": flow.kind,
                      "session": session_id, "user": owner, "project": self.project,
                      "input": shown_json, "output": None, "error": None,
                      "status": "running", "started_at": wall0, "ended_at": None,
                      "duration_s": None, "lease_until": wall0 + seconds, "attempt": 1,
                      "owner": owner_token(), "trace": trace, "durable": durable,
                      "suspension": None, "flow_module": getattr(flow, "_module", None)}
            self.previous_duration = 0.0
            event = _request_event(request_id, record)
            # the first write needs a step log only when the record cannot hold the whole input
            # (a resume after a crash before the first lease renewal reads the input there)
            if log is not None and durable and not in_record:
                content = log.content(final=False)
        else:
            state = resumption.state
            owner, self.project = str(state.get("user")), state.get("project") or self.project
            record = {**state, "status": "running", "lease_until": wall0 + seconds,
                      "attempt": log.attempt if log is not None else 1, "owner": owner_token(),
                      "suspension": None, "ended_at": None, "error": None, "output": None}
            self.previous_duration = float(state.get("duration_s") or 0.0)
            event = _request_event(request_id, record)
            event["resumed"] = True
        self.owner, self.record = owner, record
        lease = self.lease = Lease(store, request_id, seconds, record, log)
        if resumption is not None:
            lease.version = resumption.record.version
            content = log.content(final=False) if log is not None else None
        slot = self.concurrency != "allow" and action is not None
        if resumption is None and not slot and block._declares_nothing():
            # Put off: the record is written before the run's first write, when it asks for
            # its idempotency key or runs something once, or once it has run for
            # ``START_AFTER_S``; a run that ends sooner writes its record once, at its end
            # (docs/decisions.md). Its "running" event is the run's all the same.
            lease.first = (content, event)  # (Lease.start makes its write's event from it)
            services.record({**event, "ts": wall0})
        else:
            try:
                if not slot:
                    written = lease.write(record, content=content, event=event, adopt=False)
                else:
                    written = acquire_slot(store, session_id, str(action), request_id,
                                           self.concurrency, self.queue_timeout_s, seconds,
                                           partial(lease.write, record, content=content,
                                                   event=event, adopt=False))
            except RunStateError:
                if resumption is None:
                    raise
                raise RunStateError(f"run {request_id} was resumed by another process first; "
                                    f"this resume did nothing") from None
            lease.adopt(written)
        lease.state = record
        if log is not None:
            log.lease = lease
        RENEWER.add(lease)
        sequencer = None
        model, needed = flow.root_sequencer_model(block)
        if needed:  # blocks declare sequencer_state with no stateful sequencer above them
            sequencer = SequencerState(store, request_id, block.name,
                                       0 if log is not None else services.next_instance(), model)
        return Context._top(_RunFrame(None, None, None, None, request_id, store, flow, flow.path,
                                      services, log, self._handle), sequencer)

    def _handle(self, scope: str) -> ScopeHandle:
        """The run's handle on ``scope``, made when a block first uses it (``ctx.session``)."""
        flow, request_id = self.flow, self.request_id
        ids = {"request": request_id, "session": self.session_id, "user": self.owner,
               "project": self.project}
        return ScopeHandle(self.store, scope, ids[scope], state=flow.state_model(scope),
                           resources=flow.resources(scope), request_id=request_id)

    def _keep(self, event: dict) -> None:
        """A change committed through the run's store: one of the run's events if it carries
        the run's request id (a method, not a closure: ``begin`` then makes no cells)."""
        if event.get("request_id") == self.request_id:
            self.services.record(event)
            log = self.log
            if log is not None and event.get("span") is not None:  # (else observe does nothing)
                log.observe(event)

    def end(self, output: Any, error: BaseException | None, interrupt: BaseException | None,
            suspended: Suspended | None) -> RunResult:
        """Record how the run ended (one transaction with touching its session and finding the
        runs retention purges, then purged) and return its result; re-raises ``interrupt`` once
        that is recorded."""
        duration = time.perf_counter() - self.clock0
        store, request_id = self.store, self.request_id
        session_id, action = self.session_id, self.action
        log, lease, record = self.log, self.lease, self.record
        assert lease is not None
        if self.services._executor is not None:  # (a run that had worker threads)
            self.services.close()  # every job has finished by now: this only releases them
        RENEWER.remove(lease)
        lease.ended = True
        suspension = None
        if suspended is not None:
            try:
                suspension = suspension_record(suspended.key, suspended.path, suspended.model,
                                               suspended.message, suspended.timeout_s)
            except Exception as exc:  # noqa: BLE001 - a model without a JSON Schema: an error
                error, suspended = exc, None
        # (each a new dict: a lease renewal may still be reading the old one)
        if suspended is not None:
            record = {**record, "status": "suspended", "lease_until": None,
                      "suspension": suspension,
                      "duration_s": self.previous_duration + duration}
            content = log.content(final=False) if log is not None else None
        else:
            self.dropped = []  # (an ended run: retention looks)
            record = {**record, "status": "ok" if error is None else "error",
                      "ended_at": time.time(), "duration_s": self.previous_duration + duration,
                      "lease_until": None,
                      "output": for_record(output) if error is None else None,
                      "error": None if error is None else _error_summary(error)}
            content = log.content(final=True) if log is not None else None
        try:
            lease.write(record, content=content, event=_request_event(request_id, record),
                        also=self._also)
        except RunStateError as lost:  # taken over meanwhile: the other process owns it now
            if interrupt is None:
                error, suspended, output = lost, None, None
                record.update(status="error", error=_error_summary(lost), output=None)
        if self.dropped:
            store.purge("request", self.dropped)
        if interrupt is not None:
            raise interrupt
        return RunResult(output=output if record["status"] == "ok" else None, error=error,
                         session_id=session_id, request_id=request_id,
                         events=list(self.services.events), duration_s=duration,
                         status=record["status"], action=action, user=self.owner,
                         project=self.project,
                         trace=log.result_trace() if log is not None else None,
                         suspension=None if suspension is None
                         else Suspension.from_record(request_id, suspension), flow=self.flow)

    def _also(self) -> None:
        """What the final write does in its transaction: let go of the action's slot, touch
        the session (its last use, for ``sessions()``) and, for an ended run, find the runs
        retention purges (``self.dropped``; purged once the write committed)."""
        store, session_id = self.store, self.session_id
        if self.concurrency != "allow" and self.action is not None:
            release_slot(store, session_id, str(self.action), self.request_id)
        store.touch("session", session_id, SESSION_META)
        if self.dropped is not None:
            self.dropped = runs_to_purge(store, session_id)

    def close(self) -> None:
        lease, log = self.lease, self.log
        if lease is not None:
            if not lease.ended:
                RENEWER.remove(lease)
            else:  # ended (and off the renewer): cut the references between the log and the
                # lease, so that the run's objects go with it, not with the garbage collector
                lease.log = None
                if log is not None:
                    log.lease = None
        unsubscribe = self.unsubscribe
        if unsubscribe is not None:  # (it holds self._keep, so it goes: no cycle is left)
            self.unsubscribe = None
            unsubscribe()

    async def execute(self) -> RunResult:
        """Begin, await the block, end (see :func:`execute`)."""
        try:
            ctx = self.begin()
            try:
                output = await self.block.run(self.value, ctx, self.root)
            except Suspended as signal:
                return self.end(None, None, None, signal)
            except Exception as exc:  # noqa: BLE001 - the run ends with status "error"
                return self.end(None, exc, None, None)
            except BaseException as exc:  # noqa: BLE001 - cancelled or interrupted: recorded, re-raised
                return self.end(None, exc, exc, None)
            return self.end(output, None, None, None)
        finally:
            self.close()

    def execute_now(self) -> RunResult:
        """:meth:`execute` with no event loop, for a block tree of plain functions
        (``block._sync()``); called where no loop runs (``bridge.run_sync``)."""
        try:
            ctx = self.begin()
            try:
                output = self.block._run_sync(self.value, ctx, self.root)
            except Suspended as signal:
                return self.end(None, None, None, signal)
            except Exception as exc:  # noqa: BLE001 - the run ends with status "error"
                return self.end(None, exc, None, None)
            except BaseException as exc:  # noqa: BLE001 - interrupted: recorded, re-raised
                return self.end(None, exc, exc, None)
            return self.end(output, None, None, None)
        finally:
            self.close()


async def execute(flow: FlowSpec, block: Block, value: Any, **options: Any) -> RunResult:
    """Run ``block`` on ``value`` as request ``request_id`` of ``session_id`` (see module doc).

    ``value`` has been validated by the caller. Raises only for problems found before the block
    starts (a session of another user or flow kind, an unreachable store, a run of the action
    in flight with ``concurrency="reject"``, a resume another process won). ``options`` are
    :class:`_Run`'s; ``run_log`` among them is the log to keep instead of a new one (a replay's,
    ``flows/replay.py``, which starts from what the original run recorded).
    """
    return await _Run(flow, block, value, **options).execute()
