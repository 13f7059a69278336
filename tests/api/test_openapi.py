"""The contract as a client reads it: /openapi.json, /docs without a CDN, `GET /`, a client generated from the spec
and Schemathesis, both against a real uvicorn process with its own Redis."""

from __future__ import annotations

import asyncio
import importlib
import io
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio

from app.services.identity.keys import KeyStore
from app.services.identity.principal import Scope
from app.settings import Settings
from tests.conftest import TEST_PEPPER, RunningApp
from tests.support.redis_process import RedisProcess
from tests.support.server import Server

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FRAME = (ROOT / "artillery" / "frames" / "road_1280x720.jpg").read_bytes()
IMAGE_TYPES = ["image/jpeg", "image/png", "image/webp"]
BINARY = {"type": "string", "format": "binary"}
ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
OPERATION_IDS = {
    "create_session",
    "get_session",
    "end_session",
    "list_detections",
    "detect_frame",
    "health_live",
    "health_ready",
    "health_deep",
    "get_media",
    "service_index",
    "list_session_hazards",
    "export_session_hazards",
    "list_map_hazards",
}
# The probes' 503 is their report ("not ready, because ..."), not an error.
REPORT_503 = {"health_ready": "ReadyReport", "health_deep": "DeepReport"}
GENERATED_PACKAGE = "generated_hazard_client"  # not `hazard_client`: that is our own client package


