"""The multi-host failure rehearsal: the split deployment on hosts of its own (network namespaces on one machine,
tests/support/netns.py), under a bounded load, while its parts die one after another.

    HAProxy (host lb) -> two API replicas, INFERENCE_MODE=remote (api1, api2)
                      -> the queue Redis (queue) -> two hazard-workers (w1, w2)
    sessions: a Redis Cluster of 3 masters with a replica each (r1..r6), cluster-node-timeout 1 s
    uploads: a Cloudinary-compatible endpoint on the machine itself (shared by every process)

The load (frames to `/detect` through HAProxy at a fixed rate, open loop, bench.http's client) runs through every
fault; each fault has a window before it, the fault itself (until the stack has coped: HAProxy took the replica
out, the killed worker's batch job completed, a replica took over the master's slots, the queue Redis thawed, plus
a second), and a window after it; then what was killed is started again before the next fault. `make rehearsal`
runs the long form (bench/rehearsal.py), tests/system/test_rehearsal.py a short one.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from app.services.sessions.keys import session_key
from bench.common import percentiles, road_frame
from bench.http import TRANSPORT_ERRORS, Answer, LeanClient
from bench.jobs import CHUNK
from bench.load import open_sessions
from tests.support import haproxy
from tests.support.fake_cloudinary import FakeCloudinary
from tests.support.netns import Host, Network
from tests.support.redis_cluster import RedisCluster
from tests.support.server import ROOT, process_env

API_PORT = 8000
WORKER_METRICS_PORT = 9101
QUEUE_PORT = 6379
NODE_TIMEOUT_MS = 1000  # a master unreachable this long is replaced by its replica
FAULTS = ("api", "worker", "master", "queue")
GOAL_P95_MS = 150.0
READY_WITHIN_SECONDS = 120.0  # two workers compile the model at once on a shared 2-core machine
SETTLE_SECONDS = 1.0  # a fault's window ends this long after the stack has coped
RECORDED_WITHIN_SECONDS = 20.0  # the breaker's reset (5 s) and the replay of the writes kept meanwhile


@dataclass(frozen=True)
class Plan:
    rate: float = 12.0  # frames/s through HAProxy
    sessions: int = 3
    window_seconds: float = 10.0  # before and after each fault
    faults: tuple[str, ...] = FAULTS
    freeze_seconds: float = 5.0
    job_frames: int = 200  # the batch job a worker is killed in
    restore: bool = True  # start what was killed again before the next fault


@dataclass(frozen=True)
class Sample:
    sent: float  # seconds since the load started, when the frame was due
    session: int
    status: str  # the HTTP status (with the error's code: "503 OVERLOADED"), or the transport error's name
    retry_after: bool
    latency_ms: float


@dataclass
class Window:
    name: str
    start: float
    end: float = math.inf


@dataclass
class FaultRun:
    name: str
    before: Window
    during: Window
    after: Window
    details: dict[str, Any] = field(default_factory=dict)


class Stack:
    """Every process of the rehearsal, each on its host; `down()` ends them and deletes the network."""

    def __init__(self, workdir: Path, model_cache: Path | None = None) -> None:
        self.workdir = workdir
        # OpenVINO's compile cache: warm, the workers start sooner.
        self.model_cache = model_cache or workdir / "model-cache"
        self.network = Network()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.hosts: dict[str, Host] = {}
        self.cloudinary: FakeCloudinary | None = None
        self.cluster: RedisCluster | None = None
        self.env: dict[str, str] = {}

    @property
    def url(self) -> str:
        return f"http://{self.hosts['lb'].address}:{haproxy.PORT}"

    def up(self) -> None:
        self.network.up()
        for name in ("lb", "api1", "api2", "w1", "w2", "queue", "r1", "r2", "r3", "r4", "r5", "r6"):
            self.hosts[name] = self.network.add_host(name)
        self.cloudinary = FakeCloudinary(host=self.network.address)
        self.cloudinary.answer("ok")
        queue = self.hosts["queue"]
        self._spawn("queue", _redis_command(queue, self.workdir / "queue"))
        nodes = [self.hosts[f"r{index}"].redis_host() for index in range(1, 7)]
        self.cluster = RedisCluster(self.workdir / "cluster", replicas=1, hosts=nodes, node_timeout_ms=NODE_TIMEOUT_MS)
        self.cluster.start()
        _wait(lambda: _pings(queue.address), 10, "the queue Redis did not start")
        self.env = self._environment(f"redis://{queue.address}:{QUEUE_PORT}/0")
        for name in ("w1", "w2"):
            self.start_worker(name)
        for name in ("api1", "api2"):
            self.start_api(name)
        replicas = {name: f"{self.hosts[name].address}:{API_PORT}" for name in ("api1", "api2")}
        config = self.workdir / "haproxy.cfg"
        config.write_text(haproxy.config(self.hosts["lb"].address, replicas))
        self.processes["lb"] = haproxy.start(self.hosts["lb"].command(), config, self.workdir / "lb.log")
        for name in ("w1", "w2"):
            self.wait_worker(name)
        for name in ("api1", "api2"):
            self.wait_api(name)

    def _environment(self, queue_url: str) -> dict[str, str]:
        assert self.cluster is not None and self.cloudinary is not None
        return process_env(
            self.cluster.url,
            self.workdir,
            REDIS_MODE="cluster",
            QUEUE_REDIS_URL=queue_url,
            INFERENCE_MODE="remote",
            FLEET_NAME="rehearsal",
            CLOUDINARY_URL=self.cloudinary.url,
            LIVE_LATENCY_BUDGET_SECONDS="0.1",
            REQUEST_TIMEOUT_SECONDS="1",  # production's: a frame a killed worker held is answered 504 within it
            LOG_LEVEL="INFO",
            MODEL_INFERENCE_THREADS="1",  # two workers share two cores with everything else
            MODEL_CACHE_DIR=str(self.model_cache),
            # A killed worker's batch frames come back within seconds: a sweep every second, and a frame untouched
            # for two is a dead worker's (tests/system/test_workers.py's settings).
            WORKER_SWEEP_SECONDS="1",
            JOB_HEARTBEAT_SECONDS="2",
        )

    def _spawn(self, name: str, command: list[str], **env: str) -> None:
        with (self.workdir / f"{name}.log").open("ab") as log:
            self.processes[name] = subprocess.Popen(
                command, cwd=ROOT, env={**os.environ, **self.env, **env}, stdout=log, stderr=subprocess.STDOUT
            )

    def _own_dirs(self, name: str) -> dict[str, str]:
        """A process's own disk: its local store and spool (uploads go to the shared endpoint, not here)."""
        return {
            "STORAGE_DIR": str(self.workdir / name / "uploads"),
            "SPOOL_DIR": str(self.workdir / name / "spool"),
            "REGISTRY_URL": f"sqlite+aiosqlite:///{self.workdir / name / 'registry.db'}",
        }

    def start_api(self, name: str) -> None:
        host = self.hosts[name]
        (self.workdir / name).mkdir(exist_ok=True)
        command = host.command(sys.executable, "-m", "app", "--host", host.address, "--port", str(API_PORT))
        self._spawn(name, command, **self._own_dirs(name))

    def start_worker(self, name: str) -> None:
        (self.workdir / name).mkdir(exist_ok=True)
        command = self.hosts[name].command(sys.executable, "-m", "app.entrypoints.worker")
        self._spawn(name, command, WORKER_METRICS_PORT=str(WORKER_METRICS_PORT), **self._own_dirs(name))

    def wait_api(self, name: str) -> None:
        """Ready, and in HAProxy's rotation."""
        url = f"http://{self.hosts[name].address}:{API_PORT}/health/ready"
        self._wait_process(name, lambda: _answers_200(url), "ready")
        self._wait_process(name, lambda: haproxy.servers_up(self.hosts["lb"].address).get(name, False), "in rotation")

    def wait_worker(self, name: str) -> None:
        url = f"http://{self.hosts[name].address}:{WORKER_METRICS_PORT}/metrics"
        self._wait_process(name, lambda: "hazard_model_ready 1.0" in _text(url), "ready")

    def _wait_process(self, name: str, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + READY_WITHIN_SECONDS
        process = self.processes[name]
        while not condition():
            if process.poll() is not None or time.monotonic() > deadline:
                log = (self.workdir / f"{name}.log").read_text()[-3000:]
                raise RuntimeError(f"{name} not {what} (exit {process.poll()}):\n{log}")
            time.sleep(0.1)

    def kill(self, name: str) -> None:
        process = self.processes[name]
        process.kill()
        process.wait(timeout=10)

    def down(self) -> None:
        """End every process (a frozen one is thawed first), then delete the network; safe after a half-made up()."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
        for process in self.processes.values():
            process.wait(timeout=10)
        if self.cluster is not None:
            self.cluster.kill()
        if self.cloudinary is not None:
            self.cloudinary.stop()
        self.network.down()


def _redis_command(host: Host, data_dir: Path) -> list[str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    binary = shutil.which("redis-server") or "redis-server"
    flags = [
        "--port",
        str(QUEUE_PORT),
        "--bind",
        host.address,
        "--save",
        "",
        "--appendonly",
        "no",
        *host.redis_host().flags,
    ]
    return host.command(binary, *flags, "--dir", str(data_dir))


def _pings(address: str) -> bool:
    try:
        with redis.Redis(address, QUEUE_PORT, socket_timeout=1) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def _text(url: str) -> str:
    try:
        return httpx.get(url, timeout=2).text
    except httpx.TransportError:
        return ""


def _answers_200(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _wait(condition: Callable[[], bool], within: float, message: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(message)
        time.sleep(0.05)


class Load:
    """Frames at a fixed rate through HAProxy, open loop, until stopped; every frame's outcome is kept."""

    def __init__(self, url: str, rate: float, sessions: int) -> None:
        self.url, self.rate, self.session_count = url, rate, sessions
        self.frame = road_frame(size=(640, 360))
        self.samples: list[Sample] = []
        self.session_ids: list[str] = []
        self.started = 0.0
        self._stop = asyncio.Event()

    def now(self) -> float:
        return time.perf_counter() - self.started

    async def run(self) -> None:
        async with LeanClient(self.url, timeout=10) as client:
            self.session_ids = await open_sessions(client, self.session_count)
            self.started = time.perf_counter()
            tasks: list[asyncio.Task[None]] = []
            index = 0
            while not self._stop.is_set():
                delay = self.started + index / self.rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(self._one(client, index)))
                index += 1
            await asyncio.gather(*tasks)

    def stop(self) -> None:
        self._stop.set()

    async def _one(self, client: LeanClient, index: int) -> None:
        due = index / self.rate
        session = index % len(self.session_ids)
        retry_after = False
        try:
            answer = await client.post(f"/detect/{self.session_ids[session]}", self.frame, "image/jpeg")
            status, retry_after = _status(answer), "retry-after" in answer.headers
        except TRANSPORT_ERRORS as exc:
            status = type(exc).__name__
        self.samples.append(Sample(due, session, status, retry_after, (self.now() - due) * 1000))


