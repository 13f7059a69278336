"""The write-behind buffer (bounded, verified writes first, saved and loaded across a stop) and its replayer (a kept
tracking update before its history entry, oldest first, stopping when Redis fails again)."""

from __future__ import annotations

import json
from pathlib import Path

import redis

from app.services.core.errors import SessionStoreUnavailable
from app.services.sessions.write_behind import PendingWrite, PendingWrites, Replayer


def test_unverified_writes_give_way_and_never_push_out_verified_ones() -> None:
    pending = PendingWrites(limit=3)
    for index in range(3):
        pending.keep(PendingWrite(f"real-{index}", "{}", counts_frame=True, at=index, verified=True))
    pending.keep(PendingWrite("made-up", "{}", counts_frame=True, at=9))
    assert [write.session_id for write in pending] == ["real-0", "real-1", "real-2"]
    assert pending.dropped == 1
    pending.keep(PendingWrite("real-3", "{}", counts_frame=True, at=10, verified=True))  # verified: oldest goes
    assert [write.session_id for write in pending] == ["real-1", "real-2", "real-3"]


def test_saved_writes_load_back_in_order(tmp_path: Path) -> None:
    path = tmp_path / "pending-writes.jsonl"
    saved = PendingWrites(limit=10, path=path)
    for index in range(4):
        saved.keep(PendingWrite(f"s{index}", json.dumps({"n": index}), index % 2 == 0, float(index), index < 2))
    assert saved.save() == 4
    loaded = PendingWrites(limit=10, path=path)
    assert loaded.load() == 4 and not path.exists()
    assert [(w.session_id, w.counts_frame, w.verified) for w in loaded] == [
        ("s0", True, True),
        ("s1", False, True),
        ("s2", True, False),
        ("s3", False, False),
    ]


class Applied:
    """What the replayer's two appliers saw, in order; `gone` sessions answer 0, `down` raises the store's 503."""

    def __init__(self, gone: frozenset[str] = frozenset(), refused: frozenset[str] = frozenset()) -> None:
        self.calls: list[tuple[str, str]] = []
        self.gone, self.refused = gone, refused
        self.down = False

    async def history(self, write: PendingWrite) -> int:
        if self.down:
            raise SessionStoreUnavailable()
        if write.session_id in self.refused:
            raise redis.ResponseError("WRONGTYPE")
        self.calls.append(("history", write.session_id))
        return 0 if write.session_id in self.gone else 1

    async def tracking(self, session_id: str, update: str) -> None:
        self.calls.append(("tracking", f"{session_id}:{update}"))


def kept(*writes: PendingWrite, limit: int = 10) -> PendingWrites:
    pending = PendingWrites(limit)
    for write in writes:
        pending.keep(write)
    return pending


async def test_replay_applies_a_kept_tracking_update_before_its_history_entry_oldest_first() -> None:
    pending = kept(
        PendingWrite("a", "{}", counts_frame=True, at=1.0, verified=True, tracking="u1"),
        PendingWrite("b", "{}", counts_frame=True, at=2.0),
    )
    applied = Applied()
    assert await Replayer(pending, applied.history, applied.tracking).replay() == 2
    assert applied.calls == [("tracking", "a:u1"), ("history", "a"), ("history", "b")]
    assert len(pending) == 0 and pending.replayed == 2


async def test_replay_stops_when_redis_fails_again_and_keeps_what_is_left() -> None:
    pending = kept(
        PendingWrite("a", "{}", counts_frame=True, at=1.0), PendingWrite("b", "{}", counts_frame=True, at=2.0)
    )
    applied = Applied()
    applied.down = True
    assert await Replayer(pending, applied.history, applied.tracking).replay() == 0
    assert [write.session_id for write in pending] == ["a", "b"]


async def test_writes_of_gone_sessions_and_refused_writes_are_discarded_without_blocking_the_rest() -> None:
    pending = kept(*(PendingWrite(name, "{}", counts_frame=True, at=1.0) for name in ("gone", "poisoned", "live")))
    applied = Applied(gone=frozenset({"gone"}), refused=frozenset({"poisoned"}))
    assert await Replayer(pending, applied.history, applied.tracking).replay() == 1
    assert len(pending) == 0 and pending.discarded == 2
    assert applied.calls == [("history", "gone"), ("history", "live")]


def test_unreadable_saved_lines_are_skipped_and_the_rest_load(tmp_path: Path) -> None:
    path = tmp_path / "pending-writes.jsonl"
    good = {"session_id": "s0", "entry": "{}", "counts_frame": True, "at": 1.0, "tracking": "u"}
    path.write_text("not json\n" + json.dumps(good) + "\n", encoding="utf-8")
    loaded = PendingWrites(limit=10, path=path)
    assert loaded.load() == 1 and not path.exists()
    assert [(w.session_id, w.verified, w.tracking) for w in loaded] == [("s0", False, "u")]
