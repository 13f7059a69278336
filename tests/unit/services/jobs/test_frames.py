"""How many frames confirm a hazard in a job: TRACK_MIN_HITS at a dash camera's rate, fewer for sparser frames (as
many seconds of views), never one."""

from __future__ import annotations

import pytest

from app.services.jobs.frames import NOMINAL_FPS, hits_needed, seconds_apart


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


def test_frames_apart_by_capture_time_else_by_the_nominal_rate() -> None:
    taken = {"captured_at": "2026-03-01T10:00:00.300Z"}
    assert seconds_apart(0.0, 4, taken, {"captured_at": "2026-03-01T10:00:00Z"}) == pytest.approx(0.3)
    assert seconds_apart(100.0, 4, {}, {}) == pytest.approx(1 / NOMINAL_FPS)
    assert seconds_apart(100.0, 0, taken, None) is None
