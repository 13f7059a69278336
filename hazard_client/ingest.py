"""`hazard ingest DIR`: every image of a folder through one batch job, with progress, a results file and a summary.

Resumable. Next to the results file (`--out`) a state file (`<out>.state`, JSON Lines) records, as they happen,
the job, each accepted chunk (file SHA-256 -> frame id) and each finished result. A run that was interrupted (Ctrl-C,
a lost connection, a killed process) is continued by the same command: files whose SHA-256 has a finished result
are not sent again; frames the job already holds are not sent again while that job still takes frames (otherwise
what it finished is collected and the rest goes to a new job). A completed run writes the results file and removes
the state, so running it again submits the folder anew and the server answers it from its result cache.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import os
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hazard_client.calls import Frame
from hazard_client.client import AsyncHazardClient
from hazard_client.errors import ApiError, HazardError
from hazard_client.feed import Feed
from hazard_client.models import FrameMeta, JobOut, JobResultItem
from hazard_client.progress import Counts, Reporter
from hazard_client.retry import RetryPolicy

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
# Failures another try cannot fix: such a file counts as finished. Others (a deadline, an expired frame, the queue
# down) are sent again by the next run.
PERMANENT_FAILURES = frozenset({"INVALID_IMAGE", "IMAGE_TOO_LARGE", "UNSUPPORTED_MEDIA_TYPE", "MODEL_NOT_FOUND"})
STATE_VERSION = 1
CSV_COLUMNS = (
    "file",
    "sha256",
    "status",
    "error_code",
    "error_message",
    "cached",
    "detections",
    "labels",
    "width",
    "height",
    "model",
    "model_version",
    "job_id",
    "frame_id",
    "detections_json",
)


class UsageError(HazardError):
    """What the user asked for cannot be done as asked (exit code 2)."""


class Stalled(HazardError):
    """The job stopped moving: nothing finished for the stall timeout (exit code 3)."""


@dataclass(frozen=True)
class SourceFile:
    path: Path
    name: str  # relative to the folder, with forward slashes: the frame's filename on the server
    sha256: str
    size: int
    meta: FrameMeta | None = None  # where and when it was taken (EXIF, a track); None: nothing known
    video_time: float | None = None  # a frame sampled from a video: seconds into it (the file is its JPEG)

    @property
    def key(self) -> str:
        """What the state and the results are keyed by: the file's hash, and the frame's time in a video."""
        return self.sha256 if self.video_time is None else f"{self.sha256}@{self.video_time:.3f}"


@dataclass(frozen=True)
class Settings:
    folder: Path
    out: Path
    pattern: str = "*"
    concurrency: int = 2
    chunk_frames: int = 16
    chunk_bytes: int = 16 * 1024 * 1024
    options: dict[str, Any] = field(default_factory=dict)  # conf, iou, max_det, model: the job's
    sampling: dict[str, Any] = field(default_factory=dict)  # a drive's: how its frames were chosen and placed
    name: str | None = None
    backpressure_wait: float = 600.0  # how long one chunk may wait out the server's backpressure
    stall_seconds: float = 300.0  # no frame finished for this long: give up (exit 3)
    poll_seconds: float = 0.5

    @property
    def state_path(self) -> Path:
        return self.out.with_name(self.out.name + ".state")

    @property
    def out_format(self) -> str:
        suffix = self.out.suffix.lower()
        if suffix in (".jsonl", ".ndjson"):
            return "jsonl"
        if suffix == ".csv":
            return "csv"
        raise UsageError(f"--out {self.out}: name it .jsonl (JSON Lines) or .csv")


@dataclass
class Summary:
    job_ids: list[str]
    files: int
    skipped: int
    done: int
    failed: int
    cached: int
    uploaded: int  # frames this run sent
    reused: int  # files this run did not send: finished or held by the job already
    hazards: Counter[str]  # boxes by label
    failures: Counter[str]
    failed_files: dict[str, list[str]]
    out: Path
    geojson: tuple[Path, int] | None = None  # written: where, and how many hazards it holds
    tracked: dict[str, set[str]] = field(default_factory=dict)  # confirmed hazard ids by label


def scan(folder: Path, pattern: str) -> tuple[list[SourceFile], int]:
    """Images below `folder` matching `pattern` (recursive, sorted), and how many other files were skipped."""
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a directory: pass the folder that holds the frames")
    files: list[SourceFile] = []
    skipped = 0
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        name = path.relative_to(folder).as_posix()
        if not path.relative_to(folder).match(pattern):
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            skipped += 1
            continue
        with path.open("rb") as stream:
            digest = hashlib.file_digest(stream, "sha256").hexdigest()
        files.append(SourceFile(path, name, digest, path.stat().st_size))
    return files, skipped


class State:
    """The state file: JSON Lines appended as things happen, so a run killed at any point leaves it readable (a torn
    last line is ignored). Lines: `start` (folder, options), `job` (a new job), `uploaded` (SHA-256 -> frame id of
    an accepted chunk), `result` (a finished frame's result, by SHA-256)."""

    def __init__(self, path: Path, folder: Path, options: dict[str, Any]) -> None:
        self.path = path
        self.job_id: str | None = None
        self.uploaded: dict[str, str] = {}  # sha256 -> frame id, in job_id
        self.results: dict[str, dict[str, Any]] = {}  # sha256 -> result entry
        self._start = {"kind": "start", "version": STATE_VERSION, "folder": str(folder.resolve()), "options": options}
        if path.exists():
            self._load(self._start)

    def _load(self, start: dict[str, Any]) -> None:
        records = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue  # the line being written when the run was killed
        first = records[0] if records else {}
        if first.get("kind") != "start" or first.get("version") != STATE_VERSION:
            raise UsageError(f"{self.path} is not a state file of this version: delete it to start over")
        if first["folder"] != start["folder"] or first["options"] != start["options"]:
            raise UsageError(
                f"{self.path} belongs to an ingestion of {first['folder']} with options {first['options']}: "
                "run that one again, pass another --out, or delete the state file to start over"
            )
        for record in records[1:]:
            kind = record.get("kind")
            if kind == "job":
                self.job_id, self.uploaded = record["job_id"], {}
            elif kind == "uploaded" and record.get("job_id") == self.job_id:
                self.uploaded.update(record["frames"])
            elif kind == "result":
                self.results[record["sha256"]] = record["result"]

    def _append(self, record: dict[str, Any]) -> None:
        """Written on the first thing worth keeping: a run that never reached the server leaves no state."""
        lines = [record] if self.path.exists() else [self._start, record]
        with self.path.open("a", encoding="utf-8") as stream:
            stream.write("".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines))

    def job(self, job_id: str) -> None:
        self.job_id, self.uploaded = job_id, {}
        self._append({"kind": "job", "job_id": job_id})

    def accepted(self, job_id: str, frames: dict[str, str]) -> None:
        self.uploaded.update(frames)
        self._append({"kind": "uploaded", "job_id": job_id, "frames": frames})

    def result(self, sha256: str, entry: dict[str, Any]) -> None:
        self.results[sha256] = entry
        self._append({"kind": "result", "sha256": sha256, "result": entry})

    def finished(self, sha256: str) -> bool:
        entry = self.results.get(sha256)
        return entry is not None and (entry["status"] == "done" or _code(entry) in PERMANENT_FAILURES)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _code(entry: dict[str, Any]) -> str | None:
    error = entry.get("error")
    return str(error["code"]) if error else None


