"""The hazard registry through HTTP: a drive's confirmed hazards reach it off the request path (polled, bounded),
operators' verdicts and their history, refused moves, the streamed exports, passes that find hazards fixed, and a
registry that is down while vehicles drive: detection goes on, readiness says degraded, nothing is lost."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import geojson
import pytest
from PIL import Image

from app.settings import Settings
from hazard_client.cli import run
from tests.api.test_hazards import DRIVE_RATE, JPEG, ROAD, drive_frames, rfc3339, send_drive
from tests.conftest import RunningApp
from tests.support.redis_process import RedisProcess
from tests.support.server import Server
from tests.support.waiting import wait_for

MakeSettings = Callable[..., Settings]
StartApp = Callable[..., Awaitable[RunningApp]]
TOKEN = "registry-test-operator-token-0123456789"
OPERATOR = {"authorization": f"Bearer {TOKEN}"}
FAST = {**DRIVE_RATE, "admin_token": TOKEN, "registry_replay_seconds": 0.1, "registry_connect_timeout_seconds": 0.3}


def blank_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (320, 180), (128, 128, 128)).save(buffer, format="JPEG")
    return buffer.getvalue()


async def registry_hazards(api: RunningApp, **params: Any) -> list[dict[str, Any]]:
    response = await api.client.get("/hazards/registry", params=params)
    assert response.status_code == 200, response.text
    hazards: list[dict[str, Any]] = response.json()["hazards"]
    return hazards


async def wait_for_registry(api: RunningApp, reports: int = 1, **params: Any) -> list[dict[str, Any]]:
    """Every placed hazard in the registry with `reports` reports: written off the request path, so polled."""
    found: list[dict[str, Any]] = []

    async def arrived() -> bool:
        nonlocal found
        found = await registry_hazards(api, **params)
        return len(found) == len(ROAD.hazards) and all(h["reports"] == reports for h in found)

    await wait_for(arrived, f"{len(ROAD.hazards)} hazards with {reports} reports in the registry", within=30)
    return found


async def send_blank_drive(api: RunningApp, vehicle: int) -> None:
    """The drive's GPS and times with a camera that sees nothing, then a frame far away (ends every pass)."""
    session_id = await api.new_session()
    body = blank_jpeg()
    frames = drive_frames(vehicle=vehicle)[::3]
    last = frames[-1][1]
    far = {**last, "lat": last["lat"] + 0.01, "captured_at": rfc3339(1_760_000_000.0 + vehicle * 100 + 60)}
    for _, params in [*frames, (b"", far)]:
        response = await api.client.post(f"/detect/{session_id}", params=params, content=body, headers=JPEG)
        assert response.status_code == 200, response.text


async def test_a_drive_fills_the_registry_and_a_second_counts_a_report_each(
    start_app: StartApp, make_settings: MakeSettings
) -> None:
    api = await start_app(make_settings(**FAST))
    await send_drive(api, await api.new_session(), vehicle=0)
    found = await wait_for_registry(api)
    assert {h["label"] for h in found} == {h.label for h in ROAD.hazards}
    assert all(
        h["status"] == "open" and h["allowed_moves"] == ["verify", "reject", "suspect_fixed", "close"] for h in found
    )
    await send_drive(api, await api.new_session(), vehicle=1)
    again = await wait_for_registry(api, reports=2)
    assert [h["id"] for h in again] == [h["id"] for h in found]  # the same records, one more report each
    only = await registry_hazards(api, label=ROAD.hazards[0].label, status="open")
    assert only and all(h["label"] == ROAD.hazards[0].label for h in only)
    assert await registry_hazards(api, bbox="0,0,1,1") == []
    assert await registry_hazards(api, since="2100-01-01T00:00:00Z") == []
    ready = (await api.client.get("/health/ready")).json()
    assert ready["checks"]["registry"]["ok"] is True and ready["degraded"] is False
    assert ready["checks"]["registry"]["spatial_index"] == "lat_lon"  # SQLite: no PostGIS


