"""``%%flow NAME``: a cell that defines a flow in Python, and the flow it defined.

The cell runs in the notebook's namespace. Its flow is the value of the last expression, else
the one flow the cell bound to a name (a new name, or a name now bound to another flow).
"""

from __future__ import annotations

import ast
from typing import Any

from IPython.core.error import UsageError


def flow_of_cell(ns: dict, cell: str, name: str) -> Any:
    """Run ``cell`` in ``ns`` and return the flow it defined; a ``UsageError`` if it defined
    none, or several without ending in the one meant."""
    from ..flows.flow import Flow
    before = {k: v for k, v in ns.items() if isinstance(v, Flow)}
    tree = ast.parse(cell)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body[-1].value)
        tree.body.pop()
    exec(compile(tree, "<%%flow>", "exec"), ns)
    value = eval(compile(last, "<%%flow>", "eval"), ns) if last is not None else None
    if isinstance(value, Flow):
        return value
    new = {k: v for k, v in ns.items() if isinstance(v, Flow) and before.get(k) is not v}
    if len(new) > 1:
        raise UsageError(f"the cell defined several flows ({', '.join(sorted(new))}); "
                         f"end it with the one to register as {name}")
    if not new:
        raise UsageError("the cell defined no flow; end it with fs.define_flow(...)")
    return next(iter(new.values()))
