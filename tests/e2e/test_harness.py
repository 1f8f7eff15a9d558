"""The browser harness itself, proven on small notebooks written at test time.

These check what the widget tests will rely on: the kernel is this checkout's interpreter and
sees the environment and working directory the harness gives it; ``run_all`` runs every cell;
widget clicks and key presses in Chromium reach the kernel and come back; ``restart_kernel``
gives a new kernel process; a failing cell is reported with its traceback.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from _lab import (
    cell_output,
    execute_in_kernel,
    open_notebook,
    requirements_problem,
    restart_kernel,
    run_all,
    visible_panel,
)

WIDGETS_NOTEBOOK = [
    ("markdown", "# Harness check: a slider, an HTML view of it and a counter button"),
    """\
import ipywidgets as w

slider = w.IntSlider(value=3, min=0, max=10, description="n")
view = w.HTML()
button = w.Button(description="Increment")
clicks = 0

def render(*_):
    view.value = f"<b>value={slider.value} clicks={clicks}</b>"

def on_click(_):
    global clicks
    clicks += 1
    render()

slider.observe(render, names="value")
button.on_click(on_click)
render()
w.VBox([slider, button, view])""",
    "",  # an empty cell never gets a prompt number; run_all must not wait for it
    "print('ran', slider.value)",
]

KERNEL_NOTEBOOK = [
    """\
import os, sys
import flowstate_jupyter
print("executable", sys.executable)
print("module", flowstate_jupyter.__file__)
print("cwd", os.getcwd())
print("store", os.environ.get("FLOWSTATE_STORE"))
print("pid", os.getpid())
marker = "set before the restart"
""",
]


def _text(page, index: int) -> str:
    return cell_output(page, index).inner_text()


def _field(text: str, name: str) -> str:
    match = re.search(rf"^{name} (.*)$", text, re.M)
    assert match, f"no {name!r} line in output:\n{text}"
    return match.group(1).strip()


@pytest.mark.e2e
def test_widget_round_trips(page, lab, lab_dir: Path) -> None:
    from playwright.sync_api import expect

    nb = lab.write_notebook(lab_dir / "widgets.ipynb", WIDGETS_NOTEBOOK)
    open_notebook(page, lab, nb)
    run_all(page)

    panel = visible_panel(page)
    view = panel.locator(".widget-html-content")
    expect(view).to_have_text("value=3 clicks=0")
    expect(cell_output(page, 3)).to_have_text("ran 3")

    # Browser -> kernel -> browser: the click runs on_click in the kernel, which updates the HTML.
    button = panel.locator("button.jupyter-button", has_text="Increment")
    button.click()
    expect(view).to_have_text("value=3 clicks=1")
    button.click()
    button.click()
    expect(view).to_have_text("value=3 clicks=3")

    # The slider's keyboard handling changes the value; the kernel's observer re-renders.
    handle = panel.locator(".widget-hslider .noUi-handle")
    handle.focus()
    page.keyboard.press("ArrowRight")
    expect(view).to_have_text("value=4 clicks=3")
    expect(panel.locator(".widget-readout")).to_have_text("4")

    # Kernel -> browser, no cell re-run: a change made in the kernel shows in the open views.
    result = execute_in_kernel(page, "slider.value = 9\nprint(clicks)")
    assert result["status"] == "ok" and result["stdout"].strip() == "3", result
    expect(view).to_have_text("value=9 clicks=3")
    expect(panel.locator(".widget-readout")).to_have_text("9")


@pytest.mark.e2e
def test_kernel_is_this_checkout_and_restarts(page, lab, lab_dir: Path) -> None:
    store = str(lab_dir / "store.db")
    lab.set_kernel_env({"FLOWSTATE_STORE": store})
    nb = lab.write_notebook(lab_dir / "kernel.ipynb", KERNEL_NOTEBOOK)
    open_notebook(page, lab, nb)
    run_all(page)

    text = _text(page, 0)
    executable = _field(text, "executable")
    assert executable == sys.executable, text
    assert ".venv" in executable, f"the kernel is not the venv's python: {executable}"
    repo = Path(__file__).resolve().parents[2]
    assert Path(_field(text, "module")).resolve().is_relative_to(repo), text
    assert Path(_field(text, "cwd")).resolve() == lab_dir.resolve(), text
    assert _field(text, "store") == store, text
    first_pid = int(_field(text, "pid"))
    assert execute_in_kernel(page, "print(marker)")["stdout"].strip() == "set before the restart"

    restart_kernel(page)
    after = execute_in_kernel(page, "import os; print(os.getpid()); print('marker' in dir())")
    assert after["status"] == "ok", after
    new_pid, has_marker = after["stdout"].split()
    assert int(new_pid) != first_pid, "restart_kernel returned but the kernel process is the same"
    assert has_marker == "False", "the restarted kernel still has the old namespace"

    # Run All works again on the new kernel, which kept its interpreter and environment.
    run_all(page)
    text = _text(page, 0)
    assert int(_field(text, "pid")) == int(new_pid), text
    assert _field(text, "executable") == sys.executable, text
    assert _field(text, "store") == store, text


@pytest.mark.e2e
def test_run_all_reports_a_failing_cell(page, lab, lab_dir: Path) -> None:
    nb = lab.write_notebook(lab_dir / "fails.ipynb",
                            ["x = 1", "raise ValueError('boom from the notebook')", "y = 2"])
    open_notebook(page, lab, nb)
    with pytest.raises(AssertionError, match=r"cell 1 raised:[\s\S]*boom from the notebook"):
        run_all(page)
    # The kernel is left usable. Whether the cell after the error ran is not checked: ipykernel
    # aborts only the requests that have already arrived when the error happens
    # (stop_on_error_timeout=0), so on a busy machine Run All can still run it. A check for it
    # here failed once in about five full runs.
    assert execute_in_kernel(page, "print(x + 1)")["stdout"].strip() == "2"


def test_missing_browser_is_reported_with_a_hint(tmp_path: Path) -> None:
    """No browser needed: the message the skip (or CI failure) shows says how to enable them."""
    problem = requirements_problem(chromium=str(tmp_path / "no-chromium"))
    assert problem is not None
    assert "no Chromium at" in problem
    assert "apt-get install" in problem and "pip install -e '.[e2e]'" in problem
