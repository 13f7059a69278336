"""Every route x {no key, revoked key, key without the scope, another tenant's key, the right key}, with
AUTH_MODE=keys. The routes are enumerated from the app: a route added without a row here fails the test."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi.routing import iter_route_contexts

from app.services.core.ids import SESSION_ID_BYTES
from app.services.identity.principal import Scope
from app.settings import Settings
from tests.api.test_media_links import PARKED, hazard_with_a_photo, parked_as
from tests.conftest import RunningApp

FRAME = (Path(__file__).resolve().parents[2] / "artillery" / "frames" / "road_1280x720.jpg").read_bytes()
TENANT_A, TENANT_B = "fleet-a", "fleet-b"
OPEN, ANY_KEY = "open", "any key"  # no key needed; any valid key (or an operator), whatever its scopes
OPERATOR = "operator"  # an operator's login (inspector or admin), never a key: keys of every kind get 401
# The WebSocket stream takes /detect's key check on its upgrade request (or, for browsers, its first message); its
# close codes (4401, 4403, 4404 for another tenant's session) are asserted in tests/api/test_stream.py.
WEBSOCKET = "websocket"
# Path parameters of the operators' routes, filled in to reach each route (their values name nothing).
PLACEHOLDER = re.compile(r"\{(\w+)(:\w+)?\}")
PLACEHOLDERS = {"action": "load", "job_id": "j" * 22, "session_id": "s" * 22, "key_id": "k" * 8}
NUMBERED = {"hazard_id", "webhook_id", "delivery_id"}  # integer path parameters
# What a key without the route's scope holds (any scope but that one and admin).
OTHER_SCOPE = {Scope.DETECT: Scope.JOBS, Scope.JOBS: Scope.MAP_READ, Scope.MAP_READ: Scope.DETECT}
OPERATOR_PREFIX = "/admin"  # the operators' surface (admin API, control center): their login, not keys
PER_ANSWER_HEADERS = {"x-request-id"}  # differs between any two answers


@dataclass(frozen=True)
class Row:
    """How to call a route, and what guards it: `access` is a scope, OPEN or ANY_KEY; `owned` names what the
    route's path id belongs to ("session", "job" or "hazard": tenant A's registry hazard): another tenant's id must
    answer as an unknown one. `lists_hazard`: the right key's answer shows tenant A's registry hazard, another
    tenant's never does."""

    access: Scope | str
    owned: str | None = None
    request: dict[str, Any] = field(default_factory=dict)
    right_status: int = 200
    why_unowned: str = ""  # for a route with an id in its path that does not check its owner (yet)
    lists_hazard: bool = False


