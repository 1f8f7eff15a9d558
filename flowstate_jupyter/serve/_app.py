"""The HTTP face of one flow: a Starlette application
(docs/guide.md, 'Serve a flow over HTTP').

| method, path | does |
|---|---|
| ``POST /sessions`` | a new session of the caller: ``201 {"session_id"}`` |
| ``POST /sessions/{id}/actions/{action}`` | runs the action; body = its input (JSON) |
| ``GET /sessions/{id}/snapshot`` | the client view, ``session.snapshot()`` |
| ``GET /sessions/{id}/events`` | Server-Sent Events of the client view (``_hub.py``) |
| ``POST /runs/{request_id}/resume`` | resumes a suspended run; body = the value |
| ``GET /`` | the page (``page/``) |

**The client boundary.** What leaves the server is client data (``session.client_data()``,
``session.snapshot()``, their changes) and run outputs — never scope state or resources
themselves. Error responses are written here, from what the request asked, never from an
exception's text: a block's exception shows only its type (its message may quote the state it
failed on; the message is in the request record, for the notebook and ``flowstate show``), a
failing client-data function only its key and type, and an unexpected error is
``500 {"error": "internal error ..."}`` with the details in the server's log.

**Answers.** JSON, ``{"error": "..."}`` for every refusal: 400 malformed JSON, 401 no or unknown
token, 403 another user's session or run (or, without tokens, a request not addressed to this
machine), 404 unknown session, action, run or path, 405 wrong method, 409 a run that cannot be
resumed or conflicts with one in flight, 413 a body over ``max_body_bytes``, 422 refused input
(``"detail"``: the field errors; nothing is written), 503 too many streams or the store failing.
An action run answers ``200 {"request_id", "status", "output", "client_data", "session_id"}``
(plus ``"error": {"type"}`` when the run failed, ``"suspension"`` when it waits for input).

**Requests from other sites.** A browser sends an ``Origin`` header with a cross-site request;
one that names another host than the request's is refused (403), so a page elsewhere cannot make
a visitor's browser act here. Without tokens, a request whose ``Host`` is not a loopback name is
refused too (a rebound DNS name pointing at 127.0.0.1 would otherwise reach the local user).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import to_jsonable_python
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ..base.env import current_project
from ..base.ids import check_id
from ..base.names import REQUEST, SESSION_META
from ..errors import (
    AccessDeniedError,
    InvalidIdError,
    RunConflictError,
    RunStateError,
    StoreError,
    UnknownActionError,
    ValidationError,
)
from ..flows.client_data import errors_redacted
from ..stores.base import Store
from ..stores.default import default_store
from ._hub import Client, Hub, TooManyClients, client_view
from ._identity import Identity, TokenSource
from ._workers import Workers

__all__ = ["COOKIE", "ServedFlow", "Service", "build_app"]

log = logging.getLogger("flowstate_jupyter.serve")

#: The cookie the page sets so that its EventSource (which cannot send headers) is let in.
COOKIE = "flowstate_token"
MAX_BODY_BYTES = 1024 * 1024
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


class Refusal(Exception):
    """An answer other than 2xx: ``status``, a message, optional ``detail`` and headers."""

    def __init__(self, status: int, message: str, detail: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail
        self.headers = headers


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    text = json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return Response(text.encode(), status, media_type="application/json",
                    headers={"cache-control": "no-store", **(headers or {})})


def _jsonable(value: Any) -> Any:
    """A run output as JSON: models dumped, anything else JSON cannot hold as its ``repr``."""
    data = to_jsonable_python(value, fallback=repr)
    try:
        json.dumps(data, allow_nan=False)
    except ValueError:  # NaN or infinity somewhere
        return repr(value)
    return data


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 maybe in brackets) is this machine only."""
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServedFlow(Protocol):
    """What serving uses of a :class:`~flowstate_jupyter.Flow`.

    A Protocol rather than an import of ``flows/flow.py``: that module imports this package (for
    ``Flow.asgi_app``), and a module must not sit in an import circle.
    """

    kind: str
    actions: Any  # {name: action}; an action has ``input_model``

    @property
    def session(self) -> Callable[..., Any]: ...
    @property
    def arun(self) -> Callable[..., Awaitable[Any]]: ...
    @property
    def resume(self) -> Callable[..., Any]: ...
    @property
    def aresume(self) -> Callable[..., Awaitable[Any]]: ...


