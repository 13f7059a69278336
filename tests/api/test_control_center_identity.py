"""The control center's keys, operators and audit pages over HTTP (no browser): a key created on the page is
shown once, revoked from the page, and both actions are in the audit list under the operator's name."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence

import pytest

from app.settings import Settings
from tests.api.test_control_center import PASSWORD, csrf_token, log_in
from tests.conftest import RunningApp

ORIGIN = "http://testserver"
StartApp = Callable[..., Awaitable[RunningApp]]


@pytest.fixture
async def signed_in(start_app: StartApp, make_settings: Callable[..., Settings]) -> RunningApp:
    api = await start_app(make_settings(admin_password=PASSWORD), wait_ready=False)
    assert (await log_in(api)).status_code == 303
    return api


async def post(api: RunningApp, path: str, data: Mapping[str, str | Sequence[str]]) -> str:
    headers = {"origin": ORIGIN, "x-csrf-token": await csrf_token(api), "hx-request": "true"}
    response = await api.client.post(path, data=data, headers=headers)
    assert response.status_code == 200, response.text
    return response.text


async def test_a_key_made_on_the_keys_page_is_shown_once_then_revoked(signed_in: RunningApp) -> None:
    form = {"name": "fleet-a phones", "tenant": "fleet-a", "scopes": ["detect", "jobs"], "frames_per_second": "5"}
    created = await post(signed_in, "/admin/keys", form)
    match = re.search(r'<code id="new-key-text">(hzk_[^<]+)</code>', created)
    assert match and 'data-copy="new-key-text"' in created, created
    key = match[1]
    key_id = key.split("_")[1]
    assert (await signed_in.app.state.identity.keys.verify(key)).scopes == {"detect", "jobs"}
    page = await signed_in.client.get("/admin/keys", headers={"accept": "text/html"})
    assert key_id in page.text and "frames_per_second 5.0" in page.text and "fleet-a" in page.text
    assert key not in page.text and key.split("_", 2)[2] not in page.text, "shown once only"
    revoked = await post(signed_in, f"/admin/keys/{key_id}/revoke", {})
    assert f'data-key-id="{key_id}" data-status="revoked"' in revoked and key not in revoked
    audit = await signed_in.client.get("/admin/audit", headers={"accept": "text/html"})
    assert audit.text.index("api_key.revoked") < audit.text.index("api_key.created") and key not in audit.text


async def test_a_refused_key_form_says_why_in_the_panel(signed_in: RunningApp) -> None:
    headers = {"origin": ORIGIN, "x-csrf-token": await csrf_token(signed_in), "hx-request": "true"}
    form = {"name": "n", "tenant": "bad tenant", "scopes": "detect"}
    refused = await signed_in.client.post("/admin/keys", data=form, headers=headers)
    assert refused.status_code == 422 and "Creating the key failed" in refused.text and "hzk_" not in refused.text


async def test_key_actions_need_the_csrf_token(signed_in: RunningApp) -> None:
    form = {"name": "n", "tenant": "t", "scopes": "detect"}
    refused = await signed_in.client.post("/admin/keys", data=form, headers={"origin": ORIGIN})
    assert refused.status_code == 403 and "hzk_" not in refused.text
    assert (await signed_in.app.state.identity.keys.list_keys("t")) == []


async def test_an_admin_manages_operators_on_the_operators_page(signed_in: RunningApp) -> None:
    form = {"name": "ivan", "password": "a long enough password", "role": "viewer"}
    created = await post(signed_in, "/admin/operators", form)
    assert 'data-operator="ivan" data-role="viewer"' in created and "a long enough password" not in created
    changed = await post(signed_in, "/admin/operators/ivan/role", {"role": "inspector"})
    assert 'data-operator="ivan" data-role="inspector"' in changed
    disabled = await post(signed_in, "/admin/operators/ivan/disable", {})
    assert "DISABLED" in disabled
    audit = await signed_in.client.get("/admin/audit", headers={"accept": "text/html"})
    assert audit.text.count('data-action="operator.changed"') == 2 and 'data-action="operator.created"' in audit.text
