"""`hazard keys ...` and `hazard operators ...` against a real server process: the key printed once on stdout,
listed, revoked; operator accounts created and given a role; a missing or wrong credential says what to do."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import httpx
import pytest

from hazard_client.cli import run
from tests.support.redis_process import RedisProcess
from tests.support.server import Server

TOKEN = "cli-admin-test-operator-token-0123456"


@pytest.fixture(scope="module")
def server(redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    process = Server(redis_server.url, tmp_path_factory.mktemp("cli-admin"), ADMIN_TOKEN=TOKEN)
    try:
        process.wait_live()
        yield process
    finally:
        process.stop()


def hazard(server: Server, *args: str, api_key: str | None = TOKEN) -> list[str]:
    key = ["--api-key", api_key] if api_key else []
    return [*args, "--server", server.base_url, *key]


def test_keys_create_prints_the_key_alone_then_list_and_revoke(
    server: Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # the table's columns unwrapped
    argv = ["keys", "create", "--name", "van 7", "--tenant", "fleet-v", "--scope", "detect", "--scope", "jobs"]
    assert run(hazard(server, *argv, "--frames-per-second", "5")) == 0
    out, err = capsys.readouterr()
    key = out.strip()
    assert key.startswith("hzk_") and "\n" not in key and "shown this once" in err
    key_id = key.split("_")[1]
    assert run(hazard(server, "keys", "list", "--tenant", "fleet-v", "--json")) == 0
    listed = json.loads(capsys.readouterr().out)["keys"]
    assert [(k["key_id"], k["scopes"], k["limits"]["frames_per_second"]) for k in listed] == [
        (key_id, ["detect", "jobs"], 5.0)
    ]
    assert run(hazard(server, "keys", "list")) == 0
    table = capsys.readouterr().out
    assert key_id in table and key not in table
    assert run(hazard(server, "keys", "revoke", key_id)) == 0
    assert f"revoked {key_id}" in capsys.readouterr().err
    read = httpx.get(f"{server.base_url}/admin/api/keys/{key_id}", headers={"authorization": f"Bearer {TOKEN}"})
    assert read.json()["status"] == "revoked"


def test_operators_create_list_and_set_role(
    server: Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("a long operator password\n"))
    assert run(hazard(server, "operators", "create", "nina", "--role", "viewer", "--password-stdin")) == 0
    assert "nina: viewer" in capsys.readouterr().err
    assert run(hazard(server, "operators", "set-role", "nina", "--role", "inspector")) == 0
    assert run(hazard(server, "operators", "list", "--json")) == 0
    listed = json.loads(capsys.readouterr().out)["operators"]
    assert [(o["name"], o["role"]) for o in listed] == [("nina", "inspector")]
    basic = httpx.BasicAuth("nina", "a long operator password")
    assert httpx.get(f"{server.base_url}/admin/api/keys", auth=basic).status_code == 200


def test_a_missing_or_wrong_credential_is_a_usage_error_that_says_what_to_do(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(hazard(server, "keys", "list", api_key=None)) == 2
    assert "--api-key" in capsys.readouterr().err
    assert run(hazard(server, "operators", "list", api_key="not-the-token")) == 2
    err = capsys.readouterr().err
    assert "UNAUTHORIZED" in err and "ADMIN_TOKEN" in err
