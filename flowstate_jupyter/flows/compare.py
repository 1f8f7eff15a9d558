"""Comparing two sessions: ``fs.compare(a, b)`` (docs/guide.md, 'Fork and compare sessions').

What is compared, each as a list of :class:`~flowstate_jupyter.model.diff.FieldChange` (``path``,
``old`` = a's value, ``new`` = b's; ``MISSING`` when absent), empty when equal:

* ``state``: the session state (``session.state_dict()``); paths are field paths
  (``("mode",)``, ``("notes", 2)``).
* ``resources``: every session resource either session's flow defines, as stored: a resource
  is ``{"state": ..., "content": ...}`` (``content`` only when there is some; absent when it
  was never written), a collection ``{key: {"state": ..., "content": ...}}``. Paths start with
  the resource name: ``("plan", "state", "steps")``, ``("plan", "content")``,
  ``("files", "docs/a.md", "state", "size")``.
* ``client_data``: the client view (``session.snapshot()``) flattened as ``%state client`` shows
  it: paths start with ``"session.mode"`` or ``"session.resources.plan"``. It covers the user
  and project scopes too, so two sessions of different users can differ there.

Sessions are read once, when ``compare`` is called; the result is a snapshot of the difference.
It shows itself side by side (HTML in Jupyter, with the differing rows marked; text elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..handles.resources import CollectionHandle
from ..model.diff import MISSING, FieldChange, diff, format_diff
from ..model.display import flatten_client_view, scope_handles
from ..model.sidebyside import Row, Section, side_by_side_html, side_by_side_text

__all__ = ["Comparison", "compare"]

_SECTIONS = (("state", "state"), ("resources", "resources"), ("client_data", "client data"))


def _resource_view(res: Any) -> Any:
    """One resource as compared: ``{"state", "content"?}``, or MISSING when never written."""
    if not res.exists:
        return MISSING
    view: dict[str, Any] = {"state": res.state_dict()}
    content = res.read_content_raw()
    if content is not None:
        view["content"] = content
    return view


def _resources_view(handle: Any) -> dict[str, Any]:
    views: dict[str, Any] = {}
    for name in handle.resources:
        res = handle.resources[name]
        if isinstance(res, CollectionHandle):
            # _handle, not get: get counts as a use for LRU eviction, and comparing is no use
            views[name] = {key: _resource_view(res._handle(key)) for key in res.list()}
        else:
            view = _resource_view(res)
            if view is not MISSING:
                views[name] = view
    return views


def _view(session: Any) -> dict[str, Any]:
    handle = scope_handles(session)["session"]
    return {"state": handle.state_dict(), "resources": _resources_view(handle),
            "client_data": flatten_client_view(session.snapshot()),
            "collections": {name for name in handle.resources
                            if isinstance(handle.resources[name], CollectionHandle)}}


@dataclass(frozen=True)
class Comparison:
    """The differences between two sessions (see the module docstring).

    ``a`` / ``b`` are the session ids, ``versions`` their state versions when compared.
    ``bool(comparison)`` is true when they differ anywhere.
    """

    a: str
    b: str
    versions: tuple[int, int]
    state: list[FieldChange]
    resources: list[FieldChange]
    client_data: list[FieldChange]
    _views: tuple[dict[str, Any], dict[str, Any]] = field(repr=False, compare=False)

    @property
    def equal(self) -> bool:
        return not (self.state or self.resources or self.client_data)

    def __bool__(self) -> bool:
        return not self.equal

    def _rows(self, section: str) -> list[Row]:
        left, right = self._views[0][section], self._views[1][section]
        changed = {c.path[0] for c in getattr(self, section) if c.path}
        rows = []
        collections = self._views[0]["collections"] | self._views[1]["collections"]
        for key in list(left) + [k for k in right if k not in left]:
            if section == "resources" and key in collections:
                rows += self._collection_rows(key, left.get(key, {}), right.get(key, {}))
                continue
            rows.append(Row(str(key), left.get(key, MISSING), right.get(key, MISSING),
                            key in changed))
        return rows

    def _collection_rows(self, name: str, left: dict, right: dict) -> list[Row]:
        changed = {c.path[1] for c in self.resources if len(c.path) > 1 and c.path[0] == name}
        whole = any(c.path == (name,) for c in self.resources)
        return [Row(f"{name}[{key!r}]", left.get(key, MISSING), right.get(key, MISSING),
                    whole or key in changed)
                for key in list(left) + [k for k in right if k not in left]]

    def _sections(self) -> list[Section]:
        out = []
        for attr, title in _SECTIONS:
            changes = getattr(self, attr)
            summary = "equal" if not changes else \
                f"{len(changes)} difference{'s' if len(changes) != 1 else ''}"
            out.append(Section(title, self._rows(attr), summary))
        return out

    def _columns(self) -> tuple[str, str]:
        return f"{self.a} (v{self.versions[0]})", f"{self.b} (v{self.versions[1]})"

    def _title(self) -> str:
        left, right = self._columns()
        return f"compare session {left} with {right}"

    def _repr_html_(self) -> str:
        subtitle = "equal" if self.equal else "differing fields marked ≠"
        return side_by_side_html(self._title(), *self._columns(), self._sections(), subtitle)

    def text(self) -> str:
        """Side by side as text, then every field change (``~ path: a -> b``)."""
        lines = [side_by_side_text(self._title(), *self._columns(), self._sections())]
        for attr, title in _SECTIONS:
            changes = getattr(self, attr)
            if changes:
                lines.append(f"{title} changes (a -> b):")
                lines += ["  " + line for line in format_diff(changes).splitlines()]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.text()


def compare(a: Any, b: Any) -> Comparison:
    """Compare sessions ``a`` and ``b`` (from ``flow.session(...)``) in state, resources and
    client data; see :class:`Comparison`. The sessions may belong to different users or flows.
    """
    handles = [scope_handles(s)["session"] for s in (a, b)]
    views = (_view(a), _view(b))
    changes = {attr: diff(views[0][attr], views[1][attr]) for attr, _ in _SECTIONS}
    return Comparison(handles[0].id, handles[1].id, (handles[0].version, handles[1].version),
                      changes["state"], changes["resources"], changes["client_data"], views)
