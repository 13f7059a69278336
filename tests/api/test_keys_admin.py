"""API keys through the admin API: made with the key shown once, listed, read, changed, revoked, each change in
the audit log with the operator's name; refused to anonymous callers and to operators without the admin role."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from app.services.core.errors import InvalidApiKey
from app.services.identity.roles import Role
from app.settings import Settings
from app.wiring.identity import Identity
from tests.conftest import RunningApp
from tests.support.logs import logged_lines

PASSWORD = "correct horse battery staple"
AUTH = httpx.BasicAuth("admin", PASSWORD)
PROFILE = {"height_m": 1.4, "pitch_deg": 8.0, "hfov_deg": 70.0, "mounting": "windshield"}
StartApp = Callable[..., Awaitable[RunningApp]]


@pytest.fixture
async def admin_api(start_app: StartApp, make_settings: Callable[..., Settings]) -> RunningApp:
    return await start_app(make_settings(admin_password=PASSWORD), wait_ready=False)


def identity_of(api: RunningApp) -> Identity:
    identity: Identity = api.app.state.identity
    return identity


async def create_key(api: RunningApp, **body: Any) -> dict[str, Any]:
    payload = {"name": "fleet-a phones", "tenant": "fleet-a", "scopes": ["detect"], **body}
    response = await api.client.post("/admin/api/keys", json=payload, auth=AUTH)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_a_created_key_is_shown_once_and_verifies_to_its_tenant_and_scopes(admin_api: RunningApp) -> None:
    limits = {"frames_per_second": 5, "jobs_in_flight": 2}
    created = await create_key(admin_api, scopes=["detect", "jobs"], limits=limits, device_profile=PROFILE)
    key, record = created["key"], created["record"]
    assert key.startswith("hzk_") and record["key_id"] in key
    assert record["tenant"] == "fleet-a" and record["scopes"] == ["detect", "jobs"] and record["status"] == "active"
    assert record["limits"] == {"frames_per_second": 5.0, "sessions_per_minute": None, "jobs_in_flight": 2}
    assert record["device_profile"] == PROFILE and record["last_used_at"] is None
    principal = await identity_of(admin_api).keys.verify(key)
    assert principal.tenant == "fleet-a" and principal.key_id == record["key_id"]
    reads = [
        await admin_api.client.get("/admin/api/keys", auth=AUTH),
        await admin_api.client.get(f"/admin/api/keys/{record['key_id']}", auth=AUTH),
        await admin_api.client.get("/admin/api/audit", auth=AUTH),
    ]
    for read in reads:
        assert read.status_code == 200, read.text
        assert key not in read.text and key.split("_", 2)[2] not in read.text, "the key is shown once only"
    assert reads[1].json()["key_id"] == record["key_id"] and "key" not in reads[1].json()


async def test_keys_list_newest_first_and_by_tenant(admin_api: RunningApp) -> None:
    first = (await create_key(admin_api, tenant="fleet-b"))["record"]["key_id"]
    second = (await create_key(admin_api, tenant="fleet-c"))["record"]["key_id"]
    listed = (await admin_api.client.get("/admin/api/keys", auth=AUTH)).json()["keys"]
    assert [key["key_id"] for key in listed][:2] == [second, first]
    only_b = await admin_api.client.get("/admin/api/keys", params={"tenant": "fleet-b"}, auth=AUTH)
    assert [key["key_id"] for key in only_b.json()["keys"]] == [first]
    bad = await admin_api.client.get("/admin/api/keys", params={"tenant": "a b"}, auth=AUTH)
    assert bad.status_code == 422


async def test_patch_changes_only_the_fields_sent(admin_api: RunningApp) -> None:
    key_id = (await create_key(admin_api, limits={"jobs_in_flight": 3}))["record"]["key_id"]
    path = f"/admin/api/keys/{key_id}"
    profiled = await admin_api.client.patch(path, json={"device_profile": PROFILE}, auth=AUTH)
    assert profiled.status_code == 200, profiled.text
    assert profiled.json()["device_profile"] == PROFILE and profiled.json()["limits"]["jobs_in_flight"] == 3
    limited = await admin_api.client.patch(path, json={"limits": {"frames_per_second": 2.5}}, auth=AUTH)
    assert limited.json()["limits"]["frames_per_second"] == 2.5 and limited.json()["limits"]["jobs_in_flight"] is None
    assert limited.json()["device_profile"] == PROFILE
    cleared = await admin_api.client.patch(path, json={"device_profile": None}, auth=AUTH)
    assert cleared.json()["device_profile"] is None and cleared.json()["limits"]["frames_per_second"] == 2.5
    principal = await identity_of(admin_api).keys.verify((await create_key(admin_api))["key"])
    assert principal.device_profile is None


async def test_a_revoked_key_is_refused_and_shows_as_revoked(admin_api: RunningApp) -> None:
    created = await create_key(admin_api)
    key_id = created["record"]["key_id"]
    revoked = await admin_api.client.delete(f"/admin/api/keys/{key_id}", auth=AUTH)
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked" and revoked.json()["revoked_at"]
    with pytest.raises(InvalidApiKey):
        await identity_of(admin_api).keys.verify(created["key"])
    read = await admin_api.client.get(f"/admin/api/keys/{key_id}", auth=AUTH)
    assert read.json()["status"] == "revoked"


async def test_an_expired_key_reads_as_expired(admin_api: RunningApp) -> None:
    created = await create_key(admin_api, expires_at=time.time() + 3)
    key_id = created["record"]["key_id"]
    deadline = time.monotonic() + 15
    status = "active"
    while status == "active" and time.monotonic() < deadline:
        status = (await admin_api.client.get(f"/admin/api/keys/{key_id}", auth=AUTH)).json()["status"]
    assert status == "expired"


@pytest.mark.parametrize(
    "body",
    [
        {"scopes": ["detect", "root"]},
        {"scopes": []},
        {"tenant": "fleet a"},
        {"name": ""},
        {"expires_at": 1.0},
        {"limits": {"frames_per_second": 0}},
        {"limits": {"jobs_in_flight": 1.5}},
        {"limits": {"burst": 3}},
        {"device_profile": {**PROFILE, "pitch_deg": 120}},
        {"device_profile": {**PROFILE, "mounting": "kite"}},
        {"colour": "red"},
    ],
)
async def test_a_bad_key_request_is_422_and_makes_nothing(admin_api: RunningApp, body: dict[str, Any]) -> None:
    payload = {"name": "n", "tenant": "fleet-z", "scopes": ["detect"], **body}
    response = await admin_api.client.post("/admin/api/keys", json=payload, auth=AUTH)
    assert response.status_code == 422 and response.json()["error"]["code"] == "VALIDATION_ERROR", response.text
    assert (await admin_api.client.get("/admin/api/keys", params={"tenant": "fleet-z"}, auth=AUTH)).json() == {
        "keys": []
    }


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
async def test_managing_an_unknown_key_is_404(admin_api: RunningApp, method: str) -> None:
    for key_id in ("abcd2345", "not-a-key-id"):
        body: dict[str, Any] | None = {"limits": {}} if method == "PATCH" else None
        response = await admin_api.client.request(method, f"/admin/api/keys/{key_id}", json=body, auth=AUTH)
        assert response.status_code == 404 and response.json()["error"]["code"] == "API_KEY_NOT_FOUND"


async def test_key_management_needs_an_operator(admin_api: RunningApp) -> None:
    key_id = (await create_key(admin_api))["record"]["key_id"]
    attempts: list[tuple[str, str, dict[str, Any] | None]] = [
        ("POST", "/admin/api/keys", {"name": "n", "tenant": "t", "scopes": ["detect"]}),
        ("GET", "/admin/api/keys", None),
        ("GET", f"/admin/api/keys/{key_id}", None),
        ("PATCH", f"/admin/api/keys/{key_id}", {"limits": {}}),
        ("DELETE", f"/admin/api/keys/{key_id}", None),
    ]
    for method, path, body in attempts:
        response = await admin_api.client.request(method, path, json=body)
        assert response.status_code == 401 and response.json()["error"]["code"] == "UNAUTHORIZED", (method, path)
    assert (await admin_api.client.get(f"/admin/api/keys/{key_id}", auth=AUTH)).json()["status"] == "active"


@pytest.mark.parametrize("role", [Role.VIEWER, Role.INSPECTOR])
async def test_a_reader_role_reads_keys_but_changing_one_is_403_role_required(
    admin_api: RunningApp, role: Role
) -> None:
    key_id = (await create_key(admin_api))["record"]["key_id"]
    await identity_of(admin_api).accounts.create(f"{role.value}-1", PASSWORD, role)
    reader = httpx.BasicAuth(f"{role.value}-1", PASSWORD)
    assert (await admin_api.client.get(f"/admin/api/keys/{key_id}", auth=reader)).status_code == 200
    attempts = [
        ("POST", "/admin/api/keys", {"name": "n", "tenant": "t", "scopes": ["detect"]}),
        ("PATCH", f"/admin/api/keys/{key_id}", {"limits": {}}),
        ("DELETE", f"/admin/api/keys/{key_id}", None),
    ]
    for method, path, body in attempts:
        response = await admin_api.client.request(method, path, json=body, auth=reader)
        assert response.status_code == 403, (method, path, response.text)
        error = response.json()["error"]
        assert (
            error["code"] == "ROLE_REQUIRED" and error["details"]["role"] == "admin" and "'admin'" in error["message"]
        )
    assert (await admin_api.client.get(f"/admin/api/keys/{key_id}", auth=AUTH)).json()["status"] == "active"


async def test_every_key_change_is_audited_with_the_operator_name(admin_api: RunningApp) -> None:
    key_id = (await create_key(admin_api))["record"]["key_id"]
    await admin_api.client.patch(f"/admin/api/keys/{key_id}", json={"limits": {"jobs_in_flight": 1}}, auth=AUTH)
    await admin_api.client.delete(f"/admin/api/keys/{key_id}", auth=AUTH)
    entries = (await admin_api.client.get("/admin/api/audit", params={"limit": 3}, auth=AUTH)).json()["entries"]
    assert [(e["actor"], e["action"], e["target"]) for e in entries] == [
        ("admin", "api_key.revoked", key_id),
        ("admin", "api_key.updated", key_id),
        ("admin", "api_key.created", key_id),
    ]
    assert entries[2]["details"] == {"name": "fleet-a phones", "tenant": "fleet-a", "scopes": ["detect"]}
    assert all(entry["at"] <= time.time() for entry in entries)


async def test_the_key_appears_in_no_log_line(start_app: StartApp, make_settings: Callable[..., Settings]) -> None:
    """Every line the process logs, rendered by the app's own formatter."""
    api = await start_app(make_settings(admin_password=PASSWORD, log_level="DEBUG"), wait_ready=False)
    with logged_lines() as lines:
        created = await create_key(api)
        await api.client.get(f"/admin/api/keys/{created['record']['key_id']}", auth=AUTH)
        await identity_of(api).keys.verify(created["key"])
        await api.client.delete(f"/admin/api/keys/{created['record']['key_id']}", auth=AUTH)
    assert any("api_key_created" in line for line in lines), "the log is captured"
    secret = created["key"].split("_", 2)[2]
    assert not [line for line in lines if secret in line]
    assert all(json.loads(line) for line in lines if line.startswith("{"))
