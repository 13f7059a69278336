"""Where a hazard is: its views projected onto the road, fused into one position with its uncertainty.

A box's bottom centre is where the hazard touches the road. A pinhole camera at height h, pitched down by theta,
with focal length f = (width / 2) / tan(hfov / 2) sees that point along a ray that meets the flat road a known
distance ahead and to the side; along the camera's heading (the frame's, else the course between the track's own
GPS fixes) that offset from the camera's GPS is the hazard's position. Each view's error grows with its distance
(one pixel of box edge is ~d^2 / (f h) metres), so near views weigh more; views far from the rest are dropped. The
uncertainty left is the fused views' plus what every view shares: the vehicle's GPS bias and the calibration's error.

Calibration comes, in order, from the key's device profile, the session's metadata (`camera`), or is estimated from
the session's own tracks: a static ground point seen d0 metres ahead is, after the camera travelled s, at image row
y = y_horizon + f h / (d0 - s), so tracks seen over known travel give the horizon and f h (the focal length, which
static ground points cannot give apart from h, is taken from `assumed_hfov_deg`). Without any, or without a heading
or a second fix to take one from, the position is the camera's GPS at the nearest view, as before (`camera_gps`).

Pure functions over `types`: the live path (after the Lua association) and batch jobs (`Tracker`) run the same ones.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from app.services.identity.device_profile import HEIGHT_M, PITCH_DEG
from app.services.tracking.types import LocatedAt, Sighting, Track

EARTH_RADIUS_M = 6_372_797.560856  # Redis' sphere (hazard_map.py): distances agree with the map's
METRES_PER_DEGREE = EARTH_RADIUS_M * math.pi / 180
PROFILE, SESSION, ESTIMATED, CAMERA_GPS = "profile", "session", "estimated", "camera_gps"
METHODS = (PROFILE, SESSION, ESTIMATED, CAMERA_GPS)

BOX_EDGE_SIGMA_PX = 2.0  # a detector's box edge jitters by about this from frame to frame
FIX_NOISE_M = 0.5  # one GPS fix's own noise, on top of the receiver's slowly varying bias
CALIBRATION_ERROR = {PROFILE: 0.03, SESSION: 0.03}  # relative error of the distance ahead, given a camera
# An estimate's relative error is about this / sqrt(tracks it was made from): on the tuning drives its height was
# off by a median 29 % from 3 tracks, 20 % from 4-5, 14 % from 6-8 and 11 % from more.
ESTIMATE_ERROR = 0.5
COURSE_HEADING_SIGMA_DEG = 3.0  # a heading taken from two fixes a few metres apart
MIN_COURSE_M = 2.0  # fixes closer than this give no course worth projecting along
CAMERA_GPS_OFFSET_M = 6.0  # the camera is this far short of the hazard, give or take, when it passes it
MAX_AHEAD_M = 60.0  # a ray meeting the road further than this is too flat to place anything
OUTLIER_SIGMAS = 3.0
MIN_ESTIMATE_TRACKS = 3
MIN_ESTIMATE_SIGHTINGS = 4  # per track
MIN_ESTIMATE_TRAVEL_M = 2.0  # per track
FIT_WEIGHT_POWER = 4  # var(1 / (y - horizon)) grows as (y - horizon)^-4 for a fixed pixel error
# A box this close to the image's left, right or bottom edge is cut by it: its bottom centre is not where the hazard
# touches the road (pulled towards the middle, or up to the last row), and the nearest views, which weigh most, are
# the ones the frame cuts. Such views place nothing while the track has others.
EDGE_MARGIN_PX = 2.0


@dataclass(frozen=True)
class Camera:
    """Height above the road (m), pitch below the horizon (degrees), horizontal field of view (degrees)."""

    height_m: float
    pitch_deg: float
    hfov_deg: float


@dataclass(frozen=True)
class Calibration:
    camera: Camera
    method: str  # profile | session | estimated
    tracks: int = 0  # how many tracks an estimate was made from

    @property
    def relative_error(self) -> float:
        """Of the distances it gives (see CALIBRATION_ERROR and ESTIMATE_ERROR)."""
        if self.method in CALIBRATION_ERROR:
            return CALIBRATION_ERROR[self.method]
        return ESTIMATE_ERROR / math.sqrt(max(self.tracks, 1))


@dataclass(frozen=True)
class PositionParams:
    gps_sigma_m: float = 1.5  # a vehicle's GPS bias, one standard deviation per axis: shared by all its views
    assumed_hfov_deg: float = 60.0  # for an estimated calibration, which cannot tell the focal length from height


def focal_px(width: float, hfov_deg: float) -> float:
    return (width / 2) / math.tan(math.radians(hfov_deg) / 2)


def ground_offset(u: float, v: float, width: float, height: float, camera: Camera) -> tuple[float, float] | None:
    """Metres ahead and to the right of the camera where pixel (u, v) meets the road; None at or above the
    horizon, or too far to place."""
    f = focal_px(width, camera.hfov_deg)
    x, y = (u - width / 2) / f, (v - height / 2) / f
    pitch = math.radians(camera.pitch_deg)
    down = y * math.cos(pitch) + math.sin(pitch)
    if down <= 0:
        return None
    along = camera.height_m / down  # the ray's length along the optical axis' unit, to the road
    ahead = along * (math.cos(pitch) - y * math.sin(pitch))
    if not 0 < ahead <= MAX_AHEAD_M:
        return None
    return ahead, along * x


def moved(lat: float, lon: float, heading_deg: float, ahead: float, right: float) -> tuple[float, float]:
    """The point `ahead` metres along the heading and `right` metres to its right (flat earth over metres)."""
    bearing = math.radians(heading_deg)
    east = ahead * math.sin(bearing) + right * math.cos(bearing)
    north = ahead * math.cos(bearing) - right * math.sin(bearing)
    return lat + north / METRES_PER_DEGREE, lon + east / (METRES_PER_DEGREE * math.cos(math.radians(lat)))


def course_deg(sightings: Sequence[Sighting]) -> float | None:
    """The bearing from the track's first fix to its last, when they are far enough apart to give one."""
    fixes = [s for s in sightings if s.lat is not None and s.lon is not None]
    if len(fixes) < 2:
        return None
    first, last = fixes[0], fixes[-1]
    assert first.lat is not None and first.lon is not None and last.lat is not None and last.lon is not None
    north = (last.lat - first.lat) * METRES_PER_DEGREE
    east = (last.lon - first.lon) * METRES_PER_DEGREE * math.cos(math.radians(first.lat))
    if math.hypot(north, east) < MIN_COURSE_M:
        return None
    return math.degrees(math.atan2(east, north)) % 360


