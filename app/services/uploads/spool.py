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

from app.services.files import write_atomic

log = structlog.get_logger(__name__)


@dataclass
class SpoolEntry:
    session_id: str
    request_id: str
    labels: list[str]
    spooled_at: float
    attempts: int = 0
    next_attempt_at: float = 0.0  # wall-clock seconds, so the schedule survives a restart
    last_attempt_at: float = 0.0
    url: str | None = None  # set once uploaded, while the URL still waits for the session store
    key: str = field(init=False)

    def __post_init__(self) -> None:
        # Deterministic: spooling the same frame twice (a retry racing a shutdown) rewrites one entry.
        self.key = hashlib.sha256(f"{self.session_id}\n{self.request_id}".encode()).hexdigest()[:32]

    def to_json(self) -> str:
        fields = asdict(self)
        del fields["key"]
        return json.dumps(fields)

    @classmethod
    def from_json(cls, text: str) -> SpoolEntry:
        fields = json.loads(text)
        return cls(
            session_id=str(fields["session_id"]),
            request_id=str(fields["request_id"]),
            labels=[str(label) for label in fields["labels"]],
            spooled_at=float(fields["spooled_at"]),
            attempts=int(fields["attempts"]),
            next_attempt_at=float(fields["next_attempt_at"]),
            last_attempt_at=float(fields["last_attempt_at"]),
            url=None if fields.get("url") is None else str(fields["url"]),
        )


class Spool:
    def __init__(self, directory: Path, max_files: int) -> None:
        self.directory = directory
        self.max_files = max_files
        self._entries: dict[str, SpoolEntry] = {}
        self._writing: set[str] = set()  # keys whose files are being written: room is held, not yet listed
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

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
        for image in self.directory.glob("*.jpg"):
            if image.stem not in loaded:
                image.unlink(missing_ok=True)  # written just before a crash, its sidecar never was
        with self._lock:
            self._entries = loaded
        return list(loaded.values())

    def _read_entry(self, sidecar: Path) -> SpoolEntry | None:
        try:
            entry = SpoolEntry.from_json(sidecar.read_text())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("spool_entry_unreadable", file=sidecar.name, error=type(exc).__name__)
            return None
        if entry.key != sidecar.stem or (entry.url is None and not sidecar.with_suffix(".jpg").exists()):
            log.warning("spool_entry_incomplete", file=sidecar.name)
            return None
        return entry

    def put(self, entry: SpoolEntry, image: bytes | None) -> bool:
        """Keep an entry (and its frame, until it is uploaded); False when the spool is full."""
        with self._lock:
            known = entry.key in self._entries or entry.key in self._writing  # rewriting one entry takes no room
            if not known and len(self._entries) + len(self._writing) >= self.max_files:
                return False
            self._writing.add(entry.key)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if image is not None:
                write_atomic(self._path(entry, ".jpg"), image)
            write_atomic(self._path(entry, ".json"), entry.to_json().encode())
        except OSError:
            with self._lock:
                self._writing.discard(entry.key)
                self._entries.pop(entry.key, None)
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

    def read_image(self, entry: SpoolEntry) -> bytes:
        return self._path(entry, ".jpg").read_bytes()

    def remove(self, entry: SpoolEntry) -> None:
        with self._lock:
            self._entries.pop(entry.key, None)
        self._path(entry, ".json").unlink(missing_ok=True)  # the commit record goes first
        self._path(entry, ".jpg").unlink(missing_ok=True)

    def _path(self, entry: SpoolEntry, suffix: str) -> Path:
        return self.directory / f"{entry.key}{suffix}"
