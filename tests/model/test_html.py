"""The HTML the views and rich outputs are made of: theme colours only, tables that read as
tables, JSON as trees, everything bounded."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from flowstate_jupyter.model import html as h
from flowstate_jupyter.model.display import MORE, bounded, client_view

STATIC = Path(__file__).parents[2] / "flowstate_jupyter" / "notebook" / "static"
LITERAL_COLOUR = re.compile(
    r"#[0-9a-fA-F]{3,8}\b|\brgba?\(|\bhsla?\(|:\s*(white|black|red|green|blue|gray|grey|"
    r"yellow|orange)\b", re.IGNORECASE)


@pytest.mark.parametrize("name, text", [
    ("THEME_CSS", h.THEME_CSS),
    *((p.name, p.read_text()) for p in sorted(STATIC.glob("*.css"))),
    *((p.name, p.read_text()) for p in sorted(STATIC.glob("*.js"))),
], ids=lambda v: v if isinstance(v, str) and len(v) < 40 else "")
def test_every_colour_comes_from_jupyterlabs_theme_variables(name, text):
    found = LITERAL_COLOUR.findall(text)
    assert not found, f"{name} hard-codes colours: {found}"
    colours = re.findall(r"(?:color|background(?:-color)?|border(?:-left)?|accent-color)"
                         r"\s*:\s*([^;}]+)", text)
    for value in colours:
        if any(word in value for word in ("var(--jp-", "transparent", "inherit", "none",
                                          "currentColor", "${")):
            continue
        assert re.fullmatch(r"[\d.]+px solid|0|1px solid", value.strip()), (name, value)


def test_tables_are_left_aligned_without_zebra_rows_over_jupyterlabs_defaults():
    css = h.THEME_CSS
    cell_rule = re.search(r"\.fs-card \.fs-table\.fs-table th,[^{]*\{([^}]*)\}", css)
    assert cell_rule and "text-align:left" in cell_rule.group(1)
    row_rule = re.search(r"\.fs-card \.fs-table\.fs-table tr\{([^}]*)\}", css)
    assert row_rule and "background:transparent" in row_rule.group(1)
    # more specific than JupyterLab's `.jp-RenderedHTMLCommon tbody tr:nth-child(odd)` (0,2,2)
    assert ".fs-card .fs-table.fs-table tr" in css


def test_cells_show_strings_as_text_and_json_values_as_json_once():
    html = h.table([("v3", "16:27:16", "increment", {"saved": "plan"}, 3, None, True)],
                   ("version", "time", "operation", "output", "n", "none", "flag"))
    assert "<td>16:27:16</td><td>increment</td>" in html
    assert "&quot;16:27:16&quot;" not in html
    assert "{&quot;saved&quot;: &quot;plan&quot;}" in html  # one level of JSON, no \\"
    assert "\\&quot;" not in html
    assert '<span class="fs-numv">3</span>' in html and "fs-null" in html and "fs-bool" in html
    assert '<table class="fs-table"><thead>' in html


def test_large_values_in_cells_become_closed_trees_and_stay_bounded():
    value = {"steps": [f"step {i} " + "x" * 50 for i in range(1000)]}
    html = h.value_html(value, 600)
    assert html.startswith('<div class="fs-tree">') and "<details" in html
    assert "<details open" not in html  # closed in a table cell
    assert len(html) < 40_000 and "more</div>" in html


def test_a_json_tree_marks_changed_paths_and_opens_to_a_depth():
    tree = h.json_tree({"mode": "chat", "plan": {"steps": ["a", "b"]}}, open_depth=1,
                       changed={"plan.steps.1"})
    assert '<details open data-path="plan">' in tree
    assert '<details data-path="plan.steps">' in tree  # depth 1: closed
    assert tree.count('class="fs-changed"') == 1
    assert 'data-path="plan.steps.1"><span class="fs-changed">' in tree
    assert '<span class="fs-str">&quot;chat&quot;</span>' in tree


def test_when_reads_as_a_time_today_and_a_date_before():
    now = dt.datetime.now()
    assert h.when(now.timestamp()) == now.strftime("%H:%M:%S")
    old = dt.datetime(2020, 5, 17, 9, 3)
    assert h.when(old.timestamp()) == "2020-05-17 09:03"
    assert h.when(None) == "never"
    assert 'title="2020-05-17 09:03:00"' in h.time_html(old.timestamp())


def test_bounded_keeps_small_values_and_counts_what_it_leaves_out():
    small = {"a": [1, 2, {"b": "c"}], "d": None, "e": True}
    assert bounded(small) == small
    big = bounded({"items": list(range(10_000)), "text": "y" * 50_000}, budget=2000)
    assert big["items"][-1] == {MORE: 10_000 - (len(big["items"]) - 1)}
    assert len(str(big)) < 6000
    assert bounded({str(i): i for i in range(5000)}, budget=500)[MORE] > 4000


def test_the_client_view_is_one_tree_whose_paths_are_the_flattened_keys():
    snapshot = {"client_data": {"session": {"mode": "chat"}, "user": {}},
                "resources": {"session": {"plan": {"client_data": {"steps": 2}}}}}
    assert client_view(snapshot) == {"session": {"mode": "chat",
                                                 "resources": {"plan": {"steps": 2}}}}