@dataclass(frozen=True)
class _View:
    lat: float
    lon: float
    ahead: float
    sigma: float  # its own, random error (m): what averaging views reduces


def _view(sighting: Sighting, camera: Camera, course: float | None) -> _View | None:
    if sighting.lat is None or sighting.lon is None or sighting.width is None or sighting.height is None:
        return None
    heading = sighting.heading if sighting.heading is not None else course
    if heading is None:
        return None
    offset = ground_offset(sighting.u, sighting.v, sighting.width, sighting.height, camera)
    if offset is None:
        return None
    ahead, right = offset
    f = focal_px(sighting.width, camera.hfov_deg)
    along = ahead * ahead * BOX_EDGE_SIGMA_PX / (f * camera.height_m)
    across = ahead * BOX_EDGE_SIGMA_PX / f
    heading_error = 0.0 if sighting.heading is not None else ahead * math.radians(COURSE_HEADING_SIGMA_DEG)
    sigma = math.sqrt(along**2 + across**2 + heading_error**2 + FIX_NOISE_M**2)
    lat, lon = moved(sighting.lat, sighting.lon, heading, ahead, right)
    return _View(lat, lon, ahead, sigma)


def _apart_m(a: _View, lat: float, lon: float) -> float:
    return math.hypot(
        (a.lat - lat) * METRES_PER_DEGREE, (a.lon - lon) * METRES_PER_DEGREE * math.cos(math.radians(lat))
    )


