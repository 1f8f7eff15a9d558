"""The client boundary holds: only client data and run outputs leave the server.

The served flow writes a marker into session state (``secret``) and into a resource without
client data (``vault``: state and content); a failing action quotes it in its exception; a
client-data function raises a ``KeyError`` naming it. Every byte the server sends — status lines,
headers and bodies of every route, refusals and errors, the page and the event stream — is
collected and searched for the marker.
"""

from __future__ import annotations

import httpx
from _serving import ALICE, BOB, TOKENS, Stream, client, client_data_events
from served_flow import MARKER


class _Recorder:
    """Keeps every response's status line, headers and body as bytes."""

    def __init__(self) -> None:
        self.sent = bytearray()

    def __call__(self, response: httpx.Response) -> None:
        response.read()
        self.sent += f"{response.status_code} {response.reason_phrase}\n".encode()
        for name, value in response.headers.raw:
            self.sent += name + b": " + value + b"\n"
        self.sent += response.content


def _exercise(server, token: str | None, other: str | None, recorder: _Recorder) -> None:
    hooks = {"response": [recorder]}
    with client(server, token, event_hooks=hooks) as http:
        session_id = http.post("sessions").json()["session_id"]
        stream = Stream(server, session_id, token)
        try:
            ok = http.post(f"sessions/{session_id}/actions/say", json={"message": "hi"})
            assert ok.status_code == 200 and ok.json()["output"]["count"] == 1
            failed = http.post(f"sessions/{session_id}/actions/fail", json={})
            assert failed.json()["status"] == "error"
            request_id = ok.json()["request_id"]
            http.get(f"sessions/{session_id}/snapshot")
            http.post(f"sessions/{session_id}/actions/say", json={"message": MARKER * 10})
            http.post(f"sessions/{session_id}/actions/say", content=b"{broken")
            http.post(f"runs/{request_id}/resume", json={"approved": True})
            http.get("/")
            http.get("no/such/path")
            http.post(f"sessions/{session_id}/snapshot")
            with client(server, other, event_hooks=hooks) as stranger:
                target = session_id if other is not None else "other-users"
                stranger.get(f"sessions/{target}/snapshot")
                stranger.post(f"sessions/{target}/actions/say", json={"message": "x"})
                stranger.get(f"sessions/{target}/events")
                if other is not None:
                    stranger.post(f"runs/{request_id}/resume", json={})
                with client(server, "wrong-token-0123456789", event_hooks=hooks) as wrong:
                    wrong.get(f"sessions/{session_id}/snapshot")
            # a change from outside the server reaches the stream as well
            session = server.service.flow.session(session_id, store=server.service.store)
            session.patch_state(mode="agent")
            session.resources["vault"].patch_state(token=MARKER + "-again")
            assert stream.wait(lambda events: any(
                e[2]["changed"].get("client_data", {}).get("session", {}).get("mode") == "agent"
                for e in client_data_events(events)))
        finally:
            stream.close()
        recorder.sent += bytes(stream.raw)
        assert stream.raw.count(b"event: ") >= 2
        assert session.state.secret.startswith(MARKER)  # the marker is really in the state


def test_the_marker_never_leaves_the_server_with_tokens(serve) -> None:
    server = serve(tokens=TOKENS)
    recorder = _Recorder()
    _exercise(server, ALICE, BOB, recorder)
    assert len(recorder.sent) > 10_000  # the page, the answers, the stream
    assert MARKER.encode() not in recorder.sent
    assert b"MARKER" not in recorder.sent


def test_the_marker_never_leaves_the_server_without_tokens(serve, flow, store) -> None:
    other = flow.session("other-users", user="mallory", store=store)
    other.patch_state(secret=MARKER)
    server = serve()
    recorder = _Recorder()
    _exercise(server, None, None, recorder)
    assert MARKER.encode() not in recorder.sent
    assert b"MARKER" not in recorder.sent


def test_the_marker_is_where_the_notebook_can_see_it(serve, flow, store) -> None:
    """The other side of the boundary: the marker is in the store and the request record."""
    server = serve()
    with client(server) as http:
        session_id = http.post("sessions").json()["session_id"]
        http.post(f"sessions/{session_id}/actions/fail", json={})
    session = flow.session(session_id, store=store)
    assert session.state.secret == MARKER
    assert MARKER in session.runs()[0]["error"]["message"]
