"""End to end: `glitchdex dashboard` serving the SmolLM2 catalog, driven in a real headless Chromium.

Uses Debian's chromium (browser downloads are impossible here) through Playwright's ``executable_path``.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
from playwright.sync_api import Locator, Page
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from sqlalchemy import select

from catalog.database import make_engine
from catalog.readonly import SQL_URL_ENV
from catalog.schema import TokenVerdict
from tests.conftest import reader_url
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
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
SCREENSHOTS = REPO / "docs" / "img"
UPDATE_SCREENSHOTS_ENV = "GLITCHDEX_UPDATE_SCREENSHOTS"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium")


def verified_token(url: str) -> int:
    engine = make_engine(url)
    with engine.connect() as conn:
        token_id = conn.scalar(select(TokenVerdict.token_id).where(TokenVerdict.verdict == "verified").order_by(TokenVerdict.token_id))
    engine.dispose()
    return token_id


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
def serve(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """serve(catalog URL) -> base URL of `glitchdex dashboard --headless` serving it; stopped after the test."""
    servers = []

    def start(url: str) -> str:
        port = free_port()
        log = tmp_path / f"dashboard-{port}.log"
        command = [sys.executable, "-m", "ingest.jobs.cli", "--db", url, "dashboard", "--headless", "--port", str(port)]
        with log.open("w") as out:
            env = {**os.environ, SQL_URL_ENV: reader_url(url)}  # PostgreSQL: the SQL page refuses a superuser
            servers.append(subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env))
        base = f"http://localhost:{port}"
        wait_until_healthy(base, servers[-1], log)
        return base

    yield start
    for server in servers:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def browser_page() -> Iterator[Page]:
    """A Chromium page that fails the test if the app requests any host but its own."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=PAGE_TIMEOUT_MS)
    outside: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        # Streamlit scrolls inside its main container, so a tall viewport is what shows the whole page.
        page = browser.new_page(viewport={"width": 1400, "height": 2600})
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        page.on("request", lambda request: outside.append(request.url) if urlsplit(request.url).hostname not in LOCAL_HOSTS else None)
        yield page
        browser.close()
    assert not outside, f"requests to outside hosts: {outside[:5]}"


def save_screenshot(target: Page | Locator, tmp_path: Path, name: str) -> Path:
    """A page's (or element's) screenshot into the test's folder, and into docs/img when
    GLITCHDEX_UPDATE_SCREENSHOTS=1: the README's pictures come from here."""
    path = tmp_path / name
    target.screenshot(path=path)
    if os.environ.get(UPDATE_SCREENSHOTS_ENV) == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOTS / name)
    assert path.stat().st_size > 20_000
    return path


def test_search_a_token_and_open_its_card(smollm2_catalog, serve, browser_page: Page):
    from playwright.sync_api import expect

    page = browser_page
    page.goto(serve(url_of(smollm2_catalog)))
    expect(page.get_by_role("heading", name="glitchdex catalog")).to_be_visible()

    page.get_by_role("link", name="Token", exact=True).click()
    search = page.get_by_label("Search a token")
    search.fill("firstsum")
    search.press("Enter")
    page.get_by_role("link", name=re.compile(rf"'Ġfirstsum' · .* #{FIRSTSUM}")).click()

    expect(page.get_by_role("heading", name=re.compile(rf"token {FIRSTSUM} of"))).to_be_visible()
    expect(page.get_by_role("heading", name="The same string elsewhere")).to_be_visible()
    assert re.search(rf"tokenizer=1&token={FIRSTSUM}", page.url)


def test_a_card_opened_by_url_shows_its_transcripts_with_the_prompt(probed_catalog, serve, browser_page: Page, tmp_path: Path):
    from playwright.sync_api import expect

    page = browser_page
    page.goto(f"{serve(probed_catalog)}/token?tokenizer=1&token={verified_token(probed_catalog)}&model=1")
    expect(page.get_by_role("heading", name="Probe transcripts")).to_be_visible()
    expect(page.get_by_text("Input: apple").first).to_be_visible()  # the rendered few-shot prompt
    expect(page.locator("mark").first).to_be_visible()  # the token highlighted in it
    expect(page.get_by_text(re.compile("target probability")).first).to_be_visible()
    page.wait_for_timeout(3000)  # charts, tables and code blocks draw after their elements appear
    save_screenshot(page, tmp_path, "token_card.png")


def test_clicking_a_map_point_opens_its_card(probed_catalog, serve, browser_page: Page, tmp_path: Path):
    from playwright.sync_api import expect

    page = browser_page
    page.goto(f"{serve(probed_catalog)}/model?model=1")
    heading = page.get_by_role("heading", name="Embedding map")
    expect(heading).to_be_visible()
    chart = page.locator("[data-testid='stVegaLiteChart']").first
    chart.scroll_into_view_if_needed()
    page.wait_for_timeout(1500)  # vega draws after the element appears
    save_screenshot(chart, tmp_path, "map.png")
    box = chart.bounding_box()
    # The t-SNE cloud is dense: some click near the middle lands on a point; empty space does nothing.
    for fx, fy in [(0.5, 0.5), (0.45, 0.5), (0.55, 0.5), (0.5, 0.45), (0.5, 0.55), (0.4, 0.4), (0.6, 0.6), (0.4, 0.6), (0.6, 0.4), (0.3, 0.5), (0.7, 0.5)]:
        page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
        try:
            page.wait_for_url(re.compile(r"/token\?tokenizer=1&token=\d+"), timeout=8_000)
            break
        except PlaywrightTimeout:
            continue
    token_id = re.search(r"token=(\d+)", page.url).group(1)
    expect(page.get_by_role("heading", name=re.compile(rf"token {token_id} of"))).to_be_visible()


def test_filters_survive_a_reload(smollm2_catalog, serve, browser_page: Page):
    from playwright.sync_api import expect

    page = browser_page
    page.goto(f"{serve(url_of(smollm2_catalog))}/model?model=1")
    text_filter = page.get_by_label("Text or piece contains (any case)")
    text_filter.fill("sum")
    text_filter.press("Enter")
    page.wait_for_url(re.compile(r"text=sum"))
    matched = page.get_by_text(re.compile(r"[\d,]+ tokens match")).first
    expect(matched).not_to_have_text(re.compile(r"^49,135 tokens"))  # the filter applied (the URL changes first)
    before = matched.inner_text()

    page.reload()
    expect(page.get_by_label("Text or piece contains (any case)")).to_have_value("sum")
    # The grid draws on a canvas (its pixels differ from one draw to the next), so the rows are compared by their
    # count here; test_pages.py compares the token ids of a page reopened from the same URL.
    expect(page.get_by_text(re.compile(r"[\d,]+ tokens match")).first).to_have_text(before)


def test_a_shared_sql_link_runs_its_query(smollm2_catalog, serve, browser_page: Page):
    from playwright.sync_api import expect

    sql = f"SELECT tokenizer_id, token_id, piece FROM token WHERE token_id IN ({FIRSTSUM}, 46687)"
    page = browser_page
    page.goto(f"{serve(url_of(smollm2_catalog))}/sql?{urlencode({'sql': sql})}")
    expect(page.get_by_text(re.compile(r"^2 rows in"))).to_be_visible()
    expect(page.get_by_label("Query")).to_have_value(sql)
