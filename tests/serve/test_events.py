"""The event stream (``GET /sessions/{id}/events``): changes of a session's client view reach its
connected clients, from this server and from other processes; slow readers, disconnects, many
sessions and shutdown leave the server's memory bounded.
"""

from __future__ import annotations

import copy
import json
import socket
import subprocess
import sys
import time
from typing import Any

import pytest
from _helpers import python_env, wait_for
from _serving import ALICE, TOKENS, Stream, client, client_data_events

import flowstate_jupyter as fs
from flowstate_jupyter.flows.client_data import errors_redacted
from flowstate_jupyter.serve._hub import view_diff

SERVE_TESTS = __file__.rsplit("/", 1)[0]


def _apply(view: dict, change: dict) -> dict:
    """What a client does with one ``client_data`` event."""
    view = copy.deepcopy(view)
    for section, scopes in change["changed"].items():
        for scope, values in scopes.items():
            view.setdefault(section, {}).setdefault(scope, {}).update(values)
    for section, scope, key in change["removed"]:
        view[section][scope].pop(key, None)
    return view


def _replayed(events: list) -> dict:
    """The view a client holds after ``events`` (snapshot, then changes and resyncs)."""
    view: dict = {}
    for _, name, data in events:
        view = data if name in ("snapshot", "resync") else _apply(view, data)
    return view


def _view(flow: Any, store: Any, session_id: str) -> dict:
    with errors_redacted():
        return json.loads(json.dumps(flow.session(session_id, store=store).snapshot()))


def _session_values(events: list, key: str) -> list:
    return [e[2]["changed"]["client_data"]["session"][key] for e in client_data_events(events)
            if key in e[2]["changed"].get("client_data", {}).get("session", {})]


def test_a_stream_starts_with_the_whole_view_and_gets_each_runs_changes(serve, flow,
                                                                         store) -> None:
    server = serve()
    with client(server) as http:
        session_id = http.post("sessions").json()["session_id"]
        streams = [Stream(server, session_id) for _ in range(2)]
        try:
            for stream in streams:
                assert stream.wait(lambda events: events)[0][1] == "snapshot"
            for times in (1, 2):
                assert http.post(f"sessions/{session_id}/actions/say",
                                 json={"message": "hi", "times": times}).status_code == 200
            final = _view(flow, store, session_id)  # both runs have answered: nothing else comes
            for stream in streams:
                assert stream.wait(lambda events: _replayed(events) == final), stream.events
                assert 3 in _session_values(stream.events, "count")
                assert stream.status == 200
                first = stream.events[0]
                assert first[2]["client_data"]["session"]["count"] == 0
                ids = [int(line.split(b": ")[1]) for line in stream.raw.splitlines()
                       if line.startswith(b"id: ")]
                assert ids == sorted(ids) and ids[0] == 1
        finally:
            for stream in streams:
                stream.close()


def test_a_change_written_by_another_process_arrives_within_a_second(serve, flow, store,
                                                                     db_url: str) -> None:
    server = serve()
    with client(server) as http:
        session_id = http.post("sessions").json()["session_id"]
    stream = Stream(server, session_id)
    try:
        stream.wait(lambda events: events)
        code = ("import sys; from served_flow import write_from_another_process as w; "
                "print(repr(w(sys.argv[1], sys.argv[2], 'agent')))")
        child = subprocess.run([sys.executable, "-c", code, db_url, session_id],
                               env=python_env(), cwd=SERVE_TESTS, capture_output=True,
                               text=True, timeout=60)
        assert child.returncode == 0, child.stderr
        committed = float(child.stdout.strip())
        arrived = stream.wait(lambda events: [e[0] for e in client_data_events(events)
                                              if "agent" in json.dumps(e[2])], timeout=5)
        assert arrived, "the change made by another process never reached the stream"
        latency = arrived[0] - committed
        print(f"\nanother process's commit reached the stream after {latency * 1000:.0f} ms")
        assert latency <= 1.0, f"{latency:.2f} s: over the one-second promise"
        assert _replayed(stream.events)["client_data"]["session"]["mode"] == "agent"
    finally:
        stream.close()


