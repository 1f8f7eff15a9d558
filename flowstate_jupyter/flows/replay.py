"""Replaying a run with the flow's current code: ``flow.replay(request_id)``
(docs/guide.md, 'Replay a run with edited code').

A replay runs the original run's action (or block) on its input again, with the code the flow
has now, on an in-memory copy of the scopes as they were just before the original run started,
and compares the two. The store it reads from is not written.

**The copy.** Every record of the run's session, user and project (their state, resources,
collection instances and Windmill records) is copied into a :class:`MemoryStore` as it was at
the run's start (``started_at``): a record not written since is copied as it is; one written
since is read back from its kept history — the newest version written before the start, and
before the run's own first write to it. When that version is no longer kept (history is bounded
per record) the replay raises :class:`HistoryNotKeptError` naming the record, and nothing runs.
History keeps states, not content: a resource whose content was rewritten since the start is
copied with its current content, and the result says so (``notes``). The copy has the same
request, session, user and project ids, so the replay's ``ctx.run_id`` and
``ctx.idempotency_key`` are the original's.

**What the replay takes from the original.** ``ctx.run_once`` returns the result the original
recorded and never calls ``fn`` — a replay makes no side effects outside its copy; for a key
the original did not record (it failed before that call, or the edited code calls it anew) it
returns ``None``, and ``notes`` says so. ``ctx.suspend`` returns the value the original was
resumed with, when it was. And a step may **reuse** its recorded output instead of
running (``reused``), when all of these hold — otherwise it runs:

* the block at that path now has the fingerprint the original span recorded (its code and
  declarations, its subtree's included: ``flows/fingerprint.py``), and gets the same input;
* the original span ended ok, and it and every block inside it committed no writes (a reused
  step writes nothing, so only steps whose whole effect is their output are reused);
* its recorded output and input are whole in the trace (at most ``PREVIEW_CHARS`` of JSON) and
  its output can be rebuilt from that JSON (``span.output_type``);
* so far the replay has committed exactly the writes the original had committed when that step
  started (compared per record, in version order), so the state it could read is the same;
* the original's trace is whole (no spans or changes left out) and the run was not resumed.

**The diff** compares what each run left, read back through the flow's current models and
client-data functions: the outcome (status, output, error), the scopes' state, their resources
and the client data. The original's side is the state each record had after the run's own last
write to it (from history), so writes others made since do not show.
"""

from __future__ import annotations

import builtins
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from ..base.names import WM_PREFIX, is_reserved
from ..errors import HistoryNotKeptError, RunStateError
from ..handles.resources import CollectionDefinition
from ..handles.scopes import ScopeHandle
from ..model import html as h
from ..model import schema
from ..model.diff import MISSING, FieldChange, diff, format_diff
from ..model.display import flatten_client_view
from ..model.sidebyside import Row, Section, side_by_side_html, side_by_side_text
from ..stores.base import HistoryEntry, Record, Store
from ..stores.memory import MemoryStore
from .blocks import Block
from .bookkeeping import effective_status
from .client_data import resource_client_data, scope_client_data
from .compare import _resources_view
from .context import current_context
from .durable import Suspension
from .fingerprint import fingerprint
from .runs import RunResult, execute, for_record
from .spec import FlowSpec
from .trace import (
    DELTA_CHARS,
    RunLog,
    preview,
    read_content,
    resolve_type,
    trace_from,
    trace_rows,
)

__all__ = ["RecordedError", "ReplayDiff", "ReplayResult", "recorded_input", "replay_run"]

#: History's operation for a resource's content write (``ResourceHandle.write_content``).
_CONTENT = "content"
_SCOPES = ("session", "user", "project")
_NOT_COMPARED = frozenset({"ts", "version", "request_id", "span", "write", "omitted"})


# ---------------------------------------------------------------------------- the original run

class RecordedError(Exception):
    """An error as a run's record keeps it: its type's name and its message (the exception
    object itself is gone). A built-in error type comes back as itself; any other as a subclass
    of this one named like the original."""


