"""Flows: actions over blocks, per-scope state and resources, runs and sessions
(docs/concepts.md, 'Blocks, flows and bubbling').

.. code-block:: python

    flow = fs.define_flow(
        kind="assistant",
        actions={"chat": pipeline, "save": fs.action(save_block, input=SaveInput)},
        session=fs.scope(state=SessionState, resources={"artifacts": artifacts},
                         client_data={"mode": lambda ctx: ctx.state.mode}),
        user=fs.scope(resources={"preferences": preferences}),
    )
    result = flow.run("chat", {"message": "hi"}, user="alice")

``define_flow`` collects every block's declared state and resources (through sequencers,
routers' routes and actions) and merges them per scope with the flow's own (``bubbling.py``);
conflicts raise here, never at run time. Running is in ``runs.py``; sessions in ``sessions.py``.

**Errors.** ``flow.run`` raises for mistakes found before anything runs: an unknown action
(:class:`UnknownActionError`, listing the actions), refused input (:class:`ValidationError`),
an invalid id (:class:`InvalidIdError`), a session of another user or flow kind
(:class:`AccessDeniedError`). An exception raised by a block does NOT propagate: the run returns
a :class:`RunResult` with ``status="error"`` and the exception in ``.error`` (a notebook shows it
without losing the result); call ``result.raise_for_error()`` to re-raise it.

**Defaults.** ``session=None`` starts a new session (id ``s-...``); ``user=None`` means the
session's owner, or for a new session ``FLOWSTATE_USER``, else the OS user; ``store=None`` the
process's default store. A scope for which neither the flow nor any block declares state is
free-form (any JSON dict; ``flow.state_model(scope)`` is ``None``); with exactly one declaring
model, that model is the scope's model; with several, a merged model inheriting from all of them.

**Progress.** ``flow.run(..., on_event=callback)`` calls ``callback(event)`` for each event of the
run as it happens: state and resource changes, ``{"type": "request", "status": ...}`` when the run
starts and ends, what blocks ``ctx.emit``, and ``{"type": "progress", "data": {"done": n,
"total": N, "block": name}}`` after each item of a ``for_each`` or branch of a ``parallel``. The
callback runs in the thread that produced the event (a worker thread for synchronous handlers
inside ``for_each``/``parallel``): keep it quick, e.g. update a progress bar widget.
"""

from __future__ import annotations

import difflib
import sys
from asyncio import _get_running_loop  # (public in asyncio.events; see bridge.py)
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from ..base.ids import DEFAULT_PROJECT, SCOPES, check_id, new_id
from ..errors import InvalidIdError, RunStateError, UnknownActionError
from ..handles.resources import CollectionDefinition, ResourceDefinition, check_resource_name
from ..model import schema
from ..model.graph import FlowGraph
from ..stores.base import Store
from ..stores.default import default_store
from .blocks import Block
from .bookkeeping import DEFAULT_PAGE, list_sessions
from .bridge import run_sync
from .bubbling import Declarations, merge_resources, merge_state_model
from .client_data import ClientDataContext
from .durable import claim_resume, list_runs, read_run
from .graph import flow_graph
from .replay import ReplayResult, recorded_input, replay_run
from .runs import Resumption, RunResult, _Run, execute
from .sequencer import Sequencer
from .sessions import Session
from .trace import Trace, read_content, trace_from

__all__ = ["Action", "Flow", "ScopeConfig", "action", "define_flow", "scope"]

_Definitions = Mapping[str, ResourceDefinition | CollectionDefinition]


@dataclass(frozen=True)
class ScopeConfig:
    """A flow's own declarations for one scope: what :func:`scope` returns."""

    state: type[BaseModel] | None = None
    resources: Mapping[str, ResourceDefinition | CollectionDefinition] = field(
        default_factory=dict)
    client_data: Mapping[str, Callable[[ClientDataContext], Any]] = field(default_factory=dict)


