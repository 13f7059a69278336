"""deploy/docker-compose.yml agrees with the app: Redis inside, the API behind its HTTPS front, health checks,
volumes, the worker."""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI

from tests.support.caddy import CADDYFILE
from tests.system.deploy.common import (
    APP_PORT,
    DEPLOY,
    check_metrics_probe,
    dockerfile_env,
    final_stage,
    instructions,
    load_yaml,
    metrics_probe_code,
    model_cache_dir,
    serves,
    setting_names,
    shutdown_seconds,
    worker_shutdown_seconds,
    writable,
)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    (doc,) = load_yaml(DEPLOY / "docker-compose.yml")
    return doc


def test_compose_redis_is_internal_only(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert "ports" not in redis and "expose" not in redis
    assert redis["networks"]
    for network in redis["networks"]:
        assert compose["networks"][network]["internal"] is True


def test_compose_api_talks_to_the_redis_service(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    assert urlsplit(api["environment"]["REDIS_URL"]).hostname == "redis"
    assert set(compose["services"]["redis"]["networks"]) & set(api["networks"])
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"


def test_compose_publishes_only_the_https_front(compose: dict[str, Any]) -> None:
    published = {name for name, service in compose["services"].items() if service.get("ports")}
    assert published == {"front"}  # keys travel only over TLS: the API is reached through the front
    assert [str(item) for item in compose["services"]["api"]["expose"]] == [str(APP_PORT)]
    assert {str(mapping).split(":")[-1] for mapping in compose["services"]["front"]["ports"]} == {"80", "443"}


def test_compose_front_runs_the_committed_caddyfile_in_front_of_the_api(compose: dict[str, Any]) -> None:
    front = compose["services"]["front"]
    assert front["image"].startswith("caddy:2")
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in front["volumes"]}
    assert (DEPLOY / mounts["/etc/caddy/Caddyfile"]).resolve() == CADDYFILE  # the file the suite runs
    assert {"/data", "/config"} <= set(mounts)  # the local CA and certificates survive a restart
    upstream = urlsplit(f"//{front['environment']['API_UPSTREAM']}")
    assert (upstream.hostname, upstream.port) == ("api", APP_PORT)
    caddyfile = CADDYFILE.read_text(encoding="utf-8")
    assert all("{$" + name + ":" in caddyfile for name in front["environment"])  # names the Caddyfile reads
    assert front["depends_on"]["api"]["condition"] == "service_healthy"


def test_compose_api_trusts_the_front_and_only_it(compose: dict[str, Any]) -> None:
    api, front = compose["services"]["api"], compose["services"]["front"]
    ((network, attachment),) = front["networks"].items()
    assert network in api["networks"]
    (subnet,) = compose["networks"][network]["ipam"]["config"]
    front_address = ipaddress.ip_address(attachment["ipv4_address"])
    assert front_address in ipaddress.ip_network(subnet["subnet"])
    trusted = [ipaddress.ip_network(entry.strip()) for entry in api["environment"]["TRUSTED_PROXIES"].split(",")]
    assert trusted == [ipaddress.ip_network(front_address)]
    assert api["environment"]["CLIENT_ADDRESS_HEADER"].lower() == "x-forwarded-for"  # what Caddy sets


def test_compose_healthchecks_hit_app_routes(compose: dict[str, Any], app: FastAPI) -> None:
    test = compose["services"]["api"]["healthcheck"]["test"]
    url = re.search(r"http://[^'\"\s]+", " ".join(test))
    assert url
    parts = urlsplit(url.group(0))
    assert serves(app, "GET", parts.path) and parts.port == APP_PORT
    assert compose["services"]["redis"]["healthcheck"]["test"]


def test_compose_keeps_uploads_and_spool_in_volumes(compose: dict[str, Any]) -> None:
    env = dockerfile_env(final_stage())
    targets = {volume.split(":")[1] for volume in compose["services"]["api"]["volumes"]}
    assert {env["STORAGE_DIR"], env["SPOOL_DIR"]} <= targets


def test_compose_stop_grace_covers_the_drain(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    grace = api["stop_grace_period"]
    assert grace.endswith("s") and float(grace[:-1]) > shutdown_seconds(api["environment"])


def test_compose_environments_name_settings(compose: dict[str, Any]) -> None:
    for name in ("api", "worker"):
        names = set(compose["services"][name]["environment"])
        assert names <= setting_names(), (name, names - setting_names())


def test_compose_worker_runs_hazard_worker_from_the_api_image_beside_redis(compose: dict[str, Any]) -> None:
    api, worker = compose["services"]["api"], compose["services"]["worker"]
    assert worker["command"] == ["hazard-worker"]
    assert (worker["image"], worker["build"]) == (api["image"], api["build"])
    assert "ports" not in worker and "container_name" not in worker  # `--scale worker=N` works
    env = worker["environment"]
    assert env["REDIS_URL"] == api["environment"]["REDIS_URL"] and urlsplit(env["REDIS_URL"]).hostname == "redis"
    assert env.get("FLEET_NAME") == api["environment"].get("FLEET_NAME")  # the queue they share
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert set(compose["services"]["redis"]["networks"]) & set(worker["networks"])
    assert float(worker["cpus"]) == float(env["MODEL_INFERENCE_THREADS"])


def test_compose_worker_healthcheck_reads_model_ready_on_its_metrics_port(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    test = worker["healthcheck"]["test"]
    assert test[0] == "CMD"
    code, port = metrics_probe_code(test[1:])
    assert port == int(worker["environment"]["WORKER_METRICS_PORT"])
    assert str(port) in {str(item) for item in worker.get("expose", [])}
    check_metrics_probe(code, port)


def test_compose_worker_stop_grace_covers_its_shutdown(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    grace = worker["stop_grace_period"]
    assert grace.endswith("s") and float(grace[:-1]) > worker_shutdown_seconds(worker["environment"])


def test_compose_worker_has_writable_dirs_on_a_read_only_root(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    if not worker.get("read_only"):
        pytest.skip("root filesystem is writable")
    image_env = dockerfile_env(final_stage())
    (workdir,) = instructions(final_stage(), "WORKDIR")
    mounts = compose_writable_mounts(worker)
    cache = model_cache_dir(worker["environment"], workdir)
    for path in (image_env["STORAGE_DIR"], image_env["SPOOL_DIR"], "/tmp", cache):
        assert writable(path, mounts), path


def compose_writable_mounts(service: dict[str, Any]) -> set[str]:
    mounts = {entry.split(":")[0] for entry in service.get("tmpfs", [])}
    return mounts | {volume.split(":")[1] for volume in service.get("volumes", [])}


def test_compose_api_can_write_its_model_cache(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    if not api.get("read_only"):
        pytest.skip("root filesystem is writable")
    (workdir,) = instructions(final_stage(), "WORKDIR")
    assert writable(model_cache_dir(api["environment"], workdir), compose_writable_mounts(api))


def test_compose_api_requires_the_key_pepper_from_outside_the_file(compose: dict[str, Any]) -> None:
    pepper = compose["services"]["api"]["environment"]["API_KEY_PEPPER"]
    assert pepper.startswith("${API_KEY_PEPPER:?"), "compose stops with a message when it is not set"