def _recorded_error(info: Any) -> BaseException | None:
    if not isinstance(info, dict):
        return None
    name, message = str(info.get("type") or "Error"), str(info.get("message") or "")
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except Exception:  # noqa: BLE001 - a built-in that wants other arguments: named below
            pass
    return type(name, (RecordedError,), {"__module__": __name__})(message)


def _error_summary(error: BaseException | None) -> Any:
    return MISSING if error is None else {"type": type(error).__name__, "message": str(error)}


def recorded_input(record: Record) -> Any:
    """The input run ``record`` was started with, as its record keeps it (JSON).

    Raises :class:`RunStateError` when the record kept only a preview of it (an input over the
    record's limit, or one that was not JSON).
    """
    given = record.state.get("input")
    if isinstance(given, dict) and given.get("$truncated"):
        raise RunStateError(f"run {record.scope_id}'s input was larger than its request record "
                            f"keeps whole (or was not JSON), so it cannot be replayed")
    return given


def _original_result(flow: FlowSpec, record: Record, trace_data: Any,
                     rows: list[list]) -> RunResult:
    """The original run as a :class:`RunResult`, from its record: the output and error as
    recorded (JSON; the error's type and message), its trace, and as events the changes its
    spans recorded."""
    state = record.state
    status = effective_status(state)
    events = sorted((c for row in rows for c in row[10] if "ts" in c),
                    key=lambda c: (c.get("ts") or 0, c.get("version") or 0))
    suspension = state.get("suspension") if status == "suspended" else None
    return RunResult(
        output=state.get("output") if status == "ok" else None,
        error=_recorded_error(state.get("error")), session_id=str(state.get("session")),
        request_id=record.scope_id, events=events,
        duration_s=float(state.get("duration_s") or 0.0), status=status,
        action=state.get("action"), user=state.get("user"), project=state.get("project"),
        trace=trace_from(record.scope_id, trace_data) if trace_data else None,
        suspension=Suspension.from_record(record.scope_id, suspension)
        if isinstance(suspension, dict) else None, flow=flow)


# ---------------------------------------------------------------------------- the copy

@dataclass
class _Side:
    """One record as one side sees it: its state, content and whether that content is known."""

    state: Any
    content: str | None
    version: int
    ts: float
    content_known: bool = True


@dataclass
class _Copy:
    """One record of the run's scopes: as it was before the run and after the run's writes."""

    record: Record
    before: _Side | None  # None: the record did not exist (or was deleted) then
    after: _Side | None


def _label(record: Record) -> str:
    if record.name == "":
        return f"{record.scope} {record.scope_id!r} state"
    collection, sep, key = record.name.partition(":")
    what = f"{collection}[{key!r}]" if sep else record.name
    return f"{record.scope} {record.scope_id!r} resource {what}"


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _read_record(store: Store, record: Record, start: float, request_id: str) -> _Copy:
    """``record`` before run ``request_id`` (started at ``start``) and after its writes."""
    if record.updated_at < start:  # not written since the run started
        same = None if record.deleted else _Side(record.state, record.content, record.version,
                                                 record.updated_at)
        return _Copy(record, same, same)
    # cast: Store.history's annotation says ``list`` in a class that has a ``list`` method
    history = (store.history(record.scope, record.scope_id,
                                                      record.name))
    mine = [e for e in history if e.request_id == request_id]
    first_mine = min((e.version for e in mine), default=None)
    entry = next((e for e in history if e.ts < start
                  and (first_mine is None or e.version < first_mine)), None)
    if entry is None and not (history and history[-1].version == 1):
        kept = f"versions {history[-1].version}..{history[0].version}" if history else "none"
        raise HistoryNotKeptError(
            f"run {request_id}: {_label(record)} as it was before the run (at "
            f"{_when(start)}) is no longer kept (history keeps {store.history_limit} versions "
            f"per record; kept: {kept}), so the run cannot be replayed from where it started; "
            f"replay a more recent run, and keep more history next time with "
            f"open_store(..., history_limit=N)")
    rewrites = [e.version for e in history if e.operation == _CONTENT]

    def side(found: HistoryEntry | None) -> _Side | None:
        if found is None or found.deleted:
            return None
        known = not any(v > found.version for v in rewrites)
        return _Side(found.state, record.content, found.version, found.ts, known)

    before = side(entry)
    # history is whole from before the run on, so a record without the run's writes in it is
    # one the run did not write
    after = side(max(mine, key=lambda e: e.version)) if mine else before
    return _Copy(record, before, after)