def scope(state: type[BaseModel] | None = None, resources: _Definitions | None = None,
          client_data: Mapping[str, Callable[[ClientDataContext], Any]] | None = None
          ) -> ScopeConfig:
    """Declare a scope of a flow: its state model, resources and client-data functions.

    ``client_data={"key": fn}``: ``fn(ctx)`` sees ``ctx.state`` and ``ctx.resources`` of this
    scope only; the results form ``session.client_data()[scope]``.
    """
    if state is not None:
        schema.require_defaults(state)
    resources = dict(resources or {})
    for name, definition in resources.items():
        check_resource_name(name)
        if not isinstance(definition, (ResourceDefinition, CollectionDefinition)):
            raise TypeError(f"resource {name!r} must come from define_resource or "
                            f"define_resource_collection, not {type(definition).__name__}")
    client_data = dict(client_data or {})
    for key, fn in client_data.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"client_data keys must be non-empty strings, not {key!r}")
        if not callable(fn):
            raise TypeError(f"client_data[{key!r}] must be a function of ctx, not "
                            f"{type(fn).__name__}")
    return ScopeConfig(state, resources, client_data)


CONCURRENCY = ("allow", "queue", "reject")


@dataclass(frozen=True)
class Action:
    """An action of a flow: a block, the input model its runs are validated against, and how
    runs of it on one session may overlap (``concurrency``; docs/guide.md,
    'One run at a time per session')."""

    block: Block
    input: type[BaseModel] | None = None
    concurrency: str = "allow"
    queue_timeout_s: float = 30.0

    @property
    def input_model(self) -> type[BaseModel] | None:
        """The action's own input model, else its block's."""
        return self.input or self.block.input


def action(block: Block, input: type[BaseModel] | None = None, *,
           concurrency: str = "allow", queue_timeout_s: float = 30) -> Action:
    """Wrap ``block`` as an action, optionally with its own ``input`` model.

    ``concurrency`` says what happens when a run of this action starts on a session where
    another run of it is in flight (in any process sharing the store): ``"allow"`` (the default)
    runs both; ``"reject"`` raises :class:`RunConflictError` naming the run in flight;
    ``"queue"`` waits its turn, in arrival order, for up to ``queue_timeout_s`` seconds, then
    raises :class:`RunConflictError`. A suspended run is not in flight.
    """
    if not isinstance(block, Block):
        raise TypeError(f"fs.action needs a block, not {type(block).__name__}")
    if input is not None and not (isinstance(input, type) and issubclass(input, BaseModel)):
        raise TypeError(f"fs.action input must be a pydantic model class, not {input!r}")
    if concurrency not in CONCURRENCY:
        raise ValueError(f"fs.action concurrency must be one of {', '.join(CONCURRENCY)}, not "
                         f"{concurrency!r}")
    if isinstance(queue_timeout_s, bool) or not isinstance(queue_timeout_s, (int, float)) \
            or not 0 <= queue_timeout_s < float("inf"):
        raise ValueError(f"fs.action queue_timeout_s must be a number of seconds >= 0, not "
                         f"{queue_timeout_s!r}")
    return Action(block, input, concurrency, float(queue_timeout_s))


def _camel(text: str) -> str:
    parts = "".join(c if c.isalnum() else " " for c in text).split()
    return "".join(p[:1].upper() + p[1:] for p in parts) or "Flow"


