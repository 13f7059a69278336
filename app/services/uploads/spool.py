"""The upload spool: annotated frames that could not be uploaded yet, kept on disk until they land.

One entry is `<key>.jpg` (the annotated frame) plus `<key>.json` (who it belongs to and when to retry).
Each file is written to a temporary name and renamed, and the JSON goes last: it is the commit record,
so a crash at any point leaves either a whole entry or debris that `load` removes.
Methods do blocking file I/O and are thread-safe: call them through `asyncio.to_thread`.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import structlog

from app.services.core.files import write_atomic
from app.services.uploads.ledger import MEDIA_ID, new_media_id

log = structlog.get_logger(__name__)


@dataclass
class SpoolEntry:
    session_id: str
    request_id: str  # the client's: logged beside the media id, never a key
    labels: list[str]
    spooled_at: float
    media_id: str = field(default_factory=new_media_id)  # server-generated: the file, public id and hash field
    attempts: int = 0
    next_attempt_at: float = 0.0  # wall-clock seconds, so the schedule survives a restart
    last_attempt_at: float = 0.0
    url: str | None = None  # set once uploaded, while the URL still waits for the session store
    history_key: str = ""  # the uploads-hash field its history entry reads: the media id (older entries: request id)

    def __post_init__(self) -> None:
        self.history_key = self.history_key or self.media_id

    @property
    def key(self) -> str:
        """The spool's file stem: the media id, so two frames never share an entry, whatever their request ids."""
        return self.media_id

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SpoolEntry:
        fields = json.loads(text)
        session_id, request_id = str(fields["session_id"]), str(fields["request_id"])
        media_id = fields.get("media_id")
        if media_id is None:  # spooled by a version that named files after (session id, request id)
            media_id = hashlib.sha256(f"{session_id}\n{request_id}".encode()).hexdigest()[:32]
        return cls(
            session_id=session_id,
            request_id=request_id,
            labels=[str(label) for label in fields["labels"]],
            spooled_at=float(fields["spooled_at"]),
            media_id=str(media_id),
            attempts=int(fields["attempts"]),
            next_attempt_at=float(fields["next_attempt_at"]),
            last_attempt_at=float(fields["last_attempt_at"]),
            url=None if fields.get("url") is None else str(fields["url"]),
            history_key=str(fields.get("history_key") or request_id),
        )


class Spool:
    def __init__(self, directory: Path, max_files: int, max_bytes: int | None = None) -> None:
        self.directory = directory
        self.max_files = max_files
        self.max_bytes = max_bytes
        self._entries: dict[str, SpoolEntry] = {}
        self._sizes: dict[str, int] = {}  # bytes of each entry's frame file, held from the start of its write
        self._writing: set[str] = set()  # keys whose files are being written: room is held, not yet listed
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def stored_bytes(self) -> int:
        return sum(self._sizes.values())

    def entries(self) -> list[SpoolEntry]:
        """A snapshot, soonest retry first."""
        with self._lock:
            return sorted(self._entries.values(), key=lambda entry: entry.next_attempt_at)

    def load(self) -> list[SpoolEntry]:
        """Read what a previous run left, removing half-written debris; returns the whole entries."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for leftover in self.directory.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)
        loaded: dict[str, SpoolEntry] = {}
        for sidecar in self.directory.glob("*.json"):
            entry = self._read_entry(sidecar)
            if entry is None:
                sidecar.unlink(missing_ok=True)
                sidecar.with_suffix(".jpg").unlink(missing_ok=True)
                continue
            loaded[entry.key] = entry
        sizes: dict[str, int] = {}
        for image in self.directory.glob("*.jpg"):
            if image.stem not in loaded:
                image.unlink(missing_ok=True)  # written just before a crash, its sidecar never was
            else:
                sizes[image.stem] = image.stat().st_size
        with self._lock:
            self._entries = loaded
            self._sizes = sizes
        return list(loaded.values())

    def _read_entry(self, sidecar: Path) -> SpoolEntry | None:
        try:
            entry = SpoolEntry.from_json(sidecar.read_text())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("spool_entry_unreadable", file=sidecar.name, error=type(exc).__name__)
            return None
        incomplete = entry.url is None and not sidecar.with_suffix(".jpg").exists()
        if entry.key != sidecar.stem or not MEDIA_ID.fullmatch(entry.key) or incomplete:
            log.warning("spool_entry_incomplete", file=sidecar.name)
            return None
        return entry

    def put(self, entry: SpoolEntry, image: bytes | None) -> bool:
        """Keep an entry (and its frame, until it is uploaded); False when the spool is full (files or bytes).

        A write the disk refuses (full, read-only) raises OSError and leaves nothing behind: `write_atomic` removes
        its temporary, and a frame whose sidecar could not follow is removed too.
        """
        with self._lock:
            known = entry.key in self._entries or entry.key in self._writing  # rewriting one entry takes no room
            if not known and len(self._entries) + len(self._writing) >= self.max_files:
                return False
            if not known and image is not None and self._over_bytes(len(image)):
                return False
            self._writing.add(entry.key)
            if image is not None:
                self._sizes[entry.key] = len(image)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if image is not None:
                write_atomic(self._path(entry, ".jpg"), image)
            write_atomic(self._path(entry, ".json"), entry.to_json().encode())
        except OSError:
            with self._lock:
                self._writing.discard(entry.key)
                self._entries.pop(entry.key, None)
                self._sizes.pop(entry.key, None)
            if image is not None:
                self._path(entry, ".jpg").unlink(missing_ok=True)  # a frame without its sidecar is debris
            raise
        # Listed only now: a retry pass that saw the entry while its frame was still being written (fsync) would
        # find no file, count it lost and remove it, and the files written next would belong to no entry.
        with self._lock:
            self._writing.discard(entry.key)
            self._entries[entry.key] = entry
        return True

    def update(self, entry: SpoolEntry) -> None:
        """Persist a new schedule, or the URL of an entry whose frame has landed (the frame file goes)."""
        write_atomic(self._path(entry, ".json"), entry.to_json().encode())
        if entry.url is not None:
            self._path(entry, ".jpg").unlink(missing_ok=True)
            with self._lock:
                self._sizes.pop(entry.key, None)

    def read_image(self, entry: SpoolEntry) -> bytes:
        return self._path(entry, ".jpg").read_bytes()

    def remove(self, entry: SpoolEntry) -> None:
        with self._lock:
            self._entries.pop(entry.key, None)
            self._sizes.pop(entry.key, None)
        self._path(entry, ".json").unlink(missing_ok=True)  # the commit record goes first
        self._path(entry, ".jpg").unlink(missing_ok=True)

    def _over_bytes(self, size: int) -> bool:
        return self.max_bytes is not None and sum(self._sizes.values()) + size > self.max_bytes

    def _path(self, entry: SpoolEntry, suffix: str) -> Path:
        return self.directory / f"{entry.key}{suffix}"
