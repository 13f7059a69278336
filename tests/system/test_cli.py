"""The `hazard` command line against a real server process (real Redis, real model, embedded worker), run as a
separate process where the issue says so: a folder ingested with progress, a results file and a summary; an
interrupted run resumed; backpressure waited out; a server that is not there; the exit codes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hazard_client.cli import run
from tests.support.images import encode, scene
from tests.support.redis_process import RedisProcess, free_port
from tests.support.server import ROOT, Server
from tests.support.waiting import wait_until

# About 10 frames of 320x180: chunks past it wait for the workers (429 BACKPRESSURE, Retry-After 1 s).
PENDING_LIMIT = 160 * 1024
ADMIN_TOKEN = "cli-test-operator-token-0123456789"
GOOD_FRAMES = 38


@pytest.fixture(scope="module")
def server(redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    process = Server(
        redis_server.url,
        tmp_path_factory.mktemp("cli-api"),
        JOB_PENDING_BYTES_LIMIT=str(PENDING_LIMIT),
        ADMIN_TOKEN=ADMIN_TOKEN,
        MODEL_WARMUP_REQUESTS="1",
    )
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def make_folder(path: Path, first_seed: int, good: int = GOOD_FRAMES) -> Path:
    """`good` generated frames (half in a sub-folder), one corrupt JPEG, two files that are not images."""
    (path / "day2").mkdir(parents=True)
    for number in range(good):
        where = path / "day2" if number % 2 else path
        where.joinpath(f"frame{number:03d}.jpg").write_bytes(encode(scene(first_seed + number, (320, 180)).image))
    path.joinpath("corrupt.jpg").write_bytes(encode(scene(first_seed - 1, (320, 180)).image)[:300])
    path.joinpath("notes.txt").write_text("drive 2026-01-01\n")
    path.joinpath("day2", "gps.csv").write_text("t,lat,lon\n")
    return path


def hazard(server_url: str, *args: str, cwd: Path) -> subprocess.Popen[str]:
    """`hazard ARGS --server URL` as its own process, stdout and stderr piped (not a terminal)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HAZARD_SERVER": server_url}
    return subprocess.Popen(
        [sys.executable, "-m", "hazard_client", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], within: float = 60) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=within)
    return process.returncode, stdout, stderr


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- a folder, start to end ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ingested(server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run of `hazard ingest` over a fresh folder, then the same command again once it has finished."""
    base = tmp_path_factory.mktemp("ingest")
    folder = make_folder(base / "drive", first_seed=1000)
    out = base / "results.jsonl"
    args = ("ingest", str(folder), "--out", str(out), "--progress-every", "0.2")
    first = finish(hazard(server.base_url, *args, cwd=base))
    first_results = out.read_text()
    again = finish(hazard(server.base_url, *args, cwd=base))
    return {"folder": folder, "out": out, "first": first, "first_results": first_results, "again": again}


def test_ingest_writes_one_result_per_image_and_a_matching_summary(ingested: dict[str, Any]) -> None:
    code, stdout, stderr = ingested["first"]
    assert code == 1, stderr  # some frames failed
    results = [json.loads(line) for line in ingested["first_results"].splitlines()]
    assert len(results) == GOOD_FRAMES + 1 == len({r["file"] for r in results})  # the two non-images skipped
    assert Counter(r["status"] for r in results) == {"done": GOOD_FRAMES, "failed": 1}
    (failed,) = [r for r in results if r["status"] == "failed"]
    assert failed["file"] == "corrupt.jpg" and failed["error"]["code"] == "INVALID_IMAGE"
    assert "day2/frame001.jpg" in {r["file"] for r in results}  # recursive, named relative to the folder
    boxes = Counter(d["label"] for r in results for d in r["detections"])
    hazards = Counter(d["label"] for r in results for d in r["detections"] if d["new_hazard"])

    assert f"frames: {GOOD_FRAMES + 1} (skipped 2 files that are not images)" in stdout
    assert f"done: {GOOD_FRAMES} (cached " in stdout and "failed: 1" in stdout
    assert "detections: " + ", ".join(f"{label} {n}" for label, n in sorted(boxes.items())) in stdout
    assert "hazards: " + (", ".join(f"{label} {n}" for label, n in sorted(hazards.items())) or "none") in stdout
    assert "failures: INVALID_IMAGE 1 (corrupt.jpg)" in stdout
    assert not ingested["out"].with_name("results.jsonl.state").exists()  # finished: nothing left to resume


def test_progress_when_not_a_terminal_is_plain_lines(ingested: dict[str, Any]) -> None:
    _, _, stderr = ingested["first"]
    lines = stderr.splitlines()
    assert "\r" not in stderr and "\x1b" not in stderr
    assert all(line.isprintable() for line in lines), lines
    progress = [line for line in lines if line.startswith("progress: ")]
    assert progress and progress[-1].startswith(f"progress: uploaded {GOOD_FRAMES + 1}/{GOOD_FRAMES + 1}, processed")
    assert all("frames/s" in line and "ETA" in line for line in progress)


def test_a_finished_folder_run_again_is_served_from_the_result_cache(ingested: dict[str, Any]) -> None:
    code, stdout, _ = ingested["again"]
    assert code == 1
    assert f"done: {GOOD_FRAMES} (cached {GOOD_FRAMES}), failed: 1" in stdout
    assert ingested["out"].read_text().count("\n") == GOOD_FRAMES + 1


def test_csv_results_have_a_row_per_image(server: Server, ingested: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "results.csv"
    code = run(["ingest", str(ingested["folder"]), "--out", str(out), "--server", server.base_url, "--chunk", "50"])
    assert code == 1
    header, *rows = out.read_text().splitlines()
    assert header.startswith("file,sha256,status,error_code") and len(rows) == GOOD_FRAMES + 1


# --- interrupted, then resumed ------------------------------------------------------------------------------------


def test_an_interrupted_ingest_resumes_without_sending_finished_frames_again(server: Server, tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "drive", first_seed=2000)
    names = {
        hashlib.sha256(p.read_bytes()).hexdigest(): p.relative_to(folder).as_posix() for p in folder.rglob("*.jpg")
    }
    out = tmp_path / "results.jsonl"
    state = tmp_path / "results.jsonl.state"
    args = ("ingest", str(folder), "--out", str(out), "--chunk", "4", "--concurrency", "1")

    def records(kind: str) -> list[dict[str, Any]]:
        lines = state.read_text().splitlines() if state.exists() else []
        return [record for line in lines if (record := json.loads(line))["kind"] == kind]

    first = hazard(server.base_url, *args, cwd=tmp_path)
    wait_until(lambda: len(records("uploaded")) >= 2, "two chunks accepted")
    first.kill()
    first.communicate(timeout=10)
    (job,) = records("job")
    sent_before = {names[sha] for record in records("uploaded") for sha in record["frames"]}
    assert 0 < len(sent_before) < len(names)  # stopped half-way

    code, stdout, stderr = finish(hazard(server.base_url, *args, cwd=tmp_path))
    assert code == 1, stderr
    assert f"continuing job {job['job_id']}" in stderr
    assert f"sent: {len(names) - len(sent_before)} frames this run" in stdout
    results = read_jsonl(out)
    assert sorted(r["file"] for r in results) == sorted(names.values())  # each file once: no duplicates
    assert Counter(r["status"] for r in results) == {"done": GOOD_FRAMES, "failed": 1}

    # What the server received: every frame the first run had sent arrived once; at most the chunk in flight at the
    # kill came twice.
    served = httpx.get(f"{server.base_url}/jobs/{job['job_id']}/results.jsonl", timeout=30).text.splitlines()
    received = Counter(json.loads(line)["meta"]["filename"] for line in served)
    assert all(received[name] == 1 for name in sent_before), received
    total = httpx.get(f"{server.base_url}/jobs/{job['job_id']}", timeout=30).json()["total"]
    assert total == sum(received.values()) <= len(names) + 4
    assert not state.exists()


def test_ingest_waits_out_backpressure_and_completes(server: Server, tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "drive", first_seed=3000, good=24)
    images = sorted(path for path in folder.rglob("*.jpg"))  # the order the CLI sends them in
    # Two chunks of 12 in flight at once (--concurrency 2): more than PENDING_LIMIT together, so one is refused.
    assert sum(path.stat().st_size for path in images[:24]) > PENDING_LIMIT
    out = tmp_path / "results.jsonl"
    args = ("ingest", str(folder), "--out", str(out), "--chunk", "12", "--concurrency", "2")
    code, _, stderr = finish(hazard(server.base_url, *args, cwd=tmp_path))
    assert code == 1, stderr  # the corrupt frame
    assert "the server is busy (BACKPRESSURE): waiting, then sending again" in stderr
    assert Counter(r["status"] for r in read_jsonl(out)) == {"done": 24, "failed": 1}


# --- errors and exit codes ----------------------------------------------------------------------------------------


def test_a_server_that_is_not_there_is_exit_3_and_one_line(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "drive", first_seed=4000, good=2)
    nowhere = f"http://127.0.0.1:{free_port()}"
    out = tmp_path / "results.jsonl"
    code, stdout, stderr = finish(hazard(nowhere, "ingest", str(folder), "--out", str(out), cwd=tmp_path))
    assert code == 3 and stdout == ""
    (line,) = stderr.splitlines()
    assert line.startswith("error: cannot connect to the server") and "--server" in line and nowhere in line
    assert not out.with_name("results.jsonl.state").exists()
    code, _, stderr = finish(hazard(nowhere, "health", cwd=tmp_path))
    assert code == 3 and len(stderr.splitlines()) == 1


def test_usage_errors_are_exit_2_and_say_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["ingest", str(tmp_path / "missing")]) == 2
    assert "is not a directory: pass the folder" in capsys.readouterr().err
    assert run(["ingest", str(tmp_path), "--out", "results.txt"]) == 2
    assert "name it .jsonl (JSON Lines) or .csv" in capsys.readouterr().err
    assert run(["ingest", str(tmp_path)]) == 2
    assert "no images in" in capsys.readouterr().err
    assert run(["jobs", "status"]) == 2
    assert "needs the job's id" in capsys.readouterr().err
    assert run(["detect", str(tmp_path / "none.jpg")]) == 2
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        run(["ingest"])  # argparse: DIR missing
    assert exited.value.code == 2


def test_detect_prints_a_table_or_json_and_exit_1_for_a_bad_frame(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(make_folder(tmp_path / "drive", first_seed=1000, good=1))
    frame, corrupt = "frame000.jpg", "corrupt.jpg"
    assert run(["detect", frame, "--server", server.base_url]) == 0
    table = capsys.readouterr().out
    assert "frame000.jpg" in table and "infer ms" in table
    assert run(["detect", frame, corrupt, "--server", server.base_url, "--json"]) == 1
    answers = json.loads(capsys.readouterr().out)
    assert answers[0]["detections"] is not None and answers[1]["error"]["code"] == "INVALID_IMAGE"


def test_jobs_health_and_models_commands(
    server: Server, ingested: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ["--server", server.base_url]
    job_id = ingested["again"][1].split("job: ")[1].split()[0]
    assert run(["jobs", "list", "--json", *url]) == 0
    assert job_id in [job["job_id"] for job in json.loads(capsys.readouterr().out)]
    assert run(["jobs", *url]) == 0 and job_id in capsys.readouterr().out  # `hazard jobs` lists
    assert run(["jobs", "status", job_id, "--json", *url]) == 1  # it has a failed frame
    assert json.loads(capsys.readouterr().out)["status"] == "completed"
    assert run(["jobs", "results", job_id, "--out", str(tmp_path / "r.jsonl"), *url]) == 1
    assert len(read_jsonl(tmp_path / "r.jsonl")) == GOOD_FRAMES + 1
    assert run(["jobs", "cancel", job_id, *url]) == 2  # finished: nothing to cancel
    assert "JOB_FINISHED" in (err := capsys.readouterr().err) and "nothing left to cancel" in err
    assert run(["health", *url]) == 0
    assert "inference" in capsys.readouterr().out
    assert run(["models", *url]) == 2
    assert "--api-key" in capsys.readouterr().err
    assert run(["models", "--api-key", ADMIN_TOKEN, "--json", *url]) == 0
    assert json.loads(capsys.readouterr().out)["active"] == "best0408_openvino_model"
