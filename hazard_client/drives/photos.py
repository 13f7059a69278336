"""Where and when a photo was taken, from its EXIF: GPS latitude, longitude and direction (GPS IFD), and
DateTimeOriginal (Exif IFD; with OffsetTimeOriginal when the phone wrote it, else read as UTC: `--offset` corrects a
camera clock set to local time)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hazard_client.drives.drive import MAX_SPEED_MPS, frame_meta
from hazard_client.drives.timeparse import as_utc
from hazard_client.drives.track import Track
from hazard_client.ingest import SourceFile
from hazard_client.models import FrameMeta

GPS_IFD, EXIF_IFD = 0x8825, 0x8769
LAT_REF, LAT, LON_REF, LON, SPEED_REF, SPEED, DIRECTION = 1, 2, 3, 4, 12, 13, 17
DATETIME_ORIGINAL, OFFSET_TIME_ORIGINAL = 36867, 36881
SPEED_UNITS_MPS = {"K": 1000 / 3600, "M": 1609.344 / 3600, "N": 1852 / 3600}


@dataclass(frozen=True)
class PhotoFacts:
    taken_at: float | None = None  # epoch seconds
    lat: float | None = None
    lon: float | None = None
    heading: float | None = None
    speed_mps: float | None = None

    @property
    def located(self) -> bool:
        return self.lat is not None and self.lon is not None


def photo_facts(path: Path) -> PhotoFacts:
    """What the EXIF says; a photo without EXIF (or with EXIF Pillow cannot read) says nothing."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            exif = image.getexif()
            gps, details = exif.get_ifd(GPS_IFD), exif.get_ifd(EXIF_IFD)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        return PhotoFacts()
    lat, lon = _coordinate(gps, LAT, LAT_REF, "S"), _coordinate(gps, LON, LON_REF, "W")
    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        lat = lon = None
    return PhotoFacts(_taken_at(details), lat, lon, _number(gps.get(DIRECTION), modulo=360), _speed(gps))


def _number(value: Any, modulo: float | None = None) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number % modulo if modulo else number


def _coordinate(gps: dict[int, Any], tag: int, ref_tag: int, negative: str) -> float | None:
    parts: Any = gps.get(tag)
    try:
        degrees, minutes, seconds = (float(part) for part in parts)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    value = degrees + minutes / 60 + seconds / 3600
    ref = gps.get(ref_tag, "")
    ref = ref.decode(errors="replace") if isinstance(ref, bytes) else str(ref)
    return -value if ref.strip().upper() == negative else value


def _speed(gps: dict[int, Any]) -> float | None:
    speed = _number(gps.get(SPEED))
    return speed * SPEED_UNITS_MPS.get(str(gps.get(SPEED_REF, "K")).strip().upper(), 1000 / 3600) if speed else speed


def _taken_at(details: dict[int, Any]) -> float | None:
    text = details.get(DATETIME_ORIGINAL)
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.strptime(text.strip().rstrip("\x00"), "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    offset = details.get(OFFSET_TIME_ORIGINAL)
    if isinstance(offset, str):
        with contextlib.suppress(ValueError):  # a malformed offset: the time as UTC, like a photo without one
            moment = datetime.fromisoformat(moment.isoformat() + offset.strip().rstrip("\x00"))
    return as_utc(moment).timestamp()


@dataclass
class PhotoCounts:
    photos: int = 0
    from_exif: int = 0  # placed by their own EXIF GPS
    from_track: int = 0  # placed by the track at the photo's time
    unlocated: int = 0  # sent without a location
    outside_track: int = 0  # of those: taken outside the track's time


def place_photos(files: list[SourceFile], track: Track | None, offset: float) -> tuple[list[SourceFile], PhotoCounts]:
    """Each photo with its place and time: the track at the photo's time (the camera's clock + `offset`) wins over
    the photo's own EXIF GPS; a photo that says nothing keeps no meta."""
    counts = PhotoCounts(photos=len(files))
    placed: list[SourceFile] = []
    for source in files:
        facts = photo_facts(source.path)
        taken_at = facts.taken_at + offset if facts.taken_at is not None else None
        position = track.at(taken_at) if track is not None and taken_at is not None else None
        captured_at = datetime.fromtimestamp(taken_at, UTC) if taken_at is not None else None
        meta: FrameMeta | None
        if position is not None:
            counts.from_track += 1
            meta = frame_meta(taken_at, position)
        elif facts.located:
            counts.from_exif += 1
            speed = facts.speed_mps if facts.speed_mps is not None and facts.speed_mps <= MAX_SPEED_MPS else None
            meta = FrameMeta(
                captured_at=captured_at, lat=facts.lat, lon=facts.lon, heading=facts.heading, speed_mps=speed
            )
        else:
            counts.unlocated += 1
            counts.outside_track += track is not None and taken_at is not None
            meta = FrameMeta(captured_at=captured_at) if captured_at is not None else None
        placed.append(replace(source, meta=meta))
    return placed, counts


def photo_lines(counts: PhotoCounts, track: Track | None) -> list[str]:
    where = f"from the track {track.source} {counts.from_track}, " if track is not None else ""
    outside = f" ({counts.outside_track} outside the track's time)" if counts.outside_track else ""
    return [f"located: {where}from EXIF GPS {counts.from_exif}, without location {counts.unlocated}{outside}"]
