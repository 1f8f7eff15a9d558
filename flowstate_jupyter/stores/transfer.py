"""Export and import a whole store as JSON Lines, versions and history included.

One header line, then one line per record (tombstones too) with its kept history. Importing
writes each record with the same version, state, content, times and history, so a SQLite store
moved to PostgreSQL and back compares equal record by record. The change log is not exported:
it is a notification stream, not data.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import IO, Any

from ..errors import ValidationError
from .base import HistoryEntry, Record, Store, refuse_existing

FORMAT = "flowstate-export"
FORMAT_VERSION = 1


def export_lines(store: Store) -> Iterator[str]:
    """The export of ``store``, line by line (header first)."""
    yield json.dumps({"format": FORMAT, "version": FORMAT_VERSION, "source": store.url,
                      "exported_at": time.time()})
    for record in store.list(include_deleted=True):
        history = store.history(record.scope, record.scope_id, record.name, limit=None)
        line = record._asdict()
        line["history"] = [asdict(entry) for entry in reversed(history)]  # oldest first
        yield json.dumps(line, ensure_ascii=False)


def export_store(store: Store, out: IO[str]) -> int:
    """Write the export to ``out``; returns how many records were written."""
    count = -1
    for count, line in enumerate(export_lines(store)):
        out.write(line + "\n")
    return count


def import_store(store: Store, lines: IO[str] | list[str], *, replace: bool = False) -> int:
    """Load an export into ``store``; returns how many records were imported.

    The whole file is read and checked first: a file that is not a flowstate export, or a record
    that already exists in the target (``ResourceAlreadyExistsError``, unless ``replace=True``),
    is refused before anything is written.
    """
    iterator = iter(lines)
    try:
        header = json.loads(next(iterator))
    except (StopIteration, json.JSONDecodeError) as exc:
        raise ValidationError("not a flowstate export: the first line must be its JSON header",
                              where="import") from exc
    if header.get("format") != FORMAT:
        raise ValidationError(f"not a flowstate export (format {header.get('format')!r})",
                              where="import")
    if header.get("version") != FORMAT_VERSION:
        raise ValidationError(f"export format version {header.get('version')} is not "
                              f"supported (this version reads {FORMAT_VERSION})", where="import")
    entries = []
    for number, text in enumerate(iterator, start=2):
        if not text.strip():
            continue
        try:
            data = json.loads(text)
            history = [HistoryEntry(**entry) for entry in data.pop("history", [])]
            entries.append((Record(**data), history))
        except (json.JSONDecodeError, TypeError) as exc:
            raise ValidationError(f"line {number} of the export is not a record: {exc}",
                                  where="import") from exc
    if not replace:  # refuse before writing anything, so a refused import leaves no half
        for record, _ in entries:
            if store.read(record.scope, record.scope_id, record.name) is not None:
                refuse_existing(record)
    for record, history in entries:
        store.restore(record, history, replace=replace)
    return len(entries)


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
        elif a.history(*key, limit=None) != b.history(*key, limit=None):
            problems.append(f"{key}: histories differ")
    return problems


def _comparable(record: Record) -> dict[str, Any]:
    data = record._asdict()
    data.pop("accessed_at")  # touched by reads (LRU), not part of the data
    return data


__all__ = ["export_lines", "export_store", "import_store", "records_equal"]