@dataclass
class Service:
    """Everything the routes share: the flow, the store, who may call, streams and workers."""

    flow: ServedFlow
    store: Store
    identity: Identity
    project: str
    hub: Hub
    workers: Workers
    max_body_bytes: int
    page: str

    # -- who is calling ------------------------------------------------------------------------
    def caller(self, request: Request, *, cookie: bool = False) -> str:
        """The user id of the request, or a :class:`Refusal` (see the module docstring)."""
        self.check_origin(request)
        if not self.identity.requires_tokens:
            assert self.identity.local_user is not None
            return self.identity.local_user
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        if not token and cookie:
            token = unquote(request.cookies.get(COOKIE, ""))
        if not token:
            raise Refusal(401, "this server needs a bearer token: send the header "
                               "'Authorization: Bearer <token>'",
                          headers={"www-authenticate": "Bearer"})
        user = self.identity.user_for(token)
        if user is None:
            raise Refusal(401, "unknown token: this server does not know it",
                          headers={"www-authenticate": 'Bearer error="invalid_token"'})
        return user

    def check_origin(self, request: Request) -> None:
        host = request.headers.get("host", "")
        origin = request.headers.get("origin")
        if origin is not None and origin != "null" and \
                urlsplit(origin).netloc.lower() != host.lower():
            raise Refusal(403, "cross-origin requests are refused: use this server from its own "
                               "page, or from a program (which sends no Origin header)")
        if origin == "null":
            raise Refusal(403, "requests from an opaque origin are refused")
        if not self.identity.requires_tokens:
            name = urlsplit(f"//{host}").hostname or ""
            if not is_loopback(name):
                raise Refusal(403, "this server runs without tokens for one local user, so it "
                                   "answers only requests addressed to localhost or a loopback "
                                   "address; serve with tokens to be reached by another name")

    # -- sessions and runs -----------------------------------------------------------------------
    def owned(self, session_id: str, user: str) -> None:
        """Refuse unless ``session_id`` is a session of this flow belonging to ``user``."""
        try:
            check_id(session_id, "session id")
        except InvalidIdError:
            raise Refusal(404, "no such session (session ids are 1-128 characters of "
                               "A-Z a-z 0-9 . _ @ : -)") from None
        record = self.store.read("session", session_id, SESSION_META)
        meta = record.state if record is not None and not record.deleted else None
        if not isinstance(meta, dict) or meta.get("flow") != self.flow.kind:
            raise Refusal(404, f"no session {session_id!r} of flow {self.flow.kind!r}; create "
                               f"one with POST /sessions")
        if meta.get("user") != user:
            raise Refusal(403, f"session {session_id!r} belongs to another user")

    def session(self, session_id: str, user: str) -> Any:
        return self.flow.session(session_id, user=user, project=self.project, store=self.store)

    def client_data(self, session_id: str, user: str) -> dict:
        with errors_redacted():
            return self.session(session_id, user).client_data()

    async def aclose(self) -> None:
        await self.hub.aclose()
        self.workers.close()


def _service(request: Request) -> Service:
    return request.app.state.flowstate


