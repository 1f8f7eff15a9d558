"""Fixtures for the notebook layer: a fresh IPython shell with the extension's environment, a
SQLite store in ``tmp_path``, the guide flow, store fingerprints, and a ``python3`` kernel that
runs this virtualenv's Python (for the nbclient test).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _nbtools import GUIDE_CELL
from guide_flow import make_flow

import flowstate_jupyter as fs

# -- stores and flows ---------------------------------------------------------------------------

@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "flowstate.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Any]:
    """A SQLite store in tmp_path (closed after the test)."""
    s = fs.open_store(f"sqlite:///{db_path}")
    yield s
    s.close()


@pytest.fixture
def guide_flow() -> Any:
    return make_flow()


@pytest.fixture
def session(guide_flow: Any, store: Any) -> Any:
    """The guide flow's session ``s1`` of user ``alice``."""
    return guide_flow.session("s1", user="alice", store=store)


# -- widgets -----------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _close_widgets() -> Iterator[None]:
    """Close the widgets a test made (stops their store subscriptions) before stores close."""
    import ipywidgets as W
    before = set(W.widgets.widget._instances)
    yield
    _close_new_widgets(before)


def _close_new_widgets(before: set) -> None:
    import ipywidgets as W
    for key, widget in list(W.widgets.widget._instances.items()):
        if key not in before:
            try:
                widget.close()
            except Exception:
                pass


# -- an IPython shell with the extension's environment ------------------------------------------

@pytest.fixture
def shell_env(tmp_path: Path, db_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FLOWSTATE_STORE", f"sqlite:///{db_path}")
    monkeypatch.setenv("FLOWSTATE_USER", "alice")
    monkeypatch.setenv("FLOWSTATE_SESSION", "nb1")
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    for name in ("WM_STATE_PATH", "WM_STATE_PATH_NEW"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return db_path


@pytest.fixture
def ip(shell_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fresh ``InteractiveShell`` (no history database), not yet with the extension."""
    from IPython.core.history import HistoryAccessor
    from IPython.core.interactiveshell import InteractiveShell

    monkeypatch.setattr(HistoryAccessor, "enabled", False)
    InteractiveShell.clear_instance()
    shell = InteractiveShell.instance()
    try:
        yield shell
    finally:
        from flowstate_jupyter import notebook
        _close_new_widgets(set())
        try:
            notebook.kernel_state(shell)
        except LookupError:
            pass
        else:
            shell.run_line_magic("unload_ext", "flowstate_jupyter")
        notebook._remembered.pop(id(shell), None)
        InteractiveShell.clear_instance()


@pytest.fixture
def nb(ip: Any) -> Any:
    """The shell with ``%load_ext flowstate_jupyter`` and ``%%flow assistant`` (guide flow)."""
    ip.run_line_magic("load_ext", "flowstate_jupyter")
    ip.run_cell_magic("flow", "assistant", GUIDE_CELL)
    return ip


# -- a python3 kernel running this virtualenv's Python ------------------------------------------

def _kernel_python_ok() -> bool:
    """True when the ``python3`` kernelspec starts a Python that has ipykernel and this package.

    jupyter_client runs ``sys.executable`` for a spec whose argv[0] is ``python`` /
    ``python3`` / ``python3.X``, so such a spec counts as this virtualenv's Python.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    try:
        spec = KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        return False
    exe = spec.argv[0]
    aliases = {"python", f"python{sys.version_info[0]}",
               f"python{sys.version_info.major}.{sys.version_info.minor}"}
    if exe in aliases:
        exe = sys.executable
    if Path(exe).resolve() == Path(sys.executable).resolve():
        return True
    try:
        subprocess.run([exe, "-c", "import ipykernel, flowstate_jupyter"], check=True,
                       capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


@pytest.fixture(scope="session")
def python3_kernel() -> str:
    """Make sure ``python3`` names a kernel running this venv's Python (idempotent)."""
    try:
        import ipykernel  # noqa: F401
        import nbclient  # noqa: F401
        import nbformat  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"{exc.name} is missing: {sys.executable} -m pip install nbclient nbformat "
                    f"ipykernel", pytrace=False)
    if not _kernel_python_ok():
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix",
                        "--name", "python3"], check=True, capture_output=True, timeout=120)
        assert _kernel_python_ok(), "could not install a python3 kernel for this virtualenv"
    return "python3"
