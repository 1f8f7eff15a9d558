"""Helpers shared by the notebook tests (imported by name; fixtures live in conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _helpers import fingerprint

__all__ = ["GUIDE_CELL", "TESTS_DIR", "fingerprint", "wait_for"]

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