ROWS: dict[tuple[str, str], Row] = {
    ("POST", "/sessions"): Row(Scope.DETECT, request={"json": {}}, right_status=201),
    ("GET", "/sessions/{session_id}"): Row(Scope.DETECT, "session"),
    ("POST", "/sessions/{session_id}/end"): Row(Scope.DETECT, "session"),
    ("GET", "/sessions/{session_id}/detections"): Row(Scope.DETECT, "session"),
    ("POST", "/detect/{session_id}"): Row(
        Scope.DETECT, "session", request={"content": FRAME, "headers": {"content-type": "image/jpeg"}}
    ),
    ("GET", "/sessions/{session_id}/hazards"): Row(Scope.MAP_READ, "session"),
    ("GET", "/sessions/{session_id}/hazards.geojson"): Row(Scope.MAP_READ, "session"),
    ("GET", "/hazards"): Row(Scope.MAP_READ, request={"params": {"bbox": "-180,-90,180,90"}}, lists_hazard=True),
    ("GET", "/hazards/registry"): Row(Scope.MAP_READ, lists_hazard=True),
    ("GET", "/hazards/export.geojson"): Row(Scope.MAP_READ, lists_hazard=True),
    ("GET", "/hazards/export.csv"): Row(Scope.MAP_READ, lists_hazard=True),
    ("GET", "/hazards/export/open311"): Row(Scope.MAP_READ, lists_hazard=True),
    # Tenant A's registry hazard (its detail carries its history): tenant B's key reads it as an unknown id.
    ("GET", "/hazards/{hazard_id}"): Row(Scope.MAP_READ, "hazard"),
    # Operators act on every tenant's hazards (no tenant to check); keys of every kind get 401.
    ("POST", "/hazards/{hazard_id}/verdict"): Row(
        OPERATOR, request={"path": "/hazards/1/verdict", "json": {"category": "pothole"}}
    ),
    ("POST", "/hazards/{hazard_id}/close"): Row(OPERATOR, request={"path": "/hazards/1/close", "json": {}}),
    ("MOUNT", "/sessions/{session_id}/stream"): Row(WEBSOCKET),
    ("POST", "/jobs"): Row(Scope.JOBS, request={"json": {}}, right_status=201),
    ("GET", "/jobs"): Row(Scope.JOBS),
    ("GET", "/jobs/queue"): Row(Scope.JOBS),
    ("POST", "/jobs/{job_id}/frames"): Row(
        Scope.JOBS, "job", request={"files": {"file": ("f.jpg", FRAME, "image/jpeg")}}, right_status=202
    ),
    ("POST", "/jobs/{job_id}/close"): Row(Scope.JOBS, "job"),
    # INGEST_ROOT is unset in the suite: the right key gets as far as the feature's own 404.
    ("POST", "/jobs/{job_id}/ingest-dir"): Row(Scope.JOBS, "job", request={"json": {"path": "x"}}, right_status=404),
    ("GET", "/jobs/{job_id}"): Row(Scope.JOBS, "job"),
    ("DELETE", "/jobs/{job_id}"): Row(Scope.JOBS, "job"),
    ("GET", "/jobs/{job_id}/results"): Row(Scope.JOBS, "job"),
    ("GET", "/jobs/{job_id}/hazards.geojson"): Row(Scope.JOBS, "job"),
    ("GET", "/jobs/{job_id}/results.jsonl"): Row(Scope.JOBS, "job"),
    ("GET", "/health/live"): Row(OPEN),
    ("GET", "/health/ready"): Row(OPEN),
    ("GET", "/health/deep"): Row(ANY_KEY),
    ("GET", "/metrics"): Row(OPEN),  # open without METRICS_TOKEN (test_auth.py tests it with one)
    ("GET", "/"): Row(OPEN),
    ("GET", "/docs"): Row(OPEN),
    ("GET", "/openapi.json"): Row(OPEN),
    ("MOUNT", "/static"): Row(OPEN, request={"path": "/static/swagger/favicon-32x32.png"}),
    ("MOUNT", "/static/control"): Row(OPEN, request={"path": "/static/control/control.css"}),
    # Frames stored by the service: no key opens them, only the signed, expiring URL the service hands out (a bare
    # or badly signed one is an unknown frame's 404, for every caller): tests/api/test_media_access.py.
    ("GET", "/media/{path:path}"): Row(OPEN, request={"path": "/media/none.jpg"}, right_status=404),
    ("HEAD", "/media/{path:path}"): Row(OPEN, request={"path": "/media/none.jpg"}, right_status=404),
}


def app_routes(running: RunningApp) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves; mounts as ("MOUNT", path)."""
    found: set[tuple[str, str]] = set()
    for route in iter_route_contexts(running.app.routes):
        path = str(route.path)
        methods: set[str] = set(getattr(route.original_route, "methods", None) or ())
        if not methods:
            found.add(("MOUNT", path))
        # Starlette adds HEAD to a GET route by itself; a route declared for HEAD alone is its own row.
        found |= {(method, path) for method in methods if method != "HEAD" or "GET" not in methods}
    return found


@dataclass
class Keys:
    """Plaintext keys of the matrix: tenant A's with each scope, revoked ones, and tenant B's."""

    right: dict[Scope, str]
    revoked: dict[Scope, str]
    other_tenant: dict[Scope, str]


async def make_keys(running: RunningApp) -> Keys:
    store = running.app.state.identity.keys
    keys = Keys({}, {}, {})
    for scope in OTHER_SCOPE:
        keys.right[scope] = (await store.create(name="a", tenant=TENANT_A, scopes=frozenset({scope}))).key
        keys.other_tenant[scope] = (await store.create(name="b", tenant=TENANT_B, scopes=frozenset({scope}))).key
        revoked = await store.create(name="gone", tenant=TENANT_A, scopes=frozenset({scope}))
        await store.revoke(revoked.record.key_id)
        keys.revoked[scope] = revoked.key
    return keys


def bearer(key: str | None) -> dict[str, str]:
    return {} if key is None else {"authorization": f"Bearer {key}"}


def without_request_id(response: httpx.Response, named_id: str) -> str:
    """The answer's body with its request id dropped and the id it names made generic, and its headers but the
    request id: what must not differ between another tenant's id and an unknown one."""
    body = response.json()
    error = body["error"]
    error.pop("request_id", None)
    error["details"] = {name: "<id>" if str(value) == named_id else value for name, value in error["details"].items()}
    headers = sorted((name, value) for name, value in response.headers.items() if name not in PER_ANSWER_HEADERS)
    return json.dumps([body, headers], sort_keys=True)


