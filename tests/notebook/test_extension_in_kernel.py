"""The extension in a real IPython kernel (ipykernel, started by nbclient): a notebook built here
loads it, defines the guide flow with ``%%flow``, runs it with ``%flow run`` and reads state with
``%state get``; asserts inside the cells fail the run when a result is wrong."""

from __future__ import annotations

import json

import nbformat
from _nbtools import TESTS_DIR
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

import flowstate_jupyter as fs

CELLS = [
    "%load_ext flowstate_jupyter",
    f"""%%flow assistant
import sys
sys.path.insert(0, {str(TESTS_DIR)!r})
from guide_flow import make_flow
make_flow()""",
    """from flowstate_jupyter.notebook import kernel_state
k = kernel_state()
assert (k.user, k.session_id, k.current_flow) == ("kim", "nbk", "assistant"), vars(k)
assert type(assistant).__name__ == "Flow" """,
    '%flow run chat {"message": "hello"}',
    """result = _
assert result.ok and result.output == {"reply": "chat: hello", "count": 1}, result""",
    "%state set session.mode agent",
    """mode = %state get session.mode
count = %state get session.message_count
assert (mode, count) == ("agent", 1), (mode, count)""",
    '%flow run save {"title": "Kernel notes", "theme": "dark"}',
    """titles = %state get session.resources.artifacts.titles
theme = %state get user.resources.preferences.theme
assert titles == ["Kernel notes"] and theme == "dark", (titles, theme)""",
    "%state set session.mode robot",  # tagged raises-exception below
    "%state",
    """%unload_ext flowstate_jupyter
%load_ext flowstate_jupyter""",
    """again = %state get session.mode
assert again == "agent", again
assert kernel_state().flows.keys() == {"assistant"}""",
    """%%flow batch
import flowstate_jupyter as fs
@fs.handler
def double(x, ctx):
    return 2 * x
fs.define_flow(kind="batch", actions={"go": fs.sequencer("go").for_each(double)})""",
    "%flow run go [1, 2, 3, 4, 5, 6, 7, 8] --session b1",
    """assert _.output == [2, 4, 6, 8, 10, 12, 14, 16], _""",
]
RAISES = {9}


def build_notebook():
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    for index, source in enumerate(CELLS):
        cell = new_code_cell(source)
        if index in RAISES:
            cell.metadata["tags"] = ["raises-exception"]
        nb.cells.append(cell)
    return nb


def test_the_extension_works_in_a_real_kernel(python3_kernel, tmp_path, monkeypatch):
    db = tmp_path / "kernel.db"
    monkeypatch.setenv("FLOWSTATE_STORE", f"sqlite:///{db}")
    monkeypatch.setenv("FLOWSTATE_USER", "kim")
    monkeypatch.setenv("FLOWSTATE_SESSION", "nbk")
    nb = build_notebook()
    client = NotebookClient(nb, timeout=120, kernel_name=python3_kernel,
                            store_widget_state=True,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError if an assert in a cell fails

    run_outputs = nb.cells[3].outputs
    shown = json.dumps([o.get("data", {}) for o in run_outputs] +
                       [o.get("text", "") for o in run_outputs])
    assert "chat: hello" in shown and "client data changed" in shown

    # IPython shows a UsageError as one stderr line, without a traceback
    refused = "".join(o.get("text", "") for o in nb.cells[9].outputs)
    assert refused.startswith("UsageError: ") and refused.count("\n") == 1, refused
    assert "mode" in refused and "Literal['chat', 'agent']" in refused
    assert "Traceback" not in refused

    inspector = nb.cells[10].outputs
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
               for o in inspector), inspector
    assert any("Inspector" in o.get("data", {}).get("text/plain", "") for o in inspector)
    widget_state = nb.metadata.get("widgets", {})
    assert widget_state, "store_widget_state kept no widget state"
    assert len(json.dumps(widget_state)) < 100_000  # the saved notebook stays small
    assert len(nbformat.writes(nb)) < 200_000

    # a for_each run shows a progress bar in its own cell, at its total
    progress = nb.cells[14].outputs
    bars = [o["data"]["application/vnd.jupyter.widget-view+json"]["model_id"] for o in progress
            if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(bars) == 1, progress
    models = widget_state["application/vnd.jupyter.widget-state+json"]["state"]
    bar = models[bars[0]]["state"]
    assert bar["_model_name"] == "IntProgressModel" and (bar["value"], bar["max"]) == (8, 8)

    # the kernel wrote through to the store file the test can read
    store = fs.open_store(f"sqlite:///{db}")
    try:
        record = store.read("session", "nbk")
        assert record.state == {"mode": "agent", "message_count": 1}
        assert store.read("user", "kim", "preferences").state["theme"] == "dark"
    finally:
        store.close()

