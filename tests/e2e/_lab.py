"""The machinery behind the real-browser tests: a throwaway JupyterLab server and page helpers.

Two halves:

* ``Lab`` starts ``python -m jupyterlab`` (the interpreter running pytest, so the venv's) on a free
  loopback port, isolated from the user's Jupyter configuration, and stops it by its PID. Kernels
  run the same interpreter through a ``python3`` kernelspec the server finds first.
* Page helpers drive JupyterLab through Playwright: ``open_notebook``, ``run_all``,
  ``restart_kernel``, ``execute_in_kernel``, ``visible_panel``, ``cell``, ``cell_output``. They use
  ``window.jupyterapp`` (the server runs with ``expose_app_in_browser``) to know when the kernel is
  idle and every cell has run, rather than sleeping.

Nothing here imports Playwright at module level, so the conftest can report a missing install
as a skip (locally) or a failure (CI) instead of a collection error.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from playwright.sync_api import Locator, Page

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "e2e"

CHROMIUM = os.environ.get("FLOWSTATE_E2E_CHROMIUM", "/usr/bin/chromium")
# Headless Debian Chromium in a container without network: no sandbox (we run as root), no GPU,
# and none of the background fetches that would otherwise retry against a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Settings applied over JupyterLab's defaults for every test (the server's app settings dir):
# no news / update toast, no "Select Kernel" dialog (both block "Run All"), no restart prompt,
# and every cell attached to the DOM so locators find cells below the fold.
LAB_OVERRIDES: dict[str, dict[str, Any]] = {
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false",
                                                    "checkForUpdates": False},
    "@jupyterlab/notebook-extension:tracker": {"autoStartDefaultKernel": True,
                                               "windowingMode": "none"},
}

SERVER_START_TIMEOUT = 60.0
KERNEL_TIMEOUT_MS = 60_000
RUN_ALL_TIMEOUT_MS = 120_000

ENABLE_HINT = ("to enable them: apt-get install -y chromium fonts-dejavu-core, and "
               "pip install -e '.[e2e]' (jupyterlab, playwright; do not run `playwright install`)")


# ------------------------------------------------------------------------------ requirements

def requirements_problem(chromium: str = CHROMIUM) -> str | None:
    """What is missing to run the browser tests, or None when everything is there."""
    missing = []
    for module in ("playwright", "jupyterlab", "ipykernel", "ipywidgets", "nbformat"):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(f"Python package {module!r} is not installed in {sys.executable}")
    if not (os.path.isfile(chromium) and os.access(chromium, os.X_OK)):
        missing.append(f"no Chromium at {chromium}")
    if not missing:
        return None
    return "; ".join(missing) + f" ({ENABLE_HINT})"


# ------------------------------------------------------------------------------ the server

def free_port() -> int:
    """A loopback TCP port nobody listens on right now (the server may still lose a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def safe_name(name: str) -> str:
    """A test node name as a directory name: ``test_x[a-b]`` -> ``test_x-a-b``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "test"


class LabError(RuntimeError):
    """The server did not start, or a request to it failed."""


class Lab:
    """One running JupyterLab server with a throwaway root dir and configuration.

    Attributes: ``url`` (base URL, no trailing slash), ``root`` (the server's root_dir: notebooks
    go here; paths given to helpers are relative to it), ``log_path`` (stdout+stderr of the
    server), ``pid``, ``python`` (the interpreter of the server and of its kernels).

    Kernels inherit the server's environment (the caller's, minus ``FLOWSTATE_*`` and Jupyter
    variables, plus ``env`` given to ``start`` and the checkout on ``PYTHONPATH``), then the extra
    variables of ``set_kernel_env``, which apply to kernels started after the call.
    """

    def __init__(self, base: Path, log_path: Path, env: Mapping[str, str] | None = None) -> None:
        self.base = base
        self.root = base / "root"
        self.log_path = log_path
        self.python = sys.executable
        self.extra_env = dict(env or {})
        self.url = ""
        self.pid: int | None = None
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen | None = None
        self._log_file = None
        self._dirs = {name: base / name for name in
                      ("config", "runtime", "data", "ipython", "settings", "workspaces", "app")}

    # -- life cycle ---------------------------------------------------------------------------

    @classmethod
    def start(cls, log_path: Path, env: Mapping[str, str] | None = None,
              base: Path | None = None) -> Lab:
        """Start a server (its files under ``base``, a new temp dir by default) and wait for it."""
        base = Path(base or tempfile.mkdtemp(prefix="flowstate-e2e-lab-"))
        lab = cls(base, log_path, env)
        try:
            lab._start()
        except BaseException:
            lab.stop()
            raise
        return lab

    def _prepare(self) -> dict[str, str]:
        self.root.mkdir(parents=True, exist_ok=True)
        for path in self._dirs.values():
            path.mkdir(parents=True, exist_ok=True)
        (self._dirs["app"] / "overrides.json").write_text(json.dumps(LAB_OVERRIDES, indent=2))
        self.set_kernel_env({})

        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("FLOWSTATE_", "JUPYTER", "JPY_"))}
        env.update({
            "JUPYTER_CONFIG_DIR": str(self._dirs["config"]),
            "JUPYTER_RUNTIME_DIR": str(self._dirs["runtime"]),
            "JUPYTER_DATA_DIR": str(self._dirs["data"]),
            # Searched before the venv's and the user's data dirs: our python3 kernelspec wins.
            "JUPYTER_PATH": str(self._dirs["data"]),
            "IPYTHONDIR": str(self._dirs["ipython"]),
            "PYTHONUNBUFFERED": "1",
            # The kernel imports this checkout whether or not it is pip-installed (the tests'
            # convention for subprocesses, see tests/_helpers.python_env).
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        })
        env.update(self.extra_env)
        return env

    def _command(self, port: int) -> list[str]:
        d = self._dirs
        return [
            self.python, "-m", "jupyterlab",
            "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
            "--allow-root",
            "--IdentityProvider.token=", "--ServerApp.password=",
            "--ServerApp.disable_check_xsrf=True",
            f"--ServerApp.root_dir={self.root}",
            "--ServerApp.terminals_enabled=False",
            f"--LabApp.user_settings_dir={d['settings']}",
            f"--LabApp.workspaces_dir={d['workspaces']}",
            f"--LabApp.app_settings_dir={d['app']}",
            "--LabApp.expose_app_in_browser=True",
        ]

    def _start(self) -> None:
        env = self._prepare()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab", buffering=0)  # noqa: SIM115 - stop() closes it
        started = time.monotonic()
        last_error = ""
        for _attempt in range(3):  # a free port can be taken between free_port() and bind
            port = free_port()
            self._log_file.write(f"==== e2e harness: starting JupyterLab on port {port}\n".encode())
            self._proc = subprocess.Popen(
                self._command(port), cwd=self.root, env=env, stdin=subprocess.DEVNULL,
                stdout=self._log_file, stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl+C in the terminal reaches pytest, not the server
            )
            self.pid = self._proc.pid
            self.url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + SERVER_START_TIMEOUT
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    last_error = f"exited with code {self._proc.returncode}"
                    break
                try:
                    self.api("GET", "/api/status", timeout=2)
                except LabError as exc:
                    last_error = str(exc)
                    time.sleep(0.1)
                    continue
                self.startup_seconds = time.monotonic() - started
                return
            else:
                raise LabError(f"JupyterLab did not answer /api/status within "
                               f"{SERVER_START_TIMEOUT:.0f} s ({last_error}); log: {self.log_path}"
                               f"\n{self.log_tail()}")
        raise LabError(f"JupyterLab did not start ({last_error}); log: {self.log_path}\n"
                       f"{self.log_tail()}")

    def stop(self) -> None:
        """Shut kernels down, then the server (politely, then by its PID); keep the log."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(LabError):
                self.shutdown_kernels()
            with contextlib.suppress(LabError):
                self.api("POST", "/api/shutdown", timeout=5)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        self._kill_stray_kernels()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        shutil.rmtree(self.base, ignore_errors=True)

    def _kill_stray_kernels(self) -> None:
        """Kernels of this server still alive after it stopped (they run in their own session).

        They are recognised by their connection file, which lives in this server's runtime dir.
        """
        runtime = str(self._dirs["runtime"])
        for proc_dir in Path("/proc").glob("[0-9]*"):
            try:
                cmdline = (proc_dir / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(arg.decode(errors="replace").startswith(runtime) for arg in cmdline):
                with contextlib.suppress(OSError):
                    os.kill(int(proc_dir.name), signal.SIGKILL)

    # -- REST ---------------------------------------------------------------------------------

    def api(self, method: str, path: str, body: Any = None, timeout: float = 10) -> Any:
        """Call the server's REST API; return the decoded JSON (None for an empty body)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                payload = response.read()
        except (urllib.error.URLError, OSError) as exc:
            raise LabError(f"{method} {path}: {exc}") from exc
        return json.loads(payload) if payload.strip() else None

    def shutdown_kernels(self) -> None:
        """Close every notebook session and its kernel (between tests)."""
        for session in self.api("GET", "/api/sessions") or []:
            with contextlib.suppress(LabError):
                self.api("DELETE", f"/api/sessions/{session['id']}")
        for kernel in self.api("GET", "/api/kernels") or []:
            with contextlib.suppress(LabError):
                self.api("DELETE", f"/api/kernels/{kernel['id']}")

    # -- kernels ------------------------------------------------------------------------------

    def set_kernel_env(self, env: Mapping[str, str] | None) -> None:
        """Extra environment for kernels started from now on (``{}`` or None: none).

        Written into the ``python3`` kernelspec the server reads when it starts a kernel; a
        restart keeps the environment the kernel was first started with.
        """
        spec_dir = self._dirs["data"] / "kernels" / "python3"
        spec_dir.mkdir(parents=True, exist_ok=True)
        spec = {
            "argv": [self.python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (ipykernel)",
            "language": "python",
            "env": {str(k): str(v) for k, v in (env or {}).items()},
            "metadata": {"debugger": True},
        }
        (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))

    # -- files --------------------------------------------------------------------------------

    def new_dir(self, name: str) -> Path:
        """A fresh, empty folder in the root dir (``name`` made unique); returns its path."""
        path = self.root / f"{safe_name(name)}-{uuid.uuid4().hex[:6]}"
        path.mkdir(parents=True)
        return path

    def rel(self, path: Path | str) -> str:
        """``path`` (absolute, or already relative to the root) as a root-relative posix path."""
        path = Path(path)
        if path.is_absolute():
            path = path.relative_to(self.root)
        return path.as_posix()

    def copy_in(self, src: Path | str, dest: Path | str = "") -> str:
        """Copy a file or folder into the root dir (``dest``: a folder relative to the root, or
        an absolute folder inside it). Returns the copy's root-relative path for ``open_notebook``.
        """
        src = Path(src)
        folder = Path(dest) if Path(dest).is_absolute() else self.root / dest
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / src.name
        if src.is_dir():
            shutil.copytree(src, target, dirs_exist_ok=True)
        else:
            shutil.copy2(src, target)
        return self.rel(target)

    def write_notebook(self, path: Path | str, cells: Iterable[Any]) -> str:
        """Write a notebook (see ``make_notebook``) at ``path`` (root-relative or absolute inside
        the root). Returns its root-relative path."""
        import nbformat

        target = Path(path) if Path(path).is_absolute() else self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(make_notebook(cells), str(target))
        return self.rel(target)

    # -- logs ---------------------------------------------------------------------------------

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(offset)
                return fh.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_since(0).splitlines()[-lines:])


def make_notebook(cells: Iterable[Any]):
    """An nbformat v4 notebook with ``python3`` kernelspec metadata (which JupyterLab needs to
    start the kernel without asking). A cell is a code string, ``("markdown", text)``, or an
    nbformat cell node."""
    import nbformat
    from nbformat import v4

    nb = v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for item in cells:
        if isinstance(item, str):
            nb.cells.append(v4.new_code_cell(item))
        elif isinstance(item, tuple):
            kind, text = item
            maker = {"code": v4.new_code_cell, "markdown": v4.new_markdown_cell,
                     "raw": v4.new_raw_cell}[kind]
            nb.cells.append(maker(text))
        else:
            nb.cells.append(item)
    nbformat.validate(nb)
    return nb


# ------------------------------------------------------------------------------ page helpers

VISIBLE_PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"

# JavaScript run in the page. `panel()` is the notebook panel in the main area that is showing.
_JS_PANEL = """
const panel = () => {
  const app = window.jupyterapp;
  if (!app) return null;
  const w = app.shell.currentWidget;
  return w && w.content && w.sessionContext && w.context ? w : null;
};
"""

_JS_IDLE = _JS_PANEL + """
const p = panel();
if (!p || p.context.path !== path || !p.context.isReady) return false;
const sc = p.sessionContext;
const kernel = sc.session && sc.session.kernel;
return !!kernel && sc.isReady && !sc.pendingInput && kernel.status === 'idle'
       && kernel.connectionStatus === 'connected';
"""

_JS_RUN_STATE = _JS_PANEL + """
const p = panel();
if (!p) return {error: 'no notebook panel is current'};
const kernel = p.sessionContext.session && p.sessionContext.session.kernel;
const cells = [];
p.content.widgets.forEach((cell, i) => {
  if (cell.model.type !== 'code') return;
  const prompt = cell.node.querySelector('.jp-InputPrompt');
  cells.push({
    index: i,
    empty: cell.model.sharedModel.getSource().trim() === '',
    count: cell.model.executionCount,
    prompt: prompt ? prompt.innerText.trim() : '',
    // From the model, not the DOM: the error's name, value and (ANSI-free) traceback.
    errors: cell.model.outputs.toJSON().filter(o => o.output_type === 'error').map(o =>
        (o.traceback || []).join('\\n').replace(/\\x1b\\[[0-9;]*m/g, '')
        || `${o.ename}: ${o.evalue}`),
  });
});
return {kernel: kernel ? kernel.status : null, run: window.__e2eRunAll || null, cells};
"""


def visible_panel(page: Page) -> Locator:
    """The notebook panel that is showing (hidden tabs keep their DOM; never match those)."""
    return page.locator(VISIBLE_PANEL)


def cell(page: Page, index: int) -> Locator:
    """Cell ``index`` (counting every cell, as in the .ipynb) of the visible notebook."""
    return visible_panel(page).locator(".jp-Notebook .jp-Cell").nth(index)


def cell_output(page: Page, index: int) -> Locator:
    """The output area of cell ``index`` (counting every cell) of the visible notebook."""
    return cell(page, index).locator(".jp-OutputArea")


def open_notebook(page: Page, lab: Lab, name: str, timeout_ms: int = KERNEL_TIMEOUT_MS) -> None:
    """Open notebook ``name`` (root-relative path) in a fresh workspace and wait until its kernel
    is connected and idle.

    The ``lab/workspaces/<unique>/tree/<nb>?reset`` URL keeps an earlier test's tabs from being
    restored. The kernel starts by itself (``autoStartDefaultKernel``).
    """
    from urllib.parse import quote

    workspace = f"e2e-{uuid.uuid4().hex[:10]}"
    page.goto(f"{lab.url}/lab/workspaces/{workspace}/tree/{quote(name)}?reset",
              wait_until="domcontentloaded", timeout=timeout_ms)
    page.wait_for_function("() => !!window.jupyterapp", timeout=timeout_ms)
    page.locator(VISIBLE_PANEL).wait_for(state="visible", timeout=timeout_ms)
    wait_kernel_idle(page, name, timeout_ms)


def _current_path(page: Page) -> str:
    path = page.evaluate("() => {" + _JS_PANEL + "const p = panel(); "
                         "return p ? p.context.path : null; }")
    if path is None:
        raise AssertionError("no notebook is open in the main area")
    return path


def wait_kernel_idle(page: Page, path: str | None = None,
                     timeout_ms: int = KERNEL_TIMEOUT_MS) -> None:
    """Wait until the current notebook's (``path``'s) kernel is connected and idle."""
    path = path or _current_path(page)
    try:
        page.wait_for_function("(path) => {" + _JS_IDLE + "}", arg=path, timeout=timeout_ms,
                               polling=100)
    except Exception as exc:
        status = page.evaluate("() => {" + _JS_PANEL + """
            const p = panel(); if (!p) return 'no notebook panel';
            const k = p.sessionContext.session && p.sessionContext.session.kernel;
            const d = document.querySelector('.jp-Dialog');
            return `path=${p.context.path} kernel=${k ? k.status + '/' + k.connectionStatus
                    : 'none'}` + (d ? `; a dialog is open: ${d.innerText}` : ''); }""")
        message = f"kernel of {path!r} not idle after {timeout_ms} ms ({status})"
        raise AssertionError(message) from exc


def _run_state(page: Page) -> dict:
    return page.evaluate("() => {" + _JS_RUN_STATE + "}")


def run_all(page: Page, timeout_ms: int = RUN_ALL_TIMEOUT_MS,
            allow_errors: bool = False) -> None:
    """Run every cell of the current notebook; return when each non-empty code cell shows
    ``[n]`` and the kernel is idle.

    Waits for the kernel to be idle and ``notebook:run-all-cells`` to be enabled first (Run All
    clicked too early silently does nothing), then waits for the command's own promise, which
    settles when the last cell's reply has arrived. A cell that raised fails the call with its
    traceback unless ``allow_errors``.
    """
    path = _current_path(page)
    wait_kernel_idle(page, path)
    page.wait_for_function(
        "() => window.jupyterapp.commands.isEnabled('notebook:run-all-cells')", timeout=10_000)
    page.evaluate("""() => {
        const run = window.__e2eRunAll = {done: false, result: null, error: null};
        window.jupyterapp.commands.execute('notebook:run-all-cells').then(
            r => { run.done = true; run.result = r; },
            e => { run.done = true; run.error = String(e); });
    }""")

    def finished(state: dict) -> bool:
        cells = [c for c in state["cells"] if not c["empty"]]
        return (state["run"]["done"] and state["kernel"] == "idle"
                and all(re.fullmatch(r"\[\d+\]:?", c["prompt"]) for c in cells))

    deadline = time.monotonic() + timeout_ms / 1000
    settled_at = 0.0
    state = _run_state(page)
    while True:
        if "error" in state:
            raise AssertionError(f"run_all: {state['error']}")
        failed = [c for c in state["cells"] if c["errors"]]
        if state["run"]["done"] and failed and not allow_errors:
            raise AssertionError(f"run_all: cell {failed[0]['index']} raised:\n"
                                 f"{failed[0]['errors'][0]}")
        if state["run"]["error"]:
            raise AssertionError(f"run_all: notebook:run-all-cells failed: {state['run']['error']}")
        if finished(state) or (allow_errors and failed and state["run"]["done"]):
            return
        if state["run"]["done"] and state["kernel"] == "idle":
            # Prompts render right after the replies; anything still unrun is not queued.
            settled_at = settled_at or time.monotonic()
        if time.monotonic() > deadline or (settled_at and time.monotonic() - settled_at > 3):
            pending = [(c["index"], c["prompt"]) for c in state["cells"]
                       if not c["empty"] and not re.fullmatch(r"\[\d+\]:?", c["prompt"])]
            raise AssertionError(
                f"run_all: cells left unrun (command settled: "
                f"{state['run']['done']}, kernel {state['kernel']}); cells not run "
                f"(index, prompt): {pending}")
        time.sleep(0.05)
        state = _run_state(page)


def run_cells(page: Page, indexes: Iterable[int], timeout_ms: int = RUN_ALL_TIMEOUT_MS) -> None:
    """Run the cells ``indexes`` (counting every cell) one after the other, as Ctrl+Enter on
    each would, and return when the last has finished and the kernel is idle; a cell that
    raised fails the call with its traceback. For running part of a notebook again (after a
    kernel restart, say) without running all of it."""
    path = _current_path(page)
    wait_kernel_idle(page, path)
    for index in indexes:
        state = page.evaluate("""async ([index, timeout]) => {""" + _JS_PANEL + """
            const nb = panel().content;
            nb.activeCellIndex = index;
            nb.deselectAll();
            const run = window.jupyterapp.commands.execute('notebook:run-cell');
            await Promise.race([run, new Promise((_, reject) =>
                setTimeout(() => reject(new Error(`cell ${index} did not finish`)), timeout))]);
            const cell = nb.widgets[index];
            return {count: cell.model.executionCount,
                    errors: cell.model.outputs.toJSON().filter(o => o.output_type === 'error')
                        .map(o => (o.traceback || []).join('\\n')
                                  .replace(/\\x1b\\[[0-9;]*m/g, '') || `${o.ename}: ${o.evalue}`)};
        }""", [index, timeout_ms])
        if state["errors"]:
            raise AssertionError(f"run_cells: cell {index} raised:\n{state['errors'][0]}")
        if state["count"] is None:
            raise AssertionError(f"run_cells: cell {index} did not run")
    wait_kernel_idle(page, path)


def restart_kernel(page: Page, timeout_ms: int = KERNEL_TIMEOUT_MS) -> None:
    """Restart the current notebook's kernel as a user would (``notebook:restart-kernel``,
    accepting the confirmation dialog) and wait until the new kernel is idle."""
    path = _current_path(page)
    wait_kernel_idle(page, path)
    # Record the kernel's status changes from now on, to tell "restarted and idle again" from
    # "still idle, restart not begun".
    page.evaluate("() => {" + _JS_PANEL + """
        const sc = panel().sessionContext;
        window.__e2eStatuses = [];
        if (window.__e2eStatusSlot) window.__e2eStatusSlot.ctx.statusChanged.disconnect(
            window.__e2eStatusSlot.fn);
        const fn = (_, status) => window.__e2eStatuses.push(status);
        sc.statusChanged.connect(fn);
        window.__e2eStatusSlot = {ctx: sc, fn};
        void window.jupyterapp.commands.execute('notebook:restart-kernel');
    }""")
    # Either the confirmation dialog shows, or (if it is switched off) the restart just begins.
    page.wait_for_function("() => !!document.querySelector('.jp-Dialog') "
                           "|| (window.__e2eStatuses || []).length > 0", timeout=10_000)
    dialog = page.locator(".jp-Dialog")
    if dialog.count():
        dialog.locator("button.jp-mod-accept").click()
        dialog.wait_for(state="hidden", timeout=10_000)
    try:
        page.wait_for_function(
            "() => (window.__e2eStatuses || []).some(s => ['restarting', 'autorestarting', "
            "'starting'].includes(s))", timeout=timeout_ms, polling=50)
    except Exception as exc:
        statuses = page.evaluate("() => window.__e2eStatuses")
        raise AssertionError(f"kernel restart did not begin (statuses seen: {statuses})") from exc
    wait_kernel_idle(page, path, timeout_ms)


def execute_in_kernel(page: Page, code: str, timeout_ms: int = 30_000) -> dict:
    """Run ``code`` in the current notebook's kernel without touching any cell (like another
    cell would, but invisible). Returns ``{"status", "stdout", "stderr", "error"}``; use it to
    change state behind the widgets' back, or to read a value from the kernel."""
    return page.evaluate(
        """async ([code, timeout]) => {""" + _JS_PANEL + """
        const kernel = panel().sessionContext.session.kernel;
        const out = {status: null, stdout: '', stderr: '', error: null};
        const future = kernel.requestExecute({code, store_history: false, silent: false});
        future.onIOPub = msg => {
          const t = msg.header.msg_type, c = msg.content;
          if (t === 'stream') out[c.name] += c.text;
          if (t === 'error') out.error = `${c.ename}: ${c.evalue}`;
        };
        const reply = await Promise.race([future.done, new Promise((_, reject) =>
            setTimeout(() => reject(new Error('execute_in_kernel timed out')), timeout))]);
        out.status = reply.content.status;
        return out;
    }""", [code, timeout_ms])