async def registry_hazard(running: RunningApp, keys: Keys) -> tuple[str, str]:
    """A hazard of tenant A's registry (a parked camera's, through its session; the registry is fed off the request
    path: polled): its id, and its photo's media id, which every listing of it shows."""
    await parked_as(running, bearer(keys.right[Scope.DETECT]))
    return await hazard_with_a_photo(running, bearer(keys.right[Scope.MAP_READ]))


def unknown_like(hazard_id: str) -> str:
    """A registry id as long as `hazard_id` that no hazard has (ids are assigned from 1 up)."""
    return str(10 ** len(hazard_id) - 1) if hazard_id != "9" else "8"


class Matrix:
    def __init__(self, running: RunningApp, keys: Keys, hazard: tuple[str, str]) -> None:
        self.running, self.keys = running, keys
        self.hazard_id, self.hazard_photo = hazard
        self.failures: list[str] = []

    async def resource(self, owned: str | None) -> dict[str, str]:
        """Fresh ids of tenant A for one row: a session and a job; and its registry hazard."""
        client, key = self.running.client, bearer(self.keys.right[Scope.DETECT])
        session = await client.post("/sessions", json={}, headers=key)
        job = await client.post("/jobs", json={}, headers=bearer(self.keys.right[Scope.JOBS]))
        assert session.status_code == 201 and job.status_code == 201, (session.text, job.text)
        return {"session_id": session.json()["session_id"], "job_id": job.json()["job_id"], "hazard_id": self.hazard_id}

    async def call(self, method: str, path: str, row: Row, ids: dict[str, str], key: str | None) -> httpx.Response:
        request = {name: value for name, value in row.request.items() if name != "path"}
        url = row.request.get("path") or path.format(**ids)
        headers = {**request.pop("headers", {}), **bearer(key)}
        return await self.running.client.request(
            "GET" if method == "MOUNT" else method, url, headers=headers, **request
        )

    def expect(self, label: str, response: httpx.Response, status: int, code: str | None = None) -> None:
        is_json = "json" in response.headers.get("content-type", "") and response.content
        body = response.json() if is_json else None
        got_code = body.get("error", {}).get("code") if isinstance(body, dict) else None  # Open311's is a list
        if response.status_code != status or (code is not None and got_code != code):
            self.failures.append(f"{label}: {response.status_code} {got_code}, expected {status} {code or ''}")

    async def check(self, method: str, path: str, row: Row) -> None:
        ids = await self.resource(row.owned)
        label = f"{method} {path}"
        if row.access == WEBSOCKET:
            return
        if row.access == OPERATOR:
            for name, key in (("no key", None), ("admin-less key", self.keys.right[Scope.MAP_READ])):
                self.expect(f"{label} {name}", await self.call(method, path, row, ids, key), 401, "UNAUTHORIZED")
            return
        if row.access == OPEN:
            self.expect(f"{label} no key", await self.call(method, path, row, ids, None), row.right_status)
            self.expect(
                f"{label} revoked",
                await self.call(method, path, row, ids, self.keys.revoked[Scope.DETECT]),
                row.right_status,
            )
            return
        scope = row.access if isinstance(row.access, Scope) else Scope.DETECT
        no_key = await self.call(method, path, row, ids, None)
        self.expect(f"{label} no key", no_key, 401, "AUTH_REQUIRED")
        revoked = await self.call(method, path, row, ids, self.keys.revoked[scope])
        self.expect(f"{label} revoked", revoked, 401, "INVALID_API_KEY")
        lacking = await self.call(method, path, row, ids, self.keys.right[OTHER_SCOPE[scope]])
        if row.access == ANY_KEY:
            self.expect(f"{label} other scope", lacking, row.right_status)
        else:
            self.expect(f"{label} missing scope", lacking, 403, "SCOPE_REQUIRED")
            if lacking.status_code == 403 and lacking.json()["error"]["details"] != {"scope": scope.value}:
                self.failures.append(f"{label} missing scope: names {lacking.json()['error']['details']}")
        await self.check_other_tenant(method, path, row, ids, scope)
        right = await self.call(method, path, row, ids, self.keys.right[scope])
        self.expect(f"{label} right key", right, row.right_status)
        if row.lists_hazard and self.hazard_photo not in right.text:
            self.failures.append(f"{label} right key: tenant A's registry hazard missing from {right.text[:300]}")

    async def check_other_tenant(self, method: str, path: str, row: Row, ids: dict[str, str], scope: Scope) -> None:
        label = f"{method} {path} other tenant"
        foreign = await self.call(method, path, row, ids, self.keys.other_tenant[scope])
        if row.lists_hazard and self.hazard_photo in foreign.text:
            self.failures.append(f"{label}: shows tenant A's registry hazard")
        if row.owned is None:
            if row.why_unowned == "":
                self.expect(label, foreign, row.right_status)
            return
        id_name = f"{row.owned}_id"
        unknown_id = (
            unknown_like(ids[id_name])
            if row.owned == "hazard"
            else secrets.token_urlsafe(SESSION_ID_BYTES if row.owned == "session" else 16)
        )
        unknown = await self.call(method, path, row, {**ids, id_name: unknown_id}, self.keys.other_tenant[scope])
        self.expect(label, foreign, 404)
        both_404 = foreign.status_code == unknown.status_code == 404
        if both_404 and without_request_id(foreign, ids[id_name]) != without_request_id(unknown, unknown_id):
            self.failures.append(f"{label}: {foreign.text} differs from an unknown id's {unknown.text}")


