"""``flow.graph()`` and ``result.graph()``: the picture of a flow (docs/guide.md,
'A picture of the flow').

The Mermaid source is checked by parsing it: every line must be one of the few statements the
picture uses, every label must be quoted with nothing inside that Mermaid would read as syntax,
and the parsed nodes and edges must be exactly the graph's. (tests/e2e/test_flow_graph.py has
JupyterLab draw the same flow.)
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from graph_flow import HOSTILE, UNICODE, make_flow

import flowstate_jupyter as fs
from flowstate_jupyter.model.graph import FlowGraph

# -- a parser for the Mermaid the picture writes ------------------------------------------------

_LABEL = r'"([^"]*)"'
_SHAPES = {'(["': '"])', '["': '"]', '{"': '"}', '[["': '"]]', '>"': '"]', '{{"': '"}}',
           '[/"': '"/]', '[("': '")]'}
_NODE = re.compile(r"(n\d+)(" + "|".join(re.escape(o) for o in _SHAPES) + r")([^\"]*)(\"\S*)$")
_EDGE = re.compile(r"(n\d+) (-->|-\.->|-\.-)(?:\|" + _LABEL + r"\|)? (n\d+)$")
_SUBGRAPH = re.compile(r"subgraph (g\d+) \[" + _LABEL + r"\]$")
_CLASSDEF = re.compile(r"classDef (\w+) [\w:#.,\- ]+$")
_CLASS = re.compile(r"class (n\d+(?:,n\d+)*) (\w+)$")
# Inside a label only entity codes and <br> may carry syntax characters.
_FORBIDDEN = re.compile(r'["\[\]{}()|<>;%`\\#]')


def _unsafe(label: str) -> bool:
    return bool(_FORBIDDEN.search(re.sub(r"#\d+;", "", label.replace("<br>", ""))))


def decode(label: str) -> str:
    """What Mermaid shows for a label: entity codes decoded, <br> as a line break."""
    text = label.replace("<br>", "\n")
    return re.sub(r"#(\d+);", lambda m: chr(int(m.group(1))), text)


def parse(source: str) -> dict:
    """Nodes ``{id: (shape, label)}``, edges ``[(a, arrow, label, b)]``, subgraphs and classes;
    an AssertionError naming the line for anything else."""
    lines = source.splitlines()
    assert lines[0] == "flowchart TD"
    nodes: dict[str, tuple[str, str]] = {}
    edges: list[tuple[str, str, str | None, str]] = []
    subgraphs: dict[str, str] = {}
    classes: dict[str, set[str]] = {}
    depth = 0
    for number, raw in enumerate(lines[1:], 2):
        line = raw.strip()
        where = f"line {number}: {raw!r}"
        if match := _SUBGRAPH.match(line):
            assert match.group(1) not in subgraphs, where
            subgraphs[match.group(1)] = decode(match.group(2))
            depth += 1
            assert not _unsafe(match.group(2)), where
        elif line == "end":
            depth -= 1
            assert depth >= 0, where
        elif match := _NODE.match(line):
            ident, opening, label, closing = match.groups()
            assert closing == _SHAPES[opening], where
            assert ident not in nodes, f"{where}: node defined twice"
            assert not _unsafe(label), where
            nodes[ident] = (opening, decode(label))
        elif match := _EDGE.match(line):
            a, arrow, label, b = match.groups()
            assert a in nodes and b in nodes, f"{where}: edge to an undefined node"
            if label is not None:
                assert not _unsafe(label), where
            edges.append((a, arrow, None if label is None else decode(label), b))
        elif match := _CLASSDEF.match(line):
            classes.setdefault(match.group(1), set())
        elif match := _CLASS.match(line):
            ids = match.group(1).split(",")
            assert all(i in nodes for i in ids), where
            assert match.group(2) in classes, f"{where}: class used before classDef"
            classes[match.group(2)].update(ids)
        else:
            raise AssertionError(f"{where} is not a statement the picture uses")
    assert depth == 0, "a subgraph is not closed"
    return {"nodes": nodes, "edges": edges, "subgraphs": subgraphs, "classes": classes}


def ids_by_label(parsed: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for ident, (_, label) in parsed["nodes"].items():
        out.setdefault(label, []).append(ident)
    return out


@pytest.fixture
def flow():
    return make_flow()


# -- nodes and their paths ------------------------------------------------------------------------

STEP_PATHS = [
    "chat",
    "chat/then[0]/mode-router",
    "chat/then[0]/mode-router/quiet",
    f"chat/then[0]/mode-router/{HOSTILE}",
    f"chat/then_if[1]/{UNICODE}",
    "chat/map[2]",
    "chat/for_each[3]/double",
    "chat/parallel[4]",
    "chat/parallel[4]/left",
    "chat/parallel[4]/right",
    "chat/branch[5]",
    "chat/branch[5]/big",
    "chat/branch[5]/small",
    "chat/then[6]/maybe_fail",
    "chat/rescue[7]",
    "chat/rescue[7]/recover",
    "chat/tap[8]/log",
    "chat/tap_if[9]/inner",
    "chat/tap_if[9]/inner/then[0]/log",
    "chat/tap_if[9]/inner/map[1]",
    "chat/do_while[10]/spin",
    "chat/do_until[11]/spin",
    "count",
]


def test_every_block_and_step_is_a_node_at_its_stable_span_path(flow):
    graph = flow.graph()
    blocks = {p for p, n in graph.nodes.items() if not p.startswith("$")}
    assert blocks == set(STEP_PATHS)
    kinds = {p: graph.nodes[p].kind for p in STEP_PATHS}
    assert kinds["chat"] == "sequencer" and kinds["chat/then[0]/mode-router"] == "router"
    assert kinds["chat/parallel[4]"] == "parallel" and kinds["chat/branch[5]"] == "branch"
    assert kinds["chat/rescue[7]"] == "rescue" and kinds["chat/map[2]"] == "map"
    assert kinds["chat/tap_if[9]/inner"] == "sequencer"
    # A step drawn together with its one block answers to the step's path too.
    assert graph.node("chat/then[0]").path == "chat/then[0]/mode-router"
    assert graph.node("chat/do_while[10]").path == "chat/do_while[10]/spin"
    with pytest.raises(KeyError):
        graph.node("chat/then[99]")


def test_the_same_flow_definition_gives_the_same_paths_every_time(flow):
    assert list(flow.graph().nodes) == list(make_flow().graph().nodes)
    assert flow.graph().mermaid() == flow.graph().mermaid()


def test_each_construct_is_drawn_with_its_shape_and_labelled_edges(flow):
    graph = flow.graph()
    parsed = parse(graph.mermaid())
    assert len(parsed["nodes"]) == len(graph.nodes)
    ident = {path: f"n{i}" for i, path in enumerate(graph.nodes)}
    for path, node in graph.nodes.items():
        assert parsed["nodes"][ident[path]][1] == node.label
    shape = {p: parsed["nodes"][ident[p]][0] for p in graph.nodes}
    assert shape["chat/then[0]/mode-router"] == '{"'           # router: rhombus
    assert shape["chat"] == '[["' and shape["chat/tap_if[9]/inner"] == '[["'  # sequencers
    assert shape["chat/parallel[4]"] == '{{"' and shape["chat/branch[5]"] == '{{"'
    assert shape["$session.state.mode"] == '[/"' and shape["$session.resources.plan"] == '[("'

    edges = {(a, arrow, label, b) for a, arrow, label, b in parsed["edges"]}

    def has(a: str, arrow: str, label: str | None, b: str) -> bool:
        return (ident[a], arrow, label, ident[b]) in edges

    router = "chat/then[0]/mode-router"
    assert has("$flow graphs", "-->", None, "chat")
    assert has("chat", "-->", None, router)
    assert has(router, "-->", "route", f"{router}/quiet")
    assert has(router, "-->", "route", f"{router}/{HOSTILE}")
    # after a router, the value goes on from each route
    assert has(f"{router}/quiet", "-->", None, f"chat/then_if[1]/{UNICODE}")
    assert has(f"{router}/{HOSTILE}", "-->", None, f"chat/then_if[1]/{UNICODE}")
    assert has(f"chat/then_if[1]/{UNICODE}", "-->", None, "chat/map[2]")
    assert has("chat/map[2]", "-->", None, "chat/for_each[3]/double")
    assert has("chat/parallel[4]", "-->", "left", "chat/parallel[4]/left")
    assert has("chat/parallel[4]", "-->", "right", "chat/parallel[4]/right")
    assert has("chat/branch[5]", "-->", "is_big", "chat/branch[5]/big")
    assert has("chat/branch[5]", "-->", "else", "chat/branch[5]/small")
    assert has("chat/then[6]/maybe_fail", "-.->", "error", "chat/rescue[7]")
    assert has("chat/rescue[7]", "-->", "ValueError", "chat/rescue[7]/recover")
    # the value skips the rescue when nothing failed, and goes on after it when it caught
    assert has("chat/then[6]/maybe_fail", "-->", None, "chat/tap[8]/log")
    assert has("chat/rescue[7]/recover", "-->", None, "chat/tap[8]/log")
    assert has("chat/tap_if[9]/inner", "-->", None, "chat/tap_if[9]/inner/then[0]/log")
    assert has("chat/do_while[10]/spin", "-.->", "while again", "chat/do_while[10]/spin")
    assert has("chat/do_until[11]/spin", "-.->", "until done", "chat/do_until[11]/spin")
    assert set(parsed["subgraphs"].values()) >= {"action chat", "action count",
                                                 "session state", "session resources",
                                                 "request state"}


def test_a_field_several_blocks_declare_is_one_node_linked_from_each_of_them(flow):
    graph = flow.graph()
    router = "chat/then[0]/mode-router"
    assert sorted(graph.declared_by("$session.state.mode")) == sorted(
        [router, f"{router}/quiet", f"{router}/{HOSTILE}"])
    assert graph.declared_by("$session.state.notes") == [f"{router}/{HOSTILE}"]
    assert graph.declared_by("$session.resources.plan") == [f"{router}/{HOSTILE}"]
    # the flow's own model and the block that declares the same field, in both places it is used
    assert sorted(graph.declared_by("$session.state.count")) == [
        "$flow graphs", f"chat/then_if[1]/{UNICODE}", "count"]
    assert graph.nodes["$session.state.mode"].label == "session.mode: Literal['quiet', 'loud']"
    assert graph.nodes["$request.state.rounds"].label == "request.rounds: int"

    parsed = parse(graph.mermaid())
    mode = ids_by_label(parsed)["session.mode: Literal['quiet', 'loud']"]
    assert len(mode) == 1
    links = [e for e in parsed["edges"] if e[3] == mode[0]]
    assert len(links) == 3 and all(arrow == "-.-" for _, arrow, _, _ in links)

    text = graph.text()
    assert "session.mode: Literal['quiet', 'loud'] (shared) <- mode-router, quiet, " \
           f"{HOSTILE}" in text
    assert f"session.notes: list[str] <- {HOSTILE}" in text


def test_graph_of_one_action_draws_only_that_action(flow):
    graph = flow.graph("count")
    blocks = [p for p in graph.nodes if not p.startswith("$")]
    assert blocks == ["count"]
    assert "$session.state.mode" not in graph.nodes  # only the count handler's declarations
    assert graph.declared_by("$session.state.count") == ["$flow graphs", "count"]
    with pytest.raises(fs.UnknownActionError, match="did you mean 'chat'"):
        flow.graph("chta")


@pytest.mark.parametrize("name", [
    'say "hi"', "x]y[z", "{a}(b)|c;d#e%f", "<script>alert(1)</script>", "<b>bold</b>",
    "end", "flowchart TD", "subgraph", "class n0 ran", "%% comment", "`md`", "a\\b",
    "💥 ünï 中文", "two\nlines", "tab\there", "amp &amp; #quot; #35;",
])
def test_any_block_name_draws_as_itself(name):
    @fs.handler(name=name)
    def step(value):
        return value

    flow = fs.define_flow(kind="odd", actions={"go": fs.sequencer("seq").then(step)})
    graph = flow.graph()
    parsed = parse(graph.mermaid())
    expected = f"then · handler {name!r}"
    assert expected in {label for _, label in parsed["nodes"].values()}
    assert graph.nodes[f"go/then[0]/{name}"].label == expected


def test_graph_shows_as_mermaid_in_jupyterlab_and_as_text_elsewhere(flow):
    graph = flow.graph()
    bundle = graph._repr_mimebundle_()
    assert set(bundle) == {"text/vnd.mermaid", "text/plain"}
    assert bundle["text/vnd.mermaid"] == graph.mermaid()
    assert bundle["text/plain"] == graph.text() == repr(graph)
    lines = graph.text().splitlines()
    assert lines[0] == "flow graphs (f/flows/graphs)"
    assert any(line.strip() == "parallel 'left', 'right'" for line in lines)
    assert any(line.strip().startswith(f"handler {HOSTILE!r}") for line in lines)


# -- a run's path ---------------------------------------------------------------------------------

def test_a_run_without_a_trace_marks_the_blocks_its_events_name(flow, mem):
    result = flow.run("chat", {}, store=mem, session="s1")
    assert result.ok, result.error
    graph = result.graph()
    assert isinstance(graph, FlowGraph)
    assert [p for p in graph.nodes if not p.startswith("$")] == \
        [p for p in STEP_PATHS if p != "count"]  # the run's action only
    assert {"chat", "chat/for_each[3]/double", "chat/parallel[4]/left",
            "chat/parallel[4]/right"} <= graph.ran
    assert "chat/branch[5]/big" not in graph.ran and not graph.failed
    parsed = parse(graph.mermaid())
    ident = {path: f"n{i}" for i, path in enumerate(graph.nodes)}
    assert parsed["classes"]["ran"] == {ident[p] for p in graph.ran}
    assert result.request_id in graph.text().splitlines()[0]
    assert "* " in graph.text()


def _with_trace(result, spans):
    """Attach a trace shaped as docs/concepts.md, 'Traces', says (``trace.spans`` with path, block,
    status)."""
    result.trace = SimpleNamespace(request_id=result.request_id, spans=[
        SimpleNamespace(path=path, block=block, status=status) for path, block, status in spans])
    return result


def test_a_run_with_a_trace_marks_exactly_the_spans_paths(flow, mem):
    mem_session = flow.session("s1", store=mem)
    mem_session.patch_state(mode="loud")
    result = _with_trace(mem_session.run("chat", {}), [
        ("chat", "pipeline", "ok"),
        ("chat/then[0]/mode-router", "mode-router", "ok"),
        (f"chat/then[0]/mode-router/{HOSTILE}", HOSTILE, "ok"),
        ("chat/then[6]/maybe_fail", "maybe_fail", "error"),
        ("chat/rescue[7]/recover", "recover", "ok"),
    ])
    graph = result.graph()
    assert graph.ran == {"chat", "chat/then[0]/mode-router",
                         f"chat/then[0]/mode-router/{HOSTILE}", "chat/then[6]/maybe_fail",
                         "chat/rescue[7]/recover"}
    assert graph.failed == {"chat/then[6]/maybe_fail"}
    ident = {path: f"n{i}" for i, path in enumerate(graph.nodes)}
    classes = parse(graph.mermaid())["classes"]
    assert classes["failed"] == {ident["chat/then[6]/maybe_fail"]}
    assert ident["chat/then[6]/maybe_fail"] not in classes["ran"]
    text = graph.text()
    assert any(line.startswith("! ") and "maybe_fail" in line for line in text.splitlines())


def test_a_span_path_the_picture_does_not_know_still_marks_its_block_by_name(flow, mem):
    result = _with_trace(flow.run("chat", {}, store=mem), [
        ("chat", "pipeline", "ok"), ("chat/some-other-scheme/double", "double", "ok")])
    graph = result.graph()
    assert graph.ran == {"chat", "chat/for_each[3]/double"}


def test_a_run_block_result_draws_that_block(flow, mem):
    inner = next(b for b in flow.blocks() if b.name == "inner")
    result = flow.session("s1", store=mem).run_block(inner, {})
    graph = result.graph()
    assert [p for p in graph.nodes if not p.startswith("$")] == \
        ["inner", "inner/then[0]/log", "inner/map[1]"]
    assert "inner" in graph.ran


def test_a_result_made_by_hand_says_how_to_draw_its_flow():
    result = fs.RunResult(output=None, error=None, session_id="s", request_id="r")
    with pytest.raises(ValueError, match=r"flow\.graph\(action\)"):
        result.graph()
