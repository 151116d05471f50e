"""End to end: `glitchdex dashboard` serving the SmolLM2 catalog, driven in a real headless Chromium.

Uses Debian's chromium (browser downloads are impossible here) through Playwright's ``executable_path``.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dashboard.conftest import FIRSTSUM, url_of

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[2]
SERVER_START_S = 90
PAGE_TIMEOUT_MS = 90_000

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_healthy(base: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the dashboard exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as response:
                if response.read() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the dashboard did not answer within {SERVER_START_S} s:\n{log.read_text()}")


@pytest.fixture
def dashboard_server(smollm2_catalog, tmp_path: Path) -> Iterator[str]:
    """Base URL of `glitchdex dashboard --headless` serving the SmolLM2 catalog."""
    port = free_port()
    log = tmp_path / "dashboard.log"
    command = [sys.executable, "-m", "ingest.jobs.cli", "--db", url_of(smollm2_catalog), "dashboard", "--headless", "--port", str(port)]
    with log.open("w") as out:
        server = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy())
    base = f"http://localhost:{port}"
    try:
        wait_until_healthy(base, server, log)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_search_a_token_and_open_its_page_in_chromium(dashboard_server: str, tmp_path: Path):
    from playwright.sync_api import expect, sync_playwright

    screenshot = tmp_path / "token_page.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        # Streamlit scrolls inside its main container, so a tall viewport is what shows the whole page.
        page = browser.new_page(viewport={"width": 1400, "height": 2600})
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        page.goto(dashboard_server)
        expect(page.get_by_role("heading", name="glitchdex catalog")).to_be_visible()

        page.get_by_role("link", name="Token", exact=True).click()
        search = page.get_by_label("Search a token")
        search.fill("firstsum")
        search.press("Enter")
        page.get_by_role("button", name=re.compile(rf"'Ġfirstsum' · .* #{FIRSTSUM}")).click()

        expect(page.get_by_role("heading", name=re.compile(rf"token {FIRSTSUM} of"))).to_be_visible()
        expect(page.get_by_role("heading", name="The same string elsewhere")).to_be_visible()
        assert re.search(rf"tokenizer=1&token={FIRSTSUM}", page.url)
        page.screenshot(path=screenshot, full_page=True)
        browser.close()
    assert screenshot.stat().st_size > 20_000
    print(f"screenshot: {screenshot}")
