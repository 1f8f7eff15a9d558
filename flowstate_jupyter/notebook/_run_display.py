"""What ``%flow run`` and ``%flow resume`` show: the run's progress while it runs, then its
summary (output or error, the client data that changed, events) in the same output."""

from __future__ import annotations

from typing import Any

from IPython.display import display

from ..model import html as h
from ..model.display import (
    command_hint,
    event_label,
    flatten_client_view,
    progress_html,
    progress_text,
    run_html,
)
from ._progress import Progress


def flat_client(session: Any) -> dict:
    """A session's client data, flattened to paths (``{}`` if its functions fail)."""
    try:
        return flatten_client_view(session.snapshot())
    except Exception:  # noqa: BLE001 - a broken client-data function shows in the preview
        return {}


def changed_client(before: dict, after: dict) -> dict:
    """The flattened client data that is new or different in ``after``."""
    return {k: v for k, v in after.items() if before.get(k, object()) != v}


class RunDisplay:
    """What ``%flow run`` shows while the run runs and after: one output, updated in place.

    In a kernel, a run that lasts longer than about a second shows its progress (elapsed time,
    steps done, events, the block running now) in an output with a display id; the summary
    replaces it when the run ends. Elsewhere (a terminal) only the summary is shown.
    """

    def __init__(self, action: str) -> None:
        from ._show import in_kernel
        self._handle: Any = None
        self._kernel = in_kernel()
        self.progress = Progress(action, self._show)

    def _show(self, progress: dict) -> None:
        if not self._kernel:
            return
        bundle = {"text/html": progress_html(progress), "text/plain": progress_text(progress)}
        if self._handle is None:
            self._handle = display(bundle, raw=True, display_id=True)
        else:
            self._handle.update(bundle, raw=True)

    def done(self, summary: Any) -> None:
        if self._handle is not None:
            self._handle.update(summary)
        else:
            display(summary)


class RunSummary:
    """What ``%flow run`` shows: output or error, the client data that changed, and events."""

    def __init__(self, result: Any, changed: dict) -> None:
        self.result, self.changed = result, changed

    def _repr_html_(self) -> str:
        r = self.result
        hint = ""
        if r.error is not None and r.trace is not None:
            hint = command_hint("where it failed, block by block:", f"%flow trace {r.request_id}")
        return run_html(r, self.changed, hint=hint)

    def __repr__(self) -> str:
        r = self.result
        suspension = getattr(r, "suspension", None)
        if r.error is not None:
            head = f"error: {type(r.error).__name__}: {r.error}"
            if r.trace is not None:
                head += f"\nwhere it failed, block by block: %flow trace {r.request_id}"
        elif suspension is not None:
            head = (f"suspended: {suspension.message or suspension.path}; resume with "
                    f"%flow resume {r.request_id} VALUE_JSON (fields: "
                    f"{', '.join(suspension.schema.get('properties', {})) or 'none'})")
        else:
            out = r.output.model_dump(mode="json") if hasattr(r.output, "model_dump") else r.output
            head = f"output: {h.preview(out, 500)}"
        events = [event_label(e) for e in r.events[:50]]
        changed = [f"{k} = {h.preview(v, 200)}" for k, v in self.changed.items()]
        return "\n".join([head, f"events ({len(r.events)}):", *events,
                          "client data changed:", *(changed or ["(none)"])])