async def test_verdicts_history_refused_moves_and_exports(start_app: StartApp, make_settings: MakeSettings) -> None:
    api = await start_app(make_settings(**FAST))
    await send_drive(api, await api.new_session())
    first, second, *_ = await wait_for_registry(api)

    anonymous = await api.client.post(f"/hazards/{first['id']}/verdict", json={"category": "pothole"})
    assert anonymous.status_code == 401
    verdict = await api.client.post(
        f"/hazards/{first['id']}/verdict", json={"category": "utility_cut", "note": "gas works"}, headers=OPERATOR
    )
    assert verdict.status_code == 200, verdict.text
    assert verdict.json()["status"] == "verified"
    detail = (await api.client.get(f"/hazards/{first['id']}")).json()
    assert [(e["move"], e["to_status"], e["actor"]) for e in detail["history"]] == [
        ("report", "open", "system"),
        ("verify", "verified", "admin"),
    ]
    assert detail["history"][1]["category"] == "utility_cut" and detail["history"][1]["note"] == "gas works"

    rejected = await api.client.post(
        f"/hazards/{second['id']}/verdict", json={"category": "not_an_issue"}, headers=OPERATOR
    )
    assert rejected.json()["status"] == "rejected"
    refused = await api.client.post(f"/hazards/{second['id']}/close", headers=OPERATOR)
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "TRANSITION_NOT_ALLOWED"
    assert refused.json()["error"]["details"]["allowed"] == []
    closed = await api.client.post(f"/hazards/{first['id']}/close", json={"note": "repaired"}, headers=OPERATOR)
    assert closed.json()["status"] == "closed"

    assert (await api.client.get("/hazards/999999")).status_code == 404
    missing = await api.client.post("/hazards/999999/verdict", json={"category": "pothole"}, headers=OPERATOR)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "HAZARD_NOT_FOUND"
    assert (await api.client.get("/hazards/registry", params={"limit": 100_000})).status_code == 422
    bad = await api.client.post(f"/hazards/{first['id']}/verdict", json={"category": "meteor"}, headers=OPERATOR)
    assert bad.status_code == 422

    await check_exports(api, {first["id"]: "closed", second["id"]: "rejected"})


EXPORTS = ("/hazards/export.geojson", "/hazards/export.csv", "/hazards/export/open311")


async def test_an_area_or_page_too_large_is_refused_naming_the_limit(
    start_app: StartApp, make_settings: MakeSettings
) -> None:
    api = await start_app(make_settings(registry_max_bbox_km2=5000, registry_max_page_size=20))
    berlin = "13.0,52.3,13.8,52.7"  # about 2,400 km²
    brandenburg = "11.2,51.3,14.8,53.6"  # about 62,000 km²
    for path in ("/hazards/registry", *EXPORTS):
        assert (await api.client.get(path, params={"bbox": berlin})).status_code == 200, path
        refused = await api.client.get(path, params={"bbox": brandenburg})
        assert refused.status_code == 422, (path, refused.text)
        error = refused.json()["error"]
        assert error["code"] == "VALIDATION_ERROR" and "5,000 km²" in error["message"]
        assert error["details"]["max_area_km2"] == 5000 and 60_000 < error["details"]["area_km2"] < 64_000
    too_long = await api.client.get("/hazards/registry", params={"limit": 21})
    assert too_long.status_code == 422
    assert "20" in too_long.json()["error"]["details"]["errors"][0]["message"]


