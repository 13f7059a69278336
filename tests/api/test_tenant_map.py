"""The fleet's hazard map per tenant (AUTH_MODE=keys): a tenant's reports never merge into another's entries, a
tenant's key reads its own map, an admin key reads every tenant's or filters one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from app.services.identity.principal import Scope
from app.settings import Settings
from tests.api.test_hazards import DRIVE_RATE, JPEG, ROAD, assert_valid_geojson, drive_frames
from tests.conftest import RunningApp

TENANT_A, TENANT_B = "fleet-a", "fleet-b"
BBOX = ",".join(
    str(value)
    for value in (
        min(h.lon for h in ROAD.hazards) - 0.001,
        min(h.lat for h in ROAD.hazards) - 0.001,
        max(h.lon for h in ROAD.hazards) + 0.001,
        max(h.lat for h in ROAD.hazards) + 0.001,
    )
)


async def key(api: RunningApp, tenant: str, *scopes: Scope) -> dict[str, str]:
    created = await api.app.state.identity.keys.create(name=tenant, tenant=tenant, scopes=frozenset(scopes))
    return {"authorization": f"Bearer {created.key}"}


async def drive_as(api: RunningApp, headers: dict[str, str]) -> str:
    session = await api.client.post("/sessions", json={}, headers=headers)
    assert session.status_code == 201, session.text
    session_id = str(session.json()["session_id"])
    for body, params in drive_frames():
        response = await api.client.post(
            f"/detect/{session_id}", params=params, content=body, headers={**JPEG, **headers}
        )
        assert response.status_code == 200, response.text
    return session_id


async def map_of(api: RunningApp, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    found = assert_valid_geojson(await api.client.get("/hazards", params={"bbox": BBOX, **params}, headers=headers))
    features: list[dict[str, Any]] = found["features"]
    return features


async def test_each_tenant_has_its_own_map_and_an_admin_sees_them_all(
    start_app: Callable[[Settings], Awaitable[RunningApp]], make_settings: Callable[..., Settings]
) -> None:
    api = await start_app(make_settings(auth_mode="keys", **DRIVE_RATE))
    a = await key(api, TENANT_A, Scope.DETECT, Scope.MAP_READ)
    b = await key(api, TENANT_B, Scope.DETECT, Scope.MAP_READ)
    admin = await key(api, "ops", Scope.ADMIN)
    await drive_as(api, a)
    assert len(await map_of(api, a)) == len(ROAD.hazards)
    assert await map_of(api, b) == []  # tenant A's hazards are invisible to tenant B
    assert await map_of(api, b, tenant=TENANT_A) == []  # a tenant's key cannot pick another tenant's map
    await drive_as(api, b)  # the same road: B's reports make B's own entries, never A's
    for headers in (a, b):
        features = await map_of(api, headers)
        assert len(features) == len(ROAD.hazards)
        assert all(f["properties"]["reports"] == 1 for f in features)
    a_ids = {f["properties"]["hazard_id"] for f in await map_of(api, a)}
    b_ids = {f["properties"]["hazard_id"] for f in await map_of(api, b)}
    assert not a_ids & b_ids
    everyone = {f["properties"]["hazard_id"] for f in await map_of(api, admin)}
    assert everyone == a_ids | b_ids
    assert {f["properties"]["hazard_id"] for f in await map_of(api, admin, tenant=TENANT_B)} == b_ids
    near = await api.client.get(
        "/hazards", params={"near": f"{ROAD.hazards[0].lat},{ROAD.hazards[0].lon}", "limit": 2}, headers=admin
    )
    assert len(assert_valid_geojson(near)["features"]) == 2  # every tenant's, nearest first, within `limit`
