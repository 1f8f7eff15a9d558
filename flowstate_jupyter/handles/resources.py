"""Resources: named, typed, versioned things with identity, content and metadata.

What they promise: docs/concepts.md, "Resources and collections"; the calls: docs/guide.md.

``define_resource`` describes one resource per scope instance (a plan, preferences);
``define_resource_collection`` describes many, keyed by a path pattern (``files/**``). Handles
(:class:`ResourceHandle`, :class:`CollectionHandle`) are reached through a scope's ``resources``.

Resource versions start at 1 and are never reused; a delete leaves a tombstone. A handle that has
seen a resource alive and then finds it deleted by another writer raises
:class:`ResourceDeletedError` instead of silently re-creating it.

Tombstones of a collection are bounded: every batch of evictions (a quarter of the store's
``tombstone_limit``, default 100, at most 32) a process makes in one collection, the collection's
tombstones beyond ``tombstone_limit`` are purged, oldest first (:func:`bound_tombstones`, also
run by ``flowstate prune``), so a collection keeps at most ``tombstone_limit`` plus a batch per
process evicting in it. The highest version a purged tombstone had is kept in one
record per collection (``$tombstones:<collection>``), and an instance created where no record is
left starts above it, so versions are still never reused; a handle that saw a purged instance
alive still raises :class:`ResourceDeletedError`.
"""

from __future__ import annotations

import re
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from ..base.jsonvalues import check_text
from ..base.names import BAD_KEY_CHARS, RESOURCE_NAME, TOMBSTONE_MARK_PREFIX
from ..base.text import short
from ..errors import (
    InvalidIdError,
    ReadOnlyResourceError,
    ResourceAlreadyExistsError,
    ResourceDeletedError,
    ResourceNotFoundError,
    ValidationError,
)
from ..model import ops, schema
from ..stores.base import Change, Record, Store
from .records import SKIP, RecordHandle, Write, run_write_tag, to_json

_NAME = RESOURCE_NAME
_PARAM = re.compile(r"\[([A-Za-z_][A-Za-z0-9_]*)\]")
_BAD_KEY_CHARS = BAD_KEY_CHARS  # control characters, backslashes, lone surrogates
Eviction = Literal["none", "lru", "oldest"]


def check_resource_name(name: Any) -> str:
    """Resource names are identifiers (letters, digits, ``_ . -``; not starting with ``$``)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidIdError(f"invalid resource name {name!r}: start with a letter or _, then "
                             f"letters, digits, _ . - (at most 128); namespace block-private "
                             f"resources like 'search_cache'")
    return name


def _initial_state(model: type[BaseModel] | None, default: Any, what: str) -> dict:
    """Schema defaults overlaid with a definition's ``default`` (validated now, not at run time)."""
    base = schema.defaults(model)
    if default is None:
        return base
    default = to_json(default)
    if not isinstance(default, dict):
        raise ValidationError(f"{what}: default must be a dict or a model instance",
                              where=what)
    return schema.validate_state(model, {**base, **default}, where=what)


@dataclass(frozen=True, eq=True)
class ResourceDefinition:
    """What :func:`define_resource` returns; compare equal when defined the same way."""

    state: type[BaseModel] | None = None
    writable: bool = False
    default: Any = None
    content: str | None = None
    content_file: str | None = None
    render: Callable[..., str | None] | None = None
    client_data: Callable[[Any], Any] | None = None
    metadata: Mapping[str, Any] | None = field(default=None, hash=False)

    def initial_state(self) -> dict:
        return _initial_state(self.state, self.default, "resource default")


@dataclass(frozen=True, eq=True)
class CollectionDefinition:
    """What :func:`define_resource_collection` returns."""

    pattern: str
    state: type[BaseModel] | None = None
    max_instances: int | None = None
    eviction: Eviction = "none"
    writable: bool = True
    default: Any = None
    render: Callable[..., str | None] | None = None
    client_data: Callable[[Any], Any] | None = None
    on_created: Callable[[str, Any], None] | None = None
    on_updated: Callable[[str, Any, Any], None] | None = None
    on_deleted: Callable[[str], None] | None = None
    metadata: Mapping[str, Any] | None = field(default=None, hash=False)

    def initial_state(self) -> dict:
        return _initial_state(self.state, self.default, f"collection {self.pattern!r} default")

    @property
    def regex(self) -> re.Pattern:
        return _compile_pattern(self.pattern)


