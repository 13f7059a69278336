"""The Artillery scenarios target the local server for a bounded time, gate p95 and errors, and stream real frames."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI
from PIL import Image

from app.http.schemas.sessions import SessionOut
from tests.system.deploy.common import (
    APP_PORT,
    ARTILLERY,
    SCENARIOS,
    load_yaml,
    serves,
)


def flow_requests(steps: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(method, request) for every request in a flow, loops included."""
    for step in steps:
        if "loop" in step:
            yield from flow_requests(step["loop"])
        for method in ("get", "post", "put", "patch", "delete"):
            if method in step:
                yield method, step[method]


def concrete(url: str) -> str:
    """An Artillery URL with its {{ variables }} filled in, as a request would carry it."""
    return re.sub(r"\{\{\s*\w+\s*\}\}", "0123abcd", url)


@pytest.fixture(params=sorted(SCENARIOS), scope="module")
def scenario(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    (doc,) = load_yaml(ARTILLERY / f"{request.param}.yml")
    return request.param, doc


def test_scenario_targets_the_local_server_for_a_bounded_time(scenario: tuple[str, dict[str, Any]]) -> None:
    name, doc = scenario
    target = urlsplit(doc["config"]["target"])
    assert (target.hostname, target.port) == ("127.0.0.1", APP_PORT)
    total = sum(phase["duration"] for phase in doc["config"]["phases"])
    assert 0 < total <= SCENARIOS[name]


def test_scenario_gates_p95_and_errors(scenario: tuple[str, dict[str, Any]]) -> None:
    ensure = scenario[1]["config"]["plugins"]["ensure"]
    thresholds = {key: value for item in ensure["thresholds"] for key, value in item.items()}
    assert thresholds["http.response_time.p95"] <= 150
    assert float(ensure["maxErrorRate"]) <= 1
    assert any("http.requests" in condition["expression"] for condition in ensure["conditions"])


def test_scenario_streams_real_frames_into_one_session(scenario: tuple[str, dict[str, Any]], app: FastAPI) -> None:
    doc = scenario[1]
    (flow,) = [s["flow"] for s in doc["scenarios"]]
    requests = list(flow_requests(flow))
    method, create = requests[0]
    assert (method, create["url"]) == ("post", "/sessions")
    (capture,) = create["capture"]
    assert capture["json"] == "$.session_id" and capture["as"] == "session_id"
    assert "session_id" in SessionOut.model_fields
    detects = [request for _, request in requests if request["url"].startswith("/detect/")]
    assert detects
    loops = [step for step in flow if "loop" in step]
    assert any(step.get("count", 1) >= 3 and list(flow_requests(step["loop"])) for step in loops)
    for request in detects:
        assert "{{ session_id }}" in request["url"]
        frame = (ARTILLERY / request["formData"]["file"]["fromFile"]).resolve()
        assert frame.is_file(), frame
        with Image.open(frame) as image:
            assert image.format == "JPEG"
    for method, request in requests:
        assert serves(app, method.upper(), concrete(request["url"])), request["url"]


def test_frame_is_a_committable_1280x720_jpeg() -> None:
    frame = ARTILLERY / "frames" / "road_1280x720.jpg"
    with Image.open(frame) as image:
        assert (image.format, image.size) == ("JPEG", (1280, 720))
    assert frame.stat().st_size < 200 * 1024


def test_scenario_sends_the_api_key_from_the_environment_on_every_request(scenario: tuple[str, dict[str, Any]]) -> None:
    _, document = scenario
    requests: list[dict[str, Any]] = []

    def collect(steps: list[dict[str, Any]]) -> None:
        for step in steps:
            requests.extend(value for verb, value in step.items() if verb in ("get", "post", "put", "delete"))
            collect(step.get("loop", []))

    for flow in document["scenarios"]:
        collect(flow["flow"])
    assert requests
    for request in requests:
        assert request["headers"]["authorization"] == "Bearer {{ $env.HAZARD_API_KEY }}", request["url"]


def test_artillery_is_pinned_to_one_2_0_release_and_locked() -> None:
    package = json.loads((ARTILLERY / "package.json").read_text(encoding="utf-8"))
    version = package["devDependencies"]["artillery"]
    assert re.fullmatch(r"2\.0\.\d+", version), version  # exact: scripts/ensure-artillery.sh installs the lock
    lock = json.loads((ARTILLERY / "package-lock.json").read_text(encoding="utf-8"))
    assert lock["packages"][""]["devDependencies"] == package["devDependencies"]
    assert lock["packages"]["node_modules/artillery"]["version"] == version
    assert lock["packages"]["node_modules/artillery"]["integrity"].startswith("sha512-")
