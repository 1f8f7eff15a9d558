"""The picture of a flow ``flow.graph(action=None)`` and ``result.graph()``
(docs/guide.md, 'A picture of the flow').

:func:`flow_graph` walks a flow's actions into a :class:`~flowstate_jupyter.model.graph.FlowGraph`:
one node per block (per place it is used), sequencer steps chained in order, routers with their
routes, ``parallel`` / ``branch`` / ``rescue`` as a fork node with one edge per branch, case or
error class, ``for_each`` and the loops drawn on their block (a loop with an edge back to
itself). Every state field and resource a block declares is one node per scope and name, linked
from each block that declares it, so bubbling shows: a field two blocks share has two links.

**Node paths** are the stable span paths of traces, so a run's trace marks its nodes:

* an action's top block is the action name: ``chat``;
* a sequencer step is ``<sequencer path>/<kind>[<i>]`` with ``kind`` the method that added it
  (``then``, ``then_if``, ``map``, ``tap``, ``tap_if``, ``parallel``, ``for_each``, ``branch``,
  ``rescue``, ``do_while``, ``do_until``) and ``i`` its index among all the steps (from 0);
* a block inside a step is ``<step path>/<block name>`` (inside ``parallel``: the branch key);
* a route of a router is ``<router path>/<block name>``.

Where one step or router holds two blocks of the same name, the later ones get ``#<index>``
(``branch[3]/save#2``) so every path names one node. ``run_block`` runs draw from the block's
name instead of an action name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel

from ..handles.resources import CollectionDefinition
from ..model import schema
from ..model.graph import FlowGraph, Node
from .blocks import Block, Router
from .sequencer import (
    Sequencer,
    _Branch,
    _ForEach,
    _If,
    _Loop,
    _Map,
    _Parallel,
    _Rescue,
    _Step,
    _Then,
)

__all__ = ["block_graph", "flow_graph", "result_graph", "run_marks", "step_kind"]

_SCOPES = ("request", "session", "user", "project")


def step_kind(step: _Step) -> str:
    """The name of the sequencer method that added ``step`` (``then``, ``tap_if``, ...)."""
    if isinstance(step, _Then):
        return "then"
    if isinstance(step, _If):
        if not step.keep_value:
            return "then_if"
        return "tap" if step.cond is None else "tap_if"
    if isinstance(step, _Loop):
        return "do_until" if step.until else "do_while"
    for cls, kind in ((_Map, "map"), (_Parallel, "parallel"), (_ForEach, "for_each"),
                      (_Branch, "branch"), (_Rescue, "rescue")):
        if isinstance(step, cls):
            return kind
    return type(step).__name__.strip("_").lower()


def _segments(names: Iterable[str]) -> list[str]:
    """Path segments for sibling blocks: the name, ``name#i`` for a repeated one."""
    seen: set[str] = set()
    out = []
    for index, name in enumerate(names):
        out.append(name if name not in seen else f"{name}#{index}")
        seen.add(name)
    return out