def _entry(job_id: str, item: JobResultItem) -> dict[str, Any]:
    return {"job_id": job_id, **item.model_dump(mode="json", exclude={"meta", "index"})}


def _local_failure(code: str, message: str) -> dict[str, Any]:
    """A file the server never took (refused in its chunk), recorded the way the server records a failed frame."""
    return {
        "job_id": None,
        "frame_id": None,
        "status": "failed",
        "cached": False,
        "detections": [],
        "image": None,
        "model": None,
        "timings_ms": {},
        "error": {"code": code, "message": message},
    }


def first_error(group: BaseExceptionGroup[Exception]) -> Exception:
    error = group.exceptions[0]
    return first_error(error) if isinstance(error, BaseExceptionGroup) else error


class Ingestion:
    def __init__(
        self, client: AsyncHazardClient, settings: Settings, make_reporter: Callable[[Counts], Reporter]
    ) -> None:
        self.client = client
        self.settings = settings
        self._make_reporter = make_reporter
        self.counts = Counts()
        self.job_ids: list[str] = []
        self.uploaded_now = 0
        self._said_waiting_at = float("-inf")

    async def run(self, files: list[SourceFile] | Feed, skipped: int) -> Summary:
        """Everything `files` holds (a drive's frames as they are decoded) through one job, to the results file."""
        settings = self.settings
        feed = files if isinstance(files, Feed) else Feed(files)
        # A run sampled or placed otherwise is another ingestion: its state is not continued.
        state = State(settings.state_path, settings.folder, {**settings.options, **settings.sampling})
        self.counts = Counts(total=len(feed.by_key))
        self._recount(state, feed, finished_only=True)
        self.report = self._make_reporter(self.counts)
        try:
            await self._process(state, feed)
        finally:
            self.report.close(self.counts)
        summary = self._summary(state, feed.files, skipped)
        write_results(settings.out, settings.out_format, feed.files, state.results)
        state.remove()
        return summary

    async def _process(self, state: State, feed: Feed) -> None:
        if self.counts.processed:
            of = f" of {len(feed.by_key)}" if feed.complete else ""
            self.report.note(f"{self.counts.processed}{of} frames finished in an earlier run: not sent again")
        job = await self._earlier_job(state)
        if job is not None and (job.closed or job.status == "cancelled"):
            self.report.note(f"job {job.job_id} of the earlier run takes no more frames: collecting its results")
            self.counts.uploaded += sum(not state.finished(key) for key in state.uploaded if _known(feed, key))
            await self._follow(state, job.job_id, feed, close=False)
            self._recount(state, feed, finished_only=True)
            job = None
        held = set(state.uploaded) if job is not None else set()  # frames the open job has already
        first = await self._next_to_send(state, feed, held)
        if job is not None:
            sent = sum(not state.finished(key) for key in held if _known(feed, key))
            self.report.note(f"continuing job {job.job_id}: {sent} frames already sent")
            self.counts.uploaded += sent
        elif first is not None:
            job = await self._create_job()
            state.job(job.job_id)
            todo = sum(not state.finished(key) for key in feed.by_key) if feed.complete else None
            self.report.note(f"job {job.job_id}: " + (f"{todo} frames to send" if todo else "frames sent as decoded"))
        if job is not None:
            await self._follow(state, job.job_id, feed, close=True, held=held, first=first)
            self._recount(state, feed, finished_only=False)

    async def _next_to_send(self, state: State, feed: Feed, held: set[str]) -> SourceFile | None:
        while (source := await feed.next()) is not None:
            self.counts.total = len(feed.by_key)
            if not state.finished(source.key) and source.key not in held:
                return source
        self.counts.total = len(feed.by_key)
        return None

    async def _create_job(self) -> JobOut:
        settings, options = self.settings, self.settings.options
        return await self.client.submit_job(
            settings.name or settings.folder.resolve().name,
            conf=options.get("conf"),
            iou=options.get("iou"),
            max_det=options.get("max_det"),
            model=options.get("model"),
        )

    def _recount(self, state: State, feed: Feed, *, finished_only: bool) -> None:
        """Counts from the results collected: finished ones only while failures that may pass are to be sent again.
        While a drive is still being decoded, every result of the state counts (the state is of this drive)."""
        keys = feed.by_key if feed.complete else state.results
        entries = [
            entry
            for key in keys
            if (entry := state.results.get(key)) is not None and (state.finished(key) or not finished_only)
        ]
        self.counts.uploaded = self.counts.processed = len(entries)
        self.counts.failed = sum(entry["status"] == "failed" for entry in entries)
        self.counts.cached = sum(bool(entry["cached"]) for entry in entries)

    async def _earlier_job(self, state: State) -> JobOut | None:
        if state.job_id is None:
            return None
        try:
            return await self.client.job_status(state.job_id)
        except ApiError as exc:
            if exc.code != "JOB_NOT_FOUND":
                raise
            self.report.note(f"job {state.job_id} of the earlier run is gone (expired?): its frames are sent again")
            return None

    async def _follow(
        self,
        state: State,
        job_id: str,
        feed: Feed,
        *,
        close: bool,
        held: set[str] | None = None,
        first: SourceFile | None = None,
    ) -> None:
        """Send `first` and the rest of `feed` (but frames finished or `held` by the job) and close the job while
        following its progress to the end, then collect its results."""
        self.job_ids.append(job_id)
        base = Counts(**vars(self.counts))  # what earlier jobs and runs contributed

        async def send_and_close() -> None:
            if first is not None:
                await self._send(state, job_id, feed, held or set(), first)
            if close:
                await self.client.close_job(job_id)

        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(send_and_close())
                group.create_task(self._watch(job_id, base))
        except ExceptionGroup as failed:  # the first failure is the story; the other tasks were cancelled by it
            raise first_error(failed) from None
        await self._collect(state, job_id, feed.by_key)

    async def _send(self, state: State, job_id: str, feed: Feed, held: set[str], first: SourceFile) -> None:
        settings = self.settings
        again: deque[list[SourceFile]] = deque()  # a refused chunk's rest, sent again
        carry = [first]  # a file taken from the feed that did not fit the chunk before
        pulling = asyncio.Lock()
        policy = RetryPolicy(
            attempts=1_000_000,
            base_delay=0.5,
            max_delay=5.0,
            max_wait=settings.backpressure_wait,
            on_retry=self._waiting,
        )

        async def next_chunk() -> list[SourceFile]:
            """Up to `chunk_frames` files and `chunk_bytes`, as the feed has them (empty: nothing more to send)."""
            if again:
                return again.popleft()
            batch: list[SourceFile] = []
            async with pulling:
                size = 0
                while len(batch) < settings.chunk_frames:
                    source = carry.pop() if carry else await self._next_to_send(state, feed, held)
                    if source is None:
                        break
                    if batch and size + source.size > settings.chunk_bytes:
                        carry.append(source)
                        break
                    batch.append(source)
                    size += source.size
            return batch

        async def send_chunks() -> None:
            while batch := await next_chunk():
                frames = [Frame(source.path.read_bytes(), source.name, _frame_meta(source)) for source in batch]
                try:
                    accepted = await self.client.add_frames(job_id, frames, retry=policy)
                except ApiError as exc:
                    number = exc.details.get("file")
                    if exc.code != "IMAGE_TOO_LARGE" or not isinstance(number, int) or number >= len(batch):
                        raise
                    # One file is over the server's limit and the chunk was refused whole: the file fails, the rest
                    # goes again.
                    state.result(batch[number].key, _local_failure(exc.code, exc.message))
                    self.counts.uploaded += 1
                    if rest := batch[:number] + batch[number + 1 :]:
                        again.appendleft(rest)
                    continue
                state.accepted(job_id, {s.key: f for s, f in zip(batch, accepted.frame_ids, strict=True)})
                self.uploaded_now += len(batch)
                self.counts.uploaded += len(batch)
                self.report.update(self.counts)

        async with asyncio.TaskGroup() as group:
            for _ in range(max(1, settings.concurrency)):
                group.create_task(send_chunks())

    def _waiting(self, error: ApiError, delay: float) -> None:
        """Waiting out the server's refusal (BACKPRESSURE: its workers are behind): said at most every 10 s."""
        now = time.monotonic()
        if now - self._said_waiting_at >= 10:
            self._said_waiting_at = now
            self.report.note(f"the server is busy ({error.code}): waiting, then sending again (every {delay:.0f} s)")

    async def _watch(self, job_id: str, base: Counts) -> None:
        """Follow the job's counters until it has finished; Stalled when nothing finishes for the stall timeout."""
        settings = self.settings
        last_finished, moved_at = -1, time.monotonic()
        while True:
            job = await self.client.job_status(job_id)
            finished = job.done + job.failed
            self.counts.processed = min(self.counts.total, base.processed + finished)  # a chunk sent twice counts once
            self.counts.failed = base.failed + job.failed
            self.counts.cached = base.cached + job.cached
            self.report.update(self.counts)
            if job.finished:
                return
            now = time.monotonic()
            if finished != last_finished:
                last_finished, moved_at = finished, now
            elif job.total > finished and now - moved_at > settings.stall_seconds:
                raise Stalled(
                    f"no frame of job {job_id} finished in {settings.stall_seconds:.0f} s: check that a worker runs "
                    "(`make up` starts one; `hazard health`), then run the same command again to continue"
                )
            await asyncio.sleep(settings.poll_seconds)

    async def _collect(self, state: State, job_id: str, by_sha: dict[str, SourceFile]) -> None:
        """The job's results, by file: a frame id this run recorded, else the frame's file name."""
        frames = {frame: sha for sha, frame in state.uploaded.items()} if state.job_id == job_id else {}
        names = {source.name: sha for sha, source in by_sha.items()}
        async for item in self.client.iter_results(job_id):
            sha = frames.get(item.frame_id) or names.get(item.meta.filename or "")
            if sha is not None and not state.finished(sha):
                state.result(sha, _entry(job_id, item))

    def _summary(self, state: State, files: list[SourceFile], skipped: int) -> Summary:
        hazards: Counter[str] = Counter()
        failures: Counter[str] = Counter()
        failed_files: dict[str, list[str]] = {}
        tracked: dict[str, set[str]] = {}
        done = failed = cached = 0
        for source in files:
            entry = state.results.get(source.key)
            if entry is None:
                state.results[source.key] = entry = _local_failure(
                    "NOT_PROCESSED", "The job ended (cancelled?) before this frame was done; run again to send it."
                )
            if entry["status"] == "done":
                done += 1
                cached += bool(entry["cached"])
                hazards.update(detection["label"] for detection in entry["detections"])
                for detection in (d for d in entry["detections"] if d.get("new_hazard")):  # once per hazard
                    tracked.setdefault(detection["label"], set()).add(detection["hazard_id"])
            else:
                failed += 1
                code = _code(entry) or "FAILED"
                failures[code] += 1
                failed_files.setdefault(code, []).append(source.name)
        return Summary(
            job_ids=self.job_ids,
            files=len(files),
            skipped=skipped,
            done=done,
            failed=failed,
            cached=cached,
            uploaded=self.uploaded_now,
            reused=len(files) - self.uploaded_now,
            hazards=hazards,
            failures=failures,
            failed_files=failed_files,
            out=self.settings.out,
            tracked=tracked,
        )


