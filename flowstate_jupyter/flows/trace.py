"""Traces and the step log of a run: one span per block, kept in the run's request record.

While a run executes, :class:`RunLog` keeps one span per block (and per ``map`` step) in memory,
as a row of its columns: its stable path, block, kind, parent, input and output (by reference),
timing, status, error and the changes it committed. Nothing is written per block. The spans are
encoded once, into the *content* of the run's request record (``request/<id>/$request``), by the
writes the run makes anyway: its final write (so a trace commits with the run's outcome, in one
transaction on every backend), and the few writes a durable run makes before that (lease
renewals, ``ctx.run_once``, a suspension).

**Span paths** are stable across runs of one flow definition, so two runs compare span by span.
The root span is the action's name (``run_block``: the block's name); below it each block adds
a segment: ``<step>[<i>]/<block name>`` inside a sequencer (``then[2]/mode-router``; a
``parallel`` branch is ``parallel[i]/<branch key>``, a ``map`` step is ``map[i]``), the route's
block name under a router, and ``<name>[<k>]`` for the k-th item of a ``for_each`` or the k-th
iteration of ``do_while`` / ``do_until``. A block a handler runs itself
(``await other.run(value, ctx)``) is ``<handler path>/<name>``, with ``#2``, ``#3`` ... when it
runs again in the same handler. Example: ``chat/then[2]/mode-router/agent``.

**Replays** compare spans by path: each span keeps ``code``, the fingerprint of the block that
ran (``flows/fingerprint.py``: its code and declarations, its subtree's included), and
``output_type``, the class of an output that was not plain JSON (``module:Qualname``), so a
replay knows whether the JSON preview can stand for the output.

**The step log** (durable runs) is what a resume needs: the run's full input, the output of
every completed block whose parent had not completed (the outermost completed blocks), the
results of ``ctx.run_once``, the values given to suspensions, and the identity of every write
the run committed. A write's identity is ``<scope>/<id>/<record>:<operation>#<n>`` — the n-th
write of that operation to that record by that span — and it travels in the write's own
change-log event (``event["span"]``, ``event["write"]``), so it commits atomically with the
write at no extra cost (see ``flows/durable.py`` and docs/decisions.md).

**Bounds** (bytes as well as rows): a span's input and output previews keep
:data:`PREVIEW_CHARS` characters of their JSON (longer values become
``{"$truncated": true, "preview": ..., "chars": n}``), a traceback :data:`ERROR_TEXT_CHARS`,
``changes`` the first :data:`CHANGES_PER_SPAN` events with their deltas previewed; a trace keeps
at most :data:`SPAN_LIMIT` spans (every span that did not end ok, then the first and last of
the others; ``trace.dropped`` counts the rest; only kept spans are encoded) and at most
:data:`TRACE_MAX_BYTES` of JSON (past that, previews shrink to 100 characters and changes
to a count: ``trace.truncated``). The step log keeps completed outputs up to
:data:`LOG_MAX_BYTES`; outputs past that are left out and those blocks run again on resume
(their writes are still not repeated).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import sys
import traceback as _traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticSerializationError, to_json, to_jsonable_python

from ..base.text import short
from ..errors import RunStateError
from ..handles.records import SKIP
from .fingerprint import KEPT_AS, fingerprint, generation

__all__ = [
    "CHANGES_PER_SPAN",
    "ERROR_TEXT_CHARS",
    "LOG_MAX_BYTES",
    "PREVIEW_CHARS",
    "SPAN_LIMIT",
    "TRACE_MAX_BYTES",
    "MapStep",
    "RunLog",
    "Span",
    "Suspended",
    "Trace",
    "preview",
    "read_content",
    "trace_from",
    "trace_rows",
]

#: Characters of JSON kept per span input / output preview.
PREVIEW_CHARS = 1000
#: Characters of an error's traceback text kept per span.
ERROR_TEXT_CHARS = 4000
#: Change events kept per span (the rest are counted).
CHANGES_PER_SPAN = 20
#: Characters of a change event's delta kept in a span.
DELTA_CHARS = 300
#: Spans kept per trace.
SPAN_LIMIT = 250
#: Bytes of JSON a trace may take in its request record.
TRACE_MAX_BYTES = 512 * 1024
#: Bytes of completed outputs the step log keeps for a resume.
LOG_MAX_BYTES = 4 * 1024 * 1024

#: The columns of a stored trace row, in order.
COLUMNS = ("path", "block", "kind", "parent", "input", "output", "started_at", "duration_s",
           "status", "error", "changes", "attempt", "code", "output_type")
_FORMAT = 1


# ---------------------------------------------------------------------------- public records

@dataclass(frozen=True)
class Span:
    """One block (or ``map`` step) of a run, as recorded (docs/concepts.md, 'Traces').

    ``input`` / ``output`` are JSON previews; ``error`` is ``{"type", "message", "traceback"}``
    or ``None``; ``changes`` are the change events the block itself committed (with ``version``
    and ``ts``); ``status`` is ``"ok"``, ``"error"``, ``"suspended"`` or ``"running"`` (a span
    that was still running when an interrupted run last recorded its log); ``attempt`` counts
    from 1 and grows with each resume. ``code`` is the fingerprint of the block's code and
    declarations when it ran (``None`` for a ``map`` step); ``output_type`` the class of an
    output that was not plain JSON (``"module:Qualname"``; ``None`` for JSON, or when the block
    validates its output with an ``output`` model).
    """

    path: str
    block: str
    kind: str
    parent: str | None
    input: Any
    output: Any
    started_at: float
    duration_s: float | None
    status: str
    error: dict | None = None
    changes: list[dict] = field(default_factory=list)
    attempt: int = 1
    code: str | None = None
    output_type: str | None = None


class Trace:
    """The spans of one run, in start order: ``RunResult.trace``, ``flow.trace(request_id)``.

    ``dropped`` counts spans left out by the span limit; ``truncated`` says previews were cut
    short to keep the trace under its byte bound (see the module doc). Iterating gives the spans;
    ``trace.span(path)`` finds one; ``trace.describe()`` is a readable tree.
    """

    def __init__(self, request_id: str, data: dict | None = None, *,
                 text: str | None = None) -> None:
        self.request_id = request_id
        self._data = data
        self._text = text  # the stored JSON, decoded on first use
        self._spans: list[Span] | None = None

    @property
    def _stored(self) -> dict:
        if self._data is None:
            data = json.loads(self._text) if self._text else {}
            self._data = data if isinstance(data, dict) else {}
        return self._data

    @property
    def dropped(self) -> int:
        """Spans left out by the span limit."""
        return int(self._stored.get("dropped") or 0)

    @property
    def truncated(self) -> bool:
        """Previews were cut short to keep the trace under its byte bound."""
        return bool(self._stored.get("truncated"))

    @property
    def spans(self) -> list[Span]:
        """Every kept span, in start order."""
        if self._spans is None:  # built on first use: most results are never looked into
            self._spans = [Span(*row) for row in trace_rows(self._stored)]
        return self._spans

    def span(self, path: str) -> Span | None:
        """The span at ``path`` (the last one, if a resumed run ran it again), or ``None``."""
        found = None
        for span in self.spans:
            if span.path == path:
                found = span
        return found

    def __iter__(self) -> Iterator[Span]:
        return iter(self.spans)

    def __len__(self) -> int:
        return len(self._stored.get("rows") or ())

    def describe(self) -> str:
        """A readable tree: one line per span with status and duration."""
        parents = {span.path: span.parent for span in self.spans}

        def depth(path: str | None) -> int:
            level = 0
            while path is not None and parents.get(path) is not None and level < 100:
                path = parents[path]
                level += 1
            return level

        lines = [f"trace of run {self.request_id}"]
        for span in self.spans:
            level = depth(span.path)
            took = "" if span.duration_s is None else f" {span.duration_s * 1000:.1f} ms"
            name = span.path.rsplit("/", 1)[-1]
            extra = f" {span.error['type']}: {short(span.error['message'])}" \
                if span.error else ""
            lines.append(f"{'  ' * level}{name} [{span.kind} {span.block}] {span.status}"
                         f"{took}{extra}")
        if self.dropped:
            lines.append(f"({self.dropped} spans dropped to keep the trace small)")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Trace {self.request_id}: {len(self)} spans>"


class Suspended(BaseException):
    """Raised by ``ctx.suspend`` to pause the run; the run machinery turns it into a result.

    A ``BaseException``, so a block's ``except Exception`` and a sequencer's ``rescue`` let it
    through.
    """

    def __init__(self, key: str, path: str, model: type[BaseModel], message: str | None,
                 timeout_s: float | None) -> None:
        super().__init__(f"suspended at {path}")
        self.key, self.path, self.model = key, path, model
        self.message, self.timeout_s = message, timeout_s


# ---------------------------------------------------------------------------- previews

def preview(value: Any, limit: int = PREVIEW_CHARS) -> Any:
    """``value`` as bounded JSON for a trace: small values as they are, large ones cut short."""
    kind = type(value)
    if value is None or kind is bool or kind is int:
        return value
    if kind is float:
        return value if math.isfinite(value) else repr(value)
    if kind is str:
        if len(value) <= limit:
            return value
        return {"$truncated": True, "preview": value[:limit], "chars": len(value)}
    try:
        text = _dump(value)
    except (TypeError, ValueError, RecursionError, RuntimeError):
        text = repr(value)
        value = text
    if len(text) <= limit:
        return value  # encoded with the rest of its row, the same way
    return {"$truncated": True, "preview": text[:limit], "chars": len(text)}


def compact(text: str, limit: int = 120) -> str:
    """``text``, or for a long one its start and a digest: a write's span and identity must stay
    short to survive in a change-log item the store keeps summarized."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{text[:limit - 34]}~{digest}"


