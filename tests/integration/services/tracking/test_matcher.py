"""The matcher on hand-built cases, and its Lua twin (what live sessions run inside Redis) held equal to it."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from app.services.core.breakers import AsyncBreaker
from app.services.core.redis_client import REDIS_FAILURES, create_redis
from app.services.sessions.keys import session_key
from app.services.tracking.matcher import Tracker, expanded, iou
from app.services.tracking.positions import Calibration, Camera, PositionParams, locate, moved
from app.services.tracking.store import SessionTracks
from app.services.tracking.types import Box, FrameInput, Observation, TrackParams
from app.settings import Settings
from tests.conftest import both_redis_backends

PARAMS = TrackParams(min_hits=3, max_gap_seconds=1.0, iou_threshold=0.2, box_expand=0.25, sightings_kept=6)
CALIBRATION = Calibration(Camera(height_m=1.4, pitch_deg=2.0, hfov_deg=60.0), "profile")
FPS = 15


def frame(index: int, *boxes: tuple[int, Box], at: float | None = None, conf: float = 0.8, **where: Any) -> FrameInput:
    """Frame `index` at 15 frames/s with detections `(class_id, box)`; `where`: its GPS, heading, speed, size."""
    observations = tuple(
        Observation(f"class{class_id}", class_id, conf, box, f"cand-{index}-{n}")
        for n, (class_id, box) in enumerate(boxes)
    )
    return FrameInput(f"req-{index}", round(1000.0 + index / FPS if at is None else at, 3), observations, **where)


def approaching(index: int, x: float = 300.0) -> Box:
    """A static pothole as a forward-moving camera sees it: it grows and slides down the frame."""
    scale = 1 + index * 0.04
    return (x - 40 * scale, 200 + 6 * index, x + 40 * scale, 230 + 8 * index)


def test_expanded_boxes_overlap_where_plain_ones_do_not() -> None:
    a, b = (0.0, 0.0, 10.0, 10.0), (11.0, 0.0, 21.0, 10.0)
    assert iou(a, b) == 0.0
    assert iou(expanded(a, 0.25), expanded(b, 0.25)) > 0.1
    assert iou(a, a) == 1.0


def test_a_stationary_hazard_is_one_hazard_confirmed_once() -> None:
    tracker = Tracker(PARAMS)
    answers = [tracker.update(frame(i, (0, approaching(i)))) for i in range(25)]
    assert {a[0].hazard_id for a in answers} == {"cand-0-0"}
    assert [i for i, a in enumerate(answers) if a[0].new_hazard] == [2]  # the third frame confirms it
    (hazard,) = tracker.hazards()
    assert hazard.frames == 25 and hazard.hazard_id == "cand-0-0"


def test_two_neighbouring_hazards_of_one_class_stay_two() -> None:
    tracker = Tracker(PARAMS)
    for i in range(20):
        answers = tracker.update(frame(i, (0, approaching(i, x=200)), (0, approaching(i, x=330))))
        assert [a.hazard_id for a in answers] == ["cand-0-0", "cand-0-1"]
    assert len(tracker.hazards()) == 2


def test_a_gap_longer_than_the_limit_starts_a_new_hazard() -> None:
    tracker = Tracker(PARAMS)
    first = [tracker.update(frame(i, (0, approaching(5)))) for i in range(5)]
    within = tracker.update(frame(5, (0, approaching(5)), at=1000.0 + 4 / FPS + 0.9))
    later = tracker.update(frame(6, (0, approaching(5)), at=1000.0 + 4 / FPS + 0.9 + 1.5))
    assert first[0][0].hazard_id == within[0].hazard_id == "cand-0-0"
    assert later[0].hazard_id == "cand-6-0"
    assert not later[0].new_hazard  # one frame of it so far


def test_a_class_change_is_another_hazard() -> None:
    tracker = Tracker(PARAMS)
    for i in range(4):
        tracker.update(frame(i, (0, approaching(i))))
    answer = tracker.update(frame(4, (2, approaching(4))))
    assert answer[0].hazard_id == "cand-4-0"
    assert [h.label for h in tracker.hazards()] == ["class0"]


def test_a_flicker_shorter_than_min_hits_is_never_a_hazard() -> None:
    tracker = Tracker(PARAMS)
    tracker.update(frame(0, (1, approaching(0))))
    tracker.update(frame(1, (1, approaching(1))))
    assert tracker.hazards() == []


def test_frames_applied_out_of_order_confirm_once_and_keep_the_latest_box() -> None:
    tracker = Tracker(PARAMS)
    order = [0, 2, 1, 4, 3]
    answers = {i: tracker.update(frame(i, (0, approaching(i)))) for i in order}
    assert sum(a[0].new_hazard for a in answers.values()) == 1
    assert {a[0].hazard_id for a in answers.values()} == {"cand-0-0"}
    (hazard,) = tracker.hazards()
    assert hazard.first_seen == frame(0).at and hazard.last_seen == frame(4).at


def test_the_best_frame_is_the_most_confident_and_uploads_are_refined_by_a_margin() -> None:
    params = TrackParams(min_hits=2, upload_min_confidence=0.5, upload_margin=0.1)
    tracker = Tracker(params)
    confidences = [0.4, 0.45, 0.55, 0.6, 0.7, 0.66, 0.9]
    uploads = []
    for i, conf in enumerate(confidences):
        (answer,) = tracker.update(frame(i, (0, approaching(i)), conf=conf))
        uploads.append(answer.upload)
    # Confirmed on frame 1 (0.45, below the upload minimum); 0.55 is the first uploaded, 0.7 and 0.9 beat it by 0.1.
    assert uploads == [False, False, True, False, True, False, True]
    (hazard,) = tracker.hazards()
    assert hazard.max_confidence == 0.9 and hazard.best_request_id == "req-6"


def random_sequence(seed: int, frames: int = 120) -> list[FrameInput]:
    """Hazards entering and leaving view, missed detections, class flicker, frames out of order, times with gaps."""
    rng = random.Random(seed)
    hazards = [(rng.randrange(3), rng.uniform(60, 580), rng.randrange(frames)) for _ in range(8)]
    sequence = []
    at = 1_700_000_000.0
    for index in range(frames):
        at += rng.choice([1 / FPS, 1 / FPS, 2 / FPS, 0.4, 1.3])
        boxes: list[tuple[int, Box]] = []
        for class_id, x, start in hazards:
            age = index - start
            if 0 <= age < 30 and rng.random() > 0.2:
                flicker = (class_id + 1) % 3 if rng.random() < 0.05 else class_id
                x1, y1, x2, y2 = approaching(age, x)
                jitter = rng.uniform(-3, 3)
                boxes.append((flicker, (round(x1 + jitter, 2), round(y1, 2), round(x2 + jitter, 2), round(y2, 2))))
        conf = round(rng.uniform(0.3, 0.95), 6)
        lat, lon = moved(52.0, 13.0, 40.0, index * 0.55 + rng.gauss(0, 0.5), rng.gauss(0, 0.5))
        where = {"lat": round(lat, 9), "lon": round(lon, 9), "speed_mps": 8.25, "width": 640, "height": 360}
        if rng.random() < 0.7:  # some frames without a heading: their views take the course between fixes
            where["heading"] = 40.0
        if rng.random() < 0.1:  # ... and some without GPS
            where = {"width": 640, "height": 360}
        sequence.append(frame(index, *boxes, at=at, conf=conf, **where))
    for _ in range(6):  # a few neighbours swapped: concurrent requests finishing out of order
        i = rng.randrange(frames - 1)
        sequence[i], sequence[i + 1] = sequence[i + 1], sequence[i]
    return sequence


@pytest.fixture
async def session_tracks(make_settings: Callable[..., Settings]) -> AsyncIterator[tuple[SessionTracks, str]]:
    settings = make_settings()
    client = create_redis(settings.redis)
    breaker = AsyncBreaker("redis", fail_max=3, reset_seconds=1.0, failures=REDIS_FAILURES)
    session_id = uuid.uuid4().hex  # tracking keys only need the session hash to exist
    await client.hset(session_key(session_id), mapping={"status": "active"})  # type: ignore[misc]
    await client.expire(session_key(session_id), 120)
    yield SessionTracks(client, breaker, PARAMS), session_id
    await client.aclose()


@both_redis_backends
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_the_lua_twin_decides_exactly_as_the_python_matcher(
    session_tracks: tuple[SessionTracks, str], seed: int
) -> None:
    tracks, session_id = session_tracks
    python = Tracker(PARAMS)
    confirmed_in_redis: dict[str, dict[str, object]] = {}
    for index, frame_input in enumerate(random_sequence(seed)):
        expected = python.update(frame_input)
        associated = await tracks.associate(session_id, json.dumps(frame_input.as_json()), f"update-{index}")
        assert associated.applied
        assert associated.assignments == expected, f"frame {index}"
        for track in associated.changed:
            confirmed_in_redis[track.hazard_id] = track.as_json()
    assert {h.hazard_id for h in python.hazards()} == set(confirmed_in_redis)
    assert len(confirmed_in_redis) >= 4  # the sequence does exercise confirmation
    stored = await tracks.hazards(session_id)
    assert [(h.hazard_id, h.frames, h.max_confidence) for h in stored] == [
        (h.hazard_id, h.frames, h.max_confidence) for h in python.hazards()
    ]
    # The views each track keeps, and so the positions they fuse to, are the same too.
    in_python = {t.hazard_id: t for t in python.confirmed_tracks()}
    for track, _ in (await tracks.stored(session_id)).tracks:
        assert track.sightings == in_python[track.hazard_id].sightings
        assert locate(track, CALIBRATION, PositionParams()) == locate(
            in_python[track.hazard_id], CALIBRATION, PositionParams()
        )
    assert any(t.sightings[-1].heading is None for t in in_python.values())
    placed = [locate(t, CALIBRATION, PositionParams()) for t in in_python.values()]
    assert sum(p is not None and p.method == "profile" for p in placed) >= 3


@both_redis_backends
async def test_an_update_applied_twice_changes_nothing_the_second_time(
    session_tracks: tuple[SessionTracks, str],
) -> None:
    tracks, session_id = session_tracks
    for i in range(3):
        await tracks.associate(session_id, json.dumps(frame(i, (0, approaching(i))).as_json()), f"u{i}")
    again = await tracks.associate(session_id, json.dumps(frame(2, (0, approaching(2))).as_json()), "u2")
    assert not again.applied
    (hazard,) = await tracks.hazards(session_id)
    assert hazard.frames == 3
