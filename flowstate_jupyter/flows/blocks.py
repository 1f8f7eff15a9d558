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
* :func:`sequencer` (``sequencer.py``) chains steps: ``then``, ``then_if``, ``map``, ``tap``,
  ``tap_if``, ``parallel``, ``for_each``, ``branch``, ``rescue``, ``do_while``, ``do_until``.

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
import inspect
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from ..handles.resources import CollectionDefinition, ResourceDefinition
from ..model import ops, schema
from .bridge import drive
from .bubbling import Declarations
from .context import _CURRENT, Context, current_context
from .trace import RunLog, Suspended, resolve_type

__all__ = [
    "Block",
    "Context",
    "Handler",
    "Router",
    "current_context",
    "handler",
    "router",
]

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
    #: ``(segment, site)`` of this block's last traced run at an explicit segment: the site
    #: ``(path, self, parent path)`` its span names, made once for every run at the same place.
    _last_site: tuple[Any, tuple[str, Any, str | None]] = (None, ("", None, None))

    def _site(self, log: RunLog, parent: int | None,
              at: str | None) -> tuple[str, Any, str | None]:
        """The site ``(path, self, parent path)`` of this block's span under span ``parent``,
        at segment ``at`` of its parent (``None``: named by the log). Most often the site this
        block had last time at the same place (the same run's, or the last run's): kept."""
        if at is None:
            path = log.path(parent, self.name, False)
            return (path, self, None if parent is None else log.sites[parent][0])
        if parent is None:
            return (at, self, None)
        last, site = self._last_site
        above = log.sites[parent][0]
        if last is not at or site[2] != above:
            site = (f"{above}/{at}", self, above)
            self._last_site = (at, site)
        return site

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
        site = self._site(log, parent, _at)
        path = site[0]
        done = log.done
        if done and path in done:  # completed by an earlier attempt of this run (or reusable)
            entry = log.replayed(path, self, input)
            if entry is not None:
                return self._replay(entry)
        clock = time.perf_counter
        sites = log.sites  # log.open(path, self, parent, input, clock()), a call less
        span = len(sites)
        sites.append(site)
        log.inputs.append(input)
        log.outputs.append(None)
        log.starts.append(clock())
        log.ends.append(None)
        inner = ctx._enter(self.name, span)
        token = _CURRENT.set(inner)
        try:
            if self.input is not None:
                input = log.inputs[span] = schema.validate_value(self.input, input,
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
            log.fail(span, "suspended", None, clock())
            raise
        except BaseException as exc:
            log.fail(span, "error", exc, clock())
            raise
        finally:
            _CURRENT.reset(token)
        log.outputs[span] = out
        log.ends[span] = clock()  # (ended ok)
        return out

    # (``_SHAPE`` when it was found, the answer): kept until a sequencer anywhere gains a step
    _sync_known: tuple[int, bool] = (-1, False)
    _quiet_known: tuple[int, bool] = (-1, False)

    def _sync(self) -> bool:
        """Whether this block and every block and function inside it are plain functions, so
        that it can run with no event loop (:meth:`_run_sync`)."""
        known = self._sync_known
        if known[0] != _SHAPE[0]:
            known = self._sync_known = (_SHAPE[0], self._can_sync())
        return known[1]

    def _declares_nothing(self) -> bool:
        """Whether neither this block nor any block inside it declares state (of any scope,
        sequencer instance state included) or resources."""
        known = self._quiet_known
        if known[0] != _SHAPE[0]:
            known = self._quiet_known = (_SHAPE[0], self._quiet())
        return known[1]

    def _quiet(self) -> bool:
        return not any(any(m is not None for m in b.state.values()) or any(b.resources.values())
                       or getattr(b, "instance_state", None) is not None for b in self.walk())

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
        site = self._site(log, parent, _at)
        path = site[0]
        done = log.done
        if done and path in done:  # completed by an earlier attempt of this run (or reusable)
            entry = log.replayed(path, self, input)
            if entry is not None:
                return self._replay(entry)
        clock = time.perf_counter
        sites = log.sites  # log.open(path, self, parent, input, clock()), a call less
        span = len(sites)
        sites.append(site)
        log.inputs.append(input)
        log.outputs.append(None)
        log.starts.append(clock())
        log.ends.append(None)
        inner = ctx._enter(self.name, span)
        token = _CURRENT.set(inner)
        try:
            if self.input is not None:
                input = log.inputs[span] = schema.validate_value(self.input, input,
                                                                 where=f"{self.source} input")
            out = self._execute_sync(input, inner)
            if self.output is not None:
                out = schema.validate_value(self.output, out, where=f"{self.source} output")
        except Suspended:
            log.fail(span, "suspended", None, clock())
            raise
        except BaseException as exc:
            log.fail(span, "error", exc, clock())
            raise
        finally:
            _CURRENT.reset(token)
        log.outputs[span] = out
        log.ends[span] = clock()  # (ended ok)
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
        # run; keep the three in step, and Sequencer._steps_traced, which inlines this again.
        frame = ctx._frame
        log = frame.log
        if log is None or self.input is not None or self.output is not None:
            return Block._run_sync(self, input, ctx, _at)
        parent = ctx._span
        site = self._site(log, parent, _at)
        path = site[0]
        done = log.done
        if done and path in done:  # completed by an earlier attempt of this run (or reusable)
            entry = log.replayed(path, self, input)
            if entry is not None:
                return self._replay(entry)
        # log.open(path, self, parent, input, t0) and ctx._enter(name, span), a call less each
        span = len(log.sites)
        log.sites.append(site)
        log.inputs.append(input)
        log.outputs.append(None)
        log.starts.append(_clock())
        log.ends.append(None)
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
            log.fail(span, "suspended", None, _clock())
            raise
        except BaseException as exc:
            log.fail(span, "error", exc, _clock())
            raise
        finally:
            _CURRENT.reset(token)
        log.outputs[span] = out
        log.ends[span] = _clock()  # (ended ok)
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
