"""How a view shows in a notebook: a snapshot that survives, then the live view.

ipywidgets keep a view's model in the kernel, so after a kernel restart, or in a notebook
reopened without its kernel (or on a static viewer), a widget output reads "Error displaying
widget: model not found" (jupyter-widgets/ipywidgets#3773). JupyterLab does not fall back to
another MIME type of the same output when the model is gone, so a view here is shown as **two
outputs**:

1. the **snapshot**: ``text/html`` (and ``text/plain``) of what the view shows, in an output with
   a display id, re-sent (``update_display``) at most once a second while the view changes, so
   the saved notebook holds the last state; it is bounded to ``SNAPSHOT_CHARS``;
2. the **live view**: the widget itself.

The theme CSS (``model/html.py``) hides the snapshot while the live view right after it is
drawn, and hides the widget output while it is not (an error or "Loading widget..."), so a
person sees exactly one of them. A static viewer shows the snapshot. With ``side=True`` the live
view opens in a JupyterLab side panel (the ``sidecar`` package) and the cell keeps the snapshot,
folded, under a line that says where the view is.

Outside a kernel (a terminal IPython) a view prints its text form.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ..model import html as h

SNAPSHOT_CHARS = 40_000
"""Largest snapshot kept in a notebook; a larger one is replaced by the view's text form."""

SNAPSHOT_INTERVAL = 1.0
"""Seconds between two snapshot updates of one view (the last change always gets sent)."""

SNAPSHOT_DELAY = 0.4
"""Seconds a snapshot update waits after a change at least."""

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

_PANELS: dict[str, Any] = {}  # side panels by title: opening one again replaces it


def in_kernel() -> bool:
    """True in a Jupyter kernel (where widgets can show), False in a terminal IPython."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class Snapshots:
    """The snapshot outputs of one view, updated at most every ``SNAPSHOT_INTERVAL`` seconds.

    ``render`` returns the snapshot's HTML (without the wrapper) and ``text`` its text form;
    ``again`` says, under the snapshot, how to get the live view back.
    """

    def __init__(self, kind: str, render: Any, text: Any,
                 again: str = "run the cell again for the live view") -> None:
        self.kind = kind
        self.again = again  # how to get the live view back, said under the snapshot
        self._render = render
        self._text = text
        self._handles: list[tuple[Any, bool]] = []  # (DisplayHandle, side)
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._sent_at = 0.0
        self._closed = False
        self.sent = 0  # snapshot updates sent so far

    def bundle(self, side: bool = False, where: str = "") -> dict[str, str]:
        """The snapshot's MIME bundle (``text/html``, ``text/plain``)."""
        body = self._render().replace(h.STYLE, "")  # the sheet goes in once, below
        taken = h.when(time.time())
        if len(body) > SNAPSHOT_CHARS:
            body = f'<pre class="fs-pre">{h.esc(h.cut(self._text(), SNAPSHOT_CHARS // 2))}</pre>'
        note = (f'<div class="fs-sub fs-snapshot-note">snapshot of the live {h.esc(self.kind)} '
                f'taken {h.esc(taken)}; {h.esc(self.again)}</div>')
        if side:
            html = (f'{h.STYLE}<details class="fs-side-snapshot" data-fs-view="{h.esc(self.kind)}">'
                    f'<summary class="fs-sub">{h.esc(self.kind)} is open in the side panel'
                    f'{" " + h.esc(where) if where else ""}; its last snapshot</summary>'
                    f'{body}{note}</details>')
        else:
            html = (f'{h.STYLE}<div class="fs-snapshot" data-fs-view="{h.esc(self.kind)}">'
                    f'{body}{note}</div>')
        return {"text/html": html, "text/plain": self._text()}

    def show(self, side: bool = False, where: str = "") -> None:
        from IPython.display import display
        handle = display(self.bundle(side, where), raw=True, display_id=True)
        with self._lock:
            self._handles.append((handle, side))
            self._sent_at = time.monotonic()

    def changed(self) -> None:
        """The view changed: send its snapshot soon (now, or when the interval has passed)."""
        with self._lock:
            if self._closed or not self._handles or self._timer is not None:
                return
            # never at once: the live view's own update goes first, undisturbed
            wait = max(SNAPSHOT_DELAY, SNAPSHOT_INTERVAL - (time.monotonic() - self._sent_at))
            self._timer = threading.Timer(wait, self._send)
            self._timer.daemon = True
            self._timer.start()

    def _send(self) -> None:
        with self._lock:
            self._timer = None
            handles = list(self._handles)
            self._sent_at = time.monotonic()
        if self._closed:
            return
        for handle, side in handles:
            handle.update(self.bundle(side), raw=True)
        self.sent += 1

    def close(self) -> None:
        self._closed = True
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None


def view_bundle(widget: Any) -> dict[str, Any]:
    """The widget's own output: the widget view, with an empty text form (the snapshot output
    before it carries the text)."""
    return {WIDGET_VIEW: {"version_major": 2, "version_minor": 1, "model_id": widget.model_id},
            "text/plain": ""}


def show(view: Any, *, side: bool = False, title: str | None = None) -> None:
    """Display ``view`` as snapshot + live view (see the module docstring)."""
    from IPython.display import display
    if not in_kernel():
        print(repr(view))
        return
    snapshots: Snapshots = view.snapshots
    if not side:
        snapshots.show()
        display(view_bundle(view), raw=True)
        return
    from sidecar import Sidecar
    title = title or snapshots.kind
    old = _PANELS.pop(title, None)
    if old is not None:
        old.close()
    panel = Sidecar(title=title, anchor="split-right")
    _PANELS[title] = panel
    with panel:
        display(view_bundle(view), raw=True)
    view.panel = panel
    snapshots.show(side=True, where=f"'{title}'")