def _weighted_mean(views: Sequence[_View]) -> tuple[float, float, float, float]:
    """lat, lon, mean distance ahead, and the sum of weights (1 / sigma^2)."""
    weights = [1 / (v.sigma * v.sigma) for v in views]
    total = sum(weights)
    lat = sum(w * v.lat for w, v in zip(weights, views, strict=True)) / total
    lon = sum(w * v.lon for w, v in zip(weights, views, strict=True)) / total
    ahead = sum(w * v.ahead for w, v in zip(weights, views, strict=True)) / total
    return lat, lon, ahead, total


def cut_by_frame(sighting: Sighting) -> bool:
    """The view's box touches the image's left, right or bottom edge (unknown without its size: not cut)."""
    if sighting.width is None or sighting.height is None or sighting.box_width is None:
        return False
    half = sighting.box_width / 2
    return (
        sighting.u - half <= EDGE_MARGIN_PX
        or sighting.u + half >= sighting.width - EDGE_MARGIN_PX
        or sighting.v >= sighting.height - EDGE_MARGIN_PX
    )


def in_order(sightings: Sequence[Sighting]) -> list[Sighting]:
    return sorted(sightings, key=lambda s: (s.at, s.v, s.u))


def fuse(sightings: Sequence[Sighting], calibration: Calibration, params: PositionParams) -> LocatedAt | None:
    """The track's views as one position, near views weighing more, views the frame cut and views beyond
    OUTLIER_SIGMAS of the rest dropped; None when no view can be projected (no image size, fix, heading or course, or
    all above the horizon)."""
    ordered = in_order(sightings)
    course = course_deg(ordered)  # every fix gives the course, cut or not
    whole = [s for s in ordered if not cut_by_frame(s)] or ordered
    views = [v for v in (_view(s, calibration.camera, course) for s in whole) if v is not None]
    if not views:
        return None
    lat, lon, _, _ = _weighted_mean(views)
    kept = [v for v in views if _apart_m(v, lat, lon) <= OUTLIER_SIGMAS * v.sigma] or views
    lat, lon, ahead, total = _weighted_mean(kept)
    shared = calibration.relative_error * ahead
    uncertainty = math.sqrt(1 / total + shared**2 + params.gps_sigma_m**2)
    return LocatedAt(lat, lon, round(uncertainty, 3), calibration.method)


def camera_gps(track: Track, params: PositionParams) -> LocatedAt | None:
    """Today's fallback: the camera's GPS at the nearest view, a few metres short of the hazard."""
    if track.lat is None or track.lon is None:
        return None
    uncertainty = math.sqrt(params.gps_sigma_m**2 + CAMERA_GPS_OFFSET_M**2)
    return LocatedAt(track.lat, track.lon, round(uncertainty, 3), CAMERA_GPS)


def locate(track: Track, calibration: Calibration | None, params: PositionParams) -> LocatedAt | None:
    """The track's position: projected when a calibration and its views allow, else the camera's GPS; None when it
    has no GPS at all."""
    if track.lat is None or track.lon is None:
        return None
    projected = fuse(track.sightings, calibration, params) if calibration is not None else None
    return projected if projected is not None else camera_gps(track, params)


def _travel(sightings: Sequence[Sighting]) -> list[float] | None:
    """Metres the camera travelled since the first of these (time-ordered) views: by speed when every view has one,
    else along the course between fixes; None when neither is known."""
    if all(s.speed_mps is not None for s in sightings):
        travelled, total = [0.0], 0.0
        for before, after in itertools.pairwise(sightings):
            assert before.speed_mps is not None and after.speed_mps is not None
            total += (after.at - before.at) * (before.speed_mps + after.speed_mps) / 2
            travelled.append(total)
        return travelled
    course = course_deg(sightings)
    if course is None or not all(s.lat is not None and s.lon is not None for s in sightings):
        return None
    first = sightings[0]
    assert first.lat is not None and first.lon is not None
    bearing = math.radians(course)
    travelled = []
    for s in sightings:
        assert s.lat is not None and s.lon is not None
        north = (s.lat - first.lat) * METRES_PER_DEGREE
        east = (s.lon - first.lon) * METRES_PER_DEGREE * math.cos(math.radians(first.lat))
        travelled.append(north * math.cos(bearing) + east * math.sin(bearing))
    return travelled