def _copied(record: Record) -> bool:
    """Records of a scope a replay copies: state, resources, collection instances, Windmill's."""
    return not is_reserved(record.name) or record.name.startswith(WM_PREFIX)


def _read_scopes(store: Store, scopes: list[tuple[str, str]], start: float,
                 request_id: str) -> list[_Copy]:
    """Every copied record of ``scopes``, before and after the run (nothing is written)."""
    copies = []
    for scope, scope_id in scopes:
        for record in store.list(scope, scope_id, include_deleted=True):
            if _copied(record):
                copies.append(_read_record(store, record, start, request_id))
    return copies


def _memory_store(store: Store) -> MemoryStore:
    """An empty memory store with ``store``'s bounds (so a write refused there is refused
    here)."""
    return MemoryStore(max_state_bytes=store.max_state_bytes,
                       history_limit=store.history_limit,
                       history_limit_bytes=store.history_limit_bytes,
                       changelog_limit=store.changelog_limit,
                       changelog_item_bytes=store.changelog_item_bytes,
                       trace_limit=store.trace_limit, tombstone_limit=store.tombstone_limit)


def _fill(target: MemoryStore, copies: list[_Copy], which: str) -> None:
    """Write each copy's ``which`` side (``"before"`` or ``"after"``) into ``target``."""
    items: list[tuple[Record, list[HistoryEntry]]] = []
    for copy in copies:
        side: _Side | None = getattr(copy, which)
        if side is None:
            continue
        r = copy.record
        items.append((Record(r.scope, r.scope_id, r.name, side.version, side.state,
                             side.content, False, r.created_at, side.ts, side.ts), []))
    target.restore_many(items)


def _notes(copies: list[_Copy]) -> tuple[list[str], set[tuple[str, str, str]]]:
    """What the copies could not rebuild exactly (content history does not keep): readable
    notes, and the records whose content after the original run is unknown."""
    notes, unknown = [], set()
    for copy in copies:
        r = copy.record
        if copy.before is not None and not copy.before.content_known:
            notes.append(f"{_label(r)}: its content before the run is not kept (history keeps "
                         f"states, not content); the replay started from its current content")
        if copy.after is not None and not copy.after.content_known:
            unknown.add((r.scope, r.scope_id, r.name))
            notes.append(f"{_label(r)}: its content after the original run is not kept (it was "
                         f"rewritten since); content is left out of the comparison")
    return notes, unknown


# ---------------------------------------------------------------------------- reuse

def _change_key(event: dict) -> tuple[tuple, Any]:
    """A committed change as compared between the runs: its record, and what it did (``object()``
    — equal to nothing — when that is not known whole: content, a delta cut short)."""
    record = tuple(event.get(k) for k in ("type", "scope", "scope_id", "resource", "key",
                                          "sequencer", "instance"))
    delta = preview(event.get("delta"), DELTA_CHARS)
    if event.get("operation") == _CONTENT or (isinstance(delta, dict)
                                             and delta.get("$truncated")):
        return record, object()
    body = {k: v for k, v in event.items() if k not in _NOT_COMPARED}
    body["delta"] = delta
    return record, json.dumps(body, sort_keys=True, default=repr)


