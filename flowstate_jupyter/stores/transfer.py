"""Export and import a whole store as JSON Lines, versions and history included.

One header line, then one line per record (tombstones too) with its kept history. Importing
writes each record with the same version, state, content, times and history, so a SQLite store
moved to PostgreSQL and back compares equal record by record. The change log is not exported:
it is a notification stream, not data. An import is checked whole, line by line, and then
written in one transaction: all or nothing.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, fields
from typing import IO, Any

from ..base.ids import check_id, check_scope
from ..base.jsonvalues import dump_json, load_json
from ..base.names import check_record_name, record_where
from ..base.text import short
from ..errors import InvalidIdError, ValidationError
from .base import HistoryEntry, Record, Store, refuse_existing

FORMAT = "flowstate-export"
FORMAT_VERSION = 1


def export_lines(store: Store) -> Iterator[str]:
    """The export of ``store``, line by line (header first)."""
    yield json.dumps({"format": FORMAT, "version": FORMAT_VERSION, "source": store.url,
                      "exported_at": time.time()})
    for record in store.list(include_deleted=True):
        # cast: Store.history's annotation says ``list`` in a class that has a ``list`` method
        history = (store.history(record.scope, record.scope_id,
                                                           record.name, limit=None))
        line: dict[str, Any] = record._asdict()
        line["history"] = [asdict(entry) for entry in reversed(history)]  # oldest first
        yield json.dumps(line, ensure_ascii=False)


def export_store(store: Store, out: IO[str]) -> int:
    """Write the export to ``out``; returns how many records were written."""
    lines = 0
    for line in export_lines(store):
        out.write(line + "\n")
        lines += 1
    return lines - 1  # the header is not a record


def import_store(store: Store, lines: IO[str] | list[str], *, replace: bool = False) -> int:
    """Load an export into ``store``, all or nothing; returns how many records were imported.

    The whole file is read and checked first, by the store's own rules (:func:`check_line`): a
    line that is not a valid record is refused with :class:`ValidationError` naming its line
    number, before anything is written. Then every record is written in one transaction
    (:meth:`Store.restore_many`): a record that already exists in the target
    (``ResourceAlreadyExistsError``, unless ``replace=True``) refuses the whole file, and
    nothing is half-written.
    """
    numbered = _numbered(lines)
    _check_header(next(numbered, (1, "")))
    entries: list[tuple[Record, list[HistoryEntry]]] = []
    seen: dict[tuple[str, str, str], int] = {}
    for number, text in numbered:
        if not text.strip():
            continue
        record, history = check_line(text, number, max_state_bytes=store.max_state_bytes)
        key = (record.scope, record.scope_id, record.name)
        if key in seen:
            raise ValidationError(f"line {number} of the export: {record_where(*key)} is also "
                                  f"on line {seen[key]}; an export has each record once",
                                  where="import", reason="duplicate record")
        seen[key] = number
        entries.append((record, history))
    if not replace:  # the clear error early; restore_many checks again inside its transaction
        for record, _ in entries:
            if store.read(record.scope, record.scope_id, record.name) is not None:
                refuse_existing(record)
    return store.restore_many(entries, replace=replace)


def _numbered(lines: IO[str] | list[str]) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` pairs; a file that is not UTF-8 text is a ValidationError."""
    number = 0
    iterator = iter(lines)
    while True:
        number += 1
        try:
            text = next(iterator)
        except StopIteration:
            return
        except UnicodeDecodeError as exc:
            raise ValidationError(f"line {number} of the export is not UTF-8 text ({exc.reason} "
                                  f"at byte {exc.start}); is this a flowstate export?",
                                  where="import", reason="not UTF-8") from None
        yield number, text


def _check_header(line: tuple[int, str]) -> None:
    _, text = line
    try:
        header = load_json(text, where="the first line of the export")
    except ValidationError:
        header = None
    if not isinstance(header, dict):
        raise ValidationError("not a flowstate export: the first line must be its JSON header",
                              where="import", reason="no header")
    if header.get("format") != FORMAT:
        raise ValidationError(f"not a flowstate export (format {short(header.get('format'))})",
                              where="import", reason="not an export")
    if header.get("version") != FORMAT_VERSION:
        raise ValidationError(f"export format version {short(header.get('version'))} is not "
                              f"supported (this version reads {FORMAT_VERSION})",
                              where="import", reason="unsupported version")


#: SQLite keeps integers in 64 bits (PostgreSQL's BIGINT likewise): versions stay below this.
MAX_VERSION = 2**63 - 1

_RECORD_FIELDS = frozenset(Record._fields)
_HISTORY_FIELDS = frozenset(f.name for f in fields(HistoryEntry))
_REQUIRED = ("scope", "scope_id", "name", "version", "state")
_HISTORY_REQUIRED = ("version", "ts", "operation", "state")


