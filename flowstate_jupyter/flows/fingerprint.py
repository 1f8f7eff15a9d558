"""A block's fingerprint: a short digest of its code and declarations, to tell "unchanged".

A replay (``flows/replay.py``) may reuse a step's recorded output only when the block at that
path is the same as when the original run ran it. Each span of a trace therefore records the
fingerprint of its block (``span.code``), and a replay compares it with the fingerprint of the
block at the same path now.

What goes in, for a block and everything inside it (a composite block's fingerprint covers its
whole subtree, so editing a route changes its router's and every enclosing sequencer's):

* its kind, name, ``input`` / ``output`` models and declared state and resources (a model by
  its name and fields: annotations, defaults, constraints);
* the code of its functions — a handler's function, a router's ``route``, a sequencer's
  conditions, connectors and ``map`` functions — as compiled (bytecode, constants, names), with
  their default arguments and the values their closures hold;
* what those functions reach by global name, to :data:`DEPTH` levels: other functions (their
  code, in turn), blocks (their fingerprints), pydantic models (their fields) and constants
  (numbers, strings, tuples of them).

What does not go in: attributes reached through an object or module (``client.model``,
``json.dumps``), the contents of files, databases and other services, and other objects — lists,
dicts and sets among them, whose contents change as code runs (counters, caches) — which count by
type only. A replay that must not rely on this runs every step
(``flow.replay(..., reuse=False)``).

Computing a fingerprint walks that code, so each block keeps its own for the process's current
:func:`generation`; the notebook extension starts a new generation before every cell it runs
(code may change there), and :func:`fingerprint` with ``fresh=True`` (what a replay asks for)
always walks again. Nothing here imports the block classes: blocks are known by what they have.
"""

from __future__ import annotations

import functools
import hashlib
import types
import weakref
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

__all__ = ["DEPTH", "KEPT_AS", "fingerprint", "generation", "new_generation"]

#: Levels of functions followed through global names and closures.
DEPTH = 3
#: Items of a tuple constant looked at (a larger one counts by its type and length).
_ITEMS = 64

_SIMPLE = (type(None), bool, int, float, complex, str, bytes)
#: The attribute a block keeps its fingerprint in: ``(generation, digest)`` (only blocks have
#: it: a trace's encoder reads it directly).
KEPT_AS = _KEPT = "_fingerprint"
_GENERATION = [0]


def generation() -> int:
    """The current generation: fingerprints kept by blocks are valid within one."""
    return _GENERATION[0]


def new_generation() -> None:
    """Code may have changed (a notebook cell ran): blocks compute their fingerprints again."""
    _GENERATION[0] += 1


def fingerprint(block: Any, *, fresh: bool = False) -> str | None:
    """The fingerprint of ``block`` (16 hex digits), or ``None`` for something that is not a
    block (a ``map`` step's span)."""
    if getattr(block, "kind", None) not in ("handler", "router", "sequencer"):
        return None
    now = _GENERATION[0]
    if not fresh:
        kept = getattr(block, _KEPT, None)
        if kept is not None and kept[0] == now:
            return kept[1]
    return _Walk(now, fresh).block(block)


def _remember(block: Any, now: int, digest: str) -> None:
    try:
        setattr(block, _KEPT, (now, digest))
    except AttributeError:  # a block with slots: computed each time
        pass