def define_resource(state: type[BaseModel] | None = None, *, writable: bool = False,
                    default: Any = None, content: str | None = None,
                    content_file: str | None = None,
                    render: Callable[..., str | None] | None = None,
                    client_data: Callable[[Any], Any] | None = None,
                    metadata: Mapping[str, Any] | None = None) -> ResourceDefinition:
    """Describe a resource: typed ``state``, optional ``content`` (or ``content_file``) text.

    ``render(state, content)`` turns the raw content into what ``read_content()`` returns
    (it is not called when there is no content: ``read_content()`` is then ``None``);
    ``client_data(state)`` is what a client sees of it in ``snapshot()``. Read-only unless
    ``writable=True``.
    """
    if state is not None:
        schema.require_defaults(state, role="resource")
    if content is not None and content_file is not None:
        raise ValueError("give content or content_file, not both")
    definition = ResourceDefinition(state, writable, default, content, content_file, render,
                                    client_data, dict(metadata) if metadata else None)
    definition.initial_state()  # refuse a bad default now
    return definition


def define_resource_collection(*, pattern: str, state: type[BaseModel] | None = None,
                               max_instances: int | None = None, eviction: Eviction = "none",
                               writable: bool = True, default: Any = None,
                               render: Callable[..., str | None] | None = None,
                               client_data: Callable[[Any], Any] | None = None,
                               on_created: Callable[[str, Any], None] | None = None,
                               on_updated: Callable[[str, Any, Any], None] | None = None,
                               on_deleted: Callable[[str], None] | None = None,
                               metadata: Mapping[str, Any] | None = None) -> CollectionDefinition:
    """Describe a collection of resources keyed by ``pattern``.

    Patterns are ``/``-separated segments: a literal, ``*`` (one segment), ``**`` (one or more
    segments) or ``[param]`` (one named segment). ``max_instances`` caps the live instances:
    with ``eviction="none"`` a create beyond the cap is refused; ``"lru"`` evicts the least
    recently used (read through ``get`` or written), ``"oldest"`` the earliest created. Hooks
    run after the change committed, in the process that made it.
    """
    _compile_pattern(pattern)
    if state is not None:
        schema.require_defaults(state, role="resource")
    if eviction not in ("none", "lru", "oldest"):
        raise ValueError(f"eviction must be 'none', 'lru' or 'oldest', not {eviction!r}")
    if max_instances is not None and (not isinstance(max_instances, int) or max_instances < 1):
        raise ValueError(f"max_instances must be a positive int or None, not {max_instances!r}")
    definition = CollectionDefinition(pattern, state, max_instances, eviction, writable, default,
                                      render, client_data, on_created, on_updated, on_deleted,
                                      dict(metadata) if metadata else None)
    definition.initial_state()
    return definition


_PATTERNS: dict[str, re.Pattern] = {}


def _compile_pattern(pattern: Any) -> re.Pattern:
    if isinstance(pattern, str) and pattern in _PATTERNS:
        return _PATTERNS[pattern]
    if not isinstance(pattern, str) or not pattern:
        raise InvalidIdError(f"invalid collection pattern {pattern!r}: give a path pattern "
                             f"such as 'files/**' or 'notes/[id]'")
    parts = []
    for segment in pattern.split("/"):
        if segment == "**":
            parts.append(r"[^/]+(?:/[^/]+)*")
        elif segment == "*":
            parts.append(r"[^/]+")
        elif param := _PARAM.fullmatch(segment):
            parts.append(f"(?P<{param.group(1)}>[^/]+)")
        elif segment in ("", ".", "..") or any(c in segment for c in "*[]") \
                or _BAD_KEY_CHARS.search(segment):
            raise InvalidIdError(f"invalid collection pattern {pattern!r}: segment {segment!r}; "
                                 f"segments are literals, '*', '**' or '[param]', never empty "
                                 f"or '..'")
        else:
            parts.append(re.escape(segment))
    try:
        compiled = re.compile("/".join(parts))
    except re.error as exc:  # e.g. the same [param] twice
        raise InvalidIdError(f"invalid collection pattern {pattern!r}: {exc}") from exc
    _PATTERNS[pattern] = compiled
    return compiled


