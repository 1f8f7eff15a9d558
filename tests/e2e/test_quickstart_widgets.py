"""The quickstart notebook's live widgets in a real JupyterLab (issue 4, "Must show").

Each test opens ``notebooks/01_quickstart.ipynb`` (copied into the test's folder) once, runs all
cells, then checks what a user sees, without re-running any cell:

* clicking Run in the ``FlowRunner`` updates the ``Inspector``'s session pane (``message_count``
  and the version) and the ``ClientDataPreview`` (``session.messages``, marked changed);
* another process writing the same store changes the open ``Inspector`` within 2 s;
* after a kernel restart and Run All, the state continues from the store (not reset).

The kernel gets ``FLOWSTATE_STORE``, ``FLOWSTATE_USER`` and ``FLOWSTATE_SESSION``, so the test
reads the expected values from the same SQLite file rather than hard-coding them.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from _helpers import python_env  # tests/ is on sys.path (tests/conftest.py)
from _lab import (
    REPO,
    VISIBLE_PANEL,
    execute_in_kernel,
    open_notebook,
    restart_kernel,
    run_all,
    visible_panel,
    wait_for_text,
)

NOTEBOOK = REPO / "notebooks" / "01_quickstart.ipynb"
SESSION = "e2e-quickstart"
USER = "e2e-user"


# ------------------------------------------------------------------------------ helpers

def _start(page, lab, lab_dir: Path) -> Path:
    """Give the kernel an explicit store, user and session; open the notebook; run all."""
    store = lab_dir / "state" / "flowstate.db"
    lab.set_kernel_env({"FLOWSTATE_STORE": str(store), "FLOWSTATE_USER": USER,
                        "FLOWSTATE_SESSION": SESSION})
    nb = lab.copy_in(NOTEBOOK, lab_dir)
    open_notebook(page, lab, nb)
    run_all(page)
    assert store.exists(), f"the notebook did not write the store at {store}"
    return store


def _session_record(store_path: Path) -> tuple[int, dict]:
    """``(version, state)`` of the session scope, read from the store file by this process."""
    from flowstate_jupyter import open_store

    store = open_store(str(store_path))
    try:
        record = store.read("session", SESSION)
    finally:
        store.close()
    assert record is not None, f"no session {SESSION!r} in {store_path}"
    return record.version, record.state


def _inspector(page):
    """The Inspector's session pane (the first tab, which is showing)."""
    return visible_panel(page).locator('.fs-inspector .fs-pane[data-pane="session"]').first


def _field_value(pane, field: str):
    """The value of ``field``'s row in a scope pane's state tree."""
    return pane.locator(f'.fs-state .fs-row[data-path="{field}"] .fs-value')


def _version_line(pane):
    """The pane's subtitle: ``'<id>' · v<version> · updated HH:MM:SS``."""
    return pane.locator(".fs-scope-line")


def _expect_session_pane(page, count: int, version: int) -> None:
    from playwright.sync_api import expect

    pane = _inspector(page)
    expect(pane).to_be_visible()
    expect(visible_panel(page).locator(".fs-inspector .fs-tab.fs-active")).to_have_text(
        re.compile(r"^session"))
    expect(_version_line(pane)).to_contain_text(
        re.compile(rf"'{re.escape(SESSION)}' · v{version} ·"))
    expect(_field_value(pane, "message_count")).to_have_text(str(count))


def _client_row(page, key: str):
    """The row of ``key`` (``session.messages``) in the client-data preview's tree."""
    preview = visible_panel(page).locator(".fs-client-data")
    return preview.locator(f'.fs-row[data-path="{key}"]')


def _patch_in_subprocess(store_path: Path, **fields) -> float:
    """Another process patches the session state; returns when it exited (monotonic time)."""
    code = textwrap.dedent(f"""
        from flowstate_jupyter import ScopeHandle, open_store
        store = open_store({str(store_path)!r})
        try:
            assert ScopeHandle(store, "session", {SESSION!r}).patch_state({fields!r})
        finally:
            store.close()
    """)
    result = subprocess.run([sys.executable, "-c", code], env=python_env(),
                            cwd=str(store_path.parent),
                            capture_output=True, text=True, timeout=60)
    done = time.monotonic()
    assert result.returncode == 0, f"the writing subprocess failed:\n{result.stderr}"
    return done


