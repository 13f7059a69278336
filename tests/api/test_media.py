"""Stored frames and the media route: a stored name is the server's media id, never the client's request id or
the session id (locally and in Cloudinary), and every answer, media errors included, says nosniff."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from app.services.uploads.ledger import MEDIA_ID
from tests.conftest import RunningApp
from tests.support.fake_cloudinary import FakeCloudinary
from tests.support.uploads import FAST_UPLOADS, hazard_frame, history_uploads
from tests.support.waiting import wait_for


@pytest.fixture
def fake_cloudinary() -> Iterator[FakeCloudinary]:
    fake = FakeCloudinary()
    fake.answer("ok")
    yield fake
    fake.stop()


async def test_two_frames_with_one_request_id_are_two_files_each_entry_pointing_at_its_own(
    make_settings: Any, start_app: Any
) -> None:
    settings = make_settings(**FAST_UPLOADS)
    running: RunningApp = await start_app(settings)
    session_id = await running.new_session()
    frames = [hazard_frame(3), hazard_frame(4)]

    for frame in frames:
        response = await running.client.post(
            f"/detect/{session_id}",
            content=frame,
            headers={"content-type": "image/jpeg", "x-request-id": "same-id-twice"},
        )
        assert response.status_code == 200 and response.json()["request_id"] == "same-id-twice"

    async def both_uploaded() -> bool:
        return [u["status"] for u in await history_uploads(running.client, session_id)] == ["uploaded"] * 2

    await wait_for(both_uploaded, "both uploads landed", within=10)
    urls = [u["url"] for u in await history_uploads(running.client, session_id)]
    assert len(set(urls)) == 2, urls
    assert len(list(settings.uploads.storage_dir.rglob("*.jpg"))) == 2
    # Newest first: each entry serves its own frame (the annotated copy keeps the frame's size and look).
    served = [(await running.client.get(url)).content for url in urls]
    assert served[0] != served[1]
    assert all("same-id-twice" not in url and session_id not in url for url in urls)


async def test_cloudinary_public_ids_are_media_ids_not_request_or_session_ids(
    make_settings: Any, start_app: Any, fake_cloudinary: FakeCloudinary
) -> None:
    settings = make_settings(cloudinary_url=fake_cloudinary.url, **FAST_UPLOADS)
    running: RunningApp = await start_app(settings)
    session_id = await running.new_session()
    for seed in (3, 4):
        headers = {"content-type": "image/jpeg", "x-request-id": "replayed"}
        response = await running.client.post(f"/detect/{session_id}", content=hazard_frame(seed), headers=headers)
        assert response.status_code == 200

    async def two_assets() -> bool:
        return len(fake_cloudinary.assets) == 2

    await wait_for(two_assets, "two assets in Cloudinary", within=10)
    for public_id in fake_cloudinary.assets:
        folder, name = public_id.split("/")
        assert folder == "hazards" and MEDIA_ID.fullmatch(name), public_id


async def test_every_answer_says_nosniff_media_errors_included(make_settings: Any, start_app: Any) -> None:
    settings = make_settings(**FAST_UPLOADS)
    running: RunningApp = await start_app(settings)
    session_id = await running.new_session()
    response = await running.client.post(
        f"/detect/{session_id}", content=hazard_frame(), headers={"content-type": "image/jpeg"}
    )

    async def uploaded() -> bool:
        return bool((await history_uploads(running.client, session_id))[0]["status"] == "uploaded")

    await wait_for(uploaded, "upload landed", within=10)
    url = (await history_uploads(running.client, session_id))[0]["url"]
    answers = {
        "media 200": await running.client.get(url),
        "media HEAD": await running.client.head(url),
        "media 404": await running.client.get("/media/0123456789abcdef0123456789abcdef.jpg"),
        "media 404 by shape": await running.client.get(f"/media/{session_id}/{response.json()['request_id']}.jpg"),
        "media 405": await running.client.put(url, content=b"x"),
        "detect 200": response,
        "session 404": await running.client.get("/sessions/not-a-session"),
        "live": await running.client.get("/health/live"),
        "unrouted 404": await running.client.get("/nowhere"),
    }
    assert answers["media 200"].status_code == 200
    assert answers["media 405"].status_code == 405
    assert answers["media 404 by shape"].json()["error"]["code"] == "MEDIA_NOT_FOUND"
    missing = {name for name, answer in answers.items() if answer.headers.get("x-content-type-options") != "nosniff"}
    assert missing == set()
