"""The README runs as written: every ```python block, top to bottom, in one fresh kernel.

The blocks become the cells of one notebook, run by nbclient in a temporary folder with its own
store (``FLOWSTATE_STORE``), as a reader pasting them one after the other into a new notebook
would. Blocks that only make sense in a notebook use ``%`` magics and run in the same kernel.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbclient
from _helpers import python_env
from nbformat.v4 import new_code_cell, new_notebook

README = Path(__file__).parents[2] / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks() -> list[str]:
    return [match.group(1) for match in BLOCK.finditer(README.read_text())]


def test_the_readme_has_python_blocks_without_chained_magics():
    blocks = python_blocks()
    assert len(blocks) >= 8, "the README lost its examples"
    for block in blocks:
        for line in block.splitlines():
            assert not (line.lstrip().startswith("%") and ";" in line.split("#")[0]), \
                f"a magic line chains commands with ';' (only the first would run): {line}"
    text = "\n".join(blocks)
    for shown in ("fs.define_resource", "%state history", "%state --side", "%flow ui"):
        assert shown in text, f"the README's examples do not show {shown}"


def test_every_python_block_of_the_readme_runs_in_one_kernel(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWSTATE_STORE", f"sqlite:///{tmp_path}/store.db")
    monkeypatch.setenv("FLOWSTATE_USER", "reader")
    monkeypatch.setenv("FLOWSTATE_SESSION", "readme")
    monkeypatch.setenv("PYTHONPATH", python_env()["PYTHONPATH"])  # the kernel imports this checkout
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    blocks = python_blocks()
    nb.cells = [new_code_cell(block) for block in blocks]
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, naming the block, when one fails
    errors = [o for c in nb.cells for o in c.outputs if o.output_type == "error"]
    assert errors == []
    refused = [o for c in nb.cells for o in c.outputs
               if o.output_type == "stream" and "UsageError" in o.text]
    assert refused == [], refused

    def shown(marker: str) -> list:
        index = next(i for i, b in enumerate(blocks) if b.strip().endswith(marker))
        return nb.cells[index].outputs

    # what the text promises shows: the printed result, a run, the views and their snapshots
    first = nb.cells[0].outputs
    assert first and first[0].text.strip() == "agent 2"
    run = shown('%flow run chat {"message": "hi"}')
    assert any("fs-card" in o.get("data", {}).get("text/html", "") for o in run)
    for marker, kind in (("%state", "Inspector"), ("%state client", "client data preview"),
                         ("%flow ui", "FlowRunner"), ("%state history session", "History"),
                         ("%flow trace", "trace view"), ('%flow run ask "launch" --session reviews',
                                                         "resume form")):
        outputs = shown(marker)
        html = [o.data.get("text/html", "") for o in outputs]
        assert any(f'data-fs-view="{kind}"' in h for h in html), (marker, outputs)
        assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
                   for o in outputs), marker
    side = shown("%state --side")
    assert any("open in the side panel" in o.get("data", {}).get("text/html", "")
               for o in side)
