"""Runs in a real JupyterLab: the resume form of a suspended run (issue 17, "Must show") and the
trace view (issue 16, "Must show"), in the light and dark themes.

* The form under ``%flow run`` refuses a missing required answer next to its field and leaves
  the run waiting; after a kernel restart its snapshot says how to resume; the definitions run
  again, ``%flow resume`` draws a new form, and that form, filled in and submitted (right after
  typing, while the kernel is busy: it sends what it shows), completes the run: its status and
  the session state in the store say so, and the notification of ``ctx.run_once`` went out once
  (notebooks/04_people_in_the_loop.ipynb's own cells).
* ``%flow trace`` draws the spans of a resumed run as a tree with bars; a click on a span shows
  its input, output and the changes it committed; a failed run's trace opens at the block the
  error came from, with its traceback, and the failed run's output names the line to run.

Screenshots of each view in light and dark go to ``test-artifacts/e2e-views/``; every piece of
text in them reads at 4.5:1 at least (computed styles, ``_contrast.py``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
from _contrast import measure, set_theme
from _lab import (
    ARTIFACTS,
    cell,
    cell_output,
    execute_in_kernel,
    hold_kernel,
    open_notebook,
    restart_kernel,
    run_all,
    run_cells,
)
from _nbtools import TESTS_DIR

SHOTS = ARTIFACTS.parent / "e2e-views"
NOTEBOOK = Path(__file__).parents[2] / "notebooks" / "04_people_in_the_loop.ipynb"
MIN_CONTRAST = 4.5
VIEWS = ".jp-NotebookPanel:not(.lm-mod-hidden) "


def _notebook_cells(*starts: str) -> list[str]:
    """The code cells of notebook 04 that start with each of ``starts``, in that order."""
    code = [c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells
            if c.cell_type == "code"]
    return [next(source for source in code if source.startswith(start)) for start in starts]


def _shoot(page, index: int, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    cell(page, index).scroll_into_view_if_needed()
    cell(page, index).screenshot(path=str(SHOTS / f"{name}.png"), animations="disabled")


def _contrast(page, selectors: list[str], label: str, record_property, least: int = 15) -> float:
    found = measure(page, ", ".join(VIEWS + s for s in selectors))
    assert len(found) > least, f"{label}: too little text measured ({len(found)})"
    low = [f for f in found if f["ratio"] < MIN_CONTRAST]
    assert not low, f"{label}: text below {MIN_CONTRAST}:1: " + json.dumps(low[:8], indent=1)
    worst = min(found, key=lambda f: f["ratio"])
    record_property(f"contrast_min_{label}", round(worst["ratio"], 2))
    for selector in selectors:  # each view's own lowest, for the record
        mine = measure(page, VIEWS + selector)
        if mine:
            print(f"\n[e2e] {label} {selector}: lowest "
                  f"{min(f['ratio'] for f in mine):.2f}:1 over {len(mine)} text elements")
    print(f"\n[e2e] {label}: {len(found)} text elements, lowest contrast {worst['ratio']:.2f}:1 "
          f"({worst['text']!r}, {worst['color']} on {worst['background']})")
    return worst["ratio"]


def _kernel_value(page, code: str):
    result = execute_in_kernel(page, code)
    assert result["status"] == "ok" and not result["error"], result
    return json.loads(result["stdout"].strip().splitlines()[-1])


# ------------------------------------------------------------------------------ the resume form

FORM_CELLS = [*_notebook_cells("%load_ext", "%%flow planner", "%flow run plan"),
              "%flow runs --status suspended", "%flow resume"]
STORE_FACTS = """
import json
from pathlib import Path
_s = current_session()
_run = planner.runs(session=_s.id)[0]
_sent = Path("outbox.jsonl").read_text().splitlines() if Path("outbox.jsonl").exists() else []
print(json.dumps({"status": _run["status"], "applied": _s.state.applied,
                  "output": _run.get("output"), "sent": [json.loads(x) for x in _sent],
                  "request_id": _run["request_id"]}))
