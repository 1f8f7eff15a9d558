"""notebooks/03_windmill_states.ipynb runs top to bottom in a real kernel (its asserts pass)."""

from __future__ import annotations

import os

import pytest
from _helpers import ROOT

NOTEBOOK = ROOT / "notebooks" / "03_windmill_states.ipynb"

nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[test]' (make test does)")
nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[test]' (make test does)")


def test_the_notebook_is_saved_clean_with_a_python3_kernelspec():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert any("assert" in c.source for c in code)


@pytest.mark.slow
def test_the_watch_for_changes_notebook_executes(monkeypatch):
    # The kernel inherits this environment: it imports this checkout, and sees the notebook
    # path the way jupyter_server announces it.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("JPY_SESSION_NAME", str(NOTEBOOK))
    for name in ("FLOWSTATE_STORE", "WM_STATE_PATH", "WM_STATE_PATH_NEW", "FLOWSTATE_SCHEDULE",
                 "FLOWSTATE_SCRIPT_PATH", "FLOWSTATE_PROJECT", "FLOWSTATE_NOTEBOOK_ROOT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FLOWSTATE_USER", "nbtester")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError (with the failing cell) if an assert fails
    printed = "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                      for out in cell.outputs)
    assert "state path: u/nbtester/notebooks/03_windmill_states/user" in printed
    assert "first run: [1, 2, 3]" in printed and "second run: [4, 5]" in printed
