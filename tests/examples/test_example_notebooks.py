"""Every notebook in notebooks/ runs top to bottom in a real IPython kernel (nbclient).

The notebooks assert what their text claims, so a wrong result fails here. Each runs in a fresh
folder with its own store (``FLOWSTATE_STORE``), so runs do not see each other's state.
"""

from __future__ import annotations

from pathlib import Path

import nbclient
import nbformat
import pytest
from _helpers import python_env

ALL = sorted((Path(__file__).parents[2] / "notebooks").glob("*.ipynb"))
# Notebooks whose own test runs them and checks their printed output too.
DEDICATED = {"03_windmill_states": "tests/windmill/test_windmill_notebook.py"}
NOTEBOOKS = [p for p in ALL if p.stem not in DEDICATED]


def test_there_are_example_notebooks_and_each_is_run_by_a_test():
    names = [p.name for p in ALL]
    assert "01_quickstart.ipynb" in names
    assert "02_state_bubbling.ipynb" in names
    root = Path(__file__).parents[2]
    assert all((root / test).exists() for test in DEDICATED.values())


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_example_notebook_runs_and_its_assertions_hold(path, tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWSTATE_STORE", f"sqlite:///{tmp_path}/store.db")
    monkeypatch.setenv("FLOWSTATE_USER", "tester")
    monkeypatch.setenv("PYTHONPATH", python_env()["PYTHONPATH"])  # the kernel imports this checkout
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
        f"{path.name} is committed with outputs; clear them to keep the repository small"
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, naming the cell, when an assert fails
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert errors == []