def test_a_stream_gets_its_own_sessions_and_users_changes_only(serve, flow, store) -> None:
    server = serve(tokens=TOKENS)
    with client(server, ALICE) as http:
        mine = http.post("sessions").json()["session_id"]
        also_mine = http.post("sessions").json()["session_id"]
    other = flow.session("bobs", user="bob", store=store)
    stream = Stream(server, mine, ALICE)
    try:
        stream.wait(lambda events: events)
        other.patch_state(mode="elsewhere")  # another user's session: not for this stream
        flow.session(also_mine, store=store).patch_state(mode="sibling")  # another session
        flow.session(mine, store=store).user.patch_state(greeting="hi alice")  # her user scope
        assert stream.wait(lambda events: client_data_events(events))
        time.sleep(0.3)  # anything wrongly sent would be here by now
        changes = client_data_events(stream.events)
        assert [c[2] for c in changes] == [
            {"changed": {"client_data": {"user": {"greeting": "hi alice"}}}, "removed": []}]
    finally:
        stream.close()


def test_a_burst_of_writes_ends_in_the_final_view(serve, flow, store) -> None:
    server = serve()
    with client(server) as http:
        session_id = http.post("sessions").json()["session_id"]
    stream = Stream(server, session_id)
    try:
        stream.wait(lambda events: events)
        session = flow.session(session_id, store=store)
        for _ in range(200):
            session.inc_state(count=1)
        final = _view(flow, store, session_id)
        assert stream.wait(lambda events: _replayed(events) == final)
        values = _session_values(stream.events, "count")
        assert values == sorted(values) and values[-1] == 200  # folded, never backwards
    finally:
        stream.close()


def test_a_slow_reader_gets_a_resync_instead_of_a_growing_queue(serve, flow, store) -> None:
    limit = 4
    server = serve(queue_limit=limit)
    hub = server.service.hub
    with client(server) as http:
        session_id = http.post("sessions").json()["session_id"]
    host, port = server.url.split("//")[1].rstrip("/").rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a reader on a thin pipe
    sock.connect((host, int(port)))
    sock.sendall(f"GET /sessions/{session_id}/events HTTP/1.1\r\nHost: localhost\r\n\r\n"
                 .encode())
    try:
        assert wait_for(lambda: hub.stats()["clients"] == 1, timeout=5)
        session = flow.session(session_id, store=store)
        for i in range(300):  # each view change is an event of about 100 KB
            session.patch_state(blob=str(i % 10) * 100_000)
            made = hub.events
            wait_for(lambda made=made: hub.events > made or hub.resyncs, timeout=2,
                     interval=0.001)
            if hub.resyncs:
                break
        stats = hub.stats()
        assert stats["resyncs"] >= 1, stats
        assert stats["deepest"] <= limit and stats["queued"] <= limit, stats
        session.patch_state(mode="after", blob="")
        sock.settimeout(10)
        chunks: list[bytes] = []
        tail = b""
        while b'"mode":"after"' not in tail:  # now read everything
            chunk = sock.recv(1 << 20)
            assert chunk, "the stream ended early"
            chunks.append(chunk)
            tail = tail[-64:] + chunk
        received = b"".join(chunks)
        assert b"event: resync" in received
        assert hub.stats()["queued"] <= limit
    finally:
        sock.close()
    assert wait_for(lambda: hub.stats()["clients"] == 0, timeout=5)


