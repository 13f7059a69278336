"""`hazard stream SOURCE`: replay a folder or a video over one live stream, printing hazards as they are confirmed.

Without --realtime each frame waits for the previous one's answer (every frame is served). With --realtime frames go
at the source's own pace (a video's timestamps, a folder at --fps), as a camera would send them: the server keeps
the newest and answers the frames it replaced `dropped: superseded`.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from hazard_client.sources import Frame
from hazard_client.stream import FrameStream

Say = Callable[[str], None]


def confirmed(answer: dict[str, Any]) -> list[str]:
    """The hazards this answer confirms (their `new_hazard` frame), one line each."""
    return [
        f"frame {answer['frame_id']}: {d['label']} {d['confidence']:.2f} confirmed as hazard {d['hazard_id']}"
        for d in answer.get("detections", [])
        if d.get("new_hazard")
    ]


def outcome(answer: dict[str, Any]) -> str:
    if "dropped" in answer:
        return f"dropped_{answer['dropped']}"
    return "error" if "error" in answer else "answered"


async def replay(stream: FrameStream, frames: Iterator[Frame], realtime: bool, fps: float, say: Say) -> Counter[str]:
    """Counts of what became of the frames: answered, error, dropped_<reason>, and sent."""
    counts: Counter[str] = Counter()
    turn = asyncio.Semaphore(1)  # lockstep unless realtime: the next frame goes once this one is answered
    all_sent = asyncio.Event()

    async def read_answers() -> None:
        async for answer in stream:
            counts[outcome(answer)] += 1
            for line in confirmed(answer):
                say(line)
            if "error" in answer:
                say(f"frame {answer['frame_id']}: {answer['error']['code']}: {answer['error']['message']}")
            turn.release()
            if all_sent.is_set() and _answered(counts) >= counts["sent"]:
                return

    reader = asyncio.create_task(read_answers())
    started, first_time = time.monotonic(), None
    for index, (image, at) in enumerate(frames):
        if realtime:
            first_time = at if first_time is None else first_time
            due = (at - (first_time or 0.0)) if at is not None else index / fps
            await asyncio.sleep(max(0.0, started + due - time.monotonic()))
        else:
            await turn.acquire()
        await stream.send(image, frame_id=index)
        counts["sent"] += 1
    all_sent.set()
    if _answered(counts) < counts["sent"]:
        await reader
    reader.cancel()
    return counts


def _answered(counts: Counter[str]) -> int:
    return sum(number for name, number in counts.items() if name != "sent")
