"""SQLite store: the default, one local file shared safely by kernels and processes.

As docs/concepts.md, 'Stores and what "committed" means' says: WAL journal, ``busy_timeout``
of 5 s, writes in ``BEGIN IMMEDIATE``, each compare-and-swap one conditional
``UPDATE ... WHERE version = ?``, ``synchronous=NORMAL`` (or ``FULL`` with
``durability="full"``). The file records its schema version; a file this code does
not understand is refused, untouched, with a message that says what to do. New folders and files
are created readable by their owner only (a shared existing file gets a warning).

Only SQLite ever opens the file, its WAL and its shared memory (see ``_inspect_existing``):
closing any other descriptor of the file would drop this process's locks and let another process
delete the WAL under it. Each store object has its own connection, and a re-entrant lock
serialises its use; across connections and processes SQLite's write lock does. Other processes'
(and other store objects') changes are noticed by a watcher thread that polls
``PRAGMA data_version`` (a cheap counter SQLite bumps when another connection commits).

Bounds: history per record in rows and bytes, the change log in items of bounded size (see
:class:`~flowstate_jupyter.stores.base.Store`), and the WAL in bytes (``_bound_wal``).

Speed. A write's history row and change-log row are inserted by triggers on ``records`` (temporary
ones, made per connection with this store's retention limits), so a committed write is one
statement from Python. ``commit_next`` (a handle writing on from the record it last committed)
is a single autocommit ``UPDATE ... WHERE version = ? AND updated_at = ?`` without reading; if
another writer got there first, nothing is written and the caller takes the ordinary path.
A plain ``write(..., expected=version)`` needs no read either: it is one
``UPDATE ... WHERE version = ? RETURNING`` and takes the ordinary path only when that misses.
``create`` (a record the writer believes new, such as a run's request record) is one ``INSERT``
in its transaction: the unique key refuses a record that exists.
"""

from __future__ import annotations

import builtins
import json
import os
import shlex
import sqlite3
import stat
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from threading import get_ident
from typing import Any
from urllib.parse import quote

from ..base.names import REQUEST, SESSION_META
from ..errors import FlowStateWarning, StoreError, VersionConflictError
from .base import (
    KEEP,
    Change,
    Expected,
    HistoryEntry,
    Record,
    _recent_after,
    _recent_limit,
    _recent_where,
    _Watcher,
    _WatchingStore,
    bounded_event_text,
    check_expected,
    default_event,
    dump_json,
    kept_history,
    prune_batch,
    record_where,
    refuse_existing,
)

APP_ID = "flowstate-jupyter"
_TOP = "\U0010ffff"  # sorts after every character: prefix range upper bound

DEFAULT_WAL_LIMIT_BYTES = 64 * 1024 * 1024
MIN_WAL_LIMIT_BYTES = 4 * 1024 * 1024
_WAL_CHECK_EVERY = 64  # writes of one store object between two looks at the WAL's size
_WAL_CHECKPOINT_WAIT_MS = 200  # how long a bounding checkpoint waits for other connections

# Every store object of this process opens its connection under this lock: the one moment this
# module holds a descriptor of the database file outside SQLite (creating a new, empty file with
# mode 0600) must not overlap another connection's first statement (see ``_connect``).
_OPENING = threading.Lock()

# ``records`` is an ordinary rowid table (schema 3): a row keeps up to ~4 KB in its page, where a
# WITHOUT ROWID row spills to an overflow page above ~1 KB (one more page written per commit).
# ``history_bytes`` (schema 5) is the size of the state JSON in the record's kept history.
_RECORDS_V3 = """
CREATE TABLE IF NOT EXISTS {table} (
    scope TEXT NOT NULL, scope_id TEXT NOT NULL, name TEXT NOT NULL,
    version INTEGER NOT NULL, state TEXT NOT NULL, content TEXT,
    deleted INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, accessed_at REAL NOT NULL,
    operation TEXT, request_id TEXT, event TEXT,
    UNIQUE (scope, scope_id, name)
);
CREATE INDEX IF NOT EXISTS records_by_name ON records (scope, name);
"""
# Schema 8: the by-name index leaves out the ``request`` scope, whose records (a run's request
# record and its request-scoped state) are found by id, by session (``records_runs``) or by a
# scan of the scope's range of the unique key, never by name alone: one B-tree fewer written
# per run (9.1 -> 8.1 WAL pages, about 4% of a 1-step run). A query uses it only when it names
# the scope as a literal (SQLite must see that the scope is not ``request``): see ``list``.
_BY_NAME_INDEX = ("CREATE INDEX IF NOT EXISTS records_by_name ON records (scope, name) "
                  "WHERE scope <> 'request'")
# ``run_listed`` (schema 9): whether a request record is in ``records_runs`` yet (see there).
_RECORDS = _RECORDS_V3.replace("event TEXT,\n",
                               "event TEXT, history_bytes INTEGER NOT NULL DEFAULT 0,\n"
                               "    run_listed INTEGER NOT NULL DEFAULT 0,\n"
                               ).replace(_RECORDS_V3.split(";")[1].strip(), _BY_NAME_INDEX)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS fs_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