async def _read_json(request: Request, limit: int) -> Any:
    """The request body as JSON (``None`` when empty), at most ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Refusal(400, "the Content-Length header is not a number")
        if int(declared) > limit:
            raise Refusal(413, f"the body is {int(declared):,} bytes; this server takes at most "
                               f"{limit:,}")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Refusal(413, f"the body is over {limit:,} bytes, the most this server "
                                   f"takes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise Refusal(400, "the client went away before sending its whole body") from None
    body = b"".join(chunks)
    if not body.strip():
        return None
    try:
        return json.loads(body, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise Refusal(400, f"the body is not JSON: {exc.msg} at line {exc.lineno} column "
                           f"{exc.colno}") from None
    except UnicodeDecodeError:
        raise Refusal(400, "the body is not JSON: it is not UTF-8 text") from None
    except (ValueError, RecursionError) as exc:
        raise Refusal(400, f"the body is not JSON: {exc}" if isinstance(exc, ValueError)
                      else "the body is not JSON this server takes: nested too deeply") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _field_errors(exc: PydanticValidationError) -> list[dict]:
    """pydantic's errors, without the input values and context it also carries."""
    return [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]


def _validated(model: type[BaseModel] | None, body: Any, action: str) -> Any:
    if model is None:
        return body
    try:
        return model.model_validate({} if body is None else body)
    except PydanticValidationError as exc:
        errors = _field_errors(exc)
        where = ", ".join(".".join(map(str, e["loc"])) or "(the input)" for e in errors)
        raise Refusal(422, f"the input of action {action!r} was refused ({where}); nothing ran",
                      detail=errors) from None


def _refusal(exc: BaseException) -> Refusal | None:
    """The answer for a library error raised before or around a run (``None``: unexpected)."""
    if isinstance(exc, Refusal):
        return exc
    if isinstance(exc, ValidationError):
        path = [str(p) for p in exc.path]
        return Refusal(422, str(exc), detail=[{"loc": path, "msg": exc.reason,
                                               "type": "value_error"}])
    if isinstance(exc, AccessDeniedError):
        return Refusal(403, "this session belongs to another user or flow")
    if isinstance(exc, (RunStateError, RunConflictError)):
        return Refusal(409, str(exc))
    if isinstance(exc, UnknownActionError):
        return Refusal(404, str(exc))
    if isinstance(exc, StoreError):
        log.error("flowstate serve: the store failed: %s", exc)
        return Refusal(503, "the store could not be used just now; the server's log says why")
    return None


def run_answer(result: Any, client_data: dict) -> dict:
    """What an action run or a resume answers (see the module docstring)."""
    ok = result.status == "ok"
    body: dict[str, Any] = {"request_id": result.request_id, "status": result.status,
                            "output": _jsonable(result.output) if ok else None,
                            "client_data": client_data, "session_id": result.session_id}
    if result.error is not None:
        body["error"] = {"type": type(result.error).__name__}
    suspension = getattr(result, "suspension", None)
    if suspension is not None:
        body["suspension"] = {"message": getattr(suspension, "message", None),
                              "schema": getattr(suspension, "schema", None),
                              "expires_at": getattr(suspension, "expires_at", None)}
    return body


# ------------------------------------------------------------------------------ routes

async def create_session(request: Request) -> Response:
    svc = _service(request)
    user = svc.caller(request)
    session = await svc.workers.call(
        lambda: svc.flow.session(None, user=user, project=svc.project, store=svc.store))
    return _json({"session_id": session.id}, 201)


async def run_action(request: Request) -> Response:
    svc = _service(request)
    user = svc.caller(request)
    session_id, name = request.path_params["id"], request.path_params["action"]
    action = svc.flow.actions.get(name)
    if action is None:
        known = ", ".join(svc.flow.actions)
        raise Refusal(404, f"flow {svc.flow.kind!r} has no action {name!r}; actions: {known}")
    body = await _read_json(request, svc.max_body_bytes)

    async def job() -> tuple[Any, dict]:
        svc.owned(session_id, user)  # whose session comes before what is wrong with the input
        value = _validated(action.input_model, body, name)
        result = await svc.flow.arun(name, value, session=session_id, user=user,
                                     project=svc.project, store=svc.store)
        return result, svc.client_data(session_id, user)

    result, client_data = await svc.workers.run(job)
    return _json(run_answer(result, client_data))


