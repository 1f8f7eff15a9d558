"""Every route of docs/guide.md, 'Serve a flow over HTTP', over a real uvicorn server and a real
HTTP client (httpx).

The server runs on a free loopback port on a thread of this process and serves the flow of
``served_flow.py`` from a SQLite file; refusals are checked to leave the store exactly as it was
(the fingerprint of every record, its history and the change log).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from _nbtools import fingerprint
from _serving import ALICE, BOB, TOKENS, client, raw_request
from served_flow import MARKER

from flowstate_jupyter.flows.client_data import errors_redacted


def _new_session(http: httpx.Client) -> str:
    response = http.post("sessions")
    assert response.status_code == 201, response.text
    return response.json()["session_id"]


# -- sessions and runs --------------------------------------------------------------------------

def test_a_new_session_belongs_to_the_caller(serve, store) -> None:
    server = serve(tokens=TOKENS)
    with client(server, ALICE) as http:
        session_id = _new_session(http)
    meta = store.read("session", session_id, "$meta").state
    assert meta["user"] == "alice" and meta["flow"] == "served"


def test_running_an_action_answers_its_output_and_client_data(serve, flow, store) -> None:
    server = serve()
    with client(server) as http:
        session_id = _new_session(http)
        response = http.post(f"sessions/{session_id}/actions/say",
                             json={"message": "hi", "times": 2})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
    assert body["output"] == {"echo": "hi", "count": 2}
    assert body["session_id"] == session_id
    assert body["client_data"]["session"]["count"] == 2
    assert body["client_data"]["user"] == {"greeting": "hello"}
    runs = flow.session(session_id, store=store).runs()
    assert [r["request_id"] for r in runs] == [body["request_id"]]
    assert runs[0]["user"] == "local-user" and runs[0]["status"] == "ok"


def test_the_snapshot_is_the_sessions_client_view(serve, flow, store) -> None:
    server = serve()
    with client(server) as http:
        session_id = _new_session(http)
        http.post(f"sessions/{session_id}/actions/say", json={"message": "one"})
        response = http.get(f"sessions/{session_id}/snapshot")
    assert response.status_code == 200
    view = response.json()
    with errors_redacted():  # as the server computes it (see the next tests)
        expected = flow.session(session_id, store=store).snapshot()
    assert view == json.loads(json.dumps(expected))
    assert view["resources"]["session"] == {"notes": {"client_data": {"count": 1}}}
    assert "vault" not in json.dumps(view)


def test_a_failing_run_answers_its_error_type_and_not_its_message(serve, flow, store) -> None:
    server = serve()
    with client(server) as http:
        session_id = _new_session(http)
        response = http.post(f"sessions/{session_id}/actions/fail", json={"reason": "nope"})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "error" and body["output"] is None
    assert body["error"] == {"type": "RuntimeError"}
    record = flow.session(session_id, store=store).runs()[0]
    assert record["error"]["message"] == f"nope: {MARKER}"  # kept for the notebook, not sent


def test_a_client_data_function_that_fails_shows_its_key_and_type_only(serve) -> None:
    server = serve()
    with client(server) as http:
        session_id = _new_session(http)
        body = http.post(f"sessions/{session_id}/actions/say", json={"message": "x"}).json()
        view = http.get(f"sessions/{session_id}/snapshot").json()
    assert body["client_data"]["session"]["leaky"] == {"error": "leaky: KeyError"}
    assert view["client_data"]["session"]["leaky"] == {"error": "leaky: KeyError"}


# -- refused input: 422 with the field errors, nothing written -------------------------------

@pytest.mark.parametrize(("body", "fields"), [
    ({}, [["message"]]),
    ({"message": 3}, [["message"]]),
    ({"message": "ok", "times": 99}, [["times"]]),
    ({"message": "x" * 201, "times": "many"}, [["message"], ["times"]]),
    ([1, 2], [[]]),
])
def test_refused_input_is_422_with_the_field_errors_and_nothing_written(
        serve, store, body: Any, fields: list) -> None:
    server = serve()
    with client(server) as http:
        session_id = _new_session(http)
        before = fingerprint(store)
        response = http.post(f"sessions/{session_id}/actions/say", json=body)
    assert response.status_code == 422, response.text
    answer = response.json()
    assert [e["loc"] for e in answer["detail"]] == fields
    assert all(e["msg"] and e["type"] for e in answer["detail"])
    assert "nothing ran" in answer["error"]
    assert fingerprint(store) == before


@pytest.mark.parametrize(("content", "status", "words"), [
    (b"{not json", 400, "not JSON"),
    (b"\xff\xfe\x00", 400, "UTF-8"),
    (b'{"message": NaN}', 400, "NaN"),
    (b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),
])
def test_a_body_that_is_not_json_is_400_and_nothing_written(
        serve, store, content: bytes, status: int, words: str) -> None:
    server = serve()
    with client(server) as http:
        session_id = _new_session(http)
        before = fingerprint(store)
        response = http.post(f"sessions/{session_id}/actions/say", content=content,
                             headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert words in response.json()["error"]
    assert fingerprint(store) == before


def test_a_body_over_the_limit_is_413_whether_or_not_its_length_is_declared(
        serve, store) -> None:
    server = serve(max_body_bytes=1000)
    body = json.dumps({"message": "x" * 5000}).encode()
    with client(server) as http:
        session_id = _new_session(http)
        before = fingerprint(store)
        declared = http.post(f"sessions/{session_id}/actions/say", content=body)
        streamed = http.post(f"sessions/{session_id}/actions/say",
                             content=iter([body[:600], body[600:]]))  # chunked: no length
        resumed = http.post("runs/r-1/resume", content=body)
    for response in (declared, streamed, resumed):
        assert response.status_code == 413, response.text
        assert "1,000" in response.json()["error"]
    assert fingerprint(store) == before


# -- unknown things and wrong methods ----------------------------------------------------------

def test_unknown_sessions_actions_runs_and_paths_are_404(serve, store) -> None:
    server = serve()
    with client(server) as http:
        session_id = _new_session(http)
        before = fingerprint(store)
        answers = {
            "unknown session": http.post("sessions/nope/actions/say", json={"message": "x"}),
            "invalid session id": http.get("sessions/bad%20id!/snapshot"),
            "unknown action": http.post(f"sessions/{session_id}/actions/dance", json={}),
            "unknown run": http.post("runs/r-000000000000/resume", json={}),
            "unknown path": http.get("elsewhere"),
            "events of no session": http.get("sessions/nope/events"),
        }
    for what, response in answers.items():
        assert response.status_code == 404, (what, response.text)
        assert response.json()["error"], what
    assert "actions: say, fail" in answers["unknown action"].json()["error"]
    assert fingerprint(store) == before


def test_wrong_methods_are_405(serve) -> None:
    server = serve()
    with client(server) as http:
        session_id = _new_session(http)
        answers = [http.get("sessions"), http.get(f"sessions/{session_id}/actions/say"),
                   http.post(f"sessions/{session_id}/snapshot"),
                   http.delete(f"sessions/{session_id}/events"), http.put("/"),
                   http.get("runs/r-1/resume")]
    for response in answers:
        assert response.status_code == 405, response.request.url
        assert "is not allowed here" in response.json()["error"]


def test_a_session_of_another_flow_kind_is_not_found(serve, store) -> None:
    import flowstate_jupyter as fs
    other = fs.define_flow("other", {"noop": fs.handler(lambda i, c: i, name="noop")})
    other.session("theirs", user="local-user", store=store)
    server = serve()
    with client(server) as http:
        response = http.get("sessions/theirs/snapshot")
    assert response.status_code == 404


# -- identity: tokens, users, loopback ---------------------------------------------------------

def _every_route(http: httpx.Client, session_id: str, request_id: str) -> dict[str, Any]:
    return {
        "create": http.post("sessions"),
        "run": http.post(f"sessions/{session_id}/actions/say", json={"message": "x"}),
        "snapshot": http.get(f"sessions/{session_id}/snapshot"),
        "events": http.get(f"sessions/{session_id}/events"),
        "resume": http.post(f"runs/{request_id}/resume", json={}),
    }


def test_no_token_or_an_unknown_one_is_401_on_every_route(serve, store) -> None:
    server = serve(tokens=TOKENS)
    with client(server, ALICE) as http:
        session_id = _new_session(http)
        request_id = http.post(f"sessions/{session_id}/actions/say",
                               json={"message": "x"}).json()["request_id"]
    before = fingerprint(store)
    for token in (None, "not-a-token-of-this-server-at-all", ALICE[:-1]):
        with client(server, token) as http:
            for route, response in _every_route(http, session_id, request_id).items():
                assert response.status_code == 401, (token, route, response.text)
                assert response.headers["www-authenticate"].startswith("Bearer")
    with client(server, headers={"authorization": f"Basic {ALICE}"}) as http:
        assert http.post("sessions").status_code == 401
    assert fingerprint(store) == before


def test_another_users_token_is_403_on_their_session_and_run(serve, store) -> None:
    server = serve(tokens=TOKENS)
    with client(server, ALICE) as http:
        session_id = _new_session(http)
        request_id = http.post(f"sessions/{session_id}/actions/say",
                               json={"message": "x"}).json()["request_id"]
    before = fingerprint(store)
    with client(server, BOB) as http:
        answers = _every_route(http, session_id, request_id)
        answers["refused input"] = http.post(f"sessions/{session_id}/actions/say", json={})
        mine = _new_session(http)  # bob may make his own
    created = answers.pop("create")
    assert created.status_code == 201
    for route, response in answers.items():
        assert response.status_code == 403, (route, response.text)
        assert "alice" not in response.text  # not even whose it is
    assert store.read("session", mine, "$meta").state["user"] == "bob"
    bobs = {mine, created.json()["session_id"]}
    assert [r for r in fingerprint(store)["records"] if r[1] not in bobs] == before["records"]


def test_the_events_cookie_is_taken_on_the_event_stream_only(serve) -> None:
    server = serve(tokens=TOKENS)
    with client(server, ALICE) as http:
        session_id = _new_session(http)
    with client(server, cookies={"flowstate_token": ALICE}) as http:
        assert http.post("sessions").status_code == 401
        assert http.get(f"sessions/{session_id}/snapshot").status_code == 401
        with http.stream("GET", f"sessions/{session_id}/events") as response:
            assert response.status_code == 200
            assert next(response.iter_lines()) == "event: snapshot"


def test_without_tokens_every_request_acts_as_the_local_user(serve, store) -> None:
    server = serve()
    assert server.service.identity.local_user == "local-user"
    with client(server, "whatever-token-is-ignored") as http:
        session_id = _new_session(http)
    assert store.read("session", session_id, "$meta").state["user"] == "local-user"


def test_a_session_of_another_local_user_is_403(serve, flow, store) -> None:
    flow.session("someone-elses", user="mallory", store=store)
    server = serve()
    with client(server) as http:
        assert http.get("sessions/someone-elses/snapshot").status_code == 403


def test_without_tokens_a_request_addressed_to_another_host_is_refused(serve, store) -> None:
    server = serve()
    before = fingerprint(store)
    for host in ("evil.example", "192.168.1.20:8000", "localhost.evil.example"):
        with client(server, headers={"host": host}) as http:
            response = http.post("sessions")
        assert response.status_code == 403, host
        assert "loopback" in response.json()["error"]
    for host in ("localhost", "127.0.0.1", "[::1]:8000", "LOCALHOST:1"):
        with client(server, headers={"host": host}) as http:
            assert http.post("sessions").status_code == 201, host
    assert fingerprint(store)["changes"] > before["changes"]


def test_a_request_from_another_origin_is_refused(serve, store) -> None:
    server = serve()
    own = server.url.rstrip("/")
    with client(server) as http:
        session_id = _new_session(http)
        before = fingerprint(store)
        for origin in ("http://evil.example", "null", "http://localhost:1"):
            response = http.post(f"sessions/{session_id}/actions/say", json={"message": "x"},
                                 headers={"origin": origin})
            assert response.status_code == 403, origin
        assert fingerprint(store) == before
        ok = http.post(f"sessions/{session_id}/actions/say", json={"message": "x"},
                       headers={"origin": own})
    assert ok.status_code == 200


def test_serving_beyond_loopback_without_tokens_is_refused_saying_why(serve, flow) -> None:
    with pytest.raises(ValueError, match="without tokens") as caught:
        serve(host="0.0.0.0")
    message = str(caught.value)
    assert "local-user" in message and "--tokens" in message and "127.0.0.1" in message
    from flowstate_jupyter.serve._server import check_binding
    server = serve(tokens=TOKENS)
    check_binding(server.service, "0.0.0.0")  # with tokens any address is allowed


# -- the page ----------------------------------------------------------------------------------

def test_the_page_carries_the_actions_and_their_input_schemas(serve) -> None:
    server = serve(tokens=TOKENS)
    with client(server) as http:  # the page itself needs no token; it asks for one
        response = http.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'nonce-" in policy
    html = response.text
    start = html.index('<script type="application/json" id="config">') + 44
    config = json.loads(html[start:html.index("</script>", start)])
    assert config["kind"] == "served" and config["auth"] == "token"
    assert config["actions"]["say"]["schema"]["required"] == ["message"]
    assert config["actions"]["say"]["description"] == "Count the message, keep the secret, note it."
    nonce = policy.split("'nonce-")[1].split("'")[0]
    assert f'<script nonce="{nonce}">' in html and f'<style nonce="{nonce}">' in html


# -- a bad request never crashes the server ----------------------------------------------------

def test_hostile_requests_leave_the_server_answering(serve, store) -> None:
    server = serve()
    with client(server) as http:
        session_id = _new_session(http)
    before = fingerprint(store)
    answers = [
        raw_request(server, b"\x00\x01garbage\r\n\r\n"),
        raw_request(server, b"GET / HTTP/1.1\r\nHost: localhost\r\n" + b"X-A: b\r\n" * 5000
                    + b"\r\n"),
        raw_request(server, b"POST /sessions/" + session_id.encode() + b"/actions/say HTTP/1.1"
                    b"\r\nHost: localhost\r\nContent-Length: nope\r\n\r\n{}"),
        raw_request(server, b"POST /sessions/" + session_id.encode() + b"/actions/say HTTP/1.1"
                    b"\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{\"mess", read=False),
        raw_request(server, b"GET /sessions/" + b"a" * 60_000 + b"/snapshot HTTP/1.1\r\n"
                    b"Host: localhost\r\n\r\n"),
    ]
    heads = [answer.split(b"\r\n")[0] for answer in answers]
    assert heads == [b"HTTP/1.1 400 Bad Request", b"HTTP/1.1 200 OK",
                     b"HTTP/1.1 400 Bad Request", b"", b"HTTP/1.1 404 Not Found"]
    with client(server) as http:
        response = http.post(f"sessions/{session_id}/actions/say", json={"message": "still"})
    assert response.status_code == 200
    assert fingerprint(store)["records"] != before["records"]  # that last run, only


def test_flow_asgi_app_is_the_application_any_asgi_server_can_host(flow, store,
                                                                    monkeypatch) -> None:
    from flowstate_jupyter.serve import BackgroundServer
    from flowstate_jupyter.serve._server import bind
    monkeypatch.delenv("FLOWSTATE_TOKENS", raising=False)
    app = flow.asgi_app(store=store, tokens=TOKENS)
    assert type(app).__name__ == "Starlette"
    server = BackgroundServer(app, bind("127.0.0.1", 0))
    try:
        with client(server, ALICE) as http:
            session_id = _new_session(http)
            ran = http.post(f"sessions/{session_id}/actions/say", json={"message": "asgi"})
        assert ran.json()["output"] == {"echo": "asgi", "count": 1}
    finally:
        server.stop()
    assert not server.running


def test_concurrent_runs_on_one_session_lose_no_update(serve, flow, store) -> None:
    from concurrent.futures import ThreadPoolExecutor
    server = serve(workers=3)  # more requests than workers: the rest wait their turn
    with client(server) as http:
        session_id = _new_session(http)

    def one(i: int) -> int:
        with client(server) as http:
            return http.post(f"sessions/{session_id}/actions/say",
                             json={"message": f"m{i}"}).status_code

    with ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(one, range(24)))
    assert statuses == [200] * 24
    session = flow.session(session_id, store=store)
    assert session.state.count == 24
    assert len(session.resources["notes"].state.items) == 24
    assert server.service.workers.threads <= 3


def test_runs_may_run_on_the_servers_own_loop(serve, flow, store) -> None:
    server = serve(workers=0)
    with client(server) as http:
        session_id = _new_session(http)
        answers = [http.post(f"sessions/{session_id}/actions/say", json={"message": "inline"})
                   for _ in range(3)]
        refused = http.post(f"sessions/{session_id}/actions/say", json={})
    assert [a.json()["output"]["count"] for a in answers] == [1, 2, 3]
    assert refused.status_code == 422
    assert server.service.workers.threads == 0
    assert flow.session(session_id, store=store).state.count == 3