def operations(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {operation["operationId"]: operation for item in spec["paths"].values() for operation in item.values()}


def json_schema(response: dict[str, Any]) -> Any:
    return response["content"]["application/json"]["schema"]


async def test_detect_frame_documents_the_bodies_it_reads(api: RunningApp) -> None:
    detect = operations((await api.client.get("/openapi.json")).json())["detect_frame"]
    body = detect["requestBody"]
    assert body["required"] is True
    assert list(body["content"]) == ["multipart/form-data", *IMAGE_TYPES]
    multipart = body["content"]["multipart/form-data"]["schema"]
    assert multipart["type"] == "object" and multipart["required"] == ["file"]
    assert {key: multipart["properties"]["file"][key] for key in BINARY} == BINARY
    for media_type in IMAGE_TYPES:
        assert body["content"][media_type]["schema"] == BINARY
    metadata = {"lat", "lon", "heading", "speed_mps", "captured_at"}  # also multipart fields beside `file`
    assert {p["name"] for p in detect["parameters"]} == {"session_id", "conf", "iou", "max_det", "model", *metadata}
    assert set(multipart["properties"]) == {"file", *metadata}


async def test_every_operation_documents_its_errors_with_the_one_error_schema(api: RunningApp) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    by_id = operations(spec)
    assert set(by_id) >= OPERATION_IDS
    assert all(re.fullmatch(r"[a-z][a-z_]*", operation_id) for operation_id in by_id)
    components = spec["components"]["schemas"]
    assert "HTTPValidationError" not in components and "ValidationError" not in components
    assert "HTTPValidationError" not in json.dumps(spec)
    assert components["ErrorResponse"]["required"] == ["error"]
    assert set(components["ErrorBody"]["required"]) == {"code", "message", "details", "request_id"}
    for operation_id, operation in by_id.items():
        errors = {int(status): response for status, response in operation["responses"].items() if int(status) >= 400}
        assert 500 in errors, operation_id
        for status, response in errors.items():
            if status == 503 and operation_id in REPORT_503:
                assert json_schema(response) == {"$ref": f"#/components/schemas/{REPORT_503[operation_id]}"}
                continue
            assert json_schema(response) == ERROR_REF, (operation_id, status)
            assert "X-Request-ID" in response["headers"]
            assert ("Retry-After" in response["headers"]) == (status in (429, 503)), (operation_id, status)
            codes = response["content"]["application/json"]["examples"]
            assert codes and all(example["value"]["error"]["code"] == code for code, example in codes.items())

    def statuses(operation_id: str) -> set[int]:
        return {int(status) for status in by_id[operation_id]["responses"]}

    # 401 and 403: the API key check (app/http/auth.py), on every route that takes a key.
    assert statuses("detect_frame") == {200, 400, 401, 403, 404, 408, 409, 413, 415, 422, 429, 500, 503, 504}
    assert statuses("create_session") == {201, 401, 403, 408, 413, 422, 429, 500, 503}
    assert {404, 503} <= statuses("get_session") & statuses("end_session") & statuses("list_detections")
    assert statuses("get_media") >= {200, 404}
    detect_404 = by_id["detect_frame"]["responses"]["404"]["content"]["application/json"]["examples"]
    assert set(detect_404) == {"SESSION_NOT_FOUND", "MODEL_NOT_FOUND"}


async def test_routes_that_take_a_key_say_how_to_send_it_and_what_a_bad_one_answers(
    start_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    keys_mode: RunningApp = await start_app(make_settings(auth_mode="keys"))
    spec = (await keys_mode.client.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"] == {
        "bearerKey": {"type": "http", "scheme": "bearer", "description": "An API key: `Bearer hzk_...`."},
        "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "An API key."},
    }
    by_id = operations(spec)
    open_operations = {"health_live", "health_ready", "service_index", "get_media"}
    # Operators' moves on registry hazards: their login (an inspector's), not a key, as under /admin.
    operator_operations = {"give_hazard_verdict", "close_hazard"}
    for operation_id, operation in by_id.items():
        if operation_id in open_operations | operator_operations or operation_id.startswith("admin_"):
            assert "security" not in operation, operation_id
            continue
        assert operation["security"] == [{"bearerKey": []}, {"apiKeyHeader": []}], operation_id
        codes = {
            code
            for status in ("401", "403", "429")
            for code in operation["responses"][status]["content"]["application/json"]["examples"]
        }
        assert {"AUTH_REQUIRED", "INVALID_API_KEY", "SCOPE_REQUIRED", "TLS_REQUIRED", "RATE_LIMITED"} <= codes
    # AUTH_MODE=off (this suite's default): a key is optional, and the document says so.
    off_spec = (await start_app(make_settings())).client
    off_operations = operations((await off_spec.get("/openapi.json")).json())
    assert off_operations["detect_frame"]["security"] == [{"bearerKey": []}, {"apiKeyHeader": []}, {}]


async def test_answers_have_real_schemas_and_one_box_shape(api: RunningApp) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    by_id, components = operations(spec), spec["components"]["schemas"]
    for operation_id, model in [
        ("health_live", "LiveReport"),
        ("health_ready", "ReadyReport"),
        ("health_deep", "DeepReport"),
        ("service_index", "ServiceIndex"),
        ("list_detections", "HistoryPage"),
        ("detect_frame", "DetectResponse"),
    ]:
        assert json_schema(by_id[operation_id]["responses"]["200"]) == {"$ref": f"#/components/schemas/{model}"}
    history_item = components["HistoryItem"]["properties"]
    assert components["HistoryPage"]["properties"]["items"]["items"] == {"$ref": "#/components/schemas/HistoryItem"}
    assert set(components["HistoryItem"]["required"]) >= {"request_id", "at", "detections", "upload", "degraded"}
    detections = {"$ref": "#/components/schemas/DetectionOut"}
    assert history_item["detections"]["items"] == components["DetectResponse"]["properties"]["detections"]["items"]
    assert history_item["detections"]["items"] == detections
    assert components["DetectionOut"]["properties"]["box"] == {"$ref": "#/components/schemas/Box"}
    assert [name for name in components if "box" in name.lower()] == ["Box"]
    for model in ("SessionCreate", "DetectResponse", "ErrorResponse"):
        assert components[model]["examples"], model
    for model in ("JobOut", "JobResultsPage"):  # boxes and distinct hazards, each said for what it counts
        counts = components[model]["properties"]
        assert {"detections", "hazards"} <= set(components[model]["required"])
        assert "Boxes" in counts["detections"]["description"] and "Distinct" in counts["hazards"]["description"]
    assert "/metrics" not in spec["paths"]  # Prometheus text, not part of the JSON API


async def test_docs_load_nothing_from_another_origin(api: RunningApp) -> None:
    page = await api.client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "http://" not in page.text and "https://" not in page.text
    urls = re.findall(r'(?:src|href)="([^"]+)"', page.text) + re.findall(r"url: '([^']+)'", page.text)
    assert len(urls) == 4, urls  # stylesheet, icon, script, the spec
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        answer = await api.client.get(url)
        assert answer.status_code == 200, url
        assert len(answer.content) > 0
    script = next(url for url in urls if url.split("?")[0].endswith(".js"))
    assert "javascript" in (await api.client.get(script)).headers["content-type"]
    assert (await api.client.get("/redoc")).status_code == 404


async def test_root_says_what_the_service_is_and_where_everything_is(api: RunningApp) -> None:
    response = await api.client.get("/")
    assert response.status_code == 200
    body = response.json()
    assert body["service"] == "Hazard Detection API" and body["version"] == api.app.version
    links = body["links"]
    assert links == {
        "docs": "/docs",
        "openapi": "/openapi.json",
        "health": {"live": "/health/live", "ready": "/health/ready", "deep": "/health/deep"},
        "metrics": "/metrics",
    }
    for url in (links["docs"], links["openapi"], links["metrics"], *links["health"].values()):
        assert (await api.client.get(url)).status_code == 200, url


async def test_a_405_says_which_methods_the_route_has(api: RunningApp) -> None:
    response = await api.client.delete("/sessions")
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert response.json()["error"]["code"] == "METHOD_NOT_ALLOWED"


async def test_strings_that_cannot_be_session_ids_never_reach_a_redis_key(api: RunningApp) -> None:
    session_id = await api.new_session()
    frame = await api.client.post(f"/detect/{session_id}", content=FRAME, headers={"content-type": "image/jpeg"})
    assert frame.status_code == 200  # the session now has a history list, `session:<id>:history`
    for path in (f"/sessions/{session_id}:history", f"/sessions/{session_id}:history/end"):
        method = "POST" if path.endswith("/end") else "GET"
        response = await api.client.request(method, path)
        assert response.status_code == 404 and response.json()["error"]["code"] == "SESSION_NOT_FOUND", path
    for odd in (f"{session_id}:history", f"{session_id}x", "*", session_id[:-1]):
        response = await api.client.get(f"/sessions/{odd}/detections")
        assert response.status_code == 404 and response.json()["error"]["code"] == "SESSION_NOT_FOUND", odd
    again = await api.client.get(f"/sessions/{session_id}")
    assert again.status_code == 200 and again.json()["frame_count"] == 1


async def test_the_body_is_documented_field_by_field(api: RunningApp) -> None:
    session_id = await api.new_session()
    extra = await api.client.post(
        f"/detect/{session_id}", files={"file": ("f.jpg", FRAME, "image/jpeg")}, data={"note": "x"}
    )
    assert extra.status_code == 422 and extra.json()["error"]["details"] == {"unexpected_fields": ["note"]}
    for ttl in (True, "60", 1.5):
        response = await api.client.post("/sessions", json={"ttl_seconds": ttl})
        assert response.status_code == 422, ttl
    assert (await api.client.post("/sessions", json={"ttl_seconds": 60.0})).status_code == 201  # JSON's integer
    not_utf8 = await api.client.post("/sessions", content=b"\xff\xfe{", headers={"content-type": "application/json"})
    assert not_utf8.status_code == 422 and not_utf8.json()["error"]["code"] == "VALIDATION_ERROR"


class KeyedServer(Server):
    """A server in AUTH_MODE=keys, with an admin key made through its KeyStore (same Redis, pepper and fleet)."""

    api_key: str


def admin_key(redis_url: str, fleet: str) -> str:
    async def create() -> str:
        client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
        try:
            store = KeyStore(client, namespace=fleet, pepper=TEST_PEPPER.encode())
            created = await store.create(name="openapi tests", tenant="contract", scopes=frozenset({Scope.ADMIN}))
            return created.key
        finally:
            await client.aclose()

    return asyncio.run(create())


@pytest.fixture(scope="module")
def server(redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyedServer]:
    """A real uvicorn process in keys mode (the generated client and Schemathesis send its admin key); annotated
    frames go to a local directory (no Cloudinary)."""
    fleet = f"test-{uuid.uuid4().hex[:12]}"
    running = KeyedServer(
        redis_server.url,
        tmp_path_factory.mktemp("openapi-server"),
        FLEET_NAME=fleet,
        AUTH_MODE="keys",
        API_KEY_PEPPER=TEST_PEPPER,
        # Schemathesis checks that a route refuses no key and a wrong one: many failed attempts from one address.
        API_KEY_FAILURES_PER_MINUTE="1000000",
        ADMIN_LOGIN_MAX_FAILURES="1000000",  # ... and of operators' logins (/health/deep takes either)
        CLOUDINARY_URL="",
        LOG_LEVEL="WARNING",
        REQUEST_TIMEOUT_SECONDS="10",
        # Schemathesis opens hundreds of sessions, many with the longest TTL, from one address.
        SESSION_CREATE_BURST="100000",
        SESSION_CREATE_TTL_BUDGET_SECONDS="1000000000",
    )
    running.api_key = admin_key(redis_server.url, fleet)
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


@pytest.fixture
def generated_client(server: KeyedServer, tmp_path: Path) -> Iterator[Any]:
    """The package openapi-python-client generates from the served spec, importable as GENERATED_PACKAGE."""
    spec = tmp_path / "openapi.json"
    spec.write_bytes(httpx.get(f"{server.base_url}/openapi.json", timeout=10).raise_for_status().content)
    config = tmp_path / "generator.yaml"
    config.write_text("post_hooks: []\n")  # no formatter run over the generated code
    command = [str(BIN / "openapi-python-client"), "generate", "--path", str(spec), "--meta", "none"]
    command += ["--output-path", str(tmp_path / GENERATED_PACKAGE), "--config", str(config)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(GENERATED_PACKAGE)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [name for name in sys.modules if name.partition(".")[0] == GENERATED_PACKAGE]:
            del sys.modules[name]


@pytest.mark.timeout(120)
def test_a_generated_client_creates_a_session_sends_a_frame_reads_errors(
    server: KeyedServer, generated_client: Any
) -> None:
    def module(name: str) -> Any:
        return importlib.import_module(f"{GENERATED_PACKAGE}.{name}")

    models, types = module("models"), module("types")
    create_session, get_session = module("api.sessions.create_session"), module("api.sessions.get_session")
    list_detections, detect_frame = module("api.sessions.list_detections"), module("api.detect.detect_frame")
    timeout = httpx.Timeout(30.0)
    with generated_client.AuthenticatedClient(
        base_url=server.base_url, token=server.api_key, timeout=timeout, raise_on_unexpected_status=True
    ) as client:
        body = models.SessionCreate(metadata=models.SessionCreateMetadata.from_dict({"vehicle": "van-7"}))
        created = create_session.sync_detailed(client=client, body=body)
        assert created.status_code == 201
        session = created.parsed
        assert isinstance(session, models.SessionOut) and session.metadata["vehicle"] == "van-7"

        upload = types.File(payload=io.BytesIO(FRAME), file_name="road.jpg", mime_type="image/jpeg")
        frame = detect_frame.sync_detailed(
            session.session_id, client=client, body=models.DetectFrameFilesBody(file=upload), max_det=10
        )
        assert frame.status_code == 200, frame.content
        answer = frame.parsed
        assert isinstance(answer, models.DetectResponse)
        assert answer.session_id == session.session_id and answer.session.verified
        assert (answer.image.width, answer.image.height) == (1280, 720)
        assert len(answer.detections) <= 10
        for detection in answer.detections:
            assert isinstance(detection.box, models.Box) and detection.box.x2 > detection.box.x1

        history = list_detections.sync(session.session_id, client=client, limit=5)
        assert isinstance(history, models.HistoryPage) and history.total == 1
        item = history.items[0]
        assert isinstance(item, models.HistoryItem) and item.request_id == answer.request_id
        assert [d.box.to_dict() for d in item.detections] == [d.box.to_dict() for d in answer.detections]

        key = {"authorization": f"Bearer {server.api_key}"}
        job_id = httpx.post(f"{server.base_url}/jobs", json={"name": "drive"}, headers=key, timeout=timeout).json()[
            "job_id"
        ]
        job = module("api.jobs.get_job").sync(job_id, client=client)
        assert isinstance(job, models.JobOut) and (job.detections, job.hazards) == (0, 0)

        missing = get_session.sync_detailed("no-such-session", client=client)
        assert missing.status_code == 404
        error = missing.parsed
        assert isinstance(error, models.ErrorResponse) and error.error.code == "SESSION_NOT_FOUND"
        assert error.error.request_id == missing.headers["x-request-id"]


@pytest.mark.timeout(120)
def test_schemathesis_finds_no_failure(server: KeyedServer, tmp_path: Path) -> None:
    """Every check (server errors, undocumented statuses or headers, schema conformance of answers, schema-valid
    requests refused, invalid ones accepted, 405s with Allow, ...) over examples, coverage, fuzzing and stateful
    phases. The hooks module makes positive frames real images; a failure prints the seed and `st replay` steps."""
    command = [str(BIN / "st"), "run", f"{server.base_url}/openapi.json", "--checks", "all"]
    command += ["--header", f"Authorization: Bearer {server.api_key}"]  # its `ignored_auth` check drops or spoils it
    # DELETE /jobs/{id} cancels, and by contract the job stays readable, saying `cancelled` with its counts: the
    # use-after-free check assumes a DELETE makes its resource 404.
    command += ["--exclude-checks", "use_after_free"]
    # GET /hazards takes `bbox` or `near` (with a radius): few generated queries are one of the two, and the hooks
    # filter out the rest; the operation is still run with each query that is.
    command += ["--suppress-health-check", "filter_too_much"]
    command += ["--max-examples", "40", "--workers", "2", "--request-timeout", "30"]
    environment = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.support.schemathesis_hooks", "PYTHONPATH": str(ROOT)}
    try:
        result = subprocess.run(
            command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=90, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"schemathesis ran past 90 s:\n{exc.stdout!r}") from None
    assert result.returncode == 0, result.stdout[-12000:] + result.stderr[-4000:]
    assert " passed" in result.stdout, result.stdout[-12000:]