# ------------------------------------------------------------------------------ tests

@pytest.mark.e2e
def test_run_button_updates_inspector_and_client_data(page, lab, lab_dir: Path) -> None:
    from playwright.sync_api import expect

    store = _start(page, lab, lab_dir)
    panel = visible_panel(page)
    version_before, state_before = _session_record(store)
    count_before = state_before["message_count"]
    # The open views show the store as run-all left it.
    _expect_session_pane(page, count_before, version_before)
    expect(_client_row(page, "session.messages").locator(".fs-value")).to_have_text(
        str(count_before))

    # Fill the FlowRunner's form as a user would and press Run.
    runner = panel.locator(".fs-flow-runner")
    runner.locator(".widget-dropdown select").first.select_option("chat")
    message = runner.locator(".widget-text input").first
    message.fill("hello from the browser")
    runner.locator("button.jupyter-button", has_text="Run").click()
    expect(runner.locator(".fs-json-view")).to_contain_text("hello from the browser")

    version_after, state_after = _session_record(store)
    count_after = state_after["message_count"]
    assert count_after == count_before + 1, (count_before, count_after)
    assert version_after > version_before, (version_before, version_after)

    # No cell re-run: the Inspector and the client-data preview follow by themselves.
    _expect_session_pane(page, count_after, version_after)
    changed = _client_row(page, "session.messages")
    expect(changed).to_have_class(re.compile(r"\bfs-changed\b"))
    expect(changed.locator(".fs-value")).to_have_text(str(count_after))
    # Only changed keys are marked: the mode did not change in this run.
    expect(_client_row(page, "session.mode")).not_to_have_class(re.compile(r"\bfs-changed\b"))


@pytest.mark.e2e
def test_other_process_write_shows_in_open_inspector(page, lab, lab_dir: Path,
                                                     record_property, capsys) -> None:
    from playwright.sync_api import expect

    store = _start(page, lab, lab_dir)
    version_before, state_before = _session_record(store)
    _expect_session_pane(page, state_before["message_count"], version_before)

    done = _patch_in_subprocess(store, message_count=4242)
    wait_for_text(page, f'{VISIBLE_PANEL} .fs-inspector .fs-pane[data-pane="session"] '
                        f'.fs-row[data-path="message_count"] .fs-value', "4242")
    latency = time.monotonic() - done
    record_property("inspector_latency_ms", round(latency * 1000))
    with capsys.disabled():  # shown in every run's output, not only on failure
        print(f"\n[e2e] the open Inspector showed another process's write "
              f"{latency * 1000:.0f} ms after the subprocess exited (limit 2000 ms)")

    version_after, state_after = _session_record(store)
    assert state_after["message_count"] == 4242
    assert version_after == version_before + 1, (version_before, version_after)
    _expect_session_pane(page, 4242, version_after)
    # The client-data preview follows the same write.
    row = _client_row(page, "session.messages")
    expect(row.locator(".fs-value")).to_have_text("4242")
    expect(row).to_have_class(re.compile(r"\bfs-changed\b"))


@pytest.mark.e2e
def test_state_persists_across_kernel_restart(page, lab, lab_dir: Path) -> None:
    store = _start(page, lab, lab_dir)
    version_first, state_first = _session_record(store)
    count_first = state_first["message_count"]
    _expect_session_pane(page, count_first, version_first)
    pid_first = execute_in_kernel(page, "import os; print(os.getpid())")["stdout"].strip()

    restart_kernel(page)
    pid_second = execute_in_kernel(page, "import os; print(os.getpid())")["stdout"].strip()
    assert pid_second and pid_second != pid_first, "the kernel process did not change"
    run_all(page)

    version_second, state_second = _session_record(store)
    count_second = state_second["message_count"]
    # The notebook's one chat run adds one message to what the first kernel left.
    assert count_second == count_first + 1, (count_first, count_second)
    assert version_second > version_first, (version_first, version_second)
    _expect_session_pane(page, count_second, version_second)
