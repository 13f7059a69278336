"""API keys at the front door (app/http/auth.py): how a key is sent, what a bad one answers, throttling of
failed attempts, per-key limits, the production TLS guard, and AUTH_MODE=off. Route by route: test_tenant_matrix.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.services.identity.key_format import KEY_PREFIX, parse_key
from app.services.identity.keys import KeyStore
from app.services.identity.limits import KeyLimits
from app.services.identity.principal import Scope
from app.settings import Settings
from tests.conftest import DirectRedis, RunningApp

StartApp = Callable[..., Any]
MakeSettings = Callable[..., Settings]
FRAME = (Path(__file__).resolve().parents[2] / "artillery" / "frames" / "road_1280x720.jpg").read_bytes()
DETECT, JOBS = frozenset({Scope.DETECT}), frozenset({Scope.JOBS})
ADMIN_TOKEN = "operator-token-" + "t" * 24


def key_store(running: RunningApp) -> KeyStore:
    store: KeyStore = running.app.state.identity.keys
    return store


async def new_key(running: RunningApp, tenant: str = "fleet-a", scopes: frozenset[Scope] = DETECT, **more: Any) -> str:
    return (await key_store(running).create(name="test key", tenant=tenant, scopes=scopes, **more)).key


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def error_of(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["error"]
    return body


def without_request_id(response: httpx.Response) -> dict[str, Any]:
    return {name: value for name, value in error_of(response).items() if name != "request_id"}


@pytest.fixture
async def keyed(start_app: StartApp, make_settings: MakeSettings) -> RunningApp:
    """AUTH_MODE=keys; failed attempts are not throttled here (one test throttles them on purpose)."""
    running: RunningApp = await start_app(make_settings(auth_mode="keys", api_key_failures_per_minute=10_000))
    return running


async def test_a_request_without_a_key_is_401_auth_required(keyed: RunningApp) -> None:
    response = await keyed.client.post("/sessions", json={})
    assert response.status_code == 401 and error_of(response)["code"] == "AUTH_REQUIRED"
    assert "X-API-Key" in error_of(response)["message"]


async def test_unknown_revoked_expired_and_malformed_keys_get_one_answer(
    keyed: RunningApp, direct_redis: DirectRedis
) -> None:
    good = await new_key(keyed)
    revoked = await new_key(keyed)
    await key_store(keyed).revoke(parse_key(revoked).key_id)  # type: ignore[union-attr]
    expired = await new_key(keyed, expires_at=time.time() + 3600)
    expired_id = parse_key(expired).key_id  # type: ignore[union-attr]
    # Expired an hour early, straight in Redis: this process has not read (cached) the record yet.
    record = next(key for key in direct_redis.client.scan_iter(f"*api-keys}}:key:{expired_id}"))
    direct_redis.client.hset(record, "expires_at", repr(time.time() - 1))
    parsed = parse_key(good)
    assert parsed is not None
    unknown = f"{KEY_PREFIX}zzzzzzzz_{parsed.secret}"
    wrong_secret = f"{KEY_PREFIX}{parsed.key_id}_{'A' * len(parsed.secret)}"
    presented = [unknown, wrong_secret, revoked, expired, "hzk_short", "not-a-key", "x" * 2000]
    answers = [await keyed.client.post("/sessions", json={}, headers=bearer(key)) for key in presented]
    assert {response.status_code for response in answers} == {401}
    bodies = [without_request_id(response) for response in answers]
    assert bodies[0]["code"] == "INVALID_API_KEY" and all(body == bodies[0] for body in bodies), bodies
    assert (await keyed.client.post("/sessions", json={}, headers=bearer(good))).status_code == 201


async def test_x_api_key_and_bearer_both_carry_a_key(keyed: RunningApp) -> None:
    key = await new_key(keyed)
    by_header = await keyed.client.post("/sessions", json={}, headers={"x-api-key": key})
    by_bearer = await keyed.client.post("/sessions", json={}, headers=bearer(key))
    assert by_header.status_code == by_bearer.status_code == 201
    session_id = by_header.json()["session_id"]
    assert (await keyed.client.get(f"/sessions/{session_id}", headers=bearer(key))).status_code == 200


async def test_a_key_without_the_scope_is_403_naming_it(keyed: RunningApp) -> None:
    jobs_only = await new_key(keyed, scopes=JOBS)
    response = await keyed.client.post("/sessions", json={}, headers=bearer(jobs_only))
    assert response.status_code == 403
    assert error_of(response)["code"] == "SCOPE_REQUIRED" and error_of(response)["details"] == {"scope": "detect"}
    assert "'detect'" in error_of(response)["message"]
    admin = await new_key(keyed, scopes=frozenset({Scope.ADMIN}))  # admin is every scope
    assert (await keyed.client.post("/sessions", json={}, headers=bearer(admin))).status_code == 201


async def test_another_tenants_ids_answer_as_unknown_ones(keyed: RunningApp) -> None:
    a_detect, b_detect = await new_key(keyed, "fleet-a"), await new_key(keyed, "fleet-b")
    a_jobs, b_jobs = await new_key(keyed, "fleet-a", JOBS), await new_key(keyed, "fleet-b", JOBS)
    session_id = (await keyed.client.post("/sessions", json={}, headers=bearer(a_detect))).json()["session_id"]
    job_id = (await keyed.client.post("/jobs", json={}, headers=bearer(a_jobs))).json()["job_id"]
    unknown_session, unknown_job = "S" * len(session_id), "J" * len(job_id)
    for path, mine, unknown in [
        (f"/sessions/{session_id}", session_id, unknown_session),
        (f"/jobs/{job_id}", job_id, unknown_job),
    ]:
        key = b_detect if path.startswith("/sessions") else b_jobs
        foreign = await keyed.client.get(path, headers=bearer(key))
        missing = await keyed.client.get(path.replace(mine, unknown), headers=bearer(key))
        assert foreign.status_code == missing.status_code == 404
        assert json.dumps(without_request_id(foreign)).replace(mine, "<id>") == json.dumps(
            without_request_id(missing)
        ).replace(unknown, "<id>")
    # A job of tenant B cannot be tied to tenant A's session either.
    tied = await keyed.client.post("/jobs", json={"session_id": session_id}, headers=bearer(b_jobs))
    assert tied.status_code == 404 and error_of(tied)["code"] == "SESSION_NOT_FOUND"
    # And A still has both, untouched.
    assert (await keyed.client.get(f"/sessions/{session_id}", headers=bearer(a_detect))).json()["status"] == "created"
    assert (await keyed.client.get(f"/jobs/{job_id}", headers=bearer(a_jobs))).json()["status"] == "open"


async def test_jobs_list_the_callers_tenant_and_admins_see_or_filter_all(keyed: RunningApp) -> None:
    a_jobs, b_jobs = await new_key(keyed, "fleet-a", JOBS), await new_key(keyed, "fleet-b", JOBS)
    admin = await new_key(keyed, "ops", frozenset({Scope.ADMIN}))
    a_job = (await keyed.client.post("/jobs", json={}, headers=bearer(a_jobs))).json()["job_id"]
    b_job = (await keyed.client.post("/jobs", json={}, headers=bearer(b_jobs))).json()["job_id"]

    async def listed(key: str, **params: str) -> list[str]:
        response = await keyed.client.get("/jobs", params=params, headers=bearer(key))
        assert response.status_code == 200, response.text
        return [job["job_id"] for job in response.json()["items"]]

    assert await listed(a_jobs) == [a_job]
    assert await listed(b_jobs) == [b_job]
    assert await listed(b_jobs, tenant="fleet-a") == [b_job]  # the filter is the admins'; others see their own
    assert await listed(admin) == [b_job, a_job]
    assert await listed(admin, tenant="fleet-a") == [a_job]
    assert (await keyed.client.get(f"/jobs/{a_job}", headers=bearer(admin))).status_code == 200


async def test_failed_attempts_are_throttled_per_address_and_a_good_key_still_works(
    start_app: StartApp, make_settings: MakeSettings
) -> None:
    running: RunningApp = await start_app(make_settings(auth_mode="keys", api_key_failures_per_minute=3))
    good = await new_key(running)
    bad = bearer(f"{KEY_PREFIX}zzzzzzzz_{'A' * 43}")
    for _ in range(3):
        assert (await running.client.post("/sessions", json={}, headers=bad)).status_code == 401
    # A valid key never costs the counter, before or after the limit: a fleet behind one NAT keeps working.
    assert (await running.client.post("/sessions", json={}, headers=bearer(good))).status_code == 201
    throttled = await running.client.post("/sessions", json={}, headers=bad)
    assert throttled.status_code == 429 and error_of(throttled)["code"] == "RATE_LIMITED"
    assert 1 <= int(throttled.headers["retry-after"]) <= 60
    assert (await running.client.post("/sessions", json={}, headers=bearer(good))).status_code == 201
    # Another address has its own count; no key at all is not a failed attempt.
    elsewhere = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=running.app, client=("10.9.8.7", 5000)), base_url="http://testserver"
    )
    async with elsewhere:
        assert (await elsewhere.post("/sessions", json={}, headers=bad)).status_code == 401
    assert (await running.client.post("/sessions", json={})).status_code == 401


async def test_the_operators_bearer_token_is_no_failed_key_attempt(
    start_app: StartApp, make_settings: MakeSettings
) -> None:
    running: RunningApp = await start_app(
        make_settings(auth_mode="keys", api_key_failures_per_minute=1, admin_token=ADMIN_TOKEN)
    )
    for _ in range(3):
        models = await running.client.get("/admin/api/models", headers=bearer(ADMIN_TOKEN))
        assert models.status_code == 200, models.text
    deep = await running.client.get("/health/deep", headers=bearer(ADMIN_TOKEN))  # an operator may run it
    assert deep.status_code == 200, deep.text
    first_failure = await running.client.post("/sessions", json={}, headers=bearer(f"{KEY_PREFIX}zzzzzzzz_{'A' * 43}"))
    assert first_failure.status_code == 401  # not 429: the operator's requests counted nothing


async def test_health_deep_needs_a_key_or_an_operator_in_keys_mode(keyed: RunningApp) -> None:
    anonymous = await keyed.client.get("/health/deep")
    assert anonymous.status_code == 401 and error_of(anonymous)["code"] == "AUTH_REQUIRED"
    any_scope = await new_key(keyed, scopes=JOBS)
    assert (await keyed.client.get("/health/deep", headers=bearer(any_scope))).status_code == 200
    assert (await keyed.client.get("/health/live")).status_code == 200
    assert (await keyed.client.get("/health/ready")).status_code == 200


async def test_metrics_need_the_metrics_token_when_one_is_set(start_app: StartApp, make_settings: MakeSettings) -> None:
    token = "scrape-" + "m" * 32
    running: RunningApp = await start_app(make_settings(auth_mode="keys", metrics_token=token))
    assert (await running.client.get("/metrics")).status_code == 401
    assert (await running.client.get("/metrics", headers=bearer("wrong"))).status_code == 401
    scraped = await running.client.get("/metrics", headers=bearer(token))
    assert scraped.status_code == 200 and "hazard_" in scraped.text


async def test_a_keys_limits_replace_the_per_address_ones(start_app: StartApp, make_settings: MakeSettings) -> None:
    running: RunningApp = await start_app(make_settings(auth_mode="keys"))
    slow = await new_key(running, limits=KeyLimits(sessions_per_minute=2, frames_per_second=1))
    other = await new_key(running)
    created = [await running.client.post("/sessions", json={}, headers=bearer(slow)) for _ in range(3)]
    assert [response.status_code for response in created] == [201, 201, 429]
    assert error_of(created[2])["details"]["client"].startswith("key:")  # the key's budget, not the address's
    assert (await running.client.post("/sessions", json={}, headers=bearer(other))).status_code == 201
    session_id = created[0].json()["session_id"]
    frame = {"content": FRAME, "headers": {"content-type": "image/jpeg", **bearer(slow)}}
    first = await running.client.post(f"/detect/{session_id}", **frame)  # type: ignore[arg-type]
    second = await running.client.post(f"/detect/{session_id}", **frame)  # type: ignore[arg-type]
    assert first.status_code == 200, first.text
    assert second.status_code == 429 and "retry-after" in second.headers
    assert error_of(second)["details"] == {"frames_per_second": 1.0}


async def test_production_refuses_a_key_that_did_not_come_over_https(
    start_app: StartApp, make_settings: MakeSettings
) -> None:
    running: RunningApp = await start_app(make_settings(environment="production", trusted_proxies="127.0.0.1"))
    key = await new_key(running)
    plain = await running.client.post("/sessions", json={}, headers=bearer(key))
    assert plain.status_code == 403 and error_of(plain)["code"] == "TLS_REQUIRED"
    assert (await running.client.post("/sessions", json={})).status_code == 401  # keys mode is production's default
    forwarded = {**bearer(key), "x-forwarded-proto": "https"}
    assert (await running.client.post("/sessions", json={}, headers=forwarded)).status_code == 201
    direct_tls = httpx.AsyncClient(transport=httpx.ASGITransport(app=running.app), base_url="https://testserver")
    untrusted = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=running.app, client=("203.0.113.9", 5000)), base_url="http://testserver"
    )
    async with direct_tls, untrusted:
        assert (await direct_tls.post("/sessions", json={}, headers=bearer(key))).status_code == 201
        spoofed = await untrusted.post("/sessions", json={}, headers=forwarded)  # only a trusted proxy is believed
        assert spoofed.status_code == 403 and error_of(spoofed)["code"] == "TLS_REQUIRED"


async def test_auth_off_serves_anonymous_callers_as_local_and_still_honours_keys(api: RunningApp) -> None:
    assert api.app.state.identity.mode == "off"
    anonymous_session = await api.new_session()
    fleet_key = await new_key(api, "fleet-a")
    jobs_key = await new_key(api, "fleet-a", JOBS)
    keyed_session = (await api.client.post("/sessions", json={}, headers=bearer(fleet_key))).json()["session_id"]
    assert (await api.client.get(f"/sessions/{keyed_session}")).status_code == 404  # local cannot see fleet-a's
    assert (await api.client.get(f"/sessions/{anonymous_session}", headers=bearer(fleet_key))).status_code == 404
    assert (await api.client.get(f"/sessions/{anonymous_session}")).status_code == 200
    assert (await api.client.post("/sessions", json={}, headers=bearer(jobs_key))).status_code == 403
    invalid = await api.client.post("/sessions", json={}, headers=bearer("hzk_nonsense"))
    assert invalid.status_code == 401 and error_of(invalid)["code"] == "INVALID_API_KEY"
    docs = await api.client.get("/docs")
    assert "AUTH_MODE=off" in docs.text


async def test_docs_carry_no_banner_in_keys_mode(keyed: RunningApp) -> None:
    docs = await keyed.client.get("/docs")
    assert docs.status_code == 200 and "AUTH_MODE=off" not in docs.text


async def test_keys_never_appear_in_logs(
    start_app: StartApp, make_settings: MakeSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every log line of a run in which keys are created, used, refused, revoked and sent where they are wrong."""
    running: RunningApp = await start_app(make_settings(auth_mode="keys", log_level="DEBUG"))
    good = await new_key(running)
    jobs_only = await new_key(running, scopes=JOBS)
    revoked = await new_key(running)
    session_id = (await running.client.post("/sessions", json={}, headers=bearer(good))).json()["session_id"]
    await running.client.post(
        f"/detect/{session_id}", content=FRAME, headers={"content-type": "image/jpeg", "x-api-key": good}
    )
    await key_store(running).revoke(parse_key(revoked).key_id)  # type: ignore[union-attr]
    for key in (revoked, jobs_only, good[:-1] + "A", "hzk_" + "q" * 60):
        await running.client.post("/sessions", json={}, headers=bearer(key))
    await running.client.get("/admin/api/models", headers=bearer(good))  # a key where an operator is expected
    output = capsys.readouterr()
    logged = output.out + output.err
    assert "api_key_created" in logged and "session_id" in logged  # the capture did see the run's lines
    for key in (good, jobs_only, revoked):
        secret = parse_key(key).secret  # type: ignore[union-attr]
        assert key not in logged and secret not in logged and secret[:16] not in logged
