"""The load generator of bench/ against a real server process: what docs/PERFORMANCE.md reports is what it measured."""

from __future__ import annotations

import asyncio

from bench.common import MODEL_DIR, benchmark_app, road_frame
from bench.http import LeanClient
from bench.load import refusal_details, run_load, served_model
from tests.support.server import Server


def test_an_open_loop_run_answers_every_frame_and_reads_the_server_timing(server: Server) -> None:
    report = asyncio.run(run_load(server.base_url, rate=20, seconds=1.5, frame=road_frame()))
    assert report["requests"] == 30
    assert report["statuses"] == {"200": 30}
    assert report["errors"] == 0
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p95"] <= report["latency_ms"]["max"]
    stages = report["server_stages_ms"]
    assert {"decode", "infer"} <= set(stages)
    assert stages["infer"]["p50"] > 0
    lag = report["send_lag_ms"]  # the generator's own lateness: never negative, and never more than the latency
    assert 0 <= lag["p50"] <= lag["max"] <= report["latency_ms"]["max"]


def test_the_floor_is_measured_on_the_served_ir_in_the_served_precision(server: Server) -> None:
    model_dir, precision = served_model(server.base_url)
    assert model_dir == MODEL_DIR and precision in {"bf16", "f32"}
    ran = benchmark_app(next(model_dir.glob("*.xml")), "latency", 1, "f32")  # as for MODEL_INFERENCE_PRECISION=f32
    assert ran.precision == "float32" and ran.median_latency_ms > 0


async def answers(base_url: str) -> list[tuple[int, str]]:
    """One connection, kept alive across answers of every kind."""
    async with LeanClient(base_url) as client:
        created = await client.post("/sessions")
        session_id = created.json()["session_id"]
        unknown = await client.post("/detect/no-such-session", road_frame(), "image/jpeg")
        garbage = await client.post(f"/detect/{session_id}", b"not an image", "image/jpeg")
        served = await client.post(f"/detect/{session_id}", road_frame(), "image/jpeg")
    return [
        (created.status, ""),
        (unknown.status, unknown.json()["error"]["code"]),
        (garbage.status, garbage.json()["error"]["code"]),
        (served.status, served.headers["content-type"]),
    ]


def test_the_lean_client_reads_each_answer_on_one_kept_alive_connection(server: Server) -> None:
    assert asyncio.run(answers(server.base_url)) == [
        (201, ""),
        (404, "SESSION_NOT_FOUND"),
        (400, "INVALID_IMAGE"),
        (200, "application/json"),
    ]


async def after_the_server_closed_an_idle_connection(base_url: str) -> tuple[bool, int]:
    async with LeanClient(base_url) as client:
        await client.post("/sessions")
        (idle,) = client._idle
        async with asyncio.timeout(10):  # the server's 1 s keep-alive timeout closes it: nothing more is sent
            rest = await idle.reader.read()
        closed = rest == b"" and idle.reader.at_eof()
        answer = await client.post("/sessions")
    return closed, answer.status


def test_the_lean_client_does_not_send_on_a_connection_the_server_closed(server: Server) -> None:
    assert asyncio.run(after_the_server_closed_an_idle_connection(server.base_url)) == (True, 201)


def test_a_refusal_gives_its_numbers_and_any_other_body_none() -> None:
    overloaded = (
        b'{"error":{"code":"OVERLOADED","message":"m","details":{"expected_wait_ms":107.0,"deadline_in_ms":100}}}'
    )
    assert refusal_details(overloaded) == {"expected_wait_ms": 107.0, "deadline_in_ms": 100.0}
    assert refusal_details(b'{"error":{"code":"OVERLOADED","details":{"queue_size":64,"why":"full"}}}') == {
        "queue_size": 64.0
    }
    assert refusal_details(b"Service Unavailable") == {}
    assert refusal_details(b'{"detail":"busy"}') == {}
