"""The base classes of the live views: a store subscription, snapshots, display as both.

``_Live`` is what every view has (Inspector, ClientDataPreview, History, TraceView, ...):
``refresh()`` runs soon after each change it wants (``_live.py``), and the view shows as a
snapshot plus the live view (``_show.py``). ``_View`` is an anywidget view with the shared
style sheet and the traits every view's header reads.
"""

from __future__ import annotations

from typing import Any

import anywidget
import traitlets as t

from ._assets import css
from ._live import Live
from ._show import Snapshots, show


class _Live:
    """What every live view has: a store subscription, snapshots, and display as both."""

    _live: Live | None = None
    snapshots: Snapshots
    panel: Any = None  # the side panel the view is shown in, if any

    def _listen(self, store: Any, wants: Any) -> None:
        self._live = Live(store, wants, self.refresh)

    def refresh(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _ipython_display_(self) -> None:
        show(self)

    def show(self, *, side: bool = False, title: str | None = None) -> None:
        """Display the view here, or (``side=True``) in a JupyterLab side panel."""
        show(self, side=side, title=title)

    def _stop(self) -> None:
        if self._live is not None:
            self._live.close()
        snapshots = getattr(self, "snapshots", None)  # None: refused before it was built
        if snapshots is not None:
            snapshots.close()



class _View(_Live, anywidget.AnyWidget):
    """An anywidget live view with the shared style sheet."""

    _css = css()
    changed_at = t.Float(0.0).tag(sync=True)
    live = t.Bool(True).tag(sync=True)
    title = t.Unicode("").tag(sync=True)

    def close(self) -> None:
        self._stop()
        super().close()
