"""Live client views: each connected client of a session gets the changes of its client view.

One store subscription serves every stream. A change event names a scope and its id; when that
scope belongs to a watched session (its own scope, its user's or its project's), the session is
marked dirty and the hub's task wakes on the server's loop. The task recomputes the client view
of each dirty session once (on a worker thread: reading the store blocks), compares it with the
last one sent, and puts ONE ``client_data`` event with the keys that changed into the queue of
every client of that session. Changes made by other processes arrive the same way, through the
store's watcher (SQLite: within ``poll_interval``, 0.2 s by default). Writes that land while a
view is being computed are folded into the next event, so a burst of writes may give fewer events
than writes, never a stale view.

Memory is bounded: the hub keeps state only for sessions that have a connected client (the last
view sent, the clients), drops it when the last client goes, refuses clients beyond
``max_clients``, and each client's queue holds at most ``queue_limit`` events. A client that reads
slower than changes come (a slow network, a paused tab) does not make its queue grow: on overflow
its queue is emptied and it gets one ``resync`` event carrying the whole current view instead.

Events on the wire (Server-Sent Events, one JSON object per ``data:`` line, ``id:`` counts the
session's views from 1):

* ``snapshot`` — first, on connect: the whole client view (``session.snapshot()``);
* ``client_data`` — ``{"changed": {section: {scope: {key: value}}}, "removed": [[section,
  scope, key], ...]}`` where section is ``"client_data"`` or ``"resources"``, as in the view;
* ``resync`` — the whole view again, after this client missed events;
* a comment line ``: ping`` every ``ping_s`` seconds of silence, so that proxies keep the
  connection open and a dead one is noticed.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from ..base.jsonvalues import json_equal
from ..flows.client_data import errors_redacted
from ..stores.base import Store
from ._workers import Workers

__all__ = ["Client", "Hub", "TooManyClients", "client_view"]

log = logging.getLogger("flowstate_jupyter.serve")

PING = b": ping\n\n"
_WATCHED_SCOPES = ("session", "user", "project")
_SECTIONS = ("client_data", "resources")


class TooManyClients(Exception):
    """The server already streams to ``max_clients`` clients (or is shutting down)."""


def client_view(session: Any) -> dict:
    """A session's client view as it may leave the server (client-data errors without text)."""
    with errors_redacted():
        return session.snapshot()


