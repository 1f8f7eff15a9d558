"""Crash safety: a writer killed with SIGKILL at random points never leaves a broken store.

A child process writes in a loop — ``inc_state`` and ``push_state`` on a scope, ``inc_state``
and ``write_content`` (large, so a commit spans several pages) on a resource — and prints each
committed version to an unbuffered stdout. The test kills it with SIGKILL at a random moment, 20
times on one file (alternating ``durability="normal"`` and ``"full"``, some kills while the child
is still starting up), and after every kill checks that:

* the store opens, and SQLite's ``PRAGMA integrity_check`` says ``ok``;
* every committed (printed) write is there: the state holds exactly the printed increments and
  pushed items — plus at most the one write that committed just before the kill, before its line
  was printed;
* every kept history entry is whole: it satisfies the writer's invariant (count + number of
  items == version, items are 0..n-1), versions are contiguous, the newest entry equals the
  stored state and version, and each printed version still in the window has the printed state;
* the change log has no gaps and its newest item for the record carries the stored version.

Set ``FLOWSTATE_CRASH_SEED`` to replay a failing run (the seed is in every failure message).
"""

from __future__ import annotations

import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

import flowstate_jupyter as fs

if sys.platform == "win32":  # pragma: no cover
    pytest.skip("SIGKILL is POSIX only; CI runs these on Linux", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
KILLS = 20
HISTORY_LIMIT = 100  # the default: what users get

# A fork server: imports flowstate once, then forks one writer per line it reads on stdin
# ("<store path>\t<durability>\t<fifo path>"), answering with the writer's pid. Each writer
# sends its output to the FIFO with one unbuffered os.write per committed version, so that
# what the test reads is exactly what was printed before the kill. Forking from a warm,
# single-threaded process makes twenty kills take seconds instead of twenty interpreter starts.
ZYGOTE = r"""
import os, signal, sys, traceback
from pydantic import BaseModel, Field
import flowstate_jupyter as fs

class Counter(BaseModel):
    count: int = 0
    items: list[int] = Field(default_factory=list)

class Doc(BaseModel):
    n: int = 0
    text: str = ""

def say(text):
    os.write(1, (text + "\n").encode())

def writer(path, durability):
    store = fs.open_store(f"sqlite:///{path}", durability=durability)
    h = fs.ScopeHandle(store, "session", "crash", state=Counter,
                       resources={"doc": fs.define_resource(state=Doc, writable=True)})
    doc = h.resources["doc"]
    next_item = len(h.state.items)
    say("ready")
    i = 0
    while True:
        step = i % 4
        if step == 0:
            h.inc_state(count=1)
            say(f"inc {h.version}")
        elif step == 1:
            h.push_state("items", next_item)
            say(f"push {h.version} {next_item}")
            next_item += 1
        elif step == 2:
            n = doc.state.n + 1
            doc.patch_state(n=n, text="t" * (n % 7 * 1000))  # up to 6 kB: spans pages
            say(f"res {doc.version} {n}")
        else:
            doc.write_content(f"content {i} " + "c" * 9000)
            say(f"content {doc.version} {i}")
        i += 1

signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # killed writers are reaped by the kernel
for line in sys.stdin:
    path, durability, fifo = line.rstrip("\n").split("\t")
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        fd = os.open(fifo, os.O_WRONLY)
        os.dup2(fd, 1)
        try:
            writer(path, durability)
        except BaseException:
            say("error " + traceback.format_exc().replace("\n", " | "))
        os._exit(1)
    sys.stdout.write(f"{pid}\n")
    sys.stdout.flush()
"""

class Counter(BaseModel):
    count: int = 0
    items: list[int] = Field(default_factory=list)


class Doc(BaseModel):
    n: int = 0
    text: str = ""


@dataclass
class Expected:
    """What the printed lines prove was committed, cumulated over every run."""

    scope_version: int = 0
    count: int = 0
    items: list[int] = field(default_factory=list)
    doc_version: int = 0
    doc_n: int = 0
    content_tag: int | None = None  # the i of the last committed content write
    scope_states: dict[int, tuple[int, int]] = field(default_factory=dict)  # v -> (count, len)
    doc_states: dict[int, int] = field(default_factory=dict)  # v -> n


def _python_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


class ForkServer:
    """The ZYGOTE process; ``start_writer`` forks a writer and returns (pid, fifo fd)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.log = folder / "fork-server.log"  # a file, not a pipe nobody drains
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-u", "-c", ZYGOTE],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=log, env=_python_env(), cwd=ROOT, text=True)
        self.count = 0

    def start_writer(self, path: Path, durability: str) -> tuple[int, int]:
        self.count += 1
        fifo = self.folder / f"writer-{self.count}.fifo"
        os.mkfifo(fifo)
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # open before the writer does
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{path}\t{durability}\t{fifo}\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        if not ready:
            raise AssertionError("the fork server did not answer within 60 s")
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            raise AssertionError(f"the fork server failed: {line!r}\n{self.stderr()}")
        return int(line), fd

    def stderr(self) -> str:
        self.close()
        return self.log.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()  # reaps it and closes the pipes


def _read_available(fd: int, timeout: float) -> bytes:
    """What the FIFO holds within ``timeout`` (b"" at end of file)."""
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        return b""
    try:
        return os.read(fd, 1 << 16)
    except BlockingIOError:
        return b""


def _run_and_kill(server: ForkServer, path: Path, durability: str, rng: random.Random,
                  early: bool) -> list[str]:
    """Fork a writer, SIGKILL it at a random moment; return the lines it printed completely."""
    pid, fd = server.start_writer(path, durability)
    data = b""
    try:
        if early:  # while it opens the store, creates the schema or makes its first writes
            time.sleep(rng.uniform(0.0, 0.02))
        else:
            deadline = time.monotonic() + 30
            while b"ready\n" not in data:
                assert time.monotonic() < deadline, "the writer did not start within 30 s"
                data += _read_available(fd, 0.1)
            time.sleep(rng.uniform(0.0, 0.25))
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it already died: the output below says why
        while True:  # drain until end of file: the writer and its descriptor are gone
            chunk = _read_available(fd, 10)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    text = data.decode()
    if "error " in text:
        raise AssertionError("the writer failed by itself: "
                             + text[text.index("error "):].replace(" | ", "\n"))
    return text.split("\n")[:-1]  # the last piece has no newline: written partly or not at all


def _apply(exp: Expected, line: str) -> None:
    kind, *rest = line.split()
    version = int(rest[0])
    if kind == "inc":
        exp.count += 1
        exp.scope_version = version
        exp.scope_states[version] = (exp.count, len(exp.items))
    elif kind == "push":
        assert int(rest[1]) == len(exp.items), f"pushed item {rest[1]} out of order"
        exp.items.append(int(rest[1]))
        exp.scope_version = version
        exp.scope_states[version] = (exp.count, len(exp.items))
    elif kind == "res":
        exp.doc_n = int(rest[1])
        exp.doc_version = version
        exp.doc_states[version] = exp.doc_n
    elif kind == "content":
        exp.content_tag = int(rest[1])
        exp.doc_version = version
        exp.doc_states[version] = exp.doc_n
    else:
        raise AssertionError(f"unexpected line from the writer: {line!r}")


def _integrity(path: Path) -> list[tuple]:
    conn = sqlite3.connect(str(path))
    try:
        return conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()


def _check_store(path: Path, exp: Expected, last_step: int | None, where: str) -> None:
    """Open the store after a kill and check everything the module docstring lists.

    ``last_step`` is the step the writer was at when killed (None: it had printed nothing);
    that write may have committed without being printed, and is then adopted into ``exp``.
    """
    store = fs.open_store(f"sqlite:///{path}")
    try:
        assert _integrity(path) == [("ok",)], where
        h = fs.ScopeHandle(store, "session", "crash", state=Counter,
                           resources={"doc": fs.define_resource(state=Doc, writable=True)})
        record = store.read("session", "crash")
        doc_record = store.read("session", "crash", "doc")
        version = record.version if record else 0
        state = h.state
        doc_version = doc_record.version if doc_record else 0

        # committed writes are all there, plus at most the one unprinted write
        extra_scope = version - exp.scope_version
        extra_doc = doc_version - exp.doc_version
        assert (extra_scope, extra_doc) in ((0, 0), (1, 0), (0, 1)), \
            f"{where}: versions {version}/{doc_version}, printed {exp.scope_version}/" \
            f"{exp.doc_version}: a committed write was lost or a phantom appeared"
        if extra_scope:
            assert last_step in (0, 1), f"{where}: unprinted scope write at step {last_step}"
            if last_step == 0:
                _apply(exp, f"inc {version}")
            else:
                _apply(exp, f"push {version} {len(exp.items)}")
        if extra_doc:
            assert last_step in (2, 3), f"{where}: unprinted resource write at step {last_step}"
            if last_step == 2:
                _apply(exp, f"res {doc_version} {exp.doc_n + 1}")
            else:
                exp.doc_version = doc_version
                exp.doc_states[doc_version] = exp.doc_n
                exp.content_tag = -1  # committed, its tag unknown: checked by prefix below
        assert state.count == exp.count, f"{where}: committed increments != stored count"
        assert state.items == exp.items, f"{where}: committed pushes != stored items"
        assert state.count + len(state.items) == version, where

        # history of the scope: whole, contiguous, newest = stored, printed versions intact
        history = store.history("session", "crash")
        # pruning goes a batch at a time: never above the limit, at least 3/4 of it kept
        assert min(version, 3 * HISTORY_LIMIT // 4) <= len(history) <= HISTORY_LIMIT, where
        assert [e.version for e in history] == list(range(version, version - len(history), -1))
        if history:
            assert (history[0].version, history[0].state) == (version, record.state), where
        for entry in history:
            count, items = entry.state["count"], entry.state["items"]
            assert count + len(items) == entry.version, f"{where}: half-written v{entry.version}"
            assert items == list(range(len(items))), f"{where}: torn list at v{entry.version}"
            if entry.version in exp.scope_states:
                assert (count, len(items)) == exp.scope_states[entry.version], where

        # the resource: state, content and history
        if doc_record is not None:
            doc = h.resources["doc"]
            assert doc.state.n == exp.doc_n, where
            assert doc.state.text == "t" * (exp.doc_n % 7 * 1000), where
            content = doc.read_content_raw()
            if exp.content_tag is None:
                assert content is None, where
            else:
                assert content is not None and content.endswith("c" * 9000), where
                if exp.content_tag >= 0:
                    assert content.startswith(f"content {exp.content_tag} "), where
            doc_history = store.history("session", "crash", "doc")
            assert [e.version for e in doc_history] == \
                list(range(doc_version, doc_version - len(doc_history), -1)), where
            assert doc_history[0].state == doc_record.state, where
            for entry in doc_history:
                if entry.version in exp.doc_states:
                    assert entry.state["n"] == exp.doc_states[entry.version], where

        # the change log: no gaps, bounded, newest item per record carries its version
        changes = store.changes()
        seqs = [seq for seq, _ in changes]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) if seqs else True, where
        assert len(changes) <= store.changelog_limit
        last_scope = [e for _, e in changes if e.get("type") == "state_change"]
        if version and last_scope:
            assert last_scope[-1]["version"] == version, where
        last_doc = [e for _, e in changes if e.get("type") == "resource_change"]
        if doc_version and last_doc:
            assert last_doc[-1]["version"] == doc_version, where
    finally:
        store.close()


@pytest.mark.slow
def test_a_writer_killed_at_random_points_never_loses_or_tears_a_committed_write(tmp_path):
    seed = int(os.environ.get("FLOWSTATE_CRASH_SEED", time.time_ns() % 2**32))
    rng = random.Random(seed)
    path = tmp_path / "crash.db"
    exp = Expected()
    total_lines = 0
    server = ForkServer(tmp_path)
    try:
        _kill_repeatedly(server, path, exp, rng, seed)
    finally:
        server.close()
    total_lines = exp.count + len(exp.items) + exp.doc_version
    assert total_lines > 100, f"the writer committed too little to prove anything (seed {seed})"
    assert exp.count > 0 and exp.items and exp.doc_n > 0


def _kill_repeatedly(server: ForkServer, path: Path, exp: Expected, rng: random.Random,
                     seed: int) -> None:
    for kill in range(KILLS):
        durability = "normal" if kill % 2 == 0 else "full"
        early = kill % 5 == 1
        where = f"kill {kill + 1}/{KILLS} ({durability}{', early' if early else ''}; " \
                f"FLOWSTATE_CRASH_SEED={seed})"
        lines = _run_and_kill(server, path, durability, rng, early)
        committed = [line for line in lines if line != "ready"]
        for line in committed:
            _apply(exp, line)
        started = "ready" in lines
        last_step = len(committed) % 4 if started else None
        if path.exists():
            _check_store(path, exp, last_step, where)
