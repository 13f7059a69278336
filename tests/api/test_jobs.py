"""Batch jobs through one app with its embedded worker: real Redis, real SAQ queue, real model."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import geojson
import httpx
import pytest
import redis.asyncio as redis

from app.settings import Settings
from tests.api.test_control_center import PASSWORD, log_in
from tests.api.test_hazards import ROAD, drive_frames
from tests.conftest import RunningApp, both_redis_backends
from tests.support.detections import boxes
from tests.support.images import encode, scene, scene_with_hazards
from tests.support.waiting import wait_for

StartApp = Callable[..., Any]
# Sessions on one Redis or a cluster; the queue and job state always on a standalone one (QUEUE_REDIS_URL).
pytestmark = both_redis_backends


def frame(seed: int) -> bytes:
    return encode(scene(seed).image, quality=85)


def files(frames: list[bytes], metas: list[dict[str, Any]] | None = None) -> list[tuple[str, Any]]:
    parts: list[tuple[str, Any]] = []
    for i, data in enumerate(frames):
        parts.append(("file", (f"frame-{i:03d}.jpg", data, "image/jpeg")))
        if metas is not None:
            parts.append(("meta", (None, json.dumps(metas[i]))))
    return parts


async def job_status(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    response = await client.get(f"/jobs/{job_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def wait_finished(client: httpx.AsyncClient, job_id: str, within: float = 60.0) -> dict[str, Any]:
    async def finished() -> bool:
        return (await job_status(client, job_id))["status"] in ("completed", "failed", "cancelled")

    await wait_for(finished, f"job {job_id} finished", within)
    return await job_status(client, job_id)


async def results(client: httpx.AsyncClient, job_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/jobs/{job_id}/results", params={"limit": 500})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def answers(items: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Each frame's detections but their hazard ids, which are the job's own."""
    return [[{k: v for k, v in d.items() if k != "hazard_id"} for d in item["detections"]] for item in items]


@pytest.fixture
async def jobs_api(start_app: StartApp, make_settings: Callable[..., Settings]) -> RunningApp:
    return await start_app(make_settings(embedded_worker=True))  # type: ignore[no-any-return]


async def test_a_job_of_frames_completes_with_the_answers_detect_gives(jobs_api: RunningApp) -> None:
    client = jobs_api.client
    created = await client.post("/jobs", json={"name": "drive-1", "options": {"conf": 0.3}})
    assert created.status_code == 201, created.text
    job_id = created.json()["job_id"]
    assert created.json()["status"] == "open"
    _, hazard_frame = scene_with_hazards(3)
    frames = [hazard_frame, frame(11), frame(12)]
    metas: list[dict[str, Any]] = [
        {"lat": 52.5, "lon": 13.4, "captured_at": "2026-11-24T10:00:00Z"},
        {},
        {"filename": "named.jpg"},
    ]
    added = await client.post(f"/jobs/{job_id}/frames", files=files(frames, metas))
    assert added.status_code == 202, added.text
    assert added.json()["accepted"] == 3
    assert (await client.post(f"/jobs/{job_id}/close")).status_code == 200

    job = await wait_finished(client, job_id)
    assert job["status"] == "completed"
    assert (job["total"], job["done"], job["failed"]) == (3, 3, 0)
    items = await results(client, job_id)
    assert [item["frame_id"] for item in items] == added.json()["frame_ids"]
    assert items[0]["meta"]["lat"] == 52.5 and items[0]["meta"]["filename"] == "frame-000.jpg"
    assert items[2]["meta"]["filename"] == "named.jpg"
    assert job["detections"] == sum(len(item["detections"]) for item in items) > 0
    assert job["hazards"] == 0  # three different frames: no hazard is seen in TRACK_MIN_HITS of them

    session_id = await jobs_api.new_session()
    for item, data in zip(items, frames, strict=True):
        live = await client.post(f"/detect/{session_id}", params={"conf": 0.3}, files={"file": ("f.jpg", data)})
        assert live.status_code == 200
        assert boxes(item["detections"]) == boxes(live.json()["detections"])
        assert item["image"] == live.json()["image"]


