"""bench/tracking_cost.py against a real server process (as both of its servers): every frame of a located drive
answered, and the time outside the model's stages read from each answer."""

from __future__ import annotations

import asyncio

from bench.tracking_cost import drive_frames, run
from tests.support.server import Server


def test_both_servers_answer_every_frame_and_the_path_outside_the_stages_is_measured(server: Server) -> None:
    drives = drive_frames(9301, vehicles=2, limit=6)
    assert [len(frames) for frames in drives] == [6, 6]
    assert all({"lat", "lon", "heading", "captured_at"} <= set(params) for _, params in drives[0])
    report = asyncio.run(run({"ours": server.base_url, "base": server.base_url}, drives, 20.0, "base"))
    for name in ("ours", "base"):
        total, outside = report[name], report[f"{name}_outside_stages"]
        assert 0 < outside["p50"] < total["p50"] <= total["max"], report