def write_results(out: Path, fmt: str, files: list[SourceFile], results: dict[str, dict[str, Any]]) -> None:
    """One entry per file, in file order; written to a temporary file first, so `out` is whole or untouched."""
    temporary = out.with_name(f".{out.name}.tmp")
    with temporary.open("w", encoding="utf-8", newline="") as stream:
        if fmt == "jsonl":
            for source in files:
                entry = {"file": source.name, "sha256": source.sha256, **_placed(source), **results[source.key]}
                stream.write(json.dumps(entry, separators=(",", ":")) + "\n")
        else:
            writer = csv.DictWriter(stream, CSV_COLUMNS)
            writer.writeheader()
            for source in files:
                writer.writerow(csv_row(source, results[source.key]))
    os.replace(temporary, out)


def _known(feed: Feed, key: str) -> bool:
    """Is `key` one of the feed's files (while a drive decodes, any key of its state is)?"""
    return key in feed.by_key or not feed.complete


def _frame_meta(source: SourceFile) -> FrameMeta:
    return (source.meta or FrameMeta()).model_copy(update={"filename": source.name})


def _placed(source: SourceFile) -> dict[str, Any]:
    """A drive's frame in the results file: its time in the video and where and when it was taken."""
    placed: dict[str, Any] = {} if source.video_time is None else {"video_time": round(source.video_time, 3)}
    if source.meta is not None:
        placed["meta"] = _frame_meta(source).model_dump(mode="json", exclude_none=True)
    return placed


