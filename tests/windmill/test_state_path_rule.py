"""The state path rule (docs/concepts.md, 'Windmill states and resources'), and how get_state_path()
finds the script or flow step."""

from __future__ import annotations

import getpass
import sys
from types import ModuleType

import pytest

import flowstate_jupyter.windmill as wm
import flowstate_jupyter.windmill._paths as wm_paths
from flowstate_jupyter.errors import InvalidIdError

ORIGINAL_MAIN_SCRIPT = wm_paths._main_script  # before wm_env replaces it for a test

SCHEDULE = "f/schedules/hourly"

PATH_TABLE = [
    # (case, kwargs, expected)
    ("flow step, manual", dict(flow_path="f/flows/etl", step_id="a"), "f/flows/etl/a_user"),
    ("flow step, scheduled", dict(flow_path="f/flows/etl", step_id="a", schedule_path=SCHEDULE),
     "f/flows/etl/a_alice"),
    ("flow without step id", dict(flow_path="f/flows/etl"), "f/flows/etl/nostep_user"),
    ("flow without step id, scheduled", dict(flow_path="f/flows/etl", schedule_path=SCHEDULE),
     "f/flows/etl/nostep_alice"),
    ("flow with empty step id", dict(flow_path="f/flows/etl", step_id=""),
     "f/flows/etl/nostep_user"),
    ("flow step wins over script", dict(flow_path="f/flows/etl", step_id="b",
                                        script_path="u/alice/watch"), "f/flows/etl/b_user"),
    ("script, manual", dict(script_path="u/alice/watch"), "u/alice/watch/user"),
    ("script, scheduled", dict(script_path="u/alice/watch", schedule_path=SCHEDULE),
     "u/alice/watch/alice"),
    # the rule: "a path ending in / becomes noname" -- the path is replaced, not appended to
    ("script path ending in /", dict(script_path="u/alice/"), "noname/user"),
    ("script path ending in /, scheduled", dict(script_path="f/team/", schedule_path=SCHEDULE),
     "noname/alice"),
    ("neither", dict(), "u/alice/tmp_state"),
    ("neither, scheduled", dict(schedule_path=SCHEDULE), "u/alice/tmp_state"),
]


@pytest.mark.parametrize("case,kwargs,expected", PATH_TABLE, ids=[c[0] for c in PATH_TABLE])
def test_state_path_rule(case, kwargs, expected):
    assert wm.state_path(username="alice", **kwargs) == expected


def test_state_path_is_pure_and_keyword_only(wm_env):
    wm_env.setenv("WM_STATE_PATH", "f/elsewhere/x")
    wm_env.setenv("FLOWSTATE_SCHEDULE", SCHEDULE)
    assert wm.state_path(username="bob", script_path="u/bob/s") == "u/bob/s/user"
    with pytest.raises(TypeError):
        wm.state_path("bob")  # type: ignore[misc]


# ---------------------------------------------------------------- get_state_path()

def test_outside_any_script_the_path_is_the_users_tmp_state(wm_env):
    info = wm.explain_state_path()
    assert (info.path, info.source, info.username) == ("u/alice/tmp_state", "none", "alice")
    assert wm.get_state_path() == wm.current_state_path() == "u/alice/tmp_state"


def test_env_wm_state_path_new_wins_over_wm_state_path_and_everything_else(wm_env, tmp_path,
                                                                          fake_run):
    wm_env.setenv("JPY_SESSION_NAME", str(tmp_path / "nb.ipynb"))
    wm_env.setenv("WM_STATE_PATH", "f/old/style")
    with fake_run.run("r1"):
        assert wm.get_state_path() == "f/old/style"
        wm_env.setenv("WM_STATE_PATH_NEW", "f/new/style")
        assert wm.get_state_path() == "f/new/style"
        assert wm.explain_state_path().source == "WM_STATE_PATH_NEW"
    wm_env.delenv("WM_STATE_PATH_NEW")
    assert wm.explain_state_path().source == "WM_STATE_PATH"


def test_jupyter_session_name_gives_the_notebook_path_under_the_project_root(wm_env, tmp_path):
    (tmp_path / "pyproject.toml").write_text("")
    notebook = tmp_path / "notebooks" / "01_quickstart.ipynb"
    notebook.parent.mkdir()
    wm_env.setenv("JPY_SESSION_NAME", str(notebook))
    info = wm.explain_state_path()
    assert info.path == "u/alice/notebooks/01_quickstart/user"
    assert (info.source, info.script_path, info.file) == (
        "jupyter", "u/alice/notebooks/01_quickstart", str(notebook))


def test_a_relative_session_name_is_used_as_it_is_and_made_path_safe(wm_env):
    wm_env.setenv("JPY_SESSION_NAME", "reports/Q3 review (draft).ipynb")
    assert wm.get_state_path() == "u/alice/reports/Q3_review_draft/user"


def test_a_scheduled_notebook_run_uses_the_user_name_as_trigger(wm_env):
    wm_env.setenv("JPY_SESSION_NAME", "watch.ipynb")
    wm_env.setenv("FLOWSTATE_SCHEDULE", "cron")
    assert wm.get_state_path() == "u/alice/watch/alice"