def _check_key(definition: CollectionDefinition, key: Any, collection: str) -> str:
    if not isinstance(key, str) or not key:
        raise InvalidIdError(f"collection {collection!r}: key must be a non-empty string, "
                             f"not {short(key, 60)}")
    segments = key.split("/")
    if any(s in ("", ".", "..") for s in segments) or _BAD_KEY_CHARS.search(key):
        raise InvalidIdError(f"collection {collection!r}: invalid key {short(key, 80)} (no "
                             f"empty segments, no '.' or '..', no control characters, "
                             f"backslashes or lone surrogates)")
    if not definition.regex.fullmatch(key):
        raise InvalidIdError(f"collection {collection!r}: key {short(key, 80)} does not match "
                             f"the pattern {definition.pattern!r}")
    return key


class ResourceHandle(RecordHandle):
    """One resource of one scope instance: typed state, version, content."""

    def __init__(self, store: Store, scope: str, scope_id: str, name: str,
                 definition: ResourceDefinition | CollectionDefinition, *,
                 request_id: str | None = None, collection: str | None = None,
                 key: str | None = None,
                 prepare_create: Callable[[Record | None], int | None] | None = None) -> None:
        storage = name if collection is None else f"{collection}:{key}"
        what = repr(name) if collection is None else f"{collection}[{key!r}]"
        super().__init__(store, scope, scope_id, storage, definition.state,
                         where=f"{scope} {scope_id!r} resource {what}", request_id=request_id)
        self.name = name if collection is None else key
        self.definition = definition
        self._collection = collection
        self._key = key
        self._live_seen = False  # saw it alive: a later tombstone means someone deleted it
        # Runs inside the write transaction before a write creates the record (a collection
        # makes room there), so a refused write rolls it back with everything else. It returns
        # the version a record created from nothing starts at (None: 1).
        self._prepare_create = prepare_create

    @property
    def key(self) -> str | None:
        """The collection key of an instance (``None`` for a plain resource)."""
        return self._key

    def _initial_state(self) -> dict:
        return self.definition.initial_state()

    def _seen(self, record: Record | None) -> None:
        super()._seen(record)
        if record is not None and not record.deleted:
            self._live_seen = True

    def _event(self, operation: str, delta: Any, path: str | None, existed: bool) -> dict:
        event = {"type": "resource_change", "scope": self._scope, "scope_id": self._scope_id,
                 "resource": self._collection or self.name,
                 "change_type": "updated" if existed else "created", "operation": operation,
                 "path": path, "delta": delta, "request_id": self._request_id}
        if self._collection:
            event["key"] = self._key
        return event

    def _check_writable(self) -> None:
        if not self.definition.writable:
            label = self._collection or self.name
            raise ReadOnlyResourceError(f"Resource '{label}' is read-only; define it with "
                                        f"define_resource(..., writable=True) to write it")

    def _check_record(self, record: Record | None) -> None:
        if self._live_seen and (record is None or record.deleted):
            self._live_seen = False  # the next write, if the caller insists, re-creates it
            now = "its tombstone was purged since" if record is None else \
                f"now version {record.version}"
            raise ResourceDeletedError(f"{self._label} was deleted by another writer "
                                       f"({now}); write again to re-create it")

    def _before_create(self, record: Record | None) -> None:
        # A collection instance makes room only for a write that creates it: a first write
        # that changes nothing stores nothing and evicts nobody.
        if self._prepare_create is not None:
            self._first_version = self._prepare_create(record)

    def _after_commit(self, before: dict, after: dict, created: bool) -> None:
        key, d = self._key, self.definition
        if key is None or not isinstance(d, CollectionDefinition):  # a plain resource
            return
        if created and d.on_created:
            d.on_created(key, schema.snapshot(d.state, after))
        elif not created and d.on_updated:
            d.on_updated(key, schema.snapshot(d.state, after), schema.snapshot(d.state, before))

    @property
    def exists(self) -> bool:
        """True when the resource has a live stored record."""
        record = self._read()
        return record is not None and not record.deleted

    def update_state(self, fn: Callable[[Any], Any]) -> bool:
        """``fn(snapshot)`` returns the whole new state (model or dict); re-run on conflict."""
        def compute(current: dict) -> dict:
            new = to_json(fn(schema.snapshot(self._model, current)))
            if not isinstance(new, dict):
                raise ValidationError(f"{self._label}: update_state's function must return "
                                      f"a dict or a model instance", where=self._label)
            ops.check_json(new, where=self._label)
            return new
        return self._write(Write("set", compute, runs_user_code=True))

    # -- content -----------------------------------------------------------------------------
    def read_content_raw(self) -> str | None:
        """The stored text, else the definition's ``content`` / ``content_file``, else None."""
        record = self._read()
        if record is not None and not record.deleted and record.content is not None:
            return record.content
        d = self.definition
        if isinstance(d, ResourceDefinition):
            if d.content is not None:
                return d.content
            if d.content_file is not None:
                return Path(d.content_file).read_text(encoding="utf-8")
        return None

    def read_content(self) -> str | None:
        """The content as rendered by the definition's ``render(state, content)``, or raw.

        ``None`` when there is no content (docs/decisions.md, ``read_content()``); ``render`` is
        called only for content, and ``""`` is content.
        """
        raw = self.read_content_raw()
        if raw is None or self.definition.render is None:
            return raw
        return self.definition.render(self.state, raw)

    def write_content(self, text: str | None) -> bool:
        """Store ``text`` as this resource's content (``""`` is content, ``None`` clears it)."""
        if text is not None and not isinstance(text, str):
            raise ValidationError(f"{self._label}: content must be a str or None, not "
                                  f"{type(text).__name__}", where=self._label)
        if text is not None:
            check_text(text, where=self._label, what="content")
        return self._write(Write("content", lambda s: s, content=text,
                                 delta={"content_chars": None if text is None else len(text)}))

    def delete(self) -> bool:
        """Delete this resource (a tombstone; its version is never reused)."""
        self._check_writable()
        tag = run_write_tag(self._request_id, self._scope, self._scope_id, self._name, "delete")
        if tag is SKIP:  # an earlier attempt of this run deleted it
            self._live_seen = False
            return True
        return self._delete(tag)

    def _delete(self, tag: Any = None) -> bool:
        event = self._delete_event()
        if tag is not None:
            event["span"], event["write"] = tag
        record = self._store.delete(self._scope, self._scope_id, self._name,
                                    event=event, request_id=self._request_id)
        self._live_seen = False
        if record is None:
            return False
        self._version = record.version
        d = self.definition
        if self._key is not None and isinstance(d, CollectionDefinition) and d.on_deleted:
            d.on_deleted(self._key)
        return True

    def _delete_event(self) -> dict:
        event = self._event("delete", None, None, True)
        event["change_type"] = "deleted"
        return event

    def client_view(self) -> Any:
        """What a client sees of this resource: its ``client_data(state)``, or None."""
        if self.definition.client_data is None:
            return None
        return self.definition.client_data(self.state)

    def __repr__(self) -> str:
        return f"<ResourceHandle {self._label} v{self.version}>"

    def _repr_html_(self) -> str:
        from ..model.display import resource_html
        return resource_html(self)


