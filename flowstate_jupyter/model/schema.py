"""Pydantic v2 helpers for scope-state and resource schemas (docs/concepts.md, 'Schemas').

A ``model`` argument is a pydantic ``BaseModel`` subclass whose every field has a default, or
``None`` for free-form JSON state (no schema: any JSON dict goes). States travel as plain JSON
dicts (``model_dump(mode="json")``); typed instances appear only as read-only snapshots.

Per-model facts (field names, defaults, the frozen snapshot class) are computed once and cached,
because these helpers run on every read and write. The caches are bounded LRU caches keyed by the
model class, so a notebook that redefines its models again and again does not grow them forever.
"""

from __future__ import annotations

import difflib
import functools
import types
import typing
import warnings
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

import pydantic_core
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from ..base.jsonvalues import dump_json
from ..base.text import short
from ..errors import FlowStateWarning, SchemaError, ValidationError
from .ops import check_json, copy_json, format_path

__all__ = [
    "check_fields",
    "check_input_keys",
    "defaults",
    "encode_json",
    "field_summary",
    "read_state",
    "require_defaults",
    "snapshot",
    "validate_state",
    "validator",
]

_Model = type[BaseModel] | None

# Models already known to give every field a default (weak: a redefined model may go away).
_DEFAULTS_OK: weakref.WeakSet[type] = weakref.WeakSet()

# Default factories whose result is the same every call, so defaults() may cache it.
_PURE_FACTORIES = (list, dict, set, frozenset, tuple, str, int, float, bool)


# ---------------------------------------------------------------------------- type names



