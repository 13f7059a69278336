"""Who a request comes from is decided in one place: TRUSTED_PROXIES is parsed once per app, and every router
with a per-client limit (sessions, control center login) resolves clients with that one resolver."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

import app.main
from app.http.client_address import ClientAddress, Network
from app.settings import Settings

MakeSettings = Callable[..., Settings]


def test_the_app_builds_one_client_address_resolver(
    monkeypatch: pytest.MonkeyPatch, make_settings: MakeSettings
) -> None:
    built: list[ClientAddress] = []

    class Recorded(ClientAddress):
        def __init__(self, header: str | None, trusted: Sequence[Network]) -> None:
            super().__init__(header, trusted)
            built.append(self)

    monkeypatch.setattr(app.main, "ClientAddress", Recorded)
    app.main.create_app(make_settings(client_address_header="x-forwarded-for", trusted_proxies="10.0.0.0/8"))
    assert len(built) == 1