async def test_resubmitted_frames_are_served_from_the_cache_without_inference(jobs_api: RunningApp) -> None:
    client = jobs_api.client
    fresh = secrets.randbelow(10**9)  # the cache is content-addressed and outlives tests: frames no test sent
    frames = [frame(fresh), frame(fresh + 1)]
    first = (await client.post("/jobs", json={})).json()["job_id"]
    await client.post(f"/jobs/{first}/frames", files=files(frames))
    await client.post(f"/jobs/{first}/close")
    assert (await wait_finished(client, first))["cached"] == 0
    engine = jobs_api.app.state.parts.models.registry.active_engine
    completed_before = engine.stats().completed

    second = (await client.post("/jobs", json={})).json()["job_id"]
    await client.post(f"/jobs/{second}/frames", files=files(frames))
    await client.post(f"/jobs/{second}/close")
    job = await wait_finished(client, second)
    assert (job["done"], job["cached"]) == (2, 2)
    assert engine.stats().completed == completed_before  # no inference ran
    scrape = (await client.get("/metrics")).text
    assert 'hazard_result_cache_total{outcome="hit"} 2.0' in scrape
    assert 'hazard_jobs_total{status="completed"} 2.0' in scrape
    assert 'hazard_queued_frames_total{outcome="cached",priority="batch"} 2.0' in scrape
    assert answers(await results(client, second)) == answers(await results(client, first))


async def test_a_garbage_frame_fails_alone_and_the_rest_are_done(jobs_api: RunningApp) -> None:
    client = jobs_api.client
    job_id = (await client.post("/jobs", json={})).json()["job_id"]
    await client.post(f"/jobs/{job_id}/frames", files=files([frame(31), b"not an image at all", frame(32)]))
    await client.post(f"/jobs/{job_id}/close")
    job = await wait_finished(client, job_id)
    assert (job["status"], job["done"], job["failed"]) == ("completed", 2, 1)
    failed = [item for item in await results(client, job_id) if item["status"] == "failed"]
    assert [(item["index"], item["error"]["code"]) for item in failed] == [(1, "INVALID_IMAGE")]


async def test_a_one_frame_job_in_one_call(jobs_api: RunningApp) -> None:
    client = jobs_api.client
    created = await client.post("/jobs", data={"job": json.dumps({"name": "try-a-frame"})}, files=files([frame(41)]))
    assert created.status_code == 201, created.text
    assert created.json()["total"] == 1 and len(created.json()["frame_ids"]) == 1
    job_id = created.json()["job_id"]
    await client.post(f"/jobs/{job_id}/close")
    assert (await wait_finished(client, job_id))["done"] == 1


async def test_results_stream_as_json_lines(jobs_api: RunningApp) -> None:
    client = jobs_api.client
    job_id = (await client.post("/jobs", json={})).json()["job_id"]
    await client.post(f"/jobs/{job_id}/frames", files=files([frame(51), frame(52), frame(53)]))
    await client.post(f"/jobs/{job_id}/close")
    await wait_finished(client, job_id)
    response = await client.get(f"/jobs/{job_id}/results.jsonl")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert [line["index"] for line in lines] == [0, 1, 2]


async def test_job_errors(jobs_api: RunningApp) -> None:
    client = jobs_api.client
    for path in ("/jobs/not-a-job-id", "/jobs/" + "A" * 22, "/jobs/x:y/results"):
        response = await client.get(path)
        assert response.status_code == 404 and response.json()["error"]["code"] == "JOB_NOT_FOUND", path
    job_id = (await client.post("/jobs", json={})).json()["job_id"]
    await client.post(f"/jobs/{job_id}/close")
    late = await client.post(f"/jobs/{job_id}/frames", files=files([frame(61)]))
    assert late.status_code == 409 and late.json()["error"]["code"] == "JOB_NOT_OPEN"
    bad = await client.post("/jobs", json={"options": {"conf": 2}})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "VALIDATION_ERROR"
    unknown_session = await client.post("/jobs", json={"session_id": "A" * 32})
    assert unknown_session.status_code == 404
    bad_meta = await client.post(
        f"/jobs/{(await client.post('/jobs', json={})).json()['job_id']}/frames",
        files=files([frame(62)], [{"lat": 123}]),
    )
    assert bad_meta.status_code == 422


