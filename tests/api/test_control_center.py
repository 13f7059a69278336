"""The control center over HTTP (no browser): login, its cookie, logout, CSRF, throttling, the pages' headers, and
the data behind the views. The browser tests (tests/system/test_control_center_browser.py) drive the same pages."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from http.cookies import SimpleCookie
from typing import Any

import httpx
import pytest
from pwdlib import PasswordHash

from app.services.identity.operator_sessions import is_same_origin
from app.services.observability.latency_window import LatencyWindow
from app.settings import Settings
from tests.conftest import DirectRedis, RunningApp
from tests.support.images import scene_with_hazards

PASSWORD = "correct horse battery staple"
ORIGIN = "http://testserver"
StartApp = Callable[..., Awaitable[RunningApp]]


@pytest.fixture
async def center(start_app: StartApp, make_settings: Callable[..., Settings]) -> RunningApp:
    return await start_app(make_settings(admin_password=PASSWORD, admin_login_max_failures=3))


def login_token(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, page
    return match[1]


async def log_in(
    api: RunningApp, password: str = PASSWORD, user: str = "admin", client: httpx.AsyncClient | None = None
) -> httpx.Response:
    client = client or api.client
    form = await client.get("/admin/login", headers={"accept": "text/html"})
    assert form.status_code == 200, form.text
    fields = {"username": user, "password": password, "csrf_token": login_token(form.text), "next": "/admin"}
    origin = str(client.base_url).rstrip("/")
    return await client.post("/admin/login", data=fields, headers={"origin": origin, "accept": "text/html"})


async def csrf_token(api: RunningApp) -> str:
    page = await api.client.get("/admin", headers={"accept": "text/html"})
    assert page.status_code == 200, page.text
    match = re.search(r'"X-CSRF-Token": "([^"]+)"', page.text)
    assert match, page.text
    return match[1]


def set_cookie(response: httpx.Response, name: str) -> Any:
    for header in response.headers.get_list("set-cookie"):
        cookie = SimpleCookie()
        cookie.load(header)
        if name in cookie:
            return cookie[name]
    return None


async def test_pages_redirect_to_login_and_fragments_answer_401(center: RunningApp) -> None:
    for path in ("/admin", "/admin/jobs", "/admin/sessions"):
        response = await center.client.get(path, headers={"accept": "text/html"})
        assert response.status_code == 303 and response.headers["location"] == f"/admin/login?next={path}"
    fragment = await center.client.get("/admin/partials/diagnostics", headers={"hx-request": "true"})
    assert fragment.status_code == 401 and fragment.headers["hx-redirect"] == "/admin/login"
    data = await center.client.get("/admin/latency.json")
    assert data.status_code == 401 and data.json()["error"]["code"] == "UNAUTHORIZED"


async def test_login_sets_a_signed_httponly_strict_cookie_that_expires(center: RunningApp) -> None:
    response = await log_in(center)
    assert response.status_code == 303 and response.headers["location"] == "/admin"
    cookie = set_cookie(response, "hazard_admin")
    assert cookie is not None
    assert cookie["httponly"] and cookie["samesite"] == "strict" and cookie["path"] == "/admin"
    assert int(cookie["max-age"]) == 8 * 3600 and not cookie["secure"]  # plain http in tests
    session_id, _, signature = cookie.value.partition(".")
    assert len(session_id) >= 40 and signature
    assert (await center.client.get("/admin", headers={"accept": "text/html"})).status_code == 200
    center.client.cookies.set("hazard_admin", f"{session_id}.forged", path="/admin")
    forged = await center.client.get("/admin", headers={"accept": "text/html"})
    assert forged.status_code == 303


async def test_wrong_user_or_password_reads_the_same_and_sets_no_cookie(center: RunningApp) -> None:
    answers = [await log_in(center, password="wrong"), await log_in(center, user="root")]
    for answer in answers:
        assert answer.status_code == 401
        assert set_cookie(answer, "hazard_admin") is None
        assert "Wrong user name or password." in answer.text
    first, second = (re.sub(r'value="[^"]*"', "", a.text) for a in answers)
    assert first == second, "the page never tells which field was wrong"


async def test_failed_logins_are_throttled_even_for_the_right_password(center: RunningApp) -> None:
    for _ in range(3):
        assert (await log_in(center, password="guess")).status_code == 401
    throttled = await log_in(center)
    assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) >= 1
    assert set_cookie(throttled, "hazard_admin") is None


async def test_login_needs_the_form_of_this_browser(center: RunningApp) -> None:
    await center.client.get("/admin/login")
    fields = {"username": "admin", "password": PASSWORD, "csrf_token": "made-up"}
    forged = await center.client.post("/admin/login", data=fields, headers={"origin": ORIGIN})
    assert forged.status_code == 403 and set_cookie(forged, "hazard_admin") is None
    cross_site = await center.client.post("/admin/login", data=fields, headers={"origin": "https://evil.example"})
    assert cross_site.status_code == 403 and cross_site.json()["error"]["code"] == "CSRF_REFUSED"


async def test_logout_revokes_the_session_server_side(center: RunningApp, direct_redis: DirectRedis) -> None:
    response = await log_in(center)
    cookie = set_cookie(response, "hazard_admin").value
    token = await csrf_token(center)
    out = await center.client.post(
        "/admin/logout", data={"csrf_token": token}, headers={"origin": ORIGIN, "accept": "text/html"}
    )
    assert out.status_code == 303 and out.headers["location"] == "/admin/login"
    center.client.cookies.set("hazard_admin", cookie, path="/admin")  # the old cookie, kept by an attacker
    again = await center.client.get("/admin", headers={"accept": "text/html"})
    assert again.status_code == 303 and again.headers["location"].startswith("/admin/login")


async def test_state_changes_need_same_origin_and_the_csrf_token(center: RunningApp) -> None:
    await log_in(center)
    token = await csrf_token(center)
    url = "/admin/models/best0408_int8_openvino_model/load"
    cases = [
        ({"origin": "https://evil.example", "x-csrf-token": token}, "cross-site origin"),
        ({"origin": "null", "x-csrf-token": token}, "opaque origin"),
        ({"sec-fetch-site": "cross-site", "x-csrf-token": token}, "fetch metadata says cross-site"),
        ({"origin": ORIGIN}, "no token"),
        ({"origin": ORIGIN, "x-csrf-token": "wrong"}, "wrong token"),
    ]
    for headers, why in cases:
        refused = await center.client.post(url, headers=headers)
        assert refused.status_code == 403, why
        assert refused.json()["error"]["code"] == "CSRF_REFUSED", why
    models = (await center.client.get("/admin/partials/models")).text
    assert 'data-model="best0408_int8_openvino_model" data-state="unloaded"' in models, "nothing was loaded"


async def test_pages_carry_a_strict_content_security_policy(center: RunningApp) -> None:
    await log_in(center)
    page = await center.client.get("/admin", headers={"accept": "text/html"})
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page.text), "every asset is the app's own"
    assert "Hazard Detection Control Center" in page.text


async def test_pages_are_not_part_of_the_documented_api(center: RunningApp) -> None:
    paths = (await center.client.get("/openapi.json")).json()["paths"]
    assert [path for path in paths if path.startswith("/admin") and not path.startswith("/admin/api")] == []


async def test_production_cookies_are_secure_and_admin_without_a_hash_is_disabled(
    start_app: StartApp, make_settings: Callable[..., Settings]
) -> None:
    api = await start_app(
        make_settings(environment="production", admin_password_hash=PasswordHash.recommended().hash(PASSWORD))
    )
    # Secure cookies travel over https only: the login form's own cookie included.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app), base_url="https://testserver") as tls:
        response = await log_in(api, client=tls)
    assert response.status_code == 303, response.text
    assert set_cookie(response, "hazard_admin")["secure"]
    disabled = await start_app(make_settings(environment="production", admin_password=PASSWORD))
    page = await disabled.client.get("/admin/login", headers={"accept": "text/html"})
    assert page.status_code == 503 and "ADMIN_DISABLED" in page.text


async def test_sessions_view_lists_live_sessions_and_diagnostics_the_process(center: RunningApp) -> None:
    await log_in(center)
    session_id = await center.new_session(metadata={"vehicle": "van-7"})
    frame = scene_with_hazards(seed=3)[1]
    detected = await center.client.post(f"/detect/{session_id}", content=frame, headers={"content-type": "image/jpeg"})
    assert detected.status_code == 200
    listing = (await center.client.get("/admin/partials/sessions")).text
    assert f'data-session-id="{session_id}"' in listing and "van-7" in listing
    hazards = await center.client.get(f"/admin/partials/sessions/{session_id}/hazards")
    assert hazards.status_code == 200 and session_id in hazards.text
    diagnostics = (await center.client.get("/admin/partials/diagnostics")).text
    assert "RUNNING" in diagnostics and "best0408_openvino_model" in diagnostics
    latency = (await center.client.get("/admin/latency.json")).json()
    assert sum(latency["counts"]) == 1 and latency["target_ms"] == 150
    assert latency["p95_ms"][-1] is not None or latency["p95_ms"][-2] is not None


def test_latency_window_keeps_recent_detect_answers_only() -> None:
    now = [1000.0]
    window = LatencyWindow("/detect/{session_id}", capacity=4, clock=lambda: now[0])
    window.observe("/sessions", 200, 9.0)  # another route
    window.observe("/detect/{session_id}", 429, 0.001)  # refused before any work
    for seconds in (0.010, 0.020, 0.030, 0.040, 0.050):  # one more than the ring holds: the oldest goes
        window.observe("/detect/{session_id}", 200, seconds)
    window.observe("/detect/{session_id}", 504, 1.0)  # late answers count
    series = window.series(window_seconds=60, bucket_seconds=10)
    assert len(series.starts) == 6 and series.counts[-1] == 4
    assert series.p50_ms[-1] == pytest.approx(45.0) and series.p95_ms[-1] == pytest.approx(857.5)
    now[0] += 120  # two minutes later nothing is recent
    assert sum(window.series(window_seconds=60, bucket_seconds=10).counts) == 0


def test_same_origin_check() -> None:
    assert is_same_origin("h:1", "http://h:1", "same-origin")
    assert is_same_origin("h:1", None, None)  # not a browser: the CSRF token still decides
    assert not is_same_origin("h:1", "http://h:2", None)
    assert not is_same_origin("h:1", "null", None)
    assert not is_same_origin("h:1", None, "same-site")
    assert not is_same_origin(None, "http://h:1", None)


async def test_restart_buttons_send_a_restart_per_role_or_process_and_audit_it(center: RunningApp) -> None:
    await log_in(center)
    process_id = center.app.state.parts.process.process_id
    page = (await center.client.get("/admin", headers={"accept": "text/html"})).text
    assert "Restart web API" in page and "Restart worker" in page
    assert f'<option value="{process_id}">' in page.split('id="restart-api"')[1].split("</select>")[0]
    diagnostics = (await center.client.get("/admin/partials/diagnostics")).text
    assert f"<code>{process_id}</code>" in diagnostics, "each process shows the id a restart replaces"
    headers = {"origin": ORIGIN, "x-csrf-token": await csrf_token(center), "hx-request": "true"}
    sent = await center.client.post("/admin/fleet/restart", data={"target": "role:api"}, headers=headers)
    assert sent.status_code == 200 and "Restart sent to every api process" in sent.text, sent.text
    gone = await center.client.post("/admin/fleet/restart", data={"target": "worker-gone"}, headers=headers)
    assert gone.status_code == 404 and "PROCESS_NOT_FOUND" in gone.text
    audit = (await center.client.get("/admin/audit", headers={"accept": "text/html"})).text
    assert "fleet.restart" in audit and "role:api" in audit and "worker-gone" not in audit