def _status(answer: Answer) -> str:
    if answer.status == 200:
        return "200"
    try:
        return f"{answer.status} {answer.json()['error']['code']}"
    except (ValueError, KeyError, TypeError):
        return str(answer.status)


def window_stats(samples: list[Sample], window: Window) -> dict[str, Any]:
    """Frames due in the window: sent, answered (200), refused (503 or 429 with Retry-After), refusals without
    Retry-After, answers 500, late (504: not served by the frame's deadline, and told so), lost (anything else: no
    answer, a cut connection, 502, 404 ...), P95 of the answered ones."""
    inside = [sample for sample in samples if window.start <= sample.sent < window.end]
    answered = [sample.latency_ms for sample in inside if sample.status == "200"]
    refused = [sample for sample in inside if sample.status[:3] in ("503", "429")]
    errors = [sample for sample in inside if sample.status[:3] == "500"]
    late = [sample for sample in inside if sample.status[:3] == "504"]
    stats: dict[str, Any] = {
        "seconds": round(min(window.end, max((s.sent for s in inside), default=window.start)) - window.start, 1),
        "sent": len(inside),
        "answered": len(answered),
        "refused": sum(sample.retry_after for sample in refused),
        "refused_without_retry_after": sum(not sample.retry_after for sample in refused),
        "answers_500": len(errors),
        "late": len(late),
        "lost": len(inside) - len(answered) - len(refused) - len(errors) - len(late),
        "not_answered_by_status": _counts(sample.status for sample in inside if sample.status != "200"),
    }
    stats["p95_ms"] = percentiles(answered)["p95"] if answered else None
    return stats