async def test_a_heading_gets_the_same_answer_from_detect_and_from_a_job_frame(jobs_api: RunningApp) -> None:
    client = jobs_api.client
    session_id = await jobs_api.new_session()
    job_id = (await client.post("/jobs", json={})).json()["job_id"]
    _, data = scene_with_hazards(5)
    # The README's 0..360, both ends included (360 is north, as 0 is), at every entry point.
    for heading, answer in ((0, "accepted"), (359.5, "accepted"), (360, "accepted"), (-0.5, "422"), (360.5, "422")):
        query = await client.post(
            f"/detect/{session_id}", params={"heading": heading}, content=data, headers={"content-type": "image/jpeg"}
        )
        form = await client.post(
            f"/detect/{session_id}", data={"heading": str(heading)}, files={"file": ("f.jpg", data, "image/jpeg")}
        )
        job_frame = await client.post(f"/jobs/{job_id}/frames", files=files([data], [{"heading": heading}]))
        expected = (200, 200, 202) if answer == "accepted" else (422, 422, 422)
        assert (query.status_code, form.status_code, job_frame.status_code) == expected, heading


async def test_backpressure_refuses_a_whole_call(start_app: StartApp, make_settings: Callable[..., Settings]) -> None:
    api = await start_app(make_settings(embedded_worker=False, job_pending_bytes_limit=150_000))
    client = api.client
    job_id = (await client.post("/jobs", json={})).json()["job_id"]
    big = [frame(71), frame(72)]
    first = await client.post(f"/jobs/{job_id}/frames", files=files(big))
    assert first.status_code == 202
    refused = await client.post(f"/jobs/{job_id}/frames", files=files(big * 4))
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "BACKPRESSURE" and "retry-after" in refused.headers
    assert (await job_status(client, job_id))["total"] == 2  # nothing of the refused call was taken


