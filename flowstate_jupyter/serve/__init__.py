"""Serve a flow over HTTP: ``flow.asgi_app()``, ``flowstate serve``, ``%flow serve``.

.. code-block:: python

    from flowstate_jupyter.serve import serve, start

    app = flow.asgi_app(store=fs.open_store(), tokens="tokens.txt")   # for any ASGI server
    serve(flow, port=8000)                  # uvicorn in the foreground until Ctrl+C
    server = start(flow, port=0)            # uvicorn on a thread: server.url, server.stop()

Needs the ``serve`` extra (``pip install 'flowstate-jupyter[serve]'``: Starlette and uvicorn).
The routes and what they answer are in ``_app.py``; live client data in ``_hub.py``; who may
call in ``_identity.py``; running uvicorn in ``_server.py``; the page in ``page/``.

Without tokens the server serves one local user (``FLOWSTATE_USER``, else the OS user) and
``serve`` / ``start`` refuse any address but loopback. With tokens (``tokens=`` a file or a
``{token: user}`` mapping, else the file named by ``FLOWSTATE_TOKENS``) every request needs
``Authorization: Bearer <token>`` and sees only its user's sessions.

Hosting the application elsewhere (``uvicorn module:app``): uvicorn waits for open responses
before it stops, and an event stream stays open, so give it ``--timeout-graceful-shutdown 5``;
``serve`` and ``start`` end the streams themselves.
"""

from __future__ import annotations

from typing import Any

try:
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError(f"serving a flow needs the 'serve' extra ({exc.name} is missing): "
                      f"pip install 'flowstate-jupyter[serve]'") from exc

from ..stores.base import Store
from ._app import ServedFlow, build_app
from ._identity import TOKENS_ENV, TokenSource, load_tokens
from ._server import BackgroundServer, bind, check_binding, run_foreground, url_of

__all__ = ["TOKENS_ENV", "BackgroundServer", "asgi_app", "load_tokens", "serve", "start"]


def asgi_app(flow: ServedFlow, *, store: Store | None = None, tokens: TokenSource | None = None,
             **options: Any) -> Any:
    """The Starlette application serving ``flow`` (what ``flow.asgi_app()`` returns).

    ``store=None``: the process's default store. ``tokens=None``: the file named by
    ``FLOWSTATE_TOKENS``, else no tokens (one local user: ``local_user``, default
    ``FLOWSTATE_USER`` or the OS user). Limits: ``max_body_bytes`` (1 MiB), ``max_clients``
    (1000 event streams), ``queue_limit`` (32 events per stream), ``workers`` (8 runs at once,
    each on a worker thread; ``0`` runs them on the server's event loop, for flows whose blocks
    never block for long), ``ping_s`` (15 s of silence before a keep-alive comment).
    """
    return build_app(flow, store=store, tokens=tokens, **options)


def _prepared(flow: ServedFlow, store: Store | None, tokens: TokenSource | None, host: str,
              port: int, options: dict) -> tuple[Any, Any]:
    app = asgi_app(flow, store=store, tokens=tokens, **options)
    check_binding(app.state.flowstate, host)
    return app, bind(host, port)


def serve(flow: ServedFlow, *, store: Store | None = None, host: str = "127.0.0.1",
          port: int = 8000, tokens: TokenSource | None = None, log_level: str = "info",
          **options: Any) -> None:
    """Serve ``flow`` with uvicorn until interrupted (what ``flowstate serve`` runs).

    Raises ``ValueError`` for a non-loopback ``host`` without tokens, ``OSError`` when the
    address cannot be bound (a port in use).
    """
    app, sock = _prepared(flow, store, tokens, host, port, options)
    identity = app.state.flowstate.identity
    who = (f"{identity.user_count} user(s) with tokens" if identity.requires_tokens
           else f"local user {identity.local_user!r}, no tokens")
    print(f"flowstate: serving flow {flow.kind!r} at {url_of(sock)} ({who}); Ctrl+C stops",
          flush=True)
    run_foreground(app, sock, log_level=log_level)


def start(flow: ServedFlow, *, store: Store | None = None, host: str = "127.0.0.1",
          port: int = 8000, tokens: TokenSource | None = None,
          **options: Any) -> BackgroundServer:
    """Serve ``flow`` on a background thread (what ``%flow serve`` runs); returns the server.

    ``port=0`` picks a free port; ``server.url`` says which. ``server.stop()`` ends it.
    """
    app, sock = _prepared(flow, store, tokens, host, port, options)
    return BackgroundServer(app, sock)
