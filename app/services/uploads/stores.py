"""Where annotated frames land: Cloudinary (the real SDK, in a thread) or a local directory served under /media.

Both stores have the same calls: `save(...) -> URL`, `check() -> {"ok", "latency_ms", ...}` and
`keep_bounds(starting)` (the local store's retention), and name the failures that should trip the breaker.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import cloudinary.api
import cloudinary.exceptions
import cloudinary.uploader
from pydantic import SecretStr

from app.services.core.errors import MediaNotFound
from app.services.core.files import write_atomic
from app.services.core.timing import ms_since
from app.services.uploads.ledger import MEDIA_NAME
from app.services.uploads.retention import Retention

MEDIA_PREFIX = "/media"
CLOUDINARY_FOLDER = "hazards"
CHECK_TIMEOUT_SECONDS = 2.0
PROBE_DATA = b"\0" * 16384  # about a small frame: a disk with less room than that fails it


class ImageStore(Protocol):
    name: str
    failures: tuple[type[BaseException], ...]

    async def save(self, media_id: str, labels: Sequence[str], image: bytes) -> str: ...

    async def check(self) -> dict[str, object]: ...

    def keep_bounds(self, starting: bool) -> None: ...


class LocalStore:
    """`<root>/<media_id>.jpg`, served read-only at `/media/<media_id>.jpg`, bounded in bytes and age.

    The media id is server-generated and random: the URL names neither the session (the only credential a
    client holds) nor the client's request id.
    """

    name = "local_storage"
    failures: tuple[type[BaseException], ...] = (OSError,)

    def __init__(self, root: Path, max_bytes: int | None = None, max_age_seconds: float = 0) -> None:
        self.root = root
        self.retention = Retention(root, max_bytes, max_age_seconds)

    async def save(self, media_id: str, labels: Sequence[str], image: bytes) -> str:
        await asyncio.to_thread(self._write, media_id, image)
        return f"{MEDIA_PREFIX}/{media_id}.jpg"

    def _write(self, media_id: str, image: bytes) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{media_id}.jpg"
        write_atomic(path, image)  # a dot-named temporary: the media route never serves dot files
        self.retention.added(path, len(image))

    def keep_bounds(self, starting: bool) -> None:
        """Blocking: at start remove debris and index what is stored; later, expire frames past their age."""
        if starting:
            self.retention.scan()
        else:
            self.retention.prune()

    async def check(self) -> dict[str, object]:
        started = time.perf_counter()
        try:
            await asyncio.to_thread(write_probe, self.root)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            return {"ok": False, "store": "local", "reason": reason, "latency_ms": ms_since(started)}
        return {
            "ok": True,
            "store": "local",
            "latency_ms": ms_since(started),
            "frames": len(self.retention),
            "bytes": self.retention.stored_bytes,
        }


def write_probe(directory: Path) -> None:
    """Write (and remove) a probe about the size of a small frame: a nearly full disk fails it too."""
    directory.mkdir(parents=True, exist_ok=True)
    probe = directory / f".probe-{uuid.uuid4().hex}"
    try:
        write_atomic(probe, PROBE_DATA)
    finally:
        probe.unlink(missing_ok=True)


def media_file(root: Path, name: str) -> Path:
    """The stored frame named `<media_id>.jpg` under `root`; MediaNotFound for anything else.

    The shape is checked before the disk is touched: no other string (a path, a dot file, a session id) can
    reach a file, so there is nothing to traverse.
    """
    if not MEDIA_NAME.fullmatch(name):
        raise MediaNotFound(details={"path": name[:200]})
    candidate = root / name
    try:
        found = candidate.is_file() and not candidate.is_symlink()
    except OSError:
        found = False
    if not found:
        raise MediaNotFound(details={"path": name})
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
    """`hazards/<media_id>`, tags = labels; never overwrites, so a retry is idempotent. No session id in the URL."""

    name = "cloudinary"
    # The SDK wraps HTTP errors, timeouts and refused connections in cloudinary.exceptions.Error.
    failures: tuple[type[BaseException], ...] = (cloudinary.exceptions.Error, OSError, TimeoutError)

    def __init__(self, account: CloudinaryAccount, timeout_seconds: float) -> None:
        self.account = account
        self.timeout_seconds = timeout_seconds

    async def save(self, media_id: str, labels: Sequence[str], image: bytes) -> str:
        result = await asyncio.to_thread(self._upload, media_id, labels, image)
        return str(result["secure_url"])

    def _upload(self, media_id: str, labels: Sequence[str], image: bytes) -> dict[str, Any]:
        result: dict[str, Any] = cloudinary.uploader.upload(
            (f"{media_id}.jpg", image),
            **self.account.sdk_options(),
            resource_type="image",
            folder=CLOUDINARY_FOLDER,
            public_id=media_id,
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

    def keep_bounds(self, starting: bool) -> None:
        """Cloudinary keeps its own quota: nothing to do here."""


def image_store(
    storage_dir: Path,
    cloudinary_url: SecretStr | None,
    timeout_seconds: float,
    max_bytes: int | None = None,
    max_age_seconds: float = 0,
) -> ImageStore:
    """Cloudinary when an account is configured, the local directory (bounded) otherwise."""
    if cloudinary_url is None or not cloudinary_url.get_secret_value():
        return LocalStore(storage_dir, max_bytes, max_age_seconds)
    return CloudinaryStore(CloudinaryAccount.from_url(cloudinary_url), timeout_seconds)
