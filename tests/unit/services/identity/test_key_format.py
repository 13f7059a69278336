"""The API key's text and digest: what is well formed, what Redis keeps, what may be logged."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from app.services.identity.key_format import (
    KEY_ID,
    check_pepper,
    format_key,
    new_key_id,
    new_secret,
    parse_key,
    redact_keys,
    secret_digest,
)

PEPPER = b"p" * 32


def test_a_made_key_parses_back_to_its_id_and_secret() -> None:
    key_id, secret = new_key_id(), new_secret()
    key = format_key(key_id, secret)
    assert key.startswith(f"hzk_{key_id}_") and KEY_ID.fullmatch(key_id)
    parsed = parse_key(key)
    assert parsed is not None and (parsed.key_id, parsed.secret) == (key_id, secret)


def test_the_secret_carries_256_random_bits() -> None:
    secrets = {new_secret() for _ in range(100)}
    assert len(secrets) == 100 and all(len(secret) == 43 for secret in secrets)


@pytest.mark.parametrize(
    "presented",
    [
        "",
        "hzk_",
        "Bearer hzk_abcd1234_" + "a" * 43,
        "hzk_ABCD1234_" + "a" * 43,  # ids are lowercase
        "hzk_abcd123_" + "a" * 43,  # short id
        "hzk_abcd1234_" + "a" * 42,  # short secret
        "hzk_abcd1234_" + "a" * 44,
        "hzk_abcd1234_" + "a" * 42 + "=",
        "xyz_abcd1234_" + "a" * 43,
        "hzk_abcd1234_" + "a" * 42 + "\n",
    ],
)
def test_anything_but_the_exact_shape_is_malformed(presented: str) -> None:
    assert parse_key(presented) is None


def test_a_secret_may_contain_the_separator() -> None:
    secret = "_" * 10 + "-" * 10 + "a" * 23
    parsed = parse_key(format_key("abcd1234", secret))
    assert parsed is not None and parsed.secret == secret


def test_the_digest_is_an_hmac_of_the_secret_under_the_pepper() -> None:
    assert secret_digest(PEPPER, "s") == hmac.new(PEPPER, b"s", hashlib.sha256).hexdigest()
    assert secret_digest(PEPPER, "s") != secret_digest(b"q" * 32, "s")


def test_a_short_pepper_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        check_pepper(b"short")
    assert check_pepper(PEPPER) == PEPPER


def test_the_parsed_secret_is_not_in_its_repr() -> None:
    secret = new_secret()
    parsed = parse_key(format_key("abcd1234", secret))
    assert secret not in repr(parsed)


def test_keys_in_text_are_cut_to_their_public_id() -> None:
    secret = new_secret()
    text = f"created hzk_abcd1234_{secret}, see log"
    assert redact_keys(text) == "created hzk_abcd1234_***, see log"
    assert secret not in redact_keys(text)
