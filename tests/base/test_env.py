"""One rule for the current user (``base/env.py``), and every layer that asks for it follows it.

The rule: ``FLOWSTATE_USER`` if set, and then it must be a valid id (a name you chose is never
changed silently: ``InvalidIdError`` says which id would do); else the operating-system user made
an id (``john doe`` -> ``john_doe``); else ``"local"``. Each layer is asked through its public
entry: a new session of a flow (``flow.session``, ``flow.run``), the notebook extension
(``%load_ext``), ``windmill.current_user()``, a served flow (``POST /sessions`` over HTTP), and
the ``flowstate serve`` command (the user it serves, or its one-line refusal).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import flowstate_jupyter as fs
from flowstate_jupyter import windmill as wm
from flowstate_jupyter.base import env
from flowstate_jupyter.errors import InvalidIdError

ROOT = Path(__file__).resolve().parents[2]

FLOW_MODULE = '''
import flowstate_jupyter as fs


@fs.handler
def ping(input, ctx):
    return "pong"


flow = fs.define_flow(kind="who", actions={"ping": ping})
'''

#: Variables getpass reads, in its order, before it asks the password database.
OS_USER_VARIABLES = ("LOGNAME", "USER", "LNAME", "USERNAME")


@pytest.fixture
def flow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The flow of ``who.py`` in ``tmp_path`` (the current folder, so the command finds it)."""
    path = tmp_path / "who.py"
    path.write_text(FLOW_MODULE)
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location("who", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.flow


@pytest.fixture(autouse=True)
def _no_ipython_history(monkeypatch: pytest.MonkeyPatch) -> None:
    """The notebook layer's shell keeps no history database."""
    from IPython.core.history import HistoryAccessor
    monkeypatch.setattr(HistoryAccessor, "enabled", False)


@pytest.fixture
def store_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("FLOWSTATE_STORE", url)
    for name in ("FLOWSTATE_TOKENS", "FLOWSTATE_PROJECT", "FLOWSTATE_SESSION", "JPY_SESSION_NAME"):
        monkeypatch.delenv(name, raising=False)
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[Any]:
    s = fs.open_store(store_url)
    yield s
    s.close()


# -- the layers, each through its public entry --------------------------------------------------

def _flow_session(flow: Any, store: Any, store_url: str) -> str:
    return flow.session(None, store=store).user.id


def _flow_run(flow: Any, store: Any, store_url: str) -> str:
    result = flow.run("ping", None, store=store)
    assert result.output == "pong", result.error
    return flow.session(result.session_id, store=store).user.id


def _notebook(flow: Any, store: Any, store_url: str) -> str:
    from IPython.core.interactiveshell import InteractiveShell

    from flowstate_jupyter import notebook
    InteractiveShell.clear_instance()
    shell = InteractiveShell.instance()
    try:
        shell.run_line_magic("load_ext", "flowstate_jupyter")
        user = notebook.kernel_state(shell).user
        assert notebook.current_session(shell).user.id == user
        return user
    finally:
        if id(shell) in notebook._loaded:
            shell.run_line_magic("unload_ext", "flowstate_jupyter")
        notebook._remembered.pop(id(shell), None)
        InteractiveShell.clear_instance()


def _windmill(flow: Any, store: Any, store_url: str) -> str:
    return wm.current_user()


def _served(flow: Any, store: Any, store_url: str) -> str:
    from flowstate_jupyter.serve import start
    server = start(flow, port=0, store=store)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            answer = http.post("sessions")
    finally:
        server.stop()
    assert answer.status_code == 201, answer.text
    return flow.session(answer.json()["session_id"], store=store).user.id


def _command(flow: Any, store: Any, store_url: str) -> str:
    """``flowstate serve who:flow`` in a real process: the user its first line names; its
    refusal raised again as the ``InvalidIdError`` it printed."""
    process = subprocess.Popen(
        [sys.executable, "-m", "flowstate_jupyter.cli", "--store", store_url, "serve", "who:flow",
         "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = process.stdout.readline() if process.stdout else ""
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    found = re.search(r"local user '([^']*)'", first)
    if found:
        return found.group(1)
    assert process.returncode == 2, (first, err)
    assert err.startswith("flowstate: ") and err.count("\n") == 1, err
    raise InvalidIdError(err.removeprefix("flowstate: ").strip())


LAYERS: dict[str, Callable[[Any, Any, str], str]] = {
    "flow.session": _flow_session,
    "flow.run": _flow_run,
    "%load_ext": _notebook,
    "windmill.current_user": _windmill,
    "served flow": _served,
    "flowstate serve": _command,
}


def _answers(flow: Any, store: Any, store_url: str) -> dict[str, str]:
    """Each layer's answer: the user, or ``InvalidIdError: <message>``."""
    answers = {}
    for name, ask in LAYERS.items():
        try:
            answers[name] = ask(flow, store, store_url)
        except InvalidIdError as exc:
            answers[name] = f"InvalidIdError: {exc}"
    return answers


# -- the tests ----------------------------------------------------------------------------------

def test_a_valid_flowstate_user_is_the_user_of_every_layer(
        flow: Any, store: Any, store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWSTATE_USER", "john-doe")
    assert env.current_user() == "john-doe"
    assert _answers(flow, store, store_url) == dict.fromkeys(LAYERS, "john-doe")


def test_an_invalid_flowstate_user_is_the_same_clear_refusal_in_every_layer(
        flow: Any, store: Any, store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWSTATE_USER", "john doe")
    with pytest.raises(InvalidIdError) as caught:
        env.current_user()
    message = str(caught.value)
    assert "FLOWSTATE_USER" in message and "'john_doe'" in message  # where, and what would do
    before = store.list("session")
    assert _answers(flow, store, store_url) == dict.fromkeys(LAYERS, f"InvalidIdError: {message}")
    assert store.list("session") == before == []  # no layer made a session for anyone


def test_without_flowstate_user_the_os_user_made_an_id_is_the_user_of_every_layer(
        flow: Any, store: Any, store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLOWSTATE_USER", raising=False)
    for name in OS_USER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LOGNAME", "john doe")  # what getpass reads first
    assert env.os_user() == env.current_user() == "john_doe"
    assert _answers(flow, store, store_url) == dict.fromkeys(LAYERS, "john_doe")


#: Run as root: load everything (and run once, so what loads lazily is loaded), then become a
#: user id the password database does not know, and ask each layer.
CHILD = """
import getpass, json, os, sys
import flowstate_jupyter as fs
from flowstate_jupyter import windmill as wm
from flowstate_jupyter.base.env import current_user
from flowstate_jupyter.notebook import KernelState

@fs.handler
def ping(input, ctx):
    return "pong"

flow = fs.define_flow(kind="who", actions={"ping": ping})
store = fs.open_store("memory://")
flow.session(flow.run("ping", None, store=store, user="warm-up").session_id, store=store)
KernelState(store=store), wm.current_user()

uid = int(sys.argv[1])
os.setgid(uid)
os.setuid(uid)
try:
    os_name = getpass.getuser()
except Exception as exc:
    os_name = type(exc).__name__
result = flow.run("ping", None, store=store)
print(json.dumps({
    "getpass": os_name,
    "env": current_user(),
    "flow.session": flow.session(None, store=store).user.id,
    "flow.run": flow.session(result.session_id, store=store).user.id,
    "notebook": KernelState(store=store).user,
    "windmill.current_user": wm.current_user(),
}))
"""


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="a process without an OS user name needs root to become a user id "
                           "the password database does not know")
def test_with_no_os_user_name_at_all_every_layer_says_local() -> None:
    import pwd
    uid = next(u for u in range(54321, 54400) if not _known_uid(pwd, u))
    child_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONDONTWRITEBYTECODE": "1",
                 "FLOWSTATE_STORE": "memory://"}  # no LOGNAME, USER, LNAME, USERNAME
    done = subprocess.run([sys.executable, "-c", CHILD, str(uid)], env=child_env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout)
    assert answers.pop("getpass") in ("OSError", "KeyError")  # the OS really names no one
    assert answers == dict.fromkeys(answers, env.UNKNOWN_USER) and len(answers) == 5


def _known_uid(pwd: Any, uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def test_only_base_env_reads_the_user_from_the_environment_or_the_os() -> None:
    """Every other module asks ``base.env``: none calls getpass or reads FLOWSTATE_USER."""
    package = ROOT / "flowstate_jupyter"
    readers = []
    for path in package.rglob("*.py"):
        if path == package / "base" / "env.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = {getattr(node, "id", None), getattr(node, "attr", None),
                     getattr(node, "module", None)}
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            if isinstance(node, ast.Constant) and node.value in ("FLOWSTATE_USER",
                                                                  *OS_USER_VARIABLES):
                names.add("FLOWSTATE_USER")
            if names & {"getpass", "getuser", "getlogin", "FLOWSTATE_USER"}:
                readers.append(f"{path.relative_to(ROOT)}:{node.lineno}")  # type: ignore[attr-defined]
    assert not readers, f"these read the user themselves; ask base.env.current_user(): {readers}"
