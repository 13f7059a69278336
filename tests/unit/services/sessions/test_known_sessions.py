"""The ids Redis confirmed: bounded, the most recently confirmed kept."""

from __future__ import annotations

from app.services.sessions.store import KnownSessions


def test_past_its_limit_the_least_recently_confirmed_id_goes() -> None:
    known = KnownSessions(2)
    known.add("a")
    known.add("b")
    known.add("a")  # confirmed again: now the most recent
    known.add("c")
    assert "a" in known and "c" in known and "b" not in known


def test_a_discarded_id_is_no_longer_known() -> None:
    known = KnownSessions(2)
    known.add("a")
    known.discard("a")
    known.discard("never-added")
    assert "a" not in known
