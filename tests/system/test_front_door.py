"""The front door of a real server process: a flood of half-open connections, and a body trickled at 1 B/s
across a SIGTERM. Each test is bounded in time; the server is started the way operators start it."""

from __future__ import annotations

import errno
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.images import scene_with_hazards
from tests.support.redis_process import RedisProcess
from tests.support.server import Server

# Bounds in seconds on a flooded server process: timed, so alone.
pytestmark = pytest.mark.serial

_, FRAME = scene_with_hazards(seed=21, size=(640, 360))
FLOOD = 1100  # half-open connections: more than a default 1,024-descriptor process can hold
SERVER_NOFILE = 1024  # the server runs with the limit the attack exhausted
HEADER_TIMEOUT_SECONDS = 2
BODY_TIMEOUT_SECONDS = 2
# After SIGTERM: the body timeout, then the lifespan's drain and upload flush (nothing in flight here), plus margin.
STOP_BOUND_SECONDS = BODY_TIMEOUT_SECONDS + 8


class LimitedHazardApi(Server):
    """`hazard-api` as operators run it, in a process limited to the descriptors the attack exhausted."""

    launcher = ("prlimit", f"--nofile={SERVER_NOFILE}:{SERVER_NOFILE}", sys.executable, "-m", "app")


class PlainUvicorn(Server):
    """uvicorn without --timeout-graceful-shutdown: left alone, it waits for every open request at a stop."""

    launcher = (sys.executable, "-m", "uvicorn", "app.main:app", "--no-access-log")


def half_open(port: int) -> socket.socket:
    """A connection that starts a request head and never finishes it (a slow-header client)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: flood\r\nX-Slow: ")
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1024) == b""
    except BlockingIOError:
        return False
    except OSError as exc:
        return exc.errno in (errno.ECONNRESET, errno.EPIPE)


@pytest.fixture
def room_for_the_flood() -> Iterator[None]:
    """This test process holds the flood's client ends: it needs more descriptors than the server gets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FLOOD + 512
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {wanted}: cannot hold the flood's client ends")
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.timeout(90)
def test_half_open_flood_leaves_probes_and_clients_answered(
    redis_server: RedisProcess, tmp_path: Path, room_for_the_flood: None
) -> None:
    server = LimitedHazardApi(
        redis_server.url,
        tmp_path,
        HTTP_HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT_SECONDS),
        REQUEST_TIMEOUT_SECONDS="10",
    )
    flood: list[socket.socket] = []
    try:
        server.wait_ready()
        flooded_at = time.monotonic()
        for _ in range(FLOOD):
            flood.append(half_open(server.port))
        # The process is still there, and probes and a well-behaved client are answered during the flood.
        with httpx.Client(base_url=server.base_url, timeout=5) as client:
            assert client.get("/health/live").status_code == 200
            assert client.get("/health/ready").status_code == 200
            created = client.post("/sessions")
            assert created.status_code == 201, created.text
            session_id = created.json()["session_id"]
            frame = client.post(f"/detect/{session_id}", content=FRAME, headers={"content-type": "image/jpeg"})
            assert frame.status_code == 200, frame.text
        assert server.process.poll() is None
        # Nor does the flood last: every half-open connection is closed once its header timeout has passed.
        deadline = flooded_at + HEADER_TIMEOUT_SECONDS + 10
        while not all(closed_by_server(sock) for sock in flood):
            assert time.monotonic() < deadline, "half-open connections outlived the header timeout"
            time.sleep(0.2)
        events = [line for line in server.log_lines() if line.get("event") == "connections_closed_by_server"]
        assert events, "the server did not say it closed connections"
        lowered = [line for line in server.log_lines() if line.get("event") == "http_max_connections_lowered"]
        assert lowered and lowered[0]["nofile_limit"] == SERVER_NOFILE  # the cap was fitted to the limit
    finally:
        for sock in flood:
            sock.close()
        server.stop()


def trickle(port: int, stop: threading.Event, answer: list[bytes]) -> None:
    """POST /sessions with a 1,000-byte body sent at 1 byte a second; keeps whatever the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        head = (
            b"POST /sessions HTTP/1.1\r\nHost: slow\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        )
        sock.sendall(head)
        sock.settimeout(1.0)
        while not stop.is_set():
            try:
                sock.sendall(b" ")
                data = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            answer.append(data)


@pytest.mark.timeout(60)
def test_sigterm_stops_within_the_apps_own_bound_without_a_graceful_flag(
    redis_server: RedisProcess, tmp_path: Path
) -> None:
    # Plain uvicorn, no --timeout-graceful-shutdown: uvicorn alone would wait for the trickled body forever.
    server = PlainUvicorn(redis_server.url, tmp_path, REQUEST_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT_SECONDS))
    stop = threading.Event()
    answer: list[bytes] = []
    slow = threading.Thread(target=trickle, args=(server.port, stop, answer), daemon=True)
    try:
        server.wait_ready()
        slow.start()
        time.sleep(0.5)  # the request is under way (its body half a byte in) when the signal comes
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=STOP_BOUND_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {STOP_BOUND_SECONDS} s after SIGTERM")
        stopped_in = time.monotonic() - signalled
        assert stopped_in < STOP_BOUND_SECONDS, stopped_in
        assert b"".join(answer).startswith(b"HTTP/1.1 408"), answer  # the trickler was told why
        assert any(line.get("event") == "shutdown_stats" for line in server.log_lines())  # a full, clean stop
    finally:
        stop.set()
        slow.join(timeout=5)
        server.stop()
