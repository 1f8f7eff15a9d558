"""A picture of a flow as data, and its two renderings: Mermaid source and a text tree.

Pure: no I/O, no knowledge of blocks. ``flows/graph.py`` walks a flow and fills a
:class:`FlowGraph`; ``RunResult.graph()`` marks the nodes a run went through. The same object
shows itself in Jupyter (``_repr_mimebundle_``): ``text/vnd.mermaid``, which JupyterLab 4.1+
draws itself with no network, and ``text/plain``, the text tree, everywhere else.

Mermaid node ids are generated (``n0``, ``n1``, ...), never taken from block names, and every
label is written in quotes with the characters Mermaid (or the HTML it renders to) would read as
syntax replaced by entity codes (``#34;`` for ``"``), so any block name draws as itself: quotes,
brackets, ``<b>``, ``%%``, unicode.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Edge", "FlowGraph", "Node", "mermaid_text"]

#: Node kinds and the Mermaid shape each is drawn with (opening, closing).
SHAPES = {
    "flow": ('(["', '"])'),
    "handler": ('["', '"]'),
    "router": ('{"', '"}'),
    "sequencer": ('[["', '"]]'),
    "block": ('["', '"]'),
    "map": ('>"', '"]'),
    "parallel": ('{{"', '"}}'),
    "branch": ('{{"', '"}}'),
    "rescue": ('{{"', '"}}'),
    "field": ('[/"', '"/]'),
    "resource": ('[("', '")]'),
}

#: Edge kinds: ``next`` (the value flows on), ``child`` (a step or route runs a block),
#: ``error`` (a rescue catches), ``loop`` (a loop runs its block again), ``declares`` (a block
#: declares a state field or resource).
ARROWS = {"next": "-->", "child": "-->", "error": "-.->", "loop": "-.->", "declares": "-.-"}

# Highlighting. Mermaid takes every other colour from JupyterLab's theme; the picture is drawn
# as an image, where the page's CSS variables do not reach, so the marks are one mid-tone amber
# (legible on light and dark themes) plus a thick line, and a dashed one for what failed.
_CLASS_DEFS = ("classDef ran stroke:#e69500,stroke-width:4px",
               "classDef failed stroke:#e69500,stroke-width:4px,stroke-dasharray:6 3",
               "classDef decl font-style:italic")

_ESCAPED = {'"': "#34;", "#": "#35;", "&": "#38;", "<": "#60;", ">": "#62;", "[": "#91;",
            "]": "#93;", "{": "#123;", "}": "#125;", "(": "#40;", ")": "#41;", "|": "#124;",
            "`": "#96;", ";": "#59;", "%": "#37;", "\\": "#92;"}


def mermaid_text(text: str) -> str:
    """``text`` made safe inside a quoted Mermaid label: syntax characters as entity codes,
    control characters as spaces, line breaks as ``<br>``."""
    out = []
    for char in str(text):
        if char == "\n":
            out.append("<br>")
        elif char in _ESCAPED:
            out.append(_ESCAPED[char])
        elif ord(char) < 32 or 0x7F <= ord(char) < 0xA0 or char in "\u2028\u2029":
            out.append(" ")
        else:
            out.append(char)
    return "".join(out)


@dataclass(frozen=True)
class Node:
    """One thing in the picture.

    ``path`` is the node's stable path in the flow: the action name, then per level a sequencer
    step (``then[2]``, ``parallel[3]``) or a block name (``chat/then[2]/mode-router/agent``),
    the same scheme as trace spans. Declared state fields and resources have paths like
    ``$session.state.mode`` / ``$session.resources.plan`` (never a block path: those start with an
    action name, and ``$`` cannot start one). ``also`` lists further paths the node stands for
    (a ``then`` step drawn together with its block). ``parent`` is the node it hangs under in
    the text tree.
    """

    path: str
    kind: str
    label: str
    group: str | None = None
    parent: str | None = None
    block: str | None = None
    also: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def paths(self) -> tuple[str, ...]:
        return (self.path, *self.also)


@dataclass(frozen=True)
class Edge:
    """``source`` -> ``target`` (node paths); ``kind`` one of :data:`ARROWS`."""

    source: str
    target: str
    kind: str = "next"
    label: str = ""


@dataclass
class FlowGraph:
    """A picture of a flow: nodes, edges, and the nodes a run went through (if any).

    ``mermaid()`` is the Mermaid source, ``text()`` a readable tree; in Jupyter it draws itself.
    ``ran`` / ``failed`` hold the paths of highlighted nodes (see ``RunResult.graph()``).
    """

    title: str
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    ran: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    subtitle: str = ""

    # -- building ------------------------------------------------------------------------------
    def add(self, node: Node) -> Node:
        """Add ``node`` (a node already there under that path is kept)."""
        return self.nodes.setdefault(node.path, node)

    def connect(self, source: str, target: str, kind: str = "next", label: str = "") -> None:
        edge = Edge(source, target, kind, label)
        if edge not in self._edge_set():
            self.edges.append(edge)

    def _edge_set(self) -> set[Edge]:
        return set(self.edges)

    # -- reading -------------------------------------------------------------------------------
    def node(self, path: str) -> Node:
        """The node drawn for ``path`` (its own path or one it stands for); KeyError if none."""
        found = self.nodes.get(path)
        if found is not None:
            return found
        for candidate in self.nodes.values():
            if path in candidate.also:
                return candidate
        raise KeyError(f"no node for path {path!r}")

    def declared_by(self, path: str) -> list[str]:
        """Paths of the nodes that declare the field or resource node ``path``."""
        return [e.source for e in self.edges if e.kind == "declares" and e.target == path]

    def highlighted(self, paths: Iterable[str], failed: Iterable[str] = (),
                    names: Iterable[str] = ()) -> FlowGraph:
        """A copy with the nodes standing for ``paths`` marked as run (``failed``: as failed).

        ``names`` are block names to mark where no path is known (runs without a trace): every
        node of a block of that name is marked.
        """
        index: dict[str, str] = {}
        by_name: dict[str, list[str]] = {}
        for node in self.nodes.values():
            for p in node.paths:
                index.setdefault(p, node.path)
            if node.block is not None:
                by_name.setdefault(node.block, []).append(node.path)
        ran: set[str] = set()
        for p in paths:
            if p in index:
                ran.add(index[p])
        for name in names:
            ran.update(by_name.get(name, ()))
        bad = {index[p] for p in failed if p in index}
        return FlowGraph(self.title, dict(self.nodes), list(self.edges), ran | bad, bad,
                         self.subtitle)

    # -- Mermaid -------------------------------------------------------------------------------
    def mermaid(self) -> str:
        """The Mermaid source of the picture (``flowchart TD``)."""
        ids = {path: f"n{i}" for i, path in enumerate(self.nodes)}
        lines = ["flowchart TD"]
        groups: dict[str | None, list[Node]] = {}
        for node in self.nodes.values():
            groups.setdefault(node.group, []).append(node)
        for number, (group, members) in enumerate(groups.items()):
            indent = "    "
            if group is not None:
                lines.append(f'    subgraph g{number} ["{mermaid_text(group)}"]')
                indent = "        "
            for node in members:
                opening, closing = SHAPES.get(node.kind, SHAPES["block"])
                lines.append(f"{indent}{ids[node.path]}{opening}"
                             f"{mermaid_text(node.label)}{closing}")
            if group is not None:
                lines.append("    end")
        for edge in self.edges:
            if edge.source not in ids or edge.target not in ids:
                continue
            arrow = ARROWS.get(edge.kind, "-->")
            label = f'|"{mermaid_text(edge.label)}"|' if edge.label else ""
            lines.append(f"    {ids[edge.source]} {arrow}{label} {ids[edge.target]}")
        lines += [f"    {c}" for c in _CLASS_DEFS]
        decl = [ids[p] for p, n in self.nodes.items() if n.kind in ("field", "resource")]
        for name, paths in (("decl", decl),
                            ("ran", [ids[p] for p in self.nodes if p in self.ran - self.failed]),
                            ("failed", [ids[p] for p in self.nodes if p in self.failed])):
            if paths:
                lines.append(f"    class {','.join(paths)} {name}")
        return "\n".join(lines) + "\n"

    # -- text ------------------------------------------------------------------------------------
    def text(self) -> str:
        """A readable tree: the flow's blocks and steps, then the state and resources declared,
        with the blocks declaring each (shared ones marked). ``*`` marks what a run went
        through, ``!`` what failed."""
        children: dict[str | None, list[Node]] = {}
        for node in self.nodes.values():
            if node.kind not in ("field", "resource"):
                children.setdefault(node.parent, []).append(node)
        declares: dict[str, list[str]] = {}
        for edge in self.edges:
            if edge.kind == "declares" and edge.target in self.nodes:
                declares.setdefault(edge.source, []).append(self.nodes[edge.target].label)
        lines = [self.title + (f" ({self.subtitle})" if self.subtitle else "")]

        def mark(node: Node) -> str:
            if node.path in self.failed:
                return "! "
            return "* " if node.path in self.ran else "  "

        def show(node: Node, depth: int) -> None:
            extra = f"  [{', '.join(_short(d) for d in declares[node.path])}]" \
                if node.path in declares else ""
            lines.append(f"{mark(node)}{'  ' * depth}{node.label}{extra}")
            for child in children.get(node.path, []):
                show(child, depth + 1)

        for root in children.get(None, []):
            show(root, 0)
        shared = [n for n in self.nodes.values() if n.kind in ("field", "resource")]
        if shared:
            lines.append("declared state and resources (shared: declared in several places):")
            for node in shared:
                owners = list(dict.fromkeys(self.nodes[s].block or self.nodes[s].label
                                            for s in self.declared_by(node.path)))
                flag = " (shared)" if len(owners) > 1 else ""
                lines.append(f"    {node.label}{flag} <- {', '.join(owners)}")
        return "\n".join(lines)

    # -- display ---------------------------------------------------------------------------------
    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/vnd.mermaid": self.mermaid(), "text/plain": self.text()}

    def __repr__(self) -> str:
        return self.text()


def _short(label: str) -> str:
    """A declaration's label without its type: ``session.mode: int`` -> ``session.mode``."""
    return label.split(":", 1)[0]
