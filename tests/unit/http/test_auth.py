"""How a request presents a key, and when what it presents is the operators' login instead (app/http/auth.py)."""

from __future__ import annotations

import pytest

from app.http.auth import presented_key, presents_operator_credentials

KEY = "hzk_abcd1234_" + "s" * 43


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        ({"x-api-key": KEY}, KEY),
        ({"authorization": f"Bearer {KEY}"}, KEY),
        ({"authorization": f"bearer  {KEY} "}, KEY),
        ({"x-api-key": KEY, "authorization": "Bearer other"}, KEY),  # X-API-Key wins
        ({"authorization": "Bearer admin-token"}, "admin-token"),  # a key check refuses it where a key is due
        ({"authorization": "Basic YWRtaW46cA=="}, None),
        ({"authorization": "Bearer "}, None),
        ({"x-api-key": "  "}, None),
        ({}, None),
    ],
)
def test_a_key_is_read_from_x_api_key_or_a_bearer_credential(headers: dict[str, str], key: str | None) -> None:
    assert presented_key(headers) == key


@pytest.mark.parametrize(
    ("headers", "operator"),
    [
        ({"authorization": "Bearer admin-token"}, True),
        ({"authorization": "Basic YWRtaW46cA=="}, True),
        ({"authorization": f"Bearer {KEY}"}, False),
        ({"authorization": "Bearer admin-token", "x-api-key": KEY}, False),
        ({}, False),
    ],
)
def test_only_what_is_not_a_key_goes_to_the_operators_login(headers: dict[str, str], operator: bool) -> None:
    assert presents_operator_credentials(headers) is operator
