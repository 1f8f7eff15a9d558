"""The state-storage guide's complete flow, run through two actions, snapshot checked field by
field."""

from __future__ import annotations

import guide_flow as guide


def test_guide_flow_runs_two_actions_and_the_snapshot_shows_exactly_the_client_view(store):
    flow = guide.make_flow()
    first = flow.run("chat", {"message": "hello"}, user="alice", store=store)
    assert first.status == "ok", first.traceback
    assert first.output == {"reply": "chat: hello", "count": 1}
    sid = first.session_id

    second = flow.run("chat", {"message": "/agent plan a trip"}, user="alice", session=sid,
                      store=store)
    assert second.output == {"reply": "agent: /agent plan a trip", "count": 2}
    saved = flow.run("save", {"title": "Trip plan", "body": "# Day 1", "theme": "dark"},
                     user="alice", session=sid, store=store)
    assert saved.status == "ok", saved.traceback
    assert saved.output == {"saved": "Trip plan"}

    s = flow.session(sid, user="alice", store=store)
    snap = s.snapshot()
    assert set(snap) == {"client_data", "resources"}
    # client data, scope by scope and key by key
    assert set(snap["client_data"]) == {"session", "user", "project"}
    assert snap["client_data"]["session"]["mode"] == "agent"
    assert snap["client_data"]["session"]["message_count"] == 2
    assert snap["client_data"]["session"]["artifact_count"] == 1
    assert set(snap["client_data"]["session"]) == {"mode", "message_count", "artifact_count"}
    assert snap["client_data"]["user"]["theme"] == "dark"
    assert set(snap["client_data"]["user"]) == {"theme"}
    assert snap["client_data"]["project"] == {}
    # resources: only their own client_data reaches the client
    assert snap["resources"]["session"]["artifacts"]["client_data"]["count"] == 1
    assert snap["resources"]["session"]["artifacts"]["client_data"]["titles"] == ["Trip plan"]
    assert set(snap["resources"]["session"]["artifacts"]) == {"client_data"}
    assert snap["resources"]["user"]["preferences"]["client_data"]["theme"] == "dark"
    assert snap["resources"]["user"]["preferences"]["client_data"]["language"] == "en"
    assert snap["resources"]["project"] == {}
    # the typed state behind it
    assert s.state.mode == "agent" and s.state.message_count == 2
    assert s.resources["artifacts"].state.last_saved == "Trip plan"
    assert s.resources["artifacts"].read_content() == "# Day 1"
    assert s.user.resources.preferences.state.theme == "dark"
    assert s.client_data() == snap["client_data"]


def test_guide_flow_merges_block_state_into_the_flow_session_model():
    flow = guide.make_flow()
    model = flow.state_model("session")
    # one model inheriting from the flow's and every block's, so each block's view is typed
    assert list(model.model_fields) == ["mode", "message_count"]
    for part in (guide.SessionState, guide.ModeState, guide.CountState):
        assert issubclass(model, part)
    assert set(flow.resources("session")) == {"artifacts"}
    assert set(flow.resources("user")) == {"preferences"}
    text = flow.describe()
    for needle in ("flow 'assistant'", "chat (input ChatInput)", "save (input SaveInput)",
                   "router 'mode-router'", "mode: Literal['chat', 'agent'] = 'chat'",
                   "message_count: int = 0", "resource artifacts: ArtifactsState",
                   "client data: mode, message_count, artifact_count", "resource preferences"):
        assert needle in text, needle


def test_guide_flow_agent_reply_emits_a_message_event_in_order(mem):
    flow = guide.make_flow()
    result = flow.run("chat", {"message": "/agent go"}, user="alice", store=mem)
    types = [e["type"] for e in result.events]
    assert types[0] == "session" and types[1] == "request"
    assert types[-1] == "request" and result.events[-1]["status"] == "ok"
    message = next(e for e in result.events if e["type"] == "message")
    assert message["data"] == {"text": "planning"} and message["block"] == "agent_reply"
    changes = [e for e in result.events if e["type"] == "state_change"]
    assert [c["operation"] for c in changes] == ["increment", "patch"]
    assert types.index("message") > types.index("state_change")
