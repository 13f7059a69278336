"""Type aliases shared across the app, declared once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as redis

JSONObject = dict[str, Any]
# The one Redis client, by REDIS_MODE: standalone or cluster (app/services/core/redis_client.py builds it).
RedisClient = redis.Redis | redis.RedisCluster
# (operation, outcome, seconds) of one Redis round trip, for the latency histogram.
RedisObserver = Callable[[str, str, float], None]
# (breaker name, new state) when a circuit breaker changes state.
BreakerListener = Callable[[str, str], None]
# (session_id, media id, outcome): records an annotated upload's outcome (uploads/ledger.py) in its session; may
# raise when Redis is down.
RecordUploadUrl = Callable[[str, str, str], Awaitable[None]]
