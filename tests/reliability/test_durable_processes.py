"""Durable runs across real processes (docs/concepts.md, 'Durable runs'), on SQLite and PostgreSQL.

A run's process is killed with SIGKILL between two steps and inside a block, and another process
resumes it: the final state equals an uninterrupted run's, completed blocks and ``run_once``
functions are not run again. Four processes race to resume one suspended run: exactly one
continues. Four processes start a ``"reject"`` action at once: one runs, three are refused naming
it. Four processes queue on a ``"queue"`` action: they run one at a time, in arrival order.
Blocks leave marks in a file, so every count is from the processes themselves.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import durable_flows as df
import pytest
from _helpers import ROOT, python_env, wait_for

import flowstate_jupyter as fs
from flowstate_jupyter.flows.trace import read_content

LEASE_S = "1"  # leases pass quickly here, so a killed run reads as interrupted within a second
SLOT_LEASE_S = "5"  # runs that wait on each other: a busy machine must not stall one past it


def _env(tmp_path: Path, lease_s: str = LEASE_S, **extra: str) -> dict[str, str]:
    env = python_env()
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), env["PYTHONPATH"]])
    env["FLOWSTATE_LEASE_S"] = lease_s
    env["FLOWSTATE_TEST_MARKS"] = str(tmp_path / "marks")
    env.update(extra)
    return env


def _start(env: dict[str, str], *args: str) -> subprocess.Popen:
    code = "import sys, durable_flows; sys.exit(durable_flows.main(sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _outcome(proc: subprocess.Popen, timeout: float = 60) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture
def lease(monkeypatch):
    monkeypatch.setenv("FLOWSTATE_LEASE_S", LEASE_S)


def _logged_done(store, request_id: str) -> set[str]:
    record = store.read("request", request_id, "$request")
    log = read_content(record.content).get("log") if record is not None else None
    return set((log or {}).get("done", {}))


def _uninterrupted(store) -> dict:
    result = df.flow.run("pipeline", 1, session="reference", user="tester", store=store)
    assert result.ok, result.traceback
    return df.flow.session("reference", store=store).state.model_dump()


@pytest.mark.parametrize("where,logged", [("between", "pipeline/then[1]/work"),
                                          ("inside", "pipeline/then[0]/prepare")])
def test_a_killed_run_resumed_in_another_process_ends_as_if_never_interrupted(
        shared_backend, tmp_path, monkeypatch, lease, where, logged):
    env = _env(tmp_path, FLOWSTATE_TEST_HANG=where)
    store = shared_backend.open()
    child = _start(env, "run", shared_backend.url, "pipeline", "killed", "1")
    marks_file = tmp_path / "marks"
    assert wait_for(lambda: f"hanging {where}" in df.marks(marks_file), timeout=30)
    (run,) = df.flow.runs(store=store, session="killed")
    # the lease renewal (every third of a second here) has logged the completed steps
    assert wait_for(lambda: logged in _logged_done(store, run["request_id"]), timeout=10)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert wait_for(lambda: df.flow.runs(store=store, session="killed")[0]["status"]
                    == "interrupted", timeout=10)
    with pytest.raises(fs.RunStateError, match="takes no value"):
        df.flow.resume(run["request_id"], {"x": 1}, store=store)

    monkeypatch.setenv("FLOWSTATE_TEST_MARKS", str(marks_file))
    result = df.flow.resume(run["request_id"], store=store)
    assert result.ok, result.traceback
    assert result.request_id == run["request_id"] and result.output == 4
    state = df.flow.session("killed", store=store).state.model_dump()
    monkeypatch.delenv("FLOWSTATE_TEST_MARKS")
    assert state == _uninterrupted(store) == {
        "n": 1111, "log": ["prepare", "work-a", "work-b", "finish"]}
    counts = {name: df.marks(marks_file).count(name)
              for name in ("prepare", "work", "notify", "finish")}
    # completed blocks were answered from the log; the block that died ran again, but its
    # committed writes and its run_once call were not repeated
    assert counts == {"prepare": 1, "work": 1 if where == "between" else 2, "notify": 1,
                      "finish": 1}
    (record,) = [r for r in df.flow.runs(store=store) if r["request_id"] == result.request_id]
    assert record["status"] == "ok" and record["attempt"] == 2
    trace = df.flow.trace(result.request_id, store=store)
    assert sorted((s.path, s.status, s.attempt) for s in trace.spans) == [
        ("pipeline", "ok", 2), ("pipeline/then[0]/prepare", "ok", 1),
        ("pipeline/then[1]/work", "ok", 1 if where == "between" else 2),
        ("pipeline/then[2]/finish", "ok", 2)]


def test_four_processes_resuming_one_suspended_run_exactly_one_continues(
        shared_backend, tmp_path, lease):
    store = shared_backend.open()
    marks_file = tmp_path / "marks"
    os.environ["FLOWSTATE_TEST_MARKS"] = str(marks_file)
    try:
        suspended = df.flow.run("approval", "launch", session="race", user="tester",
                                store=store)
    finally:
        del os.environ["FLOWSTATE_TEST_MARKS"]
    assert suspended.status == "suspended"
    go = tmp_path / "go"
    env = _env(tmp_path, FLOWSTATE_TEST_START=str(go))
    children = [_start(env, "resume", shared_backend.url, suspended.request_id,
                       json.dumps({"approved": True, "note": f"from {i}"})) for i in range(4)]
    go.touch()
    outcomes = [_outcome(c) for c in children]
    winners = [o for o in outcomes if o["outcome"] == "ok"]
    losers = [o for o in outcomes if o["outcome"] != "ok"]
    assert len(winners) == 1 and len(losers) == 3
    assert all(o["outcome"] == "RunStateError" for o in losers)
    assert df.marks(marks_file).count("answered True") == 1
    assert df.marks(marks_file).count("draft") == 1  # completed before the suspension
    state = df.flow.session("race", store=store).state
    assert state.log == ["drafted", "approved=True"] and state.n == 1
    with pytest.raises(fs.RunStateError, match="is ok"):
        df.flow.resume(suspended.request_id, {"approved": False}, store=store)


def test_reject_with_four_processes_runs_one_and_refuses_three_naming_it(
        shared_backend, tmp_path):
    store = shared_backend.open()
    go, release = tmp_path / "go", tmp_path / "release"
    env = _env(tmp_path, SLOT_LEASE_S, FLOWSTATE_TEST_START=str(go),
               FLOWSTATE_TEST_RELEASE=str(release))
    children = [_start(env, "run", shared_backend.url, "rejecting", "shared", json.dumps(f"p{i}"))
                for i in range(4)]
    go.touch()
    marks_file = tmp_path / "marks"
    assert wait_for(lambda: any(m.startswith("start") for m in df.marks(marks_file)),
                    timeout=30)
    (running,) = df.flow.runs(store=store, session="shared", status="running")
    assert wait_for(lambda: sum(c.poll() is not None for c in children) == 3, timeout=30), \
        "three runs were refused while the first was in flight"
    losers = [c for c in children if c.poll() is not None]
    refused = [_outcome(c) for c in losers]
    assert all(o["outcome"] == "RunConflictError" for o in refused)
    assert all(o["request_id"] == running["request_id"] and running["request_id"] in o["message"]
               for o in refused)
    release.touch()
    (winner,) = [c for c in children if c not in losers]
    assert _outcome(winner)["outcome"] == "ok"
    assert [m for m in df.marks(marks_file) if m.startswith("start")] == \
        [f"start {running['input']}"]
    runs = df.flow.runs(store=store, session="shared")
    assert [r["status"] for r in runs] == ["ok"]  # the refused runs left no request record
    # the slot is free again: a new run is not refused
    assert df.flow.run("rejecting", "after", session="shared", user="tester",
                       store=store).ok


def test_queue_with_four_processes_runs_them_one_at_a_time_in_arrival_order(
        shared_backend, tmp_path):
    store = shared_backend.open()
    release = tmp_path / "release"
    env = _env(tmp_path, SLOT_LEASE_S, FLOWSTATE_TEST_RELEASE=str(release))
    marks_file = tmp_path / "marks"
    slot = "$action:queueing"

    def waiting() -> int:
        record = store.read("session", "line", slot)
        return len(record.state["queue"]) if record is not None else 0

    children = []
    for i, label in enumerate("ABCD"):
        children.append(_start(env, "run", shared_backend.url, "queueing", "line",
                               json.dumps(label)))
        if i == 0:
            assert wait_for(lambda: "start A" in df.marks(marks_file), timeout=30)
        else:  # the next one arrives only once this one has its place in the queue
            assert wait_for(lambda i=i: waiting() == i, timeout=30)
    release.touch()
    outcomes = [_outcome(c, timeout=120) for c in children]
    assert [o["outcome"] for o in outcomes] == ["ok"] * 4
    events = [m for m in df.marks(marks_file) if m.startswith(("start", "end"))]
    assert events == ["start A", "end A", "start B", "end B", "start C", "end C",
                      "start D", "end D"]
    assert df.flow.session("line", store=store).state.log == ["A", "B", "C", "D"]
    assert store.read("session", "line", slot).state == {"active": None, "queue": []}
