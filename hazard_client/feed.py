"""The files of one ingestion as they become known: a folder's all at once, a drive's frames one by one as a thread
decodes and samples them ahead of the uploads (`Ahead`), so the first frames travel while the rest decode."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hazard_client.ahead import Ahead
    from hazard_client.ingest import SourceFile


class Feed:
    def __init__(self, files: list[SourceFile] | None = None, ahead: Ahead[SourceFile] | None = None) -> None:
        self.files: list[SourceFile] = []  # every file so far, in order: the results file's order
        self.by_key: dict[str, SourceFile] = {}  # the first file of each key: identical files are sent once
        self.complete = ahead is None  # every file is known
        self._ahead = ahead
        self._next: deque[SourceFile] = deque()
        for source in files or ():
            self._know(source)

    def _know(self, source: SourceFile) -> bool:
        self.files.append(source)
        if source.key in self.by_key:
            return False
        self.by_key[source.key] = source
        self._next.append(source)
        return True

    async def next(self) -> SourceFile | None:
        """The next file of a key not seen before; None once there are no more."""
        while not self._next and self._ahead is not None and not self.complete:
            source = await asyncio.to_thread(self._ahead.get)
            if source is None:
                self.complete = True
            else:
                self._know(source)
        return self._next.popleft() if self._next else None
