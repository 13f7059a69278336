"""GET /sessions/{id}/stream: frames over one WebSocket, through a real uvicorn server in this process (its own
WebSocket protocol, so close codes and shutdown are the server's, not a test double's), with the real Redis and
model. The client is the `websockets` library, as hazard_client's."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from starlette.requests import HTTPConnection
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from app.entrypoints.websocket import websocket_options
from app.http.routers.stream import create_stream_router
from app.main import create_app
from app.services.core.errors import ApiError, ScopeRequired, Unauthorized
from app.services.identity.principal import Principal, Scope
from app.services.streams.protocol import encode_auth, encode_frame
from app.settings import Settings
from app.wiring.parts import Parts
from tests.conftest import wait_until_ready
from tests.support.images import scene_with_hazards
from tests.support.logs import logged_lines
from tests.support.redis_process import RedisProcess, free_port
from tests.support.rtsp_source import RtspSource
from tests.support.waiting import wait_for

AUTH_SECONDS = 2.0  # how long a stream without a key in its upgrade waits for the first message, in the browser test

SCENE, FRAME = scene_with_hazards(seed=5, size=(1280, 720))
MakeSettings = Callable[..., Settings]


@dataclass
class StreamServer:
    app: FastAPI
    server: uvicorn.Server
    task: asyncio.Task[None]
    port: int
    client: httpx.AsyncClient

    @property
    def parts(self) -> Parts:
        parts: Parts = self.app.state.parts
        return parts

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stream_url(self, session_id: str) -> str:
        return f"ws://127.0.0.1:{self.port}/sessions/{session_id}/stream"

    async def new_session(self) -> str:
        response = await self.client.post("/sessions")
        assert response.status_code == 201, response.text
        return str(response.json()["session_id"])

    def metric(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        return self.parts.metrics.registry.get_sample_value(name, dict(labels or {})) or 0.0

    async def stop(self) -> None:
        self.server.should_exit = True
        async with asyncio.timeout(30):
            await self.task


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[StreamServer]]]:
    """Serves an app (create_app's, or one given) with uvicorn in this process, as hazard-api serves it."""
    running: list[StreamServer] = []

    async def start(settings: Settings, app: FastAPI | None = None) -> StreamServer:
        app = app or create_app(settings)
        port = free_port()
        ws = websocket_options(settings.stream_max_message_bytes)
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", **ws)
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}")

        async def started() -> bool:
            return server.started

        await wait_for(started, "uvicorn started", within=30)
        if getattr(app.state, "parts", None) is not None:  # one of create_app's: serving once ready
            await wait_until_ready(client)
        running.append(StreamServer(app, server, task, port, client))
        return running[-1]

    yield start
    for stream_server in running:
        if not stream_server.task.done():
            await stream_server.stop()
        await stream_server.client.aclose()


def frame_message(frame_id: Any, image: bytes = FRAME, **header: Any) -> bytes:
    return encode_frame({"frame_id": frame_id, **header}, image)


