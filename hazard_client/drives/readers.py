"""GPS track files into a Track: GPX (gpxpy), NMEA 0183 logs (pynmea2: RMC and GGA) and CSV
(`time,lat,lon[,heading,speed]`). A file that cannot be read is one error naming the file and, where known, the line."""

from __future__ import annotations

import csv
import re
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

from hazard_client.drives.timeparse import as_utc, epoch_seconds
from hazard_client.drives.track import Fix, Track
from hazard_client.ingest import UsageError

TRACK_SUFFIXES = (".gpx", ".nmea", ".log", ".csv")
KNOTS_TO_MPS = 1852 / 3600


class TrackUnreadable(UsageError):
    """A track file that cannot be read as a track (exit code 2)."""

    def __init__(self, path: Path, line: int | None, reason: str) -> None:
        where = f"{path}, line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason}")
        self.path, self.line = path, line


def read_track(path: Path) -> Track:
    suffix = path.suffix.lower()
    if suffix not in TRACK_SUFFIXES:
        raise TrackUnreadable(path, None, f"not a track file: name it {', '.join(TRACK_SUFFIXES)}")
    try:
        text = path.read_text(encoding="utf-8-sig", errors="strict")
    except (OSError, UnicodeDecodeError) as exc:
        raise TrackUnreadable(path, None, f"cannot be read ({exc})") from None
    if suffix == ".gpx":
        fixes = read_gpx(path, text)
    elif suffix == ".csv":
        fixes = read_csv(path, text)
    else:
        fixes = read_nmea(path, text)
    track = Track(fixes, source=str(path))
    if len(track) == 0:
        raise TrackUnreadable(path, None, "holds no GPS fix with a time")
    return track


def read_gpx(path: Path, text: str) -> list[Fix]:
    import gpxpy
    import gpxpy.gpx

    try:
        gpx = gpxpy.parse(text)
    except gpxpy.gpx.GPXException as exc:
        found = re.search(r"line (\d+)", str(exc))
        raise TrackUnreadable(path, int(found[1]) if found else None, f"not valid GPX ({exc})") from None
    fixes: list[Fix] = []
    points: list[gpxpy.gpx.GPXTrackPoint | gpxpy.gpx.GPXRoutePoint] = [
        point for track in gpx.tracks for segment in track.segments for point in segment.points
    ]
    points += [point for route in gpx.routes for point in route.points] if not points else []
    for number, point in enumerate(points, 1):
        if point.time is None:
            raise TrackUnreadable(path, _gpx_line(text, number), f"track point {number} has no <time>")
        course, speed = getattr(point, "course", None), getattr(point, "speed", None)  # GPX 1.0 <course>, <speed>
        heading = float(course) % 360 if course is not None else None
        fixes.append(Fix(as_utc(point.time).timestamp(), point.latitude, point.longitude, heading, speed))
    return fixes


def _gpx_line(text: str, number: int) -> int | None:
    """The line of the `number`-th point element (gpxpy keeps no line numbers)."""
    found = list(re.finditer(r"<(?:\w+:)?(?:trkpt|rtept)\b", text))
    return text.count("\n", 0, found[number - 1].start()) + 1 if len(found) >= number else None


def read_csv(path: Path, text: str) -> list[Fix]:
    rows = csv.reader(text.splitlines())
    header = [name.strip().lower() for name in next(rows, [])]
    if not {"time", "lat", "lon"} <= set(header):
        raise TrackUnreadable(path, 1, "the header must name the columns time,lat,lon[,heading,speed]")
    column = {name: header.index(name) for name in ("time", "lat", "lon", "heading", "speed") if name in header}
    fixes: list[Fix] = []
    for line, row in enumerate(rows, 2):
        if not any(cell.strip() for cell in row):
            continue
        try:
            values = {name: row[index].strip() for name, index in column.items()}
            fixes.append(
                Fix(
                    epoch_seconds(values["time"]),
                    _coordinate(values["lat"], 90),
                    _coordinate(values["lon"], 180),
                    float(values["heading"]) % 360 if values.get("heading") else None,
                    float(values["speed"]) if values.get("speed") else None,
                )
            )
        except (IndexError, ValueError) as exc:
            raise TrackUnreadable(path, line, f"not a fix: {exc}") from None
    return fixes


def _coordinate(text: str, limit: float) -> float:
    value = float(text)
    if not -limit <= value <= limit:
        raise ValueError(f"{value} is out of range (+-{limit})")
    return value


def read_nmea(path: Path, text: str) -> list[Fix]:
    """RMC sentences carry the date; GGA only the time of day, so each GGA takes the date of the last RMC before it
    (GGA written before any RMC: the first RMC's). At the same instant RMC wins (Track keeps the first fix of an
    instant, and RMC fixes come first): it has speed and course."""
    import pynmea2

    lines = text.splitlines()
    dated: list[Fix] = []
    undated: list[tuple[datetime | None, time, float, float]] = []  # (last RMC's moment, time of day, lat, lon)
    last_rmc: datetime | None = None
    for line, sentence in enumerate(lines, 1):
        sentence = sentence.strip()
        if not sentence:
            continue
        try:
            message = pynmea2.parse(sentence, check=True)
        except (pynmea2.ParseError, ValueError) as exc:
            if line == len(lines):
                break  # the last line, torn when the logger lost power
            raise TrackUnreadable(path, line, f"not an NMEA 0183 sentence ({exc})") from None
        kind = getattr(message, "sentence_type", "")
        if kind == "RMC" and message.status == "A" and message.datestamp and message.timestamp:
            last_rmc = as_utc(datetime.combine(message.datestamp, message.timestamp))
            dated.append(_rmc_fix(last_rmc, message))
        elif kind == "GGA" and _int(message.gps_qual) > 0 and message.timestamp:
            undated.append((last_rmc, message.timestamp, message.latitude, message.longitude))
    if not dated:
        return []
    first = datetime.fromtimestamp(dated[0].t, UTC)
    return dated + [_gga_fix(moment or first, stamp, lat, lon) for moment, stamp, lat, lon in undated]


def _rmc_fix(moment: datetime, message: Any) -> Fix:
    speed, course = message.spd_over_grnd, message.true_course
    return Fix(
        moment.timestamp(),
        message.latitude,
        message.longitude,
        float(course) % 360 if course is not None else None,
        float(speed) * KNOTS_TO_MPS if speed is not None else None,
    )


def _gga_fix(near: datetime, stamp: time, lat: float, lon: float) -> Fix:
    """The instant of `stamp` (a time of day) nearest to `near`: a GGA just after midnight belongs to the next day."""
    moment = as_utc(datetime.combine(near.date(), stamp.replace(tzinfo=None)))
    if (moment - near).total_seconds() < -12 * 3600:
        moment += timedelta(days=1)
    elif (moment - near).total_seconds() > 12 * 3600:
        moment -= timedelta(days=1)
    return Fix(moment.timestamp(), lat, lon)


def _int(text: object) -> int:
    try:
        return int(str(text))
    except ValueError:
        return 0
