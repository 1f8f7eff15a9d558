"""History's 'from' and 'to' lists: a dropdown that says which version was chosen.

ipywidgets' ``Dropdown`` sends the position (``index``) a person chose, and the kernel reads it
against its own list of options. History's list gains a version at the top with every write
(this kernel's, or another process's a moment later), so a choice made in the list the browser
drew before that write arrives after it and lands one row off: "v3" chosen, v4 restored. Here
the browser sends the version itself, as a message (``{"choose": 3}``), and the kernel takes it
as given. Messages are not held back the way ipywidgets holds a state update while an earlier
one is unanswered, so a click on Restore right after a choice reaches the kernel after it.
It looks like the ``Dropdown`` it replaces (same classes) and keeps its Python side:
``options`` (``(label, version)`` pairs), ``value``, ``observe(..., "value")``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import anywidget
import traitlets as t

from ._assets import esm


class _VersionSelect(anywidget.AnyWidget):
    """A list of versions, newest first; ``value`` is the chosen version (``None``: none)."""

    _esm = esm("versionselect.js")
    options = t.List(t.Tuple(t.Unicode(), t.Int())).tag(sync=True)  # (label, version) pairs
    value = t.Int(None, allow_none=True).tag(sync=True)
    description = t.Unicode("").tag(sync=True)
    width = t.Unicode("22em").tag(sync=True)
    description_width = t.Unicode("3em").tag(sync=True)

    def __init__(self, *, lock: Any = None, **kwargs: Any) -> None:
        """``lock``: held while a choice is applied (the owner's, held while it rewrites the
        list, so a choice is not overwritten by an update that read the old one)."""
        super().__init__(**kwargs)
        self._lock = lock if lock is not None else contextlib.nullcontext()
        self.on_msg(self._on_choice)

    def _on_choice(self, _widget: Any, content: Any, _buffers: Any) -> None:
        """``{"choose": version}`` from the browser: a version shown in its list, or null."""
        if not isinstance(content, dict) or "choose" not in content:
            return
        version = content["choose"]
        if version is None or (isinstance(version, int) and not isinstance(version, bool)):
            with self._lock:
                self.value = version