async def snapshot(request: Request) -> Response:
    svc = _service(request)
    user = svc.caller(request)
    session_id = request.path_params["id"]

    def read() -> dict:
        svc.owned(session_id, user)
        return client_view(svc.session(session_id, user))

    return _json(await svc.workers.call(read))


async def events(request: Request) -> Response:
    svc = _service(request)
    user = svc.caller(request, cookie=True)
    session_id = request.path_params["id"]
    await svc.workers.call(lambda: svc.owned(session_id, user))
    try:
        client = await svc.hub.connect(session_id, user)
    except TooManyClients as exc:
        raise Refusal(503, f"{exc}; try again later", headers={"retry-after": "5"}) from None
    return EventStream(svc.hub, client)


async def resume_run(request: Request) -> Response:
    svc = _service(request)
    user = svc.caller(request)
    request_id = request.path_params["request_id"]
    value = await _read_json(request, svc.max_body_bytes)
    flow: Any = svc.flow

    async def job() -> tuple[Any, dict]:
        try:
            check_id(request_id, "request id")
        except InvalidIdError:
            raise Refusal(404, "no such run") from None
        record = svc.store.read("request", request_id, REQUEST)
        state = record.state if record is not None and not record.deleted else None
        if not isinstance(state, dict) or state.get("flow") != flow.kind:
            raise Refusal(404, f"no run {request_id!r} of flow {flow.kind!r}")
        if state.get("user") != user:
            raise Refusal(403, f"run {request_id!r} belongs to another user")
        if getattr(flow, "resume", None) is None:
            raise Refusal(501, "this version of flowstate-jupyter cannot resume runs")
        if getattr(flow, "aresume", None) is not None:
            result = await flow.aresume(request_id, value, store=svc.store)
        else:
            result = flow.resume(request_id, value, store=svc.store)
        return result, svc.client_data(result.session_id, user)

    result, client_data = await svc.workers.run(job)
    return _json(run_answer(result, client_data))


async def page(request: Request) -> Response:
    svc = _service(request)
    svc.check_origin(request)
    nonce = secrets.token_urlsafe(16)
    policy = (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
              f"connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
              f"frame-ancestors 'none'")
    return Response(svc.page.replace("{{nonce}}", nonce), media_type="text/html",
                    headers={"content-security-policy": policy, "cache-control": "no-store",
                             "x-content-type-options": "nosniff",
                             "referrer-policy": "no-referrer"})


