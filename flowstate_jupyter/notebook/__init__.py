"""The notebook layer: magics, live widgets and rich display (the only part that uses IPython).

``%load_ext flowstate_jupyter`` opens the default store (``FLOWSTATE_STORE`` or
``.flowstate/flowstate.db`` under the notebook's folder), sets the user (``FLOWSTATE_USER`` or the
OS user), this notebook's session and project ``default``, and registers ``%state``, ``%flow``
and ``%%flow``. ``%unload_ext flowstate_jupyter`` closes the store; loading again finds the same
state, because the store is the source of truth. Every cell the kernel runs may redefine code,
so each starts a new fingerprint generation (``flows/fingerprint.py``): the next run records its
blocks' fingerprints afresh, which is what a replay compares.
"""

from __future__ import annotations

from typing import Any

from ..flows.fingerprint import new_generation
from .kernel import KernelState
from .resume import ResumeForm
from .traceview import TraceView
from .widgets import ClientDataPreview, FlowRunner, History, Inspector, JsonView

_loaded: dict[int, KernelState] = {}
_remembered: dict[int, dict] = {}  # what an unloaded extension was looking at, per shell


def load_ipython_extension(ipython: Any) -> None:
    from .magics import FlowStateMagics
    if id(ipython) in _loaded:
        return
    kernel = KernelState()
    # Flows are code, not data: keep the registry (and the session you were on) across
    # %unload_ext / %load_ext in one kernel. The state itself is always re-read from the store.
    kernel.__dict__.update(_remembered.pop(id(ipython), {}))
    _loaded[id(ipython)] = kernel
    ipython.register_magics(FlowStateMagics(ipython, kernel))
    ipython.events.register("pre_run_cell", _code_may_change)


def _code_may_change(info: Any = None) -> None:
    """Before each cell: blocks' code may change in it, so their fingerprints are recomputed."""
    new_generation()


def unload_ipython_extension(ipython: Any) -> None:
    kernel = _loaded.pop(id(ipython), None)
    try:
        ipython.events.unregister("pre_run_cell", _code_may_change)
    except ValueError:  # not registered (the extension was not loaded in this shell)
        pass
    if kernel is not None:
        _remembered[id(ipython)] = {k: getattr(kernel, k) for k in
                                    ("flows", "current_flow", "session_id", "user", "project")}
        kernel.close()
    magics = ipython.magics_manager.registry.pop("FlowStateMagics", None)
    if magics is not None:
        for kind in ("line", "cell"):
            table = ipython.magics_manager.magics[kind]
            for name in ("state", "flow"):
                table.pop(name, None)


def kernel_state(ipython: Any = None) -> KernelState:
    """The extension's state for this kernel (``LookupError`` if the extension is not loaded)."""
    if ipython is None:
        from IPython import get_ipython
        ipython = get_ipython()
    try:
        return _loaded[id(ipython)]
    except KeyError:
        raise LookupError("the flowstate extension is not loaded: %load_ext flowstate_jupyter") \
            from None


__all__ = [
    "ClientDataPreview",
    "FlowRunner",
    "History",
    "Inspector",
    "JsonView",
    "KernelState",
    "ResumeForm",
    "TraceView",
    "kernel_state",
    "load_ipython_extension",
    "unload_ipython_extension",
]


def current_session(ipython: Any = None) -> Any:
    """This notebook's session of the current flow (what ``%state`` shows), as a handle."""
    return kernel_state(ipython).session()


__all__.append("current_session")
