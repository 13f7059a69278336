"""Keys travel only over TLS: the committed deploy/caddy/Caddyfile, run by Debian's caddy, in front of a real
production server (AUTH_MODE=keys, TRUSTED_PROXIES=127.0.0.1). A key through the front over HTTPS (verified against
Caddy's local CA) is served; the same key sent straight to the API over plain HTTP is refused with TLS_REQUIRED;
plain HTTP to the front is redirected to HTTPS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from pwdlib import PasswordHash

from tests.support.caddy import SITE, CaddyFront
from tests.support.redis_process import RedisProcess
from tests.support.server import Server

TOKEN = "https-front-test-operator-token-0123"
PEPPER = "https-front-test-pepper-" + "5" * 24


@pytest.fixture(scope="module")
def api(redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "ENVIRONMENT": "production",
        "AUTH_MODE": "keys",
        "TRUSTED_PROXIES": "127.0.0.1",
        "API_KEY_PEPPER": PEPPER,
        "ADMIN_TOKEN": TOKEN,
        "ADMIN_PASSWORD_HASH": PasswordHash.recommended().hash("https-front-operator-password"),  # admin API on
        "MODEL_WARMUP_REQUESTS": "1",
    }
    server = Server(redis_server.url, tmp_path_factory.mktemp("api"), **env)
    try:
        server.wait_live()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def front(api: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CaddyFront]:
    caddy = CaddyFront(tmp_path_factory.mktemp("caddy"), upstream=f"127.0.0.1:{api.port}")
    try:
        caddy.wait_ready()
        yield caddy
    finally:
        caddy.stop()


@pytest.fixture(scope="module")
def https(front: CaddyFront) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=front.base_url, verify=front.tls_context(), timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def key(https: httpx.Client) -> str:
    """Made through the front, by the operators' bootstrap token: the admin API is behind the same TLS."""
    body = {"name": "https front", "tenant": "fleet-tls", "scopes": ["detect", "jobs"]}
    created = https.post("/admin/api/keys", json=body, headers={"authorization": f"Bearer {TOKEN}"})
    assert created.status_code == 201, created.text
    return str(created.json()["key"])


def test_a_key_over_https_through_the_front_is_served(https: httpx.Client, key: str) -> None:
    answer = https.get("/jobs", headers={"authorization": f"Bearer {key}"})
    assert answer.status_code == 200, answer.text
    assert answer.http_version in ("HTTP/1.1", "HTTP/2")
    assert str(answer.url).startswith(f"https://{SITE}:")


def test_the_same_key_straight_to_the_api_over_plain_http_is_refused(api: Server, key: str) -> None:
    for headers in ({"authorization": f"Bearer {key}"}, {"x-api-key": key}):
        answer = httpx.get(f"{api.base_url}/jobs", headers=headers, timeout=10)
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"]["code"] == "TLS_REQUIRED"


def test_the_front_redirects_plain_http_to_https(front: CaddyFront) -> None:
    answer = httpx.get(f"http://127.0.0.1:{front.http_port}/jobs?limit=1", headers={"host": SITE}, timeout=10)
    assert answer.status_code == 308
    location = urlsplit(answer.headers["location"])
    assert (location.scheme, location.hostname, location.path, location.query) == ("https", SITE, "/jobs", "limit=1")


def test_the_front_keeps_its_local_ca_in_its_own_directory(front: CaddyFront, tmp_path: Path) -> None:
    # skip_install_trust: the host's trust store is never touched; clients are given the root explicitly.
    assert front.root_certificate.read_text().startswith("-----BEGIN CERTIFICATE-----")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{front.base_url}/health/live", timeout=10)  # the system's CAs do not know it
