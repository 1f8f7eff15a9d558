"""Sequencers: a block that chains steps, and the steps it chains (docs/concepts.md,
'Blocks, flows and bubbling').

:func:`sequencer` builds one; its methods add steps: ``then``, ``then_if``, ``map``, ``tap``,
``tap_if``, ``parallel``, ``for_each``, ``branch``, ``rescue``, ``do_while``, ``do_until``. Each
step is a small object (``_Then``, ``_If``, ...) that runs either on the run's event loop or, for
a tree of plain functions, directly (``now``). The blocks it chains, and what every block does
when it runs, live in ``blocks.py``.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from ..errors import LoopLimitError
from ..model import ops
from .blocks import (
    _CURRENT,
    _KEEP,
    _PLAIN,
    _SHAPE,
    Block,
    Handler,
    _awaitable,
    _clock,
    _Fn,
    _new,
    _refs,
    _Resources,
    _segments,
)
from .bridge import drive
from .bubbling import Declarations, merge_state_model
from .context import Context, SequencerState
from .trace import MapStep, RunLog, Suspended, resolve_type

__all__ = ["DEFAULT_MAX_ITERATIONS", "Sequencer", "SequencerState", "sequencer"]

#: Default iteration limit of ``do_while`` / ``do_until``.
DEFAULT_MAX_ITERATIONS = 1000

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


class _OneBlock(_Step):
    """A step around one block (``then``, ``then_if``, ``tap``): its path is ``at``."""

    block: Block
    at: str

    def bind(self, index: int) -> None:
        super().bind(index)
        self.at = self.prefix + self.block.name

    def blocks(self) -> list[Block]:
        return [self.block]


class _Then(_OneBlock):
    kind = "then"

    def __init__(self, block: Block, connector: _Fn | None) -> None:
        self.block, self.connector = block, connector
        self.label = "then" if connector is None else f"then (via {connector.name})"

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


class _If(_OneBlock):
    """``then_if`` / ``tap_if`` (and ``tap`` with no condition)."""

    def __init__(self, cond: _Fn | None, block: Block, keep_value: bool) -> None:
        self.cond, self.block, self.keep_value = cond, block, keep_value
        name = "tap" if keep_value else "then"
        self.label = name if cond is None else f"{name}_if {cond.name}"
        self.kind = name if cond is None else f"{name}_if"

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
            log.fail(span, "error", exc, clock())
            raise
        log.outputs[span] = out
        log.ends[span] = clock()  # (ended ok)
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
            log.fail(span, "error", exc, clock())
            raise
        log.outputs[span] = out
        log.ends[span] = clock()  # (ended ok)
        return out


def _map_span(log: RunLog, at: str, fn: _Fn, value: Any,
              ctx: Context) -> tuple[Any, int | None]:
    """A ``map`` step as a span of its own (writes in it count as the sequencer's): its logged
    output and ``None`` when an earlier attempt completed it, else ``(None, its new span)``."""
    path = log.path(ctx._span, at, True)
    entry = log.done.get(path) if log.done else None
    if entry is not None:
        data = ops.copy_json(entry[0], where=f"map {fn.name} logged output")
        cls = resolve_type(entry[1])
        return (cls.model_validate(data) if cls is not None and issubclass(cls, BaseModel)
                else data), None
    return None, log.open(path, MapStep(fn.name), ctx._span, value, time.perf_counter())


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
        self._handlers: list[Handler | None] = []  # steps' plain handlers (_steps_traced)
        self._plan: tuple[str, list] = ("", [])  # (parent path, what _steps_traced runs)
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
        return self._loop("do_while", cond, block, False, max_iterations)

    def do_until(self, cond: Callable, block: Block, *,
                 max_iterations: int = DEFAULT_MAX_ITERATIONS) -> Sequencer:
        """Run ``block`` (at least once) again and again until ``cond(value, ctx)`` is true.

        Raises :class:`LoopLimitError` after ``max_iterations`` runs (default 1000).
        """
        return self._loop("do_until", cond, block, True, max_iterations)

    def _loop(self, what: str, cond: Callable, block: Block, until: bool,
              max_iterations: int) -> Sequencer:
        return self._add(_Loop(_Fn(cond, f"{what}'s condition"), self._block(block, what), until,
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
            path = ctx.span_path  # this sequencer's own span's: it names the instance stably
            instance = SequencerState(ctx.store, ctx.run_id, self.name,
                                      path if path is not None
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
            path = ctx.span_path
            instance = SequencerState(ctx.store, ctx.run_id, self.name,
                                      path if path is not None
                                      else ctx._services.next_instance(), self.instance_model)
            ctx = ctx._derive(sequencer=instance)
        direct = self._direct
        if direct is None or len(direct) != len(self._steps):
            self._handlers = [_plain_handler(step) for step in self._steps]  # first: a thread
            direct = self._direct = [step.direct for step in self._steps]  # seeing this sees it
        if ctx._frame.log is not None and ctx._span is not None:
            return self._steps_traced(value, ctx, direct)
        pending: Exception | None = None  # an error waiting for a matching rescue
        for k, (fn, at) in enumerate(direct):
            if pending is not None:
                pending, value = self._rescue(k, pending, value, ctx)
                continue
            try:
                value = fn(value, ctx, at)
            except Exception as exc:  # noqa: BLE001 - may be rescued further on
                pending = exc
        if pending is not None:
            raise pending
        return value

    def _rescue(self, k: int, pending: Exception, value: Any,
                ctx: Context) -> tuple[Exception | None, Any]:
        """Step ``k`` while an error waits: a matching ``rescue`` runs its block on it."""
        step = self._steps[k]
        if isinstance(step, _Rescue):
            found = step.match(pending)
            if found is not None:
                try:
                    return None, found[0]._run_sync(pending, ctx, found[1])
                except Exception as exc:  # noqa: BLE001 - may be rescued further on
                    return exc, value
        return pending, value

    def _steps_traced(self, value: Any, ctx: Context, direct: list[tuple[Callable, Any]]) -> Any:
        """The steps of a run that keeps spans. A ``then`` of a plain handler (no models, no
        connector: ``_handlers``) runs inline, as ``Handler._run_sync`` would run it (keep the
        two in step): its span opened on the log's columns, its ``ctx`` the one the step before
        used when nothing kept that (``sys.getrefcount``), one clock reading between two such
        steps (the end of one is the start of the next). Other steps run through ``direct``."""
        frame = ctx._frame
        log = frame.log
        assert log is not None and ctx._span is not None
        parent = ctx._span
        above = log.sites[parent][0]
        known = self._plan
        if known[0] != above or len(known[1]) != len(direct):  # (site, call, name) per step
            known = self._plan = (above, [
                None if h is None else ((f"{above}/{at}", h, above),
                                        h._call2 if h._call2 is not None else h._fn.call, h.name)
                for h, (_, at) in zip(self._handlers, direct)])
        plan = known[1]
        done = log.done
        sites = log.sites
        inputs, outputs = log.inputs, log.outputs
        starts, ends = log.starts, log.ends
        sequencer, concurrent = ctx.sequencer, ctx._concurrent
        inner: Context | None = None  # a step context nothing else holds, to use again
        now: float | None = None  # the clock at the end of the step before (None: read it)
        pending: Exception | None = None  # an error waiting for a matching rescue
        for k, step in enumerate(plan):
            if pending is not None:
                pending, value = self._rescue(k, pending, value, ctx)
                now = None
                continue
            if step is None or (done and step[0][0] in done):
                fn, at = direct[k]
                now = None
                try:
                    value = fn(value, ctx, at)
                except Exception as exc:  # noqa: BLE001 - may be rescued further on
                    pending = exc
                continue
            site, call, name = step
            span = len(sites)
            sites.append(site)
            inputs.append(value)
            outputs.append(None)
            starts.append(_clock() if now is None else now)
            ends.append(None)
            if inner is None:
                inner = _new(Context)
                inner._frame = frame
                inner._spare = None
            inner.step_id = name
            inner.sequencer = sequencer
            inner._concurrent = concurrent
            inner._span = span
            token = _CURRENT.set(inner)
            try:
                out = call(value, inner)
                if type(out) not in _PLAIN and _awaitable(out):
                    out = drive(out)
            except Suspended:
                log.fail(span, "suspended", None, _clock())
                raise
            except Exception as exc:  # noqa: BLE001 - may be rescued further on
                log.fail(span, "error", exc, _clock())
                pending, inner, now = exc, None, None
                continue
            except BaseException as exc:
                log.fail(span, "error", exc, _clock())
                raise
            finally:
                _CURRENT.reset(token)
            outputs[span] = out
            ends[span] = now = _clock()  # (ended ok)
            value = out
            if _refs(inner) != 2:  # kept by someone (held by this frame and the call alone
                inner = None  # otherwise): the next step gets a new one
        if pending is not None:
            raise pending
        return value


def _plain_handler(step: _Step) -> Any:
    """The handler a ``then`` step runs when :meth:`Sequencer._steps_traced` may run it inline
    (a plain function, no models, no connector, ``Handler``'s own ``_run_sync``), else ``None``."""
    if type(step) is not _Then or step.connector is not None:
        return None
    block = step.block
    if not isinstance(block, Handler) or not block._plain or block.input is not None \
            or block.output is not None or type(block)._run_sync is not Handler._run_sync:
        return None
    return block


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
