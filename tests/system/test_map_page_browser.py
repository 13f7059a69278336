"""The control center's map page in Chromium (Playwright, /usr/bin/chromium) against a real server process: a
drive's hazards reach the registry; an admin registers a receiver on the webhooks page (a real HTTP server on
another port); an inspector opens the map (a plain background: no MAP_TILE_URL), clicks a hazard drawn on the canvas
and gives a verdict, which shows in the API, its history, the CSV export and, signed, at the receiver. A registry
filled with hundreds more is drawn whole, and filtered. Every request the pages make is same-origin."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

from bench.map_paint import fill_registry
from tests.api.test_hazards import JPEG, ROAD, drive_frames
from tests.support.redis_process import RedisProcess
from tests.support.server import Server
from tests.support.webhook_receiver import Receiver, signature_is_valid, webhook_receiver
from tests.system.test_control_center_browser import CHROMIUM, CHROMIUM_ARGS, screenshot

PASSWORD = "map-page-password"
INSPECTOR = ("ines", "an inspector's password")
WAIT_S = 60.0
MORE_HAZARDS = 250


@pytest.fixture(scope="module")
def server(redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    process = Server(
        redis_server.url,
        tmp_path_factory.mktemp("map-server"),
        ENVIRONMENT="test",
        ADMIN_PASSWORD=PASSWORD,
        MODEL_WARMUP_REQUESTS="1",
        SESSION_RATE_LIMIT_PER_SECOND="1000",
        WEBHOOK_POLL_SECONDS="0.05",
    )
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("no /usr/bin/chromium: `make test` installs it (scripts/ensure-system-deps.sh)")
    driver: Playwright
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as running:
        yield running


def drive_into_the_registry(api: httpx.Client) -> list[dict[str, object]]:
    session_id = api.post("/sessions").json()["session_id"]
    for body, params in drive_frames():
        assert api.post(f"/detect/{session_id}", params=params, content=body, headers=JPEG).status_code == 200
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:  # written off the request path: polled, bounded
        hazards: list[dict[str, object]] = api.get("/hazards/registry").json()["hazards"]
        if len(hazards) == len(ROAD.hazards):
            return hazards
        time.sleep(0.1)
    raise AssertionError("the drive's hazards did not reach the registry")


def signed_in(
    browser: Browser, server: Server, user: str, password: str, page_path: str, view: str = ""
) -> tuple[BrowserContext, Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto(f"{server.base_url}/admin/login?next={page_path}")
    page.fill("#username", user)
    page.fill("#password", password)
    page.press("#password", "Enter")
    page.wait_for_url(f"{server.base_url}{page_path}")
    if view:  # a fragment does not survive the login's POST: the page is loaded again with it
        page.goto("about:blank")
        page.goto(f"{server.base_url}{page_path}#{view}")
    return context, page


def register_on_the_webhooks_page(browser: Browser, server: Server, url: str, requests: list[str]) -> str:
    """The admin registers `url` for status changes; the page shows the signing secret once."""
    context, page = signed_in(browser, server, "admin", PASSWORD, "/admin/webhooks")
    context.on("request", lambda request: requests.append(request.url))
    page.fill("#webhook-url", "ftp://gis.example.org/hooks")
    page.click("#register-webhook-button")
    expect(page.locator("#webhook-flash")).to_contain_text("must be http:// or https://")
    page.fill("#webhook-url", url)
    page.check("input[name=events][value='hazard.status_changed']")
    page.click("#register-webhook-button")
    secret = page.locator("#new-webhook-secret").inner_text()
    expect(page.locator("table.webhooks tbody tr")).to_have_count(1)
    context.close()
    return secret


def test_a_verdict_given_on_the_map_page_reaches_the_api_the_csv_and_the_webhook_receiver(
    server: Server, browser: Browser, receiver: Receiver, tmp_path: Path
) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as api:
        hazard, *_ = drive_into_the_registry(api)
        name, password = INSPECTOR
        created = api.post(
            "/admin/api/operators",
            json={"name": name, "password": password, "role": "inspector"},
            auth=("admin", PASSWORD),
        )
        assert created.status_code == 201, created.text
    requests: list[str] = []
    secret = register_on_the_webhooks_page(browser, server, receiver.url, requests)

    # The shared view (#map=zoom/lat/lon) centres the hazard: a click on the map's middle lands on its marker.
    view = f"map=19/{hazard['lat']}/{hazard['lon']}"
    context, page = signed_in(browser, server, name, password, "/admin/map", view)
    context.on("request", lambda request: requests.append(request.url))
    expect(page.locator(".map-panel")).to_have_attribute("data-drawn", str(len(ROAD.hazards)))
    page.locator("#hazard-map").click()
    expect(page.locator("#hazard-detail h3")).to_contain_text(f"#{hazard['id']}")
    expect(page.locator("#hazard-detail .hazard-status")).to_have_text("open")
    page.fill("#hazard-detail input[name=note]", "deep, near the kerb")
    page.click("#hazard-detail button[data-category=pothole]")
    expect(page.locator("#hazard-detail .hazard-status")).to_have_text("verified")
    expect(page.locator("#hazard-detail .hazard-history li").last).to_contain_text("verify")
    screenshot(page, tmp_path, "control-center-map.png")
    context.close()

    with httpx.Client(base_url=server.base_url, timeout=30) as api:
        detail = api.get(f"/hazards/{hazard['id']}").json()
        rows = list(csv.DictReader(io.StringIO(api.get("/hazards/export.csv").text)))
    assert detail["status"] == "verified"
    assert (detail["history"][-1]["actor"], detail["history"][-1]["note"]) == (name, "deep, near the kerb")
    assert detail["history"][-1]["category"] == "pothole"
    assert {row["id"]: row["status"] for row in rows}[str(hazard["id"])] == "verified"
    deadline = time.monotonic() + WAIT_S
    while not receiver.of_type("hazard.status_changed"):  # sent off the request path: polled, bounded
        assert time.monotonic() < deadline, "no hazard.status_changed at the receiver"
        time.sleep(0.05)
    [told] = receiver.of_type("hazard.status_changed")
    assert signature_is_valid(secret, told)
    hazard_told, change = told.json["data"]["hazard"], told.json["data"]["change"]
    assert (hazard_told["id"], hazard_told["status"], change["actor"]) == (hazard["id"], "verified", name)
    foreign = [url for url in requests if not url.startswith(f"{server.base_url}/")]
    assert foreign == [], foreign


def test_the_map_draws_a_registry_of_hundreds_whole_and_filtered(server: Server, browser: Browser) -> None:
    """Straight into the server's registry (as its feed writes them), then every one drawn, and the filter."""
    url = f"sqlite+aiosqlite:///{server.log_path.parent / 'registry.db'}"
    with ThreadPoolExecutor(1) as thread:  # Playwright's loop runs in this one
        thread.submit(asyncio.run, fill_registry(url, MORE_HAZARDS)).result()
    with httpx.Client(base_url=server.base_url, timeout=30) as api:
        total = sum(1 for _ in csv.DictReader(io.StringIO(api.get("/hazards/export.csv").text)))
    assert total >= MORE_HAZARDS
    context, page = signed_in(browser, server, "admin", PASSWORD, "/admin/map")
    expect(page.locator(".map-panel")).to_have_attribute("data-drawn", str(total))
    expect(page.locator("#map-count")).to_have_text(f"{total} hazards")
    page.select_option("#map-filters select[name=status]", "verified")
    page.click("#map-filters button[type=submit]")
    expect(page.locator(".map-panel")).to_have_attribute("data-drawn", "1")
    context.close()