def _writes(events: list[dict]) -> dict[tuple, list[Any]]:
    """Changes per record, in version order."""
    by_record: dict[tuple, list[tuple[int, Any]]] = {}
    for event in events:
        record, what = _change_key(event)
        by_record.setdefault(record, []).append((int(event.get("version") or 0), what))
    return {r: [w for _, w in sorted(items, key=lambda i: i[0])]
            for r, items in by_record.items()}


@dataclass
class _Candidate:
    """An original span whose recorded output a replay may return (if the checks pass)."""

    code: str
    input: Any
    entry: list
    started_at: float


def _truncated(value: Any) -> bool:
    return isinstance(value, dict) and bool(value.get("$truncated"))


def _candidates(rows: list[list], trace_data: Any, attempt: int) -> dict[str, _Candidate]:
    """Spans of the original whose output could stand in for running them (see the module
    doc); none when the trace is not whole or the run was resumed."""
    data = trace_data if isinstance(trace_data, dict) else {}
    if not rows or data.get("dropped") or data.get("truncated") or attempt > 1 \
            or any("$more" in c for row in rows for c in row[10]):
        return {}
    parents = {row[0]: row[3] for row in rows}
    dirty: set[str] = set()
    for row in rows:
        if row[10]:
            path: str | None = row[0]
            while path is not None and path not in dirty:
                dirty.add(path)
                path = parents.get(path)
    out = {}
    for row in rows:
        (path, _, kind, parent, given, output, started_at, _, status, _, _, _, code,
         output_type) = row
        if status != "ok" or kind == "map" or not code or path in dirty \
                or _truncated(given) or _truncated(output):
            continue
        if output_type is not None:  # a model class, of a module this process has imported
            cls = resolve_type(output_type) if output_type.partition(":")[0] in sys.modules \
                else None
            if cls is None or not issubclass(cls, BaseModel):
                continue
        out[path] = _Candidate(code, given, [output, output_type, parent], started_at)
    return out


