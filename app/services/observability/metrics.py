"""The one metrics registry and every metric the service exports.

One instance per app (tests build several apps in one process). The README recommends a single
uvicorn worker per container (OpenVINO already uses every core), so no multiprocess mode is needed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.services.inference.types import PoolStats
from app.services.observability.latency_window import LatencyWindow

# Dense around the 150 ms P95 target, so its quantile estimate is sharp.
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0)
STAGE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0)
# A model's compile is seconds (tens on a cold cache, near zero on a warm one); its warm-up and probe, fractions.
MODEL_LOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
REDIS_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
BREAKER_STATES = {"closed": 0, "half-open": 1, "open": 2}
DETECT_ROUTE = "/detect/{session_id}"  # the route template the request middleware records


class _PoolCollector(Collector):
    """Reads the inference pool's counters at scrape time, so the hot path pays nothing for them."""

    def __init__(self, read_stats: Callable[[], PoolStats | None]) -> None:
        self._read_stats = read_stats

    def collect(self) -> Iterator[Metric]:
        stats = self._read_stats()
        if stats is None:
            return
        yield GaugeMetricFamily("hazard_inference_pool_size", "Infer requests in the pool.", value=stats.size)
        yield GaugeMetricFamily(
            "hazard_inference_queue_depth", "Requests admitted, not yet inferred.", value=stats.queued
        )
        yield GaugeMetricFamily("hazard_inference_in_flight", "Inferences running now.", value=stats.in_flight)
        yield CounterMetricFamily(
            "hazard_inference_rejected",
            "Requests refused: queue full, or an expected wait past the deadline.",
            value=stats.rejected,
        )
        yield CounterMetricFamily("hazard_inference_expired", "Requests dropped: deadline passed.", value=stats.expired)
        yield CounterMetricFamily("hazard_inference_completed", "Inferences completed.", value=stats.completed)
        yield CounterMetricFamily(
            "hazard_inference_solo",
            "Of the inferences completed, those run alone on every core (ADAPTIVE: a frame found the engine idle).",
            value=stats.solo,
        )


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # process_* (CPU seconds, resident memory, open and maximum file descriptors, start time) and python_info.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._add_latencies(self.registry)
        self._add_detection(self.registry)
        self._add_uploads(self.registry)
        self._add_models_and_jobs(self.registry)
        self._add_streams(self.registry)
        # The control center's live P50/P95 chart of this process's /detect answers (exact, over recent minutes).
        self.recent_detect = LatencyWindow(DETECT_ROUTE)

    def _add_latencies(self, r: CollectorRegistry) -> None:
        self.request_latency = Histogram(
            "hazard_http_request_duration_seconds",
            "HTTP request latency.",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_latency = Histogram(
            "hazard_detect_stage_duration_seconds",
            "Detection latency by stage and model version.",
            ["stage", "model"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.redis_latency = Histogram(
            "hazard_redis_command_duration_seconds",
            "Redis round trips by operation.",
            ["operation", "outcome"],
            buckets=REDIS_BUCKETS,
            registry=r,
        )

    def _add_detection(self, r: CollectorRegistry) -> None:
        self.detections = Counter(
            "hazard_detections", "Hazards detected, by label and model version.", ["label", "model"], registry=r
        )
        self.new_hazards = Counter(
            "hazard_new_hazards",
            "Hazards confirmed by a session's frames (its track reached TRACK_MIN_HITS), by label.",
            ["label"],
            registry=r,
        )
        self.frames = Counter(
            "hazard_frames", "Frames served, by session mode and model version.", ["mode", "model"], registry=r
        )
        self.active_sessions = Gauge(
            "hazard_active_sessions",
            "Sessions neither ended nor expired, in all of Redis (every replica exports the same number: "
            "aggregate with max(), not sum()); refreshed at most every ACTIVE_SESSIONS_REFRESH_SECONDS.",
            registry=r,
        )
        self.breaker_state = Gauge(
            "hazard_breaker_state", "Circuit state: 0 closed, 1 half-open, 2 open.", ["dependency"], registry=r
        )
        self.pending_writes = Gauge(
            "hazard_session_pending_writes", "History writes kept while Redis is down.", registry=r
        )
        self.pending_writes_lost = Gauge(
            "hazard_session_pending_writes_lost",
            "Kept history writes given up since start: buffer_full (pushed out), session_gone (found no session).",
            ["reason"],
            registry=r,
        )

    def _add_uploads(self, r: CollectorRegistry) -> None:
        self.uploads = Counter("hazard_uploads", "Annotated frame uploads, by outcome.", ["outcome"], registry=r)
        self.upload_spool = Gauge("hazard_upload_spool_files", "Uploads waiting in the spool.", registry=r)
        self.upload_disk_errors = Counter(
            "hazard_upload_disk_errors",
            "Writes of annotated frames the disk refused (full, read-only), by directory: spool or storage.",
            ["directory"],
            registry=r,
        )

    def _add_models_and_jobs(self, r: CollectorRegistry) -> None:
        self.model_info = Info("hazard_model", "The active detection model version.", registry=r)
        self.jobs = Counter("hazard_jobs", "Batch jobs, by the status they reached.", ["status"], registry=r)
        self.queued_frames = Counter(
            "hazard_queued_frames",
            "Frames through the job queue, by priority and outcome.",
            ["priority", "outcome"],
            registry=r,
        )
        self.queue_depth = Gauge("hazard_queue_depth", "Frames waiting in the job queue.", ["priority"], registry=r)
        self.queue_wait = Histogram(
            "hazard_queue_wait_seconds",
            "Time a frame waited in the job queue before a worker took it.",
            ["priority"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.result_cache = Counter("hazard_result_cache", "Result cache lookups, by outcome.", ["outcome"], registry=r)
        self.model_ready = Gauge("hazard_model_ready", "1 when an active model is compiled and warm.", registry=r)
        self.model_state = Gauge(
            "hazard_model_state", "1 for each version's current state.", ["model", "state"], registry=r
        )
        self.model_swaps = Counter(
            "hazard_model_swaps",
            "Engines put in service as the active one (the first at start, each activation, each reload), by version.",
            ["model"],
            registry=r,
        )
        self.model_load_seconds = Histogram(
            "hazard_model_load_seconds",
            "Loading a version, by phase: compile (read and compile), warm (warm-up inferences), probe (the probe "
            "frame).",
            ["model", "phase"],
            buckets=MODEL_LOAD_BUCKETS,
            registry=r,
        )

    def _add_streams(self, r: CollectorRegistry) -> None:
        self.streams_open = Gauge("hazard_streams_open", "WebSocket frame streams open in this process.", registry=r)
        self.streams_refused = Counter(
            "hazard_streams_refused",
            "Streams refused at the door, by reason: key, scope, full (the process), key_full (the key's streams).",
            ["reason"],
            registry=r,
        )
        self.stream_frames_received = Counter(
            "hazard_stream_frames_received", "Frame messages received over streams.", registry=r
        )
        self.stream_frames_answered = Counter(
            "hazard_stream_frames_answered",
            "Stream frames answered, by outcome: detected or error.",
            ["outcome"],
            registry=r,
        )
        self.stream_frames_dropped = Counter(
            "hazard_stream_frames_dropped",
            "Stream frames not served, by reason: superseded (a newer frame replaced it), late, overloaded.",
            ["reason"],
            registry=r,
        )
        self.stream_send_lag = Histogram(
            "hazard_stream_send_lag_seconds",
            "From a stream frame's answer being ready to its message handed to the connection (a slow reader's cost).",
            buckets=STAGE_BUCKETS,
            registry=r,
        )

    def watch_pool(self, read_stats: Callable[[], PoolStats | None]) -> None:
        self.registry.register(_PoolCollector(read_stats))

    def set_model_states(self, states: dict[str, str], active: dict[str, str] | None) -> None:
        """Every version's state (one series per state, 1 for the current one) and the active version's info."""
        self.model_state.clear()
        for model, state in states.items():
            self.model_state.labels(model, state).set(1)
        self.model_ready.set(1 if active else 0)
        if active:
            self.model_info.info(active)

    def set_breaker_state(self, dependency: str, state: str) -> None:
        self.breaker_state.labels(dependency).set(BREAKER_STATES.get(state, 2))

    def render(self) -> bytes:
        return generate_latest(self.registry)