def encode(event: str, seq: int, data: Any) -> bytes:
    """One Server-Sent Event (JSON text has no raw newlines, so one ``data:`` line)."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return f"event: {event}\nid: {seq}\ndata: {text}\n\n".encode()


def view_diff(old: dict, new: dict) -> tuple[dict, list[list[str]]]:
    """``(changed, removed)`` between two client views, at the level of client-data keys."""
    changed: dict[str, dict[str, dict[str, Any]]] = {}
    removed: list[list[str]] = []
    for section in _SECTIONS:
        before, after = old.get(section) or {}, new.get(section) or {}
        for scope, values in after.items():
            previous = before.get(scope) or {}
            for key, value in (values or {}).items():
                if key not in previous or not json_equal(previous[key], value):
                    changed.setdefault(section, {}).setdefault(scope, {})[key] = value
        for scope, values in before.items():
            now = after.get(scope) or {}
            removed += [[section, scope, key] for key in (values or {}) if key not in now]
    return changed, removed


class _Watch:
    """One watched session: its last view sent, its clients, the scopes its view reads."""

    def __init__(self, session_id: str, session: Any) -> None:
        self.session_id = session_id
        self.session = session
        self.keys = (("session", session_id), ("user", session.user.id),
                     ("project", session.project.id))
        self.last: dict = {}
        self.seq = 0
        self.clients: set[Client] = set()
        self.pending = 0  # connects under way (they hold the watch before joining it)
        self.lock = asyncio.Lock()


class Client:
    """One connected stream: a bounded queue of encoded events (see the module docstring)."""

    def __init__(self, hub: Hub, watch: _Watch, limit: int) -> None:
        self.hub = hub
        self.watch = watch
        self.limit = limit
        self.queue: collections.deque[bytes] = collections.deque()
        self.resync = False
        self.closed = False
        self.ready = asyncio.Event()

    def offer(self, item: bytes) -> None:
        """Queue ``item``; on overflow drop the queue and owe the client a ``resync``."""
        if self.closed:
            return
        if len(self.queue) >= self.limit:
            self.queue.clear()
            if not self.resync:
                self.resync = True
                self.hub.resyncs += 1
        else:
            self.queue.append(item)
            self.hub.deepest = max(self.hub.deepest, len(self.queue))
        self.ready.set()

    def close(self) -> None:
        self.closed = True
        self.ready.set()

    async def next(self, timeout: float) -> bytes | None:
        """The next bytes to send: an event, ``PING`` after ``timeout`` s, ``None`` at the end."""
        while True:
            if self.closed:
                return None
            if self.resync:  # the whole view, which includes whatever was queued
                self.resync = False
                self.queue.clear()
                return encode("resync", self.watch.seq, self.watch.last)
            if self.queue:
                return self.queue.popleft()
            self.ready.clear()
            try:
                await asyncio.wait_for(self.ready.wait(), timeout)
            except asyncio.TimeoutError:
                return PING


class Hub:
    """Streams the client views of sessions to their connected clients (module docstring)."""

    def __init__(self, store: Store, open_session: Callable[[str, str], Any], *,
                 queue_limit: int = 32, max_clients: int = 1000, ping_s: float = 15.0) -> None:
        self.store = store
        self.open_session = open_session
        self.queue_limit = queue_limit
        self.max_clients = max_clients
        self.ping_s = ping_s
        self.workers = Workers(limit=2)  # views are computed one session at a time
        self.resyncs = 0  # clients that overflowed (each counted once per overflow)
        self.deepest = 0  # the longest any client's queue has been
        self.events = 0  # client_data events made (each sent to every client of its session)
        self._watches: dict[str, _Watch] = {}
        self._index: dict[tuple[str, str], set[str]] = {}  # (scope, id) -> watched sessions
        self._dirty: set[str] = set()
        self._lock = threading.Lock()  # _index and _dirty: store callbacks come from any thread
        self._wake_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._closed = False

    # -- from the store (any thread) -----------------------------------------------------------
    def _on_change(self, event: dict) -> None:
        scope = event.get("scope")
        if scope not in _WATCHED_SCOPES:
            return
        with self._lock:
            ids = self._index.get((scope, event.get("scope_id")))  # type: ignore[arg-type]
            if not ids:
                return
            self._dirty.update(ids)
            if self._wake_pending:
                return
            self._wake_pending = True
        loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            return
        try:
            loop.call_soon_threadsafe(wake.set)
        except RuntimeError:  # the server's loop has closed: nobody is listening
            pass

    # -- on the server's loop ----------------------------------------------------------------
    def _start(self) -> None:
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._wake = asyncio.Event()
            self._task = self._loop.create_task(self._pump(), name="flowstate-serve-hub")
        if self._unsubscribe is None:
            self._unsubscribe = self.store.subscribe(self._on_change)

    async def connect(self, session_id: str, owner: str) -> Client:
        """A new client of ``session_id``, its queue holding the ``snapshot`` event."""
        if self._closed:
            raise TooManyClients("the server is shutting down")
        if self.client_count >= self.max_clients:
            raise TooManyClients(f"this server already streams to {self.max_clients} clients")
        self._start()
        watch = self._watches.get(session_id)
        if watch is None:
            session = await self.workers.call(lambda: self.open_session(session_id, owner))
            watch = self._watches.get(session_id)  # another client may have been quicker
            if watch is None:
                watch = self._watches[session_id] = _Watch(session_id, session)
                with self._lock:
                    for key in watch.keys:
                        self._index.setdefault(key, set()).add(session_id)
        watch.pending += 1
        try:
            async with watch.lock:
                view = await self.workers.call(lambda: client_view(watch.session))
                self._publish(watch, view)
                client = Client(self, watch, self.queue_limit)
                client.offer(encode("snapshot", watch.seq, view))
                watch.clients.add(client)
        finally:
            watch.pending -= 1
        if self._closed:  # shut down while this client was joining
            client.close()
        return client

    def disconnect(self, client: Client) -> None:
        """Forget ``client``; the session's watch goes with its last client."""
        client.close()
        watch = client.watch
        watch.clients.discard(client)
        if watch.clients or watch.pending or self._watches.get(watch.session_id) is not watch:
            return
        del self._watches[watch.session_id]
        with self._lock:
            for key in watch.keys:
                ids = self._index.get(key)
                if ids is not None:
                    ids.discard(watch.session_id)
                    if not ids:
                        del self._index[key]
            self._dirty.discard(watch.session_id)
        if not self._watches and self._unsubscribe is not None:
            self._unsubscribe()  # no stream left: writes need not call us
            self._unsubscribe = None

    def _publish(self, watch: _Watch, view: dict) -> None:
        """Make ``view`` the watch's last view; send what changed to its clients."""
        if watch.seq == 0:
            watch.seq, watch.last = 1, view
            return
        changed, removed = view_diff(watch.last, view)
        watch.last = view
        if not changed and not removed:
            return
        watch.seq += 1
        self.events += 1
        item = encode("client_data", watch.seq, {"changed": changed, "removed": removed})
        for client in watch.clients:
            client.offer(item)

    async def _pump(self) -> None:
        assert self._wake is not None
        wake = self._wake
        while not self._closed:
            await wake.wait()
            wake.clear()
            with self._lock:
                self._wake_pending = False
                dirty, self._dirty = self._dirty, set()
            for session_id in dirty:
                watch = self._watches.get(session_id)
                if watch is None:
                    continue
                try:
                    await self._refresh(watch)
                except asyncio.CancelledError:
                    raise
                except Exception:  # a store hiccup must not end every stream
                    log.exception("flowstate serve: could not read the client view of session "
                                  "%s; its clients get the next change", session_id)

    async def _refresh(self, watch: _Watch) -> None:
        async with watch.lock:
            view = await self.workers.call(functools.partial(client_view, watch.session))
            self._publish(watch, view)

    @property
    def client_count(self) -> int:
        return sum(len(w.clients) for w in self._watches.values())

    def stats(self) -> dict:
        """What the hub holds now: for tests, benchmarks and anyone checking memory."""
        with self._lock:
            index, dirty = len(self._index), len(self._dirty)
        return {"sessions": len(self._watches), "clients": self.client_count, "index": index,
                "dirty": dirty, "queued": sum(len(c.queue) for w in self._watches.values()
                                              for c in w.clients),
                "deepest": self.deepest, "resyncs": self.resyncs, "events": self.events,
                "subscribed": self._unsubscribe is not None}

    def close_streams(self) -> None:
        """End every stream and stop listening (on the server's loop; idempotent)."""
        self._closed = True
        for watch in list(self._watches.values()):
            for client in list(watch.clients):
                client.close()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._task is not None:
            self._task.cancel()

    async def aclose(self) -> None:
        """:meth:`close_streams`, then wait for the hub's task and stop its threads."""
        self.close_streams()
        if self._task is not None:
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self.workers.close()