def hold_kernel(page: Page, release: Path, timeout_s: float = 60.0) -> None:
    """Keep the current notebook's kernel busy, running code that waits until the file
    ``release`` exists (or ``timeout_s`` passed), as a long cell would; returns once the kernel
    runs it. Create ``release`` to let it go on. Widget messages sent meanwhile mostly wait
    (ipykernel 7 handles some comm messages while a cell runs), and ipywidgets holds back a
    control's further changes until its first one is answered: a click right after typing then
    tends to arrive before the last keystrokes (without the busy kernel it rarely does)."""
    code = (f"import os as _os, time as _time\nprint('held', flush=True)\n"
            f"_until = _time.monotonic() + {timeout_s!r}\n"
            f"while not _os.path.exists({str(release)!r}) and _time.monotonic() < _until:\n"
            f"    _time.sleep(0.005)\n")
    page.evaluate(
        """async (code) => {""" + _JS_PANEL + """
        const kernel = panel().sessionContext.session.kernel;
        const future = kernel.requestExecute({code, store_history: false, silent: false});
        await new Promise(resolve => {
          future.onIOPub = msg => { if (msg.header.msg_type === 'stream') resolve(); };
        });
    }""", code)


def wait_for_text(page: Page, selector: str, text: str, timeout_ms: int = 2000) -> None:
    """Wait until an element matching ``selector`` contains ``text``, checking on every
    animation frame (Playwright's ``expect`` backs off to 0.25-1 s between checks, too coarse
    to time an update with)."""
    page.wait_for_function(
        """([selector, text]) => Array.from(document.querySelectorAll(selector))
               .some(e => e.textContent.includes(text))""",
        arg=[selector, text], polling="raf", timeout=timeout_ms)