def check_line(text: str, number: int, *, max_state_bytes: int | None = None
               ) -> tuple[Record, list[HistoryEntry]]:
    """One record line of an export, checked by the rules every store keeps; else a
    :class:`ValidationError` that names the line, the field and what was wrong.

    A record has a scope of :data:`~flowstate_jupyter.base.ids.SCOPES`, a valid id, a name a
    record may carry (:func:`~flowstate_jupyter.base.names.check_record_name`), a version that
    is a positive integer within 64 bits, a JSON state (at most ``max_state_bytes`` as JSON),
    content that is text or null, ``deleted`` true or false and finite, non-negative times. Its
    history entries have distinct versions no higher than the record's, finite times, an
    operation name, a JSON state, ``deleted`` true or false and a request id that is text or null.
    """
    where = f"line {number} of the export"
    data = load_json(text, where=where, what="the line")
    if not isinstance(data, dict):
        raise _refused(where, f"is {type(data).__name__}, not a record object")
    _check_fields(data, where, _RECORD_FIELDS | {"history"}, _REQUIRED)
    try:
        scope = check_scope(data["scope"])
        scope_id = check_id(data["scope_id"], f"{scope} id")
        name = check_record_name(data["name"])
    except InvalidIdError as exc:
        raise _refused(where, str(exc)) from None
    at = f"{where} ({record_where(scope, scope_id, name)})"
    version = _whole(data["version"], at, "version", 1, MAX_VERSION)
    _state_size(data["state"], at, "state", max_state_bytes)
    content = data.get("content")
    if content is not None and not isinstance(content, str):
        raise _refused(at, f"content must be text or null, not {type(content).__name__}")
    record = Record(scope, scope_id, name, version, data["state"], content,
                    _flag(data.get("deleted", False), at, "deleted"),
                    *(_time(data.get(f, 0.0), at, f)
                      for f in ("created_at", "updated_at", "accessed_at")))
    entries = data.get("history", [])
    if not isinstance(entries, list):
        raise _refused(at, f"history must be a list, not {type(entries).__name__}")
    history, versions = [], set()
    for i, entry in enumerate(entries):
        here = f"{at} history[{i}]"
        if not isinstance(entry, dict):
            raise _refused(here, f"is {type(entry).__name__}, not an object")
        _check_fields(entry, here, _HISTORY_FIELDS, _HISTORY_REQUIRED)
        entry_version = _whole(entry["version"], here, "version", 1, version)
        if entry_version in versions:
            raise _refused(here, f"version {entry_version} appears twice in the history")
        versions.add(entry_version)
        operation, request_id = entry["operation"], entry.get("request_id")
        if not isinstance(operation, str) or not operation:
            raise _refused(here, f"operation must be a name, not {short(operation)}")
        if request_id is not None and not isinstance(request_id, str):
            raise _refused(here, f"request_id must be text or null, not {short(request_id)}")
        _state_size(entry["state"], here, "state", max_state_bytes)
        history.append(HistoryEntry(entry_version, _time(entry["ts"], here, "ts"), operation,
                                    entry["state"], _flag(entry.get("deleted", False), here,
                                                          "deleted"), request_id))
    return record, history


def _refused(where: str, problem: str) -> ValidationError:
    return ValidationError(f"{where}: {problem}; nothing was imported", where="import",
                           reason=problem)


def _check_fields(data: dict, where: str, allowed: frozenset, required: tuple) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise _refused(where, f"unknown field {short(unknown[0], 40)}; a record has "
                              f"{', '.join(sorted(allowed))}")
    missing = [f for f in required if f not in data]
    if missing:
        raise _refused(where, f"the field {missing[0]!r} is missing")


def _whole(value: Any, where: str, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _refused(where, f"{field} must be an integer from {low} to {high}, not "
                              f"{short(value, 40)}")
    return value


def _time(value: Any, where: str, field: str) -> float:
    try:
        seconds = float(value) if isinstance(value, (int, float)) \
            and not isinstance(value, bool) else math.nan
    except OverflowError:  # an int too large for a float
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise _refused(where, f"{field} must be a time in seconds (a finite number >= 0), not "
                              f"{short(value, 40)}")
    return seconds


def _flag(value: Any, where: str, field: str) -> bool:
    if not isinstance(value, bool):
        raise _refused(where, f"{field} must be true or false, not {short(value, 40)}")
    return value


def _state_size(state: Any, where: str, field: str, limit: int | None) -> None:
    if limit is None:
        return
    size = len(dump_json(state, where).encode("utf-8"))
    if size > limit:
        raise _refused(where, f"{field} is {size:,} bytes, over the target store's limit of "
                              f"{limit:,} (open it with a larger max_state_bytes)")


def records_equal(a: Store, b: Store) -> list[str]:
    """Differences between two stores' records and histories (empty list: equal)."""
    problems = []
    left = {(r.scope, r.scope_id, r.name): r for r in a.list(include_deleted=True)}
    right = {(r.scope, r.scope_id, r.name): r for r in b.list(include_deleted=True)}
    for key in sorted(set(left) | set(right)):
        ra, rb = left.get(key), right.get(key)
        if ra is None or rb is None:
            problems.append(f"{key}: only in {'second' if ra is None else 'first'} store")
            continue
        if _comparable(ra) != _comparable(rb):
            problems.append(f"{key}: records differ")
        elif tuple(a.history(*key, limit=None)) != tuple(b.history(*key, limit=None)):
            problems.append(f"{key}: histories differ")
    return problems


def _comparable(record: Record) -> dict[str, Any]:
    data = record._asdict()
    data.pop("accessed_at")  # touched by reads (LRU), not part of the data
    return data


__all__ = ["check_line", "export_lines", "export_store", "import_store", "records_equal"]