"""


@pytest.mark.e2e
def test_the_resume_form_refuses_then_completes_a_run_that_waited_across_a_restart(
        page, lab, lab_dir: Path, record_property, capsys) -> None:
    from playwright.sync_api import expect

    lab.set_kernel_env({"FLOWSTATE_STORE": str(lab_dir / "state" / "flowstate.db"),
                        "FLOWSTATE_USER": "e2e-user", "FLOWSTATE_SESSION": "e2e-resume"})
    nb = lab.write_notebook(lab_dir / "people.ipynb", FORM_CELLS)
    open_notebook(page, lab, nb)
    run_all(page)

    # the form under the run: the question, yes / no unchosen, a note on several lines
    form = cell_output(page, 2).locator(".fs-resume-form")
    expect(form).to_be_visible()
    expect(form).to_contain_text("Approve the plan for 'launch the beta'?")
    approved = form.locator(".fs-field-approved")
    expect(approved.locator(".fs-required")).to_have_text("*")
    expect(approved.locator("button.widget-toggle-button")).to_have_count(2)
    expect(approved.locator("button.mod-active")).to_have_count(0)
    expect(form.locator(".fs-field-note textarea")).to_be_visible()
    expect(cell_output(page, 3)).to_contain_text("waiting: Approve the plan for 'launch the beta'?")
    _shoot(page, 2, "resume-form-light")

    # Resume with nothing chosen: refused next to the field; the run still waits
    form.locator("button.jupyter-button", has_text="Resume").click()
    expect(approved.locator(".fs-error")).to_have_text("Field required")
    expect(form).to_contain_text("not resumed: the run still waits")
    waiting = _kernel_value(page, STORE_FACTS)
    assert waiting["status"] == "suspended" and waiting["applied"] == [] and \
        waiting["sent"] == [], waiting
    _shoot(page, 2, "resume-form-refused-light")

    # a restart: the forms show their snapshots, which say how to resume from a cell
    restart_kernel(page)
    snapshot = cell_output(page, 2).locator('.fs-snapshot[data-fs-view="resume form"]')
    expect(snapshot).to_be_visible()
    expect(snapshot).to_contain_text(f"%flow resume {waiting['request_id']} "
                                     f'{{"approved": true}}')
    expect(cell_output(page, 2).get_by_text("Error displaying widget")).to_be_hidden()
    _shoot(page, 2, "resume-form-snapshot-after-restart-light")

    # the definitions again, then the waiting run's new form: fill it in, submit
    run_cells(page, [0, 1, 3, 4])
    form = cell_output(page, 4).locator(".fs-resume-form")
    expect(form.locator(".fs-field-approved button.widget-toggle-button")).to_have_count(2)
    form.locator(".fs-field-approved button.widget-toggle-button", has_text="yes").click()
    expect(form.locator(".fs-field-approved button.mod-active")).to_have_text("yes")
    note = form.locator(".fs-field-note textarea")
    note.click()
    note.type("Ship it")
    note.press("Enter")
    note.type("**this week**.")
    _shoot(page, 4, "resume-form-filled-light")
    # the filled form, a choice made and an error shown before, reads well in both themes
    try:
        with capsys.disabled():
            filled = {"light": _contrast(page, [".fs-resume-form"], "form-filled-light",
                                         record_property, least=10)}
            set_theme(page, "JupyterLab Dark")
            _shoot(page, 4, "resume-form-filled-dark")
            filled["dark"] = _contrast(page, [".fs-resume-form"], "form-filled-dark",
                                       record_property, least=10)
    finally:
        set_theme(page, "JupyterLab Light")
    # Resume clicked right after typing while the kernel is busy: ipywidgets sends the box's
    # first keystroke, holds the rest back until the kernel answers it, and sends the click at
    # once. What the run gets is what the form shows.
    release = lab_dir / "release-kernel"
    hold_kernel(page, release)
    note.press("Control+End")
    note.press_sequentially(" Today.")
    form.locator("button.jupyter-button", has_text="Resume").click()
    release.touch()
    expect(form).to_contain_text("resumed here: ok")
    expect(form.locator(".fs-json-view .fs-row[data-path='applied'] .fs-value")).to_have_text(
        "true")
    done = _kernel_value(page, STORE_FACTS)
    assert done["request_id"] == waiting["request_id"], done
    assert done["status"] == "ok" and done["applied"] == ["launch the beta"], done
    assert done["output"]["notified"] == {"sent": True, "to": "team"}, done
    assert [(m["plan"], m["note"]) for m in done["sent"]] == [
        ("launch the beta", "Ship it\n**this week**. Today.")], done
    _shoot(page, 4, "resume-form-done-light")
    # the first form's kernel is gone: its snapshot shows, not the dead form
    expect(cell_output(page, 2).locator(".fs-resume-form")).to_be_hidden()
    expect(cell_output(page, 2).locator(".fs-snapshot")).to_be_visible()

    selectors = [".fs-resume-form", ".jp-OutputArea-output .fs-card",
                 ".jp-RenderedHTMLCommon .fs-card"]
    try:
        with capsys.disabled():
            light = _contrast(page, selectors, "resume-light", record_property)
            set_theme(page, "JupyterLab Dark")
            for index, name in ((2, "resume-form-snapshot-after-restart"),
                                (3, "runs-suspended"), (4, "resume-form-done")):
                _shoot(page, index, f"{name}-dark")
            dark = _contrast(page, selectors, "resume-dark", record_property)
            print(f"\n[e2e] resume form: lowest contrast light {light:.2f}:1, dark {dark:.2f}:1")
    finally:
        set_theme(page, "JupyterLab Light")


# ------------------------------------------------------------------------------ the trace view

TRACE_CELLS = [
    "%load_ext flowstate_jupyter",
    f"%%flow planner\nimport sys\nsys.path.insert(0, {str(TESTS_DIR)!r})\n"
    f"from planner_flow import make_flow\nmake_flow()",
    '%flow run plan "launch"',
    '%flow resume {"approved": true, "note": "ok"}',
    "%flow trace",
    '%flow run plan ""',
    "%flow trace",
    "%flow graph",
]


@pytest.mark.e2e
def test_flow_trace_opens_a_span_to_its_input_output_changes_and_error(
        page, lab, lab_dir: Path, record_property, capsys) -> None:
    from playwright.sync_api import expect

    lab.set_kernel_env({"FLOWSTATE_STORE": str(lab_dir / "state" / "flowstate.db"),
                        "FLOWSTATE_USER": "e2e-user", "FLOWSTATE_SESSION": "e2e-trace"})
    nb = lab.write_notebook(lab_dir / "trace.ipynb", TRACE_CELLS)
    open_notebook(page, lab, nb)
    run_all(page)

    view = cell_output(page, 4).locator(".fs-trace-view")
    expect(view).to_be_visible()
    expect(view.locator(".fs-head").first).to_contain_text("plan · ok")
    rows = view.locator(".fs-span-row")
    expect(rows).to_have_count(4)
    expect(rows.locator(".fs-span-name")).to_have_text(
        ["plan", "then[0]/draft", "then[1]/approve", "then[2]/apply"])
    bars = rows.locator(".fs-bar")
    assert all(b["width"] > 0 for b in bars.evaluate_all(
        "els => els.map(e => e.getBoundingClientRect())")), "a span without a bar"
    expect(view.locator(".fs-span-detail")).to_have_count(0)
    expect(view).to_contain_text("click a span")

    # a click on a span: its input, output and the changes it committed
    view.locator('.fs-span-row[data-span="plan/then[2]/apply"] .fs-span-line').click()
    detail = view.locator('.fs-span-detail[data-span="plan/then[2]/apply"]')
    expect(detail).to_be_visible()
    expect(view.locator('.fs-span-row[data-span="plan/then[2]/apply"]')).to_have_class(
        re.compile(r"\bfs-selected\b"))
    expect(detail.locator('[data-part="input"] .fs-row[data-path="approved"] .fs-value')) \
        .to_have_text("true")
    expect(detail.locator('[data-part="output"] .fs-row[data-path="applied"] .fs-value')) \
        .to_have_text("true")
    changes = detail.locator('[data-part="changes"]')
    expect(changes.locator(".fs-section")).to_have_text("changes (1)")
    expect(changes).to_contain_text("session.push v1")
    expect(changes.locator('.fs-row[data-path="delta"] .fs-value')).to_have_text('"launch"')
    _shoot(page, 4, "trace-view-light")
    view.locator('.fs-span-row[data-span="plan/then[0]/draft"] .fs-span-line').click()
    expect(view.locator('.fs-span-detail[data-span="plan/then[0]/draft"] [data-part="output"]')) \
        .to_contain_text("outline launch")
    expect(view.locator('[data-part="changes"]')).to_contain_text("committed no changes")
    selected = _kernel_value(page, "import json\nfrom flowstate_jupyter.notebook import "
                                   "TraceView\nfrom ipywidgets import Widget\nprint(json.dumps("
                                   "[w.selected for w in list(Widget.widgets.values()) "
                                   "if isinstance(w, TraceView)]))")
    assert "plan/then[0]/draft" in selected, selected  # the click reached the kernel

    # a failed run: its output names the line to run; its trace opens where the error began
    request_id = _kernel_value(page, "import json\nfrom flowstate_jupyter.notebook import "
                                     "kernel_state\nprint(json.dumps(kernel_state().session()"
                                     ".runs(limit=1)[0]['request_id']))")
    expect(cell_output(page, 5).locator(".fs-hint")).to_have_text(
        f"where it failed, block by block: %flow trace {request_id}")
    failed = cell_output(page, 6).locator(".fs-trace-view")
    expect(failed.locator(".fs-head").first).to_contain_text("plan · error")
    origin = failed.locator('.fs-span-row[data-span="plan/then[0]/draft"]')
    expect(origin).to_have_class(re.compile(r"\bfs-selected\b"))
    expect(origin.locator(".fs-span-status")).to_have_text("error")
    error = failed.locator('.fs-span-detail [data-part="error"]')
    expect(error.locator(".fs-error")).to_have_text("ValueError: a goal is needed")
    expect(error.locator(".fs-traceback pre")).to_contain_text(
        'raise ValueError("a goal is needed")')
    _shoot(page, 6, "trace-view-error-light")
    _shoot(page, 5, "run-failed-light")
    # the flow's picture, beside its trace (tests/e2e/test_flow_graph.py checks its content)
    expect(cell_output(page, 7).locator(".jp-RenderedMermaid img")).to_be_visible()
    _shoot(page, 7, "flow-graph-light")

    selectors = [".fs-trace-view", ".jp-RenderedHTMLCommon .fs-card"]
    try:
        with capsys.disabled():
            light = _contrast(page, selectors, "trace-light", record_property)
            set_theme(page, "JupyterLab Dark")
            _shoot(page, 4, "trace-view-dark")
            _shoot(page, 6, "trace-view-error-dark")
            _shoot(page, 5, "run-failed-dark")
            run_cells(page, [7])  # drawn again, in the dark theme's colours
            expect(cell_output(page, 7).locator(".jp-RenderedMermaid img")).to_be_visible()
            _shoot(page, 7, "flow-graph-dark")
            dark = _contrast(page, selectors, "trace-dark", record_property)
            print(f"\n[e2e] trace view: lowest contrast light {light:.2f}:1, dark {dark:.2f}:1")
    finally:
        set_theme(page, "JupyterLab Light")
