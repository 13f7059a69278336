"""The association rule, in Python: a frame's detections against the open tracks, by class, expanded-box IoU and
time gap; greedy, best IoU first.

Road hazards are static while the camera moves, so their image motion is not constant-velocity (it accelerates as
the distance shrinks): a constant-velocity Kalman filter would mispredict exactly where boxes move most. Boxes
grown by `box_expand` on each side and a gap limit in seconds tolerate that motion and a few missed frames, with
nothing to tune per camera. Greedy on a sorted pair list equals Hungarian matching whenever the pairs do not
compete, which is what hazards a few metres apart produce; it is also what a Lua script can run atomically.

`scripts.ASSOCIATE` is the same rule in Lua, run inside Redis for live sessions (one atomic round trip per frame);
`Tracker` runs it in memory over a sequence of frames (batch jobs, evaluation, tests). A test holds them equal.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from app.services.tracking.positions import ESTIMATED, Calibration, PositionParams, estimate_camera, locate
from app.services.tracking.types import (
    Assignment,
    Box,
    FrameInput,
    HazardRecord,
    Observation,
    Sighting,
    Track,
    TrackParams,
    sighting_order,
)


def expanded(box: Box, ratio: float) -> Box:
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) * ratio, (y2 - y1) * ratio
    return x1 - dx, y1 - dy, x2 + dx, y2 + dy


def iou(a: Box, b: Box) -> float:
    ix = min(a[2], b[2]) - max(a[0], b[0])
    iy = min(a[3], b[3]) - max(a[1], b[1])
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Association:
    assignments: list[Assignment]
    open_tracks: list[Track]
    changed: list[Track] = field(default_factory=list)  # confirmed tracks this frame touched (to be stored)


def associate(tracks: Iterable[Track], frame: FrameInput, params: TrackParams) -> Association:
    """One frame against the open tracks; returns each detection's hazard and the tracks still open after it.

    A track unmatched for more than `max_gap_seconds` (before this frame's time) is closed. Frames may be applied
    out of order (concurrent requests): a frame matches a track within the gap of its time span, before or after
    it; times only widen the span, and a track is confirmed by its count of frames, so the frame that confirms it
    is reported exactly once whatever the order. Reordered by more than the gap, a track would split in two.
    """
    open_tracks = [t for t in tracks if frame.at - t.last_seen <= params.max_gap_seconds]
    detections = frame.observations
    pairs: list[tuple[float, int, int]] = []
    for ti, track in enumerate(open_tracks):
        if max(track.first_seen - frame.at, frame.at - track.last_seen, 0.0) > params.max_gap_seconds:
            continue  # the frame is further than the gap from the track's time span, before or after it
        reference, apart = reference_view(track, frame.at)
        ratio = params.box_expand * max(1.0, apart / params.expand_interval_seconds)
        grown = expanded(reference, ratio)
        for di, detection in enumerate(detections):
            if detection.class_id != track.class_id:
                continue
            overlap = iou(grown, expanded(detection.box, ratio))
            if overlap >= params.iou_threshold:
                pairs.append((overlap, ti, di))
    pairs.sort(key=lambda pair: (-pair[0], pair[1], pair[2]))
    track_of: dict[int, int] = {}
    taken: set[int] = set()
    for _, ti, di in pairs:
        if di in track_of or ti in taken:
            continue
        track_of[di] = ti
        taken.add(ti)

    assignments: list[Assignment] = []
    changed: list[Track] = []
    for di, detection in enumerate(detections):
        if di in track_of:
            track = open_tracks[track_of[di]]
            new_hazard = _extend(track, detection, frame, params)
        else:
            track = _start(detection, frame, params)
            open_tracks.append(track)
            new_hazard = track.confirmed
        upload = track.confirmed and _wants_upload(track, detection, params)
        if upload:
            track.uploaded_confidence, track.upload_media_id = detection.confidence, frame.media_id
        if track.confirmed:
            changed.append(track)
        assignments.append(Assignment(track.hazard_id, new_hazard, upload))
    return Association(assignments, open_tracks, changed)


def reference_view(track: Track, at: float) -> tuple[Box, float]:
    """What a frame at `at` is matched against, and how far apart in time: the track's newest box; for a frame older
    than that (applied out of order: concurrent workers), the box of the track's view nearest it in time. A hazard's
    box moves and grows as the vehicle nears it, more the longer apart: the boxes are expanded in proportion
    (`expand_interval_seconds`). Against the newest box alone, a late frame or one after a skipped one started a
    second track (seen: a drive's frames, 8 at once on a loaded machine, counted 3 hazards of 2)."""
    newest = track.box, abs(at - track.last_seen)
    if at >= track.last_seen or not track.sightings:
        return newest
    nearest = min(track.sightings, key=lambda sighting: abs(sighting.at - at))  # the first of equals, as in Lua
    if nearest.box_width is None or nearest.box_height is None:  # a view kept before views had sizes
        return newest
    half = nearest.box_width / 2
    return (nearest.u - half, nearest.v - nearest.box_height, nearest.u + half, nearest.v), abs(nearest.at - at)


def _start(detection: Observation, frame: FrameInput, params: TrackParams) -> Track:
    return Track(
        hazard_id=detection.candidate_id,
        label=detection.label,
        class_id=detection.class_id,
        box=detection.box,
        first_seen=frame.at,
        last_seen=frame.at,
        frames=1,
        max_confidence=detection.confidence,
        best_request_id=frame.request_id,
        best_at=frame.at,
        lat=frame.lat,
        lon=frame.lon,
        model=frame.model,
        confirmed=params.min_hits <= 1,
        sightings=[Sighting.of(detection.box, frame)],
    )


def _add_sighting(track: Track, sighting: Sighting, params: TrackParams) -> None:
    """Kept in time order and cut to the latest `sightings_kept`: the nearest views, whatever order frames came in."""
    key = sighting_order(sighting)
    at = len(track.sightings)
    while at > 0 and sighting_order(track.sightings[at - 1]) > key:
        at -= 1
    track.sightings.insert(at, sighting)
    while len(track.sightings) > params.sightings_kept:
        track.sightings.pop(0)


def _extend(track: Track, detection: Observation, frame: FrameInput, params: TrackParams) -> bool:
    """Add the frame to the track; True when this frame is the one that confirms it."""
    if frame.at >= track.last_seen:
        track.box = detection.box  # the newest view; a late (out-of-order) frame does not move it back
        if frame.lat is not None:
            track.lat, track.lon = frame.lat, frame.lon  # the nearest view: where the camera passes it
    track.first_seen = min(track.first_seen, frame.at)
    track.last_seen = max(track.last_seen, frame.at)
    track.frames += 1
    _add_sighting(track, Sighting.of(detection.box, frame), params)
    if detection.confidence > track.max_confidence:
        track.max_confidence = detection.confidence
        track.best_request_id, track.best_at = frame.request_id, frame.at
        track.model = frame.model
    if not track.confirmed and track.frames >= params.min_hits:
        track.confirmed = True
        return True
    return False


def _wants_upload(track: Track, detection: Observation, params: TrackParams) -> bool:
    if detection.confidence < params.upload_min_confidence:
        return False
    return track.uploaded_confidence is None or detection.confidence >= track.uploaded_confidence + params.upload_margin


class Tracker:
    """The matcher over a sequence of frames in memory, in the order given: a batch job's frames in frame order.

    `update` answers each frame's assignments as the live path does; `hazards()` lists the confirmed ones, placed
    with `calibration`, else with one estimated from all of its tracks (as a session's, once settled), else at the
    camera's GPS.
    """

    def __init__(
        self, params: TrackParams, calibration: Calibration | None = None, positions: PositionParams | None = None
    ) -> None:
        self.params = params
        self.calibration = calibration
        self.positions = positions or PositionParams()
        self._open: list[Track] = []
        self._confirmed: dict[str, Track] = {}

    def update(self, frame: FrameInput, min_hits: int | None = None) -> list[Assignment]:
        """`min_hits`: this frame's, when it is not the params' (a job's sparse frames, `jobs.frames.hits_needed`)."""
        params = self.params if min_hits is None else replace(self.params, min_hits=min_hits)
        result = associate(self._open, frame, params)
        self._open = result.open_tracks
        for track in result.changed:
            self._confirmed[track.hazard_id] = track
        return result.assignments

    def confirmed_tracks(self) -> list[Track]:
        return sorted(self._confirmed.values(), key=lambda t: (t.first_seen, t.hazard_id))

    def hazards(self) -> list[HazardRecord]:
        tracks = self.confirmed_tracks()
        calibration = self.calibration
        if calibration is None:
            camera = estimate_camera([t.sightings for t in tracks], self.positions)
            calibration = None if camera is None else Calibration(camera, ESTIMATED, len(tracks))
        return [HazardRecord.of_track(t, position=locate(t, calibration, self.positions)) for t in tracks]
