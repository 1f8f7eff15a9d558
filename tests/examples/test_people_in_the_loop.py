"""``notebooks/04_people_in_the_loop.ipynb`` as its text tells a person to use it: run to the
question, restart the kernel, run the definition cells again, then go on — the waiting run is
found in the store and resumed, and its notification is sent once (nbclient, a real kernel,
restarted for real).

``test_example_notebooks.py`` runs the notebook top to bottom, without the restart.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbclient
import nbformat
from _helpers import python_env
from jupyter_core.utils import run_sync
from nbformat.v4 import new_code_cell

NOTEBOOK = Path(__file__).parents[2] / "notebooks" / "04_people_in_the_loop.ipynb"


def test_a_waiting_run_survives_a_kernel_restart_and_is_resumed_once(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWSTATE_STORE", f"sqlite:///{tmp_path}/store.db")
    monkeypatch.setenv("FLOWSTATE_USER", "tester")
    monkeypatch.setenv("PYTHONPATH", python_env()["PYTHONPATH"])
    nb = nbformat.read(NOTEBOOK, as_version=4)
    cells = nb.cells
    code = [i for i, c in enumerate(cells) if c.cell_type == "code"]
    definitions = [i for i in code if "definitions" in cells[i].metadata.get("tags", [])]
    asked = next(i for i in code if cells[i].source.startswith("waiting = _"))
    restart_note = next(i for i, c in enumerate(cells)
                        if c.cell_type == "markdown" and "Restart Kernel" in c.source)
    assert definitions and definitions[-1] < asked < restart_note
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    with client.setup_kernel():
        for index in range(asked + 1):
            client.execute_cell(cells[index], index)
        request_id = _run(client, "print(waiting.request_id)")

        run_sync(client.km.restart_kernel)(now=True)  # the async manager of nbclient
        run_sync(client.kc.wait_for_ready)(timeout=60)
        assert _run(client, "print('waiting' in globals(), 'planner' in globals())") == \
            "False False", "the kernel did not restart"

        for index in definitions:
            client.execute_cell(cells[index], index)
        for index in range(restart_note + 1, len(cells)):
            client.execute_cell(cells[index], index)
        assert _run(client, "print(request_id)") == request_id  # found again in the store
    errors = [o for c in cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert errors == []
    sent = [json.loads(line) for line in (tmp_path / "outbox.jsonl").read_text().splitlines()]
    assert [m["plan"] for m in sent] == ["launch the beta"]
    assert sent[0]["key"].startswith(request_id)
    # the form the restarted kernel drew for the waiting run, and the run's outcome after it
    form = next(i for i in code if cells[i].source.strip() == "%flow resume")
    texts = [o.get("data", {}).get("text/plain", "") for o in cells[form].outputs]
    assert any(t.startswith(f"run {request_id} is waiting") for t in texts), texts


def _run(client: nbclient.NotebookClient, source: str) -> str:
    """Run ``source`` in the client's kernel; return what it printed."""
    cell = new_code_cell(source)
    client.execute_cell(cell, 0, store_history=False)
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream").strip()
