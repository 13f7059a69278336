"""Plain data of tracking: what a frame brings (its detections, time and GPS) and what a track remembers.

No Redis and no numpy here: the matcher, the session store, the batch jobs and the routers all share these.
Numbers are rounded where they enter (`observation_of`, `FrameInput`): the Lua twin of the matcher keeps at most
14 significant digits in JSON, so both see exactly the same values and reach exactly the same decisions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.services.inference.types import Detection

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in the frame's pixels


@dataclass(frozen=True)
class FrameMeta:
    """What the client says about a frame: WGS-84 position, heading (degrees), speed, capture time (epoch s)."""

    lat: float | None = None
    lon: float | None = None
    heading: float | None = None
    speed_mps: float | None = None
    captured_at: float | None = None

    @property
    def located(self) -> bool:
        return self.lat is not None and self.lon is not None


@dataclass(frozen=True)
class TrackParams:
    min_hits: int = 5  # frames before a track is a hazard (a short flicker never is)
    max_gap_seconds: float = 1.0  # a track not matched for longer is closed
    iou_threshold: float = 0.2  # of the expanded boxes
    box_expand: float = 0.25  # each side grows by this fraction of the box's width/height
    expand_interval_seconds: float = 0.1  # ... times the frame's time from the view it meets over this, if longer
    upload_min_confidence: float = 0.5  # a hazard's frame is uploaded only when at least this confident
    upload_margin: float = 0.1  # a later frame replaces the uploaded one when this much more confident
    sightings_kept: int = 12  # a track's latest (nearest) views kept for its position


@dataclass(frozen=True)
class Observation:
    """One detection as the matcher sees it; `candidate_id` names the track it starts if nothing matches."""

    label: str
    class_id: int
    confidence: float
    box: Box
    candidate_id: str


@dataclass(frozen=True)
class FrameInput:
    request_id: str
    at: float  # epoch seconds: the capture time, or when the frame was admitted
    observations: tuple[Observation, ...]
    lat: float | None = None
    lon: float | None = None
    model: str = ""
    media_id: str = ""  # names the frame's annotated upload, should it be uploaded for one of its hazards
    heading: float | None = None  # degrees clockwise from north, as the client gave it
    speed_mps: float | None = None
    width: int | None = None  # of the image, in pixels: where its centre is, and its focal length from a FOV
    height: int | None = None

    def as_json(self) -> dict[str, Any]:
        """For the Lua twin: no nulls (cjson would decode them as a sentinel, not nil)."""
        located = {"lat": self.lat, "lon": self.lon} if self.lat is not None and self.lon is not None else {}
        optional = {"heading": self.heading, "speed_mps": self.speed_mps, "width": self.width, "height": self.height}
        return {
            "request_id": self.request_id,
            "at": self.at,
            **located,
            **{key: value for key, value in optional.items() if value is not None},
            "model": self.model,
            "media_id": self.media_id,
            "detections": [
                {
                    "label": o.label,
                    "class_id": o.class_id,
                    "confidence": o.confidence,
                    "box": list(o.box),
                    "candidate_id": o.candidate_id,
                }
                for o in self.observations
            ],
        }


@dataclass(frozen=True)
class Sighting:
    """One view of a track: the bottom centre of its box (where it touches the road), the image's size, and where
    the camera was, heading where and how fast; the box's size (a frame that comes late is matched against the view
    nearest it in time). Kept raw: the calibration that projects it may come later."""

    at: float
    u: float
    v: float
    width: int | None = None
    height: int | None = None
    lat: float | None = None
    lon: float | None = None
    heading: float | None = None
    speed_mps: float | None = None
    box_width: float | None = None
    box_height: float | None = None

    @property
    def located(self) -> bool:
        return self.lat is not None and self.lon is not None

    def as_json(self) -> dict[str, Any]:
        """Short keys, no nulls: every frame of a session rewrites its open tracks in Redis."""
        values = {
            "at": self.at,
            "u": self.u,
            "v": self.v,
            "w": self.width,
            "h": self.height,
            "lat": self.lat,
            "lon": self.lon,
            "hd": self.heading,
            "sp": self.speed_mps,
            "bw": self.box_width,
            "bh": self.box_height,
        }
        return {key: value for key, value in values.items() if value is not None}

    @classmethod
    def of_json(cls, data: dict[str, Any]) -> Sighting:
        width, height = data.get("w"), data.get("h")
        return cls(
            at=float(data["at"]),
            u=float(data["u"]),
            v=float(data["v"]),
            width=None if width is None else int(width),
            height=None if height is None else int(height),
            lat=_number(data.get("lat")),
            lon=_number(data.get("lon")),
            heading=_number(data.get("hd")),
            speed_mps=_number(data.get("sp")),
            box_width=_number(data.get("bw")),
            box_height=_number(data.get("bh")),
        )

    @classmethod
    def of(cls, box: Box, frame: FrameInput) -> Sighting:
        return cls(
            frame.at,
            float(f"{(box[0] + box[2]) / 2:.3f}"),  # as the Lua twin rounds it: both keep the same number
            box[3],
            frame.width,
            frame.height,
            frame.lat,
            frame.lon,
            frame.heading,
            frame.speed_mps,
            float(f"{box[2] - box[0]:.3f}"),
            float(f"{box[3] - box[1]:.3f}"),
        )


def sighting_order(sighting: Sighting) -> tuple[float, float, float]:
    """Time first; the rest only breaks ties, so that the kept views do not depend on the order frames came in."""
    return sighting.at, sighting.v, sighting.u


@dataclass(frozen=True)
class Assignment:
    """What one detection of a frame became: its hazard, whether this frame confirmed it, whether to upload it."""

    hazard_id: str
    new_hazard: bool
    upload: bool


@dataclass
class Track:
    hazard_id: str
    label: str
    class_id: int
    box: Box
    first_seen: float
    last_seen: float
    frames: int
    max_confidence: float
    best_request_id: str
    best_at: float
    lat: float | None  # the camera's GPS at the track's latest frame that had one: its nearest view
    lon: float | None
    model: str
    confirmed: bool = False
    uploaded_confidence: float | None = None
    upload_media_id: str | None = None
    sightings: list[Sighting] = field(default_factory=list)  # its latest views, oldest first

    def as_json(self) -> dict[str, Any]:
        return {
            "hazard_id": self.hazard_id,
            "label": self.label,
            "class_id": self.class_id,
            "box": list(self.box),
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "frames": self.frames,
            "max_confidence": self.max_confidence,
            "best_request_id": self.best_request_id,
            "best_at": self.best_at,
            "lat": self.lat,
            "lon": self.lon,
            "model": self.model,
            "confirmed": self.confirmed,
            "uploaded_confidence": self.uploaded_confidence,
            "upload_media_id": self.upload_media_id,
            "sightings": [s.as_json() for s in self.sightings],
        }

    @classmethod
    def of_json(cls, data: dict[str, Any]) -> Track:
        box = data["box"]
        return cls(
            hazard_id=str(data["hazard_id"]),
            label=str(data["label"]),
            class_id=int(data["class_id"]),
            box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])),
            first_seen=float(data["first_seen"]),
            last_seen=float(data["last_seen"]),
            frames=int(data["frames"]),
            max_confidence=float(data["max_confidence"]),
            best_request_id=str(data["best_request_id"]),
            best_at=float(data["best_at"]),
            lat=_number(data.get("lat")),
            lon=_number(data.get("lon")),
            model=str(data.get("model") or ""),
            confirmed=bool(data.get("confirmed")),
            uploaded_confidence=_number(data.get("uploaded_confidence")),
            upload_media_id=_string(data.get("upload_media_id")),
            sightings=[Sighting.of_json(s) for s in _list(data.get("sightings"))],
        )


@dataclass(frozen=True)
class LocatedAt:
    """Where a hazard is, how well known (one standard deviation per axis, metres), and how it was found."""

    lat: float
    lon: float
    uncertainty_m: float
    method: str


@dataclass(frozen=True)
class HazardRecord:
    """A confirmed hazard as the API shows it. Its location is where its views project onto the road (see
    `positions.py`; `position_method` says how, `position_uncertainty_m` how well), else the GPS of the last frame
    that saw it (the nearest view); its best frame (picture, confidence) is its most confident one."""

    hazard_id: str
    label: str
    first_seen: float
    last_seen: float
    frames: int
    max_confidence: float
    model: str
    lat: float | None
    lon: float | None
    best_request_id: str
    upload_media_id: str | None
    best_frame_url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    position_uncertainty_m: float | None = None  # one standard deviation, per axis; None without a location
    position_method: str | None = None  # profile | session | estimated | camera_gps; None without a location

    @property
    def located(self) -> bool:
        return self.lat is not None and self.lon is not None

    @classmethod
    def of_track(
        cls, track: Track, best_frame_url: str | None = None, position: LocatedAt | None = None
    ) -> HazardRecord:
        """`position`: where its views project (`positions.locate`); without one, the camera's GPS as it was."""
        lat, lon = (position.lat, position.lon) if position is not None else (track.lat, track.lon)
        return cls(
            hazard_id=track.hazard_id,
            label=track.label,
            first_seen=track.first_seen,
            last_seen=track.last_seen,
            frames=track.frames,
            max_confidence=track.max_confidence,
            model=track.model,
            lat=lat,
            lon=lon,
            best_request_id=track.best_request_id,
            upload_media_id=track.upload_media_id,
            best_frame_url=best_frame_url,
            position_uncertainty_m=position.uncertainty_m if position is not None else None,
            position_method=position.method if position is not None else None,
        )


def observation_of(detection: Detection, candidate_id: str) -> Observation:
    """A detection rounded the way both matchers see it (see the module's docstring)."""
    d = detection
    box = (round(d.x1, 2), round(d.y1, 2), round(d.x2, 2), round(d.y2, 2))
    return Observation(d.label, d.class_id, round(float(d.confidence), 6), box, candidate_id)


def frame_time(seconds: float) -> float:
    return round(seconds, 3)


def _number(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _string(value: object) -> str | None:
    return None if value is None else str(value)


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []  # cjson writes an empty array as {}