def _error_info(exc: BaseException | None, limit: int) -> dict | None:
    if exc is None:
        return None
    text = "".join(_traceback.format_exception(type(exc), exc, exc.__traceback__))
    if len(text) > limit:
        text = "...\n" + text[-limit:]  # the end of a traceback says the most
    return {"type": type(exc).__name__, "message": str(exc)[:limit], "traceback": text}


def _change_preview(event: dict) -> dict:
    """A change event as a span keeps it: its delta previewed, the fields the span gives left
    out."""
    out = event.copy()
    pop = out.pop  # the span says these already
    pop("request_id", None)
    pop("span", None)
    pop("write", None)
    delta = out.get("delta", out)  # (out: there is none)
    if delta is not out:
        kind = type(delta)  # (what preview keeps as it is, told without a call)
        if kind not in _AS_THEY_ARE and (kind is not str or len(delta) > DELTA_CHARS) and \
                ((kind is not dict and kind is not list) or not _fits(delta, DELTA_CHARS)):
            out["delta"] = preview(delta, DELTA_CHARS)
    return out


def _shown_changes(events: list[dict], with_changes: bool) -> list[dict]:
    """A span's committed change events as its row keeps them (``with_changes``: previewed,
    the first :data:`CHANGES_PER_SPAN`; else only counted)."""
    if not with_changes:
        return [{"$more": len(events)}]
    more = len(events) - CHANGES_PER_SPAN
    shown = [_change_preview(e) for e in events[:CHANGES_PER_SPAN]] if more > 0 \
        else [_change_preview(e) for e in events]
    if more > 0:
        shown.append({"$more": more})
    return shown


