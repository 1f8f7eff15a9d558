"""``flowstate serve MODULE:FLOW``: a real process serving a real port, stopped by a signal."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from _helpers import python_env

SERVE_TESTS = Path(__file__).resolve().parents[1] / "serve"
TOKEN = "cli-token-0123456789abcdef"


def _start(*args: str, env: dict | None = None) -> subprocess.Popen:
    environment = {**python_env(), "PYTHONUNBUFFERED": "1"}
    environment.pop("FLOWSTATE_TOKENS", None)
    environment.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "flowstate_jupyter.cli", "serve", *args],
                            cwd=SERVE_TESTS, env=environment, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _url(process: subprocess.Popen) -> str:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("flowstate: serving flow 'served' at http://127.0.0.1:"), (
        line, process.stderr.read() if process.poll() is not None and process.stderr else "")
    return line.split(" at ")[1].split(" ")[0]


def _stop(process: subprocess.Popen, sig: int = signal.SIGINT) -> tuple[int, str]:
    process.send_signal(sig)
    try:
        _, err = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return process.returncode, err


def test_flowstate_serve_serves_the_flow_until_interrupted(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    process = _start("served_flow:flow", "--store", url, "--port", "0",
                     env={"FLOWSTATE_USER": "cli-user"})
    try:
        base = _url(process)
        with httpx.Client(base_url=base, timeout=10) as http:
            session_id = http.post("sessions").json()["session_id"]
            ran = http.post(f"sessions/{session_id}/actions/say", json={"message": "hi"})
            assert ran.status_code == 200 and ran.json()["output"]["count"] == 1
            with http.stream("GET", f"sessions/{session_id}/events") as events:
                assert events.status_code == 200
                code, err = _stop(process)  # a stream is open: shutdown must still be clean
                assert next(iter(events.iter_lines())) == "event: snapshot"
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 0, err
    assert "Traceback" not in err
    import flowstate_jupyter as fs
    store = fs.open_store(url)
    try:
        assert store.read("session", session_id, "$meta").state["user"] == "cli-user"
    finally:
        store.close()


def test_flowstate_serve_with_a_tokens_file(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(f"{TOKEN} carol\n")
    process = _start("served_flow:flow", "--store", f"sqlite:///{tmp_path / 'cli.db'}",
                     "--port", "0", "--tokens", str(tokens))
    try:
        base = _url(process)
        with httpx.Client(base_url=base, timeout=10) as http:
            assert http.post("sessions").status_code == 401
            answer = http.post("sessions", headers={"authorization": f"Bearer {TOKEN}"})
            assert answer.status_code == 201
    finally:
        code, err = _stop(process, signal.SIGTERM)  # as a service manager stops it
    assert code == 0, err
    assert "Application shutdown complete" in err


@pytest.mark.parametrize(("args", "words"), [
    (["served_flow:flow", "--host", "0.0.0.0"], "refusing to serve on '0.0.0.0' without tokens"),
    (["served_flow:nothing"], "has no 'nothing'"),
    (["served_flow:MARKER"], "is a str, not a flow"),
    (["no_such_module:flow"], "cannot import module 'no_such_module'"),
    (["served_flow"], "give MODULE:FLOW"),
    (["served_flow:flow", "--tokens", "/nonexistent/tokens"], "/nonexistent/tokens"),
])
def test_flowstate_serve_refuses_what_it_cannot_do_with_exit_2(tmp_path: Path, args: list,
                                                                words: str) -> None:
    process = _start(*args, "--store", f"sqlite:///{tmp_path / 'cli.db'}", "--port", "0")
    out, err = process.communicate(timeout=60)
    assert process.returncode == 2, (out, err)
    assert words in err
    assert "Traceback" not in err


def test_flowstate_serve_says_when_the_port_is_taken(tmp_path: Path) -> None:
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = _start("served_flow:flow", "--store", f"sqlite:///{tmp_path / 'cli.db'}",
                         "--port", str(port))
        out, err = process.communicate(timeout=60)
    assert process.returncode == 2, (out, err)
    assert f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err


def test_flowstate_help_lists_serve() -> None:
    result = subprocess.run([sys.executable, "-m", "flowstate_jupyter.cli", "serve", "--help"],
                            env=python_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "MODULE:FLOW" in result.stdout and "--tokens" in result.stdout