async def next_answer(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(15):
        answer: dict[str, Any] = json.loads(await ws.recv())
    return answer


async def close_code(ws: ClientConnection) -> tuple[int | None, str | None]:
    """The close code and reason the server sent, once it has closed (answers before it are skipped)."""
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(15):
            while True:
                await ws.recv()
    return (ws.close_code, ws.close_reason)


def boxes(answer: dict[str, Any]) -> list[tuple[str, dict[str, float]]]:
    return [(d["label"], d["box"]) for d in answer["detections"]]


async def test_stream_answers_equal_detect_answers_for_the_same_frames(
    serve: Callable[..., Awaitable[StreamServer]], make_settings: MakeSettings
) -> None:
    api = await serve(make_settings())
    streamed, posted = await api.new_session(), await api.new_session()
    answers = []
    async with connect(api.stream_url(streamed)) as ws:
        assert not ws.protocol.extensions  # the client offers permessage-deflate; compressed images: declined
        for frame_id in range(5):
            await ws.send(frame_message(frame_id))
            answers.append(await next_answer(ws))
    for frame_id, answer in enumerate(answers):
        response = await api.client.post(f"/detect/{posted}", content=FRAME, headers={"content-type": "image/jpeg"})
        assert response.status_code == 200, response.text
        expected = response.json()
        assert answer["frame_id"] == frame_id and answer["session_id"] == streamed
        assert set(answer) == set(expected) | {"frame_id"}
        assert boxes(answer) == boxes(expected)
        assert answer["session"] == {**expected["session"], "frame_count": frame_id + 1}
        # Tracking is the same code: one hazard id per hazard through the stream, confirmed on the same frame.
        assert [d["new_hazard"] for d in answer["detections"]] == [d["new_hazard"] for d in expected["detections"]]
    hazard_ids = [[d["hazard_id"] for d in answer["detections"]] for answer in answers]
    assert all(ids == hazard_ids[0] for ids in hazard_ids) and all(hazard_ids[0])
    history = (await api.client.get(f"/sessions/{streamed}/detections")).json()
    assert len(history["items"]) == 5  # recorded like /detect's frames
    assert api.metric("hazard_stream_frames_answered_total", {"outcome": "detected"}) == 5


async def test_a_newer_frame_replaces_the_one_waiting_and_the_newest_is_answered(
    serve: Callable[..., Awaitable[StreamServer]], make_settings: MakeSettings
) -> None:
    api = await serve(make_settings(stream_window=1, model_max_concurrent=1))
    session_id = await api.new_session()
    sent = list(range(8))
    async with connect(api.stream_url(session_id)) as ws:
        for frame_id in sent:  # a burst: the engine (one infer request) is slower than the link
            await ws.send(frame_message(frame_id))
        outcomes: dict[int, dict[str, Any]] = {}
        while len(outcomes) < len(sent):
            answer = await next_answer(ws)
            assert answer["frame_id"] not in outcomes, "one outcome per frame"
            outcomes[answer["frame_id"]] = answer
    superseded = [frame_id for frame_id, answer in outcomes.items() if answer.get("dropped") == "superseded"]
    assert superseded, "frames waiting behind the window are replaced by newer ones"
    assert "detections" in outcomes[sent[-1]], "the newest frame is never replaced"
    assert sent[0] not in superseded  # it found the window empty
    assert api.metric("hazard_stream_frames_dropped_total", {"reason": "superseded"}) == len(superseded)


async def test_a_client_vanishing_mid_frame_leaves_nothing_in_flight(
    serve: Callable[..., Awaitable[StreamServer]], make_settings: MakeSettings
) -> None:
    api = await serve(make_settings())
    session_id = await api.new_session()
    ws = await connect(api.stream_url(session_id))
    await ws.send(frame_message(1))
    await ws.send(frame_message(2))

    async def received() -> bool:
        return api.metric("hazard_stream_frames_received_total") == 2

    await wait_for(received, "frames received")
    ws.transport.abort()  # gone without a close frame, frames in flight

    async def settled() -> bool:
        return (
            api.parts.detection.in_flight == 0
            and api.metric("hazard_streams_open") == 0
            and api.metric("hazard_inference_in_flight") == 0
            and api.metric("hazard_inference_queue_depth") == 0
        )

    await wait_for(settled, "every in-flight counter back at zero")


async def test_an_oversized_message_closes_the_stream_with_1009(
    serve: Callable[..., Awaitable[StreamServer]], make_settings: MakeSettings
) -> None:
    api = await serve(make_settings(stream_max_message_bytes=4096))
    async with connect(api.stream_url(await api.new_session())) as ws:
        await ws.send(frame_message(1, image=b"\xff" * 8192))
        code, reason = await close_code(ws)
    assert code == 1009 and reason and "4096" in reason
    async with connect(api.stream_url(await api.new_session())) as ws:  # AUTH_MODE=off: a key sent is still checked
        await ws.send(encode_auth("hzk_nope"))
        assert (await close_code(ws))[0] == 4401


async def test_a_malformed_header_is_answered_with_an_error_and_the_stream_lives_on(
    serve: Callable[..., Awaitable[StreamServer]], make_settings: MakeSettings
) -> None:
    api = await serve(make_settings())
    async with connect(api.stream_url(await api.new_session())) as ws:
        await ws.send(b"\x00\x00\x00\x05nope!" + FRAME)
        unreadable = await next_answer(ws)
        await ws.send(frame_message("f-2", conf=2.5))
        out_of_range = await next_answer(ws)
        await ws.send(frame_message("f-3", lat=10.0))
        half_located = await next_answer(ws)
        await ws.send(frame_message("f-4", conf=0.3, lat=45.0, lon=7.0, captured_at="2025-05-01T09:30:00Z"))
        served = await next_answer(ws)
    assert unreadable["frame_id"] is None and unreadable["error"]["code"] == "VALIDATION_ERROR"
    assert out_of_range["frame_id"] == "f-2" and out_of_range["error"]["code"] == "VALIDATION_ERROR"
    assert out_of_range["error"]["details"]["errors"][0]["location"] == ["header", "conf"]
    assert half_located["frame_id"] == "f-3" and half_located["error"]["code"] == "VALIDATION_ERROR"
    assert served["frame_id"] == "f-4" and served["detections"]


async def test_an_ended_session_closes_the_stream_with_a_reason(
    serve: Callable[..., Awaitable[StreamServer]], make_settings: MakeSettings
) -> None:
    api = await serve(make_settings())
    session_id = await api.new_session()
    async with connect(api.stream_url(session_id)) as ws:
        await ws.send(frame_message(1))
        assert "detections" in await next_answer(ws)
        assert (await api.client.post(f"/sessions/{session_id}/end")).status_code == 200
        await ws.send(frame_message(2))
        ended = await next_answer(ws)
        code, reason = await close_code(ws)
    assert ended["frame_id"] == 2 and ended["error"]["code"] == "SESSION_ENDED"
    assert code == 4409 and reason
    async with connect(api.stream_url("no-such-session")) as ws:
        await ws.send(frame_message(1))
        assert (await next_answer(ws))["error"]["code"] == "SESSION_NOT_FOUND"
        assert (await close_code(ws))[0] == 4404


async def test_frames_are_answered_in_degraded_mode_while_redis_is_down(
    serve: Callable[..., Awaitable[StreamServer]], make_settings: MakeSettings, tmp_path: Path
) -> None:
    redis = RedisProcess(tmp_path / "redis-data")
    redis.start()
    try:
        api = await serve(make_settings(redis_url=redis.url, redis_mode="standalone"))
        session_id = await api.new_session()
        async with connect(api.stream_url(session_id)) as ws:
            redis.kill()
            for frame_id in range(3):
                await ws.send(frame_message(frame_id))
                answer = await next_answer(ws)
                assert answer["session"] == {"verified": False, "degraded": True, "frame_count": None}, answer
                assert answer["detections"]
    finally:
        redis.kill()


async def test_shutdown_answers_the_frames_in_flight_then_closes_with_1001(
    serve: Callable[..., Awaitable[StreamServer]], make_settings: MakeSettings
) -> None:
    api = await serve(make_settings(stream_window=2))
    async with connect(api.stream_url(await api.new_session())) as ws:
        await ws.send(frame_message(1))
        await ws.send(frame_message(2))

        async def received() -> bool:
            return api.metric("hazard_stream_frames_received_total") == 2

        await wait_for(received, "frames received")
        stopping = asyncio.create_task(api.stop())
        answers = [await next_answer(ws), await next_answer(ws)]
        code, reason = await close_code(ws)
        await stopping
    assert sorted(answer["frame_id"] for answer in answers) == [1, 2]
    assert all("detections" in answer for answer in answers)
    assert code == 1001 and reason


async def test_a_refusing_authenticate_closes_the_stream_before_any_frame_is_read(
    serve: Callable[..., Awaitable[StreamServer]], make_settings: MakeSettings
) -> None:
    settings = make_settings()
    api = await serve(settings)
    refusals: list[ApiError] = [Unauthorized(), ScopeRequired()]

    async def refuse(connection: HTTPConnection, key: str | None) -> Principal:
        raise refusals.pop(0)

    guarded = FastAPI()
    guarded.include_router(create_stream_router(api.parts.detection, api.parts.metrics, settings, refuse))
    door = await serve(settings, guarded)
    session_id = await api.new_session()
    for expected in (4401, 4403):
        async with connect(door.stream_url(session_id)) as ws:
            with contextlib.suppress(ConnectionClosed):  # the close may already be there
                await ws.send(frame_message(1))
            code, reason = await close_code(ws)
        assert code == expected and reason
    assert api.metric("hazard_stream_frames_received_total") == 0  # no frame was read


async def test_streams_past_the_process_limit_are_refused_and_idle_ones_closed(
    serve: Callable[..., Awaitable[StreamServer]], make_settings: MakeSettings
) -> None:
    api = await serve(make_settings(stream_max_per_process=1, stream_idle_seconds=1.0, stream_auth_seconds=0.2))
    session_id = await api.new_session()
    async with connect(api.stream_url(session_id)) as first:
        async with connect(api.stream_url(session_id)) as second:
            assert (await close_code(second))[0] == 1013
        code, reason = await close_code(first)  # sends nothing: idle
    assert code == 4408 and reason


async def test_the_client_replays_a_folder_a_video_and_an_rtsp_camera_over_one_stream(
    serve: Callable[..., Awaitable[StreamServer]], make_settings: MakeSettings, tmp_path: Path
) -> None:
    import av
    from PIL import Image

    from hazard_client.client import AsyncHazardClient
    from hazard_client.replay import replay
    from hazard_client.sources import source_frames

    folder = tmp_path / "frames"
    folder.mkdir()
    for index in range(3):
        (folder / f"{index:03d}.jpg").write_bytes(FRAME)
    video = tmp_path / "drive.mp4"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        picture = Image.open(io.BytesIO(FRAME)).convert("RGB").resize((640, 360))
        for _ in range(3):
            container.mux(stream.encode(av.VideoFrame.from_image(picture)))  # type: ignore[no-untyped-call]
        container.mux(stream.encode(None))
    api = await serve(make_settings())
    said: list[str] = []
    async with AsyncHazardClient(api.base_url) as client:
        for source in (str(folder), str(video)):
            session = await client.create_session()
            async with client.stream(session.session_id) as frames:
                counts = await replay(frames, source_frames(source), realtime=False, fps=5.0, say=said.append)
            assert counts["sent"] == 3 and counts["answered"] == 3, counts
    # `hazard stream rtsp://...`: PyAV reads a real RTSP camera (GStreamer's server, tests/support/rtsp_source).
    camera = RtspSource(folder / "000.jpg")
    try:
        camera.wait_ready()
        command = ["-m", "hazard_client", "stream", camera.url, "--max-frames", "3", "--server", api.base_url]
        process = await asyncio.create_subprocess_exec(
            sys.executable, *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        async with asyncio.timeout(60):
            output = (await process.communicate())[0].decode()
    finally:
        camera.stop()
    assert process.returncode == 0 and "answered 3, sent 3" in output, output


async def test_the_stream_takes_the_detect_key_of_the_http_routes(
    serve: Callable[..., Awaitable[StreamServer]], make_settings: MakeSettings
) -> None:
    """AUTH_MODE=keys: no key 4401, a key without `detect` 4403, another tenant's session answers as unknown (4404),
    the owner's key streams; the key travels in the upgrade request's headers, as on /detect."""
    api = await serve(make_settings(auth_mode="keys"))
    keys = api.app.state.identity.keys
    owner = (await keys.create(name="van", tenant="fleet-a", scopes=frozenset({Scope.DETECT}))).key
    stranger = (await keys.create(name="other", tenant="fleet-b", scopes=frozenset({Scope.DETECT}))).key
    reader = (await keys.create(name="map", tenant="fleet-a", scopes=frozenset({Scope.MAP_READ}))).key
    created = await api.client.post("/sessions", headers={"x-api-key": owner})
    assert created.status_code == 201, created.text
    url = api.stream_url(created.json()["session_id"])
    for headers, expected in (({}, 4401), ({"x-api-key": reader}, 4403), ({"x-api-key": "hzk_nope"}, 4401)):
        async with connect(url, additional_headers=headers) as ws:
            assert (await close_code(ws))[0] == expected
    async with connect(url, additional_headers={"authorization": f"Bearer {stranger}"}) as ws:
        await ws.send(frame_message(1))
        answer = await next_answer(ws)
        assert answer["error"]["code"] == "SESSION_NOT_FOUND"
        assert (await close_code(ws))[0] == 4404
    async with connect(url, additional_headers={"authorization": f"Bearer {owner}"}) as ws:
        await ws.send(frame_message(1))
        assert "detections" in await next_answer(ws)


@pytest.mark.serial  # a first message due within a window of seconds: timed, so alone
async def test_a_browser_sends_its_key_in_a_first_message_checked_like_a_header(
    serve: Callable[..., Awaitable[StreamServer]], make_settings: MakeSettings
) -> None:
    """No key in the upgrade (browsers cannot set one): the first text message `{"type": "auth", "api_key"}` is
    checked as a header's key (scope, owner, revocation); none in time, a frame first, a bad or revoked key, a key in
    the URL: closed 4401/4403 before any frame is read. The key appears in no log line."""
    # Long enough for a key sent at once to arrive on a loaded machine (0.5 s was not, once, with the suite's load).
    api = await serve(make_settings(auth_mode="keys", stream_auth_seconds=AUTH_SECONDS, log_level="DEBUG"))
    keys = api.app.state.identity.keys
    owner = await keys.create(name="van", tenant="fleet-a", scopes=frozenset({Scope.DETECT}))
    stranger = (await keys.create(name="other", tenant="fleet-b", scopes=frozenset({Scope.DETECT}))).key
    reader = (await keys.create(name="map", tenant="fleet-a", scopes=frozenset({Scope.MAP_READ}))).key
    revoked = await keys.create(name="old", tenant="fleet-a", scopes=frozenset({Scope.DETECT}))
    await keys.revoke(revoked.record.key_id)
    created = await api.client.post("/sessions", headers={"x-api-key": owner.key})
    url = api.stream_url(created.json()["session_id"])
    with logged_lines() as lines:
        for first, expected in (
            (None, 4401),  # nothing within STREAM_AUTH_SECONDS
            (frame_message(1), 4401),  # a frame before any key
            (encode_auth("hzk_nope"), 4401),
            (encode_auth(revoked.key), 4401),
            (encode_auth(reader), 4403),
            (json.dumps({"type": "auth"}), 4401),
        ):
            async with connect(url) as ws:
                if first is not None:
                    await ws.send(first)
                code, reason = await close_code(ws)
            assert code == expected and reason, (first, code, reason)
        assert api.metric("hazard_stream_frames_received_total") == 0  # no frame was read
        async with connect(url) as ws:
            await ws.send(encode_auth(stranger))
            await ws.send(frame_message(1))
            assert (await next_answer(ws))["error"]["code"] == "SESSION_NOT_FOUND"  # the owner check holds
        async with connect(url) as ws:
            await ws.send(encode_auth(owner.key))
            await ws.send(frame_message(1))
            assert "detections" in await next_answer(ws)
    assert lines, "the log is captured"
    for key in (owner.key, stranger, reader, revoked.key):
        assert not [line for line in lines if key.split("_", 2)[2] in line]
    # Never read from the URL: servers and proxies log request lines (uvicorn's WebSocket protocol does at DEBUG).
    async with connect(f"{url}?api_key={owner.key}") as ws:
        assert (await close_code(ws))[0] == 4401


async def test_streams_past_the_key_limit_are_refused_and_every_ending_gives_the_slot_back(
    serve: Callable[..., Awaitable[StreamServer]], make_settings: MakeSettings
) -> None:
    """STREAM_MAX_PER_KEY: one more stream of the key is closed 4429 (another key still streams); a client vanishing,
    an error close and a shutdown each give the key's slot back."""
    api = await serve(make_settings(auth_mode="keys", stream_max_per_key=2))
    keys = api.app.state.identity.keys
    van = (await keys.create(name="van", tenant="fleet-a", scopes=frozenset({Scope.DETECT}))).key
    other = (await keys.create(name="bus", tenant="fleet-a", scopes=frozenset({Scope.DETECT}))).key
    created = await api.client.post("/sessions", headers={"x-api-key": van})
    url = api.stream_url(created.json()["session_id"])

    def as_key(key: str) -> dict[str, str]:
        return {"x-api-key": key}

    async def open_count(count: float) -> None:
        async def reached() -> bool:
            return api.metric("hazard_streams_open") == count

        await wait_for(reached, f"{count} streams open")

    vanishing = await connect(url, additional_headers=as_key(van))
    async with connect(api.stream_url("no-such-session"), additional_headers=as_key(van)) as erring:
        await open_count(2)
        async with connect(url, additional_headers=as_key(van)) as refused:
            code, reason = await close_code(refused)
        assert code == 4429 and reason and "STREAM_MAX_PER_KEY" in reason
        async with connect(url, additional_headers=as_key(other)) as ws:
            await ws.send(frame_message(1))
            assert "detections" in await next_answer(ws)
        vanishing.transport.abort()  # gone without a close frame
        await erring.send(frame_message(2))
        assert (await close_code(erring))[0] == 4404  # closed on an error
    await open_count(0)
    held = [await connect(url, additional_headers=as_key(van)) for _ in range(2)]
    for ws in held:
        await ws.send(frame_message(3))
        assert "detections" in await next_answer(ws)  # both slots were given back
    await api.stop()
    assert [(await close_code(ws))[0] for ws in held] == [1001, 1001]
    assert api.metric("hazard_streams_open") == 0
    assert api.metric("hazard_streams_refused_total", {"reason": "key_full"}) == 1