class CollectionHandle:
    """Many resources of one definition in one scope instance, keyed by a path pattern."""

    def __init__(self, store: Store, scope: str, scope_id: str, name: str,
                 definition: CollectionDefinition, *, request_id: str | None = None) -> None:
        self._store = store
        self._scope = scope
        self._scope_id = scope_id
        self.name = name
        self.definition = definition
        self._request_id = request_id

    def _handle(self, key: str) -> ResourceHandle:
        return ResourceHandle(self._store, self._scope, self._scope_id, self.name,
                              self.definition, request_id=self._request_id,
                              collection=self.name, key=key,
                              prepare_create=lambda record: self._prepare(key, record))

    def instance(self, key: str) -> ResourceHandle:
        """A handle on ``key`` whether or not it exists yet: its first write creates it.

        Like :meth:`create`, that first write makes room under ``max_instances`` and runs
        ``on_created``; a refused write creates nothing.
        """
        _check_key(self.definition, key, self.name)
        self._check_writable()
        return self._handle(key)

    def _records(self, prefix: str = "", include_deleted: bool = False) -> list[Record]:
        return self._store.list(self._scope, self._scope_id, prefix=f"{self.name}:{prefix}",
                                include_deleted=include_deleted)

    def create(self, key: str, init: Any = None, replace: bool = False) -> ResourceHandle:
        """Create the instance ``key`` (state = defaults + ``init``).

        Raises :class:`ResourceAlreadyExistsError` if it exists (or another writer won the race),
        unless ``replace=True``.
        """
        _check_key(self.definition, key, self.name)
        self._check_writable()
        init = to_json(init) if init is not None else {}
        if not isinstance(init, dict):
            raise ValidationError(f"collection {self.name!r}: init must be a dict or model",
                                  where=self.name)
        ops.check_json(init, where=f"{self.name}[{key!r}]")
        handle = self._handle(key)

        def refuse_existing(record: Record | None) -> None:
            if record is not None and not record.deleted and not replace:
                raise ResourceAlreadyExistsError(
                    f"{handle._label} already exists (version {record.version}); use "
                    f"get_or_create, upsert or create(..., replace=True)")

        handle._write(Write("set", lambda s: {**self.definition.initial_state(), **init},
                            store_defaults=True, precondition=refuse_existing))
        return handle

    def _check_writable(self) -> None:
        if not self.definition.writable:
            raise ReadOnlyResourceError(f"Resource '{self.name}' is read-only")

    def _prepare(self, key: str, record: Record | None) -> int | None:
        """Before ``key`` is created (inside its write): make room; return its first version."""
        first = None
        if record is None:  # never written, or its tombstone was purged: start above the mark
            mark = self._store.read(self._scope, self._scope_id,
                                    TOMBSTONE_MARK_PREFIX + self.name)
            if mark is not None and isinstance(mark.state, dict):
                first = int(mark.state.get("version", 0)) + 1
        self._make_room(key)
        return first

    def _make_room(self, key: str) -> None:
        cap = self.definition.max_instances
        if cap is None:
            return
        self._store.serialize_writes()  # so two creators cannot both count the same room
        records = [r for r in self._records() if r.name != f"{self.name}:{key}"]
        excess = len(records) - cap + 1
        if excess <= 0:
            return
        if self.definition.eviction == "none":
            raise ValidationError(
                f"collection {self.name!r} is full ({len(records)} of {cap} instances); delete "
                f"one first, or define it with eviction='lru' or 'oldest'",
                where=self.name, reason="full")
        order = (lambda r: r.accessed_at) if self.definition.eviction == "lru" \
            else (lambda r: r.created_at)
        for victim in sorted(records, key=order)[:excess]:
            self._handle(victim.name.split(":", 1)[1])._delete()
        limit = self._store.tombstone_limit
        if _count_evictions(self._store, (self._scope, self._scope_id, self.name), excess) \
                >= tombstone_batch(limit):
            bound_tombstones(self._store, self._scope, self._scope_id, self.name, limit)

    def get(self, key: str) -> ResourceHandle:
        """The live instance ``key``; :class:`ResourceNotFoundError` if there is none."""
        handle = self.get_optional(key)
        if handle is None:
            raise ResourceNotFoundError(f"{self._scope} {self._scope_id!r} collection "
                                        f"{self.name!r} has no instance {key!r}")
        return handle

    def get_optional(self, key: str) -> ResourceHandle | None:
        _check_key(self.definition, key, self.name)
        handle = self._handle(key)
        if not handle.exists:
            return None
        if self.definition.eviction == "lru":
            self._store.touch(self._scope, self._scope_id, handle._name)
        return handle

    def get_or_create(self, key: str, init: Any = None) -> ResourceHandle:
        handle = self.get_optional(key)
        if handle is not None:
            return handle
        try:
            return self.create(key, init)
        except ResourceAlreadyExistsError:
            return self.get(key)  # another writer created it first: use theirs

    def upsert(self, key: str, update: Any, create_only: Any = None) -> ResourceHandle:
        """Patch ``key`` with ``update``; create it first (with ``create_only`` too) if missing."""
        _check_key(self.definition, key, self.name)
        update = to_json(update) or {}
        extra = to_json(create_only) or {}
        ops.check_json(update, where=f"{self.name}[{key!r}]")  # it goes into the change log
        handle = self._handle(key)
        handle._write(Write("patch", lambda s: {**s, **update}, delta=update,
                            compute_if_missing=lambda s: {**s, **extra, **update},
                            store_defaults=True))
        return handle

    def list(self, prefix: str = "") -> list[str]:
        """Keys of the live instances, sorted, optionally only those starting with ``prefix``."""
        if not isinstance(prefix, str) or _BAD_KEY_CHARS.search(prefix):
            raise InvalidIdError(f"collection {self.name!r}: a key prefix is text without "
                                 f"control characters, backslashes or lone surrogates, not "
                                 f"{ascii(prefix)[:60]}")
        return [r.name.split(":", 1)[1] for r in self._records(prefix)]

    def delete(self, key: str) -> bool:
        """Delete instance ``key``; False if there was none."""
        _check_key(self.definition, key, self.name)
        self._check_writable()
        return self._handle(key).delete()

    def count(self) -> int:
        return len(self._records())

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        return self.count()

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get_optional(key) is not None

    def __repr__(self) -> str:
        return f"<CollectionHandle {self._scope} {self._scope_id!r} {self.name!r} " \
               f"({self.definition.pattern}), {self.count()} instances>"


