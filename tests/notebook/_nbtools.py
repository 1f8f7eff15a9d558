"""Helpers shared by the notebook tests (imported by name; fixtures live in conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _helpers import fingerprint

__all__ = ["GUIDE_CELL", "TESTS_DIR", "click_in_browser", "fingerprint", "typed_in_browser",
           "wait_for"]

#: The folder of ``guide_flow.py``, for kernels and child processes that import it.
TESTS_DIR = Path(__file__).resolve().parent.parent

GUIDE_CELL = f"""
import sys
sys.path.insert(0, {str(TESTS_DIR)!r})  # in the kernel
from guide_flow import make_flow
make_flow()
"""
"""The body of a ``%%flow`` cell that defines the guide flow."""


def wait_for(predicate: Callable[[], Any], timeout: float = 2.0, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it is truthy; return its last value (falsy on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def typed_in_browser(control: Any, **state: Any) -> None:
    """What the browser sends when a person changes a control: a state update (ipywidgets sends
    one at a time per control; while one is unanswered, later changes wait in the browser)."""
    control._handle_msg({"content": {"data": {"method": "update", "state": state,
                                              "buffer_paths": []}}, "buffers": []})


def click_in_browser(button: Any, controls: list[Any], shown: dict[Any, Any] | None = None
                     ) -> Callable[[], None]:
    """The click on a form's button as the browser sends it, made now (the form as drawn now)
    and returned to be delivered later: it carries what each control the button lists holds in
    the browser, ``shown[control]`` or else the value the kernel has. ``controls``: the form's
    controls, to find them by model id."""
    shown = {c.model_id: v for c, v in (shown or {}).items()}
    known = {c.model_id: c for c in controls}
    form = [[model_id, key, shown[model_id] if model_id in shown
             else known[model_id].get_state(key)[key]]
            for model_id, key in getattr(button, "controls", ())]
    message = {"content": {"data": {"method": "custom",
                                    "content": {"event": "click", "form": form}}},
               "buffers": []}
    return lambda: button._handle_msg(message)
