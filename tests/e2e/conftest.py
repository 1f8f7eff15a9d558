"""Fixtures for the real-browser tests: a JupyterLab server, headless Chromium, one page per test.

* ``lab`` (session): a ``_lab.Lab`` - JupyterLab on a free loopback port with a throwaway root
  dir and configuration; kernels run this interpreter. Its log is kept at
  ``test-artifacts/e2e/jupyterlab-server.log``.
* ``browser`` (session): Debian's ``/usr/bin/chromium``, headless, driven by Playwright.
* ``page`` (function): a fresh browser context and page. After the test every kernel is shut
  down and the kernel environment reset; if the test failed, ``test-artifacts/e2e/<test>/`` gets
  ``failure.png``, ``console.log`` (browser console and page errors), ``server.log`` (the server's
  log during the test), ``notebook-folder/`` (the open notebook's folder: the notebook as saved,
  any store next to it) and ``info.txt`` (URL, paths, duration).
* ``lab_dir`` (function): a fresh folder inside the server's root dir for this test's notebooks;
  a kernel started for a notebook there runs with it as its working directory.

Without Chromium, Playwright or JupyterLab the tests skip with a hint; under ``CI=true`` they fail.
Run them serially (each test drives the one shared server and browser).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import _lab
import pytest

IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
SERVER_LOG = _lab.ARTIFACTS / "jupyterlab-server.log"
REPORTS = pytest.StashKey[dict]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Keep each phase's report on the item, so fixtures can tell in teardown that it failed."""
    report = yield
    item.stash.setdefault(REPORTS, {})[report.when] = report
    return report


@pytest.fixture(scope="session")
def e2e_ready() -> None:
    """Skip (locally) or fail (CI) when the browser tests cannot run here."""
    problem = _lab.requirements_problem()
    if problem is None:
        return
    if IN_CI:
        pytest.fail(f"browser tests cannot run under CI=true: {problem}", pytrace=False)
    pytest.skip(f"browser tests skipped: {problem} (with CI=true this fails instead)")


@pytest.fixture(scope="session")
def lab(e2e_ready: None) -> Iterator[_lab.Lab]:
    """A running JupyterLab server for the whole session (see ``_lab.Lab``)."""
    SERVER_LOG.parent.mkdir(parents=True, exist_ok=True)
    SERVER_LOG.unlink(missing_ok=True)
    try:
        server = _lab.Lab.start(SERVER_LOG)
    except _lab.LabError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def browser(e2e_ready: None):
    """Headless Debian Chromium under Playwright, for the whole session."""
    from playwright.sync_api import expect, sync_playwright

    # Kernel round trips take 0.1-0.3 s, but a loaded 2-core machine can be much slower.
    expect.set_options(timeout=10_000)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=_lab.CHROMIUM, headless=True,
                                              args=_lab.CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(request: pytest.FixtureRequest, browser, lab: _lab.Lab):
    """A new page in a new browser context; on failure its screenshot and logs are saved."""
    artifacts = _lab.ARTIFACTS / _lab.safe_name(request.node.name)
    shutil.rmtree(artifacts, ignore_errors=True)  # stale from an earlier failing run
    log_offset = lab.log_size()
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    new_page = context.new_page()
    new_page.set_default_timeout(30_000)
    console: list[str] = []
    new_page.on("console", lambda msg: console.append(f"[{msg.type}] {msg.text}"))
    new_page.on("pageerror", lambda exc: console.append(f"[pageerror] {exc}"))
    started = time.monotonic()
    try:
        yield new_page
    finally:
        reports = request.node.stash.get(REPORTS, {})
        if any(r.failed for r in reports.values()):
            _save_failure(artifacts, new_page, lab, log_offset, console,
                          time.monotonic() - started)
        context.close()
        try:
            lab.shutdown_kernels()
        except _lab.LabError:
            pass  # the server is gone; the test has already reported why
        lab.set_kernel_env(None)


def _save_failure(artifacts: Path, page, lab: _lab.Lab, log_offset: int, console: list[str],
                  seconds: float) -> None:
    artifacts.mkdir(parents=True, exist_ok=True)
    notes = [f"url: {page.url}", f"server: {lab.url} (pid {lab.pid})",
             f"server log (whole session): {lab.log_path}", f"root dir: {lab.root}",
             f"test ran {seconds:.1f} s"]
    try:
        page.screenshot(path=str(artifacts / "failure.png"), full_page=True, timeout=10_000)
        notes.append(f"screenshot: {artifacts / 'failure.png'}")
    except Exception as exc:  # a crashed page must not hide the test's own failure
        notes.append(f"screenshot failed: {exc}")
    folder = _notebook_folder(page.url, lab)
    if folder is not None:  # the notebook and whatever it wrote next to it (a store, ...)
        shutil.copytree(folder, artifacts / "notebook-folder", dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        notes.append(f"notebook folder copied from {folder}")
    (artifacts / "console.log").write_text("\n".join(console) + "\n")
    (artifacts / "server.log").write_text(lab.log_since(log_offset))
    (artifacts / "info.txt").write_text("\n".join(notes) + "\n")
    sys.stderr.write(f"\ne2e artifacts: {artifacts}\n")


def _notebook_folder(url: str, lab: _lab.Lab) -> Path | None:
    """The folder (below the root) of the notebook a ``.../tree/<path>`` URL opened."""
    if "/tree/" not in url:
        return None
    path = unquote(urlsplit(url).path.split("/tree/", 1)[1])
    folder = (lab.root / path).parent.resolve()
    if folder == lab.root.resolve() or not folder.is_relative_to(lab.root.resolve()):
        return None  # never copy the whole root
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return folder if size < 50_000_000 else None


@pytest.fixture
def lab_dir(request: pytest.FixtureRequest, lab: _lab.Lab) -> Path:
    """A fresh folder in the server's root dir for this test's files (absolute path)."""
    return lab.new_dir(request.node.name)