def _type_ref(value: Any) -> str | None:
    cls = type(value)
    if not isinstance(value, BaseModel) or "<locals>" in cls.__qualname__:
        return None
    return f"{cls.__module__}:{cls.__qualname__}"


def resolve_type(ref: str | None) -> type | None:
    """The class a type reference (``module:Qualname``) names, if it can be found."""
    if not ref:
        return None
    module_name, _, qualname = ref.partition(":")
    module = sys.modules.get(module_name)
    if module is None:
        try:
            module = importlib.import_module(module_name)
        except Exception:  # noqa: BLE001 - not importable here: the caller falls back to JSON
            return None
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, type) else None


# ---------------------------------------------------------------------------- the live log

class MapStep:
    """What a ``map`` step's span names as its block."""

    __slots__ = ("name",)
    kind = "map"
    output = None

    def __init__(self, name: str) -> None:
        self.name = name


#: An empty map no one may change: a ``RunLog``'s maps until something is put in them.
_NONE: Any = MappingProxyType({})
_NO_ROWS: list[list] = []  # (never changed: a log without earlier rows shares it)


class RunLog:
    """Everything one run records about itself in memory: spans, writes, the step log.

    ``trace`` and ``durable`` are the run's switches: without ``trace`` no spans are written to
    the store; without ``durable`` the run keeps no step log, cannot suspend and is not
    resumable. Built by ``runs.py``; a resume hands in what earlier attempts logged.

    **Spans are columns**, not objects: span ``i`` (a block's ``ctx._span``) is ``sites[i]``
    (``(path, block, parent's path or None)``: a triple a block keeps from run to run for the
    same place), ``inputs[i]``, ``outputs[i]`` (by reference), ``starts[i]``
    and ``ends[i]`` (``perf_counter`` readings; ``None`` while it runs). What few spans have sits
    in dicts by index: ``failed`` (``(status, error)`` of a span that ended otherwise than ok),
    ``noted`` (its committed change events), ``counts`` (its writes per record and operation),
    ``suspends``. Appending to five lists makes no object the garbage collector tracks, where a
    span object per block made a long run collect every 700 blocks; rows are built from the
    columns when the log is encoded. Spans open on the thread that runs the run's blocks (the
    event loop's, or the caller's when no loop runs; worker threads run plain functions only).
    """

    # maps most runs leave empty: the shared read-only _NONE until something is put in one
    # (``done`` and ``earlier`` are only read: a resume's or a replay's log sets its own)
    failed: dict[int, tuple[str, BaseException | None]] = _NONE
    noted: dict[int, list[dict]] = _NONE
    counts: dict[int, dict[str, int]] = _NONE
    suspends: dict[int, int] = _NONE
    by_path: dict[str, int] = _NONE
    repeats: dict[str, int] = _NONE
    committed: dict[str, set[str]] = _NONE
    done: dict[str, list] = _NONE
    earlier: dict[str, set[str]] = _NONE

    def __init__(self, request_id: str, *, trace: bool, durable: bool, wall0: float,
                 clock0: float, attempt: int = 1, logged: dict | None = None,
                 previous: list[list] | None = None) -> None:
        self.request_id = request_id
        self.trace = trace
        self.durable = durable
        self.wall0, self.clock0 = wall0, clock0
        self.attempt = attempt
        self.sites: list[tuple[str, Any, str | None]] = []
        self.inputs: list[Any] = []
        self.outputs: list[Any] = []
        self.starts: list[float] = []
        self.ends: list[float | None] = []
        self.previous = previous or _NO_ROWS  # trace rows of earlier attempts
        if logged is None:  # a new run (the usual case): nothing logged before
            self.input_json: Any = None
            self.once: dict[str, Any] = {}
            self.resumed: dict[str, Any] = {}
        else:
            self.input_json = logged.get("input")
            self.done = dict(logged.get("done") or {})
            self.once = dict(logged.get("once") or {})
            self.resumed = dict(logged.get("resumed") or {})
            self.earlier = {p: set(w) for p, w in (logged.get("writes") or {}).items()}
        self.lost: str | None = None  # why this run may not write any more (lease lost)
        # the run's claim on its request record (``durable.Lease``), set by the run once it
        # holds it: writes the record before the run's first write if the run put it off
        # (``start``), and the step log at once (``flush``, for ``run_once``)
        self.lease: Any = None
        self.last_trace: str | None = None  # the trace as last encoded (JSON)

    # -- spans ------------------------------------------------------------------------------
    def path(self, parent: int | None, segment: str, explicit: bool) -> str:
        """The path of a block run at ``segment`` under span ``parent`` (see the module doc)."""
        path = segment if parent is None else f"{self.sites[parent][0]}/{segment}"
        if not explicit:  # a block a handler ran itself: number repeats
            repeats = self.repeats
            if repeats is _NONE:
                repeats = self.repeats = {}
            seen = repeats[path] = repeats.get(path, 0) + 1
            if seen > 1:
                path = f"{path}#{seen}"
        return path

    def open(self, path: str, block: Any, parent: int | None, input: Any, start: float) -> int:
        """Start a span; returns its index (the hot paths in ``blocks.py`` do this inline)."""
        span = len(self.sites)
        self.sites.append((path, block, None if parent is None else self.sites[parent][0]))
        self.inputs.append(input)
        self.outputs.append(None)
        self.starts.append(start)
        self.ends.append(None)
        return span

    def fail(self, span: int, status: str, error: BaseException | None, end: float) -> None:
        """End span ``span`` otherwise than ok (``"error"`` or ``"suspended"``)."""
        if self.failed is _NONE:
            self.failed = {}
        self.failed[span] = (status, error)
        self.ends[span] = end

    def status(self, span: int) -> str:
        """``"ok"``, ``"error"``, ``"suspended"`` or ``"running"``."""
        failed = self.failed.get(span)
        if failed is not None:
            return failed[0]
        return "running" if self.ends[span] is None else "ok"

    def replayed(self, path: str, block: Any, input: Any) -> list | None:
        """The logged entry to return instead of running ``block`` at ``path`` on ``input``
        (``None``: run it). Asked only for paths in :attr:`done`: a resumed run returns what an
        earlier attempt completed; a replay's log (``flows/replay.py``) checks more first."""
        return self.done.get(path)


    # -- writes -----------------------------------------------------------------------------
    def tag(self, span: int, key: str) -> Any:
        """The identity of the write span ``span`` is about to make to ``key`` (or ``SKIP``)."""
        if self.lost is not None:
            raise RunStateError(self.lost)
        lease = self.lease
        if lease is not None and not lease.started:
            lease.start()  # the run's record first: a resume must find this write's
        counts = self.counts.get(span)
        path = compact(self.sites[span][0])
        if counts is None:
            if self.counts is _NONE:
                self.counts, self.by_path = {}, {}
            counts = self.counts[span] = {}
            self.by_path[path] = span  # where its committed changes are attributed
        n = counts.get(key, 0)
        counts[key] = n + 1
        write = compact(f"{key}#{n}")
        before = self.earlier.get(path)
        if before is not None and write in before:
            return SKIP
        return path, write

    def observe(self, event: dict) -> None:
        """A committed change of this run (from the store's subscription): attribute it."""
        path = event.get("span")
        if path is None:
            return
        span = self.by_path.get(path)
        if span is not None:
            noted = self.noted.get(span)
            if noted is None:
                if self.noted is _NONE:
                    self.noted = {}
                noted = self.noted[span] = []
            noted.append(event)
        write = event.get("write")
        if write is not None:
            if self.committed is _NONE:
                self.committed = {}
            self.committed.setdefault(path, set()).add(write)

    # -- encoding ---------------------------------------------------------------------------
    def _rows(self, limit: int, with_changes: bool, final: bool) -> list[list]:
        """This attempt's kept spans as stored rows (``started_at`` and ``duration_s`` in
        whole microseconds, ``started_at`` counted from ``wall0``)."""
        cache: dict[int, tuple[Any, Any]] = {}  # each value previewed once (see _preview)
        types: dict[int, tuple[Any, Any]] = {}  # and its type looked at once (_json_type)
        clock0 = self.clock0
        error_chars = ERROR_TEXT_CHARS if with_changes else 500
        plain = _AS_THEY_ARE
        rows: list[list] = []
        append = rows.append
        attempt = self.attempt
        now = generation()
        sites, inputs, outputs = self.sites, self.inputs, self.outputs
        starts, ends = self.starts, self.ends
        failed, noted = self.failed, self.noted
        no_changes: list = []  # shared by the rows of spans without changes (only encoded)
        kept = range(len(sites)) if len(sites) <= SPAN_LIMIT else self._kept(final)
        if final and not failed:  # every span ended ok: the lean loop (no status, no error)
            for i in kept:
                end = ends[i]
                if end is None:  # (not expected once the run ended): the full loop says it
                    rows.clear()
                    break
                path, block, parent = sites[i]
                code = getattr(block, KEPT_AS, None)  # fingerprint(block), no call when kept
                code = code[1] if code is not None and code[0] == now else fingerprint(block)
                start = starts[i]
                value = inputs[i]
                kind = type(value)
                if kind not in plain and (kind is not str or len(value) > limit):
                    value = _preview(cache, value, limit)
                out = outputs[i]
                kind = type(out)
                if kind in plain or (kind is str and len(out) <= limit):
                    shown_type = None  # (_output_type's answer for these)
                else:
                    shown_type = None if getattr(block, "output", None) is not None \
                        else _json_type(types, out)
                    out = _preview(cache, out, limit)
                events = noted.get(i) if noted else None
                append([path, block.name, block.kind, parent, value, out,
                        int((start - clock0) * 1e6), int((end - start) * 1e6 + 0.5), "ok",
                        None, _shown_changes(events, with_changes) if events else no_changes,
                        attempt, code, shown_type])
            else:
                return rows
        for i in kept:
            path, block, parent = sites[i]
            code = getattr(block, KEPT_AS, None)
            code = code[1] if code is not None and code[0] == now else fingerprint(block)
            changes: Any = noted.get(i) if noted else None
            changes = _shown_changes(changes, with_changes) if changes else no_changes
            end = ends[i]
            fail = failed.get(i) if failed else None
            value = inputs[i]
            kind = type(value)
            shown_in = value if kind in plain or (kind is str and len(value) <= limit) \
                else _preview(cache, value, limit)
            error = None
            if fail is not None:
                status = fail[0]
                shown_out = shown_type = None
                if fail[1] is not None:
                    error = _error_info(fail[1], error_chars)
            elif end is None:
                status = "running"
                shown_out = shown_type = None
            else:
                status = "ok"
                value = outputs[i]
                kind = type(value)
                if kind in plain or (kind is str and len(value) <= limit):
                    shown_out, shown_type = value, None  # (_output_type's answer for these)
                else:
                    shown_out = _preview(cache, value, limit)
                    shown_type = None if getattr(block, "output", None) is not None \
                        else _json_type(types, value)
            start = starts[i]
            append([path, block.name, block.kind, parent, shown_in, shown_out,
                    int((start - clock0) * 1e6),
                    None if end is None else int((end - start) * 1e6 + 0.5), status,
                    error, changes, attempt, code, shown_type])
        return rows

    def _kept(self, final: bool) -> range | list[int]:
        """The spans a trace keeps: all, or within :data:`SPAN_LIMIT` every span that did not
        end ok (up to half the limit), then the first and the last of the others. ``final``:
        the run has ended, so no span is still running."""
        total = len(self.sites)
        if total <= SPAN_LIMIT:
            return range(total)
        half = SPAN_LIMIT // 2
        if final and not self.failed:  # all ok (the usual case): the first and the last
            return [*range(SPAN_LIMIT - half), *range(total - half, total)]
        status = self.status
        keep = [i for i in range(total) if status(i) != "ok"][:half]
        room = SPAN_LIMIT - len(keep)
        ok = [i for i in range(total) if status(i) == "ok"]
        return sorted(set(keep) | set(ok[:room - room // 2]) | set(ok[len(ok) - room // 2:]))

    def trace_text(self, final: bool = False) -> str:
        """The trace as stored (JSON, within :data:`TRACE_MAX_BYTES`); keeps it for the result.
        ``final``: the run has ended (see :meth:`_kept`)."""
        for limit, with_changes in ((PREVIEW_CHARS, True), (100, False)):
            rows = self._rows(limit, with_changes, final)
            if self.previous or len(rows) > SPAN_LIMIT:
                rows, dropped = _merge(self.previous, rows, self.wall0, len(self.sites))
            else:  # (no earlier attempt, within the limit: what _merge would give)
                dropped = len(self.sites) - len(rows)
            data: dict[str, Any] = {"t0": self.wall0, "rows": rows, "dropped": dropped,
                                    "truncated": not with_changes}
            text = _trace_json(data)
            if len(text) <= TRACE_MAX_BYTES // 4 or len(text.encode()) <= TRACE_MAX_BYTES:
                self.last_trace = text  # (UTF-8 takes at most 4 bytes a character)
                return text
        while len(data["rows"]) > 2:
            rows = data["rows"]
            cut = max(1, len(rows) // 4)
            middle = len(rows) // 2
            data["rows"] = rows[:middle - cut // 2] + rows[middle + (cut - cut // 2):]
            data["dropped"] += cut
            text = _trace_json(data)
            if len(text.encode()) <= TRACE_MAX_BYTES:
                break
        self.last_trace = text
        return text

    def log_data(self, *, final: bool) -> dict | None:
        """The step log as stored; ``final``: only what outlives the run (``run_once`` results
        and resume values, which a replay returns)."""
        if final:
            once, resumed = self.once, self.resumed
            if not once and not resumed:
                return None
            kept = {key: value for key, value in (("once", once), ("resumed", resumed))
                    if value}
            return kept
        writes = {p: sorted(w) for p, w in list(self.earlier.items())}
        for p, w in list(self.committed.items()):
            writes[p] = sorted(set(writes.get(p, ())) | set(w))
        done = dict(self.done)
        sites, outputs, status = self.sites, self.outputs, self.status
        total = len(sites)
        ok = [i for i in range(total) if status(i) == "ok"]
        finished = {sites[i][0] for i in ok} | set(done)
        budget = LOG_MAX_BYTES
        omitted = 0
        for i in ok:  # the outermost completed blocks: a resume never asks for the rest
            path, block, above = sites[i]
            if path in done or above in finished:
                continue
            output = outputs[i]
            try:
                data = to_jsonable_python(output)
                size = len(_dump(data))
            except (TypeError, ValueError, RecursionError, RuntimeError):
                omitted += 1
                continue
            if size > budget:
                omitted += 1
                continue
            budget -= size
            ref = _type_ref(output) if block.output is None else None
            done[path] = [data, ref, above]
        done = {p: e for p, e in done.items() if e[2] is None or e[2] not in finished}
        return {"input": self.input_json, "done": done, "once": self.once,
                "resumed": self.resumed, "writes": writes, "omitted": omitted}

    def content(self, *, final: bool) -> str | None:
        """The JSON kept as the request record's content (``None``: nothing to keep)."""
        # (a final log keeps only run_once results and resume values: most runs have none)
        log = self.log_data(final=final) if self.durable and (
            not final or self.once or self.resumed) else None
        if self.trace:
            if log is None:  # (a finished run's usual content)
                return f'{{"v":{_FORMAT},"trace":{self.trace_text(final)}}}'
            return f'{{"v":{_FORMAT},"trace":{self.trace_text(final)},"log":{_dump(log)}}}'
        if log is None:
            return None
        return f'{{"v":{_FORMAT},"log":{_dump(log)}}}'

    def result_trace(self) -> Trace | None:
        """The :class:`Trace` a run's result carries: what was last stored (decoded only if
        someone looks)."""
        if not self.trace or self.last_trace is None:
            return None
        return Trace(self.request_id, text=self.last_trace)


def _preview(cache: dict[int, tuple[Any, Any]], value: Any, limit: int) -> Any:
    """``preview(value, limit)``, made once per value object of a trace (``cache``)."""
    hit = cache.get(id(value))
    if hit is None or hit[0] is not value:
        kind = type(value)
        if kind is dict or kind is list:
            hit = cache[id(value)] = (value, value if _fits(value, limit)
                                      else preview(value, limit))
        else:
            hit = cache[id(value)] = (value, preview(value, limit))
    return hit[1]


def _fits(value: Any, limit: int) -> bool:
    """Whether ``value``'s JSON as :func:`_dump` makes it surely has at most ``limit``
    characters (then ``preview`` keeps it as it is): its bytes do. One call, no decoding."""
    try:
        return len(to_json(value, fallback=repr, inf_nan_mode="null")) <= limit
    except (TypeError, ValueError, RecursionError, RuntimeError):
        return False  # (preview says what it is)


def _json_type(cache: dict[int, tuple[Any, Any]], value: Any) -> str | None:
    """``_output_type(value, None)``, found once per value object of a trace (``cache``): an
    output is often the next block's input and output too."""
    hit = cache.get(id(value))
    if hit is None or hit[0] is not value:
        hit = cache[id(value)] = (value, _output_type(value, None))
    return hit[1]


_SCALARS = (str, int, bool, type(None))
_LEAVES = frozenset(_SCALARS)
_AS_THEY_ARE = frozenset({type(None), int, bool})  # a row keeps these values as they are
_NODES = 200  # values of an output looked at to tell plain JSON


def _output_type(value: Any, block: Any) -> str | None:
    """``None`` when ``value``'s JSON stands for it (plain JSON, or the block validates its
    output with a model); else its class as ``module:Qualname`` (see :class:`Span`)."""
    kind = type(value)
    if kind in _SCALARS or (kind is float and math.isfinite(value)) \
            or getattr(block, "output", None) is not None:
        return None
    if (kind is dict or kind is list) and _plain(value, [_NODES]):
        return None
    return f"{kind.__module__}:{kind.__qualname__}"


def _plain(value: Any, budget: list[int]) -> bool:
    """Whether ``value`` is plain JSON (dicts with string keys, lists, scalars), looking at
    :data:`_NODES` values at most (a larger one counts as not known to be plain)."""
    budget[0] -= 1
    if budget[0] < 0:
        return False
    kind = type(value)
    if kind in _SCALARS:
        return True
    if kind is float:
        return math.isfinite(value)
    if kind is dict:  # (a string, number, true or null inside is counted here, not called)
        for k, v in value.items():
            if type(k) is not str:
                return False
            if type(v) in _LEAVES:
                budget[0] -= 1
                if budget[0] < 0:
                    return False
            elif not _plain(v, budget):
                return False
        return True
    if kind is list:
        for v in value:
            if type(v) in _LEAVES:
                budget[0] -= 1
                if budget[0] < 0:
                    return False
            elif not _plain(v, budget):
                return False
        return True
    return False


def _dump(data: Any) -> str:
    """``data`` as compact JSON: models and odd objects as pydantic encodes them (``repr`` as a
    last resort), NaN and infinities as ``null``; text that UTF-8 cannot hold (lone surrogates)
    escaped."""
    try:
        return to_json(data, fallback=repr, inf_nan_mode="null").decode()
    except PydanticSerializationError:
        return json.dumps(to_jsonable_python(data, fallback=repr), ensure_ascii=True,
                          allow_nan=False, default=repr, separators=(",", ":"))


def _trace_json(data: dict[str, Any]) -> str:
    """A trace as stored: ``{"columns": COLUMNS, **data}`` as :func:`_dump` encodes it, the
    columns' JSON made once."""
    return _TRACE_START + _dump(data)[1:]


_TRACE_START = '{"columns":' + _dump(COLUMNS) + ","


def _merge(previous: list[list], rows: list[list], wall0: float,
           total: int) -> tuple[list[list], int]:
    """Earlier attempts' rows (those this attempt did not run again; their ``started_at`` is
    absolute) and this attempt's (``total`` spans, of which ``rows`` were kept), in start order,
    within :data:`SPAN_LIMIT`; returns ``(rows, dropped)`` with every ``started_at`` relative to
    ``wall0``."""
    dropped = total - len(rows)
    if previous:
        again = {row[0] for row in rows}
        earlier = [[*r[:6], int((r[6] - wall0) * 1e6),
                    None if r[7] is None else int(r[7] * 1e6 + 0.5), *r[8:]]
                   for r in previous if r[0] not in again]
        rows = earlier + rows
        rows.sort(key=lambda r: r[6])
    if len(rows) <= SPAN_LIMIT:
        return rows, dropped
    keep = [i for i, r in enumerate(rows) if r[8] != "ok"][:SPAN_LIMIT // 2]
    room = SPAN_LIMIT - len(keep)
    ok = [i for i, r in enumerate(rows) if r[8] == "ok"]
    chosen = set(keep) | set(ok[:room - room // 2]) | set(ok[len(ok) - room // 2:])
    return [r for i, r in enumerate(rows) if i in chosen], dropped + len(rows) - len(chosen)


def trace_rows(data: dict | None) -> list[list]:
    """The rows of a stored trace, in :data:`COLUMNS` order, ``started_at`` absolute."""
    if not data:
        return []
    columns = list(data.get("columns") or COLUMNS)
    index = [columns.index(c) if c in columns else None for c in COLUMNS]
    t0 = float(data.get("t0") or 0.0)
    rows = [[row[i] if i is not None else None for i in index] for row in data.get("rows", [])]
    for row in rows:  # stored in microseconds, started_at from t0
        row[6] = t0 + (row[6] or 0) / 1e6
        row[7] = None if row[7] is None else row[7] / 1e6
        row[10] = row[10] or []
        row[11] = row[11] or 1
    return rows


def trace_from(request_id: str, data: dict | None) -> Trace:
    """A :class:`Trace` from its stored form (an empty one when none was kept)."""
    return Trace(request_id, data if isinstance(data, dict) else None)


def read_content(content: str | None) -> dict:
    """The stored content of a request record as a dict (``{}`` when there is none)."""
    if not content:
        return {}
    try:
        data = json.loads(content)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
