"""``%flow graph`` draws a picture in a real JupyterLab, with no network (issue 16, "Must show").

JupyterLab (4.1 and later) renders ``text/vnd.mermaid`` itself. The flow drawn has every
construct and block names with quotes, brackets, HTML and unicode (tests/graph_flow.py): the
picture must be an ``svg`` with those names as plain text, and no Mermaid syntax error. A run's
``result.graph()`` draws with the blocks the run went through marked.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from urllib.parse import unquote

import graph_flow
import pytest
from _lab import cell_output, open_notebook, run_all

SOURCE = Path(graph_flow.__file__).read_text()


@pytest.mark.e2e
def test_flow_graph_draws_an_svg_with_every_block_name_as_text(page, lab, lab_dir: Path) -> None:
    lab.set_kernel_env({"FLOWSTATE_STORE": str(lab_dir / "store.db"),
                        "FLOWSTATE_USER": "e2e-user", "FLOWSTATE_SESSION": "e2e-graph"})
    nb = lab.write_notebook(lab_dir / "graph.ipynb", [
        "%load_ext flowstate_jupyter",
        "%%flow graphs\n" + SOURCE + "\nmake_flow()",
        "%flow graph graphs",
        "%flow run chat {}",
        "_.graph()",
    ])
    open_notebook(page, lab, nb)
    run_all(page)

    markup = _picture(page, 2)
    text = _text(markup)
    for name in (graph_flow.HOSTILE, graph_flow.UNICODE, "mode-router", "parallel",
                 "rescue ValueError", "session.mode", "session.resources.plan"):
        assert name in text, f"{name!r} not drawn; the picture says:\n{text}"
    assert "Syntax error" not in text
    assert "<b>" not in markup, "a block name was drawn as HTML"

    # The %%flow summary shows the picture too.
    assert "mode-router" in _text(_picture(page, 1))

    # The run's picture marks the blocks it went through (class "ran" on their nodes).
    run_markup = _picture(page, 4)
    marked = re.findall(r'<g class="node [^"]*\bran\b[^"]*"', run_markup)
    assert marked, "no node of the run's picture is marked"
    assert len(marked) < run_markup.count('<g class="node '), "every node is marked"


def _picture(page, index: int) -> str:
    """The SVG markup JupyterLab drew for cell ``index``'s Mermaid output (as an ``img``)."""
    from playwright.sync_api import expect

    output = cell_output(page, index)
    output.scroll_into_view_if_needed()
    image = output.locator(".jp-RenderedMermaid img").first
    expect(image).to_be_visible(timeout=30_000)
    source = image.get_attribute("src") or ""
    prefix = "data:image/svg+xml,"
    assert source.startswith(prefix), source[:200]
    markup = unquote(source[len(prefix):])
    assert "<svg" in markup
    return markup


def _text(markup: str) -> str:
    """The text a reader sees in SVG markup (tags dropped, entities decoded)."""
    body = markup[markup.index("<svg"):]
    body = re.sub(r"(?s)<style.*?</style>", " ", body)
    return html.unescape(re.sub(r"<[^>]+>", " ", body))