def test_clients_that_go_away_leave_nothing_behind(serve, flow, store) -> None:
    server = serve()
    hub = server.service.hub
    with client(server) as http:
        sessions = [http.post("sessions").json()["session_id"] for _ in range(40)]
    for round_ in range(3):
        streams = [Stream(server, s) for s in sessions for _ in range(2)]
        expected = len(streams)
        assert wait_for(lambda: hub.stats()["clients"] == expected, timeout=10)
        assert hub.stats()["sessions"] == len(sessions)
        flow.session(sessions[0], store=store).inc_state(count=1)
        for stream in streams:
            stream.close()
        # (the last client's count drops before its disconnect has let go of the rest)
        empty = {"sessions": 0, "clients": 0, "index": 0, "dirty": 0, "queued": 0,
                 "subscribed": False}
        assert wait_for(lambda: hub.stats().items() >= empty.items(), timeout=10), \
            (round_, hub.stats())
    assert store._subs.callbacks == []  # the hub's subscription is gone with its last client


def test_streams_beyond_the_limit_are_refused_with_503(serve) -> None:
    server = serve(max_clients=2)
    with client(server) as http:
        session_id = http.post("sessions").json()["session_id"]
        streams = [Stream(server, session_id) for _ in range(2)]
        try:
            assert all(stream.status == 200 for stream in streams)
            refused = http.get(f"sessions/{session_id}/events")
            assert refused.status_code == 503
            assert "2 clients" in refused.json()["error"]
            assert refused.headers["retry-after"] == "5"
        finally:
            for stream in streams:
                stream.close()
        assert wait_for(lambda: server.service.hub.stats()["clients"] == 0, timeout=5)
        again = Stream(server, session_id)
        assert again.status == 200
        again.close()


def test_stopping_the_server_ends_every_stream_and_unsubscribes(serve, store) -> None:
    server = serve()
    with client(server) as http:
        sessions = [http.post("sessions").json()["session_id"] for _ in range(3)]
    streams = [Stream(server, s) for s in sessions]
    assert wait_for(lambda: server.service.hub.stats()["clients"] == 3, timeout=5)
    server.stop()
    assert not server.running
    for stream in streams:
        assert stream.ended.wait(5), "a stream outlived the server"
        stream.close()
    assert server.service.hub.stats()["subscribed"] is False
    assert store._subs.callbacks == []
    assert server.service.workers.threads == 0 or not any(
        t.is_alive() for t in server.service.workers._all)
    with pytest.raises(Exception):  # noqa: B017 - connection refused, whatever its class
        client(server).get("/")


def test_a_client_sees_removed_keys_as_removed() -> None:
    before = {"client_data": {"session": {"a": 1, "b": 2}}, "resources": {"session": {}}}
    after = {"client_data": {"session": {"a": 1, "c": True}},
             "resources": {"session": {"plan": {"client_data": 1}}}}
    changed, removed = view_diff(before, after)
    assert changed == {"client_data": {"session": {"c": True}},
                       "resources": {"session": {"plan": {"client_data": 1}}}}
    assert removed == [["client_data", "session", "b"]]
    assert _apply(before, {"changed": changed, "removed": removed}) == after
    assert view_diff(after, json.loads(json.dumps(after))) == ({}, [])
    assert view_diff({"client_data": {"s": {"x": 1}}}, {"client_data": {"s": {"x": True}}})[0]


def test_the_served_store_may_be_a_memory_store_of_this_process(serve, flow) -> None:
    store = fs.open_store("memory://")
    server = serve(store=store)
    with client(server) as http:
        session_id = http.post("sessions").json()["session_id"]
        stream = Stream(server, session_id)
        try:
            http.post(f"sessions/{session_id}/actions/say", json={"message": "m"})
            assert stream.wait(lambda events: 1 in _session_values(events, "count"))
        finally:
            stream.close()


def test_a_quiet_stream_sends_keep_alive_comments(serve) -> None:
    server = serve(ping_s=0.05)
    with client(server) as http:
        session_id = http.post("sessions").json()["session_id"]
    stream = Stream(server, session_id)
    try:
        assert wait_for(lambda: stream.raw.count(b": ping") >= 3, timeout=5)
        assert [e[1] for e in stream.events] == ["snapshot"]  # comments are not events
    finally:
        stream.close()