# Evictions per (store, scope, scope id, collection) since this process last bounded its
# tombstones: counting here spares every create reading the tombstones back.
_EVICTIONS: weakref.WeakKeyDictionary[Store, dict[tuple[str, str, str], int]] = \
    weakref.WeakKeyDictionary()
_EVICTIONS_LOCK = threading.Lock()


def _count_evictions(store: Store, key: tuple[str, str, str], added: int) -> int:
    """Add ``added`` evictions; returns the count so far, and restarts it once it reaches a
    batch (the caller then bounds the tombstones)."""
    with _EVICTIONS_LOCK:
        counts = _EVICTIONS.setdefault(store, {})
        count = counts.get(key, 0) + added
        counts[key] = 0 if count >= tombstone_batch(store.tombstone_limit) else count
        if len(counts) > 10_000:  # many scope instances: forget the idle ones
            counts.clear()
    return count


def tombstone_batch(limit: int) -> int:
    """How many tombstones beyond ``limit`` wait before a purge (a quarter, 1 to 32)."""
    return min(32, max(1, limit // 4))


def bound_tombstones(store: Store, scope: str, scope_id: str, collection: str,
                     limit: int) -> int:
    """Purge all but the newest ``limit`` tombstones of one collection; returns how many went.

    One write: the collection's mark record (``$tombstones:<collection>``) is raised to the
    highest version purged, in the same transaction as the purge, so a later create of a purged
    key starts above every version the key ever had. Inside another write it joins that write.
    """
    purged = 0

    def fn(record: Record | None) -> Change | None:
        nonlocal purged
        store.serialize_writes()  # no create of these keys in between
        dead = [r for r in store.list(scope, scope_id, prefix=f"{collection}:",
                                      include_deleted=True) if r.deleted]
        if len(dead) <= limit:
            return None
        dead.sort(key=lambda r: (r.updated_at, r.name), reverse=True)
        old = dead[limit:]
        mark = record.state.get("version", 0) if record is not None and \
            isinstance(record.state, dict) else 0
        top = max([int(mark)] + [r.version for r in old])
        purged = store.purge(scope, [scope_id], names=[r.name for r in old], only_deleted=True)
        return Change(state={"version": top}, operation="set",
                      event={"type": "maintenance", "scope": scope, "scope_id": scope_id,
                             "collection": collection, "purged_tombstones": purged,
                             "request_id": None})

    store.update(scope, scope_id, TOMBSTONE_MARK_PREFIX + collection, fn)
    return purged


class Resources(Mapping[str, Any]):
    """The resources of one scope instance: ``res["plan"]`` or ``res.plan``."""

    def __init__(self, store: Store, scope: str, scope_id: str,
                 definitions: dict[str, ResourceDefinition | CollectionDefinition], *,
                 request_id: str | None = None) -> None:
        for name, definition in definitions.items():
            check_resource_name(name)
            if not isinstance(definition, (ResourceDefinition, CollectionDefinition)):
                raise TypeError(f"resource {name!r} must come from define_resource or "
                                f"define_resource_collection, not {type(definition).__name__}")
        self._store = store
        self._scope = scope
        self._scope_id = scope_id
        self._definitions = definitions
        self._request_id = request_id
        self._handles: dict[str, ResourceHandle | CollectionHandle] = {}

    def __getitem__(self, name: str) -> ResourceHandle | CollectionHandle:
        handle = self._handles.get(name)
        if handle is not None:
            return handle
        definition = self._definitions.get(name)
        if definition is None:
            known = ", ".join(self._definitions) or "none"
            raise ResourceNotFoundError(f"{self._scope} has no resource {name!r}; "
                                        f"defined: {known}")
        if isinstance(definition, CollectionDefinition):
            handle = CollectionHandle(self._store, self._scope, self._scope_id, name, definition,
                                      request_id=self._request_id)
        else:
            handle = ResourceHandle(self._store, self._scope, self._scope_id, name, definition,
                                    request_id=self._request_id)
        self._handles[name] = handle
        return handle

    def __getattr__(self, name: str) -> ResourceHandle | CollectionHandle:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except ResourceNotFoundError as exc:
            raise AttributeError(str(exc)) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._definitions)

    def __len__(self) -> int:
        return len(self._definitions)

    @property
    def definitions(self) -> dict[str, ResourceDefinition | CollectionDefinition]:
        return dict(self._definitions)

    def __repr__(self) -> str:
        return f"<Resources of {self._scope} {self._scope_id!r}: {', '.join(self) or 'none'}>"
