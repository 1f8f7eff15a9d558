"""Small helpers shared by test modules (importable because conftest puts tests/ on sys.path)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def python_env() -> dict[str, str]:
    """Environment for a ``sys.executable`` subprocess that imports this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def run_python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter; fail with its stderr if it fails."""
    result = subprocess.run([sys.executable, "-c", code, *args], env=python_env(), cwd=ROOT,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"subprocess failed:\n{result.stderr}"
    return result


def wait_for(predicate: Callable[[], object], timeout: float = 2.0,
             interval: float = 0.01) -> bool:
    """Poll ``predicate`` until it is truthy or ``timeout`` seconds pass; return the outcome."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def fingerprint(store: Any) -> dict:
    """Everything a write could change: every record (version, state, content, tombstone),
    each record's kept history (versions, times, operations, states) and the whole change log.

    Values are compared as they are read back (every write through a store also bumps the
    record's version and appends to the log, so a change is seen even where ``1 == True``).
    """
    records = sorted(store.list(include_deleted=True), key=lambda r: (r.scope, r.scope_id, r.name))
    return {
        "records": [(r.scope, r.scope_id, r.name, r.version, r.state, r.content, r.deleted)
                    for r in records],
        "history": [store.history(r.scope, r.scope_id, r.name) for r in records],
        "changes": store.changes(),
    }
