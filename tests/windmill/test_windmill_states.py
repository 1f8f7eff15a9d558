"""get_state / set_state / update_state: values kept between runs, atomically, per path."""

from __future__ import annotations

import json
import threading

import pytest
from _helpers import run_python

import flowstate_jupyter as fs
import flowstate_jupyter.windmill as wm
from flowstate_jupyter.base import names
from flowstate_jupyter.errors import AccessDeniedError, InvalidIdError, ValidationError

P = "u/alice/watch/user"


def _record(store, path):
    return store.read("project", "default", names.WM_STATE_PREFIX + path)


def test_a_never_set_state_reads_as_none(wm_store):
    assert wm.get_state() is None
    assert wm.get_state(P) is None


@pytest.mark.parametrize("value", [{"seen": ["a", "b"], "n": 2}, [1, 2.5, None], "text", 7,
                                   True, None, {"nested": {"deep": [{"x": 1}]}}])
def test_any_json_value_round_trips(wm_store, value):
    wm.set_state(value)
    assert wm.get_state() == value
    assert _record(wm_store, "u/alice/tmp_state").state == value


def test_the_default_path_is_get_state_path(wm_store, wm_env):
    wm_env.setenv("JPY_SESSION_NAME", "jobs/watch.ipynb")
    wm.set_state({"cursor": 10})
    assert wm.get_state_path() == "u/alice/jobs/watch/user"
    assert wm.get_state("u/alice/jobs/watch/user") == {"cursor": 10}
    assert wm.get_state("$res:u/alice/jobs/watch/user") == {"cursor": 10}
    assert [s["path"] for s in wm.list_states()] == ["u/alice/jobs/watch/user"]


def test_set_state_keeps_a_copy_not_the_callers_object(wm_store):
    value = {"seen": ["a"]}
    wm.set_state(value, P)
    value["seen"].append("b")
    assert wm.get_state(P) == {"seen": ["a"]}


def test_setting_an_equal_value_writes_nothing(wm_store):
    wm.set_state({"a": 1}, P)
    before = wm_store.changes()
    wm.set_state({"a": 1}, P)
    assert _record(wm_store, P).version == 1
    assert wm_store.changes() == before
    wm.set_state({"a": 2}, P)
    assert _record(wm_store, P).version == 2


def test_a_value_that_is_not_json_is_refused_and_nothing_is_stored(wm_store):
    with pytest.raises(ValidationError, match="not JSON"):
        wm.set_state({"ids": {1, 2}}, P)
    assert _record(wm_store, P) is None
    with pytest.raises(ValidationError):
        wm.update_state(lambda s: float("nan"), P)
    assert _record(wm_store, P) is None


def test_update_state_applies_a_function_and_returns_the_new_state(wm_store):
    assert wm.update_state(lambda s: (s or 0) + 1, P) == 1
    assert wm.update_state(lambda s: (s or 0) + 1, P) == 2
    assert wm.get_state(P) == 2
    assert _record(wm_store, P).version == 2


def test_update_state_gives_fn_a_private_copy_so_mutating_it_is_a_change(wm_store):
    wm.set_state([1, 2], P)
    assert wm.update_state(lambda s: s.append(3) or s, P) == [1, 2, 3]
    assert wm.get_state(P) == [1, 2, 3]


def test_update_state_returning_the_same_value_writes_nothing(wm_store):
    wm.set_state({"a": 1}, P)
    assert wm.update_state(lambda s: dict(s), P) == {"a": 1}
    assert _record(wm_store, P).version == 1
    assert wm.update_state(lambda s: None, "u/alice/never/user") is None
    assert _record(wm_store, "u/alice/never/user") is None


def test_update_state_never_loses_an_update_between_threads(tmp_path, wm_env):
    store = fs.open_store(f"sqlite:///{tmp_path}/threads.db")
    with wm.use_store(store):
        def worker(n):
            for i in range(40):
                wm.update_state(lambda s: (s or []) + [f"{n}-{i}"], P)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        items = wm.get_state(P)
    store.close()
    assert len(items) == 240 and len(set(items)) == 240


def test_delete_state_forgets_the_value(wm_store):
    wm.set_state("x", P)
    assert wm.delete_state(P) is True
    assert wm.get_state(P) is None
    assert wm.delete_state(P) is False


def test_list_states_gives_path_value_version_and_times(wm_store):
    wm.set_state(1, "f/team/a/user")
    wm.set_state(2, P)
    wm.set_state(3, P)
    states = wm.list_states()
    assert [(s["path"], s["value"], s["version"]) for s in states] == [
        ("f/team/a/user", 1, 1), (P, 3, 2)]
    assert all(s["updated_at"] >= s["created_at"] > 0 for s in states)
    assert [s["path"] for s in wm.list_states("u/")] == [P]


