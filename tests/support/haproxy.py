"""Debian's HAProxy 2.6 in front of API replicas, as the rehearsal runs it (scripts/ensure-system-deps.sh unpacks it
into var/tools/haproxy).

- Health: `GET /health/ready` every 500 ms; a replica is out after 2 failures (a refused connection at once, a slow
  answer after 2 s: a replica starved of CPU is slow, not dead) and back after 2 successes.
- A request whose replica refuses the connection, or dies before answering (an empty response), is sent to the
  other replica (`retry-on` with `option redispatch`); the request is buffered for that (`http-buffer-request`,
  buffers large enough for a frame).
- With no replica up, HAProxy's own 503 carries `Retry-After` and the service's error shape, as the API's own
  refusals do.
- Statistics as CSV on the stats port (`/stats;csv`), which tells whether it sees a replica up.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent.parent
HAPROXY_ROOT = ROOT / "var" / "tools" / "haproxy"
BINARY = HAPROXY_ROOT / "usr" / "sbin" / "haproxy"
LIBRARIES = HAPROXY_ROOT / "usr" / "lib" / "x86_64-linux-gnu"
PORT = 8080
STATS_PORT = 8404
BUFFER_BYTES = 1024 * 1024  # a whole frame fits: only a buffered request can be sent again
REFUSED = '{"error":{"code":"OVERLOADED","message":"no API replica can take the request","details":{}}}'


def config(address: str, replicas: dict[str, str]) -> str:
    servers = "\n".join(f"  server {name} {target} check" for name, target in replicas.items())
    return f"""global
  maxconn 1024
  tune.bufsize {BUFFER_BYTES}

defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  timeout http-request 10s
  timeout check 2s
  retries 2
  option redispatch 1
  retry-on conn-failure empty-response response-timeout
  option http-buffer-request

frontend web
  bind {address}:{PORT}
  default_backend api

frontend stats
  bind {address}:{STATS_PORT}
  stats enable
  stats uri /stats

backend api
  balance roundrobin
  option httpchk GET /health/ready
  http-check expect status 200
  default-server inter 500ms fall 2 rise 2
  http-error status 503 content-type application/json string '{REFUSED}' hdr Retry-After 1
{servers}
"""


def binary() -> Path:
    """The unpacked one, else one on the PATH (scripts/ensure-system-deps.sh unpacks none then)."""
    if BINARY.exists():
        return BINARY
    if (installed := shutil.which("haproxy")) is not None:
        return Path(installed)
    raise RuntimeError(f"{BINARY} is missing; `make system-deps` unpacks Debian's haproxy there")


def start(prefix: list[str], config_path: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """HAProxy in the foreground (-db), one process, its own libraries beside it."""
    environment = {**os.environ, "LD_LIBRARY_PATH": str(LIBRARIES)}
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [*prefix, str(binary()), "-db", "-f", str(config_path)], env=environment, stdout=log, stderr=log
        )


def servers_up(address: str) -> dict[str, bool]:
    """Which backend servers HAProxy sees up now (its statistics)."""
    text = httpx.get(f"http://{address}:{STATS_PORT}/stats;csv", timeout=2).text.lstrip("# ")
    rows = csv.DictReader(io.StringIO(text))
    return {
        row["svname"]: row["status"].startswith("UP")
        for row in rows
        if row["pxname"] == "api" and row["svname"] not in ("FRONTEND", "BACKEND")
    }