async def test_every_route_guards_what_its_row_says(
    start_app: Callable[[Settings], Any], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(auth_mode="keys", api_key_failures_per_minute=100_000, **PARKED)
    running: RunningApp = await start_app(settings)
    served = app_routes(running)
    keyed = {route for route in served if not route[1].startswith(OPERATOR_PREFIX)}
    assert keyed == set(ROWS), f"routes without a row: {keyed - set(ROWS)}; rows without a route: {set(ROWS) - keyed}"
    keys = await make_keys(running)
    matrix = Matrix(running, keys, await registry_hazard(running, keys))
    for (method, path), row in ROWS.items():
        await matrix.check(method, path, row)
    assert not matrix.failures, "\n".join(matrix.failures)


async def test_the_operators_routes_take_no_api_key(
    start_app: Callable[[Settings], Any], make_settings: Callable[..., Settings]
) -> None:
    """/admin (the control center and the admin API) keeps the operators' own login: without it, no answer of
    theirs is served, with or without a key (a key sent there is a failed operator login, throttled as
    today: 429). Their own rows: tests/api/test_models.py, test_control_center.py)."""
    running: RunningApp = await start_app(make_settings(auth_mode="keys", admin_password="p" * 16))
    keys = await make_keys(running)
    operator_routes = {route for route in app_routes(running) if route[1].startswith(OPERATOR_PREFIX)}
    assert operator_routes
    for method, path in sorted(operator_routes):
        if method == "MOUNT" or path == "/admin/login":
            continue
        url = PLACEHOLDER.sub(
            lambda part: "1" if part.group(1) in NUMBERED else PLACEHOLDERS.get(part.group(1), "m"), path
        )
        for key in (None, keys.right[Scope.DETECT], keys.revoked[Scope.DETECT]):
            response = await running.client.request(method, url, headers=bearer(key))
            assert response.status_code in (401, 303, 403, 429), (method, path, response.status_code)
