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
    "inspector = %state\ninspector",
    # a write after the Inspector was shown: its snapshot output follows (within ~1 s)
    """import time
sent = inspector.snapshots.sent
%state set session.message_count 77
deadline = time.monotonic() + 20
while inspector.snapshots.sent == sent and time.monotonic() < deadline:
    time.sleep(0.05)
assert inspector.snapshots.sent > sent, "the snapshot was not updated"
""",
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

    # the Inspector: its snapshot (HTML a static viewer shows) and then the live view
    inspector = nb.cells[10].outputs
    assert [o.output_type for o in inspector] == ["display_data", "display_data"], inspector
    snapshot, view = inspector
    assert "fs-snapshot" in snapshot.data["text/html"]
    assert snapshot.data["text/plain"].startswith("Inspector")
    assert "application/vnd.jupyter.widget-view+json" in view.data
    # the saved snapshot is the last one: it shows the write of the last cell
    assert "77" in snapshot.data["text/html"] and "message_count=77" in snapshot.data["text/plain"]
    widget_state = nb.metadata.get("widgets", {})
    assert widget_state, "store_widget_state kept no widget state"
    assert len(json.dumps(widget_state)) < 100_000  # the saved notebook stays small
    assert len(nbformat.writes(nb)) < 200_000

    # a fast run shows its summary only (no progress output); the output is its run card
    batch = nb.cells[15].outputs
    assert len(batch) == 1 and "fs-card" in batch[0]["data"]["text/html"], batch
    assert "[2, 4, 6" in batch[0]["data"]["text/plain"] or \
        "2, 4, 6" in batch[0]["data"]["text/html"]

    # the kernel wrote through to the store file the test can read
    store = fs.open_store(f"sqlite:///{db}")
    try:
        record = store.read("session", "nbk")
        assert record.state == {"mode": "agent", "message_count": 77}
        assert store.read("user", "kim", "preferences").state["theme"] == "dark"
    finally:
        store.close()