class _Walk:
    """One fingerprint computation: a digest per object, each object walked once."""

    def __init__(self, now: int, fresh: bool) -> None:
        self.now, self.fresh = now, fresh
        self.done: dict[tuple[int, int], str] = {}
        self.active: set[tuple[int, int]] = set()
        self.keep: list[Any] = []  # objects whose ids are in ``done`` stay alive meanwhile

    def _memo(self, obj: Any, make: Callable[[], list[Any]], depth: int = 0) -> str:
        """``obj``'s digest, walked once per depth (so the result does not depend on the order
        things are reached in)."""
        key = (id(obj), depth)
        found = self.done.get(key)
        if found is not None:
            return found
        if key in self.active:  # a cycle (a block that runs its own parent): name it only
            return f"cycle:{type(obj).__qualname__}"
        self.active.add(key)
        try:
            parts = make()
        finally:
            self.active.discard(key)
        digest = _digest(parts)
        self.done[key] = digest
        self.keep.append(obj)
        return digest

    # -- blocks ---------------------------------------------------------------------------------
    def block(self, block: Any) -> str:
        """A block's digest (kept for the generation: walking a sequencer keeps its blocks')."""
        if not self.fresh:
            kept = getattr(block, _KEPT, None)
            if kept is not None and kept[0] == self.now:
                return kept[1]
        cycle = (id(block), 0) in self.active
        digest = self._memo(block, lambda: self._block_parts(block))
        if not cycle:
            _remember(block, self.now, digest)
        return digest

    def _block_parts(self, block: Any) -> list[Any]:
        kind = block.kind
        parts: list[Any] = [kind, type(block).__qualname__, block.name,
                            self.model(block.input), self.model(block.output),
                            [(s, self.model(m)) for s, m in sorted(block.state.items())],
                            [(s, sorted((n, self.resource(d)) for n, d in defs.items()))
                             for s, defs in sorted(block.resources.items())]]
        if kind == "handler":
            parts.append(self.function(block.fn, DEPTH))
        elif kind == "router":
            parts.append(self.function(block._route.fn, DEPTH))
            parts.append([self.block(b) for b in block.routes])
        else:
            parts.append(self.model(getattr(block, "instance_state", None)))
            parts.append([self.step(step) for step in block._steps])
        return parts

    def step(self, step: Any) -> list[Any]:
        """A sequencer step by what it holds: its functions, blocks, names and limits."""
        parts: list[Any] = [type(step).__qualname__, getattr(step, "kind", None)]
        for name, value in sorted(vars(step).items()):
            parts.append((name, self.member(value)))
        return parts

    def member(self, value: Any) -> Any:
        if hasattr(value, "fn") and hasattr(value, "arity"):  # a wrapped step function
            return self.function(value.fn, DEPTH)
        if _is_block(value):
            return self.block(value)
        if isinstance(value, (list, tuple)):
            return [self.member(v) for v in value]
        if isinstance(value, dict):
            return [(k, self.member(v)) for k, v in value.items()]
        return self.value(value, 0)

    # -- models and resources -------------------------------------------------------------------
    def model(self, model: Any) -> Any:
        if model is None:
            return None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return self.value(model, 0)
        return _model_digest(model)

    def resource(self, definition: Any) -> Any:
        parts: list[Any] = [type(definition).__qualname__]
        for name, value in sorted(vars(definition).items()):
            if isinstance(value, type) and issubclass(value, BaseModel):
                parts.append((name, self.model(value)))
            elif callable(value):
                parts.append((name, self.function(value, 1)))
            else:
                parts.append((name, self.value(value, 0)))
        return parts

    # -- code -----------------------------------------------------------------------------------
    def function(self, fn: Any, depth: int) -> Any:
        """A callable by its code, defaults, closure and what it reaches by global name."""
        if isinstance(fn, functools.partial):
            return ["partial", self.function(fn.func, depth),
                    [self.value(a, depth) for a in fn.args],
                    sorted((k, self.value(v, depth)) for k, v in fn.keywords.items())]
        if isinstance(fn, types.MethodType):
            return ["method", type(fn.__self__).__qualname__, self.function(fn.__func__, depth)]
        code = getattr(fn, "__code__", None)
        if not isinstance(code, types.CodeType):
            call = getattr(type(fn), "__call__", None)  # noqa: B004 - its code, if any
            if call is not None and getattr(call, "__code__", None) is not None:
                return ["callable", type(fn).__qualname__, self.function(call, depth)]
            return ["opaque", _qualname(fn)]
        return self._memo(fn, lambda: self._function_parts(fn, code, depth), depth)

    def _function_parts(self, fn: Any, code: types.CodeType, depth: int) -> list[Any]:
        parts: list[Any] = [_code_digest(code),
                            self.value(getattr(fn, "__defaults__", None), depth),
                            self.value(getattr(fn, "__kwdefaults__", None), depth)]
        for cell in getattr(fn, "__closure__", None) or ():
            try:
                parts.append(self.value(cell.cell_contents, depth - 1))
            except ValueError:  # an empty cell
                parts.append("<empty cell>")
        scope = getattr(fn, "__globals__", None) or {}
        for name in sorted(_global_names(code)):
            if name in scope:
                parts.append((name, self.value(scope[name], depth - 1)))
        return parts

    def value(self, value: Any, depth: int) -> Any:
        """A value reached from code: functions and blocks walked, constants by value."""
        if isinstance(value, _SIMPLE):
            return value if not isinstance(value, (str, bytes)) or len(value) <= 200 else \
                hashlib.blake2b(value if isinstance(value, bytes)
                                else value.encode("utf-8", "backslashreplace"),
                                digest_size=8).hexdigest()
        if _is_block(value):
            return ["block", self.block(value)]
        if isinstance(value, type):
            if issubclass(value, BaseModel):
                return ["model", self.model(value)]
            return ["class", _qualname(value)]
        if isinstance(value, (tuple, frozenset)):
            items = sorted(value, key=repr) if isinstance(value, frozenset) else value
            if len(items) > _ITEMS:
                return [type(value).__name__, len(items)]
            return [type(value).__name__, [self.value(v, depth) for v in items]]
        if isinstance(value, (list, dict, set)):  # mutable: counters and caches change as
            return [type(value).__name__]        # code runs, so only the type counts
        if isinstance(value, types.ModuleType):
            return ["module", value.__name__]
        if callable(value) and (isinstance(value, (types.FunctionType, types.MethodType,
                                                   functools.partial))):
            return self.function(value, depth) if depth > 0 else ["function", _qualname(value)]
        return ["object", _qualname(type(value))]


