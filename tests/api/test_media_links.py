"""With AUTH_MODE=keys, every /media URL the service hands out opens without a key: the control center's hazard
fragment (an operator's browser sends its cookie, never a key) and a webhook body (a receiver holds no key) carry
signed URLs, and a tampered or expired signature is refused. One parked camera serves both (suite time)."""

from __future__ import annotations

import html
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from app.services.identity.principal import Scope
from app.services.uploads.signing import MediaSigner
from app.settings import Settings
from tests.api.test_control_center import PASSWORD, log_in
from tests.api.test_hazard_registry import OPERATOR
from tests.api.test_hazards import FRAME, JPEG, START, rfc3339
from tests.api.test_tenant_map import TENANT_A, key
from tests.api.test_webhooks import WEBHOOKS_FAST, register
from tests.conftest import TEST_PEPPER, RunningApp
from tests.support.waiting import wait_for
from tests.support.webhook_receiver import Receiver, webhook_receiver

StartApp = Callable[..., Awaitable[RunningApp]]
IMG_SRC = re.compile(r'<img [^>]*src="([^"]+)"')
JPEG_START = b"\xff\xd8"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as running:
        yield running


async def fetched_without_a_key(api: RunningApp, url: str) -> httpx.Response:
    """`url` as a client with no key, cookie or operator token gets it (a fresh client: no login's cookie)."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app), base_url="http://testserver") as client:
        return await client.get(url)


def assert_a_frame(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg" and response.content.startswith(JPEG_START)


async def test_the_fragment_and_webhook_bodies_hand_out_media_urls_that_open_without_a_key(
    start_app: StartApp, make_settings: Callable[..., Settings], receiver: Receiver
) -> None:
    settings = make_settings(auth_mode="keys", admin_password=PASSWORD, **WEBHOOKS_FAST, **PARKED)
    api = await start_app(settings)
    await register(api, receiver.url, events=["hazard.status_changed"])
    tenant_a = await key(api, TENANT_A, Scope.DETECT, Scope.MAP_READ)
    session_id = await parked_as(api, tenant_a)

    assert (await log_in(api)).status_code == 303
    sources: list[str] = []

    async def fragment_shows_a_frame() -> bool:
        nonlocal sources
        fragment = await api.client.get(f"/admin/partials/sessions/{session_id}/hazards")
        assert fragment.status_code == 200, fragment.text
        sources = [html.unescape(src) for src in IMG_SRC.findall(fragment.text)]
        return bool(sources)

    await wait_for(fragment_shows_a_frame, "the session's hazards fragment showing a best frame", within=20)
    for source in sources:
        assert_a_frame(await fetched_without_a_key(api, source))
    path = urlsplit(sources[0]).path
    assert (await fetched_without_a_key(api, path)).status_code == 404  # the bare URL: no credential
    tampered = sources[0][:-1] + ("0" if sources[0][-1] != "0" else "1")
    assert (await fetched_without_a_key(api, tampered)).status_code == 404
    # Signed with the deployment's pepper MEDIA_URL_SECONDS and more ago: expired by now.
    earlier = MediaSigner(TEST_PEPPER.encode(), settings.auth.media_url_seconds, required=True, clock=lambda: 1e6)
    expired = earlier.sign(path)
    assert expired is not None and (await fetched_without_a_key(api, expired)).status_code == 404

    photographed, _ = await hazard_with_a_photo(api, tenant_a)
    verdict = await api.client.post(f"/hazards/{photographed}/verdict", json={"category": "pothole"}, headers=OPERATOR)
    assert verdict.status_code == 200, verdict.text
    [changed] = await receiver.arrived("hazard.status_changed")
    photo = changed.json["data"]["hazard"]["best_photo_url"]
    assert photo.startswith("/media/"), photo
    assert_a_frame(await fetched_without_a_key(api, photo))


PARKED = {"track_min_hits": 3, "upload_per_hazard": True}


async def parked_as(api: RunningApp, headers: dict[str, str]) -> str:
    """A session of the key's tenant: a parked car's camera seeing hazards, TRACK_MIN_HITS frames and one more."""
    session = await api.client.post("/sessions", json={}, headers=headers)
    assert session.status_code == 201, session.text
    session_id = str(session.json()["session_id"])
    for index in range(4):
        params: dict[str, str | float] = {
            "lat": 48.85,
            "lon": 2.35,
            "heading": 90.0,
            "captured_at": rfc3339(START + index / 10),
        }
        response = await api.client.post(
            f"/detect/{session_id}", params=params, content=FRAME, headers={**JPEG, **headers}
        )
        assert response.status_code == 200, response.text
    return session_id


async def hazard_with_a_photo(api: RunningApp, headers: dict[str, str]) -> tuple[str, str]:
    """A registry hazard of the key's tenant whose best photo has landed (polled: the registry is fed off the
    request path, the photo after its upload): its id and its photo's media id."""
    found: list[dict[str, Any]] = []

    async def photographed() -> bool:
        nonlocal found
        response = await api.client.get("/hazards/registry", headers=headers)
        assert response.status_code == 200, response.text
        found = [h for h in response.json()["hazards"] if h["best_photo_url"]]
        return bool(found)

    await wait_for(photographed, "a registry hazard with its best photo", within=30)
    return str(found[0]["id"]), urlsplit(found[0]["best_photo_url"]).path.removeprefix("/media/").removesuffix(".jpg")