class _Builder:
    """Walks blocks into a graph; see the module docstring for the paths it gives."""

    def __init__(self, flow: Any, graph: FlowGraph) -> None:
        self.flow = flow
        self.graph = graph
        self.flow_node = f"$flow {flow.kind}"

    # -- declarations ------------------------------------------------------------------------
    def _type(self, scope: str, name: str, model: type[BaseModel]) -> str:
        merged = self.flow.state_model(scope)
        summary = schema.field_summary(merged if merged is not None
                                       and name in merged.model_fields else model)
        return summary.get(name, "")

    def _field(self, owner: str, scope: str, model: type[BaseModel] | None,
               where: str | None = None) -> None:
        if model is None:
            return
        label_scope = where or scope
        for name in model.model_fields:
            if scope == "sequencer":
                kind = schema.field_summary(model).get(name, "")
            else:
                kind = self._type(scope, name, model)
            path = f"${label_scope}.state.{name}"
            self.graph.add(Node(path, "field", f"{label_scope}.{name}: {kind}",
                                group=f"{label_scope} state"))
            self.graph.connect(owner, path, "declares")

    def _resources(self, owner: str, scope: str, definitions: Mapping[str, Any]) -> None:
        for name, definition in definitions.items():
            path = f"${scope}.resources.{name}"
            self.graph.add(Node(path, "resource",
                                f"{scope}.resources.{name}: {_resource_text(definition)}",
                                group=f"{scope} resources"))
            self.graph.connect(owner, path, "declares")

    def declarations(self, owner: str, block: Block, seq_scope: str) -> None:
        for scope in _SCOPES:
            self._field(owner, scope, block.state.get(scope))
            self._resources(owner, scope, block.resources.get(scope) or {})
        self._field(owner, "sequencer", block.state.get("sequencer"), where=seq_scope)

    # -- blocks ---------------------------------------------------------------------------------
    def block(self, block: Block, path: str, *, parent: str | None, group: str,
              label: str | None = None, also: tuple[str, ...] = (),
              seq_scope: str = "sequencer") -> tuple[str, list[str]]:
        """Add ``block`` at ``path``; return ``(entry node, exit nodes)``."""
        self.graph.add(Node(path, block.kind, label or block.source, group=group,
                            parent=parent, block=block.name, also=also))
        self.declarations(path, block, seq_scope)
        if isinstance(block, Router):
            exits: list[str] = []
            for route, segment in zip(block.routes, _segments(b.name for b in block.routes)):
                entry, ends = self.block(route, f"{path}/{segment}", parent=path, group=group,
                                         seq_scope=seq_scope)
                self.graph.connect(path, entry, "child", "route")
                exits += ends
            return path, exits
        if isinstance(block, Sequencer):
            if block.instance_state is not None:
                seq_scope = f"sequencer {block.name}"
                self._field(path, "sequencer", block.instance_state, where=seq_scope)
            return path, self.steps(block, path, group, seq_scope)
        return path, [path]

    def steps(self, seq: Sequencer, path: str, group: str, seq_scope: str) -> list[str]:
        exits = [path]
        for index, step in enumerate(seq._steps):
            kind = step_kind(step)
            step_path = f"{path}/{kind}[{index}]"
            exits = self.step(step, kind, step_path, path, exits, group, seq_scope)
        return exits

    def step(self, step: _Step, kind: str, path: str, parent: str, before: list[str],
             group: str, seq_scope: str) -> list[str]:
        """Add one step after the nodes ``before``; return the step's exit nodes."""
        graph = self.graph
        blocks = step.blocks()
        if isinstance(step, (_Then, _If, _ForEach, _Loop)):
            inner = blocks[0]
            entry, exits = self.block(inner, f"{path}/{inner.name}", parent=parent, group=group,
                                      label=f"{step.label} · {inner.source}", also=(path,),
                                      seq_scope=seq_scope)
            for node in before:
                graph.connect(node, entry)
            if isinstance(step, _Loop):
                cond = f"{'until' if step.until else 'while'} {step.cond.name}"
                for node in exits:
                    graph.connect(node, entry, "loop", cond)
            return exits
        graph.add(Node(path, kind, step.label, group=group, parent=parent))
        if isinstance(step, _Rescue):
            for node in before:
                graph.connect(node, path, "error", "error")
            exits = list(before)
            cases = [(_exc_names(classes), block) for classes, block in step.cases]
        else:
            for node in before:
                graph.connect(node, path)
            if isinstance(step, _Parallel):
                cases = list(step.branches.items())
            elif isinstance(step, _Branch):
                cases = [("else" if cond is None else cond.name, block)
                         for cond, block in step.cases]
            else:  # map, or a step kind this picture does not know: one node
                return [path]
            exits = [] if isinstance(step, _Parallel) or any(
                cond is None for cond, _ in getattr(step, "cases", [])) else [path]
        names = [label if isinstance(step, _Parallel) else block.name for label, block in cases]
        for (label, block), segment in zip(cases, _segments(names)):
            entry, ends = self.block(block, f"{path}/{segment}", parent=path, group=group,
                                     seq_scope=seq_scope)
            graph.connect(path, entry, "child", label)
            exits += ends
        return exits

    def action(self, name: str, block: Block, input_model: type[BaseModel] | None) -> None:
        label = f"action {name} · {block.source}"
        if input_model is not None:
            label += f" (input {input_model.__name__})"
        entry, _ = self.block(block, name, parent=self.flow_node, group=f"action {name}",
                              label=label)
        self.graph.connect(self.flow_node, entry, "child")

    def flow_declarations(self) -> None:
        scopes = getattr(self.flow, "scopes", {})
        for scope in _SCOPES:
            config = scopes.get(scope)
            if config is None:
                continue
            self._field(self.flow_node, scope, config.state)
            self._resources(self.flow_node, scope, config.resources)


