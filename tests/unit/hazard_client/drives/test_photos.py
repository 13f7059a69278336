"""EXIF GPS and DateTimeOriginal, as phones write them, read with Pillow; a track given wins over EXIF."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from hazard_client.drives.geo import distance_m
from hazard_client.drives.photos import photo_facts, place_photos
from hazard_client.drives.readers import read_track
from hazard_client.ingest import SourceFile
from tests.support.drives import START, Route, jpeg_with_exif, write_gpx
from tests.support.images import encode, scene


def photo(path: Path, data: bytes) -> SourceFile:
    path.write_bytes(data)
    return SourceFile(path, path.name, hashlib.sha256(data).hexdigest(), len(data))


def test_gps_direction_and_time_are_read(tmp_path: Path) -> None:
    source = photo(
        tmp_path / "a.jpg", jpeg_with_exif(scene(1, (96, 64)).image, -33.8568, 151.2153, 271.5, "2026:03:01 10:00:02")
    )
    facts = photo_facts(source.path)
    assert facts.lat == pytest.approx(-33.8568, abs=1e-6) and facts.lon == pytest.approx(151.2153, abs=1e-6)
    assert facts.heading == 271.5 and facts.taken_at == START + 2


def test_a_photo_without_exif_says_nothing(tmp_path: Path) -> None:
    source = photo(tmp_path / "plain.jpg", encode(scene(2, (96, 64)).image))
    facts = photo_facts(source.path)
    assert not facts.located and facts.taken_at is None


def test_the_track_wins_over_exif_and_unlocated_photos_are_counted(tmp_path: Path) -> None:
    route = Route()
    track = read_track(write_gpx(tmp_path / "walk.gpx", route))
    image = scene(3, (96, 64)).image
    files = [
        photo(tmp_path / "on-track.jpg", jpeg_with_exif(image, 1.0, 1.0, None, "2026:03:01 09:59:31")),  # +30 s
        photo(tmp_path / "exif-only.jpg", jpeg_with_exif(image, 1.0, 2.0)),
        photo(tmp_path / "after.jpg", jpeg_with_exif(image, None, None, None, "2026:03:01 11:00:00")),
        photo(tmp_path / "nothing.jpg", encode(image)),
    ]
    placed, counts = place_photos(files, track, offset=30.0)
    on_track, exif_only, after, nothing = (source.meta for source in placed)
    assert on_track is not None and on_track.lat is not None and on_track.lon is not None
    assert distance_m(on_track.lat, on_track.lon, *route.at(START + 1)) < 0.5
    assert exif_only is not None and (exif_only.lat, exif_only.lon) == pytest.approx((1.0, 2.0))
    assert after is not None and after.lat is None and after.captured_at is not None
    assert nothing is None
    assert (counts.from_track, counts.from_exif, counts.unlocated, counts.outside_track) == (1, 1, 2, 1)
