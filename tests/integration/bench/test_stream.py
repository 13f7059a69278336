"""bench/stream.py against a real server process: the same frames over streams and over HTTP, and idle streams
weighed on the server's own process."""

from __future__ import annotations

import asyncio

from bench.common import road_frame
from bench.stream import MODES, client_p50, idle_cost, run_cameras
from tests.support.server import Server

DROPS = {"dropped_superseded", "dropped_late", "dropped_overloaded", "status_503", "status_504"}


def test_both_ways_give_every_frame_one_outcome_and_idle_streams_are_weighed(server: Server) -> None:
    frame = road_frame()
    reports = {mode: asyncio.run(run_cameras(mode, server.base_url, 10.0, 1.0, 2, frame, None)) for mode in MODES}
    for report in reports.values():
        outcomes = report["outcomes"]
        assert report["frames"] == 10 and sum(outcomes.values()) == 10, report
        assert outcomes.get("answered", 0) > 0 and set(outcomes) <= {"answered", *DROPS}, report
        assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["max"]
    assert reports["stream"]["max_outstanding_per_stream"] >= 1
    idle = asyncio.run(idle_cost(server.base_url, 5, 0.5, None))
    assert idle["streams"] == 5 and idle["refused"] == 0, idle
    assert idle["rss_mib_open"] > 0 and idle["cpu_seconds_with_streams"] >= 0


def test_the_hazard_clients_wait_is_measured_both_ways_on_answered_frames(server: Server) -> None:
    measured = asyncio.run(client_p50(server.base_url, 20.0, 4, road_frame(), None, blocks=2))
    assert measured["frames_each"] == 4, measured
    assert set(measured["p50_ms"]) == set(MODES) and all(p50 > 0 for p50 in measured["p50_ms"].values()), measured
