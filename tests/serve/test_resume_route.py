"""``POST /runs/{request_id}/resume``: a run suspended for a person's input, resumed over HTTP
(docs/guide.md, 'Serve a flow over HTTP'): its answer, a refused value (422, still suspended,
nothing written), another user's token (403), a second resume (409), and the change reaching the
event stream.
"""

from __future__ import annotations

from typing import Any

import pytest
from _nbtools import fingerprint
from _serving import ALICE, BOB, TOKENS, Stream, client, client_data_events
from pydantic import BaseModel

import flowstate_jupyter as fs
from flowstate_jupyter.serve import start


class Approval(BaseModel):
    approved: bool
    note: str = ""


class Request(BaseModel):
    plan: str


class Decision(BaseModel):
    decision: str = "pending"


@fs.handler(session_state=Decision)
def ask(input: Request, ctx) -> dict:
    answer = ctx.suspend(Approval, message=f"Approve {input.plan}?")
    ctx.session.patch_state(decision="approved" if answer.approved else "rejected")
    return {"plan": input.plan, "approved": answer.approved, "note": answer.note}


def _flow() -> fs.Flow:
    return fs.define_flow("approvals", {"ask": fs.action(ask, input=Request)},
                          session=fs.scope(client_data={"decision": lambda c: c.state.decision}))


@pytest.fixture
def server(store: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv("FLOWSTATE_TOKENS", raising=False)
    running = start(_flow(), store=store, port=0, tokens=TOKENS)
    yield running
    running.stop()


def _suspended(http: Any) -> tuple[str, dict]:
    session_id = http.post("sessions").json()["session_id"]
    answer = http.post(f"sessions/{session_id}/actions/ask", json={"plan": "ship it"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "suspended", body
    return session_id, body


def test_a_suspended_run_answers_its_question_and_resumes_over_http(server, store) -> None:
    with client(server, ALICE) as http:
        session_id, body = _suspended(http)
        assert body["output"] is None
        assert body["suspension"]["message"] == "Approve ship it?"
        assert body["suspension"]["schema"]["required"] == ["approved"]
        stream = Stream(server, session_id, ALICE)
        try:
            resumed = http.post(f"runs/{body['request_id']}/resume",
                                json={"approved": True, "note": "go"})
            assert resumed.status_code == 200, resumed.text
            done = resumed.json()
            assert done["request_id"] == body["request_id"] and done["status"] == "ok"
            assert done["output"] == {"plan": "ship it", "approved": True, "note": "go"}
            assert done["client_data"]["session"] == {"decision": "approved"}
            assert stream.wait(lambda events: any(
                "approved" in str(e[2]) for e in client_data_events(events)))
        finally:
            stream.close()
    runs = _flow().runs(store=store)
    assert [(r["request_id"], r["status"]) for r in runs] == [(body["request_id"], "ok")]


def test_a_refused_value_is_422_and_the_run_stays_suspended(server, store) -> None:
    with client(server, ALICE) as http:
        _, body = _suspended(http)
        before = fingerprint(store)
        for value in ({"approved": "maybe"}, {}, [1]):
            refused = http.post(f"runs/{body['request_id']}/resume", json=value)
            assert refused.status_code == 422, refused.text
            assert refused.json()["detail"], refused.json()
        assert fingerprint(store) == before
        assert _flow().runs(status="suspended", store=store)[0]["request_id"] == \
            body["request_id"]
        assert http.post(f"runs/{body['request_id']}/resume",
                         json={"approved": False}).json()["status"] == "ok"


def test_another_users_token_cannot_resume_a_run(server, store) -> None:
    with client(server, ALICE) as http:
        _, body = _suspended(http)
    before = fingerprint(store)
    with client(server, BOB) as http:
        refused = http.post(f"runs/{body['request_id']}/resume", json={"approved": True})
    assert refused.status_code == 403
    with client(server) as http:
        assert http.post(f"runs/{body['request_id']}/resume",
                         json={"approved": True}).status_code == 401
    assert fingerprint(store) == before
    assert _flow().runs(status="suspended", store=store)


def test_a_run_resumed_once_cannot_be_resumed_again(server) -> None:
    with client(server, ALICE) as http:
        _, body = _suspended(http)
        first = http.post(f"runs/{body['request_id']}/resume", json={"approved": True})
        again = http.post(f"runs/{body['request_id']}/resume", json={"approved": False})
    assert first.status_code == 200
    assert again.status_code == 409
    assert "approved" not in again.json()["error"].lower() or "suspended" in again.json()["error"]