def _counts(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


class Rehearsal:
    def __init__(self, stack: Stack, plan: Plan) -> None:
        self.stack, self.plan = stack, plan
        self.load = Load(stack.url, plan.rate, plan.sessions)
        self.runs: list[FaultRun] = []

    async def run(self) -> dict[str, Any]:
        load = asyncio.create_task(self.load.run())
        try:
            while not self.load.session_ids:  # the sessions exist before the first window opens
                if load.done():
                    await load  # its error, if it failed
                await asyncio.sleep(0.05)
            for name in self.plan.faults:
                await self._fault(name)
        finally:
            self.load.stop()
            await load
        return await asyncio.to_thread(self.report)

    async def _fault(self, name: str) -> None:
        actions: dict[str, Callable[[FaultRun], Awaitable[None]]] = {
            "api": self._kill_api,
            "worker": self._kill_worker,
            "master": self._kill_master,
            "queue": self._freeze_queue,
        }
        before = Window("before", self.load.now())
        await asyncio.sleep(self.plan.window_seconds)
        run = FaultRun(name, before, Window("during", self.load.now()), Window("after", 0))
        before.end = run.during.start
        await actions[name](run)
        await asyncio.sleep(SETTLE_SECONDS)
        run.during.end = run.after.start = self.load.now()
        await asyncio.sleep(self.plan.window_seconds)
        run.after.end = self.load.now()
        self.runs.append(run)
        if self.plan.restore:
            await asyncio.to_thread(self._restore, run)

    async def _kill_api(self, run: FaultRun) -> None:
        """kill -9 api1; until HAProxy has taken it out of rotation."""
        self.stack.kill("api1")
        lb = self.stack.hosts["lb"].address
        await _until(lambda: not haproxy.servers_up(lb)["api1"], 10, "HAProxy kept api1 in rotation")
        run.details["out_of_rotation_after_s"] = round(self.load.now() - run.during.start, 2)

    async def _kill_worker(self, run: FaultRun) -> None:
        """A batch job through HAProxy; kill -9 w1 once the job is under way; until the job completed."""
        frames = _distinct(self.load.frame, self.plan.job_frames)
        job_id = await asyncio.to_thread(_submit_job, self.stack.url, frames)
        with httpx.Client(base_url=self.stack.url, timeout=5) as client:
            job = await _poll_job(client, job_id, lambda job: job["done"] > 0 or job["status"] != "running")
            run.details["job_done_at_kill"] = job["done"]
            self.stack.kill("w1")
            killed_at = self.load.now()
            job = await _poll_job(client, job_id, lambda job: job["status"] in ("completed", "failed", "cancelled"))
        run.details.update(job_status=job["status"], job_frames=job["total"], job_done=job["done"])
        run.details["job_failed"] = job["failed"]
        run.details["job_completed_after_kill_s"] = round(self.load.now() - killed_at, 2)

    async def _kill_master(self, run: FaultRun) -> None:
        """kill -9 the master that holds a session (not REDIS_URL's seed node: the APIs re-discover the cluster from
        it, a name resolving to live nodes in production); until its replica serves every slot."""
        cluster = self.stack.cluster
        assert cluster is not None
        index = await asyncio.to_thread(_master_to_kill, cluster, self.load.session_ids)
        cluster.kill_node(index)
        run.details["killed_node"] = f"r{index + 1}"
        await asyncio.to_thread(cluster.wait_ok, 30)
        run.details["failover_s"] = round(self.load.now() - run.during.start, 2)

    async def _freeze_queue(self, run: FaultRun) -> None:
        """SIGSTOP the queue Redis for freeze_seconds, then SIGCONT."""
        process = self.stack.processes["queue"]
        process.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(self.plan.freeze_seconds)
        finally:
            process.send_signal(signal.SIGCONT)
        run.details["frozen_s"] = self.plan.freeze_seconds

    def _restore(self, run: FaultRun) -> None:
        if run.name == "api":
            self.stack.start_api("api1")
            self.stack.wait_api("api1")
        elif run.name == "worker":
            self.stack.start_worker("w1")
            self.stack.wait_worker("w1")
        elif run.name == "master":
            assert self.stack.cluster is not None
            self.stack.cluster.restart_node(int(run.details["killed_node"][1:]) - 1)
            self.stack.cluster.wait_ok(30)

    def report(self) -> dict[str, Any]:
        samples = self.load.samples
        faults = []
        for run in self.runs:
            windows = {w.name: window_stats(samples, w) for w in (run.before, run.during, run.after)}
            faults.append({"fault": run.name, **windows, "details": run.details})
        whole = window_stats(samples, Window("all", 0))
        by_session = _counts(str(s.session) for s in samples if s.status == "200")
        answered = [by_session.get(str(i), 0) for i in range(len(self.load.session_ids))]
        report = {"plan": self.plan.__dict__, "faults": faults, "total": whole}
        report["sessions"] = {"answered": answered, "recorded": self._recorded(answered)}
        report["goals"] = goals(report)
        return report

    def _recorded(self, answered: list[int]) -> list[int | None]:
        """Each session's frame_count as the service keeps it, once it has settled (writes kept while the session
        store failed over are written when it answers again, the breaker closed): every answered frame must be
        there. Polled until they all are, RECORDED_WITHIN_SECONDS at most."""
        deadline = time.monotonic() + RECORDED_WITHIN_SECONDS
        with httpx.Client(base_url=self.stack.url, timeout=5) as client:
            while True:
                counts: list[int | None] = []
                for session_id in self.load.session_ids:
                    answer = client.get(f"/sessions/{session_id}")
                    counts.append(answer.json()["frame_count"] if answer.status_code == 200 else None)
                if counts == answered or time.monotonic() > deadline:
                    return counts
                time.sleep(0.5)


def _master_to_kill(cluster: RedisCluster, session_ids: list[str]) -> int:
    """The node of the master of the first session off the seed node; any master but the seed if there is none."""
    addresses = [(host.address, port) for host, port in zip(cluster.hosts, cluster.ports, strict=True)]
    with cluster.client() as client:
        for session_id in session_ids:
            owner = client.get_node_from_key(session_key(session_id))
            index = addresses.index((str(owner.host), int(owner.port)))
            if index != 0:
                return index
    return next(index for index in cluster.masters() if index != 0)


def goals(report: dict[str, Any]) -> dict[str, bool]:
    faults = report["faults"]
    outside = [fault[name]["p95_ms"] for fault in faults for name in ("before", "after")]
    worker = [fault["details"] for fault in faults if fault["fault"] == "worker"]
    sessions = report["sessions"]
    return {
        "no_accepted_frame_lost": report["total"]["lost"] == 0 and sessions["answered"] == sessions["recorded"],
        "no_answer_500": report["total"]["answers_500"] == 0,
        "refusals_are_503_with_retry_after": report["total"]["refused_without_retry_after"] == 0,
        "p95_under_150ms_outside_faults": all(p95 is not None and p95 < GOAL_P95_MS for p95 in outside),
        "killed_workers_job_completed": all(d["job_status"] == "completed" and d["job_failed"] == 0 for d in worker),
    }


def _submit_job(url: str, frames: list[bytes]) -> str:
    """A batch job through HAProxy, as a client should send it: a refusal (503 or 429) is waited out as its
    Retry-After says, a bounded number of times."""
    with httpx.Client(base_url=url, timeout=60) as client:
        job_id: str = _sent(client, "/jobs", json={"name": "rehearsal"}).json()["job_id"]
        for start in range(0, len(frames), CHUNK):
            parts = [
                ("file", (f"{start + i}.jpg", f, "image/jpeg")) for i, f in enumerate(frames[start : start + CHUNK])
            ]
            _sent(client, f"/jobs/{job_id}/frames", files=parts)
        _sent(client, f"/jobs/{job_id}/close")
    return job_id


def _sent(client: httpx.Client, path: str, **request: Any) -> httpx.Response:
    for _ in range(30):
        answer = client.post(path, **request)
        if answer.status_code not in (429, 503) or "retry-after" not in answer.headers:
            return answer.raise_for_status()
        time.sleep(float(answer.headers["retry-after"]))
    raise RuntimeError(f"POST {path} refused 30 times")


def _distinct(frame: bytes, count: int) -> list[bytes]:
    """`count` frames that differ in bytes (so the result cache answers none) and decode alike: bytes after a
    JPEG's end marker are ignored by decoders."""
    return [frame + index.to_bytes(4, "big") for index in range(count)]


async def _poll_job(client: httpx.Client, job_id: str, condition: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        job: dict[str, Any] = (await asyncio.to_thread(client.get, f"/jobs/{job_id}")).json()
        if condition(job):
            return job
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} stuck: {job}")
        await asyncio.sleep(0.1)


async def _until(condition: Callable[[], bool], within: float, message: str) -> None:
    deadline = time.monotonic() + within
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            raise RuntimeError(message)
        await asyncio.sleep(0.1)


def run_rehearsal(stack: Stack, plan: Plan) -> dict[str, Any]:
    """Make the hosts, start everything, run the plan, tear everything down (also on failure)."""
    started = time.monotonic()
    try:
        stack.up()
        setup_s = round(time.monotonic() - started, 1)
        return {"setup_s": setup_s, **asyncio.run(Rehearsal(stack, plan).run())}
    finally:
        stack.down()