async def check_exports(api: RunningApp, statuses: dict[int, str]) -> None:
    gj = await api.client.get("/hazards/export.geojson")
    assert gj.status_code == 200 and gj.headers["content-type"] == "application/geo+json"
    parsed = geojson.loads(gj.text)
    assert parsed.is_valid, parsed.errors()
    assert len(parsed["features"]) == len(ROAD.hazards)
    by_id = {f["id"]: f["properties"]["status"] for f in parsed["features"]}
    assert {k: by_id[k] for k in statuses} == statuses

    table = await api.client.get("/hazards/export.csv")
    assert table.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(table.text)))
    assert len(rows) == len(ROAD.hazards)
    assert {int(r["id"]): r["status"] for r in rows if int(r["id"]) in statuses} == statuses
    assert list(rows[0]) == [
        "id", "label", "status", "lat", "lon", "uncertainty_m", "first_reported", "last_reported", "reports",
        "best_photo_url",
    ]  # fmt: skip

    feed = (await api.client.get("/hazards/export/open311")).json()
    assert len(feed) == len(ROAD.hazards)
    assert {r["service_request_id"]: r["status"] for r in feed if int(r["service_request_id"]) in statuses} == {
        str(k): "closed" for k in statuses
    }
    assert {"lat", "long", "media_url", "requested_datetime", "updated_datetime", "service_name"} <= set(feed[0])
    filtered = await api.client.get("/hazards/export.csv", params={"status": "closed"})
    assert len(list(csv.DictReader(io.StringIO(filtered.text)))) == 1


async def test_clean_passes_make_every_hazard_suspected_fixed(start_app: StartApp, make_settings: MakeSettings) -> None:
    api = await start_app(make_settings(**FAST))
    await send_drive(api, await api.new_session(), vehicle=0)
    await wait_for_registry(api)
    for vehicle in (1, 2, 3):  # later drives past the same spots: the camera sees nothing there any more
        await send_blank_drive(api, vehicle)

    async def all_suspected() -> bool:
        return all(h["status"] == "suspected_fixed" for h in await registry_hazards(api))

    await wait_for(all_suspected, "every hazard suspected_fixed after 3 clean passes", within=30)
    hazard = (await registry_hazards(api))[0]
    history = (await api.client.get(f"/hazards/{hazard['id']}")).json()["history"]
    assert history[-1]["move"] == "suspect_fixed" and history[-1]["actor"] == "system"


async def test_a_locked_registry_degrades_and_loses_nothing(
    start_app: StartApp, make_settings: MakeSettings, tmp_path: Path
) -> None:
    api = await start_app(make_settings(**FAST))
    lock = sqlite3.connect(tmp_path / "registry.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # the registry's file is locked: every write times out
    try:
        await send_drive(api, await api.new_session())  # every frame answered 200 (send_drive asserts it)

        async def degraded() -> bool:
            ready = (await api.client.get("/health/ready")).json()
            return bool(ready["ready"] and ready["degraded"] and not ready["checks"]["registry"]["ok"])

        await wait_for(degraded, "readiness says the registry is down, and stays ready", within=30)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    await wait_for_registry(api)  # every confirmed hazard, replayed

    async def healthy() -> bool:
        return bool((await api.client.get("/health/ready")).json()["checks"]["registry"]["ok"])

    await wait_for(healthy, "registry healthy again", within=30)


@pytest.fixture(scope="module")
def server(redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    process = Server(redis_server.url, tmp_path_factory.mktemp("registry-cli"), MODEL_WARMUP_REQUESTS="1")
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


@pytest.mark.parametrize("export_format", ["geojson", "csv", "open311"])
def test_the_command_line_exports_the_registry(server: Server, tmp_path: Path, export_format: str) -> None:
    out = tmp_path / f"hazards.{export_format}"
    bbox = "13.0,52.0,13.1,52.1"
    assert run(["map", "export", "--format", export_format, "--bbox", bbox, "--status", "open", "--out", str(out),
                "--server", server.base_url]) == 0  # fmt: skip
    text = out.read_text(encoding="utf-8")
    if export_format == "geojson":
        assert geojson.loads(text).is_valid and json.loads(text)["features"] == []
    elif export_format == "csv":
        assert next(csv.reader(io.StringIO(text)))[:3] == ["id", "label", "status"]
    else:
        assert json.loads(text) == []
    bad = run(["map", "export", "--bbox", "10,50,9,51", "--out", str(out), "--server", server.base_url])
    assert bad != 0