async def test_cancelled_frames_are_never_inferred(start_app: StartApp, make_settings: Callable[..., Settings]) -> None:
    api = await start_app(make_settings(embedded_worker=False))  # nothing works the queue until we say so
    client = api.client
    job_id = (await client.post("/jobs", json={})).json()["job_id"]
    await client.post(f"/jobs/{job_id}/frames", files=files([frame(81 + i) for i in range(5)]))
    cancelled = await client.delete(f"/jobs/{job_id}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    worker = await start_app(make_settings(embedded_worker=True, fleet_name=api.app.state.parts.settings.fleet.name))
    engine = worker.app.state.parts.models.registry.active_engine
    completed = engine.stats().completed
    queue = worker.app.state.parts.jobs.queue

    async def drained() -> bool:
        taken: int = worker.app.state.parts.jobs.processor.calls
        return (await queue.depth())["batch"] == 0 and taken >= 5

    await wait_for(drained, "the cancelled job's frames taken and dropped")
    assert engine.stats().completed == completed
    job = await job_status(client, job_id)
    assert (job["status"], job["done"], job["failed"], job["total"]) == ("cancelled", 0, 0, 5)
    assert (await client.delete(f"/jobs/{job_id}")).status_code == 200  # cancelling twice changes nothing


async def test_ingest_dir_reads_only_below_its_root(
    start_app: StartApp, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    root = tmp_path / "drives"
    (root / "day1" / "sub").mkdir(parents=True)
    (root / "day1" / "a.jpg").write_bytes(frame(91))
    (root / "day1" / "sub" / "b.jpg").write_bytes(frame(92))
    (root / "day1" / "notes.txt").write_text("not an image")
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "c.jpg").write_bytes(frame(93))
    (root / "escape").symlink_to(outside)
    api = await start_app(make_settings(embedded_worker=True, ingest_root=root))
    client = api.client
    job_id = (await client.post("/jobs", json={})).json()["job_id"]
    for path in ("../secret", "escape", "/etc", "day1/../../secret"):
        refused = await client.post(f"/jobs/{job_id}/ingest-dir", json={"path": path})
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "INGEST_REFUSED", path
    accepted = await client.post(f"/jobs/{job_id}/ingest-dir", json={"path": "day1"})
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["accepted"] == 2
    await client.post(f"/jobs/{job_id}/close")
    await wait_finished(client, job_id)
    assert [i["meta"]["filename"] for i in await results(client, job_id)] == ["day1/a.jpg", "day1/sub/b.jpg"]


async def test_detect_consults_the_cache_only_when_asked(
    start_app: StartApp, make_settings: Callable[..., Settings]
) -> None:
    api = await start_app(make_settings(detect_cache=True))
    engine = api.app.state.parts.models.registry.active_engine
    session_id = await api.new_session()
    data = frame(secrets.randbelow(10**9))
    first = await api.client.post(f"/detect/{session_id}", files={"file": ("f.jpg", data)})
    completed = engine.stats().completed
    second = await api.client.post(f"/detect/{session_id}", files={"file": ("f.jpg", data)})
    assert second.status_code == 200 and engine.stats().completed == completed  # no inference ran
    assert list(second.json()["timings_ms"]) == ["cache"]
    assert boxes(second.json()["detections"]) == boxes(first.json()["detections"])


async def test_frames_that_waited_past_their_ttl_fail_and_the_job_still_finishes(
    start_app: StartApp, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(job_frame_ttl_seconds=1)
    api = await start_app(settings)  # no worker yet: the frames wait
    client = api.client
    job_id = (await client.post("/jobs", json={})).json()["job_id"]
    await client.post(f"/jobs/{job_id}/frames", files=files([frame(111), frame(112)]))
    await client.post(f"/jobs/{job_id}/close")
    queue_redis = redis.Redis.from_url(settings.queue_url)

    async def frames_expired() -> bool:
        return not await queue_redis.exists(f"job:{{{job_id}}}:frames")

    await wait_for(frames_expired, "the waiting frames expired", within=10)
    await queue_redis.aclose()
    await start_app(make_settings(embedded_worker=True, fleet_name=settings.fleet.name))
    job = await wait_finished(client, job_id)
    assert (job["status"], job["done"], job["failed"]) == ("failed", 0, 2)
    assert {item["error"]["code"] for item in await results(client, job_id)} == {"FRAME_EXPIRED"}


async def test_a_job_with_gps_exports_each_hazard_once_as_geojson(jobs_api: RunningApp) -> None:
    client = jobs_api.client
    job_id = (await client.post("/jobs", json={"name": "drive-with-gps"})).json()["job_id"]
    _, hazard_frame = scene_with_hazards(3)
    frames = [hazard_frame] * 6  # a camera stopped in front of one scene: its hazards seen six times
    metas: list[dict[str, Any]] = [
        {"lat": 52.52 + i * 1e-6, "lon": 13.405, "captured_at": f"2026-11-24T10:00:00.{i}00Z"} for i in range(6)
    ]
    assert (await client.post(f"/jobs/{job_id}/frames", files=files(frames, metas))).status_code == 202
    await client.post(f"/jobs/{job_id}/close")
    await wait_finished(client, job_id)
    per_frame = len((await results(client, job_id))[0]["detections"])
    response = await client.get(f"/jobs/{job_id}/hazards.geojson")
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/geo+json")
    collection = geojson.loads(response.text)
    assert collection.is_valid and collection["type"] == "FeatureCollection"
    features = collection["features"]
    assert 0 < len(features) <= per_frame  # one hazard per object, not one per frame
    for feature in features:
        lon, lat = feature["geometry"]["coordinates"]
        assert (round(lon, 3), round(lat, 3)) == (13.405, 52.52)
        assert feature["properties"]["job_id"] == job_id and feature["properties"]["frames"] == 6
    job = await job_status(client, job_id)
    assert (job["hazards"], job["detections"]) == (len(features), 6 * per_frame)
    assert (await client.get("/jobs/" + "B" * 22 + "/hazards.geojson")).status_code == 404


async def test_a_drive_sampled_every_few_metres_still_counts_its_hazards(jobs_api: RunningApp) -> None:
    """Every third frame of the drive (0.3 s and 2.4 m apart, as `hazard ingest --every-m` sends a dashcam's): each
    hazard is in 3-4 of them, fewer than TRACK_MIN_HITS, which counted none; as many seconds of views confirm it."""
    client = jobs_api.client
    job_id = (await client.post("/jobs", json={"name": "sampled.mp4"})).json()["job_id"]
    sampled = drive_frames()[::3]
    added = await client.post(f"/jobs/{job_id}/frames", files=files([b for b, _ in sampled], [m for _, m in sampled]))
    assert added.status_code == 202, added.text
    await client.post(f"/jobs/{job_id}/close")
    job = await wait_finished(client, job_id)
    assert job["status"] == "completed" and job["done"] == len(sampled)
    assert job["hazards"] == len(ROAD.hazards)
    exported = (await client.get(f"/jobs/{job_id}/hazards.geojson")).json()["features"]
    assert len(exported) == job["hazards"]
    assert all(2 <= feature["properties"]["frames"] < 5 for feature in exported)


async def test_a_drive_counts_each_hazard_once_and_every_box_however_many_workers_take_its_frames(
    start_app: StartApp, make_settings: Callable[..., Settings]
) -> None:
    api = await start_app(
        make_settings(embedded_worker=True, worker_batch_concurrency=8, admin_password=PASSWORD)
    )  # eight frames of the drive in hand at once, recorded in whatever order they finish
    client = api.client
    job_id = (await client.post("/jobs", json={"name": "drive.mp4"})).json()["job_id"]
    drive = drive_frames()
    for start in range(0, len(drive), 30):
        chunk = drive[start : start + 30]
        added = await client.post(f"/jobs/{job_id}/frames", files=files([b for b, _ in chunk], [m for _, m in chunk]))
        assert added.status_code == 202, added.text
    await client.post(f"/jobs/{job_id}/close")
    job = await wait_finished(client, job_id)
    items = await results(client, job_id)
    detections = [d for item in items for d in item["detections"]]

    assert job["status"] == "completed" and job["done"] == len(drive)
    assert job["detections"] == len(detections) > 3 * len(ROAD.hazards)  # boxes: each hazard in many frames
    assert job["hazards"] == len(ROAD.hazards)  # hazards: each once, no duplicate from concurrent workers
    assert all(d["hazard_id"] for d in detections)  # a flicker too has a track, never confirmed
    confirmed = [d["hazard_id"] for d in detections if d["new_hazard"]]
    assert len(confirmed) == len(set(confirmed)) == job["hazards"]  # each confirmed once, on one frame
    exported = (await client.get(f"/jobs/{job_id}/hazards.geojson")).json()["features"]
    assert len(exported) == job["hazards"]  # the export, tracked again in frame order, agrees

    listed = {j["job_id"]: j for j in (await client.get("/jobs")).json()["items"]}[job_id]
    page = (await client.get(f"/jobs/{job_id}/results", params={"limit": 1})).json()
    counts = (job["detections"], job["hazards"])
    assert (listed["detections"], listed["hazards"]) == (page["detections"], page["hazards"]) == counts
    assert (await log_in(api)).status_code == 303
    row = (await client.get("/admin/partials/jobs", headers={"hx-request": "true"})).text
    assert '<th scope="col">Detections</th>' in row
    assert f"<td>{job['detections']}</td>\n    <td>{job['hazards']}</td>" in row
