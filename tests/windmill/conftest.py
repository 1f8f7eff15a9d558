"""Fixtures for the Windmill-compatible API: a clean environment, a store, fake flow runs.

``wm_env`` clears every environment variable the module reads and makes ``alice`` the user.
``wm_store`` (memory and SQLite) is the store the module uses for the test (``use_store``).
``fake_run`` stands in for ``flowstate_jupyter.flows.context.current_context`` so the flow-related
code paths run before (and independently of) the real flows; the tests that drive real flows
are in ``test_flow_user_state.py``.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import sys
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

import flowstate_jupyter as fs
import flowstate_jupyter.windmill as wm
import flowstate_jupyter.windmill._paths as wm_paths

ENV_VARS = ("WM_STATE_PATH_NEW", "WM_STATE_PATH", "FLOWSTATE_SCHEDULE", "FLOWSTATE_SCRIPT_PATH",
            "JPY_SESSION_NAME", "FLOWSTATE_PROJECT", "FLOWSTATE_NOTEBOOK_ROOT", "FLOWSTATE_USER",
            "FLOWSTATE_STORE")


@pytest.fixture
def wm_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> pytest.MonkeyPatch:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FLOWSTATE_USER", "alice")
    # never the default .flowstate/ under the working folder
    monkeypatch.setenv("FLOWSTATE_STORE", f"sqlite:///{tmp_path}/default.db")
    # No notebook, no script: tests that want one say so.
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    monkeypatch.setattr(wm_paths, "_main_script", lambda: None)
    return monkeypatch


@pytest.fixture(params=["memory", "sqlite"])
def wm_store(request: pytest.FixtureRequest, tmp_path, wm_env) -> Iterator:
    store = fs.open_store("memory://" if request.param == "memory"
                          else f"sqlite:///{tmp_path}/wm.db")
    with wm.use_store(store):
        yield store
    store.close()


class FakeRuns:
    """Install fake flow contexts: ``with fake_run.run("r1"): ...`` (per thread/task)."""

    def __init__(self) -> None:
        self.var: contextvars.ContextVar = contextvars.ContextVar("fake_ctx", default=None)

    def current_context(self):
        return self.var.get()

    @contextlib.contextmanager
    def run(self, request_id: str, *, store=None, user: str = "alice",
            flow_path: str | None = "f/flows/assistant", step_id: str | None = "fetch",
            project: str = "default"):
        ctx = SimpleNamespace(store=store, flow_path=flow_path, step_id=step_id,
                              request=SimpleNamespace(id=request_id),
                              session=SimpleNamespace(id="s1"), user=SimpleNamespace(id=user),
                              project=SimpleNamespace(id=project))
        token = self.var.set(ctx)
        try:
            yield ctx
        finally:
            self.var.reset(token)


@pytest.fixture
def fake_run(monkeypatch: pytest.MonkeyPatch) -> FakeRuns:
    runs = FakeRuns()
    context = importlib.import_module("flowstate_jupyter.flows.context")
    monkeypatch.setattr(context, "current_context", runs.current_context)
    return runs
