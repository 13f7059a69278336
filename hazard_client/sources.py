"""Frames to stream from a SOURCE: a folder of images, or anything PyAV opens (a video file, a camera device, an
`rtsp://` URL). Kept small and apart so drive replays can share it: each frame as JPEG bytes and its time in
seconds from the start (None for a folder's images)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
Frame = tuple[bytes, float | None]


def folder_frames(folder: Path) -> Iterator[Frame]:
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        yield path.read_bytes(), None


def video_frames(source: str, quality: int = 85) -> Iterator[Frame]:
    """Decoded frames re-encoded as JPEG (Pillow: `pip install hazard-client[images]`)."""
    import av  # the video path only: folders need no PyAV

    with av.open(source) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            buffer = io.BytesIO()
            frame.to_image().save(  # type: ignore[no-untyped-call]
                buffer, format="JPEG", quality=quality
            )
            yield buffer.getvalue(), float(frame.time) if frame.time is not None else None


def source_frames(source: str) -> Iterator[Frame]:
    path = Path(source)
    return folder_frames(path) if path.is_dir() else video_frames(source)