class EventStream(Response):
    """The ``text/event-stream`` answer of one client: events until it or the server goes."""

    def __init__(self, hub: Hub, client: Client) -> None:
        # no Response.__init__: it would declare a Content-Length, and a stream has none
        self.status_code = 200
        self.raw_headers = [(b"content-type", b"text/event-stream; charset=utf-8"),
                            (b"cache-control", b"no-store"), (b"x-accel-buffering", b"no")]
        self.background = None
        self.hub = hub
        self.client = client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = self.client

        async def until_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            client.close()

        watcher = asyncio.ensure_future(until_disconnect())
        try:
            await send({"type": "http.response.start", "status": self.status_code,
                        "headers": self.raw_headers})
            while True:
                item = await client.next(self.hub.ping_s)
                if item is None:
                    break
                await send({"type": "http.response.body", "body": item, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the client went away while we wrote to it
            pass
        finally:
            watcher.cancel()
            self.hub.disconnect(client)


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refusal)
    body: dict[str, Any] = {"error": exc.message}
    if exc.detail is not None:
        body["detail"] = exc.detail
    return _json(body, exc.status, exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    messages = {404: "no such path; this server has GET /, POST /sessions, POST "
                     "/sessions/{id}/actions/{action}, GET /sessions/{id}/snapshot, GET "
                     "/sessions/{id}/events and POST /runs/{request_id}/resume",
                405: f"{request.method} is not allowed here"}
    return _json({"error": messages.get(exc.status_code, str(exc.detail))}, exc.status_code,
                 dict(exc.headers or {}))


async def _unexpected(request: Request, exc: Exception) -> Response:
    refusal = _refusal(exc)
    if refusal is not None:
        return await _refused(request, refusal)
    log.error("flowstate serve: %s %s failed", request.method, request.url.path,
              exc_info=exc)
    return _json({"error": "internal error; the server's log has the details"}, 500)


def _guarded(endpoint: Callable[[Request], Awaitable[Response]]
             ) -> Callable[[Request], Awaitable[Response]]:
    """Library errors become their answers here, so they never reach Starlette's 500 path."""
    async def guarded(request: Request) -> Response:
        try:
            return await endpoint(request)
        except Refusal:
            raise
        except Exception as exc:
            refusal = _refusal(exc)
            if refusal is None:
                raise
            raise refusal from None
    guarded.__name__ = endpoint.__name__
    return guarded


def _page_html(flow: ServedFlow, identity: Identity) -> str:
    """The page with the flow's actions and input schemas in it (read once)."""
    folder = resources.files("flowstate_jupyter.serve") / "page"
    html = (folder / "index.html").read_text(encoding="utf-8")
    actions = {}
    for name, act in flow.actions.items():
        model = act.input_model
        actions[name] = {"schema": model.model_json_schema() if model is not None else None,
                         "description": act.block.description or act.block.__doc__}
    config = {"kind": flow.kind, "actions": actions,
              "auth": "token" if identity.requires_tokens else "local",
              "user": identity.local_user, "cookie": COOKIE}
    text = json.dumps(config, ensure_ascii=False).replace("<", "\\u003c").replace(
        ">", "\\u003e").replace("&", "\\u0026")
    return (html.replace("/*{{style}}*/", (folder / "style.css").read_text(encoding="utf-8"))
                .replace("/*{{script}}*/", (folder / "app.js").read_text(encoding="utf-8"))
                .replace("{{config}}", text)
                .replace("{{title}}", _escape(flow.kind)))


def _escape(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def build_app(flow: ServedFlow, *, store: Store | None = None, tokens: TokenSource | None = None,
              max_body_bytes: int = MAX_BODY_BYTES, max_clients: int = 1000,
              queue_limit: int = 32, workers: int = 8, ping_s: float = 15.0,
              local_user: str | None = None) -> Starlette:
    """The Starlette application serving ``flow`` (see ``flowstate_jupyter.serve``)."""
    store = store if store is not None else default_store()
    identity = Identity(tokens, local_user=local_user)
    project = current_project()

    def open_session(session_id: str, user: str) -> Any:
        return flow.session(session_id, user=user, project=project, store=store)

    service = Service(flow=flow, store=store, identity=identity, project=project,
                      hub=Hub(store, open_session, queue_limit=queue_limit,
                              max_clients=max_clients, ping_s=ping_s),
                      workers=Workers(limit=workers), max_body_bytes=max_body_bytes,
                      page=_page_html(flow, identity))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await service.aclose()

    routes = [
        Route("/", _guarded(page), methods=["GET"]),
        Route("/sessions", _guarded(create_session), methods=["POST"]),
        Route("/sessions/{id}/actions/{action}", _guarded(run_action), methods=["POST"]),
        Route("/sessions/{id}/snapshot", _guarded(snapshot), methods=["GET"]),
        Route("/sessions/{id}/events", _guarded(events), methods=["GET"]),
        Route("/runs/{request_id}/resume", _guarded(resume_run), methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={Refusal: _refused, HTTPException: _http_error,
                                        Exception: _unexpected})
    app.state.flowstate = service
    return app
