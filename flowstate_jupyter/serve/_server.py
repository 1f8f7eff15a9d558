"""Running the application with uvicorn: in the foreground (``flowstate serve``) or on a thread
(``%flow serve``, tests).

We bind the listening socket ourselves, so that a busy port or a refused address is an
``OSError`` for the caller (uvicorn would log it and exit the process) and port 0 picks a free
port whose number we can read back. uvicorn waits for open responses to finish before it shuts
down, and an event stream never finishes by itself: our server ends every stream first
(``Hub.close_streams``), then shuts down as usual, with a grace period for runs still going.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from typing import Any

import uvicorn

from ._app import Service, is_loopback

__all__ = ["BackgroundServer", "bind", "check_binding", "run_foreground"]

#: Runs still going when the server stops get this long to finish before they are cancelled.
GRACE_S = 5.0


def check_binding(service: Service, host: str) -> None:
    """Refuse to listen beyond this machine without tokens (``ValueError`` saying why)."""
    if service.identity.requires_tokens or is_loopback(host):
        return
    raise ValueError(
        f"refusing to serve on {host!r} without tokens: with no tokens every caller acts as the "
        f"local user {service.identity.local_user!r}, so anyone who can reach that address "
        f"could read and change that user's sessions. Give tokens (flowstate serve --tokens "
        f"FILE, or set FLOWSTATE_TOKENS to the file), or serve on 127.0.0.1")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    if host in ("0.0.0.0", "[::]"):  # the page is reachable here at least
        host = "127.0.0.1"
    return f"http://{host}:{port}/"


class _Server(uvicorn.Server):
    """uvicorn's server, which ends the event streams before it waits for responses to end."""

    def __init__(self, config: uvicorn.Config, service: Service) -> None:
        super().__init__(config)
        self.service = service

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.service.hub.close_streams()
        await super().shutdown(sockets)


def _config(app: Any, log_level: str, *, quiet: bool = False) -> uvicorn.Config:
    # quiet (a thread in someone's process): leave their logging set-up alone, no access log
    extra: dict[str, Any] = {"log_config": None, "access_log": False} if quiet else {}
    return uvicorn.Config(app, log_level=log_level, lifespan="on",
                          timeout_graceful_shutdown=int(GRACE_S), server_header=False, **extra)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run_foreground(app: Any, sock: socket.socket, *, log_level: str = "info") -> None:
    """Serve until interrupted (Ctrl+C or SIGTERM), then shut down cleanly and return.

    uvicorn handles the signal (a graceful shutdown), then raises it again once it is done;
    that second time it ends up here as ``KeyboardInterrupt`` and we return normally.
    """
    server = _Server(_config(app, log_level), app.state.flowstate)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main else None
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        sock.close()


class BackgroundServer:
    """uvicorn serving ``app`` on a daemon thread; ``url``, ``stop()``.

    Starting waits until the server answers (or raises what stopped it); ``stop()`` ends the
    streams, waits for runs still going (up to the grace period) and joins the thread.
    """

    def __init__(self, app: Any, sock: socket.socket, *, log_level: str = "warning",
                 timeout: float = 10.0) -> None:
        self.app = app
        self.url = url_of(sock)
        self._sock = sock
        self._server = _Server(_config(app, log_level, quiet=True), app.state.flowstate)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"flowstate-serve {self.url}")
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server at {self.url} did not start"
                                   + (f": {self._error!r}" if self._error else ""))
            time.sleep(0.01)

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._sock])
        except BaseException as exc:  # noqa: BLE001 - reported by the thread that started it
            self._error = exc
        finally:
            self._sock.close()

    @property
    def service(self) -> Service:
        return self.app.state.flowstate

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = GRACE_S + 5) -> None:
        """Stop serving and wait for the thread (idempotent)."""
        self._server.should_exit = True
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<BackgroundServer {self.url} {'running' if self.running else 'stopped'}>"
