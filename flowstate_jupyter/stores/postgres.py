"""PostgreSQL store: one project shared by a team across machines (``postgresql://...``).

Same semantics as :class:`~flowstate_jupyter.stores.sqlite.SQLiteStore` (docs/concepts.md,
'Stores and what "committed" means'), with the server's transactions doing the
compare-and-swap. Needs the ``postgres`` extra (psycopg 3 and
psycopg-pool).

How a write runs (:meth:`PostgresStore.update`), all in one server transaction on one pooled
connection, without any lock that other writers take:

1. ``BEGIN``; ``SELECT ... FOR UPDATE`` of the record (no row yet: nothing to lock; a concurrent
   create is caught by the primary key below), which also draws the number of the write's
   change-log row;
2. ``fn(record)`` is called;
3. one statement writes the record — ``INSERT ... ON CONFLICT DO NOTHING`` for a new record, one
   conditional ``UPDATE ... WHERE version = %s`` otherwise — and, only if that wrote a row, its
   change-log row, its history row, the pruning of both (a batch now and then), ``NOTIFY`` (which
   the server delivers only if the transaction commits) and the write's own advisory lock;
4. ``COMMIT``; then this store's subscribers get the events, in the writing thread.

A write is two round trips to the server: 1 is one message, and 3 goes with 4 when it is the
transaction's only write and its history needs no pruning or trimming. An update's record is
locked since 1, so its conditional ``UPDATE`` cannot miss; a create sent with ``COMMIT`` has no
``ON CONFLICT`` clause, so a record created meanwhile is a unique violation, which stops the
``COMMIT``, and the write runs again. The statements of 1 and 3 are prepared on each pooled
connection and sent as ``EXECUTE`` with their values quoted by libpq; a round trip costs more
here than anything the server does for a write (docs/decisions.md).

The change log is ordered by its readers (schema 2; see docs/decisions.md). A change-log row gets
a row number (``id``) when it is inserted, which is not commit order; a reader first gives every
committed row that has none its place (``seq``), in row-number order, under a lock that only
readers take and in a transaction of its own, then reads ``seq > after``. A row committed later
is placed later, so a reader that has seen place n never misses a change.

Losing a create race to another connection (the ``INSERT`` finds the row another transaction just
committed) re-runs the whole write, so ``fn`` sees the winner's record, exactly as if SQLite had
serialised the two writers: a write with ``expected="any"`` then succeeds at version 2 and one with
``expected="absent"`` fails with :class:`VersionConflictError`. A deadlock or serialisation
failure reported by the server re-runs the write as well (a few times at most).

A write made from inside ``fn`` through the same store in the same thread is nested in the outer
transaction with a ``SAVEPOINT`` on the same connection (like SQLite); if it changes the record the
outer ``fn`` is writing, the outer conditional ``UPDATE`` (or ``INSERT``) then finds a changed row
and the outer write fails with :class:`VersionConflictError`, rolling back both. Reads from inside
``fn`` run on the transaction's connection, so they see its uncommitted writes.

Connections: a dropped connection is thrown away and the write (or read) runs again on a fresh
one, as long as nothing could have been committed. When the connection dies *during* ``COMMIT``
(the server crashed, restarted, or closed the connection) the store decides what happened from the
rows the write itself stored, never from the server's word about a transaction id (after a crash
the restarted server can hand the same id to another writer): see :meth:`PostgresStore._resolve`.
Its rows found means committed and the write returns; proof that they would be there had it
committed means it did not, and the write runs once more on a fresh connection; anything else
raises :class:`StoreError` saying the outcome is unknown. It never guesses and never repeats a
write blindly. Lock waits longer than ``timeout`` seconds, unreachable servers and an exhausted
pool raise :class:`StoreError`.

Other processes' and machines' changes reach :meth:`subscribe` callbacks through ``LISTEN`` on a
dedicated connection in a watcher thread, which places and reads the new change-log rows (and
reconnects, catching up from the last place it saw, if its connection drops). It runs only while
the store object has subscribers, and sleeps in ``select`` until a notification or its stop.

Tables live in one schema (``schema=`` option; default: the connection's current schema) and are
prefixed ``flowstate_``. Text columns use the ``"C"`` collation, so ordering and prefix lookups
work on code points exactly like SQLite and the memory store; ``%`` and ``_`` in a prefix are
literal. States are stored as JSON text, byte for byte as written (key order kept).
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
    from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("PostgreSQL stores need psycopg 3 and psycopg-pool: "
                      "pip install 'flowstate-jupyter[postgres]'") from exc

from ..base.names import REQUEST, SESSION_META
from ..errors import StoreError, ValidationError, VersionConflictError
from .base import (
    KEEP,
    Change,
    HistoryEntry,
    Record,
    _recent_after,
    _recent_limit,
    _recent_where,
    _Watcher,
    _WatchingStore,
    default_event,
    dump_json,
    event_json,
    kept_history,
    prune_batch,
    prune_cutoff,
    record_where,
    refuse_existing,
    utf8_size,
)

APP_ID = "flowstate-jupyter"
TABLE_PREFIX = "flowstate_"

_COLUMNS = "scope, scope_id, name, version, state, content, deleted, created_at, updated_at, " \
           "accessed_at"

_DDL = """
CREATE TABLE {meta} (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE {records} (
    scope TEXT COLLATE "C" NOT NULL, scope_id TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    version BIGINT NOT NULL, state TEXT NOT NULL, content TEXT,
    deleted BOOLEAN NOT NULL DEFAULT FALSE,
    created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL,
    accessed_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (scope, scope_id, name)
);
CREATE INDEX ON {records} (scope, name);
CREATE TABLE {history} (
    scope TEXT COLLATE "C" NOT NULL, scope_id TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL, version BIGINT NOT NULL,
    ts DOUBLE PRECISION NOT NULL, operation TEXT NOT NULL, state TEXT NOT NULL,
    deleted BOOLEAN NOT NULL DEFAULT FALSE, request_id TEXT, write_id TEXT,
    PRIMARY KEY (scope, scope_id, name, version)
);
CREATE TABLE {changes} (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    origin TEXT NOT NULL, event TEXT NOT NULL, write_id TEXT
)
"""

# Schema 1 -> 2: the change log is ordered without a lock held by writers (see the module
# docstring). ``id`` (the old ``seq``) is handed out when a row is inserted; ``seq`` is given to
# committed rows by the readers, in the order they became visible, from the ``order`` sequence.
# Rows of schema 1 were inserted in commit order (under a lock), so they keep their number as
# their place. A history row names the change-log row its write wrote (``change_id``), which is
# how a lost COMMIT is decided (``_resolve``). The index serves ``list_recent`` for session
# bookkeeping records. ``history_bytes`` counts the state JSON a record's history keeps (the
# byte bound, checked without reading the history).
_MIGRATE_FROM_1 = (
    "ALTER TABLE {changes} RENAME COLUMN seq TO id",
    "ALTER TABLE {changes} ADD COLUMN seq BIGINT",
    "UPDATE {changes} SET seq = id",
    "ALTER TABLE {changes} ADD UNIQUE (seq)",
    "CREATE SEQUENCE {order}",
    "SELECT setval('{order_name}', GREATEST(1, (SELECT COALESCE(MAX(id), 0) FROM {changes})))",
    "ALTER TABLE {history} ADD COLUMN change_id BIGINT",
    "CREATE INDEX {recent_index} ON {records} "
    "(scope, GREATEST(updated_at, accessed_at) DESC, scope_id DESC) WHERE name = '$meta'",
    "ALTER TABLE {records} ADD COLUMN history_bytes BIGINT NOT NULL DEFAULT 0",
    "UPDATE {records} AS r SET history_bytes = (SELECT COALESCE(SUM(octet_length(h.state)), 0) "
    "FROM {history} AS h WHERE h.scope = r.scope AND h.scope_id = r.scope_id "
    "AND h.name = r.name)",
)

# Schema 2 -> 3: a session's ended runs, newest first (``ended_runs``, for retention), from the
# index alone. Partial, so that only writes of request records maintain it.
_MIGRATE_FROM_2 = (
    "CREATE INDEX {runs_index} ON {records} ((state::jsonb -> 'session'), "
    "(state::jsonb -> 'ended_at') DESC, scope_id DESC) "
    "WHERE scope = 'request' AND name = '$request' AND NOT deleted",
)

# Schema 3 -> 4: a plain record's write is a HOT update (the server adds no index entry for it
# and leaves none dead) only if no column that an index names (in its key, an expression or its
# predicate) changes value. The two partial indexes named ``state``, ``updated_at``,
# ``accessed_at`` and ``deleted``, which writes change, so no write was HOT. They now index
# generated columns with a value only for the records they serve (NULL for every other record,
# whose writes leave them NULL): ``recent_at``, a ``$meta`` record's time in ``list_recent``'s
# order, and ``run_session`` / ``run_ended_at``, a live run's request record's ``session`` and
# ``ended_at``. Generated, so that every statement that writes a record keeps them right — a
# store object of schema-3 code still open elsewhere too. Adding them rewrites the table once
# (the partial indexes are dropped first, so that it does not rebuild them).
_RUN_FIELD = ("GENERATED ALWAYS AS (CASE WHEN scope = 'request' AND name = '$request' "
              "AND NOT deleted THEN state::jsonb -> '{}' END) STORED")
_MIGRATE_FROM_3 = (
    "DROP INDEX {schema}{recent_index}",
    "DROP INDEX {schema}{runs_index}",
    "ALTER TABLE {records} ADD COLUMN recent_at DOUBLE PRECISION GENERATED ALWAYS AS "
    "(CASE WHEN name = '$meta' THEN GREATEST(updated_at, accessed_at) END) STORED, "
    "ADD COLUMN run_session JSONB " + _RUN_FIELD.format("session") + ", "
    "ADD COLUMN run_ended_at JSONB " + _RUN_FIELD.format("ended_at"),
    "CREATE INDEX {recent_index} ON {records} (scope, recent_at DESC, scope_id DESC) "
    "WHERE name = '$meta'",
    # ``run_session = x`` implies the predicate: the planner uses the index for ended_runs
    # (a generic plan too), and reads the index alone
    "CREATE INDEX {runs_index} ON {records} (run_session, run_ended_at DESC, scope_id DESC) "
    "WHERE run_session IS NOT NULL",
)

#: The schema upgrades, in order: entry ``i`` takes a schema from version ``i + 1`` to
#: ``i + 2``, in place, in one transaction, when a store object first opens it.
MIGRATIONS: tuple[tuple[str, ...], ...] = (_MIGRATE_FROM_1, _MIGRATE_FROM_2, _MIGRATE_FROM_3)
SCHEMA_VERSION = len(MIGRATIONS) + 1

_STORE_OPTIONS = ("max_state_bytes", "history_limit", "history_limit_bytes", "changelog_limit",
                  "changelog_item_bytes", "trace_limit", "tombstone_limit")


def _to_record(row: tuple) -> Record:
    return Record(row[0], row[1], row[2], row[3], json.loads(row[4]), row[5], bool(row[6]),
                  row[7], row[8], row[9])


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _write_id() -> tuple[str, int]:
    """A new write's id (128 random bits, as hex) and the advisory lock key made of its first
    64 bits: unique enough that two writes never share an id, and cheap (one ``urandom``)."""
    raw = os.urandom(16)
    return raw.hex(), int.from_bytes(raw[:8], "big", signed=True)


def _key64(text: str) -> int:
    """A stable signed 64-bit number for an advisory lock."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)


_TABLES = frozenset({"meta", "records", "history", "changes"})


def _names(schema: str) -> dict[str, str]:
    """Quoted names of a store's tables and objects in ``schema`` (for ``str.format``)."""
    q = _quote_ident(schema) + "."
    names = {t: q + _quote_ident(TABLE_PREFIX + t) for t in _TABLES}
    names["schema"] = q  # (index names are created unqualified: dropping one needs this)
    names["order_name"] = (q + _quote_ident(TABLE_PREFIX + "changes_order")).replace("'", "''")
    names["order"] = q + _quote_ident(TABLE_PREFIX + "changes_order")
    names["recent_index"] = _quote_ident(TABLE_PREFIX + "records_recent")
    names["runs_index"] = _quote_ident(TABLE_PREFIX + "records_runs")
    return names


def redact(url: str) -> str:
    """``url`` without its password, for messages."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


def _severity(exc: BaseException | None) -> str | None:
    """The severity the server gave an error (``ERROR``, ``FATAL``...); ``None`` if none."""
    diag = getattr(exc, "diag", None)
    return getattr(diag, "severity_nonlocalized", None) if diag is not None else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _scalar(conn: psycopg.Connection, sql: str, params: Any = None) -> Any:
    """The first column of the one row ``sql`` returns."""
    return conn.execute(sql, params).fetchall()[0][0]


_DONE = (psycopg.pq.ExecStatus.COMMAND_OK, psycopg.pq.ExecStatus.TUPLES_OK)

#: The types of the write statements' parameters, which run as prepared statements.
_PARAM_TYPES = {
    "scope": "text", "scope_id": "text", "name": "text", "version": "bigint", "state": "text",
    "content": "text", "deleted": "boolean", "now": "double precision", "op": "text",
    "request_id": "text", "event": "text", "write_id": "text", "history": "boolean",
    "state_bytes": "bigint", "write_lock": "bigint", "id": "bigint", "previous": "bigint",
    "prune": "bigint"}


def _exec(conn: psycopg.Connection, query: bytes) -> psycopg.pq.abc.PGresult:
    """Send ``query`` (one or more statements, no parameters) and wait for its last result.

    Through libpq directly, in one round trip however many statements ``query`` holds: a write
    is two round trips this way (``BEGIN`` with its read; its writes with ``COMMIT``), where
    ``conn.execute`` would take one per statement and build a cursor for each. The statements
    after a failing one do not run; the failure raises the psycopg error ``conn.execute``
    would (a lost connection: :class:`psycopg.OperationalError`).
    """
    result = conn.pgconn.exec_(query)
    if result.status not in _DONE:
        raise pg_errors.error_from_result(result, encoding=conn.info.encoding)
    return result


def _prepare(name: str, sql: str) -> tuple[bytes, tuple[bytes, tuple[str, ...]]]:
    """``PREPARE name (types) AS sql``, with ``sql``'s ``%(param)s`` numbered in the order they
    first appear; and what :func:`_execute` needs: the name and that order."""
    order: builtins.list[str] = []

    def number(match: re.Match) -> str:
        if match.group(1) not in order:
            order.append(match.group(1))
        return f"${order.index(match.group(1)) + 1}"

    body = re.sub(r"%\((\w+)\)s", number, sql).replace("%%", "%")
    types = ", ".join(_PARAM_TYPES[param] for param in order)
    return f"PREPARE {name} ({types}) AS {body}".encode(), (name.encode(), tuple(order))


def _execute(conn: psycopg.Connection, prepared: tuple[bytes, tuple[str, ...]],
             params: Mapping[str, Any]) -> bytes:
    """``EXECUTE name (...)`` of a ``prepared`` statement, with ``params`` as SQL literals.

    Text is quoted by libpq (``PQescapeLiteral``, for the connection's encoding); a NUL, which
    PostgreSQL text cannot hold, or a string the encoding cannot hold is refused with the
    :class:`psycopg.DataError` that sending it as a parameter would raise.
    """
    name, order = prepared
    escape = psycopg.pq.Escaping(conn.pgconn).escape_literal
    codec = conn.info.encoding
    values = []
    for param in order:
        value = params[param]
        if value is None:
            values.append(b"NULL")
        elif value is True or value is False:
            values.append(b"true" if value else b"false")
        elif isinstance(value, str):
            if "\x00" in value:
                raise psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
            try:
                values.append(escape(value.encode(codec)))
            except UnicodeEncodeError as exc:
                raise psycopg.DataError(f"{param}: {exc}") from None
        else:  # int, or a finite float (a time): repr() round-trips
            values.append(repr(value).encode())
    return b"EXECUTE " + name + b" (" + b", ".join(values) + b")"


class _LifoPool(ConnectionPool):
    """A pool that hands out the connection returned last (psycopg_pool's the one idle longest).

    One writer at a time then keeps using one connection, and so one server process whose
    caches are warm, instead of going round every connection the pool ever opened (after a
    burst of eight writers, one writer going round nine connections was 7–45% slower here). The
    pool's own shrinking (connections idle past ``max_idle``) closes the least recently used.
    """

    def _get_ready_connection(self, timeout: float | None) -> Any:
        # (called under the pool's lock; ``_pool`` is its deque of idle connections, oldest on
        # the left, where it takes from: the newest goes there first)
        ready = getattr(self, "_pool", None)
        if ready:
            ready.rotate(1)
        return super()._get_ready_connection(timeout)


def _written(tx: Any, key: tuple[str, str, str], version: int, change_id: int,
             event: dict) -> None:
    """Note a write in its transaction: the record it wrote, what decides a lost ``COMMIT``
    (``_resolve``) and the event its subscribers get once it commits."""
    tx.written.add(key)
    tx.intents.append((key, version, change_id))
    tx.pending.append(event)


class _CreateRace(Exception):
    """Another connection created the record between our read and our INSERT: run again."""


_T = TypeVar("_T")


def _fetch(conn: psycopg.Connection, sql: str, params: Any) -> builtins.list[tuple]:
    cursor = conn.execute(sql, params)
    return cursor.fetchall() if cursor.description else []


class PostgresStore(_WatchingStore):
    """A flowstate store in a PostgreSQL database. Use :func:`flowstate_jupyter.open_store`.

    Options: ``pool_size`` (connections kept, default 5), ``schema`` (where the tables live;
    created if missing), ``timeout`` (seconds to wait for a row lock before :class:`StoreError`,
    default 5), ``pool_timeout`` (seconds to wait for a free or new connection, default 10),
    ``connect_timeout`` (seconds, default 5), ``durability`` (``"full"`` forces
    ``synchronous_commit = on``; ``"normal"``, the default, keeps the server's setting),
    ``poll_interval`` (accepted for older URLs and unused: the watcher thread sleeps until a
    notification or its stop wakes it), the
    shared ``max_state_bytes``, ``history_limit``, ``history_limit_bytes``, ``changelog_limit``
    and ``changelog_item_bytes``; anything else is passed to libpq as a connection parameter
    (``sslmode``, ``application_name``, ...).
    """

    def __init__(self, url: str, *, pool_size: int = 5, schema: str | None = None,
                 timeout: float = 5.0, pool_timeout: float = 10.0, durability: str = "normal",
                 poll_interval: float = 0.1, **options: Any) -> None:
        store_options = {k: options.pop(k) for k in _STORE_OPTIONS if k in options}
        super().__init__(**store_options)
        if durability not in ("normal", "full"):
            raise ValueError(f"durability must be 'normal' or 'full', not {durability!r}")
        pool_size = int(pool_size)
        if pool_size < 1:
            raise ValueError(f"pool_size must be a positive int, not {pool_size!r}")
        self.url = redact(url)
        self.pool_size = pool_size
        self.timeout = float(timeout)
        self.pool_timeout = float(pool_timeout)
        self.durability = durability
        self.poll_interval = float(poll_interval)
        try:
            given = conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise StoreError(f"invalid PostgreSQL URL {self.url}: {_first_line(exc)}") from exc
        extras = {k: str(v) for k, v in options.items()}
        extras.setdefault("connect_timeout", str(given.get("connect_timeout", "5")))
        extras.setdefault("application_name",
                          str(given.get("application_name", "flowstate-jupyter")))
        try:
            self._conninfo = make_conninfo(url, **extras)
        except psycopg.ProgrammingError as exc:
            raise StoreError(
                f"{_first_line(exc)}: PostgresStore options are pool_size, schema, timeout, "
                f"pool_timeout, durability, poll_interval, max_state_bytes, history_limit, "
                f"history_limit_bytes, changelog_limit, changelog_item_bytes; anything else "
                f"must be a libpq connection parameter") from exc
        self._local = threading.local()  # the open transaction of each thread, if any
        self._watch_guard = threading.Lock()
        self._watcher = None
        self._pool: ConnectionPool | None = None

        self.schema = self._init_schema(schema)
        self._t = _names(self.schema)
        self._channel = "flowstate_" + hashlib.sha256(self.schema.encode()).hexdigest()[:20]
        self._place_lock = _key64(f"flowstate changes {self.schema}")  # readers numbering rows
        self._serial_lock = _key64(f"flowstate serialize {self.schema}")
        self._sql = self._statements()
        # prepared on each pooled connection: what a write sends is EXECUTE and its values
        prepares = {kind: _prepare(f"flowstate_{kind}", self._sql[kind])
                    for kind in ("read", "create", "insert", "update")}
        self._prepares = [statement for statement, _ in prepares.values()]
        self._prepared = {kind: prepared for kind, (_, prepared) in prepares.items()}
        self._pool = _LifoPool(
            self._conninfo, min_size=1, max_size=pool_size, kwargs={"autocommit": True},
            configure=self._configure, timeout=self.pool_timeout, open=True,
            name=f"flowstate-{self.origin[:8]}")

    # -- opening -----------------------------------------------------------------------------
    def _connect(self) -> psycopg.Connection:
        try:
            return psycopg.connect(self._conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to PostgreSQL at {self.url}: {_first_line(exc)}; "
                             f"check that the server is running and that host, port, user, "
                             f"password and database are right") from exc

    def _configure(self, conn: psycopg.Connection) -> None:
        conn.execute(f"SET lock_timeout = {max(1, int(self.timeout * 1000))}")
        # The write statement is long: planned anew on every call it costs more than it runs.
        # Its generic plan is as good (every lookup is by key), so plan once per connection.
        conn.execute("SET plan_cache_mode = force_generic_plan")
        if self.durability == "full":
            conn.execute("SET synchronous_commit = on")
        self._prepare_on(conn)

    def _prepare_on(self, conn: psycopg.Connection, *, again: bool = False) -> None:
        """Prepare the write statements on ``conn`` (``again``: they were found gone).

        psycopg sends ``DEALLOCATE ALL`` after it sees a ``ROLLBACK`` (or ``DROP``, ``ALTER``,
        ``DISCARD ALL``) on a connection where it prepared statements of its own, which drops
        these too: the store rolls back through libpq, past psycopg, and a write that finds its
        statement gone prepares them again and runs once more (nothing was stored)."""
        if not again:
            _exec(conn, b"; ".join(self._prepares))
            return
        for statement in self._prepares:  # each on its own: some may be there
            try:
                _exec(conn, statement)
            except psycopg.Error:
                pass  # there already, or the connection failed: the next attempt finds out

    def _init_schema(self, schema: str | None) -> str:
        """Create the tables on first use, upgrade an older schema in place, or refuse."""
        with self._connect() as conn:
            try:
                if schema is None:
                    schema = _scalar(conn, "SELECT current_schema()")
                    if schema is None:
                        raise StoreError(f"{self.url}: the connection has no current schema "
                                         f"(empty search_path); pass schema=NAME")
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)",
                                 (_key64(f"flowstate init {schema}"),))
                    if not conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                                        (schema,)).fetchone():
                        conn.execute(f"CREATE SCHEMA {_quote_ident(schema)}")
                    names = _names(schema)
                    present = {t for t in _TABLES if _scalar(
                        conn, "SELECT to_regclass(%s)", (names[t],)) is not None}
                    where = f"{self.url} (schema {schema!r})"
                    if not present:
                        for statement in _DDL.format(**names).split(";"):
                            conn.execute(statement)
                        self._migrate(conn, names, 1)
                        conn.execute(f"INSERT INTO {names['meta']} (key, value) "
                                     f"VALUES ('app', %s), ('schema_version', %s)",
                                     (APP_ID, str(SCHEMA_VERSION)))
                    elif "meta" not in present:
                        raise StoreError(
                            f"{where} has tables named {TABLE_PREFIX}* but no "
                            f"{TABLE_PREFIX}meta, so it is not a flowstate store this version "
                            f"understands; use another schema (schema=NAME) or database")
                    else:
                        meta: dict[str, str] = dict(
                            conn.execute(f"SELECT key, value FROM {names['meta']}").fetchall())
                        found = self._check_meta(meta, where, present)
                        if found < SCHEMA_VERSION:
                            self._migrate(conn, names, found)
                            conn.execute(f"UPDATE {names['meta']} SET value = %s "
                                         f"WHERE key = 'schema_version'",
                                         (str(SCHEMA_VERSION),))
                # the change log's row numbers: a write draws its row's number with its read
                self._changes_seq = _scalar(conn, "SELECT pg_get_serial_sequence(%s, 'id')",
                                            (names["changes"],))
            except psycopg.Error as exc:
                raise StoreError(f"cannot set up the flowstate tables in {self.url}: "
                                 f"{_first_line(exc)}") from exc
        return schema

    @staticmethod
    def _check_meta(meta: dict, where: str, present: set[str]) -> int:
        """The schema version a store records, if this code can use (or upgrade) it."""
        if meta.get("app") != APP_ID:
            raise StoreError(f"{where}: table {TABLE_PREFIX}meta does not belong to flowstate "
                             f"(app={meta.get('app')!r}); use another schema or database")
        try:
            found = int(meta.get("schema_version", "0"))
        except ValueError:
            found = -1
        if not 1 <= found <= SCHEMA_VERSION:
            newer = found > SCHEMA_VERSION
            raise StoreError(
                f"{where} has flowstate store schema version {meta.get('schema_version')!r}; "
                f"this flowstate-jupyter understands {SCHEMA_VERSION}. "
                + ("Upgrade flowstate-jupyter to open it." if newer else
                   "Export it with the version that wrote it, then import it here."))
        if present != _TABLES:
            missing = ", ".join(sorted(TABLE_PREFIX + t for t in _TABLES - present))
            raise StoreError(f"{where} is a flowstate store with tables missing ({missing}); "
                             f"restore it from a backup")
        return found

    @staticmethod
    def _migrate(conn: psycopg.Connection, names: dict[str, str], found: int) -> None:
        """Upgrade the tables from schema version ``found`` (inside the caller's transaction)."""
        for step in MIGRATIONS[found - 1:]:
            for statement in step:
                conn.execute(statement.format(**names))

    def _statements(self) -> dict[str, str]:
        t = self._t
        key = "scope = %(scope)s AND scope_id = %(scope_id)s AND name = %(name)s"
        history_cols = "(scope, scope_id, name, version, ts, operation, state, deleted, " \
                       "request_id, write_id, change_id)"
        # A write is one statement after its SELECT ... FOR UPDATE: the record (``u``), its
        # change-log row (``c``, only if ``u`` wrote), its history row naming that change-log row
        # (``h``), pruning, and a final row that exists only if the write happened. Pruning the
        # change log: the write whose row number comes up every ``batch`` rows deletes the oldest
        # rows, lowest numbers first, up to its number less the bound (a prefix, so a lost COMMIT
        # can be decided: see _resolve). Most writes skip it: its condition is checked once.
        # ``pg_notify`` is sent only if the transaction commits. The per-write advisory lock is
        # held until the transaction ends, so _resolve can wait for it to end.
        # Fixed for this store object, so written into the statement rather than sent with
        # every write (fewer parameters to encode): origin and channel are hex, the rest ints.
        limit = self.changelog_limit
        batch = prune_batch(limit)
        origin, channel = f"'{self.origin}'", f"'{self._channel}'"
        tail = (
            f"c AS (INSERT INTO {t['changes']} (id, origin, event, write_id) OVERRIDING SYSTEM "
            f"VALUE SELECT %(id)s, {origin}, %(event)s, %(write_id)s FROM u RETURNING id), "
            f"h AS (INSERT INTO {t['history']} {history_cols} SELECT %(scope)s, %(scope_id)s, "
            f"%(name)s, %(version)s, %(now)s, %(op)s, %(state)s, %(deleted)s, %(request_id)s, "
            f"%(write_id)s, c.id FROM c WHERE %(history)s), "
            f"q AS (DELETE FROM {t['changes']} WHERE id = ANY (ARRAY (SELECT id "
            f"FROM {t['changes']} WHERE ((SELECT id FROM c) - {limit + 1}) %% {batch} = 0 "
            f"AND id <= (SELECT id FROM c) - {limit - batch + 1} "
            f"ORDER BY id LIMIT {2 * batch + 64}))) "
            f"SELECT c.id, (SELECT history_bytes FROM u), pg_notify({channel}, {origin})::text, "
            f"pg_advisory_xact_lock(%(write_lock)s)::text FROM c")
        sequence = self._changes_seq.replace("'", "''")
        insert = (f"INSERT INTO {t['records']} ({_COLUMNS}, history_bytes) VALUES (%(scope)s, "
                  f"%(scope_id)s, %(name)s, %(version)s, %(state)s, %(content)s, %(deleted)s, "
                  f"%(now)s, %(now)s, %(now)s, %(state_bytes)s)")
        returning = "RETURNING version, history_bytes"
        return {
            # A write's first statement: the record, locked, and the number its change-log row
            # will have (drawn here, so that the write knows it before its last round trip).
            "read": (f"WITH r AS (SELECT version, state, content, deleted, created_at, "
                     f"updated_at, accessed_at, history_bytes FROM {t['records']} WHERE {key} "
                     f"FOR UPDATE) SELECT r.*, nextval('{sequence}') "
                     f"FROM (SELECT) AS one LEFT JOIN r ON true"),
            "select": f"SELECT {_COLUMNS} FROM {t['records']} WHERE {key}",
            "version": f"SELECT version, deleted FROM {t['records']} WHERE {key}",
            "create": f"WITH u AS ({insert} ON CONFLICT DO NOTHING {returning}), " + tail,
            # the same, sent with COMMIT: a record created meanwhile is a unique violation,
            # which stops the COMMIT behind it (DO NOTHING would let it commit nothing)
            "insert": f"WITH u AS ({insert} {returning}), " + tail,
            # History is pruned like SQLite's (see ``prune_cutoff``): most writes delete nothing
            # (``prune`` is 0); every ``batch`` versions the oldest batch goes. The byte bound is
            # checked on the record's ``history_bytes``; past it, ``trim`` runs.
            "update": (
                f"WITH u AS (UPDATE {t['records']} SET version = %(version)s, state = %(state)s, "
                f"content = %(content)s, deleted = %(deleted)s, updated_at = %(now)s, "
                f"accessed_at = %(now)s, history_bytes = history_bytes + %(state_bytes)s - "
                f"CASE WHEN %(prune)s > 0 THEN (SELECT COALESCE(SUM(octet_length(state)), 0) "
                f"FROM {t['history']} WHERE {key} AND version <= %(prune)s) ELSE 0 END "
                f"WHERE {key} AND version = %(previous)s RETURNING version, history_bytes), "
                f"p AS (DELETE FROM {t['history']} WHERE %(prune)s > 0 AND {key} "
                f"AND version <= %(prune)s AND EXISTS (SELECT 1 FROM u)), " + tail),
            # past the byte bound: the oldest versions go until the rest, this write's state
            # included, fit in three quarters of it (never the version just written)
            "trim": (
                f"WITH d AS (DELETE FROM {t['history']} WHERE {key} AND version < %(version)s "
                f"AND version <= (SELECT w.version FROM (SELECT version, "
                f"SUM(octet_length(state)) OVER (ORDER BY version DESC) AS kept "
                f"FROM {t['history']} WHERE {key} AND version < %(version)s) AS w "
                f"WHERE w.kept + %(state_bytes)s > %(keep_bytes)s ORDER BY w.version DESC "
                f"LIMIT 1) RETURNING octet_length(state) AS bytes) "
                f"UPDATE {t['records']} SET history_bytes = history_bytes - "
                f"COALESCE((SELECT SUM(bytes) FROM d), 0) WHERE {key}"),
            # Readers number the committed rows that have no place yet, in the order of their
            # row numbers, under a lock only readers take: a row that commits later gets a later
            # place, so a reader that has seen place n never misses a row placed after it.
            "place_lock": "SELECT pg_advisory_xact_lock(%s)",
            "place": (
                f"UPDATE {t['changes']} AS l SET seq = n.seq FROM (SELECT id, "
                f"nextval('{t['order_name']}') AS seq FROM (SELECT id FROM {t['changes']} "
                f"WHERE seq IS NULL ORDER BY id) AS o) AS n WHERE l.id = n.id AND l.seq IS NULL"),
            # After a COMMIT lost its connection (see _resolve): did the write commit (one of
            # its rows is there), and if not, is that proven?
            "outcome": (
                f"SELECT EXISTS (SELECT 1 FROM {t['changes']} WHERE id = %(id)s "
                f"AND write_id = %(write_id)s) OR EXISTS (SELECT 1 FROM {t['history']} "
                f"WHERE {key} AND version = %(version)s AND write_id = %(write_id)s), "
                # another row has its number (numbers are never given to two committed rows)
                f"EXISTS (SELECT 1 FROM {t['changes']} WHERE id = %(id)s "
                f"AND write_id IS DISTINCT FROM %(write_id)s) "
                # no row has a higher number: a prune that removed its row would have been done by
                # a write with a higher number, and the highest-numbered row is never pruned
                f"OR NOT EXISTS (SELECT 1 FROM {t['changes']} WHERE id > %(id)s) "
                # the change-log row of the record's previous write is still there: the log is
                # pruned lowest numbers first, and that row's number is lower than this one's
                f"OR EXISTS (SELECT 1 FROM {t['changes']} WHERE id = (SELECT change_id "
                f"FROM {t['history']} WHERE {key} AND version < %(version)s "
                f"AND change_id IS NOT NULL ORDER BY version DESC LIMIT 1))"),
            "touch": f"UPDATE {t['records']} SET accessed_at = %(now)s WHERE {key}",
            "history": (f"SELECT version, ts, operation, state, deleted, request_id "
                        f"FROM {t['history']} WHERE {key} ORDER BY version DESC LIMIT %(limit)s"),
            "changes": (f"SELECT seq, event FROM {t['changes']} WHERE seq > %s ORDER BY seq "
                        f"LIMIT %s"),
            "watch": (f"SELECT seq, origin, event FROM {t['changes']} WHERE seq > %s "
                      f"ORDER BY seq"),
            "max_seq": f"SELECT COALESCE(MAX(seq), 0) FROM {t['changes']}",
        }

    # -- connections and errors --------------------------------------------------------------
    def _pool_or_closed(self) -> ConnectionPool:
        if self._pool is None:  # (only while __init__ runs)
            raise StoreError(f"store {self.url} is not open")
        return self._pool

    def _getconn(self) -> psycopg.Connection:
        self._check_open()
        try:
            return self._pool_or_closed().getconn()
        except PoolTimeout as exc:
            raise StoreError(
                f"no PostgreSQL connection to {self.url} within {self.pool_timeout:g} s: the "
                f"server is unreachable, or all {self.pool_size} pooled connections are busy "
                f"(raise pool_size)") from exc
        except PoolClosed as exc:
            raise StoreError(f"store {self.url} is closed; open it again with "
                             f"fs.open_store()") from exc

    def _putconn(self, conn: psycopg.Connection) -> None:
        try:
            self._pool_or_closed().putconn(conn)
        except Exception:  # noqa: BLE001 - the pool is closing; the connection goes with it
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing what is already broken
                pass

    @staticmethod
    def _lost(conn: psycopg.Connection | None, exc: BaseException | None = None) -> bool:
        """Is ``conn`` gone: closed, broken, or its session ended by the server (``exc`` is a
        ``FATAL`` error, which psycopg may not have noticed closing the connection yet)?"""
        if conn is None or conn.closed or getattr(conn, "broken", False):
            return True
        return _severity(exc) in ("FATAL", "PANIC")

    def _recover_pool(self) -> None:
        """After a dropped connection, drop the pool's other dead connections too."""
        try:
            self._pool_or_closed().check()
        except Exception:  # noqa: BLE001 - a best effort: the next use reconnects anyway
            pass

    def _store_error(self, exc: BaseException) -> Exception:
        """A psycopg error as the flowstate error a caller should see."""
        if isinstance(exc, pg_errors.LockNotAvailable):
            return StoreError(
                f"store {self.url}: a record stayed locked by another writer for more than "
                f"{self.timeout:g} s; retry, or find the session holding it (a long-running "
                f"write or an open transaction in pg_stat_activity)")
        if isinstance(exc, psycopg.DataError):
            return ValidationError(f"{self.url}: PostgreSQL refused the value: "
                                   f"{_first_line(exc)}", reason=_first_line(exc))
        if isinstance(exc, psycopg.OperationalError):
            return StoreError(f"PostgreSQL at {self.url} failed: {_first_line(exc)}; check "
                              f"that the server is up and reachable, then retry")
        return StoreError(f"store {self.url}: PostgreSQL error: {_first_line(exc)}")

    @staticmethod
    def _abandon(conn: psycopg.Connection) -> None:
        """Roll back whatever is open on ``conn`` (nothing to do if it is gone)."""
        if conn.closed or getattr(conn, "broken", False):
            return
        try:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                _exec(conn, b"ROLLBACK")  # (past psycopg, which would drop every prepared
                # statement on seeing a ROLLBACK: see _prepare_on)
        except psycopg.Error:
            pass

    def _run_read(self, sql: str, params: Any) -> builtins.list[tuple]:
        """One statement, on this thread's open transaction if any, else on a pooled
        connection in autocommit; re-run on a fresh connection if the connection dropped."""
        self._check_open()
        conn = getattr(self._local, "conn", None)
        if conn is not None:  # inside a write's fn: see (and join) its transaction
            return _fetch(conn, sql, params)
        return self._on_pooled(lambda pooled: _fetch(pooled, sql, params))

    def _on_pooled(self, use: Callable[[psycopg.Connection], _T], *,
                   abandon: bool = False) -> _T:
        """``use(conn)`` on a pooled connection, run again on a fresh one if the connection
        dropped; ``abandon``: roll back what ``use`` left open when it fails."""
        attempts = self.pool_size + 2
        for attempt in range(attempts):
            conn = self._getconn()
            try:
                return use(conn)
            except psycopg.Error as exc:
                if abandon:
                    self._abandon(conn)
                if self._lost(conn, exc) and attempt + 1 < attempts:
                    self._recover_pool()
                    continue
                raise self._store_error(exc) from exc
            finally:
                self._putconn(conn)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- reading -----------------------------------------------------------------------------
    def read(self, scope: str, scope_id: str, name: str = "") -> Record | None:
        rows = self._run_read(self._sql["select"],
                              {"scope": scope, "scope_id": scope_id, "name": name})
        return _to_record(rows[0]) if rows else None

    def list(self, scope: str | None = None, scope_id: str | None = None, *,
             prefix: str = "", name: str | None = None,
             include_deleted: bool = False) -> builtins.list[Record]:
        where, params = [], []
        for column, value in (("scope", scope), ("scope_id", scope_id), ("name", name)):
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        if prefix:  # not LIKE: % and _ stay literal; the range lets the index help
            where.append("name >= %s AND starts_with(name, %s)")
            params += [prefix, prefix]
        if not include_deleted:
            where.append("NOT deleted")
        sql = f"SELECT {_COLUMNS} FROM {self._t['records']}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY scope, scope_id, name"
        return [_to_record(r) for r in self._run_read(sql, params)]

    def list_recent(self, scope: str, name: str, *, where: Mapping[str, Any] | None = None,
                    limit: int | None = 100, after: tuple[float, str] | None = None,
                    ) -> builtins.list[Record]:
        checks = _recent_where(where)
        cursor = _recent_after(after)
        _recent_limit(limit)
        # the name as a literal, so that the planner can use the partial index for ``$meta``,
        # which orders by the column that has this time for ``$meta`` records only (recent_at)
        at = "recent_at" if name == SESSION_META else "GREATEST(updated_at, accessed_at)"
        sql = [f"SELECT {_COLUMNS} FROM {self._t['records']} WHERE scope = %s AND name = "
               f"'{name.replace(chr(39), chr(39) * 2)}' AND NOT deleted"]
        params: builtins.list[Any] = [scope]
        for field_name, value in checks:  # jsonb equality: true is not 1, 1 is not "1"
            sql.append("state::jsonb -> %s = %s::jsonb")
            params += [field_name, json.dumps(value)]
        if cursor is not None:
            sql.append(f"({at}, scope_id) < (%s, %s)")
            params += cursor
        query = " AND ".join(sql) + f" ORDER BY {at} DESC, scope_id DESC LIMIT %s"
        params.append(limit)
        return [_to_record(r) for r in self._run_read(query, params)]

    def ended_runs(self, session_id: str, *, skip: int = 0) -> builtins.list[str]:
        # from the index alone (records_runs): run_session is set only for live request
        # records (see _MIGRATE_FROM_3); JSON null sorts below all else
        rows = self._run_read(
            f"SELECT scope_id FROM {self._t['records']} WHERE run_session = %s::jsonb "
            f"AND run_ended_at > 'null'::jsonb "
            f"ORDER BY run_ended_at DESC, scope_id DESC OFFSET %s",
            (json.dumps(session_id), skip))
        return [row[0] for row in rows]

    def history(self, scope: str, scope_id: str, name: str = "", *,
                limit: int | None = None) -> builtins.list[HistoryEntry]:
        rows = self._run_read(self._sql["history"], {"scope": scope, "scope_id": scope_id,
                                                     "name": name, "limit": limit})
        return [HistoryEntry(r[0], r[1], r[2], json.loads(r[3]), bool(r[4]), r[5])
                for r in rows]

    def changes(self, after: int = 0, *,
                limit: int | None = None) -> builtins.list[tuple[int, dict]]:
        rows = self._run_log(self._sql["changes"], (after, limit))
        return [(seq, json.loads(event)) for seq, event in rows]

    def _place(self, conn: psycopg.Connection) -> None:
        """Give the committed change-log rows that have none their place (``seq``).

        Under the readers' lock, in a transaction of its own, committed before the caller reads:
        whoever reads next sees every row placed so far. Sent as one pipeline with what follows.
        """
        with conn.transaction():
            conn.execute(self._sql["place_lock"], (self._place_lock,))
            conn.execute(self._sql["place"])

    def _read_log(self, conn: psycopg.Connection, sql: str,
                  params: Any) -> builtins.list[tuple]:
        """Place the new change-log rows, then run ``sql``: one round trip."""
        with conn.pipeline():
            self._place(conn)
            cursor = conn.execute(sql, params)
        return cursor.fetchall()

    def _run_log(self, sql: str, params: Any) -> builtins.list[tuple]:
        """A change-log read: like ``_run_read``, with the new rows placed first. Inside a
        write's function it reads on that transaction and places nothing (it would hold the
        readers' lock until that write ends): it sees the rows placed before."""
        self._check_open()
        if getattr(self._local, "conn", None) is not None:
            return self._run_read(sql, params)
        return self._on_pooled(lambda conn: self._read_log(conn, sql, params), abandon=True)

    # -- writing -----------------------------------------------------------------------------
    def touch(self, scope: str, scope_id: str, name: str) -> None:
        self._run_read(self._sql["touch"], {"scope": scope, "scope_id": scope_id, "name": name,
                                            "now": self._now()})

    def update(self, scope: str, scope_id: str, name: str,
               fn: Callable[[Record | None], Change | None]) -> Record | None:
        self._check_open()
        key = (scope, scope_id, name)
        tx = self._local
        if getattr(tx, "conn", None) is not None:
            return self._nested_update(tx, key, fn)
        lost_connections = 0
        races = 0
        lost_commits = 0
        while True:
            conn = self._getconn()
            tx.conn, tx.depth, tx.pending, tx.intents = conn, 1, [], []
            tx.written = set()
            tx.write_id, tx.write_lock = _write_id()
            tx.committing = tx.committed = False
            tx.result = None
            try:
                tx.result = result = self._write(conn, tx, key, fn, begin=True)
                if tx.committed:  # its last statement went with COMMIT
                    committed = True
                elif tx.intents:  # else fn returned None and nothing nested wrote: roll back
                    tx.committing = True
                    self._commit(conn)
                    committed = True
                else:
                    self._abandon(conn)
                    committed = False
            except BaseException as exc:
                in_commit = bool(tx.intents) and getattr(tx, "committing", False) and \
                    self._maybe_committed(conn, exc)
                self._abandon(conn)
                if isinstance(exc, pg_errors.InvalidSqlStatementName):
                    self._prepare_on(conn, again=True)
                tx.conn = None
                self._putconn(conn)
                if in_commit:
                    # The connection died during COMMIT: find out from the write's own rows.
                    if self._resolve(tx, exc):
                        self._deliver(tx.pending)
                        return tx.result
                    lost_commits += 1
                    if lost_commits > 1:
                        raise StoreError(
                            f"store {self.url}: the connection dropped while committing, twice; "
                            f"the write was not stored. Check the server and retry") from exc
                    self._recover_pool()
                    continue  # it did not commit: run it once more on a fresh connection
                if isinstance(exc, (_CreateRace, pg_errors.DeadlockDetected,
                                    pg_errors.SerializationFailure,
                                    pg_errors.InvalidSqlStatementName)):
                    races += 1
                    if races <= 5:
                        continue  # fn runs again and sees what the other writer committed
                    if isinstance(exc, _CreateRace):
                        raise VersionConflictError(
                            f"{record_where(*key)}: kept losing create races",
                            current=self._current(key)) from None
                    raise self._store_error(exc) from exc
                if isinstance(exc, psycopg.Error):
                    if self._lost(conn, exc) and lost_connections <= self.pool_size:
                        lost_connections += 1  # dropped before COMMIT: nothing was stored
                        self._recover_pool()
                        continue
                    raise self._store_error(exc) from exc
                raise
            finally:
                tx.committing = False
            tx.conn = None
            self._putconn(conn)
            if committed:
                self._deliver(tx.pending)
            return result

    def _commit(self, conn: psycopg.Connection, work: bytes = b"") -> None:
        """``COMMIT``, sent with ``work`` (the write's last statement, if it goes with it)."""
        _exec(conn, work + b"; COMMIT" if work else b"COMMIT")

    def _current(self, key: tuple[str, str, str]) -> int | None:
        rows = self._run_read(self._sql["version"], dict(zip(("scope", "scope_id", "name"), key)))
        return rows[0][0] if rows else None

    def _maybe_committed(self, conn: psycopg.Connection, exc: BaseException) -> bool:
        """``COMMIT`` raised ``exc``: could the server have committed all the same?

        Only an ``ERROR`` the server reported on a connection that is still open means it rolled
        back; a lost connection, or a ``FATAL`` (the server ending the session, maybe after the
        commit), leaves the outcome open."""
        if not isinstance(exc, psycopg.Error):
            return False  # an interrupt: psycopg waits for COMMIT's result and re-raises it
        return self._lost(conn, exc) or _severity(exc) != "ERROR"

    def _resolve(self, tx: Any, exc: BaseException) -> bool:
        """Did the write whose ``COMMIT`` lost its connection commit? Decided from its rows.

        On a fresh connection, in one transaction: first the write's own advisory lock, which it
        took with its first row and held until it ended, so once we have it the write has ended
        one way or the other (on this server, or on one that crashed meanwhile); then the
        ``outcome`` statement for each record it wrote. Its change-log or history row, tagged
        with this attempt's write id, is there: committed. Not there, and proof that it would
        be there had the write committed — another row holds its change-log number, no row has a
        higher number (only a write with a higher number prunes, and never its own row), or the
        change-log row of the record's previous write is still there (the log is pruned lowest
        numbers first, and the previous write's number is lower) — not committed. Otherwise
        (the log was pruned past it, the server stayed unreachable, the lock stayed taken)
        :class:`StoreError`: the outcome is unknown. The transaction id
        is not asked about: after a crash its commit record may never have reached the disk,
        and the restarted server hands the same id to the next writer.
        """
        (scope, scope_id, name), _, _ = tx.intents[0]
        where = record_where(scope, scope_id, name)
        wait = max(self.pool_timeout, self.timeout, 5.0)
        deadline = time.monotonic() + wait
        pause = 0.05
        while True:
            try:  # a connection of its own: the pool may be busy reconnecting with back-off
                with psycopg.connect(self._conninfo, autocommit=True) as conn, \
                        conn.transaction():
                    conn.execute(f"SET LOCAL lock_timeout = {max(1, int(self.timeout * 1000))}")
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (tx.write_lock,))
                    outcomes = [conn.execute(self._sql["outcome"], {
                        "scope": key[0], "scope_id": key[1], "name": key[2],
                        "version": version, "id": change_id,
                        "write_id": tx.write_id}).fetchall()[0]
                        for key, version, change_id in tx.intents]
                break
            except psycopg.Error as error:
                if time.monotonic() + pause > deadline:
                    raise self._unknown_outcome(
                        f"a write to {where}", f"the server could not be asked within "
                        f"{wait:g} s: {_first_line(error)}") from exc
                time.sleep(pause)
                pause = min(pause * 2, 0.5)
        # One transaction: all its rows are there or none is. Any one of them decides.
        if any(found for found, _ in outcomes):
            return True
        if any(absence_proves for _, absence_proves in outcomes):
            return False
        raise self._unknown_outcome(
            f"a write to {where}", "its change-log and history rows are not there, and the "
            "change log has been pruned past the point where they would be") from exc

    def _unknown_outcome(self, what: str, why: str, advice: str | None = None) -> StoreError:
        return StoreError(
            f"store {self.url}: the connection to PostgreSQL was lost while committing {what}, "
            f"and the outcome is unknown: it may or may not be stored ({why}). "
            + (advice or "Read the record to see whether the write is there, and retry it if "
                         "it is not."))

    def serialize_writes(self) -> None:
        # A lock of its own, held until this write ends: taking it makes the reads that follow
        # (each statement reads what is committed when it starts) see every write that took it
        # before. Writes that do not call this never wait for it.
        conn = getattr(self._local, "conn", None)
        if conn is None:
            raise RuntimeError("serialize_writes() is for use inside an update function")
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._serial_lock,))

    def _nested_update(self, tx: Any, key: tuple[str, str, str],
                       fn: Callable[[Record | None], Change | None]) -> Record | None:
        """A write from inside another write's ``fn``: a savepoint on the same connection."""
        conn = tx.conn
        savepoint = b"fs_nested_%d" % tx.depth
        for attempt in range(5):
            pending, intents = len(tx.pending), len(tx.intents)
            _exec(conn, b"SAVEPOINT " + savepoint)
            tx.depth += 1
            try:
                result = self._write(conn, tx, key, fn)
            except BaseException as exc:
                tx.depth -= 1
                del tx.pending[pending:], tx.intents[intents:]
                if not self._lost(conn):
                    try:
                        _exec(conn, b"ROLLBACK TO SAVEPOINT %s; RELEASE SAVEPOINT %s"
                              % (savepoint, savepoint))
                    except psycopg.Error:
                        pass
                if isinstance(exc, _CreateRace) and attempt < 4:
                    continue  # another connection created it: read it again
                if isinstance(exc, _CreateRace):
                    raise VersionConflictError(f"{record_where(*key)}: kept losing create races",
                                               current=None) from None
                if isinstance(exc, psycopg.Error) and not self._lost(conn) and \
                        not isinstance(exc, pg_errors.InvalidSqlStatementName):
                    raise self._store_error(exc) from exc
                raise  # a lost connection (or statement) propagates raw: the outer write reruns
            tx.depth -= 1
            _exec(conn, b"RELEASE SAVEPOINT " + savepoint)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _write(self, conn: psycopg.Connection, tx: Any, key: tuple[str, str, str],
               fn: Callable[[Record | None], Change | None], *,
               begin: bool = False) -> Record | None:
        """Read ``key`` locked, call ``fn``, write what it returns; ``begin``: the transaction's
        first write, whose read goes with ``BEGIN`` and whose write may go with ``COMMIT``."""
        scope, scope_id, name = key
        params: dict[str, Any] = {"scope": scope, "scope_id": scope_id, "name": name}
        read = _execute(conn, self._prepared["read"], params)
        result = _exec(conn, b"BEGIN; " + read if begin else read)
        # (the row in text: version, state, content, deleted, three times, history_bytes, and
        # the change-log number; all NULL but the number when there is no record yet)
        found: builtins.list[Any] = [result.get_value(0, i) for i in range(9)]
        before = None
        if found[0] is not None:
            codec = conn.info.encoding
            before = Record(scope, scope_id, name, int(found[0]),
                            json.loads(found[1].decode(codec)),
                            None if found[2] is None else found[2].decode(codec),
                            found[3] == b"t", float(found[4]), float(found[5]), float(found[6]))
        change = fn(before)
        if change is None:
            return None
        text = change.text if change.text is not None else dump_json(change.state, key)
        if len(text) > self.max_state_bytes // 4:  # else it cannot be over the limit
            self._check_size(text, record_where(*key))
        content = (before.content if before else None) if change.content is KEEP \
            else change.content
        if isinstance(content, str) and "\x00" in content:
            where = record_where(*key)
            raise ValidationError(f"{where}: content contains a NUL character, which PostgreSQL "
                                  f"cannot store in text", where=where, reason="NUL in content")
        now = self._now()
        version = (change.first_version or 1) if before is None else before.version + 1
        event = dict(change.event) if change.event is not None else default_event(
            scope, scope_id, name, change, existed=before is not None and not before.deleted)
        event["version"] = version
        event["ts"] = now
        event_text = event_json(change, event, key, self.changelog_item_bytes)
        deleted = bool(change.delete)
        change_id = int(found[8])
        params.update(version=version, state=text, content=content, deleted=deleted, now=now,
                      op=change.operation, request_id=change.request_id, event=event_text,
                      write_id=tx.write_id, write_lock=tx.write_lock, id=change_id)
        # a run's request record keeps no history (docs/decisions.md): no row, nothing counted
        params["history"] = keeps = name != REQUEST or scope != "request"
        params["state_bytes"] = size = utf8_size(text) if keeps else 0
        # (the change's own state object, as SQLite returns it: the store keeps the JSON text)
        record = Record(scope, scope_id, name, version, change.state, content, deleted,
                        now if before is None else before.created_at, now, now)
        alone = begin and not tx.intents  # this write is all its transaction writes
        if before is None and alone and size <= self.history_limit_bytes:
            # A create that goes with COMMIT. Losing the create race stops the COMMIT.
            try:
                self._last(conn, tx, _execute(conn, self._prepared["insert"], params),
                           key, version, change_id, event, record)
            except pg_errors.UniqueViolation as exc:
                if exc.diag.table_name != TABLE_PREFIX + "records":
                    raise
                raise _CreateRace() from None
            return record
        if before is None:
            rows = _exec(conn, _execute(conn, self._prepared["create"], params))
            if not rows.ntuples:
                if key in tx.written:  # created from inside fn, in this same transaction
                    raise VersionConflictError(f"{record_where(*key)}: created while it was "
                                               f"being written",
                                               current=self._version_in(conn, params))
                raise _CreateRace()
        else:
            prune = prune_cutoff(version, self.history_limit)
            params.update(previous=before.version, prune=prune)
            work = _execute(conn, self._prepared["update"], params)
            if alone and not prune and int(found[7]) + size <= self.history_limit_bytes:
                # The transaction's only write, needing no trim: it goes with COMMIT. The
                # record has been locked since the read, by this transaction, which has written
                # nothing else, so the conditional UPDATE finds it at ``previous``.
                self._last(conn, tx, work, key, version, change_id, event, record)
                return record
            rows = _exec(conn, work)
            if not rows.ntuples:
                raise VersionConflictError(
                    f"{record_where(*key)}: version {before.version} is no longer current",
                    current=self._version_in(conn, params))
            if int(rows.get_value(0, 1) or 0) > self.history_limit_bytes:
                params["keep_bytes"] = self.history_limit_bytes * 3 // 4
                conn.execute(self._sql["trim"], params)
        _written(tx, key, version, change_id, event)
        return record

    def _last(self, conn: psycopg.Connection, tx: Any, work: bytes, key: tuple[str, str, str],
              version: int, change_id: int, event: dict, record: Record) -> None:
        """Send a write's statement with ``COMMIT``, in one round trip: it is written down as
        committing first, so a reply lost on the way is decided from its rows (``_resolve``)."""
        _written(tx, key, version, change_id, event)
        tx.result = record
        tx.committing = True
        self._commit(conn, work)
        tx.committed = True

    def _version_in(self, conn: psycopg.Connection, params: dict) -> int | None:
        row = conn.execute(self._sql["version"], params).fetchone()
        return row[0] if row else None

    # -- watching other processes and machines -------------------------------------------------
    def _watch_name(self) -> str:
        return f"flowstate-listen {self.schema}"

    def _last_seq(self) -> int:
        return int(self._run_log(self._sql["max_seq"], ())[0][0])

    def _watch(self, watcher: _Watcher, last_seq: int) -> None:
        """The watcher thread: ``LISTEN``, and read the change log when notified.

        It sleeps in ``select`` on the connection's socket and the watcher's wake-up pipe, so an
        idle store costs no CPU; a notification (or the pipe, on stop) wakes it at once.
        """
        conn: psycopg.Connection | None = None
        backoff = 0.1
        try:
            while not watcher.stopped.is_set():
                try:
                    if conn is None:
                        conn = psycopg.connect(self._conninfo, autocommit=True)
                        conn.execute(f"LISTEN {self._channel}")
                        last_seq = self._catch_up(conn, last_seq)  # what came while not listening
                        backoff = 0.1
                    if any(True for _ in conn.notifies(timeout=0)):  # arrived, or queued
                        last_seq = self._catch_up(conn, last_seq)
                        continue
                    watcher.wait(conn.fileno(), self._IDLE_CHECK_S)
                except psycopg.Error:
                    if conn is not None:
                        try:
                            conn.close()
                        except Exception:  # noqa: BLE001  (already broken; nothing to keep)
                            pass
                    conn = None
                    watcher.stopped.wait(backoff)
                    backoff = min(backoff * 2, 2.0)
        finally:
            if conn is not None:
                conn.close()
            watcher.close()

    _IDLE_CHECK_S = 60.0  # a quiet watcher still looks at its connection this often

    def _catch_up(self, conn: psycopg.Connection, last_seq: int) -> int:
        rows = self._read_log(conn, self._sql["watch"], (last_seq,))
        if rows:
            last_seq = rows[-1][0]
            self._deliver(json.loads(event) for _, origin, event in rows
                          if origin != self.origin)
        return last_seq

    # -- maintenance ---------------------------------------------------------------------------
    def _maintain(self, body: Callable[[psycopg.Connection], Any], *,
                  writing: str | None = None, advice: str | None = None) -> Any:
        """Run ``body`` in one transaction on a pooled connection.

        A connection found dropped before ``COMMIT`` is replaced and ``body`` runs again (nothing
        was stored). ``writing`` names what ``body`` writes: these writes carry no write id to
        look for, so when the connection is lost during ``COMMIT`` the :class:`StoreError` says
        the outcome is unknown and gives ``advice``."""
        attempts = self.pool_size + 2
        for attempt in range(attempts):
            conn = self._getconn()
            committing = False
            try:
                conn.execute("BEGIN")
                result = body(conn)
                committing = True
                self._commit(conn)
                return result
            except BaseException as exc:
                self._abandon(conn)
                if not isinstance(exc, psycopg.Error):
                    raise
                if committing:
                    if writing is not None and self._maybe_committed(conn, exc):
                        raise self._unknown_outcome(writing, _first_line(exc), advice) from exc
                elif self._lost(conn, exc) and attempt + 1 < attempts:
                    self._recover_pool()
                    continue
                raise self._store_error(exc) from exc
            finally:
                self._putconn(conn)
        raise AssertionError("unreachable")  # pragma: no cover

    def restore(self, record: Record, history: builtins.list[HistoryEntry], *,
                replace: bool = False) -> None:
        where = record_where(record.scope, record.scope_id, record.name)
        self._maintain(lambda conn: self._restore_rows(conn, record, history, replace),
                       writing=f"the restore of {where}",
                       advice=f"Read {where} to see whether it was restored, and restore it "
                              f"again if it was not.")

    def restore_many(self, items: Iterable[tuple[Record, Iterable[HistoryEntry]]], *,
                     replace: bool = False) -> int:
        pairs = [(record, list(history)) for record, history in items]

        def body(conn: psycopg.Connection) -> None:
            for record, history in pairs:
                self._restore_rows(conn, record, history, replace)

        self._maintain(body, writing=f"an import of {len(pairs)} records",
                       advice="Read a record of the file to see whether the import was stored, "
                              "and import the file again (with --replace) if it was not.")
        return len(pairs)

    def _restore_rows(self, conn: psycopg.Connection, record: Record,
                      history: builtins.list[HistoryEntry], replace: bool) -> None:
        """One record and its kept history, inside the caller's transaction."""
        t = self._t
        key = {"scope": record.scope, "scope_id": record.scope_id, "name": record.name}
        where = record_where(record.scope, record.scope_id, record.name)
        text = dump_json(record.state, where)
        texts = [dump_json(e.state, where) for e in history]
        kept = kept_history(history, texts, self.history_limit, self.history_limit_bytes)
        match = "scope = %(scope)s AND scope_id = %(scope_id)s AND name = %(name)s"
        if conn.execute(f"SELECT 1 FROM {t['records']} WHERE {match} FOR UPDATE",
                        key).fetchone():
            if not replace:
                refuse_existing(record)
            conn.execute(f"DELETE FROM {t['records']} WHERE {match}", key)
            conn.execute(f"DELETE FROM {t['history']} WHERE {match}", key)
        conn.execute(f"INSERT INTO {t['records']} ({_COLUMNS}, history_bytes) VALUES "
                     f"(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                     (record.scope, record.scope_id, record.name, record.version, text,
                      record.content, record.deleted, record.created_at,
                      record.updated_at, record.accessed_at,
                      sum(utf8_size(texts[i]) for i in kept)))
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {t['history']} (scope, scope_id, name, version, ts, "
                f"operation, state, deleted, request_id) "
                f"VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [(record.scope, record.scope_id, record.name, history[i].version,
                  history[i].ts, history[i].operation, texts[i], history[i].deleted,
                  history[i].request_id) for i in kept])

    def purge(self, scope: str, scope_ids: Iterable[str], *,
              names: Iterable[str] | None = None, only_deleted: bool = False) -> int:
        t = self._t
        ids = list(scope_ids)
        wanted = None if names is None else list(names)
        only = " AND deleted" if only_deleted else ""

        def body(conn: psycopg.Connection) -> int:
            removed = 0
            for scope_id in ids:
                params: dict[str, Any] = {"scope": scope, "scope_id": scope_id}
                if wanted is None:
                    gone = conn.execute(
                        f"DELETE FROM {t['records']} WHERE scope = %(scope)s AND "
                        f"scope_id = %(scope_id)s{only} RETURNING name", params).fetchall()
                else:
                    gone = conn.execute(
                        f"DELETE FROM {t['records']} WHERE scope = %(scope)s AND "
                        f"scope_id = %(scope_id)s AND name = ANY(%(names)s){only} RETURNING name",
                        {**params, "names": wanted}).fetchall()
                if gone:
                    conn.execute(f"DELETE FROM {t['history']} WHERE scope = %(scope)s AND "
                                 f"scope_id = %(scope_id)s AND name = ANY(%(names)s)",
                                 {**params, "names": [row[0] for row in gone]})
                removed += len(gone)
            return removed

        conn = getattr(self._local, "conn", None)
        if conn is not None:  # inside a write's fn: part of its transaction
            return body(conn)
        return self._maintain(body, writing=f"the purge of {scope} records",
                              advice="Run the purge again: it removes whatever is left.")

    def prune_history(self, keep: int) -> int:
        t = self._t

        def body(conn: psycopg.Connection) -> int:
            removed = conn.execute(
                f"DELETE FROM {t['history']} AS h USING (SELECT scope, scope_id, name, "
                f"MAX(version) AS top FROM {t['history']} GROUP BY scope, scope_id, name) AS m "
                f"WHERE h.scope = m.scope AND h.scope_id = m.scope_id AND h.name = m.name "
                f"AND h.version <= m.top - %s", (keep,)).rowcount
            if removed:
                conn.execute(_MIGRATE_FROM_1[-1].format(**t))  # recount history_bytes
            return removed

        return self._maintain(body, writing="a history prune",
                              advice="Pruning twice is harmless: run it again.")

    def doctor(self) -> dict:
        t = self._t

        def body(conn: psycopg.Connection) -> dict:
            def one(sql: str) -> Any:
                return _scalar(conn, sql)
            return {
                "backend": "postgresql", "url": self.url, "schema": self.schema,
                "server_version": one("SHOW server_version"),
                "schema_version": int(one(f"SELECT value FROM {t['meta']} "
                                          f"WHERE key = 'schema_version'")),
                "records": one(f"SELECT COUNT(*) FROM {t['records']}"),
                "tombstones": one(f"SELECT COUNT(*) FROM {t['records']} WHERE deleted"),
                "history_rows": one(f"SELECT COUNT(*) FROM {t['history']}"),
                "changes": one(f"SELECT COUNT(*) FROM {t['changes']}"),
                "total_bytes": sum(one(f"SELECT pg_total_relation_size('{t[n]}')")
                                   for n in ("records", "history", "changes", "meta")),
                "synchronous_commit": one("SHOW synchronous_commit"),
                "problems": [],
            }

        return self._maintain(body)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._end_watching()
        if self._pool is not None:
            self._pool.close(timeout=2)


__all__ = ["SCHEMA_VERSION", "PostgresStore", "redact"]