def csv_row(source: SourceFile, entry: dict[str, Any]) -> dict[str, Any]:
    detections = entry["detections"]
    labels = Counter(detection["label"] for detection in detections)
    error = entry.get("error") or {}
    image = entry.get("image") or {}
    model = entry.get("model") or {}
    return {
        "file": source.name,
        "sha256": source.sha256,
        "status": entry["status"],
        "error_code": error.get("code", ""),
        "error_message": error.get("message", ""),
        "cached": str(bool(entry["cached"])).lower(),
        "detections": len(detections),
        "labels": ";".join(f"{label}:{n}" for label, n in sorted(labels.items())),
        "width": image.get("width", ""),
        "height": image.get("height", ""),
        "model": model.get("name", ""),
        "model_version": model.get("version", ""),
        "job_id": entry.get("job_id") or "",
        "frame_id": entry.get("frame_id") or "",
        "detections_json": json.dumps(detections, separators=(",", ":")),
    }


def summary_lines(summary: Summary) -> list[str]:
    jobs = ", ".join(summary.job_ids) or "none (every frame was finished before)"
    lines = [
        f"frames: {summary.files} (skipped {summary.skipped} files that are not images)",
        f"done: {summary.done} (cached {summary.cached}), failed: {summary.failed}",
        f"sent: {summary.uploaded} frames this run, {summary.reused} not sent again; job: {jobs}",
        "detections: " + (", ".join(f"{label} {n}" for label, n in sorted(summary.hazards.items())) or "none"),
        "hazards: " + (", ".join(f"{label} {len(ids)}" for label, ids in sorted(summary.tracked.items())) or "none"),
    ]
    if summary.failures:
        parts = []
        for code, n in sorted(summary.failures.items()):
            names = summary.failed_files[code]
            shown = ", ".join(names[:3]) + (f", ... {len(names) - 3} more" if len(names) > 3 else "")
            parts.append(f"{code} {n} ({shown})")
        lines.append("failures: " + "; ".join(parts))
    lines.append(f"results: {summary.out}")
    if summary.geojson is not None:
        path, hazards = summary.geojson
        lines.append(f"geojson: {path} ({hazards} located hazards, each counted once)")
    return lines
