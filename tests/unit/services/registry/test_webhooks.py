"""Webhooks without a database: which event a move sends, how a body is signed, which URLs are refused."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

import pytest

from app.services.core.errors import ValidationFailed
from app.services.registry.lifecycle import Status
from app.services.registry.outbox import WebhookEvent, event_of
from app.services.registry.records import HazardEvent
from app.services.registry.webhook_sender import Retries, sign
from app.services.registry.webhooks import check_url

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
