"""Flow user state: kept with one flow run, invisible to every other run, refused outside runs.

The ``fake_run`` tests drive the module through a stand-in for ``context.current_context``; the
``real flow`` tests run actual flows.
"""

from __future__ import annotations

import threading

import pytest
from pydantic import BaseModel

import flowstate_jupyter as fs
import flowstate_jupyter.windmill as wm
from flowstate_jupyter.base import names
from flowstate_jupyter.errors import FlowStateError, ValidationError

# ---------------------------------------------------------------- outside a run

@pytest.mark.parametrize("call", [lambda: wm.get_flow_user_state("k"),
                                  lambda: wm.set_flow_user_state("k", 1)])
def test_flow_user_state_outside_a_run_raises_a_clear_error(wm_store, call):
    with pytest.raises(wm.NotInFlowRunError) as err:
        call()
    assert isinstance(err.value, FlowStateError)
    assert "only inside a flow run" in str(err.value) and "get_state()" in str(err.value)
    assert wm_store.changes() == []


# ---------------------------------------------------------------- with a stand-in context

def test_a_run_reads_back_what_it_set(wm_store, fake_run):
    with fake_run.run("r1"):
        assert wm.get_flow_user_state("cursor") is None
        wm.set_flow_user_state("cursor", {"page": 2})
        wm.set_flow_user_state("other", [1])
        assert wm.get_flow_user_state("cursor") == {"page": 2}
    record = wm_store.read("request", "r1", names.WM_FLOW_USER_STATE)
    assert record.state == {"cursor": {"page": 2}, "other": [1]}


def test_two_concurrent_runs_do_not_see_each_others_keys(wm_store, fake_run):
    both_set = threading.Barrier(2, timeout=10)
    seen: dict[str, object] = {}

    def run(request_id: str, value: int) -> None:
        with fake_run.run(request_id):
            wm.set_flow_user_state("n", value)
            both_set.wait()  # the other run has written its own "n" by now
            seen[request_id] = wm.get_flow_user_state("n")

    threads = [threading.Thread(target=run, args=(f"r{i}", i)) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"r1": 1, "r2": 2}
    with fake_run.run("r3"):
        assert wm.get_flow_user_state("n") is None  # a new run starts empty


def test_flow_user_state_values_must_be_json_and_keys_strings(wm_store, fake_run):
    with fake_run.run("r1"):
        with pytest.raises(ValidationError):
            wm.set_flow_user_state("k", {1, 2})
        with pytest.raises(ValidationError):
            wm.set_flow_user_state("", 1)
    assert wm_store.read("request", "r1", names.WM_FLOW_USER_STATE) is None


def test_discarding_a_runs_flow_user_state(wm_store, fake_run):
    with fake_run.run("r1"):
        wm.set_flow_user_state("k", 1)
    assert wm.discard_flow_user_state("r1") is True
    with fake_run.run("r1"):
        assert wm.get_flow_user_state("k") is None


def test_inside_a_run_states_use_the_flow_step_path_and_the_runs_store(wm_env, fake_run):
    run_store, other = fs.open_store("memory://"), fs.open_store("memory://")
    with wm.use_store(other):
        with fake_run.run("r9", store=run_store, user="bob"):
            wm.set_state({"cursor": 1})
            assert wm.get_state() == {"cursor": 1}
        assert wm.get_state("f/flows/assistant/fetch_user") is None  # not in the other store
    record = run_store.read("project", "default",
                            names.WM_STATE_PREFIX + "f/flows/assistant/fetch_user")
    assert record.state == {"cursor": 1}
    assert run_store.changes()[-1][1]["request_id"] == "r9"


def test_inside_a_run_the_runs_user_is_the_writer(wm_store, fake_run):
    with fake_run.run("r1", user="bob"):
        assert wm.current_user() == "bob"
        with pytest.raises(fs.AccessDeniedError, match="'bob'"):
            wm.set_state(1, "u/alice/x/user")
        wm.set_state(1, "u/bob/x/user")


# ---------------------------------------------------------------- real flows

class Remember(BaseModel):
    value: int = 0


def _remember_flow(barrier: threading.Barrier | None = None):
    @fs.handler(input=Remember)
    def remember(input, ctx):
        before = wm.get_flow_user_state("value")
        wm.set_flow_user_state("value", input.value)
        if barrier is not None:
            barrier.wait()
        return {"before": before, "after": wm.get_flow_user_state("value"),
                "state_path": wm.get_state_path(), "flow_path": ctx.flow_path}

    return fs.define_flow(kind="wmtest", actions={"go": remember})


def test_real_flow_runs_keep_flow_user_state_apart(wm_env, tmp_path):
    store = fs.open_store(f"sqlite:///{tmp_path}/flows.db")
    barrier = threading.Barrier(2, timeout=30)
    flow = _remember_flow(barrier)
    results: dict[int, object] = {}

    def go(value: int) -> None:
        results[value] = flow.run("go", {"value": value}, user="alice", store=store)

    threads = [threading.Thread(target=go, args=(v,)) for v in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for value in (1, 2):
        result = results[value]
        assert result.error is None, result.error
        assert result.output["before"] is None
        assert result.output["after"] == value
    third = _remember_flow().run("go", {"value": 3}, user="alice", store=store)
    assert third.error is None, third.error
    assert third.output["before"] is None  # nothing left over from earlier runs
    assert third.output["state_path"] == f"{third.output['flow_path']}/remember_user"
    store.close()


def test_real_flow_blocks_share_state_between_runs_under_their_step_path(wm_env, tmp_path):
    store = fs.open_store(f"sqlite:///{tmp_path}/flows.db")

    @fs.handler
    def count(input, ctx):
        return wm.update_state(lambda n: (n or 0) + 1)

    flow = fs.define_flow(kind="counter", actions={"go": count})
    outputs = [flow.run("go", user="alice", store=store).output for _ in range(3)]
    assert outputs == [1, 2, 3]
    with wm.use_store(store):
        assert wm.get_state("f/flows/counter/count_user") == 3
    store.close()
