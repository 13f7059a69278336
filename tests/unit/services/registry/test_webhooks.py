"""Webhooks without a database: which event a move sends, how a body is signed, which URLs are refused."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest

from app.services.core.errors import ValidationFailed
from app.services.registry.lifecycle import Status
from app.services.registry.outbox import WebhookEvent, event_of, with_photo_url
from app.services.registry.records import HazardEvent, same_url
from app.services.registry.webhook_sender import Retries, sign
from app.services.registry.webhooks import check_url
from app.services.uploads.signing import MediaSigner

AT = datetime(2025, 5, 1, tzinfo=UTC)
SELF = [("api.example.org", 443), ("0.0.0.0", 8000)]


def change(from_status: Status | None, to_status: Status) -> HazardEvent:
    return HazardEvent(AT, "system", "move", from_status, to_status, None, None)


def test_each_change_sends_its_event() -> None:
    assert event_of(change(None, Status.OPEN)) is WebhookEvent.NEW
    assert event_of(change(Status.OPEN, Status.SUSPECTED_FIXED)) is WebhookEvent.SUSPECTED_FIXED
    assert event_of(change(Status.OPEN, Status.VERIFIED)) is WebhookEvent.STATUS_CHANGED
    assert event_of(change(Status.CLOSED, Status.OPEN)) is WebhookEvent.STATUS_CHANGED


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"type":"hazard.new"}'
    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("s3cret", body, 1_700_000_000) == f"t=1700000000,v1={expected}"


def test_a_body_is_sent_with_its_photo_signed_at_each_attempt_and_unchanged_when_nothing_is_signed() -> None:
    stored = '{"id":"evt_1","data":{"hazard":{"id":7,"best_photo_url":"/media/ab.jpg"},"change":{}}}'
    assert with_photo_url(stored, same_url) == stored.encode()  # AUTH_MODE=off: the bytes written
    clock = [1_700_000_000.0]
    signer = MediaSigner(b"p" * 32, 3600, required=True, clock=lambda: clock[0])
    first = json.loads(with_photo_url(stored, signer.sign))["data"]["hazard"]["best_photo_url"]
    clock[0] += 600  # a retry ten minutes later
    again = json.loads(with_photo_url(stored, signer.sign))["data"]["hazard"]["best_photo_url"]
    assert first == f"/media/ab.jpg?expires={1_700_003_600}&sig=" + first.rsplit("=", 1)[1]
    assert again.startswith(f"/media/ab.jpg?expires={1_700_004_200}&") and signer.allows(
        "ab.jpg", "1700004200", again.rsplit("=", 1)[1]
    )
    cloud = stored.replace("/media/ab.jpg", "https://res.cloudinary.com/x.jpg")
    assert with_photo_url(cloud, signer.sign) == cloud.encode()


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.org/hook",
        "file:///etc/passwd",
        "http:///no-host",
        "https://api.example.org/hooks",  # the service's own host and port
        "http://127.0.0.1:8000/hooks",  # loopback on the port it listens on
        "http://localhost:8000/",
        "http://[::1]:8000/",
        "http://example.org:99999/",  # no such port
        "not a url",
    ],
)
def test_a_url_that_is_not_http_or_points_at_the_service_is_refused(url: str) -> None:
    with pytest.raises(ValidationFailed):
        check_url(url, SELF)


@pytest.mark.parametrize(
    "url", ["https://hooks.example.org/hazards", "http://127.0.0.1:9000/hooks", "http://api.example.org:8443/x"]
)
def test_other_hosts_and_loopback_on_other_ports_are_accepted(url: str) -> None:
    check_url(url, SELF)


def test_retry_delays_double_from_the_base_up_to_the_max() -> None:
    retries = Retries(max_attempts=5, base_seconds=1.0, max_seconds=8.0)
    assert 0.5 <= retries.delay(1) <= 1.0
    assert 2.0 <= retries.delay(3) <= 4.0
    assert 4.0 <= retries.delay(10) <= 8.0