class Flow:
    """A defined flow. Build it with :func:`define_flow`; see the module docstring."""

    def __init__(self, kind: str, actions: dict[str, Action], scopes: dict[str, ScopeConfig],
                 path: str) -> None:
        self._module: str | None = None
        self.kind = kind
        self.path = path
        self.actions = actions
        self.scopes = scopes
        self._declarations = Declarations()
        self._root_models: dict[int, tuple[type[BaseModel] | None, bool]] = {}
        for name, act in actions.items():
            leftover = self._declarations.absorb_without_sequencer(act.block.declarations)
            self._root_models[id(act.block)] = self._root_model(act.block, leftover,
                                                                f"action {name!r}")
        owner = f"flow {kind!r}"
        self._models = {
            s: merge_state_model(s, self._declarations, base=scopes[s].state, owner=owner,
                                 name=f"{_camel(kind)}{s.capitalize()}State")
            for s in SCOPES}
        self._resources = {s: merge_resources(s, self._declarations, scopes[s].resources)
                           for s in SCOPES}
        self._blocks = {id(b): b for act in actions.values() for b in act.block.walk()}
        for block in self._blocks.values():
            if isinstance(block, Sequencer):
                block._seal(kind)  # steps added later would not be in the merged models

    @staticmethod
    def _root_model(block: Block, leftover: Declarations,
                    owner: str) -> tuple[type[BaseModel] | None, bool]:
        """Instance-state model for ``sequencer_state`` declared with no stateful sequencer
        above: such blocks share one instance per run (see ``root_sequencer_model``)."""
        if not leftover.has_state("sequencer"):
            return None, False
        return merge_state_model("sequencer", leftover, owner=owner,
                                 name=f"{_camel(block.name)}SequencerState"), True

    # -- what the flow is made of ----------------------------------------------------------
    def state_model(self, scope: str) -> type[BaseModel] | None:
        """The merged state model of ``scope`` (``None``: nothing declared, free-form JSON)."""
        self._check_scope(scope)
        return self._models[scope]

    def resources(self, scope: str) -> dict[str, ResourceDefinition | CollectionDefinition]:
        """The merged resources of ``scope``: ``{name: definition}``."""
        self._check_scope(scope)
        return dict(self._resources[scope])

    def client_data_functions(self, scope: str) -> dict[str, Callable]:
        """The client-data functions the flow declared for ``scope``."""
        self._check_scope(scope)
        return dict(self.scopes[scope].client_data)

    def blocks(self) -> list[Block]:
        """Every block of every action (each once)."""
        return list(self._blocks.values())

    def root_sequencer_model(self, block: Block) -> tuple[type[BaseModel] | None, bool]:
        """``(model, needed)``: instance state for a top block's unsettled ``sequencer_state``.

        Blocks that declare ``sequencer_state`` with no stateful sequencer above them share one
        run-level instance; ``needed`` says whether there is any.
        """
        known = self._root_models.get(id(block))
        if known is None:
            leftover = Declarations().absorb_without_sequencer(block.declarations)
            known = self._root_model(block, leftover, f"block {block.name!r}")
            if id(block) in self._blocks:  # only the flow's own blocks are kept alive by it
                self._root_models[id(block)] = known
        return known

    @staticmethod
    def _check_scope(scope: str) -> None:
        if scope not in SCOPES:
            raise InvalidIdError(f"unknown scope {scope!r}; scopes are {', '.join(SCOPES)}")

    # -- running -------------------------------------------------------------------------------
    def _action(self, name: str) -> Action:
        act = self.actions.get(name) if isinstance(name, str) else None
        if act is not None:
            return act
        names = ", ".join(repr(a) for a in self.actions)
        close = difflib.get_close_matches(str(name), list(self.actions), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownActionError(f"flow {self.kind!r} has no action {name!r}{hint} "
                                 f"Actions: {names}")

    def run(self, action: str, input: Any = None, *, user: str | None = None,
            session: str | None = None, project: str = DEFAULT_PROJECT,
            store: Store | None = None, on_event: Callable[[dict], None] | None = None,
            trace: bool = True, durable: bool = True) -> RunResult:
        """Run ``action`` on ``input`` and return a :class:`RunResult`.

        ``session=None`` starts a new session; ``user=None`` means the session's owner (for a
        new session: ``FLOWSTATE_USER``, else the OS user); ``store=None`` the process's default
        store (``open_store()``). Works inside a running event loop (Jupyter). See the module
        docstring for what raises and what ends in ``result.error``. ``trace=False`` keeps no
        trace; ``durable=False`` keeps no step log (the run can then neither suspend nor be
        resumed).
        """
        act = self._action(action)
        if act.input_model is None:  # (the input as given: no message to build for a refusal)
            value = shown = input
        else:
            value = _validate_input(act.input_model, input, f"action {action!r} input")
            shown = _shown(value, input)
        return self._run(self._new_run(
            act.block, value, action=action, input=shown, user=user, session=session,
            project=project, store=store, on_event=on_event, trace=trace, durable=durable,
            concurrency=act.concurrency, queue_timeout_s=act.queue_timeout_s))

    async def arun(self, action: str, input: Any = None, *, user: str | None = None,
                   session: str | None = None, project: str = DEFAULT_PROJECT,
                   store: Store | None = None, on_event: Callable[[dict], None] | None = None,
                   trace: bool = True, durable: bool = True) -> RunResult:
        """The async twin of :meth:`run`."""
        act = self._action(action)
        value = _validate_input(act.input_model, input, f"action {action!r} input")
        return await self._new_run(
            act.block, value, action=action, input=_shown(value, input), user=user,
            session=session, project=project, store=store, on_event=on_event, trace=trace,
            durable=durable, concurrency=act.concurrency,
            queue_timeout_s=act.queue_timeout_s).execute()

    def run_block(self, block: Block, input: Any = None, *, user: str | None = None,
                  session: str | None = None, project: str = DEFAULT_PROJECT,
                  store: Store | None = None, on_event: Callable[[dict], None] | None = None,
                  trace: bool = True, durable: bool = True) -> RunResult:
        """Run one block of this flow (any block, not only an action) as a request."""
        self._check_block(block)
        value = _validate_input(block.input, input, f"{block.source} input")
        return self._run(self._new_run(
            block, value, action=None, input=_shown(value, input), user=user, session=session,
            project=project, store=store, on_event=on_event, trace=trace, durable=durable))

    async def arun_block(self, block: Block, input: Any = None, *, user: str | None = None,
                         session: str | None = None, project: str = DEFAULT_PROJECT,
                         store: Store | None = None,
                         on_event: Callable[[dict], None] | None = None,
                         trace: bool = True, durable: bool = True) -> RunResult:
        """The async twin of :meth:`run_block`."""
        self._check_block(block)
        value = _validate_input(block.input, input, f"{block.source} input")
        return await self._new_run(
            block, value, action=None, input=_shown(value, input), user=user, session=session,
            project=project, store=store, on_event=on_event, trace=trace,
            durable=durable).execute()

    # -- durable runs and traces (docs/concepts.md, 'Durable runs', 'Traces') --------------------
    def resume(self, request_id: str, value: Any = None, *, store: Store | None = None,
               on_event: Callable[[dict], None] | None = None,
               force: bool = False) -> RunResult:
        """Continue the suspended or interrupted run ``request_id``; returns its new outcome.

        A suspended run: ``value`` is validated against the model its block gave
        ``ctx.suspend`` (``None`` counts as ``{}``); a refused value raises
        :class:`ValidationError` and leaves the run suspended, nothing written. An interrupted
        run (its process died; its lease passed) takes no value. Either way the same request
        continues: completed blocks are not run again (their outputs come from the step log),
        the unfinished ones run again from their start without repeating the writes they had
        committed. :class:`RunStateError` when the run is not suspended or interrupted, its
        suspension expired, another process resumed it first, or (interrupted runs) the
        change log no longer reaches back to its last recorded step — ``force=True`` then
        resumes anyway, accepting that the unfinished blocks' writes since may repeat.
        """
        block, value_in, options = self._resumed(request_id, value, store=store,
                                                 on_event=on_event, force=force)
        return self._run(_Run(self, block, value_in, **options))

    async def aresume(self, request_id: str, value: Any = None, *, store: Store | None = None,
                      on_event: Callable[[dict], None] | None = None,
                      force: bool = False) -> RunResult:
        """The async twin of :meth:`resume`."""
        block, value_in, options = self._resumed(request_id, value, store=store,
                                                 on_event=on_event, force=force)
        return await execute(self, block, value_in, **options)

    def _resumed(self, request_id: str, value: Any, *, store: Store | None,
                 on_event: Callable[[dict], None] | None,
                 force: bool) -> tuple[Block, Any, dict[str, Any]]:
        """Claim-check a resume (nothing written yet): the block, its input and the options
        of the run that continues it."""
        store = store or default_store()
        record, state, logged, data = claim_resume(store, request_id, self.kind, value,
                                                   force=force)
        name = state.get("action")
        concurrency, timeout = "allow", 30.0
        if name is not None:
            act = self._action(name)
            block, model = act.block, act.input_model
            concurrency, timeout = act.concurrency, act.queue_timeout_s
        else:
            block = self._block_named(state.get("block"), request_id)
            model = block.input
        if logged.get("input") is None and model is not None:
            raise RunStateError(f"run {request_id}'s input was not JSON, so it was not logged "
                                f"and the run cannot be resumed")
        value_in = _validate_input(model, logged.get("input"), f"run {request_id} input")
        suspension = state.get("suspension") or {}
        if data is not None or state.get("status") == "suspended":
            logged = {**logged, "resumed": {**(logged.get("resumed") or {}),
                                            suspension.get("key", ""): data}}
        return block, value_in, dict(
            action=name, session_id=state["session"], user=state.get("user"),
            project=state.get("project", "default"), store=store, request_id=request_id,
            on_event=on_event, concurrency=concurrency, queue_timeout_s=timeout,
            resumption=Resumption(record, state, logged, data))

    def _block_named(self, name: Any, request_id: str) -> Block:
        found = [b for b in self._blocks.values() if b.name == name]
        if len(found) != 1:
            raise RunStateError(f"run {request_id} ran block {name!r}, which flow "
                                f"{self.kind!r} has {len(found)} of; it cannot be resumed or "
                                f"replayed here")
        return found[0]

    def replay(self, request_id: str, *, store: Store | None = None,
               reuse: bool = True) -> ReplayResult:
        """Run run ``request_id``'s action and input again with this flow's current code, on an
        in-memory copy of its scopes as they were just before it started; compare the two.

        Returns a :class:`ReplayResult`: ``.original`` and ``.result`` (``RunResult``s),
        ``.reused`` (paths of steps whose recorded output was returned: their block and input
        are unchanged and they wrote nothing; ``reuse=False`` runs every step), ``.diff``
        (output, state, resources and client data, original vs replay) and ``.notes``. The
        store is only read. ``ctx.run_once`` returns what the original recorded and never calls
        ``fn``. Raises :class:`HistoryNotKeptError` when a record's state before the run is no
        longer in history, :class:`RunStateError` for a run that is running or interrupted (or
        whose input was kept only in part), and :class:`ValidationError` when the action's
        input model now refuses the recorded input. See ``flows/replay.py``.
        """
        return run_sync(lambda: self.areplay(request_id, store=store, reuse=reuse))

    async def areplay(self, request_id: str, *, store: Store | None = None,
                      reuse: bool = True) -> ReplayResult:
        """The async twin of :meth:`replay`."""
        store = store or default_store()
        record = read_run(store, request_id)
        state = record.state
        if state.get("flow") != self.kind:
            raise RunStateError(f"run {request_id} belongs to flow {state.get('flow')!r}, not "
                                f"{self.kind!r}; replay it with that flow")
        name = state.get("action")
        if name is not None:
            act = self._action(name)
            block, model = act.block, act.input_model
        else:
            block = self._block_named(state.get("block"), request_id)
            model = block.input
        value = _validate_input(model, recorded_input(record), f"run {request_id} input")
        return await replay_run(self, block, value, record, store, reuse=reuse)

    def runs(self, status: str | None = None, *, session: str | None = None,
             store: Store | None = None, limit: int | None = None) -> list[dict]:
        """Runs of this flow, newest first: dicts with ``request_id``, ``action``, ``status``
        (``"running"``, ``"ok"``, ``"error"``, ``"suspended"`` or ``"interrupted"``),
        ``started_at``, ``session``, ``user`` and the rest of the request record (a suspended
        run's ``suspension`` among it). ``status`` / ``session`` filter."""
        return list_runs(store or default_store(), session, limit, status=status,
                         flow_kind=self.kind)

    def trace(self, request_id: str, *, store: Store | None = None) -> Trace:
        """The :class:`Trace` of run ``request_id``, read from the store (any process)."""
        store = store or default_store()
        record = read_run(store, request_id)
        if record.state.get("flow") != self.kind:
            raise RunStateError(f"run {request_id} belongs to flow {record.state.get('flow')!r}, "
                                f"not {self.kind!r}")
        return trace_from(request_id, read_content(record.content).get("trace"))

    def _check_block(self, block: Any) -> None:
        """Refuse a block whose declarations the flow's merged models do not cover.

        Blocks of the flow always fit. Any other block may run on the flow's scopes only if
        every field and resource it declares is already there, with the same type.
        """
        if not isinstance(block, Block):
            raise TypeError(f"run_block needs a block, not {type(block).__name__}")
        if id(block) in self._blocks:
            return
        owner = f"flow {self.kind!r}"
        for s in SCOPES:
            model = self._models[s]
            table = Declarations()
            table.add_state(s, model, owner)
            for source, declared in block.declarations.models(s):
                table.add_state(s, declared, source)  # raises on a type conflict
                missing = [f for f in declared.model_fields
                           if model is None or f not in model.model_fields]
                if missing:
                    raise ValueError(
                        f"{block.source} is not part of flow {self.kind!r} and declares "
                        f"{s} state the flow does not have ({', '.join(missing)}, from "
                        f"{source}); add the block to one of the flow's actions")
            for name in block.declarations.resources(s):
                if name not in self._resources[s]:
                    raise ValueError(
                        f"{block.source} is not part of flow {self.kind!r} and uses {s} "
                        f"resource {name!r}, which the flow does not have; add the block to "
                        f"one of the flow's actions")

    def _new_run(self, block: Block, value: Any, *, action: str | None, input: Any,
                 user: str | None, session: str | None, project: str, store: Store | None,
                 on_event: Callable[[dict], None] | None, trace: bool = True,
                 durable: bool = True, concurrency: str = "allow",
                 queue_timeout_s: float = 30.0) -> _Run:
        """Check ids and fill in defaults: a new run of ``block`` on ``value`` (``runs.py``),
        not started; ``input`` is what its request record shows."""
        if user is not None:
            check_id(user, "user id")
        if project is not DEFAULT_PROJECT:  # (the default is an id)
            check_id(project, "project id")
        session_id = check_id(session, "session id") if session is not None else new_id("s")
        return _Run(self, block, value, action=action, session_id=session_id, user=user,
                    project=project, store=store or default_store(), request_id=new_id("r"),
                    on_event=on_event, input_for_record=input, trace=bool(trace),
                    durable=bool(durable), concurrency=concurrency,
                    queue_timeout_s=queue_timeout_s)

    @staticmethod
    def _run(run: _Run) -> RunResult:
        """Run from synchronous code: with no event loop when every block is a plain function
        and none runs in this thread, else on a loop (``bridge.run_sync``)."""
        sync = run.block._sync()
        if sync and _get_running_loop() is None:  # run_sync's first case, without its call
            return run.execute_now()
        return run_sync(run.execute, run.execute_now if sync else None)

    # -- sessions --------------------------------------------------------------------------------
    def session(self, id: str | None = None, *, user: str | None = None,
                project: str = DEFAULT_PROJECT, store: Store | None = None) -> Session:
        """A handle on one session outside runs (docs/guide.md, 'Sessions outside runs');
        ``id=None`` makes a new one.

        Raises :class:`AccessDeniedError` if the session belongs to another user or flow kind.
        """
        session_id = check_id(id, "session id") if id is not None else new_id("s")
        return Session(self, store or default_store(), session_id, user=user, project=project)

    def sessions(self, user: str | None = None, *, limit: int | None = DEFAULT_PAGE,
                 after: dict | None = None, store: Store | None = None) -> list[dict]:
        """Sessions of this flow kind (optionally one user's), most recently updated first.

        Items: ``{"id", "user", "flow", "created_at", "updated_at", "parent"}`` (Unix seconds;
        ``parent`` is ``(session id, version)`` for a fork, else ``None``: the branch tree).
        A page: the newest ``limit`` (100; ``None`` for all); the next page is
        ``flow.sessions(after=page[-1])``.
        """
        return list_sessions(store or default_store(), self.kind, user, limit=limit,
                             after=after)

    def asgi_app(self, *, store: Store | None = None, tokens: Any = None) -> Any:
        """This flow as an ASGI application (Starlette) for HTTP clients
        (docs/guide.md, 'Serve a flow over HTTP').

        ``tokens``: a file of bearer tokens or a ``{token: user}`` mapping (default: the file
        named by ``FLOWSTATE_TOKENS``, else one local user). Needs the ``serve`` extra; see
        ``flowstate_jupyter.serve``.
        """
        from ..serve import asgi_app  # the one upward import: serving is optional and above
        return asgi_app(self, store=store, tokens=tokens)

    # -- reading -------------------------------------------------------------------------------
    def summary(self) -> dict:
        """The flow as data: actions, merged scope fields, resources, client-data keys."""
        scopes = {}
        for s in SCOPES:
            model = self._models[s]
            fields = {} if model is None else {
                name: {"type": t, "default": _default_text(model, name)}
                for name, t in schema.field_summary(model).items()}
            scopes[s] = {
                "model": model.__name__ if model is not None else None,
                "fields": fields,
                "resources": {name: _resource_text(d) for name, d in self._resources[s].items()},
                "client_data": list(self.scopes[s].client_data),
            }
        return {"kind": self.kind, "path": self.path,
                "actions": {name: {"block": act.block.source,
                                   "input": act.input_model.__name__ if act.input_model
                                   else None}
                            for name, act in self.actions.items()},
                "scopes": scopes}

    def graph(self, action: str | None = None) -> FlowGraph:
        """A picture of the flow (or of one action): blocks, steps, routes, and the state and
        resources each block declares. Draws itself in JupyterLab; ``.mermaid()`` is the
        Mermaid source, ``.text()`` a text tree. See ``flows/graph.py``."""
        return flow_graph(self, action)

    def _repr_html_(self) -> str:
        from ..model.display import flow_html
        return flow_html(self)

    def describe(self) -> str:
        """A readable summary: actions (with their block trees), scopes, resources, client data."""
        info = self.summary()
        lines = [f"flow {self.kind!r} ({self.path})", "actions:"]
        for name, act in self.actions.items():
            model = act.input_model
            lines.append(f"  {name}" + (f" (input {model.__name__})" if model else ""))
            lines.append(act.block.describe(4))
        for s in SCOPES:
            data = info["scopes"][s]
            if not (data["fields"] or data["resources"] or data["client_data"]):
                continue
            lines.append(f"{s}:" + (f" {data['model']}" if data["model"] else ""))
            for fname, f in data["fields"].items():
                lines.append(f"  {fname}: {f['type']} = {f['default']}")
            for rname, text in data["resources"].items():
                lines.append(f"  resource {rname}: {text}")
            if data["client_data"]:
                lines.append(f"  client data: {', '.join(data['client_data'])}")
        return "\n".join(lines)

    def __iter__(self) -> Iterator[str]:
        return iter(self.actions)

    def __repr__(self) -> str:
        return f"<Flow {self.kind!r}: actions {', '.join(self.actions)}>"


def _default_text(model: type[BaseModel], name: str) -> str:
    info = model.model_fields[name]
    if info.default_factory is not None:
        return f"{getattr(info.default_factory, '__name__', 'factory')}()"
    return repr(info.default)


def _resource_text(definition: ResourceDefinition | CollectionDefinition) -> str:
    state = definition.state.__name__ if definition.state is not None else "free-form"
    if isinstance(definition, CollectionDefinition):
        return f"collection {definition.pattern!r} of {state}"
    return f"{state}{'' if definition.writable else ' (read-only)'}"


def _shown(value: Any, given: Any) -> Any:
    """What a run's request record shows as its input: the validated value, else as given."""
    return value if value is not None else given


def _validate_input(model: type[BaseModel] | None, value: Any, where: str) -> Any:
    """Validate an action's input before anything runs (``None`` counts as ``{}``); keys the
    model has no field for are refused unless it allows extras (a typo must not pass)."""
    if model is None:
        return value
    schema.check_input_keys(model, value, where=where)
    return schema.validate_value(model, {} if value is None else value, where=where)


def define_flow(kind: str, actions: Mapping[str, Block | Action], *,
                session: ScopeConfig | type[BaseModel] | None = None,
                user: ScopeConfig | type[BaseModel] | None = None,
                project: ScopeConfig | type[BaseModel] | None = None,
                request: ScopeConfig | type[BaseModel] | None = None,
                path: str | None = None) -> Flow:
    """Define a flow of ``kind`` with named ``actions`` (blocks, or :func:`action` wrappers).

    Each scope takes :func:`scope` (or just a state model). State and resources declared by the
    blocks bubble up and merge with the flow's own per scope; a conflict raises
    :class:`StateSchemaConflictError` or :class:`ResourceConflictError` here. ``path`` is the
    flow's Windmill-style path (default ``f/flows/<kind>``).
    """
    check_id(kind, "flow kind")
    if not isinstance(actions, Mapping) or not actions:
        raise TypeError("define_flow needs actions={name: block, ...} with at least one action")
    prepared: dict[str, Action] = {}
    for name, item in actions.items():
        if not isinstance(name, str) or not name or name != name.strip() or " " in name:
            raise ValueError(f"action names are non-empty strings without spaces, not {name!r}")
        if isinstance(item, Action):
            prepared[name] = item
        elif isinstance(item, Block):
            prepared[name] = Action(item)
        else:
            raise TypeError(f"action {name!r} must be a block or fs.action(block, ...), not "
                            f"{type(item).__name__}")
    given = {"request": request, "session": session, "user": user, "project": project}
    scopes: dict[str, ScopeConfig] = {}
    for s, config in given.items():
        if config is None:
            config = ScopeConfig()
        elif isinstance(config, type) and issubclass(config, BaseModel):
            config = scope(state=config)
        elif not isinstance(config, ScopeConfig):
            raise TypeError(f"{s}= takes fs.scope(...) or a state model, not "
                            f"{type(config).__name__}")
        scopes[s] = config
    if scopes["request"].client_data:
        raise ValueError("client_data on the request scope is not supported: a request ends "
                         "with its run, so return what the client needs as the output")
    if path is None:
        path = f"f/flows/{kind}"
    elif not isinstance(path, str) or not path.strip("/"):
        raise ValueError(f"path must be a non-empty string such as 'f/flows/{kind}', not "
                         f"{path!r}")
    flow = Flow(kind, prepared, scopes, path)
    # where it was defined, so `flowstate resume` can find it again (runs record it)
    flow._module = sys._getframe(1).f_globals.get("__name__")
    return flow