Series = list[tuple[float, float]]  # (metres travelled, image row of the ground point)


def _series(sightings: Sequence[Sighting]) -> Series | None:
    ordered = [s for s in in_order(sightings) if not cut_by_frame(s)]  # a cut box's row is not its ground point
    if len(ordered) < MIN_ESTIMATE_SIGHTINGS:
        return None
    travelled = _travel(ordered)
    if travelled is None or travelled[-1] - travelled[0] < MIN_ESTIMATE_TRAVEL_M:
        return None
    return [(s, sighting.v) for s, sighting in zip(travelled, ordered, strict=True)]


def _misfit(series: Sequence[Series], horizon: float) -> tuple[float, float]:
    """For a horizon row: f*h fitted to every track at once (1 / (y - horizon) falls linearly with travel, with one
    slope, -1 / (f h), for all), and the squared pixel residuals it leaves. inf when the horizon cannot be."""
    slope_num = slope_den = 0.0
    centres = []
    for track in series:
        weights = [(y - horizon) ** FIT_WEIGHT_POWER for _, y in track]  # 1 / (y - horizon) of a far view is noisy
        total = sum(weights)
        s_mean = sum(w * s for w, (s, _) in zip(weights, track, strict=True)) / total
        z_mean = sum(w / (y - horizon) for w, (_, y) in zip(weights, track, strict=True)) / total
        centres.append((s_mean, z_mean))
        for w, (s, y) in zip(weights, track, strict=True):
            slope_num += w * (s - s_mean) * (1 / (y - horizon) - z_mean)
            slope_den += w * (s - s_mean) ** 2
    if slope_den <= 0 or slope_num >= 0:
        return math.inf, math.inf
    slope = -slope_num / slope_den  # 1 / (f h)
    misfit = 0.0
    for track, (s_mean, z_mean) in zip(series, centres, strict=True):
        for s, y in track:
            z = z_mean - slope * (s - s_mean)
            if z <= 0:
                return math.inf, math.inf
            misfit += (y - horizon - 1 / z) ** 2
    return misfit, 1 / slope


def estimate_camera(tracks: Sequence[Sequence[Sighting]], params: PositionParams) -> Camera | None:
    """A camera from static ground points seen over known travel (see the module's docstring); None with fewer than
    MIN_ESTIMATE_TRACKS usable tracks or when no horizon fits."""
    series = [s for s in (_series(t) for t in tracks) if s is not None]
    sized = [s for t in tracks for s in t if s.width is not None and s.height is not None]
    if len(series) < MIN_ESTIMATE_TRACKS or not sized:
        return None
    width, height = sized[0].width, sized[0].height
    assert width is not None and height is not None
    top = min(y for track in series for _, y in track)
    step = height / 40
    candidates = [top - 1 - i * step for i in range(60)]  # the horizon lies above every ground point
    best = min(candidates, key=lambda horizon: _misfit(series, horizon)[0])
    fine = [best + (i - 20) * step / 20 for i in range(41)]
    horizon = min((h for h in fine if h < top), key=lambda h: _misfit(series, h)[0])
    misfit, fh = _misfit(series, horizon)
    if not math.isfinite(misfit):
        return None
    f = focal_px(width, params.assumed_hfov_deg)
    camera = Camera(fh / f, math.degrees(math.atan((height / 2 - horizon) / f)), params.assumed_hfov_deg)
    if not (HEIGHT_M[0] <= camera.height_m <= HEIGHT_M[1] and PITCH_DEG[0] <= camera.pitch_deg <= PITCH_DEG[1]):
        return None
    return camera
