"""Frames stored by the service with AUTH_MODE=keys: only at the signed, expiring URLs the service hands out."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from app.services.uploads.signing import MediaSigner
from app.settings import Settings
from tests.conftest import TEST_PEPPER, RunningApp
from tests.support.images import scene_with_hazards

MEDIA_ID = "0123456789abcdef0123456789abcdef"
URL = f"/media/{MEDIA_ID}.jpg"
FRAME = scene_with_hazards(9, (320, 180))[1]


async def stored_frame_app(start_app: Callable[[Settings], Awaitable[RunningApp]], settings: Settings) -> RunningApp:
    api = await start_app(settings)
    settings.uploads.storage_dir.mkdir(parents=True, exist_ok=True)
    (settings.uploads.storage_dir / f"{MEDIA_ID}.jpg").write_bytes(FRAME)
    return api


async def test_a_signed_url_serves_the_frame_and_a_bare_or_bad_one_does_not(
    start_app: Callable[[Settings], Awaitable[RunningApp]], make_settings: Callable[..., Settings]
) -> None:
    api = await stored_frame_app(start_app, make_settings(auth_mode="keys"))
    signer: MediaSigner = api.app.state.identity.media_urls
    signed = signer.sign(URL)
    assert signed is not None and signed.startswith(f"{URL}?expires=") and "&sig=" in signed
    answer = await api.client.get(signed)
    assert answer.status_code == 200 and answer.content == FRAME
    assert (await api.client.head(signed)).status_code == 200
    bare = await api.client.get(URL)
    assert bare.status_code == 404 and bare.json()["error"]["code"] == "MEDIA_NOT_FOUND"  # as an unknown frame
    tampered = signed[:-1] + ("0" if signed[-1] != "0" else "1")
    assert (await api.client.get(tampered)).status_code == 404
    other_expiry = signed.replace("expires=", "expires=1")  # a later expiry than the one signed
    assert (await api.client.get(other_expiry)).status_code == 404
    other_file = signed.replace(MEDIA_ID, "f" * 32)
    assert (await api.client.get(other_file)).status_code == 404
    assert signer.sign("https://res.cloudinary.com/x/image.jpg") == "https://res.cloudinary.com/x/image.jpg"


async def test_an_expired_signature_is_refused(
    start_app: Callable[[Settings], Awaitable[RunningApp]], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(auth_mode="keys")
    api = await stored_frame_app(start_app, settings)
    # A signer with the deployment's pepper whose clock is MEDIA_URL_SECONDS and more behind: expired by now.
    pepper = TEST_PEPPER.encode()
    earlier = MediaSigner(pepper, settings.auth.media_url_seconds, required=True, clock=lambda: 1_000_000.0)
    current = MediaSigner(pepper, settings.auth.media_url_seconds, required=True).sign(URL)
    assert current is not None and (await api.client.get(current)).status_code == 200  # the same key: only time differs
    expired = earlier.sign(URL)
    assert expired is not None and (await api.client.get(expired)).status_code == 404


async def test_with_auth_off_a_bare_url_serves_the_frame_as_before(
    start_app: Callable[[Settings], Awaitable[RunningApp]], make_settings: Callable[..., Settings]
) -> None:
    api = await stored_frame_app(start_app, make_settings(auth_mode="off"))
    assert api.app.state.identity.media_urls.sign(URL) == URL
    assert (await api.client.get(URL)).status_code == 200
