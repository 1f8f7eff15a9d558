"""The package's folders are its layers: every import points downwards, and nothing is circular.

Every module is parsed with ``ast``; imports inside functions and under ``TYPE_CHECKING`` count
as much as top-level ones, since they hold the same knowledge of the module they name. See
docs/architecture.md for the layers and why they are in this order.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "flowstate_jupyter"
TOP = "flowstate_jupyter"

#: Layers from the bottom up. A module may import from its own layer and every layer below.
#: Folders on one line are siblings: neither imports the other.
LAYERS: list[tuple[str, ...]] = [
    ("errors",),
    ("base",),
    ("stores", "model"),
    ("handles",),
    ("flows",),
    ("windmill",),
    ("notebook", "cli", "serve"),
]


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


#: Upward imports allowed inside a function only, each starting an optional part that sits
#: above: ``Flow.asgi_app`` and the commands that start a server import the face of ``serve``
#: when called (it needs the ``serve`` extra). They are run-time calls into a layer above, not
#: knowledge the module needs to load, so they do not count as upward imports; they do count in
#: circles (``serve/`` names the flow it serves by a Protocol, not by importing ``flows/flow.py``).
LAZY_UPWARD = {
    ("flowstate_jupyter.flows.flow", "flowstate_jupyter.serve"),
    ("flowstate_jupyter.cli", "flowstate_jupyter.serve"),
    ("flowstate_jupyter.notebook.serving", "flowstate_jupyter.serve"),
}


def _function_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes inside function bodies."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            inside.update(id(n) for n in ast.walk(node) if n is not node)
    return inside


def _imports(module: str, lazy: bool | None = None) -> set[str]:
    """Package modules ``module`` imports, as resolved module names: anywhere in its text
    (``lazy=None``), only inside functions (``True``) or only outside them (``False``)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    inside = _function_nodes(tree) if lazy is not None else set()
    for node in ast.walk(tree):
        if lazy is not None and (id(node) in inside) != lazy:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            if name == TOP or not name.startswith(TOP + "."):
                continue
            resolved = _resolve(name)
            if resolved and resolved != module and resolved != TOP:
                targets.add(resolved)
    return targets


def _layer(module: str) -> tuple[int, str]:
    """(layer index, folder) of a module below the face."""
    folder = module.split(".")[1]
    for index, names in enumerate(LAYERS):
        if folder in names:
            return index, folder
    raise AssertionError(f"{module}: folder {folder!r} is in no layer; add it to LAYERS "
                         f"and to docs/architecture.md")


ALL_EDGES = {module: _imports(module) for module in MODULES}
#: Imports that hold: everything but the allowed lazy upward ones.
EDGES = {module: {t for t in targets if (module, t) not in LAZY_UPWARD}
         for module, targets in ALL_EDGES.items()}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != TOP))
def test_every_import_points_to_the_same_layer_or_below(module: str) -> None:
    level, folder = _layer(module)
    upward = []
    for target in sorted(EDGES[module]):
        target_level, target_folder = _layer(target)
        if target_level > level or (target_level == level and target_folder != folder):
            upward.append(target)
    assert not upward, f"{module} imports {', '.join(upward)}, which sit above or beside it"


def test_the_allowed_upward_imports_sit_inside_functions_only() -> None:
    misplaced = [f"{module} -> {target}" for module, target in sorted(LAZY_UPWARD)
                 if module in MODULES and target in _imports(module, lazy=False)]
    assert not misplaced, ("upward imports allowed only inside the function that needs them: "
                           + "; ".join(misplaced))


def test_no_module_sits_in_an_import_circle() -> None:
    def reach(start: str) -> set[str]:
        seen: set[str] = set()
        todo = [start]
        while todo:
            for nxt in ALL_EDGES[todo.pop()]:  # lazy and TYPE_CHECKING imports included
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    circular = sorted(m for m in MODULES if m in reach(m))
    assert not circular, f"modules in an import circle: {', '.join(circular)}"


def test_only_the_notebook_layer_imports_ipython_or_ipywidgets() -> None:
    offenders = []
    for module, path in MODULES.items():
        if module.split(".")[1:2] == ["notebook"] or module == TOP:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            offenders += [f"{module}: {n}" for n in names
                          if n.split(".")[0] in ("IPython", "ipywidgets", "anywidget", "traitlets")]
    assert not offenders, "IPython/widgets outside notebook/: " + "; ".join(offenders)


def test_stores_know_nothing_of_pydantic() -> None:
    offenders = []
    for module, path in MODULES.items():
        if module.split(".")[1:2] not in (["stores"], ["base"], ["errors"]):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            offenders += [f"{module}: {n}" for n in names if n.split(".")[0].startswith("pydantic")]
    assert not offenders, "pydantic below the handles: " + "; ".join(offenders)
