"""How many frames confirm a hazard in a job: TRACK_MIN_HITS at a dash camera's rate, fewer for sparser frames (as
many seconds of views), never one."""

from __future__ import annotations

import pytest

from app.services.jobs.frames import NOMINAL_FPS, hits_needed, tracked_job_frame


@pytest.mark.parametrize(
    ("apart", "needed"),
    [
        (None, 5),  # the first frame, or one whose neighbour is unknown
        (1 / NOMINAL_FPS, 5),  # a dash camera's rate: TRACK_MIN_HITS
        (1 / 30, 5),  # denser: never more
        (-2.0, 5),  # taken before the frame listed before it (photos named out of time order)
        (0.1, 4),  # 10 frames/s: 0.4 s of views
        (0.2, 2),  # every 3 m at 15 m/s
        (0.35, 2),  # every 5 m: 2-3 frames see a hazard, two confirm it
        (30.0, 2),  # photos half a minute apart: never one frame
    ],
)
def test_sparser_frames_need_fewer_but_never_one(apart: float | None, needed: int) -> None:
    assert hits_needed(5, apart) == needed


def test_a_setting_of_one_or_two_is_kept() -> None:
    assert hits_needed(1, 0.5) == 1 and hits_needed(2, 0.5) == 2 and hits_needed(2, 0.01) == 2


def test_a_frame_s_hits_follow_how_long_after_the_frame_before_it_was_taken() -> None:
    """By capture time, else by the nominal rate; the first frame, or one whose neighbour is unknown, needs
    TRACK_MIN_HITS."""

    def hits(index: int, meta: dict[str, str], before: dict[str, str] | None) -> int:
        return tracked_job_frame(100.0, index, meta, before, [], "m", 5)[1]

    taken = {"captured_at": "2026-03-01T10:00:00.300Z"}
    assert hits(4, taken, {"captured_at": "2026-03-01T10:00:00Z"}) == 2  # 0.3 s after
    assert hits(4, {"captured_at": "2026-03-01T10:00:00.100Z"}, {"captured_at": "2026-03-01T10:00:00Z"}) == 4
    assert hits(4, {}, {}) == 5  # 1/15 s apart by the nominal rate
    assert hits(0, taken, None) == hits(4, taken, None) == 5
