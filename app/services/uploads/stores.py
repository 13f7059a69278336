"""Where annotated frames land: Cloudinary (the real SDK, in a thread) or a local directory served under /media.

Both stores have the same two calls: `save(...) -> URL` and `check() -> {"ok", "latency_ms", ...}`,
and name the failures that should trip the breaker in front of them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol
from urllib.parse import parse_qs, quote, unquote, urlsplit

import cloudinary.api
import cloudinary.exceptions
import cloudinary.uploader
from pydantic import SecretStr

from app.services.errors import MediaNotFound
from app.services.files import write_atomic
from app.services.timing import ms_since

MEDIA_PREFIX = "/media"
CLOUDINARY_FOLDER = "hazards"
CHECK_TIMEOUT_SECONDS = 2.0


class ImageStore(Protocol):
    name: str
    failures: tuple[type[BaseException], ...]

    async def save(self, session_id: str, request_id: str, labels: Sequence[str], image: bytes) -> str: ...

    async def check(self) -> dict[str, object]: ...


class LocalStore:
    """`<root>/<session_id>/<request_id>.jpg`, served read-only at `/media/<session_id>/<request_id>.jpg`."""

    name = "local_storage"
    failures: tuple[type[BaseException], ...] = (OSError,)

    def __init__(self, root: Path) -> None:
        self.root = root

    async def save(self, session_id: str, request_id: str, labels: Sequence[str], image: bytes) -> str:
        await asyncio.to_thread(self._write, self.root / session_id / f"{request_id}.jpg", image)
        return f"{MEDIA_PREFIX}/{quote(session_id)}/{quote(request_id)}.jpg"

    @staticmethod
    def _write(path: Path, image: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, image)  # a dot-named temporary: the media route never serves dot files

    async def check(self) -> dict[str, object]:
        started = time.perf_counter()
        try:
            await asyncio.to_thread(self._write_probe)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            return {"ok": False, "store": "local", "reason": reason, "latency_ms": ms_since(started)}
        return {"ok": True, "store": "local", "latency_ms": ms_since(started)}

    def _write_probe(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        probe = self.root / f".probe-{uuid.uuid4().hex}"
        try:
            write_atomic(probe, b"ok")
        finally:
            probe.unlink(missing_ok=True)


def media_file(root: Path, relative: str) -> Path:
    """The stored frame at `relative` under `root`; MediaNotFound for anything else (escapes, dot files, others)."""
    parts = PurePosixPath(relative).parts
    if not parts or not relative.endswith(".jpg") or any(part.startswith(".") for part in parts):
        raise MediaNotFound(details={"path": relative})
    try:
        base = root.resolve()
        candidate = (base / relative).resolve()
        found = candidate.is_relative_to(base) and candidate.is_file()
    except (OSError, ValueError):  # a NUL byte, a name too long
        found = False
    if not found:
        raise MediaNotFound(details={"path": relative})
    return candidate


@dataclass(frozen=True)
class CloudinaryAccount:
    cloud_name: str
    api_key: str
    api_secret: SecretStr
    options: dict[str, str] = field(default_factory=dict)  # query of the URL: upload_prefix, ...

    @classmethod
    def from_url(cls, url: SecretStr) -> CloudinaryAccount:
        """Parse `cloudinary://<api_key>:<api_secret>@<cloud_name>[?upload_prefix=...]` (never echoes it)."""
        parsed = urlsplit(url.get_secret_value())
        if parsed.scheme != "cloudinary" or not (parsed.hostname and parsed.username and parsed.password):
            raise ValueError("CLOUDINARY_URL must look like cloudinary://<api_key>:<api_secret>@<cloud_name>")
        options = {name: values[0] for name, values in parse_qs(parsed.query).items()}
        return cls(parsed.hostname, unquote(parsed.username), SecretStr(unquote(parsed.password)), options)

    def sdk_options(self) -> dict[str, Any]:
        """Per-call credentials: the SDK's global config is left alone, so several apps can share a process."""
        return {
            **self.options,
            "cloud_name": self.cloud_name,
            "api_key": self.api_key,
            "api_secret": self.api_secret.get_secret_value(),
        }


class CloudinaryStore:
    """Folder per session, public_id = request id, tags = labels; never overwrites, so a retry is idempotent."""

    name = "cloudinary"
    # The SDK wraps HTTP errors, timeouts and refused connections in cloudinary.exceptions.Error.
    failures: tuple[type[BaseException], ...] = (cloudinary.exceptions.Error, OSError, TimeoutError)

    def __init__(self, account: CloudinaryAccount, timeout_seconds: float) -> None:
        self.account = account
        self.timeout_seconds = timeout_seconds

    async def save(self, session_id: str, request_id: str, labels: Sequence[str], image: bytes) -> str:
        result = await asyncio.to_thread(self._upload, session_id, request_id, labels, image)
        return str(result["secure_url"])

    def _upload(self, session_id: str, request_id: str, labels: Sequence[str], image: bytes) -> dict[str, Any]:
        result: dict[str, Any] = cloudinary.uploader.upload(
            (f"{request_id}.jpg", image),
            **self.account.sdk_options(),
            resource_type="image",
            folder=f"{CLOUDINARY_FOLDER}/{session_id}",
            public_id=request_id,
            tags=list(labels),
            overwrite=False,
            unique_filename=False,
            timeout=self.timeout_seconds,
        )
        return result

    async def check(self) -> dict[str, object]:
        started = time.perf_counter()
        timeout = min(CHECK_TIMEOUT_SECONDS, self.timeout_seconds)
        try:
            await asyncio.to_thread(cloudinary.api.ping, **self.account.sdk_options(), timeout=timeout)
        except Exception as exc:  # the Admin API raises its own errors and plain ones alike
            return {"ok": False, "store": "cloudinary", "reason": type(exc).__name__, "latency_ms": ms_since(started)}
        return {"ok": True, "store": "cloudinary", "latency_ms": ms_since(started)}


def image_store(storage_dir: Path, cloudinary_url: SecretStr | None, timeout_seconds: float) -> ImageStore:
    """Cloudinary when an account is configured, the local directory otherwise."""
    if cloudinary_url is None or not cloudinary_url.get_secret_value():
        return LocalStore(storage_dir)
    return CloudinaryStore(CloudinaryAccount.from_url(cloudinary_url), timeout_seconds)
