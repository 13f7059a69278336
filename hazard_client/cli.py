"""`hazard`: the Hazard Detection API from the command line.

Exit codes: 0 all done, 1 some frames failed, 2 usage error (the command must change), 3 server unreachable or
unavailable (try again later); 130 interrupted (Ctrl-C). Every error is one line on stderr that says what to do.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from itertools import islice
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.table import Table

from hazard_client import __version__
from hazard_client.admin_cli import add_admin_commands
from hazard_client.client import DEFAULT_URL, AsyncHazardClient, HazardClient
from hazard_client.errors import ApiError, ConnectionFailed, HazardError
from hazard_client.feed import Feed
from hazard_client.ingest import (
    Ingestion,
    Settings,
    SourceFile,
    Stalled,
    Summary,
    UsageError,
    scan,
    summary_lines,
)
from hazard_client.models import JobOut
from hazard_client.progress import Counts, Reporter, reporter
from hazard_client.replay import replay
from hazard_client.sources import source_frames

OK, FRAMES_FAILED, USAGE, UNAVAILABLE, INTERRUPTED = 0, 1, 2, 3, 130
HINTS = {
    "JOB_NOT_FOUND": "List the jobs with `hazard jobs list`; a job's results expire (JOB_RESULT_TTL_SECONDS).",
    "JOB_FINISHED": "The job has finished already: there is nothing left to cancel.",
    "JOB_NOT_OPEN": "The job takes no more frames: start a new one.",
    "SESSION_NOT_FOUND": "The session expired or never existed: start a new one.",
    "UNAUTHORIZED": "Pass the operator token with --api-key or HAZARD_API_KEY (the server's ADMIN_TOKEN).",
    "AUTH_REQUIRED": "Pass an API key with --api-key or HAZARD_API_KEY (an operator makes one: `hazard keys create`).",
    "INVALID_API_KEY": "The key is unknown, revoked or expired: ask an operator for a new one (`hazard keys create`).",
    "SCOPE_REQUIRED": "The key lacks the scope named above: ask an operator for a key that has it.",
    "ROLE_REQUIRED": "Your operator account's role does not allow this: ask an operator with the admin role.",
    "ADMIN_DISABLED": "The server has no admin password or token configured: set ADMIN_TOKEN on the server.",
    "MODEL_NOT_FOUND": "List the model versions with `hazard models`.",
    "MODEL_NOT_LOADED": "Load the version first (admin API), or leave --model out to use the active one.",
    "INGEST_DISABLED": "Use `hazard ingest DIR` to send a local folder.",
    "INTERNAL_ERROR": "A server bug: report the request id to the server's operator.",
}


def _one_line(text: str) -> str:
    return " ".join(text.split())


def explain(error: ApiError) -> str:
    hint = HINTS.get(error.code)
    if hint is None and error.code == "VALIDATION_ERROR":
        hint = f"Check the command's options ({json.dumps(error.details, separators=(',', ':'))[:300]})."
    if hint is None:
        hint = (
            "Try again later; `hazard health` shows what is down."
            if error.unavailable
            else "Check the command's arguments (`hazard COMMAND --help`)."
        )
    return _one_line(
        f"error: the server answered {error.code} ({error.status}): {error.message} "
        f"[request {error.request_id}]. {hint}"
    )


# --- commands ----------------------------------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> HazardClient:
    return HazardClient(args.server, timeout=args.timeout, api_key=args.api_key)


def _stdout(args: argparse.Namespace) -> Console:
    console = Console()
    return console if console.is_terminal else Console(width=160)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def cmd_detect(args: argparse.Namespace) -> int:
    paths = [Path(name) for name in args.files]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise UsageError(f"no such file: {', '.join(missing)}; pass image files (JPEG, PNG or WebP)")
    rows: list[dict[str, Any]] = []
    with _client(args) as client:
        session = client.create_session({"client": "hazard-cli"})
        try:
            for path in paths:
                try:
                    answer = client.detect(
                        session.session_id, path, conf=args.conf, iou=args.iou, max_det=args.max_det, model=args.model
                    )
                except ApiError as error:
                    if error.unavailable:
                        raise
                    rows.append({"file": str(path), "error": {"code": error.code, "message": error.message}})
                    continue
                rows.append({"file": str(path), **answer.model_dump(mode="json")})
        finally:
            client.end_session(session.session_id)
    if args.json:
        _print_json(rows)
    else:
        table = Table("file", "detections", "hazards", "infer ms", "model", title=f"session {session.session_id}")
        for row in rows:
            if "error" in row:
                table.add_row(row["file"], "-", f"failed: {row['error']['code']}: {row['error']['message']}", "", "")
                continue
            found = ", ".join(f"{d['label']} {d['confidence']:.2f}" for d in row["detections"]) or "none"
            timings, model = row["timings_ms"], row["model"]
            table.add_row(
                row["file"], str(len(row["detections"])), found, f"{timings.get('infer', 0):.1f}", model["name"]
            )
        _stdout(args).print(table)
    return FRAMES_FAILED if any("error" in row for row in rows) else OK


def cmd_ingest(args: argparse.Namespace) -> int:
    """A folder of images (placed by their EXIF GPS or by --track), or drives: a video file, or a folder of them."""
    path = Path(args.dir)
    from hazard_client.drives.video import VIDEO_SUFFIXES  # light: PyAV loads only when a video is opened

    is_video = path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES
    if is_video or (path.is_dir() and _has_videos(path, args.pattern)):
        from hazard_client.drives.command import ingest_drives

        return ingest_drives(args, path)
    _refuse_drive_options(args)
    folder = path
    out = Path(args.out) if args.out else Path(f"{folder.resolve().name}-results.jsonl")
    settings = ingest_settings(args, folder, out, args.name)
    settings.out_format  # noqa: B018 - refuses a name that is neither .jsonl nor .csv, before any work
    files, skipped = scan(folder, args.pattern)
    if not files:
        raise UsageError(
            f"no images in {folder} matching {args.pattern!r} (.jpg, .jpeg, .png, .webp): "
            "check the folder and --pattern"
        )
    from hazard_client.drives.photos import photo_lines, place_photos
    from hazard_client.drives.readers import read_track

    track = read_track(Path(args.track)) if args.track else None
    files, placed = place_photos(files, track, args.offset or 0.0)
    intro = f"ingest: {len(files)} images in {folder} ({skipped} other files skipped); results to {out}"
    summary = run_ingestion(args, settings, files, skipped, [intro])
    for line in [*summary_lines(summary), *photo_lines(placed, track)]:
        print(line)
    return FRAMES_FAILED if summary.failed else OK


def _has_videos(folder: Path, pattern: str) -> bool:
    from hazard_client.drives.command import find_videos

    return bool(find_videos(folder, pattern))


def _refuse_drive_options(args: argparse.Namespace) -> None:
    """Options that only mean something for a video."""
    given = [name for name, value in (("--sync", args.sync), ("--start", args.start), ("--fps", args.fps)) if value]
    given += ["--every-m"] if args.every_m is not None else []
    if given:
        raise UsageError(f"{', '.join(given)}: for videos only; {args.dir} holds images (photos use --track, --offset)")


def ingest_settings(
    args: argparse.Namespace, source: Path, out: Path, name: str | None, sampling: dict[str, Any] | None = None
) -> Settings:
    options = {"conf": args.conf, "iou": args.iou, "max_det": args.max_det, "model": args.model}
    return Settings(
        folder=source,
        out=out,
        pattern=args.pattern,
        concurrency=args.concurrency,
        chunk_frames=args.chunk,
        options={key: value for key, value in options.items() if value is not None},
        sampling=sampling or {},
        name=name,
        backpressure_wait=args.wait,
        stall_seconds=args.stall_timeout,
    )


def run_ingestion(
    args: argparse.Namespace, settings: Settings, files: list[SourceFile] | Feed, skipped: int, intro: list[str]
) -> Summary:
    """One job through `Ingestion`, then (--geojson) the job's hazards as GeoJSON beside the results."""
    args.resume_state = settings.state_path
    errors = Console(stderr=True, soft_wrap=True)

    def make_reporter(counts: Counts) -> Reporter:
        return reporter(errors, counts, args.progress_every)

    async def run() -> Summary:
        connections = args.concurrency + 2  # the uploads, and the progress poll beside them
        async with AsyncHazardClient(
            args.server, timeout=args.timeout, api_key=args.api_key, max_connections=connections
        ) as client:
            await client.live()  # a server that is not there is one line and exit 3, before anything is shown
            for line in intro:
                errors.print(line, markup=False, highlight=False)
            summary = await Ingestion(client, settings, make_reporter).run(files, skipped)
            if args.geojson is not None and summary.job_ids:
                target = Path(args.geojson) if args.geojson else settings.out.with_suffix(".geojson")
                collection = await client.job_hazards_geojson(summary.job_ids[-1])
                target.write_text(json.dumps(collection, indent=1) + "\n", encoding="utf-8")
                summary.geojson = (target, len(collection.get("features") or []))
            return summary

    return asyncio.run(run())


