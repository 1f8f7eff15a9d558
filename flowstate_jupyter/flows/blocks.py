"""Blocks: handler, router and sequencer, the pieces flows are made of (docs/concepts.md,
'Blocks, flows and bubbling').

A block is a named step with optional ``input`` / ``output`` models and the state and resources
it declares per scope (``session_state=ModeState``, ``session_resources={...}``); declarations
bubble up into the flow (see ``bubbling.py``). A block runs only through
``await block.run(input, ctx)``, which validates the input, makes ``ctx`` point at this block,
runs it and validates the output. Flows (``flows.py``) and sessions call it for you.

In a run that keeps spans (``trace`` or ``durable``, the defaults), ``block.run`` also records
the block's span in the run's log (in memory; see ``trace.py``), and a block that an earlier
attempt of a resumed run completed is not run again: its logged output is returned.

* :func:`handler` wraps one function ``fn(input, ctx)`` (``def`` or ``async def``).
* :func:`router` picks one of its ``routes`` with ``route(input, ctx)`` and runs it.
* :func:`sequencer` chains steps: ``then``, ``then_if``, ``map``, ``tap``, ``tap_if``,
  ``parallel``, ``for_each``, ``branch``, ``rescue``, ``do_while``, ``do_until``.

Functions passed to blocks and steps take ``(value, ctx)`` or just ``(value)``; each may be
``def`` or ``async def``. Everything of one run executes on one asyncio event loop. A plain
``def`` handler runs on the loop thread, except inside ``parallel`` / ``for_each`` with more than
one item in flight, where it runs in a worker thread so that blocking work (state operations on
SQLite, ``time.sleep``, HTTP calls) really overlaps, up to ``max_concurrency`` at a time.
State operations are plain synchronous calls and safe from any thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from ..errors import LoopLimitError
from ..handles.resources import CollectionDefinition, ResourceDefinition
from ..model import ops, schema
from .bridge import drive
from .bubbling import Declarations, merge_state_model
from .context import _CURRENT, Context, SequencerState, current_context
from .trace import LiveSpan, MapStep, RunLog, Suspended, resolve_type

__all__ = [
    "DEFAULT_MAX_ITERATIONS",
    "Block",
    "Context",
    "Handler",
    "LoopLimitError",
    "Router",
    "Sequencer",
    "SequencerState",
    "current_context",
    "handler",
    "router",
    "sequencer",
]

#: Default iteration limit of ``do_while`` / ``do_until``.
DEFAULT_MAX_ITERATIONS = 1000

_Resources = Mapping[str, ResourceDefinition | CollectionDefinition] | None
_KEEP = object()
_clock = time.perf_counter
_new = object.__new__
#: References to an object (CPython); elsewhere nothing is known, so nothing is reused.
_refs: Callable[[Any], int] = sys.getrefcount if sys.implementation.name == "cpython" \
    else (lambda obj: 0)
#: Bumped whenever a sequencer gains a step: blocks' cached ``_sync()`` answers are then stale.
_SHAPE = [0]


# ---------------------------------------------------------------------------- calling functions

def _arity(fn: Callable, what: str) -> int:
    """How many positional arguments (1 = value, 2 = value and ctx) ``fn`` takes."""
    if not callable(fn):
        raise TypeError(f"{what} must be callable, not {type(fn).__name__}")
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return 2
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 2
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return min(len(positional), 2)  # 2: (value, ctx); 1: (value); 0: ()


_AWAITABLE: dict[type, bool] = {}  # type -> has __await__ (asked once per type)
_PLAIN = frozenset({type(None), bool, int, float, str, list, dict, tuple})  # never awaitable


def _awaitable(value: Any) -> bool:
    """Cheaper ``inspect.isawaitable`` for the hot path (coroutines, tasks, futures)."""
    kind = type(value)
    known = _AWAITABLE.get(kind)
    if known is None:
        if len(_AWAITABLE) > 1000:  # classes made on the fly: keep the table small
            _AWAITABLE.clear()
        known = _AWAITABLE[kind] = hasattr(kind, "__await__")
    return known


def _is_async(fn: Callable) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None))  # noqa: B004 - asks if __call__ is async, not if callable


class _Fn:
    """A user function adapted to ``(value, ctx)``, sync or async."""

    __slots__ = ("arity", "fn", "is_async", "name")

    def __init__(self, fn: Callable, what: str) -> None:
        self.fn = fn
        self.arity = _arity(fn, what)
        self.name = getattr(fn, "__name__", type(fn).__name__)
        self.is_async = _is_async(fn)

    def call(self, value: Any, ctx: Context) -> Any:
        """Call it; the result may be awaitable."""
        if self.arity == 2:
            return self.fn(value, ctx)
        if self.arity == 1:
            return self.fn(value)
        return self.fn()

    async def __call__(self, value: Any, ctx: Context) -> Any:
        out = self.call(value, ctx)
        if _awaitable(out):
            out = await out
        return out

    def now(self, value: Any, ctx: Context) -> Any:
        """Call it with no event loop running (a plain function's awaitable is driven)."""
        out = self.call(value, ctx)
        if _awaitable(out):
            out = drive(out)
        return out


def _segments(names: Iterable[str]) -> list[str]:
    """Path segments of sibling blocks (routes, cases): the name, ``name#i`` for a repeat (``i``
    its position), as in the flow picture (``graph.py``)."""
    seen: set[str] = set()
    out = []
    for index, name in enumerate(names):
        out.append(name if name not in seen else f"{name}#{index}")
        seen.add(name)
    return out


# ---------------------------------------------------------------------------- blocks

class Block:
    """Base of every block. Use :func:`handler`, :func:`router` or :func:`sequencer`."""

    kind = "block"
    #: A handler of a plain function whose ``_execute`` is Handler's: ``run`` calls it inline.
    _plain = False

    def __init__(self, name: str, *, input: type[BaseModel] | None = None,
                 output: type[BaseModel] | None = None,
                 request_state: type[BaseModel] | None = None,
                 session_state: type[BaseModel] | None = None,
                 user_state: type[BaseModel] | None = None,
                 project_state: type[BaseModel] | None = None,
                 sequencer_state: type[BaseModel] | None = None,
                 session_resources: _Resources = None, user_resources: _Resources = None,
                 project_resources: _Resources = None,
                 description: str | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a block needs a non-empty name, not {name!r}")
        for what, model in (("input", input), ("output", output)):
            if model is not None and not (isinstance(model, type)
                                          and issubclass(model, BaseModel)):
                raise TypeError(f"{self.kind} {name!r}: {what} must be a pydantic model class, "
                                f"not {model!r}")
        self.name = name
        self.input = input
        self.output = output
        self.description = description
        #: What this block itself declares: scope -> model, scope -> {name: definition}.
        self.state = {"request": request_state, "session": session_state,
                      "user": user_state, "project": project_state,
                      "sequencer": sequencer_state}
        self.resources = {"session": dict(session_resources or {}),
                          "user": dict(user_resources or {}),
                          "project": dict(project_resources or {})}
        #: What this block and everything inside it declare (checked for conflicts).
        self.declarations = Declarations()
        for scope, model in self.state.items():
            self.declarations.add_state(scope, model, self.source)
        for scope, defs in self.resources.items():
            self.declarations.add_resources(scope, defs, self.source)

    @property
    def source(self) -> str:
        """How messages name this block: ``handler 'mode_switch'``."""
        return f"{self.kind} {self.name!r}"

    def children(self) -> list[Block]:
        """The blocks directly inside this one."""
        return []

    def walk(self) -> Iterator[Block]:
        """This block and every block inside it, depth first (each once)."""
        seen: set[int] = set()
        stack: list[Block] = [self]
        while stack:
            block = stack.pop()
            if id(block) in seen:
                continue
            seen.add(id(block))
            yield block
            stack.extend(reversed(block.children()))

    async def run(self, input: Any, ctx: Context, _at: str | None = None) -> Any:
        """Run this block: validate ``input``, point ``ctx`` here, execute, validate the output.

        ``_at`` is the path segment the enclosing block gives it (see ``trace.py``); a block a
        handler runs itself is named after the block.
        """
        log = ctx._frame.log
        if log is None:  # neither traced nor durable: nothing to record
            if self.input is not None:
                input = schema.validate_value(self.input, input, where=f"{self.source} input")
            token = _CURRENT.set(inner := ctx._enter(self.name, None))
            try:
                out = await self._execute(input, inner)
            finally:
                _CURRENT.reset(token)
            if self.output is not None:
                out = schema.validate_value(self.output, out, where=f"{self.source} output")
            return out
        parent = ctx._span
        if _at is None:
            path = log.path(parent, self.name, False)
        else:
            path = _at if parent is None else f"{parent.path}/{_at}"
        done = log.done
        if done and path in done:  # completed by an earlier attempt of this run (or reusable)
            entry = log.replayed(path, self, input)
            if entry is not None:
                return self._replay(entry)
        clock = time.perf_counter
        span = LiveSpan(path, self, parent, input, clock())
        log.spans.append(span)
        inner = ctx._enter(self.name, span)
        token = _CURRENT.set(inner)
        try:
            if self.input is not None:
                input = span.input = schema.validate_value(self.input, input,
                                                           where=f"{self.source} input")
            if self._plain and not inner._concurrent:  # Handler._execute inlined
                out = self._fn.call(input, inner)  # type: ignore[attr-defined]
                if type(out) not in _PLAIN and _awaitable(out):
                    out = await out
            else:
                out = await self._execute(input, inner)
            if self.output is not None:
                out = schema.validate_value(self.output, out, where=f"{self.source} output")
        except Suspended:
            span.status, span.duration = "suspended", clock() - span.t0
            raise
        except BaseException as exc:
            span.status, span.error, span.duration = "error", exc, clock() - span.t0
            raise
        finally:
            _CURRENT.reset(token)
        span.output, span.status, span.duration = out, "ok", clock() - span.t0
        return out

    def _sync(self) -> bool:
        """Whether this block and every block and function inside it are plain functions, so
        that it can run with no event loop (:meth:`_run_sync`)."""
        return self._known("sync", self._can_sync)

    def _declares_nothing(self) -> bool:
        """Whether neither this block nor any block inside it declares state (of any scope,
        sequencer instance state included) or resources."""
        return self._known("quiet", lambda: not any(
            any(m is not None for m in b.state.values()) or any(b.resources.values())
            or getattr(b, "instance_state", None) is not None for b in self.walk()))

    def _known(self, what: str, compute: Callable[[], bool]) -> bool:
        """``compute()``, kept until a sequencer anywhere gains a step."""
        cache = self.__dict__.setdefault("_shape_cache", {})
        known = cache.get(what)
        if known is not None and known[0] == _SHAPE[0]:
            return known[1]
        shape = _SHAPE[0]
        answer = compute()
        cache[what] = (shape, answer)
        return answer

    def _can_sync(self) -> bool:
        return False  # a block class of its own: only its ``run`` is known

    def _run_sync(self, input: Any, ctx: Context, _at: str | None = None) -> Any:
        """:meth:`run` with no event loop, for a block whose ``_sync()`` is true: the same
        validation, span, step log and errors, the functions called directly."""
        log = ctx._frame.log
        if log is None:  # neither traced nor durable: nothing to record
            if self.input is not None:
                input = schema.validate_value(self.input, input, where=f"{self.source} input")
            token = _CURRENT.set(inner := ctx._enter(self.name, None))
            try:
                out = self._execute_sync(input, inner)
            finally:
                _CURRENT.reset(token)
            if self.output is not None:
                out = schema.validate_value(self.output, out, where=f"{self.source} output")
            return out
        parent = ctx._span
        if _at is None:
            path = log.path(parent, self.name, False)
        else:
            path = _at if parent is None else f"{parent.path}/{_at}"
        done = log.done
        if done and path in done:  # completed by an earlier attempt of this run (or reusable)
            entry = log.replayed(path, self, input)
            if entry is not None:
                return self._replay(entry)
        clock = time.perf_counter
        span = LiveSpan(path, self, parent, input, clock())
        log.spans.append(span)
        inner = ctx._enter(self.name, span)
        token = _CURRENT.set(inner)
        try:
            if self.input is not None:
                input = span.input = schema.validate_value(self.input, input,
                                                           where=f"{self.source} input")
            out = self._execute_sync(input, inner)
            if self.output is not None:
                out = schema.validate_value(self.output, out, where=f"{self.source} output")
        except Suspended:
            span.status, span.duration = "suspended", clock() - span.t0
            raise
        except BaseException as exc:
            span.status, span.error, span.duration = "error", exc, clock() - span.t0
            raise
        finally:
            _CURRENT.reset(token)
        span.output, span.status, span.duration = out, "ok", clock() - span.t0
        return out

    def _execute_sync(self, value: Any, ctx: Context) -> Any:
        raise NotImplementedError

    def _replay(self, entry: list) -> Any:
        """A logged output as this block returned it: validated, or as its recorded class."""
        data = ops.copy_json(entry[0], where=f"{self.source} logged output")
        if self.output is not None:
            return schema.validate_value(self.output, data, where=f"{self.source} output")
        cls = resolve_type(entry[1])
        if cls is not None and issubclass(cls, BaseModel):
            try:
                return cls.model_validate(data)
            except Exception:  # noqa: BLE001 - the class changed since: its JSON will do
                return data
        return data

    async def _execute(self, value: Any, ctx: Context) -> Any:
        raise NotImplementedError

    def _absorb(self, child: Block) -> None:
        """Collect a child's declarations (sequencers override to keep instance state)."""
        if not isinstance(child, Block):
            raise TypeError(f"{self.source}: expected a block (from fs.handler, fs.router or "
                            f"fs.sequencer), got {type(child).__name__}; wrap a function with "
                            f"fs.handler(fn)")
        if any(b is self for b in child.walk()):
            raise ValueError(f"{self.source} cannot contain itself")
        self.declarations.absorb(child.declarations)

    def describe(self, indent: int = 0) -> str:
        """A readable outline of this block and what is inside it."""
        line = " " * indent + self.source
        if self.input is not None:
            line += f" (input {self.input.__name__})"
        return line

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"{self.source} is a block, not a function: it runs through "
                        f"`await block.run(input, ctx)`, flow.run(...) or "
                        f"session.run_block(block, input)")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class Handler(Block):
    """A block that calls one function ``fn(input, ctx)``."""

    kind = "handler"
    #: ``(parent path, segment, path)`` of this handler's last traced step (see ``_run_sync``).
    _last_path: tuple[Any, Any, str] = (None, None, "")

    def __init__(self, fn: Callable, name: str | None = None, **options: Any) -> None:
        self._fn = _Fn(fn, "a handler's function")
        self._async = _is_async(fn)
        self._call2 = fn if self._fn.arity == 2 else None  # called as fn(value, ctx)
        self._plain = not self._async and type(self)._execute is Handler._execute
        super().__init__(name or self._fn.name, **options)
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__wrapped__ = fn

    @property
    def fn(self) -> Callable:
        """The wrapped function (call it directly in a unit test if you like)."""
        return self._fn.fn

    def _can_sync(self) -> bool:
        return not self._async and type(self)._execute is Handler._execute

    def _execute_sync(self, value: Any, ctx: Context) -> Any:
        fn = self._fn
        out = fn.fn(value, ctx) if fn.arity == 2 else fn.call(value, ctx)
        if type(out) not in _PLAIN and _awaitable(out):
            out = drive(out)
        return out

    def _run_sync(self, input: Any, ctx: Context, _at: str | None = None) -> Any:
        # Block._run_sync with _execute_sync and ctx._enter inlined: the hot path of a traced
        # run (a step of a sequencer of handlers); keep the three in step.
        frame = ctx._frame
        log = frame.log
        if log is None or self.input is not None or self.output is not None:
            return Block._run_sync(self, input, ctx, _at)
        parent = ctx._span
        if _at is None:
            path = log.path(parent, self.name, False)
        elif parent is None:
            path = _at
        else:  # most often the path this step had last time (its sequencer's, the same run's)
            under, at, path = self._last_path
            if at is not _at or under != parent.path:
                under = parent.path
                path = f"{under}/{_at}"
                self._last_path = (under, _at, path)
        done = log.done
        if done and path in done:  # completed by an earlier attempt of this run (or reusable)
            entry = log.replayed(path, self, input)
            if entry is not None:
                return self._replay(entry)
        # LiveSpan(path, self, parent, input, t0) and ctx._enter(name, span), a call less each;
        # one assignment a line, as a longer unpacking makes (and the GC counts) a tuple
        span = _new(LiveSpan)
        span.path = path
        span.block = self
        span.parent = parent
        span.input = input
        span.t0 = t0 = _clock()
        log.spans.append(span)
        inner = ctx._spare  # the context of the step before, which nothing kept (see below)
        if inner is None:
            inner = _new(Context)
            inner._frame = frame
            inner._spare = None
        else:
            ctx._spare = None
        inner.step_id = self.name
        inner.sequencer = ctx.sequencer
        inner._concurrent = ctx._concurrent
        inner._span = span
        token = _CURRENT.set(inner)
        try:
            call = self._call2
            out = call(input, inner) if call is not None else self._fn.call(input, inner)
            if type(out) not in _PLAIN and _awaitable(out):
                out = drive(out)
        except Suspended:
            span.status, span.duration = "suspended", _clock() - t0
            raise
        except BaseException as exc:
            span.status, span.error, span.duration = "error", exc, _clock() - t0
            raise
        finally:
            _CURRENT.reset(token)
        span.output, span.status, span.duration = out, "ok", _clock() - t0
        if _refs(inner) == 2:  # held by this frame alone (and the call): no one can see it
            ctx._spare = inner  # change, so the next step run under ctx may reuse it
        return out

    async def _execute(self, value: Any, ctx: Context) -> Any:
        if self._async:
            return await self._fn(value, ctx)
        if ctx._concurrent:  # let blocking work overlap: run it in a worker thread
            loop = asyncio.get_running_loop()
            run_in = contextvars.copy_context().run
            out = await loop.run_in_executor(ctx._services.executor, run_in,
                                             self._fn.call, value, ctx)
        else:
            out = self._fn.call(value, ctx)
        if _awaitable(out):
            out = await out
        return out


def handler(fn: Callable | None = None, /, *, name: str | None = None,
            input: type[BaseModel] | None = None, output: type[BaseModel] | None = None,
            request_state: type[BaseModel] | None = None,
            session_state: type[BaseModel] | None = None,
            user_state: type[BaseModel] | None = None,
            project_state: type[BaseModel] | None = None,
            sequencer_state: type[BaseModel] | None = None,
            session_resources: _Resources = None, user_resources: _Resources = None,
            project_resources: _Resources = None,
            description: str | None = None) -> Any:
    """Make a handler block from ``fn(input, ctx)`` (``def`` or ``async def``).

    Use it as ``@fs.handler``, ``@fs.handler(session_state=ModeState)`` or
    ``fs.handler(fn, name="save")``. ``name`` defaults to the function's name.
    """
    options = dict(input=input, output=output, request_state=request_state,
                   session_state=session_state, user_state=user_state,
                   project_state=project_state, sequencer_state=sequencer_state,
                   session_resources=session_resources, user_resources=user_resources,
                   project_resources=project_resources, description=description)
    if fn is None:
        return lambda f: Handler(f, name, **options)
    if isinstance(fn, Block):
        raise TypeError(f"fs.handler got {fn.source}, which is a block already")
    return Handler(fn, name, **options)


class Router(Block):
    """A block that runs one of its ``routes``, chosen by ``route(input, ctx)``."""

    kind = "router"

    def __init__(self, name: str, routes: Sequence[Block], route: Callable,
                 **options: Any) -> None:
        super().__init__(name, **options)
        self.routes = list(routes)
        if not self.routes:
            raise ValueError(f"{self.source} needs at least one route")
        for block in self.routes:
            self._absorb(block)
        self._segments = _segments(b.name for b in self.routes)  # path segments of the routes
        self._route = _Fn(route, f"{self.source}: route")

    def children(self) -> list[Block]:
        return list(self.routes)

    async def _execute(self, value: Any, ctx: Context) -> Any:
        chosen = await self._route(value, ctx)
        block = self._pick(chosen)
        return await block.run(value, ctx, self._segments[self.routes.index(block)])

    def _can_sync(self) -> bool:
        return not self._route.is_async and all(b._sync() for b in self.routes) \
            and type(self)._execute is Router._execute

    def _execute_sync(self, value: Any, ctx: Context) -> Any:
        block = self._pick(self._route.now(value, ctx))
        return block._run_sync(value, ctx, self._segments[self.routes.index(block)])

    def _pick(self, chosen: Any) -> Block:
        for block in self.routes:
            if block is chosen or (isinstance(chosen, str) and block.name == chosen):
                return block
        names = ", ".join(repr(b.name) for b in self.routes)
        shown = chosen.source if isinstance(chosen, Block) else repr(chosen)
        raise ValueError(f"{self.source}: route returned {shown}, which is not one of its "
                         f"routes ({names}); return one of those blocks or its name")

    def describe(self, indent: int = 0) -> str:
        lines = [super().describe(indent)]
        lines += [b.describe(indent + 2) for b in self.routes]
        return "\n".join(lines)


def router(name: str | None = None, routes: Sequence[Block] | None = None,
           route: Callable | None = None, *, input: type[BaseModel] | None = None,
           output: type[BaseModel] | None = None,
           request_state: type[BaseModel] | None = None,
           session_state: type[BaseModel] | None = None,
           user_state: type[BaseModel] | None = None,
           project_state: type[BaseModel] | None = None,
           sequencer_state: type[BaseModel] | None = None,
           session_resources: _Resources = None, user_resources: _Resources = None,
           project_resources: _Resources = None, description: str | None = None) -> Any:
    """Make a router: ``route(input, ctx)`` returns one of ``routes`` (or its name) to run.

    ``fs.router(name="mode-router", routes=[chat, agent], route=fn)``, or as a decorator on the
    route function: ``@fs.router(routes=[chat, agent])`` (the name is then the function's).
    """
    if routes is None:
        raise TypeError("fs.router needs routes=[block, ...]")
    options = dict(input=input, output=output, request_state=request_state,
                   session_state=session_state, user_state=user_state,
                   project_state=project_state, sequencer_state=sequencer_state,
                   session_resources=session_resources, user_resources=user_resources,
                   project_resources=project_resources, description=description)

    def build(fn: Callable) -> Router:
        return Router(name if name else getattr(fn, "__name__", "router"), routes, fn, **options)

    return build if route is None else build(route)


# ---------------------------------------------------------------------------- sequencer steps

class _Step:
    """One step of a sequencer. ``run`` turns the current value into the next one.

    ``kind`` and the step's index (set when the sequencer adds it) make the path segment of the
    blocks it runs: ``then[2]/<block name>``.
    """

    label = "step"
    kind = "step"
    prefix = "step[0]/"

    def bind(self, index: int) -> None:
        """Learn the step's index in its sequencer."""
        self.prefix = f"{self.kind}[{index}]/"

    @property
    def direct(self) -> tuple[Callable[[Any, Context, str | None], Any], str | None]:
        """``(fn, at)``: ``fn(value, ctx, at)`` does what :meth:`now` does (a ``then`` of a
        block calls the block's ``_run_sync`` itself: one call less per step)."""
        return lambda value, ctx, at: self.now(value, ctx), None

    def blocks(self) -> list[Block]:
        return []

    async def run(self, value: Any, ctx: Context) -> Any:
        raise NotImplementedError

    def sync(self) -> bool:
        """Whether :meth:`now` can run this step (its functions and blocks are plain)."""
        return False

    def now(self, value: Any, ctx: Context) -> Any:
        """:meth:`run` with no event loop."""
        raise NotImplementedError

    def describe(self, indent: int) -> str:
        lines = [" " * indent + self.label]
        lines += [b.describe(indent + 2) for b in self.blocks()]
        return "\n".join(lines)


class _Then(_Step):
    kind = "then"

    def __init__(self, block: Block, connector: _Fn | None) -> None:
        self.block, self.connector = block, connector
        self.label = "then" if connector is None else f"then (via {connector.name})"

    def bind(self, index: int) -> None:
        super().bind(index)
        self.at = self.prefix + self.block.name

    def blocks(self) -> list[Block]:
        return [self.block]

    async def run(self, value: Any, ctx: Context) -> Any:
        if self.connector is not None:
            value = await self.connector(value, ctx)
        return await self.block.run(value, ctx, self.at)

    def sync(self) -> bool:
        return (self.connector is None or not self.connector.is_async) and self.block._sync()

    @property
    def direct(self) -> tuple[Callable[[Any, Context, str | None], Any], str | None]:
        if self.connector is None:
            return self.block._run_sync, self.at
        return super().direct

    def now(self, value: Any, ctx: Context) -> Any:
        if self.connector is not None:
            value = self.connector.now(value, ctx)
        return self.block._run_sync(value, ctx, self.at)


class _If(_Step):
    """``then_if`` / ``tap_if`` (and ``tap`` with no condition)."""

    def __init__(self, cond: _Fn | None, block: Block, keep_value: bool) -> None:
        self.cond, self.block, self.keep_value = cond, block, keep_value
        name = "tap" if keep_value else "then"
        self.label = name if cond is None else f"{name}_if {cond.name}"
        self.kind = name if cond is None else f"{name}_if"

    def bind(self, index: int) -> None:
        super().bind(index)
        self.at = self.prefix + self.block.name

    def blocks(self) -> list[Block]:
        return [self.block]

    async def run(self, value: Any, ctx: Context) -> Any:
        if self.cond is not None and not await self.cond(value, ctx):
            return value
        out = await self.block.run(value, ctx, self.at)
        return value if self.keep_value else out

    def sync(self) -> bool:
        return (self.cond is None or not self.cond.is_async) and self.block._sync()

    def now(self, value: Any, ctx: Context) -> Any:
        if self.cond is not None and not self.cond.now(value, ctx):
            return value
        out = self.block._run_sync(value, ctx, self.at)
        return value if self.keep_value else out


class _Map(_Step):
    kind = "map"

    def __init__(self, fn: _Fn) -> None:
        self.fn = fn
        self.label = f"map {fn.name}"

    def bind(self, index: int) -> None:
        self.at = f"map[{index}]"

    async def run(self, value: Any, ctx: Context) -> Any:
        log = ctx._frame.log
        if log is None:
            return await self.fn(value, ctx)
        replayed, span = _map_span(log, self.at, self.fn, value, ctx)
        if span is None:
            return replayed
        clock = time.perf_counter
        try:
            out = await self.fn(value, ctx)
        except BaseException as exc:
            span.status, span.error, span.duration = "error", exc, clock() - span.t0
            raise
        span.output, span.status, span.duration = out, "ok", clock() - span.t0
        return out

    def sync(self) -> bool:
        return not self.fn.is_async

    def now(self, value: Any, ctx: Context) -> Any:
        log = ctx._frame.log
        if log is None:
            return self.fn.now(value, ctx)
        replayed, span = _map_span(log, self.at, self.fn, value, ctx)
        if span is None:
            return replayed
        clock = time.perf_counter
        try:
            out = self.fn.now(value, ctx)
        except BaseException as exc:
            span.status, span.error, span.duration = "error", exc, clock() - span.t0
            raise
        span.output, span.status, span.duration = out, "ok", clock() - span.t0
        return out


def _map_span(log: RunLog, at: str, fn: _Fn, value: Any,
              ctx: Context) -> tuple[Any, LiveSpan | None]:
    """A ``map`` step as a span of its own (writes in it count as the sequencer's): its logged
    output and ``None`` when an earlier attempt completed it, else ``(None, its new span)``."""
    path = log.path(ctx._span, at, True)
    entry = log.done.get(path) if log.done else None
    if entry is not None:
        data = ops.copy_json(entry[0], where=f"map {fn.name} logged output")
        cls = resolve_type(entry[1])
        return (cls.model_validate(data) if cls is not None and issubclass(cls, BaseModel)
                else data), None
    span = LiveSpan(path, MapStep(fn.name), ctx._span, value, time.perf_counter())
    log.spans.append(span)
    return None, span


async def _run_limited(jobs: Sequence[Callable[[], Awaitable[Any]]], limit: int | None,
                       on_done: Callable[[int], None]) -> list[Any]:
    """Run ``jobs`` with at most ``limit`` in flight; results in order.

    After the first failure no new job starts; the ones already running finish (their committed
    writes stay), then the first error is raised. ``on_done(n)`` is called after each success.
    """
    if not jobs:
        return []
    semaphore = asyncio.Semaphore(limit or len(jobs))
    errors: list[BaseException] = []
    done = 0
    skipped = object()

    async def one(job: Callable[[], Awaitable[Any]]) -> Any:
        nonlocal done
        async with semaphore:
            if errors:
                return skipped
            try:
                result = await job()
            except BaseException as exc:
                errors.append(exc)
                raise
            done += 1
            on_done(done)
            return result

    results = await asyncio.gather(*(one(job) for job in jobs), return_exceptions=True)
    if errors:
        raise errors[0]
    return results


def _check_limit(max_concurrency: int | None, what: str) -> int | None:
    if max_concurrency is None:
        return None
    if not isinstance(max_concurrency, int) or isinstance(max_concurrency, bool) \
            or max_concurrency < 1:
        raise ValueError(f"{what}: max_concurrency must be a positive int or None, "
                         f"not {max_concurrency!r}")
    return max_concurrency


class _Parallel(_Step):
    kind = "parallel"

    def __init__(self, branches: Mapping[str, Block], limit: int | None) -> None:
        self.branches, self.limit = dict(branches), limit
        self.label = f"parallel {', '.join(map(repr, self.branches))}" + (
            f" (max {limit} at a time)" if limit else "")

    def blocks(self) -> list[Block]:
        return list(self.branches.values())

    async def run(self, value: Any, ctx: Context) -> Any:
        names = list(self.branches)
        total = len(names)
        concurrent = total > 1 and self.limit != 1
        inner = ctx._derive(concurrent=concurrent) if concurrent != ctx._concurrent else ctx
        finished: list[str] = []

        prefix = self.prefix

        def job(name: str) -> Callable[[], Awaitable[Any]]:
            async def go() -> Any:
                out = await self.branches[name].run(value, inner, prefix + name)
                finished.append(name)
                return out
            return go

        def progress(done: int) -> None:
            ctx.emit("progress", {"done": done, "total": total,
                                  "block": finished[-1] if finished else None})

        results = await _run_limited([job(n) for n in names], self.limit, progress)
        return dict(zip(names, results))

    def sync(self) -> bool:  # one branch at a time, so none waits for a worker thread
        return (len(self.branches) == 1 or self.limit == 1) and \
            all(b._sync() for b in self.branches.values())

    def now(self, value: Any, ctx: Context) -> Any:
        total = len(self.branches)
        out = {}
        for name, block in self.branches.items():
            out[name] = block._run_sync(value, ctx, self.prefix + name)
            ctx.emit("progress", {"done": len(out), "total": total, "block": name})
        return out


class _ForEach(_Step):
    kind = "for_each"

    def __init__(self, block: Block, limit: int | None) -> None:
        self.block, self.limit = block, limit
        self.label = "for_each" + (f" (max {limit} at a time)" if limit else "")

    def blocks(self) -> list[Block]:
        return [self.block]

    async def run(self, value: Any, ctx: Context) -> Any:
        items = self._items(value)
        total = len(items)
        concurrent = total > 1 and self.limit != 1
        inner = ctx._derive(concurrent=concurrent) if concurrent != ctx._concurrent else ctx
        block = self.block

        def progress(done: int) -> None:
            ctx.emit("progress", {"done": done, "total": total, "block": block.name})

        at = f"{self.prefix}{block.name}"
        jobs = [functools.partial(block.run, item, inner, f"{at}[{k}]")
                for k, item in enumerate(items)]
        return await _run_limited(jobs, self.limit, progress)

    def sync(self) -> bool:  # one item at a time, so none waits for a worker thread
        return self.limit == 1 and self.block._sync()

    def now(self, value: Any, ctx: Context) -> Any:
        items = self._items(value)
        total, block = len(items), self.block
        at = f"{self.prefix}{block.name}"
        out = []
        for k, item in enumerate(items):
            out.append(block._run_sync(item, ctx, f"{at}[{k}]"))
            ctx.emit("progress", {"done": k + 1, "total": total, "block": block.name})
        return out

    def _items(self, value: Any) -> list:
        if isinstance(value, (str, bytes, dict)) or not isinstance(value, (list, tuple)):
            raise TypeError(f"for_each over {self.block.source} needs a list (or tuple) of "
                            f"items, got {type(value).__name__}; use .map(...) first to build "
                            f"the list")
        return list(value)


class _Branch(_Step):
    kind = "branch"

    def __init__(self, cases: list[tuple[_Fn | None, Block]]) -> None:
        self.cases = cases
        self.label = "branch"

    def blocks(self) -> list[Block]:
        return [b for _, b in self.cases]

    def bind(self, index: int) -> None:
        super().bind(index)
        self.ats = [self.prefix + seg for seg in _segments(b.name for _, b in self.cases)]

    async def run(self, value: Any, ctx: Context) -> Any:
        for (cond, block), at in zip(self.cases, self.ats):
            if cond is None or await cond(value, ctx):
                return await block.run(value, ctx, at)
        return value

    def sync(self) -> bool:
        return all((cond is None or not cond.is_async) and block._sync()
                   for cond, block in self.cases)

    def now(self, value: Any, ctx: Context) -> Any:
        for (cond, block), at in zip(self.cases, self.ats):
            if cond is None or cond.now(value, ctx):
                return block._run_sync(value, ctx, at)
        return value


class _Rescue(_Step):
    kind = "rescue"

    def __init__(self, cases: list[tuple[Any, Block]]) -> None:
        self.cases = cases
        self.label = "rescue " + ", ".join(_exc_names(c) for c, _ in cases)

    def blocks(self) -> list[Block]:
        return [b for _, b in self.cases]

    def bind(self, index: int) -> None:
        super().bind(index)
        self.ats = [self.prefix + seg for seg in _segments(b.name for _, b in self.cases)]

    def sync(self) -> bool:
        return all(block._sync() for _, block in self.cases)

    def now(self, value: Any, ctx: Context) -> Any:
        return value  # nothing to rescue: the value passes on

    def match(self, exc: BaseException) -> tuple[Block, str] | None:
        """The block of the first case ``exc`` matches, with its path segment."""
        for (classes, block), at in zip(self.cases, self.ats):
            if isinstance(exc, classes):
                return block, at
        return None


def _exc_names(classes: Any) -> str:
    if isinstance(classes, tuple):
        return "(" + ", ".join(c.__name__ for c in classes) + ")"
    return classes.__name__


class _Loop(_Step):
    """``do_while`` (repeat while cond holds) and ``do_until`` (repeat until it holds)."""

    def __init__(self, cond: _Fn, block: Block, until: bool, limit: int) -> None:
        self.cond, self.block, self.until, self.limit = cond, block, until, limit
        self.kind = "do_until" if until else "do_while"
        self.label = f"{self.kind} {cond.name} (at most {limit})"

    def blocks(self) -> list[Block]:
        return [self.block]

    async def run(self, value: Any, ctx: Context) -> Any:
        at = self.prefix + self.block.name
        for k in range(self.limit):
            value = await self.block.run(value, ctx, f"{at}[{k}]")
            if bool(await self.cond(value, ctx)) == self.until:
                return value
        raise self._limit_error(ctx)

    def sync(self) -> bool:
        return not self.cond.is_async and self.block._sync()

    def now(self, value: Any, ctx: Context) -> Any:
        at = self.prefix + self.block.name
        for k in range(self.limit):
            value = self.block._run_sync(value, ctx, f"{at}[{k}]")
            if bool(self.cond.now(value, ctx)) == self.until:
                return value
        raise self._limit_error(ctx)

    def _limit_error(self, ctx: Context) -> LoopLimitError:
        kind = "do_until" if self.until else "do_while"
        return LoopLimitError(
            f"{kind} over {self.block.source} in step {ctx.step_id!r} did not stop after "
            f"{self.limit} iterations; check its condition ({self.cond.name}), or raise the "
            f"limit with {kind}(cond, block, max_iterations=N)")


class Sequencer(Block):
    """A block that runs steps in order, each step's output feeding the next.

    Every method adds a step and returns the sequencer, so calls chain. Declared state and
    resources of the added blocks are checked for conflicts as they are added. With ``state=``
    the sequencer has instance state: each execution starts a fresh record from the model's
    defaults, reached by blocks inside it as ``ctx.sequencer``; blocks declaring
    ``sequencer_state=`` add their fields to it.
    """

    kind = "sequencer"

    def __init__(self, name: str, *, state: type[BaseModel] | None = None,
                 **options: Any) -> None:
        super().__init__(name, **options)
        self._steps: list[_Step] = []
        self.instance_state = state
        self._instance = Declarations() if state is not None else None
        if self._instance is not None:
            self._instance.add_state("sequencer", state, self.source)
        self._instance_model: Any = _KEEP  # built lazily, reset when a step is added
        self._direct: list[tuple[Callable, str | None]] | None = None  # steps' ``direct``
        self._sealed_by: str | None = None  # set by define_flow: the flow's models are built

    # -- construction --------------------------------------------------------------------
    def _seal(self, flow_kind: str) -> None:
        """Refuse further steps: ``flow_kind``'s merged models were built from these."""
        self._sealed_by = self._sealed_by or flow_kind

    def _add(self, step: _Step) -> Sequencer:
        if self._sealed_by is not None:
            raise RuntimeError(
                f"{self.source} is part of flow {self._sealed_by!r} already, whose merged state "
                f"was built from its steps; build the sequencer completely before "
                f"define_flow (re-run the cell that builds it, then define the flow again)")
        for block in step.blocks():
            self._absorb(block)
        step.bind(len(self._steps))
        self._steps.append(step)
        self._instance_model = _KEEP
        _SHAPE[0] += 1
        return self

    def _absorb(self, child: Block) -> None:
        instance, state = self._instance, self.instance_state  # both set, or neither
        if instance is None or state is None:
            return super()._absorb(child)
        if not isinstance(child, Block):
            super()._absorb(child)  # raises the helpful TypeError
        if any(b is self for b in child.walk()):
            raise ValueError(f"{self.source} cannot contain itself")
        kept = self.declarations.absorb_without_sequencer(child.declarations)
        instance.absorb(kept)
        instance.check_defaults("sequencer", settled=state.model_fields)

    def then(self, first: Any, block: Block | None = None) -> Sequencer:
        """Run ``block`` on the current value: ``then(block)``, or ``then(connector, block)``
        where ``connector(value, ctx)`` first turns the value into the block's input."""
        if block is None:
            return self._add(_Then(self._block(first, "then"), None))
        return self._add(_Then(self._block(block, "then"), _Fn(first, "then's connector")))

    def then_if(self, cond: Callable, block: Block) -> Sequencer:
        """Run ``block`` only when ``cond(value, ctx)`` is true; else pass the value on."""
        return self._add(_If(_Fn(cond, "then_if's condition"), self._block(block, "then_if"),
                             keep_value=False))

    def map(self, fn: Callable) -> Sequencer:
        """Replace the value with ``fn(value, ctx)`` (no block, no declarations)."""
        return self._add(_Map(_Fn(fn, "map's function")))

    def tap(self, block: Block) -> Sequencer:
        """Run ``block`` for its effects; the value passes on unchanged."""
        return self._add(_If(None, self._block(block, "tap"), keep_value=True))

    def tap_if(self, cond: Callable, block: Block) -> Sequencer:
        """``tap`` only when ``cond(value, ctx)`` is true."""
        return self._add(_If(_Fn(cond, "tap_if's condition"), self._block(block, "tap_if"),
                             keep_value=True))

    def parallel(self, blocks: Mapping[str, Block],
                 max_concurrency: int | None = None) -> Sequencer:
        """Run every block on the same value concurrently; the value becomes
        ``{name: output}`` (in the given order). At most ``max_concurrency`` run at once."""
        if not isinstance(blocks, Mapping) or not blocks:
            raise TypeError(f"{self.source}: parallel takes a non-empty dict "
                            f"{{name: block}}")
        for key, block in blocks.items():
            if not isinstance(key, str):
                raise TypeError(f"{self.source}: parallel branch names must be strings, "
                                f"not {key!r}")
            self._block(block, f"parallel branch {key!r}")
        limit = _check_limit(max_concurrency, f"{self.source}.parallel")
        return self._add(_Parallel(blocks, limit))

    def for_each(self, block: Block, max_concurrency: int | None = None) -> Sequencer:
        """Run ``block`` on every item of the current list; the value becomes the list of
        outputs, in item order. At most ``max_concurrency`` items run at once."""
        limit = _check_limit(max_concurrency, f"{self.source}.for_each")
        return self._add(_ForEach(self._block(block, "for_each"), limit))

    def branch(self, cases: Sequence[tuple[Any, Block]]) -> Sequencer:
        """Run the block of the first case whose ``cond(value, ctx)`` is true.

        A case whose condition is ``True`` or ``None`` always matches (an "else"). When no case
        matches, the value passes on unchanged.
        """
        prepared: list[tuple[_Fn | None, Block]] = []
        for case in self._pairs(cases, "branch"):
            cond, block = case
            fn = None if cond is True or cond is None else _Fn(cond, "branch condition")
            prepared.append((fn, self._block(block, "branch")))
        return self._add(_Branch(prepared))

    def rescue(self, cases: Sequence[tuple[Any, Block]]) -> Sequencer:
        """Catch errors of the steps before this one, like ``except``: ``[(ErrorClass, block)]``.

        An exception raised by an earlier step (or by an earlier rescue's block) skips the steps
        up to the first ``rescue`` listing a matching class (``isinstance``; a tuple of classes
        works too). That rescue's block runs with the exception as its input, its output becomes
        the value, and the steps after the rescue go on. Unmatched errors go on to later rescues,
        then out of the sequencer. State writes committed before the error stay.
        """
        prepared = []
        for classes, block in self._pairs(cases, "rescue"):
            members = classes if isinstance(classes, tuple) else (classes,)
            if not members or not all(isinstance(c, type) and issubclass(c, Exception)
                                      for c in members):
                raise TypeError(f"{self.source}: rescue needs exception classes, got "
                                f"{classes!r}")
            prepared.append((classes, self._block(block, "rescue")))
        return self._add(_Rescue(prepared))

    def do_while(self, cond: Callable, block: Block, *,
                 max_iterations: int = DEFAULT_MAX_ITERATIONS) -> Sequencer:
        """Run ``block`` (at least once) again and again while ``cond(value, ctx)`` is true.

        Raises :class:`LoopLimitError` after ``max_iterations`` runs (default 1000).
        """
        return self._add(_Loop(_Fn(cond, "do_while's condition"),
                               self._block(block, "do_while"), False,
                               _check_iterations(max_iterations)))

    def do_until(self, cond: Callable, block: Block, *,
                 max_iterations: int = DEFAULT_MAX_ITERATIONS) -> Sequencer:
        """Run ``block`` (at least once) again and again until ``cond(value, ctx)`` is true.

        Raises :class:`LoopLimitError` after ``max_iterations`` runs (default 1000).
        """
        return self._add(_Loop(_Fn(cond, "do_until's condition"),
                               self._block(block, "do_until"), True,
                               _check_iterations(max_iterations)))

    def _block(self, block: Any, what: str) -> Block:
        if not isinstance(block, Block):
            raise TypeError(f"{self.source}.{what}: expected a block (fs.handler, fs.router or "
                            f"fs.sequencer), got {type(block).__name__}"
                            + ("; wrap the function with fs.handler(fn)"
                               if callable(block) else ""))
        return block

    def _pairs(self, cases: Any, what: str) -> list[tuple[Any, Any]]:
        if isinstance(cases, Mapping):
            cases = list(cases.items())
        pairs = list(cases) if isinstance(cases, (list, tuple)) else None
        if not pairs or not all(isinstance(p, tuple) and len(p) == 2 for p in pairs):
            raise TypeError(f"{self.source}.{what} takes a non-empty list of "
                            f"(condition_or_class, block) pairs")
        return pairs

    # -- introspection -------------------------------------------------------------------------
    @property
    def steps(self) -> list[str]:
        """One label per step, for reading."""
        return [s.label for s in self._steps]

    def children(self) -> list[Block]:
        return [b for step in self._steps for b in step.blocks()]

    @property
    def instance_model(self) -> type[BaseModel] | None:
        """The merged model of this sequencer's instance state (``None`` without ``state=``)."""
        if self._instance is None:
            return None
        if self._instance_model is _KEEP:
            self._instance_model = merge_state_model(
                "sequencer", self._instance, base=self.instance_state, owner=self.source,
                name=f"{_camel(self.name)}SequencerState")
        return self._instance_model

    def describe(self, indent: int = 0) -> str:
        head = super().describe(indent)
        if self.instance_state is not None:
            head += f" (state {self.instance_state.__name__})"
        return "\n".join([head] + [s.describe(indent + 2) for s in self._steps])

    # -- running ---------------------------------------------------------------------------
    async def _execute(self, value: Any, ctx: Context) -> Any:
        if self._instance is not None:
            span = ctx._span  # this sequencer's own span: its path names the instance stably
            instance = SequencerState(ctx.store, ctx.run_id, self.name,
                                      span.path if span is not None
                                      else ctx._services.next_instance(), self.instance_model)
            ctx = ctx._derive(sequencer=instance)
        steps = self._steps
        pending: Exception | None = None  # an error waiting for a matching rescue
        for step in steps:
            if isinstance(step, _Rescue):
                found = step.match(pending) if pending is not None else None
                if found is None:
                    continue
                caught, pending = pending, None
                try:
                    value = await found[0].run(caught, ctx, found[1])
                except Exception as exc:  # noqa: BLE001 - may be rescued further on
                    pending = exc
                continue
            if pending is not None:
                continue
            try:
                if type(step) is _Then and step.connector is None:  # one coroutine less
                    value = await step.block.run(value, ctx, step.at)
                else:
                    value = await step.run(value, ctx)
            except Exception as exc:  # noqa: BLE001 - may be rescued further on
                pending = exc
        if pending is not None:
            raise pending
        return value

    def _can_sync(self) -> bool:
        return all(step.sync() for step in self._steps) \
            and type(self)._execute is Sequencer._execute

    def _execute_sync(self, value: Any, ctx: Context) -> Any:
        if self._instance is not None:
            span = ctx._span
            instance = SequencerState(ctx.store, ctx.run_id, self.name,
                                      span.path if span is not None
                                      else ctx._services.next_instance(), self.instance_model)
            ctx = ctx._derive(sequencer=instance)
        pending: Exception | None = None  # an error waiting for a matching rescue
        direct = self._direct
        if direct is None or len(direct) != len(self._steps):
            direct = self._direct = [step.direct for step in self._steps]
        for k, (fn, at) in enumerate(direct):
            if pending is not None:
                step = self._steps[k]
                if isinstance(step, _Rescue):
                    found = step.match(pending)
                    if found is not None:
                        caught, pending = pending, None
                        try:
                            value = found[0]._run_sync(caught, ctx, found[1])
                        except Exception as exc:  # noqa: BLE001 - may be rescued further on
                            pending = exc
                continue
            try:
                value = fn(value, ctx, at)
            except Exception as exc:  # noqa: BLE001 - may be rescued further on
                pending = exc
        if pending is not None:
            raise pending
        return value


def _check_iterations(limit: Any) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ValueError(f"max_iterations must be a positive int, not {limit!r}")
    return limit


def _camel(text: str) -> str:
    parts = [p for p in "".join(c if c.isalnum() else " " for c in text).split() if p]
    return "".join(p[:1].upper() + p[1:] for p in parts) or "Block"


def sequencer(name: str, *, input: type[BaseModel] | None = None,
              output: type[BaseModel] | None = None, state: type[BaseModel] | None = None,
              request_state: type[BaseModel] | None = None,
              session_state: type[BaseModel] | None = None,
              user_state: type[BaseModel] | None = None,
              project_state: type[BaseModel] | None = None,
              sequencer_state: type[BaseModel] | None = None,
              session_resources: _Resources = None, user_resources: _Resources = None,
              project_resources: _Resources = None,
              description: str | None = None) -> Sequencer:
    """Start a sequencer: ``fs.sequencer("chat-pipeline", input=ChatInput).then(...)...``.

    ``state=`` gives it instance state (``ctx.sequencer`` inside it). ``sequencer_state=``, like
    on any block, declares fields of the *enclosing* stateful sequencer's instance state.
    """
    return Sequencer(name, input=input, output=output, state=state,
                     request_state=request_state, session_state=session_state,
                     user_state=user_state, project_state=project_state,
                     sequencer_state=sequencer_state, session_resources=session_resources,
                     user_resources=user_resources, project_resources=project_resources,
                     description=description)
