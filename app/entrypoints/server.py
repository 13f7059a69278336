"""What one server process accepts: its connections bounded, whatever clients do with them.

uvicorn alone keeps a connection that never finishes its request headers open forever (its keep-alive timeout
runs only between requests), so ~1,000 half-open connections take every descriptor of a default 1,024 limit and
everyone else gets connection errors. `BoundedHttpProtocol` adds:

- a header timeout: a connection must deliver a complete request head within `header_timeout` of opening (or of
  its previous answer), else it is closed;
- a connection cap: at `max_connections` open, opening one more closes the connection that has been idle or
  half-open longest, so a flood of silent connections cannot crowd out clients that actually send requests.
  When every connection has a request in progress, uvicorn's `limit_concurrency` (set to the same cap) answers
  new requests 503;
- `fit_descriptor_limit`: the process's RLIMIT_NOFILE is raised to fit the cap, or the cap lowered to fit it.

A front proxy (nginx, an ingress, a load balancer) still belongs in front of it: it absorbs slow clients and
TLS, and limits per-client connections across a fleet; this is the process's own floor.
"""

from __future__ import annotations

import asyncio
import resource
import time
from typing import Any

import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = structlog.get_logger(__name__)

# Descriptors a process needs besides client connections: the Redis pool (REDIS_MAX_CONNECTIONS, 64), model and
# log files, the spool, the listening socket, OpenVINO's and the thread pools' own.
DESCRIPTOR_RESERVE = 256
LOG_EVERY_SECONDS = 1.0


class ConnectionStats:
    """Connections this process closed to protect itself (process-wide; logged at most once a second)."""

    evicted = 0
    header_timeouts = 0
    _logged_at = 0.0

    @classmethod
    def note(cls, reason: str) -> None:
        if reason == "evicted":
            cls.evicted += 1
        else:
            cls.header_timeouts += 1
        now = time.monotonic()
        if now - cls._logged_at >= LOG_EVERY_SECONDS:
            cls._logged_at = now
            log.warning(
                "connections_closed_by_server", evicted=cls.evicted, header_timeouts=cls.header_timeouts, last=reason
            )


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a request-head timeout and a connection cap (class attributes: a
    configured subclass is made by `bounded_protocol`)."""

    header_timeout: float = 10.0
    max_connections: int = 1000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._idle_since = time.monotonic()

    @property
    def busy(self) -> bool:
        """A request head arrived and its answer is not complete yet."""
        return self.cycle is not None and not self.cycle.response_complete

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._wait_for_head()
        if len(self.connections) >= self.max_connections:
            self._evict_one()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._wait_for_head()  # the next request head (keep-alive) gets the same bound

    def _wait_for_head(self) -> None:
        self._cancel_head_timer()
        self._idle_since = time.monotonic()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.busy and not self.transport.is_closing():
            ConnectionStats.note("header_timeout")
            self._close()

    def _evict_one(self) -> None:
        """Close the connection idle (or half-open) the longest; none when every other one is serving a request."""
        victim: BoundedHttpProtocol | None = None
        for connection in self.connections:
            if connection is self or not isinstance(connection, BoundedHttpProtocol):
                continue
            if connection.busy or connection.transport is None or connection.transport.is_closing():
                continue
            if victim is None or connection._idle_since < victim._idle_since:
                victim = connection
        if victim is not None:
            ConnectionStats.note("evicted")
            victim._close()

    def _close(self) -> None:
        # Out of the count at once: its connection_lost comes a loop iteration later, and a request head parsed
        # meanwhile would find the server "full" (uvicorn's limit_concurrency counts this set) and get a 503.
        self.connections.discard(self)
        self.transport.close()


def bounded_protocol(header_timeout: float, max_connections: int) -> type[BoundedHttpProtocol]:
    return type(
        "ConfiguredHttpProtocol",
        (BoundedHttpProtocol,),
        {"header_timeout": header_timeout, "max_connections": max_connections},
    )


def fit_descriptor_limit(max_connections: int) -> int:
    """Raise the soft RLIMIT_NOFILE to fit `max_connections` plus the reserve (up to the hard limit); returns the
    connection cap that fits what the process got, lowered (and logged) when the hard limit is too small."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + DESCRIPTOR_RESERVE
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if raised > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return max_connections
    fitted = max(1, soft - DESCRIPTOR_RESERVE)
    log.warning(
        "http_max_connections_lowered",
        configured=max_connections,
        used=fitted,
        nofile_limit=soft,
        reason="RLIMIT_NOFILE (LimitNOFILE / ulimit -n) is below HTTP_MAX_CONNECTIONS + reserve",
    )
    return fitted