def cmd_stream(args: argparse.Namespace) -> int:
    say = Console(highlight=False, soft_wrap=True)

    async def run() -> Counter[str]:
        async with AsyncHazardClient(args.server, timeout=args.timeout, api_key=args.api_key) as client:
            session = await client.create_session({"client": "hazard-cli", "source": args.source[:200]})
            try:
                async with client.stream(session.session_id) as stream:
                    frames = islice(source_frames(args.source), args.max_frames)
                    return await replay(stream, frames, args.realtime, args.fps, say.print)
            finally:
                await client.end_session(session.session_id)

    counts = asyncio.run(run())
    say.print(", ".join(f"{name} {number}" for name, number in sorted(counts.items())))
    return FRAMES_FAILED if counts["error"] else OK


def _job_row(job: JobOut) -> list[str]:
    return [
        job.job_id,
        job.name or "",
        job.status,
        f"{job.done + job.failed}/{job.total}",
        str(job.failed),
        str(job.cached),
        str(job.detections),
        str(job.hazards),
        job.created_at.strftime("%Y-%m-%d %H:%M:%S"),
    ]


def _jobs_table(jobs: Sequence[JobOut]) -> Table:
    table = Table("job", "name", "status", "finished", "failed", "cached", "detections", "hazards", "created (UTC)")
    for job in jobs:
        table.add_row(*_job_row(job))
    return table