def _exc_names(classes: Any) -> str:
    if isinstance(classes, tuple):
        return " | ".join(c.__name__ for c in classes)
    return classes.__name__


def _resource_text(definition: Any) -> str:
    state = definition.state.__name__ if definition.state is not None else "free-form"
    if isinstance(definition, CollectionDefinition):
        return f"collection {definition.pattern} of {state}"
    return state + ("" if definition.writable else " (read-only)")


def flow_graph(flow: Any, action: str | None = None) -> FlowGraph:
    """The picture of ``flow``: every action, or only ``action``."""
    if action is not None:
        flow._action(action)  # an unknown action raises UnknownActionError, naming the actions
    names = list(flow.actions) if action is None else [action]
    graph = FlowGraph(f"flow {flow.kind}", subtitle=flow.path)
    builder = _Builder(flow, graph)
    graph.add(Node(builder.flow_node, "flow", f"flow {flow.kind}"))
    builder.flow_declarations()
    for name in names:
        act = flow.actions[name]
        builder.action(name, act.block, act.input_model)
    return graph


def block_graph(flow: Any, block: Block) -> FlowGraph:
    """The picture of one block run on its own (``run_block``): its name is the root path."""
    graph = FlowGraph(f"flow {flow.kind}", subtitle=f"block {block.name}")
    builder = _Builder(flow, graph)
    graph.add(Node(builder.flow_node, "flow", f"flow {flow.kind}"))
    entry, _ = builder.block(block, block.name, parent=builder.flow_node,
                             group=f"block {block.name}")
    graph.connect(builder.flow_node, entry, "child")
    return graph


def run_marks(result: Any, known: set[str]) -> tuple[set[str], set[str], set[str]]:
    """``(paths, failed paths, block names)`` to mark for a run, in a picture of ``known`` paths.

    From ``result.trace.spans`` (each with ``.path``, ``.block``, ``.status``) when the run has a
    trace: the spans' paths, and for a span whose path the picture does not have, its block
    name. Without a trace: the block names the run's events carry (``block``, and a progress
    event's ``data.block``), which mark every node of a block of that name.
    """
    spans = list(getattr(getattr(result, "trace", None), "spans", None) or ())
    if spans:
        paths = {s.path for s in spans if getattr(s, "path", None) in known}
        failed = {s.path for s in spans
                  if s.path in paths and getattr(s, "status", None) == "error"}
        names = {s.block for s in spans if getattr(s, "path", None) not in known
                 and isinstance(getattr(s, "block", None), str)}
        return paths, failed, names
    names = set()
    for event in getattr(result, "events", ()) or ():
        if not isinstance(event, dict):
            continue
        data = event.get("data")
        for name in (event.get("block"),
                     data.get("block") if event.get("type") == "progress"
                     and isinstance(data, dict) else None):
            if isinstance(name, str):
                names.add(name)
    return set(), set(), names


def result_graph(flow: Any, result: Any) -> FlowGraph:
    """The picture of the run's action (or block) with the path the run took marked."""
    action = getattr(result, "action", None)
    if action is not None and action in flow.actions:
        graph = flow_graph(flow, action)
    else:
        name = next((e.get("block") for e in result.events
                     if isinstance(e, dict) and e.get("type") == "request"), None)
        block = next((b for b in flow.blocks() if b.name == name), None)
        graph = block_graph(flow, block) if block is not None else flow_graph(flow)
    known = {p for node in graph.nodes.values() for p in node.paths}
    marked = graph.highlighted(*run_marks(result, known))
    marked.subtitle = f"run {result.request_id} · {getattr(result, 'status', '')}"
    return marked
