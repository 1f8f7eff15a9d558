"""State bubbling: merge the state and resources blocks declare into one model per scope.

See docs/concepts.md, 'Blocks, flows and bubbling'. Every block may declare the fields it touches
per scope (``session_state=ModeState``) and the resources it uses
(``session_resources={"search_cache": ...}``). Sequencers, routers and flows collect what their
blocks declare; per scope the flow's own model and the blocks' models merge into ONE pydantic model,
built with ``pydantic.create_model``.

Rules, checked when a sequencer or router is built and again when the flow is defined (never at
run time):

* One field name means one type within a flow. The same field declared with different types
  (constraints such as ``Field(ge=0)`` count as part of the type) raises
  :class:`StateSchemaConflictError` naming the scope, the field, both types and both blocks.
* The same field with different defaults is a conflict too, unless the flow's own model (or, for
  sequencer instance state, the sequencer's ``state=``) declares that field: then its default
  settles it.
* Resources collect by name. The same definition twice is fine; two different definitions under
  one name raise :class:`ResourceConflictError`; a flow-level resource overrides a block's.

The merged model *inherits from every contributing model* (the flow's first), so field and model
validators keep working and ``isinstance(ctx.session.state, ModeState)`` holds in every block.
With only one contributing model, that model itself is the merged model; with none, the scope is
free-form (``None``). This module does no I/O.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, create_model

from ..errors import ResourceConflictError, StateSchemaConflictError
from ..handles.resources import CollectionDefinition, ResourceDefinition
from ..model.schema import field_summary, require_defaults

__all__ = ["STATE_SCOPES", "Declarations", "merge_state_model"]

#: Scopes a block can declare state for. "sequencer" is the nearest sequencer's instance state.
STATE_SCOPES = ("request", "session", "user", "project", "sequencer")
#: Scopes a block can declare resources for.
RESOURCE_SCOPES = ("request", "session", "user", "project")

Definition = ResourceDefinition | CollectionDefinition

# Default factories that return an equal value on every call, so their defaults can be compared.
_PURE_FACTORIES = (list, dict, set, frozenset, tuple, str, int, float, bool)


class _Factory:
    """A default factory that may return something new each call: equal only to itself."""

    def __init__(self, factory: Any) -> None:
        self.factory = factory

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Factory) and other.factory is self.factory

    def __repr__(self) -> str:
        return f"default_factory={getattr(self.factory, '__name__', repr(self.factory))}"


def _default_of(info: Any) -> Any:
    """A comparable stand-in for a field's default (calling pure factories)."""
    factory = info.default_factory
    if factory is None:
        return info.default
    takes_data = getattr(info, "default_factory_takes_data", False)
    pure = factory in _PURE_FACTORIES or (isinstance(factory, type)
                                          and issubclass(factory, BaseModel))
    if pure and not takes_data:
        try:
            return factory()
        except Exception:  # noqa: BLE001 - a broken factory is require_defaults' business
            pass
    return _Factory(factory)


def _same(a: Any, b: Any) -> bool:
    """``a == b`` that never raises, and does not let ``True == 1`` pass."""
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # noqa: BLE001
        return a is b


@dataclass
class _Field:
    """What is known about one field name in one scope: its type and every default seen."""

    annotation: Any
    metadata: list
    type_text: str
    model: type[BaseModel]
    source: str
    defaults: list[tuple[Any, str]] = field(default_factory=list)  # (default, source)


def _type_text(model: type[BaseModel], name: str) -> str:
    """Readable type of ``model.name``, with constraints: ``int [Ge(ge=0)]``."""
    text = field_summary(model)[name]
    metadata = model.model_fields[name].metadata
    if metadata:
        text += f" [{', '.join(repr(m) for m in metadata)}]"
    return text


def _scope_label(scope: str) -> str:
    return "sequencer instance" if scope == "sequencer" else scope