def cmd_jobs(args: argparse.Namespace) -> int:
    if args.action == "list":
        if args.job_id is not None:
            raise UsageError(f"`hazard jobs list` takes no job id (got {args.job_id}); use `hazard jobs status ID`")
        return cmd_jobs_list(args)
    if args.job_id is None:
        raise UsageError(f"`hazard jobs {args.action}` needs the job's id: `hazard jobs {args.action} ID`")
    return JOB_ACTIONS[args.action](args)


def cmd_jobs_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        jobs = client.list_jobs(args.limit)
    if args.json:
        _print_json([job.model_dump(mode="json") for job in jobs])
    else:
        _stdout(args).print(_jobs_table(jobs))
    return OK


def cmd_jobs_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.job_status(args.job_id)
    if args.json:
        _print_json(job.model_dump(mode="json"))
    else:
        _stdout(args).print(_jobs_table([job]))
    return FRAMES_FAILED if job.failed else OK


def cmd_jobs_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.cancel_job(args.job_id)
    print(f"job {job.job_id} cancelled: {job.done} done, {job.failed} failed of {job.total}; the rest was dropped")
    return OK


def cmd_jobs_results(args: argparse.Namespace) -> int:
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout  # noqa: SIM115 - closed below
    failed = 0
    try:
        with _client(args) as client:
            for item in client.iter_results(args.job_id):
                failed += item.status == "failed"
                out.write(item.model_dump_json() + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    return FRAMES_FAILED if failed else OK


JOB_ACTIONS: dict[str, Callable[[argparse.Namespace], int]] = {
    "list": cmd_jobs_list,
    "status": cmd_jobs_status,
    "cancel": cmd_jobs_cancel,
    "results": cmd_jobs_results,
}


def cmd_map_export(args: argparse.Namespace) -> int:
    filters = {"bbox": args.bbox, "status": args.status, "label": args.label, "since": args.since}
    with _client(args) as client:
        body = client.export_hazards(args.format, **filters)
    Path(args.out).write_bytes(body)
    print(f"wrote {len(body)} bytes of {args.format} to {args.out}")
    return OK


def cmd_health(args: argparse.Namespace) -> int:
    """0 when ready (failing deep checks are shown: a dead upload store degrades, it does not stop detection),
    3 when not ready or not there."""
    with _client(args) as client:
        client.live()
        ready = client.ready()
        deep = client.deep()
    checks = deep.checks
    failing = [name for name, check in vars(checks).items() if not check.ok]
    if args.json:
        _print_json({"live": True, "ready": ready.model_dump(mode="json"), "deep": deep.model_dump(mode="json")})
    else:
        table = Table("check", "status", "latency ms", "detail", title=args.server)
        table.add_row("live", "ok", "", "")
        reasons = "; ".join(ready.reasons) or "-"
        table.add_row("ready", "ok" if ready.ready else "NOT READY", "", f"phase {ready.phase}; {reasons}")
        inference = checks.inference
        found = ", ".join(inference.found_labels or [])
        table.add_row(
            "inference",
            _ok(inference.ok),
            _ms(inference.latency_ms),
            inference.reason or f"model {inference.model}, found {found}",
        )
        redis = checks.redis
        table.add_row("redis", _ok(redis.ok), _ms(redis.latency_ms), redis.reason or f"breaker {redis.breaker}")
        storage = checks.storage
        detail = storage.reason or f"{storage.store}, {storage.queued} queued, {storage.spooled} spooled"
        table.add_row("storage", _ok(storage.ok), _ms(storage.latency_ms), detail)
        _stdout(args).print(table)
    if not ready.ready:
        return _warn(
            f"not ready: {'; '.join(ready.reasons)}. See the server's log; `make run` restarts it.", UNAVAILABLE
        )
    if failing:
        return _warn(f"ready, but deep checks fail: {', '.join(failing)} (see the table above)", OK)
    return OK


def _warn(message: str, code: int) -> int:
    Console(stderr=True).print(_one_line(message), markup=False, highlight=False, soft_wrap=True)
    return code


def _ok(ok: bool) -> str:
    return "ok" if ok else "FAIL"


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def cmd_models(args: argparse.Namespace) -> int:
    if not args.api_key:
        raise UsageError(
            "`hazard models` needs an operator credential: pass --api-key or set HAZARD_API_KEY (ADMIN_TOKEN)"
        )
    with _client(args) as client:
        overview = client.models()
    if args.json:
        _print_json(overview.model_dump(mode="json"))
        return OK
    versions = Table("version", "state", "active", "memory MB", "load s", "reason", title="model versions")
    for version in overview.versions:
        memory = f"{version.loaded_mb:.0f}" if version.loaded_mb is not None else f"~{version.estimated_mb:.0f}"
        load = f"{version.load_seconds:.1f}" if version.load_seconds is not None else ""
        versions.add_row(
            version.name, version.state, "yes" if version.active else "", memory, load, version.reason or ""
        )
    processes = Table("process", "status", "active", "versions", title="fleet")
    for process_id, process in sorted(overview.processes.items()):
        states = ", ".join(f"{name} {state}" for name, state in sorted(process.models.items()))
        processes.add_row(process_id, process.status, process.active or "", states)
    console = _stdout(args)
    console.print(versions)
    console.print(processes)
    counts = Counter(process.status for process in overview.processes.values())
    console.print(f"desired: {json.dumps(overview.desired)}; processes: {dict(counts)}", markup=False, highlight=False)
    return OK


# --- parser and main ---------------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--server",
        default=os.environ.get("HAZARD_SERVER", DEFAULT_URL),
        help="the API's base URL (env HAZARD_SERVER; default %(default)s)",
    )
    common.add_argument(
        "--api-key",
        default=os.environ.get("HAZARD_API_KEY"),
        help="your API key, sent as `Authorization: Bearer` by every command; for `models`, `keys` and `operators` "
        "an operator credential (the server's ADMIN_TOKEN) (env HAZARD_API_KEY)",
    )
    common.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for one answer (default 30)")
    detect_options = argparse.ArgumentParser(add_help=False)
    detect_options.add_argument("--conf", type=float, help="confidence threshold (server default 0.25)")
    detect_options.add_argument("--iou", type=float, help="NMS IoU threshold (server default 0.45)")
    detect_options.add_argument("--max-det", type=_positive_int, help="detections per frame at most")
    detect_options.add_argument("--model", help="a model version (default: the active one)")
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", help="print JSON instead of a table")

    parser = argparse.ArgumentParser(
        prog="hazard",
        description="Road hazard detection from the command line.",
        epilog="Exit codes: 0 all done, 1 some frames failed, 2 usage error, 3 server unreachable or unavailable.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    detect = commands.add_parser(
        "detect", parents=[common, detect_options, output], help="detect hazards on image files (one session)"
    )
    detect.add_argument("files", nargs="+", metavar="FILE")
    detect.set_defaults(run=cmd_detect)

    ingest = commands.add_parser(
        "ingest",
        parents=[common, detect_options],
        help="send a folder of frames as a batch job (resumable)",
        description="Send every image below DIR as one batch job, show progress, write a results file and a summary. "
        "Interrupted, the same command with the same --out continues where it stopped.",
    )
    ingest.add_argument("dir", metavar="DIR")
    ingest.add_argument("--pattern", default="*", help="only files whose path matches this glob (e.g. '*.jpg')")
    ingest.add_argument("--out", help="results file, .jsonl or .csv (default: <DIR name>-results.jsonl)")
    ingest.add_argument("--concurrency", type=_positive_int, default=2, help="chunks uploading at once (default 2)")
    ingest.add_argument("--chunk", type=_positive_int, default=16, help="frames per upload request (default 16)")
    ingest.add_argument("--name", help="the job's name (default: the folder's)")
    ingest.add_argument(
        "--wait", type=float, default=600.0, help="seconds one chunk may wait out server backpressure (default 600)"
    )
    ingest.add_argument(
        "--stall-timeout", type=float, default=300.0, help="give up when no frame finishes for this long (default 300)"
    )
    ingest.add_argument(
        "--progress-every", type=float, default=5.0, help="seconds between progress lines when not a terminal"
    )
    drives = ingest.add_argument_group(
        "drives and photos",
        "DIR may be a video (MP4/MOV, H.264/H.265) or a folder of them, each with its GPS track beside it by name "
        "(drive1.mp4 + drive1.gpx, .nmea, .log or .csv); one job per video. Photos are placed by their EXIF GPS.",
    )
    drives.add_argument("--track", help="the GPS track (GPX, NMEA, CSV) of one video, or of a folder of photos")
    drives.add_argument("--offset", type=float, help="seconds to add to the video's (camera's) clock to get GPS time")
    drives.add_argument(
        "--sync",
        action="append",
        metavar="VIDEO_TIME=GPS_TIME",
        help="a moment on both clocks (seconds into the video, or mm:ss, = an ISO-8601 time); repeat: offset and "
        "drift are fit through the pairs",
    )
    drives.add_argument("--start", help="the video's first frame on its own clock (ISO-8601), over its creation_time")
    sampling = drives.add_mutually_exclusive_group()
    sampling.add_argument("--every-m", type=float, help="one frame every this many metres travelled (default 2)")
    sampling.add_argument("--fps", type=float, help="frames per second of video instead")
    drives.add_argument(
        "--geojson",
        nargs="?",
        const="",
        metavar="PATH",
        help="write the job's hazards as GeoJSON (default: beside the results file, .geojson)",
    )
    ingest.set_defaults(run=cmd_ingest)

    jobs = commands.add_parser(
        "jobs",
        parents=[common, output],
        help="list, inspect or cancel batch jobs, or fetch their results",
        usage="hazard jobs [list | status ID | cancel ID | results ID] [options]",
    )
    jobs.add_argument("action", nargs="?", choices=tuple(JOB_ACTIONS), default="list")
    jobs.add_argument("job_id", nargs="?", metavar="ID")
    jobs.add_argument("--limit", type=_positive_int, default=20, help="list: how many (newest first)")
    jobs.add_argument("--out", help="results: write the JSON Lines to this file instead of stdout")
    jobs.set_defaults(run=cmd_jobs)

    stream = commands.add_parser(
        "stream",
        parents=[common],
        help="replay a folder of images or a video over one live stream; print hazards as they are confirmed",
    )
    stream.add_argument("source", metavar="SOURCE", help="a folder of images, a video file, a camera, an rtsp:// URL")
    stream.add_argument("--realtime", action="store_true", help="send at the source's pace (newest frame first)")
    stream.add_argument("--fps", type=float, default=5.0, help="a folder's pace with --realtime (default 5)")
    stream.add_argument(
        "--max-frames", type=int, metavar="N", help="stop after N frames (a camera or an rtsp:// source never ends)"
    )
    stream.set_defaults(run=cmd_stream)

    hazard_map = commands.add_parser("map", help="the hazard registry").add_subparsers(
        dest="map_command", required=True
    )
    export = hazard_map.add_parser("export", parents=[common], help="the registry's hazards as GeoJSON, CSV or Open311")
    export.add_argument("--format", choices=("geojson", "csv", "open311"), default="geojson")
    export.add_argument("--bbox", help="minLon,minLat,maxLon,maxLat")
    export.add_argument("--status", help="open, verified, rejected, suspected_fixed or closed")
    export.add_argument("--label", help="only this class")
    export.add_argument("--since", help="last reported at or after (RFC 3339)")
    export.add_argument("--out", required=True, metavar="FILE")
    export.set_defaults(run=cmd_map_export)

    health = commands.add_parser("health", parents=[common, output], help="live, ready and deep checks")
    health.set_defaults(run=cmd_health)
    models = commands.add_parser("models", parents=[common, output], help="the fleet's model versions (admin token)")
    models.set_defaults(run=cmd_models)
    add_admin_commands(commands, [common, output])
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # a usage error exits 2 here, with argparse's message
    args.resume_state = None
    command: Callable[[argparse.Namespace], int] = args.run
    say = Console(stderr=True, soft_wrap=True, highlight=False)

    def fail(message: str, code: int, resumable: bool = False) -> int:
        state: Path | None = args.resume_state
        hint = ""
        if resumable and state is not None and state.exists():
            hint = f" The state is kept in {state}: run the same command again to continue."
        say.print(_one_line(message + hint), markup=False)
        return code

    try:
        return command(args)
    except UsageError as error:
        return fail(f"error: {error.message}", USAGE)
    except ConnectionFailed as error:
        return fail(
            f"error: {error.message} ({error.url}). Check that the server runs (`make run`) and that --server or "
            "HAZARD_SERVER points at it.",
            UNAVAILABLE,
            resumable=True,
        )
    except Stalled as error:
        return fail(f"error: {error.message}", UNAVAILABLE)
    except ApiError as error:
        return fail(explain(error), UNAVAILABLE if error.unavailable else USAGE, resumable=error.unavailable)
    except HazardError as error:
        return fail(f"error: {error.message}", USAGE)
    except KeyboardInterrupt:
        return fail("interrupted.", INTERRUPTED, resumable=True)


def main() -> NoReturn:
    sys.exit(run())
