"""Restarting this process on the fleet's command: drain exactly as on SIGTERM, then come back.

The request sends SIGTERM to this process, so the drain is the one every stop goes through (new frames refused,
frames in flight answered, uploads flushed, a worker's frames in hand finished or left queued). The launcher
(`hazard-api`, `hazard-worker`) arms this when it starts and, once its server has stopped, brings the process back:
- supervised (systemd, Kubernetes, or PROCESS_SUPERVISED=yes): exit with RESTART_EXIT_CODE for the supervisor to
  start it again;
- otherwise (`make run`, `make up`): re-execute its own command line (`os.execv`: same pid, a new process id,
  the listening sockets closed before, every other descriptor closed by the exec).
A process its launcher did not arm (served by another launcher, or an app inside a test) ignores the request.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import structlog

from app.services.observability.tracing import current_provider

log = structlog.get_logger(__name__)

FLUSH_SPANS_MS = 2000  # the spans of the last frames, before an exec drops the exporter's buffer
RESTART_EXIT_CODE = 75  # EX_TEMPFAIL: "start me again"; non-zero, so systemd's Restart=on-failure restarts it
# Set by systemd for every unit it starts; by Kubernetes in every container.
SUPERVISOR_VARIABLES = ("INVOCATION_ID", "KUBERNETES_SERVICE_HOST")


def is_supervised(setting: str, environ: Mapping[str, str]) -> bool:
    """PROCESS_SUPERVISED: `yes`, `no`, or `auto` (a supervisor seen in the environment)."""
    if setting == "auto":
        return any(environ.get(name) for name in SUPERVISOR_VARIABLES)
    return setting == "yes"


@dataclass
class ProcessRestart:
    armed: bool = False
    supervised: bool = False
    requested: bool = False
    ignored: int = 0  # requests that reached a process nothing would bring back

    @contextlib.contextmanager
    def serving(self, *, supervised: bool) -> Iterator[None]:
        """Armed while a launcher that brings the process back serves (and only then: a launcher's `main` run
        inside a test leaves nothing armed behind)."""
        self.armed, self.supervised = True, supervised
        try:
            yield
        finally:
            self.armed = False

    def request(self, reason: str) -> bool:
        """Start the drain (SIGTERM to this process); False, with a log line, where nothing would bring it back."""
        if not self.armed:
            self.ignored += 1
            log.warning("process_restart_ignored", reason=reason, why="this process's launcher cannot restart it")
            return False
        if not self.requested:
            self.requested = True
            log.info("process_restarting", reason=reason, comes_back="exit" if self.supervised else "exec")
            os.kill(os.getpid(), signal.SIGTERM)
        return True

    def come_back(self) -> None:
        """After the drain: exit for the supervisor, or replace this process with a fresh run of its command line."""
        sys.stdout.flush()
        sys.stderr.flush()
        if self.supervised:
            raise SystemExit(RESTART_EXIT_CODE)  # atexit handlers (the span exporter's flush) run as on any exit
        provider = current_provider()
        if provider is not None:
            provider.force_flush(FLUSH_SPANS_MS)
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


# The one process-wide request: the fleet agent (inside the app) sets it, the launcher (outside it) acts on it.
PROCESS_RESTART = ProcessRestart()
