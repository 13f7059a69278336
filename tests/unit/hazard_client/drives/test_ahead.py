"""A drive decodes ahead of its uploads: the next frame is decoded and sampled while the first one is still being
sent, the queue between them never holds more than its size (a producer faster than the uploads waits), and an
error in decoding reaches the consumer after the frames before it. Real video, real decoder, real threads; every
wait is on an event, never on a clock."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from hazard_client.ahead import Ahead
from hazard_client.drives.drive import DriveOptions, drive_report, sampled_frames
from hazard_client.drives.video import DecodeFailed, Video
from hazard_client.feed import Feed
from hazard_client.ingest import SourceFile
from tests.support.drives import START, write_video
from tests.support.waiting import wait_for

SIZE = 3
OPTIONS = DriveOptions(fps=10.0)  # every frame of the 10 fps video travels: 20 frames


@pytest.fixture
def video(tmp_path: Path) -> Iterator[Video]:
    opened = Video(write_video(tmp_path / "drive.mp4", seconds=2, fps=10, creation_time=START))
    yield opened
    opened.close()


def decoding(video: Video, spool: Path, decoded: list[float]) -> Iterator[SourceFile]:
    """The drive's sampled frames, each noted in `decoded` once it is decoded and written."""
    report = drive_report(video, None, OPTIONS)
    for source in sampled_frames(video, None, OPTIONS, report, spool):
        assert source.video_time is not None
        decoded.append(source.video_time)
        yield source


def test_the_next_frame_decodes_while_the_first_is_being_sent(video: Video, tmp_path: Path) -> None:
    decoded: list[float] = []
    events: list[str] = []
    ahead = Ahead(lambda: decoding(video, tmp_path / "spool", decoded), SIZE)

    async def send_all() -> list[SourceFile]:
        feed = Feed(ahead=ahead)
        sent: list[SourceFile] = []
        while (source := await feed.next()) is not None:
            events.append(f"sending {len(sent)}")
            # The upload of this frame is under way: the frame after it is decoded meanwhile, not after it.
            await wait_for(lambda: _async(len(decoded) > len(sent) + 1 or len(decoded) == 20), "the next frame")
            events.append(f"decoded {len(sent) + 1}" if len(decoded) > len(sent) + 1 else "decoded all")
            events.append(f"sent {len(sent)}")
            sent.append(source)
        assert feed.complete and feed.files == sent
        return sent

    try:
        sent = asyncio.run(send_all())
    finally:
        ahead.close()
    assert [source.video_time for source in sent] == decoded and len(sent) == 20
    assert events[:3] == ["sending 0", "decoded 1", "sent 0"]
    assert ahead.high_water <= SIZE


def test_a_producer_faster_than_its_consumer_waits_with_the_queue_full(video: Video, tmp_path: Path) -> None:
    decoded: list[float] = []
    ahead = Ahead(lambda: decoding(video, tmp_path / "spool", decoded), SIZE)
    try:
        asyncio.run(wait_for(lambda: _async(ahead.waited_for_room.is_set()), "the producer waiting for room"))
        assert len(decoded) == SIZE + 1  # the queue's frames and the one waiting to go in: no more decoded
        assert ahead.high_water == SIZE
        times = []
        while (source := ahead.get()) is not None:
            times.append(source.video_time)
        assert times == decoded and len(times) == 20 and ahead.high_water == SIZE
    finally:
        ahead.close()


def test_closing_stops_a_waiting_producer_and_joins_its_thread(video: Video, tmp_path: Path) -> None:
    decoded: list[float] = []
    ahead = Ahead(lambda: decoding(video, tmp_path / "spool", decoded), 1)
    asyncio.run(wait_for(lambda: _async(ahead.waited_for_room.is_set()), "the producer waiting for room"))
    ahead.close()
    assert len(decoded) == 2 and ahead.get() is None  # stopped where it was: the video can be closed now


def test_an_error_in_decoding_reaches_the_consumer_after_the_frames_before_it(video: Video, tmp_path: Path) -> None:
    def failing() -> Iterator[SourceFile]:
        for number, source in enumerate(decoding(video, tmp_path / "spool", [])):
            if number == 5:
                raise OSError(28, "No space left on device")
            yield source

    ahead = Ahead(failing, SIZE, lambda error: DecodeFailed(f"drive.mp4: decoding stopped ({error})"))
    try:
        got = [ahead.get() for _ in range(5)]
        with pytest.raises(DecodeFailed, match="No space left on device"):
            ahead.get()
        assert all(source is not None for source in got) and ahead.get() is None
    finally:
        ahead.close()


async def _async(value: bool) -> bool:
    return value
