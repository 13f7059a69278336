"""The control center in a real browser: Debian's Chromium driven by Playwright against a real server process (its
own Redis, the repository's models, and a broken version). One server and one browser for the module; every page
is opened in a fresh browser context, and every request a control center page makes is recorded and must be
same-origin. Screenshots land in each test's tmp dir (and in $CONTROL_CENTER_SCREENSHOTS_DIR when set, e.g. docs/)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from playwright._impl._api_structures import Cookie, SetCookieParam  # the cookie types sync_api does not re-export
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

from tests.conftest import MODEL_DIR
from tests.support.images import scene_with_hazards
from tests.support.redis_process import RedisProcess
from tests.support.server import Server
from tests.support.waiting import wait_until

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
PASSWORD = "browser-tests-password"
FP16 = "best0408_openvino_model"
INT8 = "best0408_int8_openvino_model"
BROKEN = "broken_openvino_model"
REPOSITORY = MODEL_DIR.parent
SLOW_MS = 30_000  # a model load or a job on a busy 2-core machine; every wait is on a condition, never a sleep
FRAME = scene_with_hazards(seed=3)[1]


@dataclass
class ControlCenter:
    server: Server
    browser: Browser
    requests: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, auth=httpx.BasicAuth("admin", PASSWORD), timeout=30)

    def context(self, width: int = 1280, height: int = 900) -> BrowserContext:
        """A fresh browser profile whose every request is recorded."""
        context = self.browser.new_context(viewport={"width": width, "height": height})
        context.set_default_timeout(10_000)
        context.on("request", lambda request: self.requests.append(request.url))
        return context

    def log_in(self, context: BrowserContext) -> Page:
        page = context.new_page()
        page.goto(f"{self.base_url}/admin/login")
        page.fill("#password", PASSWORD)
        page.press("#password", "Enter")  # the keyboard submits the form
        page.wait_for_url(f"{self.base_url}/admin")
        return page

    def assert_all_requests_same_origin(self) -> None:
        assert self.requests, "the pages made requests"
        foreign = [url for url in self.requests if not self.same_origin(url)]
        assert foreign == [], foreign

    def same_origin(self, url: str) -> bool:
        own = url.startswith(f"{self.base_url}/") or url == self.base_url
        return own or url.startswith(f"blob:{self.base_url}/") or url.startswith("data:")


def screenshot(page: Page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    extra = os.environ.get("CONTROL_CENTER_SCREENSHOTS_DIR")
    if extra:
        shutil.copy2(path, Path(extra) / name)
    return path


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both real versions, and a copy of INT8 whose weights file is cut in half."""
    repository = tmp_path_factory.mktemp("browser-models")
    for name in (FP16, INT8):
        (repository / name).symlink_to(REPOSITORY / name, target_is_directory=True)
    broken = repository / BROKEN
    shutil.copytree(REPOSITORY / INT8, broken)
    weights = broken / "best0408.bin"
    with weights.open("r+b") as file:
        file.truncate(weights.stat().st_size // 2)
    return repository


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        pytest.fail("no /usr/bin/chromium: `make test` installs it (scripts/ensure-system-deps.sh)")
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def control_center(
    playwright: Playwright, redis_server: RedisProcess, repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlCenter]:
    server = Server(
        redis_server.url,
        tmp_path_factory.mktemp("browser-server"),
        ENVIRONMENT="test",
        ADMIN_PASSWORD=PASSWORD,
        MODEL_REPOSITORY=str(repository),
        MODEL_DIR=str(repository / FP16),
        MODEL_WARMUP_REQUESTS="1",
        MODEL_DRAIN_SECONDS="0.5",
        FLEET_HEARTBEAT_SECONDS="0.5",
        ACTIVE_SESSIONS_REFRESH_SECONDS="0",
        REQUEST_TIMEOUT_SECONDS="10",
    )
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    try:
        server.wait_ready()
        yield ControlCenter(server, browser)
    finally:
        browser.close()
        server.stop()


@pytest.fixture
def center(control_center: ControlCenter) -> Iterator[ControlCenter]:
    """The module's control center, with this test's requests recorded and checked at the end."""
    control_center.requests.clear()
    yield control_center
    control_center.assert_all_requests_same_origin()


def session_cookie(context: BrowserContext) -> Cookie | None:
    return next((cookie for cookie in context.cookies() if cookie["name"] == "hazard_admin"), None)


def test_login_wrong_password_right_password_and_logout(center: ControlCenter) -> None:
    context = center.context()
    page = context.new_page()
    page.goto(f"{center.base_url}/admin")
    expect(page).to_have_url(f"{center.base_url}/admin/login?next=/admin")

    page.fill("#password", "not the password")
    with page.expect_response(lambda r: r.url.endswith("/admin/login") and r.request.method == "POST") as answer:
        page.click("button[type=submit]")
    assert answer.value.status == 401
    assert not [h for h in answer.value.headers_array() if h["name"].lower() == "set-cookie"], "no cookie at all"
    expect(page.locator("#login-error")).to_have_text("Wrong user name or password.")
    assert session_cookie(context) is None

    page.fill("#password", PASSWORD)
    page.press("#password", "Enter")
    page.wait_for_url(f"{center.base_url}/admin")
    expect(page.locator("h1")).to_have_text("Hazard Detection Control Center")
    cookie = session_cookie(context)
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert cookie["expires"] > time.time() + 7 * 3600  # ADMIN_SESSION_HOURS, 8 by default

    page.click("text=Log out")
    page.wait_for_url(f"{center.base_url}/admin/login")
    assert session_cookie(context) is None
    context.add_cookies([cast(SetCookieParam, cookie)])  # the old cookie, kept: logout ended the session server-side
    page.goto(f"{center.base_url}/admin")
    expect(page).to_have_url(f"{center.base_url}/admin/login?next=/admin")
    context.close()


def test_diagnostics_refresh_every_2_s_with_the_real_process_and_model(center: ControlCenter, tmp_path: Path) -> None:
    with httpx.Client(base_url=center.base_url, timeout=30) as client:  # /detect answers for the latency chart
        session_id = client.post("/sessions").json()["session_id"]
        for _ in range(3):
            client.post(f"/detect/{session_id}", content=FRAME, headers={"content-type": "image/jpeg"})
    context = center.context()
    page = center.log_in(context)
    with center.api() as api:
        active = api.get("/admin/api/models").json()["active"]
    process = page.locator(f"#diagnostics article[data-process-id] >> text=pid {center.server.process.pid}")
    expect(process).to_be_visible()
    card = page.locator("#diagnostics article.process.running")
    expect(card.locator(".host")).to_have_text(socket.gethostname())
    expect(card.locator(".badge.ok").first).to_have_text("RUNNING")
    expect(card.locator(f"li[data-model='{active}'] .badge.active")).to_have_text("ACTIVE")
    expect(card.locator(f"li[data-model='{active}'] .badge.state-available")).to_have_text("LOADED")
    expect(card.locator("progress")).to_have_count(1)

    first = page.locator("#diagnostics .diagnostics").get_attribute("data-generated")
    started = time.monotonic()
    page.wait_for_function(
        """first => {
            window.seenRenders = window.seenRenders || new Set([first]);
            window.seenRenders.add(document.querySelector('#diagnostics .diagnostics').dataset.generated);
            return window.seenRenders.size >= 3;
        }""",
        arg=first,
        polling=100,
        timeout=5_000,
    )
    assert time.monotonic() - started < 5.0, "two fresh renders within 5 s"

    expect(page.locator("#latency-chart canvas").first).to_be_attached()
    expect(page.locator("#latency-chart")).to_contain_text("target 150 ms")
    points = int(page.locator("#latency-chart").get_attribute("data-points") or 0)
    assert points >= 3, "the chart holds this process's /detect answers"
    expect(page.locator("#latency-summary")).to_contain_text("P95")
    screenshot(page, tmp_path, "control-center-dashboard.png")

    page.set_viewport_size({"width": 390, "height": 844})  # a phone: one column, nothing wider than the screen
    page.wait_for_function(
        "() => document.documentElement.scrollWidth <= window.innerWidth + 1"
    )  # after the chart resized
    context.close()


def test_a_dropped_frame_is_drawn_with_the_labels_the_api_answers(center: ControlCenter, tmp_path: Path) -> None:
    with httpx.Client(base_url=center.base_url, timeout=30) as client:
        session_id = client.post("/sessions").json()["session_id"]
        answer = client.post(f"/detect/{session_id}", content=FRAME, headers={"content-type": "image/jpeg"}).json()
    api_labels = sorted(d["label"] for d in answer["detections"])
    assert api_labels, "the generated frame shows hazards"

    context = center.context()
    page = center.log_in(context)
    with page.expect_file_chooser() as chooser:  # the keyboard opens the file picker too
        page.focus("#drop-zone")
        page.keyboard.press("Enter")
    assert chooser.value.is_multiple() is False

    dropped = page.evaluate_handle(
        """b64 => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], 'road.jpg', {type: 'image/jpeg'}));
            return transfer;
        }""",
        base64.b64encode(FRAME).decode(),
    )
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": dropped})
    expect(page.locator("#inference-result")).to_be_visible(timeout=SLOW_MS)
    result = json.loads(page.locator("#result-json").inner_text())
    assert result["status"] == "done" and result["model"]["name"] == answer["model"]["name"]
    assert sorted(d["label"] for d in result["detections"]) == api_labels
    expect(page.locator("#result-labels li")).to_have_count(len(api_labels))
    expect(page.locator("#result-canvas")).to_have_attribute("data-boxes", str(len(api_labels)))

    # A box is drawn where the answer says: the middle of its left edge has the stroke's colour.
    box = result["detections"][0]["box"]
    pixel = page.evaluate(
        """([x, y]) => Array.from(document.getElementById('result-canvas').getContext('2d')
            .getImageData(x, y, 1, 1).data.slice(0, 3))""",
        [int(box["x1"]), int((box["y1"] + box["y2"]) / 2)],
    )
    colors = {
        "pothole": (255, 183, 77),
        "traffic_cone": (255, 138, 101),
        "debris": (186, 104, 200),
        "crack": (79, 195, 247),
    }
    expected = colors[result["detections"][0]["label"]]
    assert all(abs(a - b) <= 8 for a, b in zip(pixel, expected, strict=True)), (pixel, expected)
    screenshot(page, tmp_path, "control-center-detection.png")
    context.close()


def test_jobs_view_shows_progress_and_cancels_and_sessions_view_lists_sessions(center: ControlCenter) -> None:
    with httpx.Client(base_url=center.base_url, timeout=30) as client:
        open_job = client.post("/jobs", json={"name": "waiting for frames"}).json()["job_id"]
        files = {"file": ("road.jpg", FRAME, "image/jpeg")}
        done_job = client.post("/jobs", data={"job": json.dumps({"name": "one frame"})}, files=files).json()["job_id"]
        client.post(f"/jobs/{done_job}/close")
        session_id = client.post("/sessions", json={"metadata": {"vehicle": "van-7"}}).json()["session_id"]
        client.post(f"/detect/{session_id}", content=FRAME, headers={"content-type": "image/jpeg"})

    context = center.context()
    page = center.log_in(context)
    page.click("nav >> text=Jobs")
    done_row = page.locator(f"tr[data-job-id='{done_job}']")
    expect(done_row).to_have_attribute("data-status", "completed", timeout=SLOW_MS)
    expect(done_row.locator("progress")).to_have_attribute("value", "1")
    open_row = page.locator(f"tr[data-job-id='{open_job}']")
    expect(open_row).to_have_attribute("data-status", "open")
    open_row.locator("button", has_text="Cancel").click()
    expect(open_row).to_have_attribute("data-status", "cancelled")
    with httpx.Client(base_url=center.base_url, timeout=30) as client:
        assert client.get(f"/jobs/{open_job}").json()["status"] == "cancelled"

    page.click("nav >> text=Sessions")
    row = page.locator(f"tr[data-session-id='{session_id}']")
    expect(row.locator(".frames")).to_have_text("1")
    expect(row).to_contain_text("van-7")
    row.locator("button", has_text="Hazards").click()
    expect(page.locator("#hazards")).to_contain_text(session_id)
    context.close()


def test_a_cross_site_post_is_refused(center: ControlCenter) -> None:
    context = center.context()
    page = center.log_in(context)
    header = page.locator("body").get_attribute("hx-headers")
    assert header is not None
    token = json.loads(header)["X-CSRF-Token"]

    # Cookie and token in hand, but the request names another origin.
    refused = context.request.post(
        f"{center.base_url}/admin/models/{INT8}/load", headers={"origin": "http://evil.test", "x-csrf-token": token}
    )
    assert refused.status == 403 and refused.json()["error"]["code"] == "CSRF_REFUSED"

    # A real cross-site page (served by the browser itself, nothing leaves the machine) posting a logout form, in
    # a profile holding the operator's cookie (not recorded: that page is the one other origin on purpose).
    evil_context = center.browser.new_context()
    evil_context.add_cookies([cast(SetCookieParam, cookie) for cookie in context.cookies()])
    evil = evil_context.new_page()
    form = f"""<form id=f method=post action="{center.base_url}/admin/logout">
        <input name=csrf_token value="{token}"></form><script>document.getElementById('f').submit()</script>"""
    evil.route("http://evil.test/**", lambda route: route.fulfill(status=200, content_type="text/html", body=form))
    with evil.expect_response(f"{center.base_url}/admin/logout") as answer:
        evil.goto("http://evil.test/")
    assert answer.value.status == 403
    evil_context.close()
    page.reload()
    expect(page).to_have_url(f"{center.base_url}/admin")  # still logged in: the forged logout did nothing
    context.close()


def test_the_pages_load_only_the_apps_own_assets(center: ControlCenter) -> None:
    context = center.context()
    page = center.log_in(context)
    for path in ("/admin/jobs", "/admin/sessions", "/admin"):
        page.goto(f"{center.base_url}{path}")
        page.wait_for_load_state("networkidle")
    expect(page.locator("#latency-chart canvas").first).to_be_attached()
    loaded = {url.removeprefix(center.base_url).partition("?")[0] for url in center.requests}
    assert {
        "/static/control/vendor/htmx-2.0.11.min.js",
        "/static/control/vendor/uPlot-1.6.32.iife.min.js",
        "/static/control/control.js",
        "/static/control/control.css",
        "/admin/latency.json",
    } <= loaded, loaded
    context.close()


def test_model_control_activates_unloads_and_shows_a_failure(center: ControlCenter) -> None:
    context = center.context()
    page = center.log_in(context)
    panel = page.locator("#model-control")

    def row(name: str) -> Any:
        return panel.locator(f"tr[data-model='{name}']")

    def api_versions() -> dict[str, dict[str, Any]]:
        with center.api() as api:
            body = api.get("/admin/api/models").json()
        return {v["name"]: v for v in body["versions"]} | {"": {"active": body["active"]}}

    page.click(f"#activate-{INT8}")
    expect(row(INT8)).to_have_attribute("data-active", "true", timeout=SLOW_MS)
    expect(row(INT8).locator(".badge.active")).to_have_text("ACTIVE")
    assert api_versions()[""]["active"] == INT8
    expect(page.locator(f"#diagnostics li[data-model='{INT8}'] .badge.active")).to_be_visible()

    expect(row(FP16)).to_have_attribute("data-state", "unloaded", timeout=SLOW_MS)  # drained, then unloaded
    page.click(f"#load-{FP16}")
    expect(row(FP16)).to_have_attribute("data-state", "available", timeout=SLOW_MS)
    expect(row(FP16).locator(".badge.state-available")).to_have_text("LOADED")
    page.click(f"#unload-{FP16}")
    expect(row(FP16)).to_have_attribute("data-state", "unloaded", timeout=SLOW_MS)
    assert api_versions()[FP16]["state"] == "unloaded"

    page.click(f"#activate-{BROKEN}")
    expect(row(BROKEN)).to_have_attribute("data-state", "failed", timeout=SLOW_MS)
    expect(page.locator("#model-flash")).to_contain_text(f"Activate {BROKEN} failed: MODEL_LOAD_FAILED")
    reason = row(BROKEN).locator(".reason")
    expect(reason).to_contain_text("weights")
    versions = api_versions()
    assert versions[BROKEN]["state"] == "failed" and "best0408" in versions[BROKEN]["reason"]
    assert versions[BROKEN]["reason"].split() == reason.inner_text().split(), "the page shows the API's reason"
    assert versions[""]["active"] == INT8, "a broken version never touches the active one"
    context.close()


def test_a_key_made_on_the_keys_page_is_shown_once_works_and_revoked_is_refused(center: ControlCenter) -> None:
    """The revocation is refused here at once (README: every other replica within about 0.5 s): polled for 2 s."""
    context = center.context()
    page = center.log_in(context)
    page.click("nav >> text=Keys")
    page.fill("#create-key input[name=name]", "browser phones")
    page.fill("#create-key input[name=tenant]", "fleet-browser")
    page.click("#create-key-button")
    key = page.locator("#new-key-text").inner_text().strip()
    assert key.startswith("hzk_"), key
    key_id = key.split("_")[1]
    with httpx.Client(base_url=center.base_url, timeout=30, headers={"authorization": f"Bearer {key}"}) as client:
        assert client.post("/sessions", json={}).status_code == 201

        page.reload()
        row = page.locator(f"tr[data-key-id='{key_id}']")
        expect(row).to_have_attribute("data-status", "active")
        expect(page.locator("#new-key")).to_have_count(0)
        assert key_id in page.content() and key.split("_", 2)[2] not in page.content()  # the prefix, never the secret

        page.click(f"#revoke-{key_id}")
        expect(row).to_have_attribute("data-status", "revoked")

        def refused() -> bool:
            answer = client.post("/sessions", json={})
            return answer.status_code == 401 and answer.json()["error"]["code"] == "INVALID_API_KEY"

        wait_until(refused, "the revoked key refused", within=2.0)
    context.close()