def test_notebook_root_can_be_given(wm_env, tmp_path):
    (tmp_path / ".git").mkdir()
    wm_env.setenv("FLOWSTATE_NOTEBOOK_ROOT", str(tmp_path / "a"))
    wm_env.setenv("JPY_SESSION_NAME", str(tmp_path / "a" / "b" / "n.ipynb"))
    assert wm.get_state_path() == "u/alice/b/n/user"


def test_without_a_project_marker_the_notebooks_own_folder_is_the_root(wm_env, tmp_path):
    assert wm.script_path_for(tmp_path / "x" / "solo.ipynb", username="carol") == \
        "u/carol/solo"
    assert wm.script_path_for("/elsewhere/n.ipynb", username="c", root=tmp_path) == "u/c/n"


class _FakeShell:
    def __init__(self, **user_ns):
        self.user_ns = user_ns


def _fake_ipython(monkeypatch, shell):
    module = ModuleType("IPython")
    module.get_ipython = lambda: shell
    monkeypatch.setitem(sys.modules, "IPython", module)


def test_vscode_notebook_file_wins_over_the_session_name(wm_env, tmp_path):
    (tmp_path / "pyproject.toml").write_text("")
    wm_env.setenv("JPY_SESSION_NAME", "other.ipynb")
    _fake_ipython(wm_env, _FakeShell(__vsc_ipynb_file__=str(tmp_path / "nb" / "vs.ipynb")))
    info = wm.explain_state_path()
    assert (info.path, info.source) == ("u/alice/nb/vs/user", "vscode")


def test_ipython_without_a_known_notebook_uses_the_documented_default(wm_env):
    _fake_ipython(wm_env, _FakeShell())
    info = wm.explain_state_path()
    assert (info.path, info.source) == ("u/alice/notebook/user", "notebook-default")


def test_a_plain_python_script_uses_its_own_file(wm_env, tmp_path):
    (tmp_path / "pyproject.toml").write_text("")
    main = ModuleType("__main__")
    main.__file__ = str(tmp_path / "scripts" / "watch.py")
    wm_env.setitem(sys.modules, "__main__", main)
    wm_env.setattr(wm_paths, "_main_script", ORIGINAL_MAIN_SCRIPT)
    info = wm.explain_state_path()
    assert (info.path, info.source) == ("u/alice/scripts/watch/user", "script")


def test_an_explicit_script_path_wins_over_the_notebook(wm_env):
    wm_env.setenv("JPY_SESSION_NAME", "n.ipynb")
    wm_env.setenv("FLOWSTATE_SCRIPT_PATH", "f/team/sync")
    assert wm.get_state_path() == "f/team/sync/user"
    wm_env.setenv("FLOWSTATE_SCRIPT_PATH", "not a path")
    with pytest.raises(InvalidIdError, match="FLOWSTATE_SCRIPT_PATH"):
        wm.get_state_path()


def test_inside_a_flow_run_a_block_gets_its_flow_step_path(wm_env, fake_run):
    wm_env.setenv("JPY_SESSION_NAME", "n.ipynb")
    with fake_run.run("r1", user="bob", flow_path="f/flows/assistant", step_id="fetch"):
        info = wm.explain_state_path()
        assert (info.path, info.source, info.step_id) == (
            "f/flows/assistant/fetch_user", "flow", "fetch")
        wm_env.setenv("FLOWSTATE_SCHEDULE", "nightly")
        assert wm.get_state_path() == "f/flows/assistant/fetch_bob"
        # the notebook's own path ignores the run (what `%state path` prints)
        assert wm.notebook_state_path() == "u/alice/n/alice"
    with fake_run.run("r2", step_id=None):
        assert wm.get_state_path() == "f/flows/assistant/nostep_alice"


def test_the_user_comes_from_flowstate_user_else_the_os(wm_env, monkeypatch):
    assert wm.current_user() == "alice"
    wm_env.delenv("FLOWSTATE_USER")
    monkeypatch.setattr(getpass, "getuser", lambda: "osuser")
    assert wm.current_user() == "osuser"
    assert wm.get_state_path() == "u/osuser/tmp_state"
    wm_env.setenv("FLOWSTATE_USER", "has space")
    with pytest.raises(InvalidIdError, match="FLOWSTATE_USER"):
        wm.current_user()


@pytest.mark.parametrize("path,problem", [
    ("x/alice/name", "not a Windmill path"),
    ("u/alice", "not a Windmill path"),
    ("u//name", "empty segment"),
    ("u/alice/name/", "empty segment"),
    ("f/team/../secret", "'..'"),
    ("f/team/./x", "'.'"),
    ("f/team/a b", "' '"),
    ("f/team/" + "x" * 300, "limit is 255"),
])
def test_paths_are_validated(path, problem):
    with pytest.raises(InvalidIdError, match=problem):
        wm.check_path(path)


def test_valid_paths_pass():
    for path in ("u/alice/x", "f/team/a/b/c", "u/alice@example.com/x-1.2_3"):
        assert wm.check_path(path) == path
