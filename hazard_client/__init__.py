"""Python client and `hazard` command line of the Hazard Detection API."""

from __future__ import annotations

__version__ = "0.1.0"

from hazard_client.calls import Frame
from hazard_client.client import AsyncHazardClient, HazardClient
from hazard_client.errors import ApiError, ConnectionFailed, HazardError
from hazard_client.retry import RetryPolicy

__all__ = [
    "ApiError",
    "AsyncHazardClient",
    "ConnectionFailed",
    "Frame",
    "HazardClient",
    "HazardError",
    "RetryPolicy",
    "__version__",
]