class Declarations:
    """Everything a block and its children declare, per scope, checked as it is collected.

    ``add_state`` / ``add_resources`` record one source's declarations (a source is a label such
    as ``"handler 'mode_switch'"``); ``absorb`` takes over everything another block collected,
    keeping the original sources, so a conflict deep inside a sequencer still names the two
    blocks that disagree. Type conflicts and resource conflicts raise at once; default conflicts
    wait for :meth:`check_defaults`, because the flow's own model may still settle them.
    """

    def __init__(self) -> None:
        self._fields: dict[str, dict[str, _Field]] = {s: {} for s in STATE_SCOPES}
        self._models: dict[str, list[tuple[str, type[BaseModel]]]] = {s: [] for s in STATE_SCOPES}
        self._resources: dict[str, dict[str, tuple[Definition, str]]] = {
            s: {} for s in RESOURCE_SCOPES}

    # -- collecting ------------------------------------------------------------------------
    def add_state(self, scope: str, model: type[BaseModel] | None, source: str) -> None:
        """Record that ``source`` declares ``model`` for ``scope``; raise on a type conflict."""
        if model is None:
            return
        require_defaults(model)
        models = self._models[scope]
        if any(m is model for _, m in models):
            # The same model class again: same types, same defaults; only its source is new.
            return
        fields = self._fields[scope]
        for name, info in model.model_fields.items():
            known = fields.get(name)
            default = _default_of(info)
            if known is None:
                fields[name] = _Field(info.annotation, list(info.metadata),
                                      _type_text(model, name), model, source,
                                      [(default, source)])
                continue
            if not (known.annotation == info.annotation and known.metadata == info.metadata):
                _raise_type_conflict(scope, name, known, _type_text(model, name), model, source)
            if not any(_same(default, d) for d, _ in known.defaults):
                known.defaults.append((default, source))
        models.append((source, model))

    def add_resources(self, scope: str, resources: Mapping[str, Definition] | None,
                      source: str) -> None:
        """Record ``source``'s resources for ``scope``; raise on a conflicting definition."""
        if not resources:
            return
        table = self._resources[scope]
        for name, definition in resources.items():
            if not isinstance(definition, (ResourceDefinition, CollectionDefinition)):
                raise TypeError(f"{source}: {scope} resource {name!r} must come from "
                                f"define_resource or define_resource_collection, not "
                                f"{type(definition).__name__}")
            known = table.get(name)
            if known is None:
                table[name] = (definition, source)
            elif not (known[0] is definition or known[0] == definition):
                raise ResourceConflictError(
                    f"{scope} resource {name!r} is defined differently by {known[1]} and by "
                    f"{source}; reuse one definition object for both, or give each block its "
                    f"own namespaced name (e.g. '{_slug(known[1])}_{name}' and "
                    f"'{_slug(source)}_{name}')")

    def absorb(self, other: Declarations) -> None:
        """Add everything ``other`` collected, keeping its sources."""
        for scope in STATE_SCOPES:
            for source, model in other._models[scope]:
                self.add_state(scope, model, source)
        for scope in RESOURCE_SCOPES:
            for name, (definition, source) in other._resources[scope].items():
                self.add_resources(scope, {name: definition}, source)

    def absorb_without_sequencer(self, other: Declarations) -> Declarations:
        """Like :meth:`absorb` but leave out ``other``'s sequencer-instance state.

        Returns that left-out part (as its own ``Declarations``), for a sequencer that declares
        ``state=`` and so keeps its children's ``sequencer_state`` to itself.
        """
        kept = Declarations()
        for scope in STATE_SCOPES:
            for source, model in other._models[scope]:
                (kept if scope == "sequencer" else self).add_state(scope, model, source)
        for scope in RESOURCE_SCOPES:
            for name, (definition, source) in other._resources[scope].items():
                self.add_resources(scope, {name: definition}, source)
        return kept

    # -- reading -----------------------------------------------------------------------------
    def models(self, scope: str) -> list[tuple[str, type[BaseModel]]]:
        """``(source, model)`` pairs declared for ``scope``, first declaration first."""
        return list(self._models[scope])

    def resources(self, scope: str) -> dict[str, tuple[Definition, str]]:
        """``name -> (definition, source)`` declared for ``scope``."""
        return dict(self._resources[scope])

    def has_state(self, scope: str) -> bool:
        return bool(self._models[scope])

    def check_defaults(self, scope: str, settled: Iterable[str] = ()) -> None:
        """Raise if a field not in ``settled`` was declared with different defaults."""
        settled = set(settled)
        for name, known in self._fields[scope].items():
            if name in settled or len(known.defaults) < 2:
                continue
            (d1, s1), (d2, s2) = known.defaults[:2]
            label = _scope_label(scope)
            settle = ("the sequencer's own state= model" if scope == "sequencer" else
                      f"the flow's own model (define_flow(..., {scope}=fs.scope(state=...)))")
            raise StateSchemaConflictError(
                f"{label} state field {name!r} ({known.type_text}) has default {_show(d1)} in "
                f"{s1} but {_show(d2)} in {s2}; give both the same default, or declare "
                f"{name!r} in {settle} to settle it")


