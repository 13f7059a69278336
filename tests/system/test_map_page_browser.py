"""The control center's map page in Chromium (Playwright, /usr/bin/chromium) against a real server process: a
drive's hazards reach the registry, the page draws them on a plain background (no MAP_TILE_URL), and a verdict
given on the page shows in the API, its history and the CSV export. Every request the page makes is same-origin."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Playwright, expect, sync_playwright

from tests.api.test_hazards import JPEG, ROAD, drive_frames
from tests.support.redis_process import RedisProcess
from tests.support.server import Server
from tests.system.test_control_center_browser import CHROMIUM, CHROMIUM_ARGS, screenshot

PASSWORD = "map-page-password"
WAIT_S = 60.0


@pytest.fixture(scope="module")
def server(redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    process = Server(
        redis_server.url,
        tmp_path_factory.mktemp("map-server"),
        ENVIRONMENT="test",
        ADMIN_PASSWORD=PASSWORD,
        MODEL_WARMUP_REQUESTS="1",
        SESSION_RATE_LIMIT_PER_SECOND="1000",
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


def test_a_verdict_given_on_the_map_page_shows_in_the_api_and_the_csv(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as api:
        hazard, *_ = drive_into_the_registry(api)
    requests: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    context.on("request", lambda request: requests.append(request.url))
    page = context.new_page()
    page.goto(f"{server.base_url}/admin/login?next=/admin/map")
    page.fill("#password", PASSWORD)
    page.press("#password", "Enter")
    page.wait_for_url(f"{server.base_url}/admin/map")

    expect(page.locator(".map-panel")).to_have_attribute("data-loaded", str(len(ROAD.hazards)))
    page.locator(f"path.hazard-{hazard['id']}").click()
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
    assert (detail["history"][-1]["actor"], detail["history"][-1]["note"]) == ("admin", "deep, near the kerb")
    assert detail["history"][-1]["category"] == "pothole"
    assert {row["id"]: row["status"] for row in rows}[str(hazard["id"])] == "verified"
    foreign = [url for url in requests if not url.startswith(f"{server.base_url}/")]
    assert foreign == [], foreign
