"""Dashcam files through PyAV: frame times from PTS, the creation_time tag, and the damage of a power cut."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from hazard_client.drives.video import JPEG_QUALITY, Decoding, Video, VideoUnreadable, jpeg
from tests.support.drives import START, write_video


def decode_all(path: Path) -> tuple[list[float], Decoding]:
    video = Video(path)
    decoding = Decoding()
    try:
        return [t for t, _ in video.frames(decoding)], decoding
    finally:
        video.close()


def test_frames_carry_their_time_from_pts_and_the_start_comes_from_creation_time(tmp_path: Path) -> None:
    path = write_video(tmp_path / "drive.mp4", seconds=2, fps=10, creation_time=START)
    video = Video(path)
    assert video.info.creation_time == START and video.info.codec == "h264" and video.info.duration == 2.0
    decoding = Decoding()
    frames = list(video.frames(decoding))
    video.close()
    times, frame = [t for t, _ in frames], frames[-1][1]
    assert times == pytest.approx([n / 10 for n in range(20)]) and decoding.damage is None
    assert jpeg(frame)[:3] == b"\xff\xd8\xff"


@pytest.mark.parametrize("width", [1280, 642])  # 642: rows padded in the decoder's buffer (a stride != 3 x width)
def test_a_sampled_frame_is_the_jpeg_of_its_pixels_as_pillow_sees_them(tmp_path: Path, width: int) -> None:
    path = write_video(tmp_path / "drive.mp4", seconds=1, fps=10, creation_time=START, size=(width, 360))
    video = Video(path)
    _, frame = next(iter(video.frames(Decoding())))
    picture = frame.to_image()  # type: ignore[no-untyped-call]
    video.close()
    written = Image.open(io.BytesIO(jpeg(frame)))
    assert written.size == picture.size == (width, 360)
    expected = io.BytesIO()
    picture.save(expected, format="JPEG", quality=JPEG_QUALITY)
    assert jpeg(frame) == expected.getvalue()


def test_h265_in_a_mov_container_decodes(tmp_path: Path) -> None:
    path = write_video(tmp_path / "drive.mov", seconds=1, fps=10, creation_time=START, codec="libx265")
    video = Video(path)
    video.close()
    assert video.info.codec == "hevc"
    times, decoding = decode_all(path)
    assert times == pytest.approx([n / 10 for n in range(10)]) and decoding.damage is None


def test_a_video_cut_short_decodes_up_to_the_cut_and_says_so(tmp_path: Path) -> None:
    whole = write_video(tmp_path / "whole.mp4", seconds=4, fps=10)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    times, decoding = decode_all(cut)
    assert 5 <= len(times) < 40 and decoding.damage is not None
    assert times == pytest.approx([n / 10 for n in range(len(times))])


def test_a_file_that_is_no_video_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("not a video\n")
    with pytest.raises(VideoUnreadable, match=r"notes\.mp4: cannot be read as a video"):
        Video(path)


def test_a_file_without_video_stream_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "audio.mp4"
    container = av.open(str(path), "w")
    stream = container.add_stream("aac", rate=8000)
    samples = np.zeros((1, 1024), np.float32)
    for number in range(8):
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 8000, number * 1024, Fraction(1, 8000)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    with pytest.raises(VideoUnreadable, match=r"audio\.mp4: holds no video stream"):
        Video(path)
