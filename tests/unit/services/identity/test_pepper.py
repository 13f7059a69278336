"""The key digests' pepper: the environment's when set, else one generated on first use and kept on disk."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from app.services.identity.pepper import load_pepper


def test_a_configured_pepper_is_used_as_given(tmp_path: Path) -> None:
    assert load_pepper("x" * 40, tmp_path / "pepper") == b"x" * 40
    assert not (tmp_path / "pepper").exists()  # nothing written when the environment says it


def test_a_short_configured_pepper_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        load_pepper("short", tmp_path / "pepper")


def test_without_one_a_pepper_is_generated_once_private_and_kept(tmp_path: Path) -> None:
    file = tmp_path / "var" / "pepper"
    first = load_pepper(None, file)
    assert len(first) >= 32
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert load_pepper(None, file) == first  # a restart verifies the keys made before it
