"""Dashcam video through PyAV: frames in presentation order with their time in the video (from PTS), and the
damage a power cut leaves (frames before it are kept, the rest is reported)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hazard_client.drives.timeparse import epoch_seconds
from hazard_client.errors import HazardError
from hazard_client.ingest import UsageError

if TYPE_CHECKING:
    import av.container
    import av.video.frame
    import av.video.stream

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v"})
JPEG_QUALITY = 90


class VideoUnreadable(UsageError):
    """Not a video PyAV can decode: no video stream, an unknown codec, not a container at all (exit code 2)."""


class DecodeFailed(HazardError):
    """Decoding or sampling stopped for something other than damage to the file (exit code 2, one line)."""


@dataclass(frozen=True)
class VideoInfo:
    codec: str
    width: int
    height: int
    duration: float | None  # seconds, from the container's header (None: unknown)
    creation_time: float | None  # epoch seconds, from the `creation_time` tag (None: absent or unreadable)


@dataclass
class Decoding:
    """What one pass over the video got to: frames decoded, the last one's time, and the damage that stopped it."""

    frames: int = 0
    last_time: float = 0.0
    damage: str | None = None


class Video:
    """An open video file. `frames()` decodes every frame but converts none: the caller converts those it keeps."""

    def __init__(self, path: Path, threads: int = 0) -> None:
        import av

        self.path = path
        try:
            self.container: av.container.InputContainer = av.open(str(path), mode="r")
        except (av.error.FFmpegError, OSError) as exc:
            raise VideoUnreadable(f"{path}: cannot be read as a video ({_reason(exc)})") from None
        if not self.container.streams.video:
            self.container.close()
            raise VideoUnreadable(f"{path}: holds no video stream")
        self.stream: av.video.stream.VideoStream = self.container.streams.video[0]
        codec = self.stream.codec_context
        if codec is None or not codec.name:
            self.container.close()
            raise VideoUnreadable(f"{path}: its video codec cannot be decoded by this build of FFmpeg (PyAV)")
        self.stream.thread_type = "AUTO"  # frame and slice threads: decoding is most of a drive's CPU time
        if threads:
            codec.thread_count = threads
        self.info = VideoInfo(codec.name, codec.width, codec.height, self._duration(), self._creation_time())

    def _duration(self) -> float | None:
        stream = self.stream
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        if self.container.duration is not None:
            return self.container.duration / 1_000_000  # AV_TIME_BASE
        return None

    def _creation_time(self) -> float | None:
        for tags in (self.container.metadata, self.stream.metadata):
            if text := tags.get("creation_time"):
                try:
                    return epoch_seconds(text)
                except ValueError:
                    continue
        return None

    def frames(self, decoding: Decoding) -> Iterator[tuple[float, av.video.frame.VideoFrame]]:
        """(seconds from the first frame, frame). Damage ends the iteration and is written into `decoding`."""
        import av

        first: float | None = None
        try:
            for frame in self.container.decode(self.stream):
                if frame.time is None:
                    continue
                first = frame.time if first is None else first
                decoding.frames += 1
                decoding.last_time = frame.time - first
                yield decoding.last_time, frame
        except av.error.FFmpegError as exc:
            decoding.damage = f"{_reason(exc)} after {decoding.last_time:.2f} s"
            return
        duration = self.info.duration
        rate = float(self.stream.average_rate or 25)
        if decoding.frames == 0:
            decoding.damage = "no frame could be decoded"
        elif duration is not None and decoding.last_time + 2 / rate + 0.5 < duration:
            decoding.damage = f"the video ends at {decoding.last_time:.2f} s of the {duration:.2f} s its header says"

    def close(self) -> None:
        self.container.close()


def jpeg(frame: av.video.frame.VideoFrame) -> bytes:
    from PIL import Image

    # The converted plane read in place: the same pixels as `frame.to_image()`, which copies them row by row and
    # twice more, 4.4 ms of a core for a 1280x720 frame against ~0.5 here.
    plane = frame.reformat(format="rgb24").planes[0]
    size = (plane.width, plane.height)
    image = Image.frombuffer("RGB", size, plane, "raw", "RGB", plane.line_size, 1)  # type: ignore[arg-type]  # a buffer
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(text).split())
