"""structlog configuration: JSON lines to stdout in production, a readable console in development.

Everything (our events, uvicorn's, redis-py's) goes through one stdlib handler, so each line is written
whole under one lock: two writers on stdout interleave their lines. uvicorn's access log is off: the
middleware logs each request once, with its request id and timings.
"""

from __future__ import annotations

import logging
import sys

import structlog
from structlog.typing import EventDict, WrappedLogger

from app.services.observability.tracing import current_trace_ids


def add_trace_ids(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """`trace_id` and `span_id` of the active span beside the request id: a log line leads to its trace."""
    ids = current_trace_ids()
    if ids is not None:
        event["trace_id"], event["span_id"] = ids
    return event


def configure_logging(level: str = "INFO", json_lines: bool = True) -> None:
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        add_trace_ids,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    rendering: list[structlog.types.Processor] = (
        [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
        if json_lines
        else [structlog.dev.ConsoleRenderer()]
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *rendering],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # Our middleware writes the one `request` line per request. uvicorn writes its own access line whenever
    # `uvicorn.access` has a handler anywhere up its chain (hasHandlers()), whatever --access-log says, so it
    # gets none: no handler, no propagation, and disabled in case anything adds one later.
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
    access.disabled = True
    # aiosqlite writes two DEBUG lines per SQL call (queued, completed) from its thread: LOG_LEVEL=DEBUG is for ours.
    logging.getLogger("aiosqlite").setLevel(max(logging.INFO, root.level))