def _show(default: Any) -> str:
    return repr(default) if not isinstance(default, BaseModel) else \
        f"{type(default).__name__}({default.model_dump()!r})"


def _slug(source: str) -> str:
    """``"handler 'web-search'"`` -> ``web_search``, for naming hints."""
    name = source.split(" ", 1)[-1].strip("'\"")
    return re.sub(r"\W+", "_", name).strip("_") or "block"


def _raise_type_conflict(scope: str, name: str, known: _Field, other_text: str,
                         other_model: type[BaseModel], source: str) -> None:
    first, second = known.type_text, other_text
    note = ""
    if first == second:  # e.g. a class redefined in a later notebook cell
        first = f"{first} (from {known.model.__module__}.{known.model.__qualname__})"
        second = f"{second} (from {other_model.__module__}.{other_model.__qualname__}, " \
                 f"a different class with the same name: redefined in a later cell?)"
        note = " Use the same class in both blocks."
    label = _scope_label(scope)
    raise StateSchemaConflictError(
        f"{label} state field {name!r} is declared as {first} by {known.source} and as "
        f"{second} by {source}; one field name has one type within a flow.{note} Rename one "
        f"of them, or keep block-private data in a namespaced resource "
        f"({scope if scope != 'sequencer' else 'session'}_resources={{'{_slug(source)}_{name}': "
        f"fs.define_resource(...)}})")


def merge_state_model(scope: str, declarations: Declarations, *,
                      base: type[BaseModel] | None = None, owner: str = "flow",
                      name: str | None = None) -> type[BaseModel] | None:
    """The merged model of ``scope``: ``base`` (the flow's own model) plus every declaration.

    Checks types against ``base`` and defaults between blocks (``base`` settles the fields it
    declares), then builds the model with ``create_model`` so that it inherits from each
    contributing model, ``base`` first (its field definitions win). ``owner`` labels ``base`` in
    messages (``"flow 'assistant'"``); ``name`` is the new class's name.
    """
    table = Declarations()
    table.add_state(scope, base, owner)
    for source, model in declarations.models(scope):
        table.add_state(scope, model, source)
    table.check_defaults(scope, settled=base.model_fields if base is not None else ())
    models = [m for _, m in table.models(scope)]
    if not models:
        return None
    # Keep the most derived classes only: (A, B) with B(A) would not make a valid MRO.
    bases = [m for m in models if not any(o is not m and issubclass(o, m) for o in models)]
    if len(bases) == 1:
        return bases[0]
    class_name = name or f"{scope.capitalize()}State"
    # Bases go in reverse, so that pydantic lists the fields in declaration order (base's
    # first) and takes the model config of ``base`` last (it wins). A field declared by several
    # models is re-declared with its first declaration, so ``base``'s default settles it.
    first: dict[str, Any] = {}
    repeated: set[str] = set()
    for model in bases:
        for fname, info in model.model_fields.items():
            if fname in first:
                repeated.add(fname)
            else:
                first[fname] = info
    settled: dict[str, Any] = {f: (first[f].annotation, copy.copy(first[f])) for f in repeated}
    try:
        merged = create_model(class_name, __base__=tuple(reversed(bases)),
                              __module__=__name__, **settled)
    except TypeError:
        # No consistent MRO (unusual class hierarchies): fall back to the fields alone.
        # Field validators of the contributing models are then not carried over.
        fields: dict[str, Any] = {}
        for model in reversed(bases):
            for fname, info in model.model_fields.items():
                fields[fname] = (info.annotation, info)
        merged = create_model(class_name, __module__=__name__, **fields)
    merged.__doc__ = (f"Merged {_scope_label(scope)} state of {owner}: "
                      + ", ".join(m.__name__ for m in bases) + ".")
    return merged


def merge_resources(scope: str, declarations: Declarations,
                    base: Mapping[str, Definition] | None = None) -> dict[str, Definition]:
    """Resources of ``scope``: the blocks' (already conflict-checked) plus ``base``, which wins."""
    merged = {name: definition for name, (definition, _) in declarations.resources(scope).items()}
    merged.update(base or {})
    return merged
