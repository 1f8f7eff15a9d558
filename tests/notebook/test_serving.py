"""``%flow serve``: the current flow served from the kernel's background; what the notebook
writes reaches connected browsers."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from _serving import Stream, client_data_events
from IPython.core.error import UsageError


def _served_url(capsys: pytest.CaptureFixture) -> str:
    out = capsys.readouterr().out
    match = re.search(r"serving flow 'assistant' at (http://127\.0\.0\.1:\d+/)#session=nb1", out)
    assert match, out
    assert "as user 'alice'" in out
    return match.group(1)


def _session_change(events: list, key: str) -> list:
    return [e[2]["changed"]["client_data"]["session"][key] for e in client_data_events(events)
            if key in e[2]["changed"].get("client_data", {}).get("session", {})]


def test_flow_serve_serves_the_notebooks_session_and_its_writes_reach_the_browser(
        nb: Any, capsys: pytest.CaptureFixture) -> None:
    nb.run_line_magic("flow", "serve --port 0")
    url = _served_url(capsys)
    with httpx.Client(base_url=url, timeout=10) as http:
        view = http.get("sessions/nb1/snapshot")
        assert view.status_code == 200
        assert view.json()["client_data"]["session"]["mode"] == "chat"
    stream = Stream(SimpleNamespace(url=url), "nb1")
    try:
        assert stream.wait(lambda events: events)[0][1] == "snapshot"
        nb.run_line_magic("flow", 'run chat {"message": "hi"}')
        nb.run_line_magic("state", 'set session.mode "agent"')
        assert stream.wait(lambda events: _session_change(events, "mode") == ["agent"])
        assert 1 in _session_change(stream.events, "message_count")
    finally:
        stream.close()
    with pytest.raises(UsageError, match="already serving at"):
        nb.run_line_magic("flow", "serve --port 0")
    capsys.readouterr()
    nb.run_line_magic("flow", "serve --stop")
    assert f"stopped serving at {url}" in capsys.readouterr().out
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, timeout=5)
    nb.run_line_magic("flow", "serve --stop")
    assert "no server is running" in capsys.readouterr().out


def test_unloading_the_extension_stops_its_server(nb: Any,
                                                  capsys: pytest.CaptureFixture) -> None:
    nb.run_line_magic("flow", "serve --port=0")
    url = _served_url(capsys)
    assert httpx.get(url, timeout=5).status_code == 200
    nb.run_line_magic("unload_ext", "flowstate_jupyter")
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, timeout=5)
    nb.run_line_magic("load_ext", "flowstate_jupyter")  # the fixture unloads it again


@pytest.mark.parametrize(("line", "words"), [
    ("serve --port lots", "--port takes a number"),
    ("serve --verbose", "%flow serve [--port N]"),
    ("serve --flow nothing --port 0", "no flow named 'nothing'"),
])
def test_flow_serve_mistakes_are_one_line_usage_errors(nb: Any, line: str, words: str) -> None:
    with pytest.raises(UsageError, match=re.escape(words)):
        nb.run_line_magic("flow", line)
    from flowstate_jupyter.notebook import kernel_state
    assert kernel_state(nb).server is None


def test_flow_serve_on_a_port_in_use_says_so(nb: Any) -> None:
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UsageError, match=f"cannot listen on 127.0.0.1:{port}.*--port N"):
            nb.run_line_magic("flow", f"serve --port {port}")
