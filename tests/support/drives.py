"""Real drive files made in a test: an MP4 encoded with PyAV from generated road scenes, a route with exact
positions at every instant, and that route written as GPX (gpxpy), NMEA 0183, CSV; JPEGs with EXIF GPS."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path

import av
import gpxpy.gpx
from PIL import Image

from hazard_client.drives.geo import offset_position
from tests.support.images import scene

START = datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC).timestamp()


@dataclass(frozen=True)
class Route:
    """A straight drive at constant speed from (lat0, lon0) on `heading`, GPS time `start` .. `start + seconds`."""

    lat0: float = 48.137
    lon0: float = 11.575
    heading: float = 60.0
    speed_mps: float = 10.0
    start: float = START
    seconds: float = 4.0

    def at(self, t: float) -> tuple[float, float]:
        travelled = (t - self.start) * self.speed_mps
        north = travelled * math.cos(math.radians(self.heading))
        east = travelled * math.sin(math.radians(self.heading))
        return offset_position(self.lat0, self.lon0, north, east)

    def fix_times(self, every: float = 1.0) -> list[float]:
        return [self.start + i * every for i in range(int(self.seconds / every) + 1)]


def write_video(
    path: Path,
    seconds: float,
    fps: int = 10,
    size: tuple[int, int] = (320, 240),
    creation_time: float | None = None,
    codec: str = "libx264",
) -> Path:
    """H.264 (libx264; or `codec`, e.g. libx265) MP4/MOV, index first (+faststart) so a copy cut short still decodes
    up to the cut."""
    container = av.open(str(path), "w", options={"movflags": "+faststart"})
    if creation_time is not None:
        stamp = datetime.fromtimestamp(creation_time, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        container.metadata["creation_time"] = stamp
    stream = container.add_stream(codec, rate=fps)
    assert isinstance(stream, av.VideoStream)
    stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
    stream.options = {"preset": "ultrafast", "g": str(fps)} if codec == "libx264" else {"preset": "ultrafast"}
    backgrounds = [scene(700 + n, size).image for n in range(3)]
    for number in range(int(seconds * fps)):
        frame = av.VideoFrame.from_image(backgrounds[number // fps % len(backgrounds)])  # type: ignore[no-untyped-call]
        frame.pts, frame.time_base = number, Fraction(1, fps)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def write_gpx(path: Path, route: Route, every: float = 1.0) -> Path:
    gpx = gpxpy.gpx.GPX()
    track, segment = gpxpy.gpx.GPXTrack(), gpxpy.gpx.GPXTrackSegment()
    gpx.tracks.append(track)
    track.segments.append(segment)
    for t in route.fix_times(every):
        lat, lon = route.at(t)
        segment.points.append(gpxpy.gpx.GPXTrackPoint(lat, lon, time=datetime.fromtimestamp(t, UTC)))
    path.write_text(gpx.to_xml(), encoding="utf-8")
    return path


def nmea_sentence(body: str) -> str:
    checksum = 0
    for char in body:
        checksum ^= ord(char)
    return f"${body}*{checksum:02X}"


def _nmea_angle(value: float, width: int) -> str:
    degrees = int(abs(value))
    return f"{degrees:0{width}d}{(abs(value) - degrees) * 60:07.4f}"


def write_nmea(path: Path, route: Route, every: float = 1.0) -> Path:
    """An RMC and a GGA per fix (GGA first: its date comes from the RMC)."""
    lines = []
    for t in route.fix_times(every):
        lat, lon = route.at(t)
        moment = datetime.fromtimestamp(t, UTC)
        clock = moment.strftime("%H%M%S.") + f"{moment.microsecond // 10000:02d}"
        position = f"{_nmea_angle(lat, 2)},{'N' if lat >= 0 else 'S'},{_nmea_angle(lon, 3)},{'E' if lon >= 0 else 'W'}"
        knots = route.speed_mps / (1852 / 3600)
        lines.append(nmea_sentence(f"GPGGA,{clock},{position},1,08,0.9,545.4,M,46.9,M,,"))
        lines.append(nmea_sentence(f"GPRMC,{clock},A,{position},{knots:.1f},{route.heading:.1f},{moment:%d%m%y},,,A"))
    path.write_text("\r\n".join(lines) + "\r\n", encoding="ascii")
    return path


def write_csv(path: Path, route: Route, every: float = 1.0, epoch: bool = False) -> Path:
    rows = ["time,lat,lon"]
    for t in route.fix_times(every):
        lat, lon = route.at(t)
        when = f"{t:.3f}" if epoch else datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")
        rows.append(f"{when},{lat:.8f},{lon:.8f}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def _dms(value: float) -> tuple[float, float, float]:
    value = abs(value)
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    return float(degrees), float(minutes), round((value - degrees - minutes / 60) * 3600, 4)


def jpeg_with_exif(
    image: Image.Image,
    lat: float | None = None,
    lon: float | None = None,
    direction: float | None = None,
    taken: str | None = None,
) -> bytes:
    """A JPEG whose EXIF says where (GPS IFD) and when (DateTimeOriginal, `YYYY:MM:DD HH:MM:SS`)."""
    exif = Image.Exif()
    if lat is not None and lon is not None:
        gps = exif.get_ifd(0x8825)
        gps.update({1: "N" if lat >= 0 else "S", 2: _dms(lat), 3: "E" if lon >= 0 else "W", 4: _dms(lon)})
        if direction is not None:
            gps.update({16: "T", 17: direction})
    if taken is not None:
        exif.get_ifd(0x8769)[36867] = taken
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90, exif=exif)
    return buffer.getvalue()