def _type_str(ann: Any) -> str:
    """Readable type: ``int``, ``list[str]``, ``Literal['chat', 'agent']``, ``str | None``."""
    if ann is None or ann is type(None):
        return "None"
    if ann is Ellipsis:
        return "..."
    origin = get_origin(ann)
    args = get_args(ann)
    if origin is Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    if origin is typing.Annotated:
        return _type_str(args[0])
    if origin is Union or origin is types.UnionType:
        return " | ".join(_type_str(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", None) or repr(origin).replace("typing.", "")
        return f"{name}[{', '.join(_type_str(a) for a in args)}]" if args else name
    if isinstance(ann, type):
        return ann.__name__
    return repr(ann).replace("typing.", "")


def _example(name: str, ann: Any) -> str:
    """A field declaration with a sensible default, for the "give it a default" hint."""
    origin, args = get_origin(ann), get_args(ann)
    shown = f"{name}: {_type_str(ann)}"
    if origin is Literal and args:
        return f"{shown} = {args[0]!r}"
    if (origin is Union or origin is types.UnionType) and type(None) in args:
        return f"{shown} = None"
    simple = {str: "''", int: "0", float: "0.0", bool: "False"}
    if ann in simple:
        return f"{shown} = {simple[ann]}"
    factory = origin if origin in (list, dict, set) else ann if ann in (list, dict, set) else None
    if factory is not None:
        return f"{shown} = Field(default_factory={factory.__name__})"
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return f"{shown} = Field(default_factory={ann.__name__})"
    return f"{name}: {_type_str(ann)} | None = None"


# ---------------------------------------------------------------------------- schema checks

def require_defaults(model: _Model, *, role: str = "state") -> None:
    """Refuse a schema that is not a pydantic model or has a field without a default.

    State starts from defaults, so every field needs one. ``role`` words the message
    ("state", "resource", ...). Success is remembered per model; ``None`` always passes.
    """
    if model is None:
        return
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise SchemaError(
            f"{model!r} is not a pydantic model; a {role} schema must be a class deriving "
            f"from pydantic.BaseModel (or None for free-form JSON state)")
    if model in _DEFAULTS_OK:
        return
    for name, field in model.model_fields.items():
        if field.is_required():
            raise SchemaError(
                f"{model.__name__}.{name} has no default; every field of a {role} schema "
                f"needs one (state starts from defaults). Give it a default, e.g. "
                f"`{_example(name, field.annotation)}`")
    _DEFAULTS_OK.add(model)


@dataclass(frozen=True)
class _Info:
    """Facts about one model, computed once."""

    fields: tuple[str, ...]
    field_set: frozenset[str]
    extra_allowed: bool
    validate_kwargs: Mapping[str, Any]
    # The hot path of every write: validate a dict, dump the instance to JSON-ready Python.
    validate: Callable[[Any], BaseModel]
    dump: Callable[[BaseModel], dict]
    pure_defaults: bool


def _info(model: type[BaseModel]) -> _Info:
    """Facts about ``model``, cached; a bad schema raises ``SchemaError`` (never cached)."""
    try:
        return _cached_info(model)
    except SchemaError:
        raise
    except TypeError:  # unhashable, so not a model class: let require_defaults say so
        require_defaults(model)
        raise


@functools.lru_cache(maxsize=512)
def _cached_info(model: type[BaseModel]) -> _Info:
    """Check ``model`` (``require_defaults``) and gather what the helpers need about it."""
    require_defaults(model)
    fields = tuple(model.model_fields)
    has_aliases = any(f.alias or f.validation_alias for f in model.model_fields.values())
    # States are stored by field name; with aliases, accept names too.
    kwargs: dict[str, Any] = {"by_alias": True, "by_name": True} if has_aliases else {}
    return _Info(
        fields=fields,
        field_set=frozenset(fields),
        extra_allowed=model.model_config.get("extra") == "allow",
        validate_kwargs=types.MappingProxyType(kwargs),
        validate=functools.partial(model.__pydantic_validator__.validate_python, **kwargs),
        dump=functools.partial(model.__pydantic_serializer__.to_python, mode="json"),
        pure_defaults=_has_pure_defaults(model, set()),
    )


def _has_pure_defaults(model: type[BaseModel], seen: set[type]) -> bool:
    """True when ``model()`` gives the same data every time (no uuid/time default factories)."""
    if model in seen:
        return True
    seen.add(model)
    for field in model.model_fields.values():
        factory = field.default_factory
        if factory is None or factory in _PURE_FACTORIES:
            continue
        if isinstance(factory, type) and issubclass(factory, BaseModel) \
                and _has_pure_defaults(factory, seen):
            continue
        return False
    return True


@functools.lru_cache(maxsize=512)
def _cached_defaults(model: type[BaseModel]) -> dict:
    """``model()`` dumped to JSON; cached only through ``defaults`` for pure models."""
    return _make_defaults(model)


def _make_defaults(model: type[BaseModel]) -> dict:
    """Build ``model()`` and dump it to JSON, turning a failure into a ``SchemaError``."""
    try:
        data = model().model_dump(mode="json")
    except PydanticValidationError as exc:
        raise SchemaError(
            f"{model.__name__}() fails with its own defaults; fix the defaults or validators: "
            f"{exc.errors(include_url=False)[0]['msg']}") from None
    check_json(data, where=f"{model.__name__} defaults")
    return data


def defaults(model: _Model) -> dict:
    """The JSON state a fresh record starts from: ``model().model_dump(mode="json")``.

    ``{}`` for ``None``. Cached per model unless a field has a default factory that may differ
    between calls (a uuid, a timestamp); every call returns a fresh copy.
    """
    if model is None:
        return {}
    if _info(model).pure_defaults:
        return copy_json(_cached_defaults(model), where=model.__name__)
    return _make_defaults(model)


def _unknown_fields(unknown: list, fields: list[str], *, where: str) -> ValidationError:
    """The refusal of ``unknown`` field names: the first one named, with a "did you mean" when a
    field is close, the fields there are, and the other unknown names."""
    name = unknown[0]
    message = f"{where}: unknown field {name!r}"
    close = difflib.get_close_matches(name, fields, n=1) if isinstance(name, str) else []
    if close:
        message += f"; did you mean {close[0]!r}?"
    message += f" Fields: {', '.join(fields) or '(none)'}"
    if len(unknown) > 1:
        message += f" (also unknown: {', '.join(repr(n) for n in unknown[1:])})"
    return ValidationError(message, where=where, path=(name,), reason=f"unknown field {name!r}")


def check_fields(model: _Model, names: typing.Iterable[str], *, where: str) -> None:
    """Refuse field names the model does not have, with a did-you-mean hint.

    No-op for ``None`` and for models with ``extra="allow"``.
    """
    if model is None:
        return
    info = _info(model)
    if info.extra_allowed:
        return
    unknown = [n for n in names if n not in info.field_set]
    if not unknown:
        return
    raise _unknown_fields(unknown, list(info.fields), where=where)


# ---------------------------------------------------------------------------- validation

def _is_union(ann: Any) -> bool:
    origin = get_origin(ann)
    return origin is Union or origin is types.UnionType


def _walk_loc(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], Any]:
    """Follow a pydantic error ``loc`` through the model's annotations.

    Returns the path to show (union-member tags like ``'int'`` dropped) and the annotation
    expected at the end, or ``None`` when it cannot be told.
    """
    ann: Any = model
    shown: list[Any] = []
    for i, seg in enumerate(loc):
        while get_origin(ann) is typing.Annotated:
            ann = get_args(ann)[0]
        if _is_union(ann):
            present = [a for a in get_args(ann) if a is not type(None)]
            if len(present) == 1:  # Optional[X]: pydantic does not tag the X branch
                ann = present[0]
        if _is_union(ann) and isinstance(seg, str):
            member = next((a for a in get_args(ann)
                           if _type_str(a) == seg or getattr(a, "__name__", None) == seg), None)
            if member is not None:  # pydantic tags union errors with the member's name
                if i < len(loc) - 1:  # the error is inside that member: follow it
                    ann = member
                continue  # else the whole union is what was expected
        origin, args = get_origin(ann), get_args(ann)
        shown.append(seg)
        if isinstance(ann, type) and issubclass(ann, BaseModel) and isinstance(seg, str):
            field = ann.model_fields.get(seg)
            ann = field.annotation if field is not None else None
        elif origin in (list, set, frozenset) and isinstance(seg, int):
            ann = args[0] if args else None
        elif origin is tuple and isinstance(seg, int):
            ann = args[0] if len(args) == 2 and args[1] is Ellipsis else (
                args[seg] if seg < len(args) else None)
        elif origin is dict:
            ann = args[1] if len(args) == 2 else None
        else:
            ann = None
    return tuple(shown), ann


def _raise_invalid(model: type[BaseModel], exc: PydanticValidationError,
                   where: str) -> typing.NoReturn:
    """Turn pydantic's error into ours: where, field path, reason, what was given, expected type."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = tuple(first["loc"])
    shown, expected = _walk_loc(model, loc)
    reason = first["msg"]
    if shown:
        message = f"{where}: field '{format_path(shown)}': {reason}"
    else:
        message = f"{where}: {reason}"
    if first["type"] != "missing" and shown:
        message += f" (got {short(first.get('input'), 60)})"
    if expected is not None and shown:
        message += f"; expected {_type_str(expected)}"
    others = []
    for err in errors[1:]:
        other = format_path(_walk_loc(model, tuple(err["loc"]))[0])
        if other and other != format_path(shown) and other not in others:
            others.append(other)
    if others:
        message += f" (also invalid: {', '.join(repr(o) for o in others)})"
    raise ValidationError(message, where=where, path=loc, reason=reason) from None


def validate_state(model: _Model, data: dict, *, where: str) -> dict:
    """Validate a candidate whole state and return it as a JSON dict.

    Refuses a non-dict, unknown field names (did-you-mean), and anything the model refuses in
    pydantic's normal (lax) mode, with a message naming ``where``, the field path, the reason
    and the expected type. With ``None`` the data only has to be JSON. A float field still lets
    NaN through: ``encode_json`` refuses it, naming the field.
    """
    return validator(model)(data, where)


def validator(model: _Model) -> Validator:
    """``validate_state`` for one model, as a function ``(data, where, changed=None) -> dict``.

    Handles keep one: it skips looking the model's facts up on every write. ``changed`` names
    the fields in which ``data`` may differ from a valid state; when each of them is a plain
    field holding a plainly valid value (see ``_plain_field_checks``), ``data`` is returned as
    it is, without the pydantic round trip that would give back an equal dict.
    """
    try:
        return _cached_validator(model)
    except TypeError:  # unhashable, so not a model class: let _info say so
        if model is not None:
            _info(model)
        raise


@functools.lru_cache(maxsize=512)
def _cached_validator(model: _Model) -> Validator:
    if model is None:
        def validate_free_form(data: dict, where: str, changed: Any = None) -> dict:
            _need_state_dict(data, where)
            return copy_json(data, where=where)
        return validate_free_form

    info = _info(model)
    check_names = not info.extra_allowed
    field_set, validate, dump = info.field_set, info.validate, info.dump
    plain = _plain_field_checks(model)

    def validate_model(data: dict, where: str, changed: Any = None) -> dict:
        if type(data) is not dict:
            _need_state_dict(data, where)
        if check_names and not field_set.issuperset(data):
            check_fields(model, data, where=where)
        if changed is ALL_FIELDS:
            changed = info.fields
        if changed is not None and plain:
            for name in changed:
                check = plain.get(name)
                if check is None or not check(data.get(name, _ABSENT)):
                    break
            else:
                return data  # only plain fields changed, each to a value pydantic keeps as is
        try:
            instance = validate(data)
        except PydanticValidationError as exc:
            _raise_invalid(model, exc, where)
        return dump(instance)

    return validate_model


Validator = Callable[..., dict]
"""``(data, where, changed=None) -> dict``: see :func:`validator`."""


class AllFields:
    """The type of :data:`ALL_FIELDS`, so that ``changed`` can be typed."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ALL_FIELDS"


ALL_FIELDS = AllFields()
"""``changed=ALL_FIELDS``: any field may differ (a whole new state), but each must be there."""

_ABSENT = object()
_SCALAR_TYPES = (int, float, str, bool)
# Model settings that cannot change how a plain value validates or dumps.
_NEUTRAL_CONFIG = frozenset({"extra", "title", "frozen", "json_schema_extra", "populate_by_name",
                             "validate_by_name", "validate_by_alias", "protected_namespaces",
                             "use_attribute_docstrings", "defer_build", "arbitrary_types_allowed"})


def _plain_field_checks(model: type[BaseModel]) -> dict[str, Callable[[Any], bool]]:
    """For fields whose valid values pydantic keeps exactly as they are: a quick check.

    A write that only changes such fields, each to a value that passes its check, needs no
    pydantic round trip: the result would equal the input. That holds for fields typed ``int``,
    ``float``, ``str``, ``bool``, ``Any``, a ``Literal`` of those, ``X | None`` and ``list[X]``
    / ``dict[str, X]`` of such types, given an exact type match (``1`` is not a valid ``float``
    here, since pydantic would store ``1.0``), with no constraints, aliases or exclusions, in a
    model without validators, serializers, computed fields, ``model_post_init`` or settings that
    transform values. Any other field, or any doubt, and the write is validated by pydantic.
    """
    decorators = model.__pydantic_decorators__
    if any((decorators.validators, decorators.field_validators, decorators.root_validators,
            decorators.field_serializers, decorators.model_serializers,
            decorators.model_validators, decorators.computed_fields)):
        return {}
    if not set(model.model_config) <= _NEUTRAL_CONFIG \
            or model.model_post_init is not BaseModel.model_post_init \
            or _function_of(model.__get_pydantic_core_schema__) \
            is not _function_of(BaseModel.__get_pydantic_core_schema__):
        return {}
    checks = {}
    for name, field in model.model_fields.items():
        if field.metadata or field.alias or field.validation_alias or field.serialization_alias \
                or field.exclude or field.discriminator:
            continue
        check = _plain_check(field.annotation)
        if check is not None:
            checks[name] = check
    return checks


def _function_of(method: Callable[..., Any]) -> Any:
    """The function under a bound (class)method, to tell whether a subclass overrides it."""
    return getattr(method, "__func__", method)


def _plain_check(annotation: Any) -> Callable[[Any], bool] | None:
    """A check for one plain annotation (see ``_plain_field_checks``), or None."""
    if annotation is Any:
        return lambda value: value is not _ABSENT
    if annotation in _SCALAR_TYPES:
        return lambda value: type(value) is annotation
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal and all(type(a) in _SCALAR_TYPES for a in args):
        allowed = frozenset((type(a), a) for a in args)
        return lambda value: type(value) in _SCALAR_TYPES and (type(value), value) in allowed
    if origin in (Union, types.UnionType) and len(args) == 2 and type(None) in args:
        inner = _plain_check(args[0] if args[1] is type(None) else args[1])
        if inner is None:
            return None
        return lambda value: value is None or inner(value)
    if origin is list and len(args) == 1:
        item = _plain_check(args[0])
        if item is None:
            return None
        return lambda value: type(value) is list and all(map(item, value))
    if origin is dict and len(args) == 2 and args[0] is str:
        entry = _plain_check(args[1])
        if entry is None:
            return None
        return lambda value: type(value) is dict and all(
            type(k) is str and entry(v) for k, v in value.items())
    return None


def _need_state_dict(data: Any, where: str) -> None:
    if not isinstance(data, dict):
        raise ValidationError(
            f"{where}: state must be a dict of fields, got {type(data).__name__}",
            where=where, reason="state is not a dict")


def encode_json(value: Any, *, where: str, what: str = "state") -> str:
    """JSON text of ``value``, which is already plain JSON data (a validated state, an event).

    pydantic-core encodes it about twice as fast as ``json``. That encoder would quietly turn
    NaN into ``null`` and sets or bytes into lists and strings, so it is only for data that is
    JSON already; NaN, infinity and lone surrogates are still refused, with the field named.
    """
    try:
        data = pydantic_core.to_json(value, inf_nan_mode="constants")
    except (pydantic_core.PydanticSerializationError, ValueError):
        data = b"NaN"  # a lone surrogate, say: let the strict encoder say what is wrong
    text = data.decode()
    # (searching str is several times faster than searching bytes for short texts)
    if "NaN" in text or "Infinity" in text:  # (or just text that contains those words)
        try:
            return dump_json(value, where, what)
        except ValidationError:
            check_json(value, where=where)  # the same refusal, with the field's path
            raise
    return text


def read_state(model: _Model, stored: dict | None, *, where: str, version: int) -> dict:
    """Read data stored under this or an older schema, tolerantly (docs/concepts.md, 'Schemas').

    Missing fields take their defaults; stored fields the schema no longer has are ignored; a
    stored field that no longer validates reads as its default with a ``FlowStateWarning``
    naming ``where``, the version and the field. ``stored`` is never mutated, and nothing is
    written here.
    """
    if model is None:
        return {} if stored is None else copy_json(stored, where=where)
    info = _info(model)
    if stored is None:
        return defaults(model)
    if not isinstance(stored, dict):
        _warn(f"{where} v{version}: stored state is a {type(stored).__name__}, not a dict; "
              f"reading the defaults of {model.__name__}.")
        return defaults(model)
    candidate = stored
    if not info.extra_allowed and not info.field_set.issuperset(stored):
        candidate = {k: v for k, v in stored.items() if k in info.field_set}
    # Each round drops the fields that failed; a model-level failure falls back to defaults.
    for _ in range(len(candidate) + 1):
        try:
            return model.model_validate(candidate, **info.validate_kwargs).model_dump(mode="json")
        except PydanticValidationError as exc:
            failed: dict[str | int, str] = {}
            for err in exc.errors(include_url=False):
                loc = tuple(err["loc"])
                if not loc or loc[0] not in candidate:
                    failed.clear()
                    break
                inner = f"{format_path(loc)}: " if len(loc) > 1 else ""
                failed.setdefault(loc[0], inner + err["msg"])
            if not failed:
                _warn(f"{where} v{version}: stored state no longer fits {model.__name__} "
                      f"({exc.errors(include_url=False)[0]['msg']}); reading the defaults. "
                      f"The stored data stays as it is until the next write to this state, which "
                      f"stores the defaults.")
                return defaults(model)
            fresh = defaults(model)
            for field, reason in failed.items():
                _warn(f"{where} v{version}: stored field {field!r} = {short(candidate[field], 60)} "
                      f"no longer fits {model.__name__} ({reason}); reading the default "
                      f"{short(fresh.get(field), 60)}. The stored value stays until the next "
                      f"write to this state, which stores the default.")
            candidate = {k: v for k, v in candidate.items() if k not in failed}
    return defaults(model)  # pragma: no cover - every round removes at least one field


def _warn(message: str) -> None:
    warnings.warn(message, FlowStateWarning, stacklevel=3)


# ---------------------------------------------------------------------------- snapshots

def _snapshot_eq(self: BaseModel, other: Any) -> bool:
    """Equal to an instance of the original model (or another snapshot) with the same data.

    pydantic compares exact classes, so without this ``snap == ModeState(mode="chat")``
    would be False.
    """
    if not isinstance(other, BaseModel):
        return NotImplemented
    base = type(self).__bases__[0]
    if type(other) not in (base, type(self)):
        return False
    return (self.__dict__ == other.__dict__
            and self.__pydantic_extra__ == other.__pydantic_extra__
            and self.__pydantic_private__ == other.__pydantic_private__)


@functools.lru_cache(maxsize=512)
def _frozen(model: type[BaseModel]) -> type[BaseModel]:
    """A frozen subclass of ``model`` with the same name, for read-only snapshots."""
    namespace = {
        "model_config": {**model.model_config, "frozen": True},
        "__module__": model.__module__,
        "__qualname__": model.__qualname__,
        "__doc__": model.__doc__,
        "__eq__": _snapshot_eq,
    }
    metaclass: Callable[..., type[BaseModel]] = type(model)
    return metaclass(model.__name__, (model,), namespace)  # pydantic adds a frozen __hash__


def snapshot(model: _Model, data: dict) -> Any:
    """A read-only typed view of ``data`` (a state already validated by this module).

    With a model: an instance of a cached frozen subclass of ``model`` (same name,
    ``isinstance(snap, model)`` holds, equal to a ``model`` instance with the same data);
    assigning an attribute raises pydantic's ``ValidationError``. Nested lists, dicts and
    sub-models are fresh copies, so changing them cannot reach the stored state.
    With ``None``: a ``types.MappingProxyType`` over a deep copy (``snap["mode"]``).
    """
    if model is None:
        return types.MappingProxyType(copy_json(data, where="snapshot"))
    info = _info(model)
    return _frozen(model).model_validate(data, **info.validate_kwargs)


def field_summary(model: _Model) -> dict[str, str]:
    """Field name -> readable type (``Literal['chat', 'agent']``, ``int``, ``list[str]``)."""
    if model is None:
        return {}
    _info(model)
    return {name: _type_str(field.annotation) for name, field in model.model_fields.items()}


# ---------------------------------------------------------------------------- block input/output
# (added for blocks and flows: validating values that are not scope state)

def check_input_keys(model: _Model, value: Any, *, where: str) -> None:
    """Refuse keys of an input object that ``model`` has no field (or alias) for, with a
    did-you-mean hint, unless the model allows extras (``extra="allow"``). Input models need no
    defaults, so this does not go through :func:`check_fields`."""
    if model is None or not isinstance(value, dict) or model.model_config.get("extra") == "allow":
        return
    known: list[str] = []
    for name, field in model.model_fields.items():
        known.append(name)
        known += [a for a in (field.alias, field.validation_alias) if isinstance(a, str)]
    unknown = [k for k in value if k not in known]
    if not unknown:
        return
    raise _unknown_fields(unknown, list(model.model_fields), where=where)


def validate_value(model: _Model, value: Any, *, where: str) -> Any:
    """Validate a block's or an action's input or output against ``model``.

    Returns a ``model`` instance (an instance is returned as it is; a dict or another model's
    instance is validated). ``None`` as ``model`` accepts anything unchanged. A refusal raises
    our ``ValidationError`` naming ``where``, the field path, the reason and the expected type.
    Unlike scope state, input and output models need no defaults.
    """
    if model is None or isinstance(value, model):
        return value
    if isinstance(value, BaseModel):
        value = value.model_dump()
    try:
        return model.model_validate(value)
    except PydanticValidationError as exc:
        _raise_invalid(model, exc, where)