def test_states_are_kept_per_project(wm_store, wm_env):
    wm.set_state("in default", P)
    wm_env.setenv("FLOWSTATE_PROJECT", "other")
    assert wm.get_state(P) is None
    wm.set_state("in other", P)
    wm_env.delenv("FLOWSTATE_PROJECT")
    assert wm.get_state(P) == "in default"
    assert [s["value"] for s in wm.list_states(project="other", store=wm_store)] == ["in other"]


def test_another_users_state_path_is_refused_and_nothing_is_stored(wm_store, wm_env):
    wm_env.setenv("FLOWSTATE_USER", "bob")
    with pytest.raises(AccessDeniedError) as err:
        wm.set_state({"x": 1}, P)
    assert "'bob'" in str(err.value) and P in str(err.value)
    with pytest.raises(AccessDeniedError):
        wm.update_state(lambda s: 1, P)
    with pytest.raises(AccessDeniedError):
        wm.delete_state(P)
    assert _record(wm_store, P) is None
    wm.set_state("shared", "f/team/watch/user")  # folders are shared
    wm_env.setenv("FLOWSTATE_USER", "alice")
    wm.set_state("mine", P)
    wm.set_state("also mine", "f/team/watch/user")
    wm_env.setenv("FLOWSTATE_USER", "bob")
    assert wm.get_state(P) == "mine"  # reading is not restricted


def test_bad_state_paths_are_refused(wm_store):
    for path in ("watch", "u/alice", "u/alice//x", "f/a/../b"):
        with pytest.raises(InvalidIdError):
            wm.set_state(1, path)


def test_states_survive_closing_and_reopening_the_sqlite_file(tmp_path, wm_env):
    url = f"sqlite:///{tmp_path}/restart.db"
    first = fs.open_store(url)
    with wm.use_store(first):
        wm.set_state({"seen": ["a", "b"]}, P)
    first.close()
    second = fs.open_store(url)
    with wm.use_store(second):
        assert wm.get_state(P) == {"seen": ["a", "b"]}
        assert wm.list_states()[0]["version"] == 1
    second.close()


def test_state_survives_a_kernel_restart_in_a_new_process(tmp_path, wm_env):
    """Two separate interpreters on one store file, as a notebook before and after a restart:
    both derive the same state path from JPY_SESSION_NAME and the default store."""
    (tmp_path / "pyproject.toml").write_text("")
    wm_env.setenv("FLOWSTATE_STORE", f"sqlite:///{tmp_path}/kernel.db")
    wm_env.setenv("JPY_SESSION_NAME", str(tmp_path / "notebooks" / "watch.ipynb"))
    code = ("import json, sys, flowstate_jupyter.windmill as wm\n"
            "if sys.argv[1] == 'write':\n"
            "    wm.set_state({'seen': [1, 2, 3]})\n"
            "print(json.dumps([wm.get_state_path(), wm.get_state()]))\n")
    written = json.loads(run_python(code, "write").stdout)
    read = json.loads(run_python(code, "read").stdout)
    assert written == read == ["u/alice/notebooks/watch/user", {"seen": [1, 2, 3]}]


def test_the_default_store_is_opened_once_and_follows_flowstate_store(tmp_path, wm_env):
    wm_env.setenv("FLOWSTATE_STORE", f"sqlite:///{tmp_path}/a.db")
    a = wm.default_store()
    assert wm.default_store() is a
    wm.set_state("in a", P)
    wm_env.setenv("FLOWSTATE_STORE", f"sqlite:///{tmp_path}/b.db")
    b = wm.default_store()
    assert b is not a and wm.get_state(P) is None
    wm_env.setenv("FLOWSTATE_STORE", f"sqlite:///{tmp_path}/a.db")
    assert wm.get_state(P) == "in a"
    a.close()
    b.close()
    assert not wm.default_store()._closed  # a closed cached store is reopened
    wm.default_store().close()


def test_use_store_as_a_context_manager_restores_the_previous_store(wm_env):
    outer, inner = fs.open_store("memory://"), fs.open_store("memory://")
    with wm.use_store(outer):
        wm.set_state("outer", P)
        with wm.use_store(inner) as s:
            assert s is inner and wm.get_state(P) is None
        assert wm.get_state(P) == "outer"
    with pytest.raises(TypeError):
        wm.use_store(42)  # type: ignore[arg-type]


def test_inside_windmill_the_environments_state_path_is_used(wm_store, wm_env):
    wm_env.setenv("JPY_SESSION_NAME", "n.ipynb")
    wm_env.setenv("WM_STATE_PATH", "f/wm/legacy/user")
    wm.set_state("legacy")
    wm_env.setenv("WM_STATE_PATH_NEW", "f/wm/job/a_user")
    wm.set_state("new")
    assert [(s["path"], s["value"]) for s in wm.list_states()] == [
        ("f/wm/job/a_user", "new"), ("f/wm/legacy/user", "legacy")]
    wm_env.setenv("WM_STATE_PATH_NEW", "u/bob/job/user")  # still subject to the access rule
    with pytest.raises(AccessDeniedError):
        wm.set_state("x")