def _json_text(value: Any) -> str | None:
    try:
        return json.dumps(to_jsonable_python(value), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return None


class _RecordedOnce(dict):
    """``ctx.run_once`` results of the original run. Every key counts as recorded, so
    ``run_once`` never calls ``fn`` in a replay; a key the original did not record reads as
    ``None``, noted in :attr:`missing`."""

    def __init__(self, recorded: dict, durable: bool) -> None:
        super().__init__(recorded)
        self.durable = durable
        self.missing: list[str] = []

    def __contains__(self, key: object) -> bool:
        return True

    def __missing__(self, key: str) -> Any:
        ctx = current_context()
        where = f" in {ctx.span_path}" if ctx is not None and ctx.span_path else ""
        why = "kept no step log (durable=False)" if not self.durable else \
            "recorded no result under this key"
        self.missing.append(f"ctx.run_once({key!r}){where}: the original run {why}; the "
                            f"replay did not call fn (it makes no side effects) and returned "
                            f"None")
        return None


class _ReplayLog(RunLog):
    """The log of a replay: the original's ``run_once`` results and resume values, and the
    reuse of recorded outputs (:meth:`replayed`, asked by ``Block.run``)."""

    def __init__(self, request_id: str, logged: dict, durable: bool,
                 candidates: dict[str, _Candidate], original_changes: list[dict]) -> None:
        super().__init__(request_id, trace=True, durable=True, wall0=0.0, clock0=0.0,
                         logged={"resumed": logged.get("resumed") or {}})
        self.recorded = _RecordedOnce(dict(logged.get("once") or {}), durable)
        self.once = self.recorded
        self.candidates = candidates
        self.done = {path: c.entry for path, c in candidates.items()}
        self.original_changes = original_changes
        self.reused: list[str] = []
        self.changes: list[dict] = []  # this replay's committed changes, in commit order
        self.codes: dict[int, str | None] = {}

    def observe(self, event: dict) -> None:
        super().observe(event)
        if event.get("span") is not None:
            self.changes.append(event)

    def replayed(self, path: str, block: Any, input: Any) -> list | None:
        candidate = self.candidates.get(path)
        if candidate is None:
            return None
        code = self.codes.get(id(block))
        if code is None:
            code = self.codes[id(block)] = fingerprint(block, fresh=True)
        if code != candidate.code:
            return None
        try:
            given = schema.validate_value(block.input, input, where=f"{block.source} input") \
                if block.input is not None else input
        except Exception:  # noqa: BLE001 - refused input: the block runs and says so
            return None
        if _json_text(given) is None or _json_text(given) != _json_text(candidate.input):
            return None
        before = [c for c in self.original_changes if (c.get("ts") or 0) < candidate.started_at]
        if _writes(list(self.changes)) != _writes(before):
            return None
        self.reused.append(path)
        return candidate.entry


# ---------------------------------------------------------------------------- views and diff

def _handles(flow: FlowSpec, store: Store, ids: dict[str, str]) -> dict[str, ScopeHandle]:
    return {scope: ScopeHandle(store, scope, ids[scope], state=flow.state_model(scope),
                               resources=flow.resources(scope)) for scope in _SCOPES}


def _collections(flow: FlowSpec) -> set[tuple[str, str]]:
    """``(scope, name)`` of the flow's resource collections."""
    return {(scope, name) for scope in _SCOPES
            for name, definition in flow.resources(scope).items()
            if isinstance(definition, CollectionDefinition)}


def _view(flow: FlowSpec, store: Store, ids: dict[str, str],
          unknown: set[tuple[str, str, str]]) -> dict[str, Any]:
    """What one side left, through the flow's current models and client-data functions:
    ``{"state": {scope: {...}}, "resources": {scope: {...}}, "client_data": {flat key: ...}}``.
    Content not known (``unknown`` records) is left out."""
    handles = _handles(flow, store, ids)
    collections = _collections(flow)
    resources = {}
    for scope, handle in handles.items():
        views = _resources_view(handle)
        for name, view in views.items():
            if (scope, name) in collections:  # key -> view
                for key, item in view.items():
                    if (scope, ids[scope], f"{name}:{key}") in unknown and isinstance(item, dict):
                        item.pop("content", None)
            elif (scope, ids[scope], name) in unknown and isinstance(view, dict):
                view.pop("content", None)
        resources[scope] = views
    snapshot = {"client_data": {s: scope_client_data(handle, flow.client_data_functions(s))
                                for s, handle in handles.items()},
                "resources": {s: resource_client_data(handle.resources)
                              for s, handle in handles.items()}}
    return {"state": {s: handle.state_dict() for s, handle in handles.items()},
            "resources": resources, "client_data": flatten_client_view(snapshot),
            "collections": collections}


def _outcome(status: str, output: Any, error: BaseException | None) -> dict[str, Any]:
    return {"status": status, "output": output if status == "ok" else MISSING,
            "error": _error_summary(error)}


@dataclass(frozen=True)
class ReplayDiff:
    """Original vs replay (each a list of :class:`~flowstate_jupyter.model.diff.FieldChange`,
    ``old`` = the original's, ``new`` = the replay's; empty when equal).

    ``status`` is ``(original, replay)``; ``output`` and ``error`` compare the outcomes (an
    output or error a run did not have is ``MISSING``); ``state`` the scopes' state (paths
    ``("session", "mode")``); ``resources`` their resources (``("session", "plan", "state",
    "steps")``, ``("session", "plan", "content")``, ``("session", "files", key, ...)``);
    ``client_data`` the client view (``("session.mode",)``).
    """

    status: tuple[str, str]
    output: list[FieldChange]
    error: list[FieldChange]
    state: list[FieldChange]
    resources: list[FieldChange]
    client_data: list[FieldChange]
    _views: tuple[dict, dict, dict] = field(repr=False, compare=False)

    @property
    def equal(self) -> bool:
        return self.status[0] == self.status[1] and not (
            self.output or self.error or self.state or self.resources or self.client_data)

    def __bool__(self) -> bool:
        return not self.equal


def _diff(before: dict, original: dict, replay: dict) -> ReplayDiff:
    return ReplayDiff(
        (original["outcome"]["status"], replay["outcome"]["status"]),
        diff(original["outcome"]["output"], replay["outcome"]["output"]),
        diff(original["outcome"]["error"], replay["outcome"]["error"]),
        diff(original["state"], replay["state"]), diff(original["resources"],
                                                        replay["resources"]),
        diff(original["client_data"], replay["client_data"]), (before, original, replay))


def _flat(section: str, view: dict) -> dict[str, Any]:
    """A side's section as rows: ``session.mode``, ``session.resources.plan``,
    ``session.resources.files['a.md']``, ``session.mode`` (client data keys as they are)."""
    data = view.get(section, {})
    if section == "client_data":
        return dict(data)
    rows: dict[str, Any] = {}
    for scope, values in data.items():
        for name, value in (values or {}).items():
            if section == "resources" and (scope, name) in view["collections"]:
                for key, item in value.items():
                    rows[f"{scope}.resources.{name}[{key!r}]"] = item
            elif section == "resources":
                rows[f"{scope}.resources.{name}"] = value
            else:
                rows[f"{scope}.{name}"] = value
    return rows


def _equal(a: Any, b: Any) -> bool:
    return a is b or (a is not MISSING and b is not MISSING and not diff(a, b))


# ---------------------------------------------------------------------------- the result

@dataclass(repr=False)
class ReplayResult:
    """What ``flow.replay(request_id)`` returns (see ``flows/replay.py``).

    ``original`` is the original run as its record keeps it (output and error as recorded, its
    trace; events are the changes its spans recorded); ``result`` the replay's own
    :class:`RunResult` (same request id, run on the in-memory copy); ``reused`` the span paths
    whose recorded output was returned instead of running the block; ``diff`` a
    :class:`ReplayDiff`, original vs replay; ``notes`` what the copy could not rebuild exactly.
    Shows itself side by side (HTML in Jupyter, text elsewhere).
    """

    original: RunResult
    result: RunResult
    reused: list[str]
    diff: ReplayDiff
    notes: list[str] = field(default_factory=list)

    @property
    def request_id(self) -> str:
        return self.original.request_id

    def _sections(self) -> list[Section]:
        before, original, replay = self.diff._views
        sections = [Section("outcome", [
            Row(key, original["outcome"][key], replay["outcome"][key],
                not _equal(original["outcome"][key], replay["outcome"][key]))
            for key in ("status", "output", "error")
            if not (original["outcome"][key] is MISSING and replay["outcome"][key] is MISSING)],
            self._outcome_summary())]
        for section, title in (("state", "state"), ("resources", "resources"),
                               ("client_data", "client data")):
            b, o, r = (_flat(section, v) for v in (before, original, replay))
            rows = []
            for key in dict.fromkeys([*o, *r, *b]):
                vb, vo, vr = (side.get(key, MISSING) for side in (b, o, r))
                if _equal(vb, vo) and _equal(vb, vr):
                    continue  # neither run changed it
                rows.append(Row(key, vo, vr, not _equal(vo, vr)))
            changes = getattr(self.diff, section)
            summary = "equal" if not changes else \
                f"{len(changes)} difference{'s' if len(changes) != 1 else ''}"
            sections.append(Section(title, rows, f"{summary} (rows: what either run changed)"
                                    if rows else summary))
        return sections

    def _outcome_summary(self) -> str:
        (was, now), d = self.diff.status, self.diff
        if was != now:
            return f"{was} → {now}"
        return "output differs" if d.output else "error differs" if d.error else "equal"

    def _title(self) -> str:
        what = self.original.action or "block"
        return f"replay of run {self.request_id} ({what}) with the current code"

    def _subtitle(self) -> str:
        reused = f"{len(self.reused)} step{'s' if len(self.reused) != 1 else ''} reused"
        outcome = "same outcome and effects" if self.diff.equal else "differences marked ≠"
        return f"{outcome} · {reused}"

    def _repr_html_(self) -> str:
        footer = ""
        if self.reused:
            footer += ('<div><b>reused steps</b> <span class="fs-cmp-muted">their recorded '
                       'output was returned</span></div>'
                       + "".join(f"<div><code>{h.esc(p)}</code></div>" for p in self.reused))
        if self.notes:
            footer += "<div><b>notes</b></div>" + "".join(
                f'<div class="fs-cmp-muted">{h.esc(n)}</div>' for n in self.notes)
        return side_by_side_html(self._title(), "original", "replay", self._sections(),
                                 self._subtitle(), footer)

    def text(self) -> str:
        """Side by side as text, then every difference (``~ path: original -> replay``)."""
        lines = [side_by_side_text(self._title(), "original", "replay", self._sections()),
                 self._subtitle()]
        for attr in ("output", "error", "state", "resources", "client_data"):
            changes = getattr(self.diff, attr)
            if changes:
                lines.append(f"{attr.replace('_', ' ')} (original -> replay):")
                lines += ["  " + line.replace("(whole state)", f"(whole {attr})")
                          for line in format_diff(changes).splitlines()]
        if self.reused:
            lines.append("reused: " + ", ".join(self.reused))
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.text()


# ---------------------------------------------------------------------------- the replay

async def replay_run(flow: FlowSpec, block: Block, value: Any, record: Record, store: Store, *,
                     reuse: bool = True) -> ReplayResult:
    """Replay run ``record`` (its block, its validated input ``value``) with ``flow``'s current
    code on a copy of its scopes; see the module doc. ``store`` is only read."""
    state = record.state
    request_id = record.scope_id
    status = effective_status(state)
    if status in ("running", "interrupted"):
        what = "is still running" if status == "running" else \
            "was interrupted (its process died)"
        raise RunStateError(f"run {request_id} {what}; replay it once it has ended (resume an "
                            f"interrupted run with flow.resume({request_id!r}))")
    ids = {"session": str(state.get("session")), "user": str(state.get("user")),
           "project": str(state.get("project") or "default")}
    start = float(state.get("started_at") or 0.0)
    copies = _read_scopes(store, [(s, ids[s]) for s in _SCOPES], start, request_id)
    notes, unknown = _notes(copies)
    content = read_content(record.content)
    trace_data = content.get("trace")
    logged: dict = content["log"] if isinstance(content.get("log"), dict) else {}
    rows = trace_rows(trace_data if isinstance(trace_data, dict) else None)
    candidates = _candidates(rows, trace_data, int(state.get("attempt") or 1)) if reuse else {}
    original_changes = [c for row in rows for c in row[10] if "ts" in c]

    copy = _memory_store(store)
    after = _memory_store(store)
    try:
        _fill(copy, copies, "before")
        _fill(after, copies, "after")
        before_view = _view(flow, copy, ids, set())
        original = _original_result(flow, record, trace_data, rows)
        log = _ReplayLog(request_id, logged, bool(state.get("durable", True)), candidates,
                         original_changes)
        result = await execute(flow, block, value, action=state.get("action"),
                               session_id=ids["session"], user=ids["user"],
                               project=ids["project"], store=copy, request_id=request_id,
                               trace=True, durable=True, run_log=log)
        views = []
        for side, run, output in ((after, original, original.output),
                                  (copy, result, for_record(result.output))):
            view = _view(flow, side, ids, unknown)
            view["outcome"] = _outcome(run.status, output, run.error)
            views.append(view)
    finally:
        copy.close()
        after.close()
    return ReplayResult(original, result, list(log.reused),
                        _diff(before_view, views[0], views[1]), notes + log.recorded.missing)