""" + _RECORDS.format(table="records") + """
CREATE TABLE IF NOT EXISTS history (
    scope TEXT NOT NULL, scope_id TEXT NOT NULL, name TEXT NOT NULL, version INTEGER NOT NULL,
    ts REAL NOT NULL, operation TEXT NOT NULL, state TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0, request_id TEXT,
    PRIMARY KEY (scope, scope_id, name, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY, origin TEXT NOT NULL, event TEXT NOT NULL,
    version INTEGER, ts REAL
);
"""
# Schema 6: session bookkeeping records newest first (``list_recent``). Partial, so that only
# writes and touches of ``$meta`` records maintain it.
_RECENT_INDEX = ("CREATE INDEX IF NOT EXISTS records_recent ON records "
                 "(scope, max(updated_at, accessed_at) DESC, scope_id DESC) "
                 "WHERE name = '$meta'")
_SCHEMA += _RECENT_INDEX + ";\n"
# Schema 7: a session's ended runs, newest first (``ended_runs``, for retention), answered from
# the index alone. Partial, so that only writes of request records maintain it.
_RUNS_INDEX = ("CREATE INDEX IF NOT EXISTS records_runs ON records "
               "(json_extract(state, '$.session'), json_extract(state, '$.ended_at') DESC, "
               "scope_id DESC) WHERE scope = 'request' AND name = '$request' AND deleted = 0")
# Schema 9: a request record enters the index when a session's ended runs are next asked for,
# not when it is written. Every record is inserted with ``run_listed = 0``, the column's default
# (only request records matter); ``ended_runs`` first lists, in its transaction, the request
# records inserted since it last did, then reads the index. Those are found from the end of the
# table by rowid: a new row gets a rowid above every row in the table, so the request records
# not listed yet are exactly those above the highest listed one (listing lists them all; purging
# only removes rows; the upgrade lists every request record there is). The default, not the
# INSERT, says "not listed", so that a process of an older version still writing to an upgraded
# file keeps this true too. So a run writes no index entry (and evaluates no JSON for it): one
# B-tree page fewer a run, ~8 us of a 1-step run; the entries of a dozen runs are written
# together, on the run that checks retention. See docs/decisions.md,
# 'A run enters the runs index when retention next looks (SQLite schema 9)'.
_RUNS_INDEX_9 = _RUNS_INDEX.replace("deleted = 0", "deleted = 0 AND run_listed = 1")
_SCHEMA += _RUNS_INDEX_9 + ";\n"
_IS_RUN = "scope = 'request' AND name = '$request'"
_LIST_RUNS = (f"UPDATE records NOT INDEXED SET run_listed = 1 WHERE rowid > COALESCE(("
              f"SELECT rowid FROM records NOT INDEXED WHERE {_IS_RUN} AND run_listed = 1 "
              f"ORDER BY rowid DESC LIMIT 1), 0) AND {_IS_RUN} AND run_listed = 0")

_COLUMNS = "scope, scope_id, name, version, state, content, deleted, created_at, updated_at, " \
           "accessed_at"

# Schema 1 -> 2: the last write's operation, request id and change-log event live on the record,
# where the logging triggers find them.
_MIGRATE_FROM_1 = ("ALTER TABLE records ADD COLUMN operation TEXT",
                   "ALTER TABLE records ADD COLUMN request_id TEXT",
                   "ALTER TABLE records ADD COLUMN event TEXT")
# Schema 2 -> 3: ``records`` rebuilt as a rowid table (see _RECORDS), rows copied as they are.
_RECORD_COLUMNS = _COLUMNS + ", operation, request_id, event"
_MIGRATE_FROM_2 = (
    _RECORDS_V3.format(table="records_v3").split(";")[0],
    f"INSERT INTO records_v3 ({_RECORD_COLUMNS}) SELECT {_RECORD_COLUMNS} FROM records",
    "DROP TABLE records",
    "ALTER TABLE records_v3 RENAME TO records",
    _RECORDS_V3.split(";")[1])
# Schema 3 -> 4: a change-log row keeps its version and time in columns, so that the event text
# is written as the handle encoded it. Older rows have both inside the text, and NULL here.
_MIGRATE_FROM_3 = ("ALTER TABLE changes ADD COLUMN version INTEGER",
                   "ALTER TABLE changes ADD COLUMN ts REAL")
# Schema 4 -> 5: each record counts the bytes of state JSON its history keeps (the byte bound).
_BYTES = "length(CAST({} AS BLOB))"  # the UTF-8 size of a TEXT value
_RECOUNT_HISTORY_BYTES = (
    f"UPDATE records SET history_bytes = (SELECT COALESCE(SUM({_BYTES.format('h.state')}), 0) "
    f"FROM history AS h WHERE h.scope = records.scope AND h.scope_id = records.scope_id "
    f"AND h.name = records.name)")
_MIGRATE_FROM_4 = ("ALTER TABLE records ADD COLUMN history_bytes INTEGER NOT NULL DEFAULT 0",
                   _RECOUNT_HISTORY_BYTES)

#: The schema upgrades, in order: entry ``i`` takes a file from schema ``i + 1`` to ``i + 2``.
#: A file of any older schema is upgraded in place when opened, in one transaction. To change
#: the schema, append one entry; ``SCHEMA_VERSION`` follows.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    _MIGRATE_FROM_1,
    _MIGRATE_FROM_2,
    _MIGRATE_FROM_3,
    _MIGRATE_FROM_4,
    (_RECENT_INDEX,),  # 5 -> 6
    (_RUNS_INDEX,),  # 6 -> 7
    ("DROP INDEX IF EXISTS records_by_name", _BY_NAME_INDEX),  # 7 -> 8
    ("DROP INDEX IF EXISTS records_runs",  # 8 -> 9
     "ALTER TABLE records ADD COLUMN run_listed INTEGER NOT NULL DEFAULT 0",
     f"UPDATE records SET run_listed = 1 WHERE {_IS_RUN}", _RUNS_INDEX_9),
)
SCHEMA_VERSION = len(MIGRATIONS) + 1
#: The tables a flowstate store file must have.
_TABLES = frozenset({"fs_meta", "records", "history", "changes"})

# Per connection: every write that carries an event (all but imports and touches) gets its
# history row and change-log row from these triggers, and both are pruned a batch at a time
# (see ``prune_cutoff``). History is bounded in bytes too: the write itself adds its state's size
# to the record's ``history_bytes``; over ``history_limit_bytes``, the oldest versions go (never
# the newest) until the rest fit in three quarters of the bound, so that this, too, runs now and
# then rather than on every write.
#
# One trigger per kind of write does all of it: each trigger SQLite fires costs a call into a
# sub-program, taken or not. The pruning statements are guarded by conditions on ``new`` alone,
# which SQLite checks once, before it looks at any row.
_HISTORY_KEY = "scope = new.scope AND scope_id = new.scope_id AND name = new.name"
_PRUNE_ROWS = ("new.version > {history} AND (new.version - {history} - 1) % {history_batch} = 0")
_LOG_TRIGGERS = """
CREATE TEMP TRIGGER IF NOT EXISTS fs_log_{kind} AFTER {event} ON main.records
WHEN new.event IS NOT NULL AND NOT (new.scope = 'request' AND new.name = '$request') BEGIN
    INSERT INTO history (scope, scope_id, name, version, ts, operation, state, deleted,
                         request_id)
    VALUES (new.scope, new.scope_id, new.name, new.version, new.updated_at, new.operation,
            new.state, new.deleted, new.request_id);
    INSERT INTO changes (origin, event, version, ts)
    VALUES ('{origin}', new.event, new.version, new.updated_at);
    UPDATE records SET history_bytes = history_bytes - (
        SELECT COALESCE(SUM({state_bytes}), 0) FROM history WHERE {key}
            AND version <= new.version - {history} + {history_batch} - 1)
    WHERE {prune_rows} AND rowid = new.rowid;
    DELETE FROM history WHERE {prune_rows} AND {key}
        AND version <= new.version - {history} + {history_batch} - 1;
    DELETE FROM history WHERE new.history_bytes > {history_bytes} AND {key}
        AND version < new.version AND version <= (
            SELECT version FROM (
                SELECT version, SUM({state_bytes}) OVER (ORDER BY version DESC) AS kept
                FROM history WHERE {key} AND version < new.version)
            WHERE kept + {new_bytes} > {history_keep_bytes} ORDER BY version DESC LIMIT 1);
    UPDATE records SET history_bytes = {new_bytes} + (
        SELECT COALESCE(SUM({state_bytes}), 0) FROM history WHERE {key}
            AND version < new.version)
    WHERE new.history_bytes > {history_bytes} AND rowid = new.rowid;
END;
"""
# A run's request record keeps no history: its writes get their change-log row alone
# (docs/decisions.md, 'Request records keep no history').
_RUN_LOG_TRIGGERS = """
CREATE TEMP TRIGGER IF NOT EXISTS fs_log_run_{kind} AFTER {event} ON main.records
WHEN new.event IS NOT NULL AND new.scope = 'request' AND new.name = '$request' BEGIN
    INSERT INTO changes (origin, event, version, ts)
    VALUES ('{origin}', new.event, new.version, new.updated_at);
END;
"""
_PRUNE_CHANGES_TRIGGER = """
CREATE TEMP TRIGGER IF NOT EXISTS fs_prune_changes AFTER INSERT ON main.changes
WHEN new.seq > {changes} AND (new.seq - {changes} - 1) % {changes_batch} = 0 BEGIN
    DELETE FROM changes WHERE seq <= new.seq - {changes} + {changes_batch} - 1;
END;
"""
# The key, the values ``_prepare`` gives in its order (the UPDATE's), then created_at.
_INSERT = ("INSERT INTO records (scope, scope_id, name, version, state, content, deleted, "
           "updated_at, accessed_at, operation, request_id, event, history_bytes, created_at) "
           "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
_UPDATE = ("UPDATE records SET version = ?, state = ?, content = ?, deleted = ?, updated_at = ?, "
           "accessed_at = ?, operation = ?, request_id = ?, event = ?, "
           "history_bytes = history_bytes + ? "
           "WHERE scope = ? AND scope_id = ? AND name = ? AND version = ?")
_UPDATE_KNOWN = _UPDATE + " AND updated_at = ?"  # commit_next: exactly the record it knows
# write(expected=v) of a live record: created_at (and a kept content) come back from the row.
_WRITE_LIVE = _UPDATE + " AND deleted = 0 RETURNING content, created_at"
_WRITE_LIVE_KEEP = _WRITE_LIVE.replace("content = ?, ", "")
_HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)
_SELECT = f"SELECT {_COLUMNS} FROM records WHERE scope = ? AND scope_id = ? AND name = ?"
_PURGE_CHUNK = 200  # scope instances per purging statement (bound parameters stay few)
_TOUCH = "UPDATE records SET accessed_at = ? WHERE scope = ? AND scope_id = ? AND name = ?"

def _schema_version(value: object, path: Path) -> int:
    """The schema version a file records, or :class:`StoreError` if it is not a number."""
    try:
        return int(str(value))
    except ValueError:
        raise StoreError(f"{path} is a damaged flowstate store: its schema version is "
                         f"{value!r}, not a number; restore it from a backup or an export "
                         f"(nothing was changed)") from None


def _to_event(text: str, version: int | None, ts: float | None) -> dict:
    """A change-log event as read back (rows of schema 3 and older carry version and ts inside)."""
    event = json.loads(text)
    if version is not None:
        event["version"] = version
        event["ts"] = ts
    return event


def _stamped(event: dict, record: Record) -> dict:
    """The event as delivered: the change's event with the version and time of its write."""
    return {**event, "version": record.version, "ts": record.updated_at}


def _make_folders(folder: Path) -> None:
    """Create ``folder`` and every missing folder above it, each readable by the owner only.

    (``os.makedirs(mode=...)`` gives the mode to the last folder only.)
    """
    missing = []
    while not folder.exists():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:  # made by someone else meanwhile
            pass


def _processes_on_deleted_files(files: list[str]) -> list[tuple[int, str, str]]:
    """(pid, file, command) of the processes that hold one of ``files`` open after its deletion.

    Linux only (``/proc``), and only the processes this user may look into (all, for root);
    elsewhere, nothing is found. A store's last connection deletes its WAL just before closing
    it, so what is found is looked at again a moment later and reported only if still there.
    """
    wanted = {os.path.realpath(name) + " (deleted)": name for name in files}

    def scan(pids: list[str]) -> dict[int, str]:
        found = {}
        for pid in pids:
            folder = f"/proc/{pid}/fd"
            try:
                fds = os.listdir(folder)
            except OSError:  # gone, or another user's
                continue
            for fd in fds:
                try:
                    target = os.readlink(f"{folder}/{fd}")
                except OSError:
                    continue
                if target in wanted:
                    found[int(pid)] = wanted[target]
                    break
        return found

    try:
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []
    first = scan(pids)
    if not first:
        return []
    time.sleep(0.2)
    still = scan([str(pid) for pid in first])
    result = []
    for pid, name in sorted(still.items()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                command = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            command = "?"
        result.append((pid, name, command[:120]))
    return result


def _literal(text: str) -> str:
    """``text`` as an SQL string literal (for the few queries whose index needs one)."""
    return "'" + text.replace("'", "''") + "'"


def _to_record(row: tuple) -> Record:
    return Record(row[0], row[1], row[2], row[3], json.loads(row[4]), row[5], bool(row[6]),
                  row[7], row[8], row[9])


class SQLiteStore(_WatchingStore):
    """A flowstate store in one SQLite file. Use :func:`flowstate_jupyter.open_store`.

    Options beyond the shared ones (:class:`~flowstate_jupyter.stores.base.Store`):
    ``durability`` (``"normal"`` or ``"full"``), ``timeout`` (seconds to wait for another
    writer, default 5), ``poll_interval`` (how often the watcher looks for other processes'
    changes, default 0.04 s) and ``wal_limit_bytes`` (the WAL's bound, default 64 MiB: once it
    passes a quarter of that, the next write that notices checkpoints it back to empty).
    """

    def __init__(self, path: str | os.PathLike, *, durability: str = "normal",
                 timeout: float = 5.0, poll_interval: float = 0.04,
                 wal_limit_bytes: int = DEFAULT_WAL_LIMIT_BYTES, **options: Any) -> None:
        super().__init__(**options)
        if durability not in ("normal", "full"):
            raise ValueError(f"durability must be 'normal' or 'full', not {durability!r}")
        if not isinstance(wal_limit_bytes, int) or isinstance(wal_limit_bytes, bool) \
                or wal_limit_bytes < MIN_WAL_LIMIT_BYTES:
            raise ValueError(f"wal_limit_bytes must be an int >= {MIN_WAL_LIMIT_BYTES} "
                             f"(4 MiB), not {wal_limit_bytes!r}")
        self.path = Path(path).expanduser().absolute()
        self.url = f"sqlite:///{self.path}"
        self.durability = durability
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.wal_limit_bytes = wal_limit_bytes
        self._wal_path = f"{self.path}-wal"
        self._writes = 0  # writes committed through this object (the WAL is looked at now and then)
        self._meta_writes = 0  # writes through this object that may change a $meta record
        self._lock = threading.RLock()
        self._depth = 0  # open (possibly nested) write transactions in this process
        # The thread whose write transaction is open (it holds ``_lock``), else None: set and
        # cleared under the lock, so a thread that finds its own id here holds the lock already.
        self._owner: int | None = None
        self._pending: list[dict] = []  # events of the open transaction, sent after commit
        self._watcher = None
        self._watch_guard = self._lock  # the watcher's start reads the change log on _conn
        with _OPENING:
            self._inspect_existing()
            self._conn = self._connect()
        self._cursor = self._conn.cursor()  # reused by the hot write path (saves making one)
        self._init_schema()

    # -- opening -----------------------------------------------------------------------------
    # Only SQLite ever opens the database file, its WAL or its shared memory (one exception,
    # in ``_connect``). On POSIX, closing *any* descriptor of a file drops every fcntl lock the
    # process holds on it, those of its live SQLite connections included; another process
    # closing its store would then believe it was the last, delete the WAL under this one, and
    # every write this process made afterwards would be lost. SQLite's own connections share
    # their locks within a process and never do that, so the checks below use stat and SQLite.
    def _inspect_existing(self) -> None:
        """Refuse, without changing it, a file that is not a flowstate store we understand."""
        path = self.path
        if path.is_dir():
            raise StoreError(f"{path} is a folder, not a store file; give a file path such as "
                             f"sqlite:///{path}/flowstate.db")
        try:
            if not path.exists() or path.stat().st_size == 0:
                return
        except OSError as exc:
            raise StoreError(f"cannot read store file {path}: {exc.strerror}") from exc
        self._check_writable()  # else the read-only look below fails as if the file were corrupt
        try:
            conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True,
                                   timeout=self.timeout)
            try:
                tables = {r[0] for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")}
                meta = dict(conn.execute("SELECT key, value FROM fs_meta")) \
                    if "fs_meta" in tables else None
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            text = str(exc)
            if "locked" in text or "busy" in text:
                raise self._store_error(exc) from exc
            if "not a database" in text:  # SQLITE_NOTADB: SQLite found no database header
                raise StoreError(
                    f"{path} is not a SQLite database, or its header is corrupt ({exc}), so "
                    f"not a flowstate store; move it away (or restore it from a backup) or "
                    f"open another path (nothing was changed)") from exc
            raise StoreError(f"{path} is corrupt or not a database ({exc}); restore it from a "
                             f"backup or open another path (nothing was changed)") from exc
        if not tables:
            return  # an empty SQLite database: becomes a new store
        if meta is None or meta.get("app") != APP_ID:
            raise StoreError(f"{path} is a SQLite database but not a flowstate store (tables: "
                             f"{', '.join(sorted(tables))}); open another path")
        missing = _TABLES - tables
        if missing:
            raise StoreError(f"{path} is a damaged flowstate store: table(s) "
                             f"{', '.join(sorted(missing))} are missing; restore it from a "
                             f"backup or an export (nothing was changed)")
        found = _schema_version(meta.get("schema_version"), path)
        if not 1 <= found <= SCHEMA_VERSION:
            newer = found > SCHEMA_VERSION
            raise StoreError(
                f"{path} has flowstate store schema version {found}; this flowstate-jupyter "
                f"understands {SCHEMA_VERSION}. "
                + ("Upgrade flowstate-jupyter to open it." if newer else
                   "Export it with the version that wrote it, then import it here."))

    def _check_writable(self) -> None:
        path = self.path
        if not os.access(path, os.R_OK | os.W_OK) or not os.access(path.parent, os.W_OK):
            raise StoreError(f"store {path} is not writable by this user (SQLite needs to write "
                             f"the file and its folder); fix the permissions or open another path")

    def _connect(self) -> sqlite3.Connection:
        """Open the connection (under ``_OPENING``), creating folders and file owner-only.

        Folders are made 0700, each one created; a new file is created 0600 here, empty and with
        ``O_EXCL``, so that SQLite, which gives the WAL and shared-memory files the database
        file's mode, makes those 0600 too. That descriptor is the one exception to "only SQLite
        opens the file": ``O_EXCL`` guarantees the file is new, so no connection anywhere holds
        a lock on it, and ``_OPENING`` keeps every other store object of this process from
        taking one before the descriptor is closed. A file that was there already and that
        other users can read gets a :class:`FlowStateWarning` saying how to fix it.
        """
        path = self.path
        try:
            _make_folders(path.parent)
            try:
                if path.exists():
                    raise FileExistsError
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            except FileExistsError:  # there already (or just made by another process)
                self._warn_if_shared()
        except OSError as exc:
            raise StoreError(f"cannot create store file {path}: {exc.strerror}; the folder must "
                             f"be writable (or set FLOWSTATE_STORE to another place)") from exc
        self._check_writable()
        try:
            conn = sqlite3.connect(str(path), timeout=self.timeout, isolation_level=None,
                                   check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"{path}: SQLite refused WAL mode (got {mode!r}); put the store "
                                 f"on a local disk")
            sync = "FULL" if self.durability == "full" else "NORMAL"
            conn.execute(f"PRAGMA synchronous = {sync}")
            # a WAL that grew past the checkpoint trigger is cut back when it next starts over
            conn.execute(f"PRAGMA journal_size_limit = {self.wal_limit_bytes // 4}")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open store {path}: {exc}") from exc
        return conn

    def _files(self) -> list[str]:
        """The database file, its WAL and its shared memory (whether they exist or not)."""
        return [str(self.path), f"{self.path}-wal", f"{self.path}-shm"]

    def _shared_files(self) -> list[tuple[str, int]]:
        """(file, mode) of the store's files that other users may read or write."""
        shared = []
        for name in self._files():
            try:
                mode = stat.S_IMODE(os.stat(name).st_mode)
            except OSError:
                continue
            if mode & 0o077:
                shared.append((name, mode))
        return shared

    def _warn_if_shared(self) -> None:
        shared = self._shared_files()
        if shared:
            names = ", ".join(f"{name} (mode {oct(mode)[2:]})" for name, mode in shared)
            warnings.warn(FlowStateWarning(
                f"{names} can be read or written by other users; make the store owner-only: "
                f"chmod 600 {' '.join(shlex.quote(name) for name, _ in shared)}"),
                stacklevel=5)

    def _init_schema(self) -> None:
        def create(conn: sqlite3.Connection) -> None:
            if not conn.execute("SELECT name FROM sqlite_master WHERE name = 'fs_meta'").fetchone():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.executemany("INSERT INTO fs_meta (key, value) VALUES (?, ?)",
                                 [("app", APP_ID), ("schema_version", str(SCHEMA_VERSION))])
                return
            row = conn.execute("SELECT value FROM fs_meta "
                               "WHERE key = 'schema_version'").fetchone()
            found = _schema_version(row[0] if row else None, self.path)
            if found == SCHEMA_VERSION:  # checked under the write lock: another process won
                return
            for step in MIGRATIONS[found - 1:]:
                for statement in step:
                    conn.execute(statement)
            conn.execute("UPDATE fs_meta SET value = ? WHERE key = 'schema_version'",
                         (str(SCHEMA_VERSION),))

        self._transaction(create)
        limits = {"origin": self.origin, "key": _HISTORY_KEY,
                  "history": self.history_limit, "history_batch": prune_batch(self.history_limit),
                  "prune_rows": _PRUNE_ROWS.format(
                      history=self.history_limit,
                      history_batch=prune_batch(self.history_limit)),
                  "history_bytes": self.history_limit_bytes,
                  "history_keep_bytes": self.history_limit_bytes * 3 // 4,
                  "state_bytes": _BYTES.format("state"), "new_bytes": _BYTES.format("new.state"),
                  "changes": self.changelog_limit,
                  "changes_batch": prune_batch(self.changelog_limit)}
        script = "".join(template.format(kind=kind, event=event, **limits)
                         for template in (_LOG_TRIGGERS, _RUN_LOG_TRIGGERS)
                         for kind, event in (("insert", "INSERT"), ("update", "UPDATE OF version")))
        script += _PRUNE_CHANGES_TRIGGER.format(**limits)
        for statement in script.split("END;"):
            if statement.strip():
                self._conn.execute(statement + "END;")

    # -- plumbing ----------------------------------------------------------------------------
    def _transaction(self, body: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``body`` in ``BEGIN IMMEDIATE`` (or a savepoint when nested); commit or roll back."""
        with self._lock:
            if self._depth:
                return self._nested(body)
            try:
                self._cursor.execute("BEGIN IMMEDIATE")
            except sqlite3.DatabaseError as exc:
                raise self._store_error(exc) from exc
            self._owner = get_ident()
            self._depth = 1
            try:
                result = body(self._conn)
            except BaseException as exc:
                self._depth = 0
                self._owner = None
                self._rollback()
                if isinstance(exc, sqlite3.DatabaseError):  # damage, say: a library error
                    raise self._store_error(exc) from exc
                raise
            self._depth = 0
            self._owner = None
            try:
                self._cursor.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                self._rollback()
                raise self._store_error(exc) from exc
            events, self._pending = self._pending, []
            self._writes += 1
            if not self._writes % _WAL_CHECK_EVERY:
                self._bound_wal()
        # delivered once the lock is let go
        self._deliver(events)
        return result

    def _nested(self, body: Callable[[sqlite3.Connection], Any]) -> Any:
        """``_transaction`` inside this thread's open write: ``body`` in a savepoint."""
        conn = self._conn
        pending_before = len(self._pending)
        conn.execute("SAVEPOINT fs_nested")
        self._depth += 1
        try:
            result = body(conn)
        except BaseException as exc:
            self._depth -= 1
            self._rollback_nested(pending_before)
            if isinstance(exc, sqlite3.DatabaseError):
                raise self._store_error(exc) from exc
            raise
        self._depth -= 1
        conn.execute("RELEASE fs_nested")
        return result

    def _bound_wal(self) -> None:
        """Checkpoint the WAL back to empty if it has grown past a quarter of its bound.

        SQLite's own checkpoints (every 1,000 pages) copy the WAL into the database but start it
        over only when no reader is inside it, which several busy writers never allow: the WAL
        then grows for as long as they write (hundreds of MB in seconds). A ``TRUNCATE``
        checkpoint waits for those readers and starts the WAL over at zero bytes. It cannot
        start while another connection checkpoints (busy writers' connections checkpoint after
        nearly every commit), and SQLite does not wait for that, so it is tried again every
        millisecond. Each store object looks every ``_WAL_CHECK_EVERY`` writes (a ``stat``);
        the checkpoint gives up after ``_WAL_CHECKPOINT_WAIT_MS`` (a reader holding a
        transaction open) and the next look tries again. Called with the lock held, outside any
        transaction.
        """
        try:
            if os.stat(self._wal_path).st_size <= self.wal_limit_bytes // 4:
                return
        except OSError:
            return
        conn = self._conn
        deadline = time.monotonic() + _WAL_CHECKPOINT_WAIT_MS / 1000
        try:
            conn.execute(f"PRAGMA busy_timeout = {_WAL_CHECKPOINT_WAIT_MS // 4}")
            try:
                while conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] \
                        and time.monotonic() < deadline:
                    time.sleep(0.001)
            finally:
                conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        except sqlite3.Error:
            pass  # locked: the next look tries again

    def _rollback_nested(self, pending_before: int) -> None:
        try:
            self._conn.execute("ROLLBACK TO fs_nested")
            self._conn.execute("RELEASE fs_nested")
        except sqlite3.Error:
            pass
        del self._pending[pending_before:]

    def _rollback(self) -> None:
        self._pending.clear()
        try:
            self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def _store_error(self, exc: sqlite3.Error) -> StoreError:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return StoreError(f"store {self.path} stayed locked by another process for more "
                              f"than {self.timeout:g} s; retry, or find the process holding "
                              f"it (a long-running write or an open transaction)")
        if isinstance(exc, sqlite3.OperationalError) and "no such" not in text:
            return StoreError(f"store {self.path}: {text}")
        return StoreError(f"store {self.path} is damaged or was changed by another program "
                          f"({text}); run `flowstate doctor`, and restore the file from a backup "
                          f"or an export")

    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        self._check_open()
        with self._lock:
            try:
                return self._cursor.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as exc:
                raise self._store_error(exc) from exc

    # -- reading -----------------------------------------------------------------------------
    def read(self, scope: str, scope_id: str, name: str = "") -> Record | None:
        rows = self._query(f"SELECT {_COLUMNS} FROM records "
                           f"WHERE scope = ? AND scope_id = ? AND name = ?",
                           (scope, scope_id, name))
        return _to_record(rows[0]) if rows else None

    def list(self, scope: str | None = None, scope_id: str | None = None, *,
             prefix: str = "", name: str | None = None,
             include_deleted: bool = False) -> builtins.list[Record]:
        where, params = [], []
        # a literal where it can be one: see _BY_NAME_INDEX (SQL text cannot hold a NUL)
        if scope is not None and scope != "request" and "\x00" not in scope:
            where.append(f"scope = {_literal(scope)}")
        elif scope is not None:
            where.append("scope = ?")
            params.append(scope)
        for column, value in (("scope_id", scope_id), ("name", name)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if prefix:  # a range, not LIKE: % and _ stay literal and the index is used
            where.append("name >= ? AND name < ?")
            params += [prefix, prefix + _TOP]
        if not include_deleted:
            where.append("deleted = 0")
        sql = f"SELECT {_COLUMNS} FROM records"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY scope, scope_id, name"
        return [_to_record(r) for r in self._query(sql, tuple(params))]

    def list_recent(self, scope: str, name: str, *, where: Mapping[str, Any] | None = None,
                    limit: int | None = 100, after: tuple[float, str] | None = None,
                    ) -> builtins.list[Record]:
        checks = _recent_where(where)
        cursor = _recent_after(after)
        _recent_limit(limit)
        # the name as a literal: SQLite uses the partial index only for a query that names it
        sql = [f"SELECT {_COLUMNS} FROM records WHERE scope = ? AND name = {_literal(name)} "
               f"AND deleted = 0"]
        params: builtins.list[Any] = [scope]
        for field_name, value in checks:
            path = f"$.{field_name}"
            if value is None or isinstance(value, bool):
                sql.append("json_type(state, ?) = ?")
                params += [path, "null" if value is None else str(value).lower()]
            else:
                sql.append("json_type(state, ?) = ? AND json_extract(state, ?) = ?")
                params += [path, "text" if isinstance(value, str) else "integer", path, value]
        if cursor is not None:  # (the first term is the one SQLite can seek the index with)
            sql.append("max(updated_at, accessed_at) <= ? "
                       "AND (max(updated_at, accessed_at), scope_id) < (?, ?)")
            params += (cursor[0], *cursor)
        query = " AND ".join(sql) + (" ORDER BY max(updated_at, accessed_at) DESC, "
                                     "scope_id DESC LIMIT ?")
        params.append(-1 if limit is None else limit)
        return [_to_record(r) for r in self._query(query, tuple(params))]

    def ended_runs(self, session_id: str, *, skip: int = 0) -> builtins.list[str]:
        self._check_open()

        def body(conn: sqlite3.Connection) -> builtins.list[str]:
            conn.execute(_LIST_RUNS)  # the request records written since the last look
            # the expressions as the index has them (records_runs): the query reads it only
            rows = conn.execute(
                f"SELECT scope_id FROM records WHERE {_IS_RUN} AND deleted = 0 "
                f"AND run_listed = 1 AND json_extract(state, '$.session') = ? "
                f"AND json_extract(state, '$.ended_at') IS NOT NULL "
                f"ORDER BY json_extract(state, '$.ended_at') DESC, scope_id DESC "
                f"LIMIT -1 OFFSET ?", (session_id, skip)).fetchall()
            return [row[0] for row in rows]

        return self._transaction(body)

    def history(self, scope: str, scope_id: str, name: str = "", *,
                limit: int | None = None) -> builtins.list[HistoryEntry]:
        rows = self._query(
            "SELECT version, ts, operation, state, deleted, request_id FROM history "
            "WHERE scope = ? AND scope_id = ? AND name = ? ORDER BY version DESC LIMIT ?",
            (scope, scope_id, name, -1 if limit is None else limit))
        return [HistoryEntry(r[0], r[1], r[2], json.loads(r[3]), bool(r[4]), r[5]) for r in rows]

    def changes(self, after: int = 0, *,
                limit: int | None = None) -> builtins.list[tuple[int, dict]]:
        rows = self._query("SELECT seq, event, version, ts FROM changes WHERE seq > ? "
                           "ORDER BY seq LIMIT ?", (after, -1 if limit is None else limit))
        return [(row[0], _to_event(*row[1:])) for row in rows]

    def _meta_token(self) -> object | None:
        # SQLite's data_version changes when another connection commits (a store object in
        # this process or another); this object's own writes of $meta records are counted.
        if self._closed:
            raise self._closed_error()
        with self._lock:
            if self._depth:  # inside a write: its uncommitted changes count too; read instead
                return None
            try:
                version = self._cursor.execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.DatabaseError as exc:
                raise self._store_error(exc) from exc
            return version, self._meta_writes

    # -- writing -----------------------------------------------------------------------------
    def touch(self, scope: str, scope_id: str, name: str) -> None:
        if self._closed:
            raise self._closed_error()
        params = (self._now(), scope, scope_id, name)
        if self._owner == get_ident():
            # inside this thread's write (a run's last one touches its session): one statement
            # of its transaction, whose lock this thread holds already (docs/decisions.md,
            # 'A store object takes a lock only where it orders something')
            self._cursor.execute(_TOUCH, params)
            return
        with self._lock:  # (any other thread's write has ended once we hold it)
            try:  # one statement, committed on its own
                self._cursor.execute(_TOUCH, params)
            except sqlite3.DatabaseError as exc:
                raise self._store_error(exc) from exc
            self._writes += 1
            if not self._writes % _WAL_CHECK_EVERY:
                self._bound_wal()

    def update(self, scope: str, scope_id: str, name: str,
               fn: Callable[[Record | None], Change | None]) -> Record | None:
        self._check_open()
        key = (scope, scope_id, name)

        def body(conn: sqlite3.Connection) -> Record | None:
            row = conn.execute(_SELECT, key).fetchone()
            before = _to_record(row) if row else None
            change = fn(before)
            if change is None:
                return None
            record, event, params = self._prepare(key, change, before)
            if before is None:
                try:
                    conn.execute(_INSERT, (*key, *params, record.created_at))
                except sqlite3.IntegrityError as exc:  # created re-entrantly from inside fn
                    raise VersionConflictError(f"{record_where(*key)}: created while it was "
                                               f"being written", current=1) from exc
            elif conn.execute(_UPDATE, (*params, *key, before.version)).rowcount != 1:
                current = conn.execute("SELECT version FROM records WHERE scope = ? AND "
                                       "scope_id = ? AND name = ?", key).fetchone()
                raise VersionConflictError(
                    f"{record_where(*key)}: version {before.version} is no longer current",
                    current=current[0] if current else None)
            self._pending.append(_stamped(event, record))
            return record

        return self._transaction(body)

    def create(self, scope: str, scope_id: str, name: str,
               fn: Callable[[Record | None], Change | None]) -> Record | None:
        # One INSERT, no read: the unique key refuses a record that exists.
        if self._closed:
            raise self._closed_error()
        key = (scope, scope_id, name)

        def body(conn: sqlite3.Connection) -> Record | None:
            change = fn(None)
            if change is None:
                return None
            record, event, params = self._prepare(key, change, None)
            try:
                self._cursor.execute(_INSERT, (*key, *params, record.created_at))
            except sqlite3.IntegrityError as exc:  # it exists (or fn created it re-entrantly)
                row = conn.execute(_SELECT, key).fetchone()
                check_expected(_to_record(row) if row else None, "absent", record_where(*key))
                raise VersionConflictError(f"{record_where(*key)}: created while it was "
                                           f"being written", current=1) from exc
            self._pending.append(_stamped(event, record))
            return record

        return self._transaction(body)

    def write(self, scope: str, scope_id: str, name: str, state: Any, *,
              expected: Expected = "any", operation: str = "set", content: Any = KEEP,
              event: dict | None = None, request_id: str | None = None) -> Record:
        if type(expected) is int and expected > 0 and _HAS_RETURNING:
            self._check_open()
            change = Change(state=state, operation=operation, content=content, event=event,
                            request_id=request_id)
            record = self._try_write((scope, scope_id, name), expected, change)
            if record is not None:
                return record
        return super().write(scope, scope_id, name, state, expected=expected,
                             operation=operation, content=content, event=event,
                             request_id=request_id)

    def _try_write(self, key: tuple[str, str, str], expected: int,
                   change: Change) -> Record | None:
        """Commit ``change`` as version ``expected + 1`` with one statement, without reading.

        The UPDATE matches only if version ``expected`` is the live stored record, which is all
        ``expected`` asks. ``None``: nothing was written and the ordinary path must run (it
        raises the conflict, or the caller is already inside a transaction).
        """
        # The stored record as far as this write needs it; content and created_at are read
        # back from the updated row.
        live = Record(*key, expected, None, None, False, 0.0, 0.0, 0.0)
        with self._lock:
            if self._depth:
                return None
            record, event, params = self._prepare(key, change, live, (*key, expected))
            keep = change.content is KEEP
            sql = _WRITE_LIVE_KEEP if keep else _WRITE_LIVE
            if keep:
                params = params[:2] + params[3:]
            try:
                # fetchall, not fetchone: the statement (and its autocommit) must finish here
                rows = self._cursor.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as exc:
                raise self._store_error(exc) from exc
            if not rows:
                return None
            row = rows[0]
            self._writes += 1
            if not self._writes % _WAL_CHECK_EVERY:
                self._bound_wal()
        if self._subs.callbacks:  # (the delivered event is built only for someone to get it)
            self._deliver((_stamped(event, record),))
        return record._replace(content=row[0], created_at=row[1])

    def commit_next(self, known: Record, change: Change) -> Record | None:
        self._check_open()
        with self._lock:
            if self._depth or known.deleted:  # inside another write: take part in it instead
                return None
            key = known[:3]  # (scope, scope_id, name)
            record, event, params = self._prepare(key, change, known,
                                                  (*key, known.version, known.updated_at))
            try:
                if self._cursor.execute(_UPDATE_KNOWN, params).rowcount != 1:
                    return None
            except sqlite3.DatabaseError as exc:
                raise self._store_error(exc) from exc
            self._writes += 1
            if not self._writes % _WAL_CHECK_EVERY:
                self._bound_wal()
        if self._subs.callbacks:
            self._deliver((_stamped(event, record),))
        return record

    def _prepare(self, key: tuple[str, str, str], change: Change, before: Record | None,
                 condition: tuple = ()) -> tuple[Record, dict, tuple]:
        """The committed record, its event (without version and ts: see ``_stamped``) and the
        UPDATE's SET values for ``change``, followed by the ``condition`` values (the WHERE
        clause's)."""
        if key[2] == SESSION_META:
            self._meta_writes += 1
        text = change.text
        if text is None:
            text = dump_json(change.state, record_where(*key))
        if len(text) > self.max_state_bytes // 4:  # else it cannot be over the limit
            self._check_size(text, record_where(*key))
        now = self._now()
        content = (before.content if before else None) if change.content is KEEP \
            else change.content
        version = before.version + 1 if before is not None else change.first_version or 1
        event = change.event
        event_text = change.event_text
        if event is None:
            event = default_event(*key, change, existed=before is not None and not before.deleted)
            event_text = None
        if event_text is None:
            event_text = dump_json(event, key, "event")
        if len(event_text) * 4 > self.changelog_item_bytes:  # else it cannot be over
            event_text = bounded_event_text(event_text, event, self.changelog_item_bytes)
        # The change-log row gets version and ts from the record's columns (see _LOG_TRIGGERS);
        # the last value adds the state's UTF-8 size to the record's history_bytes.
        # (a run's request record keeps no history: nothing to count)
        params = (version, text, content, int(change.delete), now, now, change.operation,
                  change.request_id, event_text,
                  0 if key[2] == REQUEST and key[0] == "request" else
                  len(text) if text.isascii() else len(text.encode("utf-8")), *condition)
        # (tuple.__new__: a named tuple's own __new__ is a Python function, a frame per write)
        record = tuple.__new__(Record, (*key, version, change.state, content, change.delete,
                                        before.created_at if before is not None else now,
                                        now, now))
        return record, event, params

    # -- maintenance ---------------------------------------------------------------------------
    def restore(self, record: Record, history: builtins.list[HistoryEntry], *,
                replace: bool = False) -> None:
        self._check_open()
        key = (record.scope, record.scope_id, record.name)
        where = record_where(*key)
        text = dump_json(record.state, where)
        texts = [dump_json(e.state, where) for e in history]
        rows = [(*key, history[i].version, history[i].ts, history[i].operation, texts[i],
                 int(history[i].deleted), history[i].request_id)
                for i in kept_history(history, texts, self.history_limit,
                                      self.history_limit_bytes)]
        history_bytes = sum(len(row[6].encode("utf-8")) for row in rows)

        def body(conn: sqlite3.Connection) -> None:
            if record.name == SESSION_META:
                self._meta_writes += 1
            if conn.execute("SELECT 1 FROM records WHERE scope = ? AND scope_id = ? AND name = ?",
                            key).fetchone():
                if not replace:
                    refuse_existing(record)
                conn.execute("DELETE FROM history WHERE scope = ? AND scope_id = ? AND name = ?",
                             key)
            conn.execute(f"INSERT OR REPLACE INTO records ({_COLUMNS}, history_bytes) "
                         f"VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                         (*key, record.version, text, record.content, int(record.deleted),
                          record.created_at, record.updated_at, record.accessed_at,
                          history_bytes))
            conn.executemany("INSERT INTO history (scope, scope_id, name, version, ts, "
                             "operation, state, deleted, request_id) VALUES (?,?,?,?,?,?,?,?,?)",
                             rows)

        self._transaction(body)

    def purge(self, scope: str, scope_ids: Iterable[str], *,
              names: Iterable[str] | None = None, only_deleted: bool = False) -> int:
        self._check_open()
        ids = list(scope_ids)
        wanted = None if names is None else list(names)
        only = " AND deleted = 1" if only_deleted else ""

        def body(conn: sqlite3.Connection) -> int:
            if scope != "request":  # (retention's purges of runs leave sessions alone)
                self._meta_writes += 1
            removed = 0
            if wanted is None and not only_deleted:  # whole scope instances: a statement
                for at in range(0, len(ids), _PURGE_CHUNK):  # per table per chunk of them
                    chunk = ids[at:at + _PURGE_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    removed += conn.execute(f"DELETE FROM records WHERE scope = ? AND "
                                            f"scope_id IN ({marks})", (scope, *chunk)).rowcount
                    conn.execute(f"DELETE FROM history WHERE scope = ? AND scope_id IN ({marks})",
                                 (scope, *chunk))
                return removed
            for scope_id in ids:
                targets = wanted if wanted is not None else [r[0] for r in conn.execute(
                    "SELECT name FROM records WHERE scope = ? AND scope_id = ? AND deleted = 1",
                    (scope, scope_id))]
                for name in targets:
                    key = (scope, scope_id, name)
                    if conn.execute("DELETE FROM records WHERE scope = ? AND scope_id = ? AND "
                                    "name = ?" + only, key).rowcount:
                        removed += 1
                        conn.execute("DELETE FROM history WHERE scope = ? AND scope_id = ? AND "
                                     "name = ?", key)
            return removed

        return self._transaction(body)
    def restore_many(self, items: Iterable[tuple[Record, Iterable[HistoryEntry]]], *,
                     replace: bool = False) -> int:
        self._check_open()
        pairs = [(record, list(history)) for record, history in items]

        def body(conn: sqlite3.Connection) -> None:
            for record, history in pairs:  # each one a savepoint inside this transaction
                self.restore(record, history, replace=replace)

        self._transaction(body)
        return len(pairs)

    def prune_history(self, keep: int) -> int:
        self._check_open()

        def body(conn: sqlite3.Connection) -> int:
            removed = conn.execute(
                "DELETE FROM history WHERE version <= (SELECT MAX(h.version) FROM history AS h "
                "WHERE h.scope = history.scope AND h.scope_id = history.scope_id "
                "AND h.name = history.name) - ?", (keep,)).rowcount
            if removed:
                conn.execute(_RECOUNT_HISTORY_BYTES)
            return removed

        return self._transaction(body)

    def doctor(self) -> dict:
        def one(sql: str) -> Any:
            return self._query(sql)[0][0]

        integrity = [row[0] for row in self._query("PRAGMA integrity_check")]
        wal = Path(self._wal_path)
        report = {
            "backend": "sqlite", "path": str(self.path),
            "schema_version": int(one("SELECT value FROM fs_meta WHERE key = 'schema_version'")),
            "integrity": "ok" if integrity == ["ok"] else "; ".join(integrity[:5]),
            "journal_mode": one("PRAGMA journal_mode"),
            "synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(
                one("PRAGMA synchronous"), "?"),
            "busy_timeout_ms": one("PRAGMA busy_timeout"),
            "file_bytes": self.path.stat().st_size,
            "wal_bytes": wal.stat().st_size if wal.exists() else 0,
            "wal_limit_bytes": self.wal_limit_bytes,
            "free_pages": one("PRAGMA freelist_count"),
            "records": one("SELECT COUNT(*) FROM records"),
            "tombstones": one("SELECT COUNT(*) FROM records WHERE deleted"),
            "history_rows": one("SELECT COUNT(*) FROM history"),
            "history_bytes": one("SELECT COALESCE(SUM(history_bytes), 0) FROM records"),
            "changes": one("SELECT COUNT(*) FROM changes"),
            "changelog_bytes": one(f"SELECT COALESCE(SUM({_BYTES.format('event')}), 0) "
                                   f"FROM changes"),
            "file_mode": oct(self.path.stat().st_mode & 0o777),
        }
        problems = []
        if report["integrity"] != "ok":
            problems.append(f"integrity check failed: {report['integrity']}")
        if str(report["journal_mode"]).lower() != "wal":
            problems.append(f"journal mode is {report['journal_mode']}, not wal")
        for name, mode in self._shared_files():
            problems.append(f"{name} is readable by others (mode {oct(mode)}); "
                            f"chmod 600 {shlex.quote(name)}")
        if report["wal_bytes"] > self.wal_limit_bytes:
            problems.append(
                f"the WAL is {report['wal_bytes']:,} bytes, over its bound of "
                f"{self.wal_limit_bytes:,}: checkpoints cannot finish, usually because a "
                f"process holds a read transaction open on the store; find and end it")
        split = _processes_on_deleted_files(self._files())
        report["processes_on_deleted_files"] = [
            {"pid": pid, "file": name, "command": command} for pid, name, command in split]
        for pid, name, command in split:
            problems.append(
                f"process {pid} ({command}) still uses {name} after it was deleted: it lost its "
                f"locks on the store (something in it opened and closed the file outside "
                f"SQLite) and another process deleted the file under it. What it writes from "
                f"then on reaches no other process and is lost when it exits; stop it writing, "
                f"keep what it alone sees (export from inside it), and restart it")
        report["problems"] = problems
        return report

    # -- watching other processes ------------------------------------------------------------
    def _watch_name(self) -> str:
        return f"flowstate-watch {self.path.name}"

    def _last_seq(self) -> int:
        return int(self._conn.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0])

    def _watch(self, watcher: _Watcher, last_seq: int) -> None:
        """The watcher thread: every ``poll_interval``, ``PRAGMA data_version`` (a counter in
        shared memory that another connection's commit bumps); when it moved, the new rows."""
        conn = sqlite3.connect(str(self.path), timeout=self.timeout, check_same_thread=False,
                               isolation_level=None)
        try:
            seen = None  # look once at the first tick: a commit made between subscribe()
            # and this thread's first data_version would otherwise wait for the next commit
            while not watcher.stopped.wait(self.poll_interval):
                try:
                    version = conn.execute("PRAGMA data_version").fetchone()[0]
                    if version == seen:
                        continue
                    seen = version
                    rows = conn.execute("SELECT seq, origin, event, version, ts FROM changes "
                                        "WHERE seq > ? ORDER BY seq", (last_seq,)).fetchall()
                except sqlite3.Error:
                    continue  # locked or busy for a moment: try again next tick
                if rows:
                    last_seq = rows[-1][0]
                    self._deliver(_to_event(*row[2:]) for row in rows if row[1] != self.origin)
        finally:
            conn.close()
            watcher.close()

    def close(self) -> None:
        if self._closed:
            return
        with self._lock:
            self._closed = True
            self._conn.close()
        self._end_watching()