def _digest(parts: Any) -> str:
    return hashlib.blake2b(repr(parts).encode("utf-8", "backslashreplace"),
                           digest_size=8).hexdigest()


@functools.lru_cache(maxsize=4096)
def _code_digest(code: types.CodeType) -> str:
    """Compiled code by what it does: bytecode, constants (nested code too), names. Code
    objects never change and compare by content, so their digests are kept."""
    consts = [_code_digest(c) if isinstance(c, types.CodeType) else _constant(c)
              for c in code.co_consts]
    return _digest([code.co_code.hex(), code.co_names, code.co_varnames, code.co_argcount,
                    code.co_kwonlyargcount, code.co_flags, consts])


def _constant(value: Any) -> Any:
    if isinstance(value, (str, bytes)) and len(value) > 200:
        return hashlib.blake2b(value if isinstance(value, bytes)
                               else value.encode("utf-8", "backslashreplace"),
                               digest_size=8).hexdigest()
    if isinstance(value, (tuple, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, frozenset) else value
        return [type(value).__name__, [_constant(v) for v in items]]
    return repr(value)


_MODELS: weakref.WeakKeyDictionary[type, str] = weakref.WeakKeyDictionary()


def _model_digest(model: type[BaseModel]) -> str:
    """A pydantic model by its name, fields (annotation, default, constraints), configuration
    and validator code. A model class does not change once made, so its digest is kept."""
    found = _MODELS.get(model)
    if found is None:
        found = _MODELS[model] = _digest([
            model.__module__, model.__qualname__,
            sorted((name, repr(info)) for name, info in model.model_fields.items()),
            repr(sorted(model.model_config.items(), key=lambda kv: kv[0])),
            [_code_digest(d.func.__code__) for d in _validators(model)
             if isinstance(getattr(d.func, "__code__", None), types.CodeType)]])
    return found


def _is_block(value: Any) -> bool:
    return getattr(value, "kind", None) in ("handler", "router", "sequencer") and \
        hasattr(value, "declarations")


def _validators(model: type[BaseModel]) -> list[Any]:
    """A model's own validator and serializer functions (decorated methods)."""
    decorators = getattr(model, "__pydantic_decorators__", None)
    if decorators is None:
        return []
    found: list[Any] = []
    for group in ("validators", "field_validators", "root_validators", "field_serializers",
                  "model_serializers", "model_validators"):
        found.extend(getattr(decorators, group, {}).values())
    return found


def _global_names(code: types.CodeType) -> set[str]:
    """Names ``code`` (and the functions defined in it) may load as globals: its ``co_names``,
    which hold attribute names too (looked up in the globals, those are simply not found)."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"
