"""The served page in headless Chromium: sign in, run an action from the form built from its
input schema, see refused input marked at its field, and watch client data that another process
writes appear live. Screenshots in light and dark go to ``test-artifacts/e2e/serve-page/``.

The page talks to a real uvicorn server (``flowstate_jupyter.serve.start``) on a free loopback
port; no JupyterLab is involved.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _lab
import pytest
from _helpers import python_env
from _serving import ALICE, TOKENS

import flowstate_jupyter as fs
from flowstate_jupyter.serve import start

pytestmark = pytest.mark.e2e

SHOTS = _lab.ARTIFACTS / "serve-page"
SERVE_TESTS = Path(__file__).resolve().parents[1] / "serve"


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, str]]:
    from served_flow import flow
    monkeypatch.delenv("FLOWSTATE_TOKENS", raising=False)
    url = f"sqlite:///{tmp_path / 'page.db'}"
    store = fs.open_store(url)
    server = start(flow, store=store, port=0, tokens=TOKENS)
    try:
        yield server, url
    finally:
        server.stop()
        store.close()


def _page(browser: Any, scheme: str, console: list[str]) -> Any:
    context = browser.new_context(viewport={"width": 1100, "height": 760}, color_scheme=scheme)
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.on("console", lambda msg: console.append(f"[{msg.type}] {msg.text}")
            if msg.type in ("error", "warning") else None)
    page.on("pageerror", lambda exc: console.append(f"[pageerror] {exc}"))
    return page


def _sign_in(page: Any, url: str) -> None:
    from playwright.sync_api import expect
    page.goto(url)
    expect(page.locator("#auth")).to_be_visible()
    expect(page.locator("#status")).to_have_text("signed out")
    page.fill("#token", ALICE)
    page.click("#auth-form button")
    expect(page.locator("#status")).to_have_text("live")


def _value(page: Any, key: str) -> Any:
    return page.locator(f'#client-data tr[data-key="{key}"] td.value')


def test_the_page_runs_an_action_and_shows_a_change_written_elsewhere_live(
        browser: Any, served: tuple[Any, str]) -> None:
    from playwright.sync_api import expect
    server, db_url = served
    console: list[str] = []
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = _page(browser, "light", console)
    try:
        _sign_in(page, server.url)
        session_id = page.locator("#session-id").text_content()
        assert session_id and session_id.startswith("s-")
        expect(page.locator("#flow-kind")).to_have_text("served")
        expect(page.locator("#action option")).to_have_count(2)
        expect(_value(page, "session.count")).to_have_text("0")

        # refused input: the field says why, the result says refused, nothing ran
        page.select_option("#action", "say")
        page.fill("input[name=message]", "hello from the page")
        page.fill("input[name=times]", "99")
        page.click("#run")
        expect(page.locator("#result-status")).to_have_text("refused")
        expect(page.locator("label.field:has(input[name=times]) .field-error")).to_contain_text(
            "less than or equal to 10")
        expect(_value(page, "session.count")).to_have_text("0")
        page.screenshot(path=str(SHOTS / "light-refused.png"), full_page=True)

        page.fill("input[name=times]", "3")
        page.click("#run")
        expect(page.locator("#result-status")).to_have_text("ok")
        expect(page.locator("#result-output")).to_contain_text('"echo": "hello from the page"')
        expect(_value(page, "session.count")).to_have_text("3")
        expect(_value(page, "session.resources.notes")).to_have_text('{"count":1}')

        # another process writes to the same SQLite file: the page shows it, marked
        code = ("import sys; from served_flow import write_from_another_process as w; "
                "w(sys.argv[1], sys.argv[2], 'written elsewhere')")
        child = subprocess.run([sys.executable, "-c", code, db_url, session_id],
                               env=python_env(), cwd=SERVE_TESTS, capture_output=True,
                               text=True, timeout=60)
        assert child.returncode == 0, child.stderr
        expect(_value(page, "session.mode")).to_have_text('"written elsewhere"')
        expect(page.locator('#client-data tr[data-key="session.mode"]')).to_have_class("changed")
        page.screenshot(path=str(SHOTS / "light.png"), full_page=True)
        assert "MARKER" not in page.content()

        # the same session in a dark tab, opened by its link
        dark = _page(browser, "dark", console)
        _sign_in(dark, f"{server.url}#session={session_id}")
        expect(dark.locator("#session-id")).to_have_text(session_id)
        expect(_value(dark, "session.mode")).to_have_text('"written elsewhere"')
        dark.select_option("#action", "fail")
        dark.click("#run")
        expect(dark.locator("#result-status")).to_have_text("error")
        expect(dark.locator("#result-output")).to_contain_text("RuntimeError")
        expect(dark.locator("#client-data tr.changed")).to_have_count(0)  # the run changed none
        dark.screenshot(path=str(SHOTS / "dark.png"), full_page=True)
        assert "MARKER" not in dark.content()
        dark.context.close()
    except Exception:
        page.screenshot(path=str(SHOTS / "failure.png"), full_page=True)
        (SHOTS / "console.log").write_text("\n".join(console) + "\n")
        raise
    finally:
        page.context.close()
    # the one refused run is the only request the browser reports as failed
    assert [line for line in console if "error" in line.lower()] == [
        "[error] Failed to load resource: the server responded with a status of 422 "
        "(Unprocessable Entity)"], console
