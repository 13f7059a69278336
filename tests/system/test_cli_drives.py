"""`hazard ingest` over drives as field teams record them, against a real server process (real Redis, real model,
embedded worker): a dashcam MP4 with its GPX track and a known clock offset, a folder of drives paired by name,
photos with EXIF GPS, and the bad input of the field (a video cut by a power cut, a broken track, no video)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from drive_video import render_drive
from scenes import generate_road

from hazard_client import HazardClient
from hazard_client.calls import Frame
from hazard_client.drives.drive import DriveOptions, sample_drive
from hazard_client.drives.geo import distance_m
from hazard_client.drives.video import Video
from hazard_client.models import FrameMeta
from tests.support.drives import START, Route, jpeg_with_exif, write_csv, write_gpx, write_nmea, write_video
from tests.support.images import encode, scene
from tests.support.redis_process import RedisProcess
from tests.support.server import ROOT, Server

CLOCK_OFFSET = 3.5  # the dashcam's clock is behind GPS time by this much


@pytest.fixture(scope="module")
def server(redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    process = Server(redis_server.url, tmp_path_factory.mktemp("drives-api"), MODEL_WARMUP_REQUESTS="1")
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def hazard(server_url: str, *args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HAZARD_SERVER": server_url}
    return subprocess.Popen(
        [sys.executable, "-m", "hazard_client", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], within: float = 120) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=within)
    return process.returncode, stdout, stderr


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def server_results(server: Server, job_id: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{server.base_url}/jobs/{job_id}/results", params={"limit": 500}, timeout=30)
    answer.raise_for_status()
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def route_drive(folder: Path, stem: str, seconds: float = 4.0) -> Route:
    """A video (its creation_time on the dashcam's clock) and a GPX on GPS time, CLOCK_OFFSET later."""
    folder.mkdir(parents=True, exist_ok=True)
    route = Route(speed_mps=15.0, start=START + CLOCK_OFFSET - 1, seconds=seconds + 2)
    write_video(folder / f"{stem}.mp4", seconds=seconds, fps=10, size=(320, 240), creation_time=START)
    write_gpx(folder / f"{stem}.gpx", route)
    return route


def test_a_drive_with_its_track_and_offset_sends_frames_where_they_were_taken(server: Server, tmp_path: Path) -> None:
    route = route_drive(tmp_path, "drive1")
    out = tmp_path / "drive1-results.jsonl"
    args = (
        "ingest",
        "drive1.mp4",
        "--track",
        "drive1.gpx",
        "--offset",
        str(CLOCK_OFFSET),
        "--every-m",
        "6",
        "--geojson",
    )
    code, stdout, stderr = finish(hazard(server.base_url, *args, cwd=tmp_path))
    assert code == 0, stderr
    results = read_jsonl(out)
    assert len(results) >= 9 and all(r["status"] == "done" for r in results)  # 60 m at one frame per 6 m
    assert "drive drive1.mp4: track drive1.gpx (7 fixes); start from the video's creation_time metadata" in stdout
    assert f"sampled {len(results)} of 40 decoded frames (every 6 m travelled" in stdout
    assert f"located {len(results)}, without location 0" in stdout
    job_id = results[0]["job_id"]
    job = httpx.get(f"{server.base_url}/jobs/{job_id}", timeout=30).json()
    assert job["name"] == "drive1.mp4" and job["total"] == len(results)
    for item in server_results(server, job_id):  # what the server holds: within 1 m of the exact position
        meta = item["meta"]
        video_time = float(meta["filename"].split("@")[1].rstrip("s.jpg"))
        exact = route.at(START + CLOCK_OFFSET + video_time)
        assert distance_m(meta["lat"], meta["lon"], *exact) < 1.0
        assert meta["heading"] == pytest.approx(route.heading, abs=0.5) and meta["speed_mps"] == pytest.approx(
            15, rel=0.01
        )
    collection = json.loads((tmp_path / "drive1-results.geojson").read_text())
    assert collection["type"] == "FeatureCollection"
    assert f"geojson: {tmp_path.name}" not in stdout and "geojson: drive1-results.geojson (" in stdout
    assert not list(tmp_path.glob(".*.frames"))  # the sampled frames' spool is gone once the drive is done


def test_hazards_of_a_drive_from_video_and_gpx_are_those_of_its_frames_with_exact_gps(
    server: Server, tmp_path: Path
) -> None:
    """A generated drive past three hazards, rendered to MP4 (camera clock) and GPX (GPS clock, CLOCK_OFFSET later):
    ingested with --offset, it finds the hazards that the same frames (the same JPEG bytes: only the GPS differs)
    sent one by one with the drive's exact GPS find: as many, each within 1 m."""
    road = generate_road(42, length_m=70.0, hazards=3, neighbours=0.0)
    video_path, track_path = tmp_path / "scene.mp4", tmp_path / "scene.gpx"
    exact = render_drive(
        video_path, track_path, road, speed_mps=8.0, fps=5, start=START, offset_s=CLOCK_OFFSET, start_m=28.0
    )
    args = ("ingest", "scene.mp4", "--offset", str(CLOCK_OFFSET), "--fps", "5", "--geojson")
    code, _stdout, stderr = finish(hazard(server.base_url, *args, cwd=tmp_path))
    assert code == 0, stderr
    from_video = json.loads((tmp_path / "scene-results.geojson").read_text())["features"]
    video = Video(video_path)
    try:
        frames, _report = sample_drive(video, None, DriveOptions(fps=5.0), tmp_path / "spool")
    finally:
        video.close()
    by_time = {round(fix.video_time, 3): fix for fix in exact}
    with HazardClient(server.base_url) as client:
        job = client.submit_job("scene, exact GPS")
        for source in frames:
            fix = by_time[round(source.video_time or 0.0, 3)]
            meta = FrameMeta(
                captured_at=datetime.fromtimestamp(fix.gps_time, UTC),
                lat=fix.lat,
                lon=fix.lon,
                heading=fix.heading,
                speed_mps=fix.speed_mps,
                filename=source.name,
            )
            client.add_frames(job.job_id, [Frame(source.path.read_bytes(), source.name, meta)])
        client.close_job(job.job_id)
        assert client.wait_job(job.job_id, timeout=120).done == len(frames)
        with_exact_gps = client.job_hazards_geojson(job.job_id)["features"]
    assert len(from_video) == len(with_exact_gps) >= 2
    for feature in with_exact_gps:
        label, (lon, lat) = feature["properties"]["label"], feature["geometry"]["coordinates"]
        nearest = min(
            distance_m(lat, lon, other["geometry"]["coordinates"][1], other["geometry"]["coordinates"][0])
            for other in from_video
            if other["properties"]["label"] == label
        )
        assert nearest < 1.0, (label, nearest)


def test_a_folder_of_drives_pairs_each_video_with_its_track_by_name(server: Server, tmp_path: Path) -> None:
    drives = tmp_path / "drives"
    route_drive(drives, "morning", seconds=2)
    evening = Route(start=START + CLOCK_OFFSET, seconds=3)
    write_video(drives / "evening.mp4", seconds=2, fps=10, creation_time=START)
    write_nmea(drives / "evening.nmea", evening)
    write_video(drives / "noon.mov", seconds=2, fps=10, creation_time=START)
    write_csv(drives / "noon.csv", evening)
    args = ("ingest", "drives", "--out", "results", "--offset", str(CLOCK_OFFSET), "--fps", "2")
    code, stdout, stderr = finish(hazard(server.base_url, *args, cwd=tmp_path))
    assert code == 0, stderr
    assert [line for line in stderr.splitlines() if line.startswith("drive ")] == [
        f"drive {n} of 3: drives/{name} (decoding and sampling)"
        for n, name in enumerate(("evening.mp4", "morning.mp4", "noon.mov"), 1)
    ]
    for stem, track in (("evening", "evening.nmea"), ("morning", "morning.gpx"), ("noon", "noon.csv")):
        results = read_jsonl(tmp_path / "results" / f"{stem}-results.jsonl")
        assert len(results) == 4 and all(r["meta"]["lat"] for r in results), stem
        assert f"drives/{track}" in stdout
    names = {job["name"] for job in httpx.get(f"{server.base_url}/jobs", timeout=30).json()["items"]}
    assert {"evening.mp4", "morning.mp4", "noon.mov"} <= names


def test_photos_are_placed_by_their_exif_gps_and_those_without_are_counted(server: Server, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    image = scene(41, (320, 180)).image
    (photos / "a.jpg").write_bytes(jpeg_with_exif(image, 48.1, 11.5, 90.0, "2026:03:01 10:00:00"))
    (photos / "b.jpg").write_bytes(encode(scene(42, (320, 180)).image))
    code, stdout, stderr = finish(hazard(server.base_url, "ingest", "photos", "--out", "p.jsonl", cwd=tmp_path))
    assert code == 0, stderr
    assert "located: from EXIF GPS 1, without location 1" in stdout
    by_file = {r["file"]: r for r in read_jsonl(tmp_path / "p.jsonl")}
    assert by_file["a.jpg"]["meta"]["lat"] == pytest.approx(48.1) and "meta" not in by_file["b.jpg"]
    (item,) = [i for i in server_results(server, by_file["a.jpg"]["job_id"]) if i["meta"]["filename"] == "a.jpg"]
    assert item["meta"]["heading"] == 90.0 and item["meta"]["captured_at"].startswith("2026-03-01T10:00:00")


def test_a_video_cut_by_a_power_cut_sends_the_frames_before_and_exits_1(server: Server, tmp_path: Path) -> None:
    route_drive(tmp_path, "whole", seconds=4)
    whole = (tmp_path / "whole.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "whole.gpx").rename(tmp_path / "cut.gpx")
    args = ("ingest", "cut.mp4", "--offset", str(CLOCK_OFFSET), "--fps", "5")
    code, _stdout, stderr = finish(hazard(server.base_url, *args, cwd=tmp_path))
    assert code == 1, stderr
    (warning,) = [line for line in stderr.splitlines() if "damaged" in line]
    assert warning.startswith("warning: cut.mp4 is damaged (") and "the rest of the video could not be read" in warning
    assert "Traceback" not in stderr
    results = read_jsonl(tmp_path / "cut-results.jsonl")
    assert 2 <= len(results) < 20 and all(r["status"] == "done" and r["meta"]["lat"] for r in results)


@pytest.mark.parametrize(
    ("track_text", "expected"),
    [
        ("time,lat,lon\n2026-03-01T10:00:00Z,48.1,11.5\nlater,48.1,11.5\n", "error: bad.csv, line 3: not a fix"),
        ('<gpx version="1.1"><trk><trkseg>\n<trkpt lat="1" lon="2">\n', "error: bad.gpx, line 3: not valid GPX"),
    ],
    ids=["csv", "gpx"],
)
def test_an_unreadable_track_exits_2_naming_the_file_and_line(
    server: Server, tmp_path: Path, track_text: str, expected: str
) -> None:
    write_video(tmp_path / "drive.mp4", seconds=1, fps=10)
    track = tmp_path / ("bad.csv" if expected.startswith("error: bad.csv") else "bad.gpx")
    track.write_text(track_text)
    code, _stdout, stderr = finish(hazard(server.base_url, "ingest", "drive.mp4", "--track", track.name, cwd=tmp_path))
    assert code == 2 and stderr.startswith(expected) and len(stderr.splitlines()) == 1, stderr
    assert not (tmp_path / "drive-results.jsonl").exists()


def test_a_file_with_no_video_exits_2_named(server: Server, tmp_path: Path) -> None:
    (tmp_path / "drive.mov").write_bytes(b"\x00\x00\x00\x18ftypqt  " + b"\x00" * 200)
    code, _stdout, stderr = finish(hazard(server.base_url, "ingest", "drive.mov", "--fps", "1", cwd=tmp_path))
    assert code == 2 and stderr.startswith("error: drive.mov: ") and len(stderr.splitlines()) == 1, stderr


def test_a_drive_killed_while_sending_is_continued_by_the_same_command(server: Server, tmp_path: Path) -> None:
    route_drive(tmp_path, "long", seconds=6)
    args = ("ingest", "long.mp4", "--offset", str(CLOCK_OFFSET), "--fps", "10", "--chunk", "2", "--concurrency", "1")
    state = tmp_path / "long-results.jsonl.state"
    first = hazard(server.base_url, *args, cwd=tmp_path)
    deadline = 60.0
    started = time.monotonic()
    while not (state.exists() and '"kind":"uploaded"' in state.read_text()):
        assert first.poll() is None, first.communicate()
        assert time.monotonic() - started < deadline, "nothing was sent"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    code, _stdout, stderr = finish(hazard(server.base_url, *args, cwd=tmp_path))
    assert code == 0, stderr
    assert "continuing job" in stderr or "finished in an earlier run" in stderr
    results = read_jsonl(tmp_path / "long-results.jsonl")
    assert len(results) == 60 and len({r["video_time"] for r in results}) == 60
    assert all(r["status"] == "done" for r in results) and not state.exists()
