"""Operators by name: accounts made and changed over the admin API, Basic login as a named operator, roles enforced
on the admin API and the control center (viewer and inspector read; admin acts), every action audited by name."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest

from app.settings import Settings
from tests.api.test_control_center import csrf_token, log_in
from tests.conftest import RunningApp

PASSWORD = "correct horse battery staple"
AUTH = httpx.BasicAuth("admin", PASSWORD)
OTHER_PASSWORD = "another long passphrase"
StartApp = Callable[..., Awaitable[RunningApp]]
ORIGIN = "http://testserver"


@pytest.fixture
async def admin_api(start_app: StartApp, make_settings: Callable[..., Settings]) -> RunningApp:
    return await start_app(make_settings(admin_password=PASSWORD), wait_ready=False)


async def create_operator(api: RunningApp, name: str, role: str) -> httpx.Response:
    body = {"name": name, "password": OTHER_PASSWORD, "role": role}
    return await api.client.post("/admin/api/operators", json=body, auth=AUTH)


async def test_an_operator_account_logs_in_by_name_with_its_role(admin_api: RunningApp) -> None:
    created = await create_operator(admin_api, "olga", "viewer")
    assert created.status_code == 201, created.text
    assert created.json()["role"] == "viewer" and not created.json()["disabled"] and "password" not in created.text
    olga = httpx.BasicAuth("olga", OTHER_PASSWORD)
    assert (await admin_api.client.get("/admin/api/models", auth=olga)).status_code == 200
    wrong = await admin_api.client.get("/admin/api/models", auth=httpx.BasicAuth("olga", PASSWORD))
    assert wrong.status_code == 401
    listed = (await admin_api.client.get("/admin/api/operators", auth=AUTH)).json()["operators"]
    assert [(o["name"], o["role"]) for o in listed] == [("olga", "viewer")] and listed[0]["last_login_at"]


async def test_a_viewer_or_inspector_changing_anything_is_403_role_required(admin_api: RunningApp) -> None:
    for name, role in (("vic", "viewer"), ("ines", "inspector")):
        assert (await create_operator(admin_api, name, role)).status_code == 201
        reader = httpx.BasicAuth(name, OTHER_PASSWORD)
        changes = [
            ("POST", "/admin/api/fleet/reload", {}),
            ("POST", "/admin/api/fleet/roles/api/restart", None),
            ("POST", f"/admin/api/fleet/{admin_api.app.state.parts.process.process_id}/restart", None),
            ("POST", "/admin/api/models/best0408_openvino_model/activate", None),
            ("POST", "/admin/api/operators", {"name": "x-" + name, "password": OTHER_PASSWORD, "role": "admin"}),
            ("PATCH", f"/admin/api/operators/{name}", {"role": "admin"}),
            ("GET", "/admin/api/operators", None),
        ]
        for method, path, body in changes:
            response = await admin_api.client.request(method, path, json=body, auth=reader)
            assert response.status_code == 403, (name, method, path, response.text)
            assert response.json()["error"]["code"] == "ROLE_REQUIRED"
            assert response.json()["error"]["details"] == {"role": "admin", "operator_role": role}
        assert (await admin_api.client.get("/admin/api/audit", auth=reader)).status_code == 200


async def test_a_new_role_or_disabling_takes_effect_on_the_next_request(admin_api: RunningApp) -> None:
    await create_operator(admin_api, "pat", "viewer")
    pat = httpx.BasicAuth("pat", OTHER_PASSWORD)
    assert (await admin_api.client.post("/admin/api/fleet/reload", json={}, auth=pat)).status_code == 403
    promoted = await admin_api.client.patch("/admin/api/operators/pat", json={"role": "admin"}, auth=AUTH)
    assert promoted.status_code == 200 and promoted.json()["role"] == "admin"
    assert (await admin_api.client.post("/admin/api/fleet/reload", json={}, auth=pat)).status_code == 200
    disabled = await admin_api.client.patch("/admin/api/operators/pat", json={"disabled": True}, auth=AUTH)
    assert disabled.json()["disabled"] and disabled.json()["disabled_at"]
    assert (await admin_api.client.get("/admin/api/models", auth=pat)).status_code == 401
    enabled = await admin_api.client.patch("/admin/api/operators/pat", json={"disabled": False}, auth=AUTH)
    assert not enabled.json()["disabled"]
    assert (await admin_api.client.get("/admin/api/models", auth=pat)).status_code == 200
    entries = (await admin_api.client.get("/admin/api/audit", params={"limit": 4}, auth=AUTH)).json()["entries"]
    assert [(e["actor"], e["action"], e["target"]) for e in entries] == [
        ("admin", "operator.changed", "pat"),
        ("admin", "operator.changed", "pat"),
        ("pat", "fleet.reload", "*"),
        ("admin", "operator.changed", "pat"),
    ]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"name": "admin", "password": OTHER_PASSWORD, "role": "admin"}, 422, "VALIDATION_ERROR"),
        ({"name": "Bad Name!", "password": OTHER_PASSWORD, "role": "viewer"}, 422, "VALIDATION_ERROR"),
        ({"name": "shorty", "password": "short", "role": "viewer"}, 422, "VALIDATION_ERROR"),
        ({"name": "rooty", "password": OTHER_PASSWORD, "role": "root"}, 422, "VALIDATION_ERROR"),
    ],
)
async def test_a_bad_operator_request_is_refused(
    admin_api: RunningApp, body: dict[str, str], status: int, code: str
) -> None:
    response = await admin_api.client.post("/admin/api/operators", json=body, auth=AUTH)
    assert response.status_code == status and response.json()["error"]["code"] == code, response.text


async def test_a_taken_name_is_409_and_an_unknown_one_404(admin_api: RunningApp) -> None:
    assert (await create_operator(admin_api, "dup", "viewer")).status_code == 201
    again = await create_operator(admin_api, "dup", "admin")
    assert again.status_code == 409 and again.json()["error"]["code"] == "OPERATOR_EXISTS"
    unknown = await admin_api.client.patch("/admin/api/operators/nobody", json={"role": "admin"}, auth=AUTH)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "OPERATOR_NOT_FOUND"


async def test_the_built_in_admin_and_its_token_still_work(
    start_app: StartApp, make_settings: Callable[..., Settings]
) -> None:
    api = await start_app(make_settings(admin_password=PASSWORD, admin_token="machine-token"), wait_ready=False)
    token = {"authorization": "Bearer machine-token"}
    created = await api.client.post(
        "/admin/api/operators", json={"name": "tok", "password": OTHER_PASSWORD, "role": "viewer"}, headers=token
    )
    assert created.status_code == 201
    assert (await api.client.get("/admin/api/models", auth=AUTH)).status_code == 200
    entry = (await api.client.get("/admin/api/audit", params={"limit": 1}, headers=token)).json()["entries"][0]
    assert (entry["actor"], entry["action"]) == ("admin", "operator.created")


# The control center: a named operator signs in with the login form's user field; roles hold there too.


async def test_a_viewer_signs_in_reads_pages_and_is_refused_actions(admin_api: RunningApp) -> None:
    await create_operator(admin_api, "vicky", "viewer")
    assert (await log_in(admin_api, OTHER_PASSWORD, user="vicky")).status_code == 303
    page = await admin_api.client.get("/admin/keys", headers={"accept": "text/html"})
    assert page.status_code == 200 and "vicky (viewer)" in page.text and 'id="create-key"' not in page.text
    assert "/admin/operators" not in page.text, "the nav shows a viewer no operators page"
    token = await csrf_token(admin_api)
    headers = {"origin": ORIGIN, "x-csrf-token": token, "hx-request": "true"}
    for path in (
        "/admin/keys",
        "/admin/fleet/reload",
        "/admin/fleet/restart",
        "/admin/models/best0408_openvino_model/activate",
    ):
        refused = await admin_api.client.post(
            path, data={"name": "k", "tenant": "t", "scopes": "detect", "target": "role:api"}, headers=headers
        )
        assert refused.status_code == 403 and "ROLE_REQUIRED" in refused.text, path
    operators = await admin_api.client.get("/admin/operators", headers={"accept": "text/html"})
    assert operators.status_code == 403 and "ROLE_REQUIRED" in operators.text
    assert (await admin_api.client.get("/admin/audit", headers={"accept": "text/html"})).status_code == 200
    logout = await admin_api.client.post("/admin/logout", data={"csrf_token": token}, headers={"origin": ORIGIN})
    assert logout.status_code == 303, "a viewer may still sign out"


async def test_disabling_an_account_ends_its_control_center_session(admin_api: RunningApp) -> None:
    await create_operator(admin_api, "dana", "admin")
    await log_in(admin_api, OTHER_PASSWORD, user="dana")
    assert (await admin_api.client.get("/admin", headers={"accept": "text/html"})).status_code == 200
    await admin_api.client.patch("/admin/api/operators/dana", json={"disabled": True}, auth=AUTH)
    assert (await admin_api.client.get("/admin", headers={"accept": "text/html"})).status_code == 303
    assert (await log_in(admin_api, OTHER_PASSWORD, user="dana")).status_code == 401
