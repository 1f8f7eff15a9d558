"""``flowstate runs`` and ``flowstate resume`` (docs/guide.md, 'The `flowstate` command'), through
the real entry point.

``runs`` lists runs of every flow with their status (``--status`` filters, ``--json`` for
scripts); ``resume`` imports the run's flow from the module that defined it (or ``--flow
MODULE:NAME``) and continues the run; refusals exit 4 (refused data) or 2 (usage) with one
line, and change nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import durable_flows as df
import pytest
from _helpers import ROOT, python_env

import flowstate_jupyter as fs


def flowstate(*args: str, store: str) -> subprocess.CompletedProcess:
    env = python_env()
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), env["PYTHONPATH"]])
    return subprocess.run([sys.executable, "-m", "flowstate_jupyter.cli", "--store", store,
                           *args], env=env, capture_output=True, text=True, timeout=60,
                          cwd=ROOT)


@pytest.fixture
def runs(tmp_path):
    url = f"sqlite:///{tmp_path}/runs.db"
    store = fs.open_store(url)
    done = df.flow.run("pipeline", 1, session="s1", user="alice", store=store)
    waiting = df.flow.run("approval", "launch", session="s2", user="bob", store=store)
    store.close()
    return url, done.request_id, waiting.request_id


def test_runs_lists_runs_with_status_and_filters(runs):
    url, done, waiting = runs
    listed = flowstate("runs", store=url)
    assert listed.returncode == 0, listed.stderr
    assert done in listed.stdout and waiting in listed.stdout
    assert "approve this plan?" in listed.stdout  # what the suspended run waits for
    only = flowstate("runs", "--status", "suspended", "--json", store=url)
    items = json.loads(only.stdout)
    assert [(i["request_id"], i["status"], i["user"]) for i in items] == \
        [(waiting, "suspended", "bob")]
    assert items[0]["suspension"]["schema"] == df.Approval.model_json_schema()
    assert json.loads(flowstate("runs", "--status", "error", "--json", store=url).stdout) == []
    bad = flowstate("runs", "--status", "paused", store=url)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_resume_continues_a_suspended_run_from_the_command_line(runs):
    url, done, waiting = runs
    refused = flowstate("resume", waiting, '{"approved": "perhaps"}', store=url)
    assert refused.returncode == 4 and "resume value for run" in refused.stderr
    not_json = flowstate("resume", waiting, "{nope", store=url)
    assert not_json.returncode == 4 and "not JSON" in not_json.stderr
    result = flowstate("resume", waiting, '{"approved": true, "note": "cli"}', "--json",
                       store=url)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["status"] == "ok" and data["request_id"] == waiting
    assert data["output"] == {"plan": "plan for launch", "approved": True, "note": "cli"}
    again = flowstate("resume", waiting, '{"approved": true}', store=url)
    assert again.returncode == 4 and "is ok, not suspended" in again.stderr
    finished = flowstate("resume", done, store=url)
    assert finished.returncode == 4 and "nothing to resume" in finished.stderr
    missing = flowstate("resume", "r-missing", store=url)
    assert missing.returncode == 4 and "no run 'r-missing'" in missing.stderr
    store = fs.open_store(url)
    try:
        assert df.flow.session("s2", store=store).state.log == ["drafted", "approved=True"]
    finally:
        store.close()


def test_resume_of_a_run_started_from_a_script_needs_flow_module_name(runs, tmp_path):
    url, _, waiting = runs
    store = fs.open_store(url)
    try:
        record = store.read("request", waiting, "$request")
        store.write("request", waiting, "$request", {**record.state, "flow_module": "__main__"},
                    expected=record.version, content=record.content)
    finally:
        store.close()
    needs = flowstate("resume", waiting, '{"approved": false}', store=url)
    assert needs.returncode == 2 and "--flow MODULE:NAME" in needs.stderr
    named = flowstate("resume", waiting, '{"approved": false}', "--flow", "durable_flows:flow",
                      store=url)
    assert named.returncode == 0, named.stderr
    assert f"run {waiting}: ok" in named.stdout
