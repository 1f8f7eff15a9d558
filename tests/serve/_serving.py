"""Helpers for the serving tests: httpx clients, an event-stream reader, raw sockets, tokens."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

ALICE, BOB = "alice-token-0123456789abcdef", "bob-token-0123456789abcdef"
TOKENS = {ALICE: "alice", BOB: "bob"}


def client(server: Any, token: str | None = None, *, headers: dict | None = None,
           **options: Any) -> httpx.Client:
    """An httpx client of ``server``, sending ``token`` as a bearer token if given."""
    sent = {"authorization": f"Bearer {token}"} if token else {}
    sent.update(headers or {})
    # plain HTTP on loopback: verify=False spares building a TLS context (30 ms a client)
    return httpx.Client(base_url=server.url, headers=sent, timeout=10, verify=False, **options)


class Stream:
    """An SSE stream read on a thread: ``events`` is a list of (arrival time, name, data)."""

    def __init__(self, server: Any, session_id: str, token: str | None = None) -> None:
        self.client = client(server, token)
        self.events: list[tuple[float, str, Any]] = []
        self.status: int | None = None
        self.ended = threading.Event()
        self.raw = bytearray()
        self._socket: socket.socket | None = None
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(session_id,), daemon=True)
        self._thread.start()
        assert self._opened.wait(10), "the event stream did not open"

    def _read(self, session_id: str) -> None:
        try:
            with self.client.stream("GET", f"sessions/{session_id}/events",
                                    timeout=httpx.Timeout(10, read=None)) as response:
                self.status = response.status_code
                self._socket = response.extensions["network_stream"].get_extra_info("socket")
                self._opened.set()
                name, data = None, None
                for line in response.iter_lines():
                    self.raw += line.encode() + b"\n"
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: "):
                        data = json.loads(line[6:])
                    elif line == "" and name is not None:
                        self.events.append((time.time(), name, data))
                        name, data = None, None
        except httpx.HTTPError:
            pass
        finally:
            self._opened.set()
            self.ended.set()

    def wait(self, predicate: Callable[[list], Any], timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = predicate(list(self.events))
            if found:
                return found
            time.sleep(0.01)
        return predicate(list(self.events))

    def close(self) -> None:
        """Hang up, as a browser tab that closes does (the reading thread wakes and ends)."""
        if self._socket is not None:
            try:
                self._socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(5)
        assert not self._thread.is_alive(), "the stream reader did not end"
        self.client.close()


def client_data_events(events: list) -> list:
    return [e for e in events if e[1] == "client_data"]


def raw_request(server: Any, data: bytes, *, read: bool = True) -> bytes:
    """Send raw bytes to the server and return what it answers (until it closes or 2 s)."""
    host, port = server.url.split("//")[1].rstrip("/").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(data)
        if not read:
            return b""
        sock.settimeout(2)
        received = b""
        try:
            while b"\r\n\r\n" not in received:  # the answer's head is enough
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return received
