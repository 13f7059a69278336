"""A session's keys share one hash tag (one cluster slot), and a string that cannot be an id builds no key."""

from __future__ import annotations

import secrets

import pytest

from app.services.core.errors import SessionNotFound
from app.services.core.ids import SESSION_ID_BYTES
from app.services.sessions.keys import SESSION_MATCH, require_session_id, session_id_of, session_key, session_keys


def test_every_key_of_a_session_carries_its_id_as_the_hash_tag() -> None:
    session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
    keys = session_keys(session_id)
    assert keys[0] == session_key(session_id) == f"session:{{{session_id}}}"
    assert [key.removeprefix(keys[0]) for key in keys] == ["", ":history", ":uploads", ":tracks", ":hazards"]
    assert all(key[key.index("{") + 1 : key.index("}")] == session_id for key in keys)


def test_the_id_reads_back_from_a_session_hash_key() -> None:
    session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
    assert session_id_of(session_key(session_id)) == session_id


def test_the_scan_pattern_matches_session_hashes_only() -> None:
    assert SESSION_MATCH == "session:{*}"  # `*}` ends at the brace: `session:{id}:history` does not match


@pytest.mark.parametrize("candidate", ["", "short", "a" * 33, "x}{y" + "a" * 28, "../" + "a" * 29])
def test_a_string_that_cannot_be_an_id_is_not_found(candidate: str) -> None:
    with pytest.raises(SessionNotFound):
        require_session_id(candidate)


def test_an_issued_id_is_accepted() -> None:
    require_session_id(secrets.token_urlsafe(SESSION_ID_BYTES))
