"""Persistent monotonic counters for MID, ICID and DCID.

Owns: handing out integers that never repeat, even across ``kill -9``. It reserves a block
of ids on disk (write a temp file, fsync, rename, fsync the directory) before handing out
the first id of the block, so ``next()`` is a plain increment almost always. After a
crash the unused rest of the reserved block is skipped: gaps are allowed, repeats are not.
It must not know what the ids are used for.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

from .fsops import FileOps


class IdCounter:
    def __init__(self, path: Path | str, block: int = 1000, *, start: int = 1,
                 fs: FileOps | None = None) -> None:
        if block < 1:
            raise ValueError("block must be >= 1")
        self.path = Path(path)
        self.block = block
        self.fs = fs or FileOps()
        self._lock = threading.Lock()   # next() may be called from worker threads too
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The file holds the first id NOT yet reserved; everything below it may have been used.
        self._next = max(start, self._read())
        self._limit = self._next
        self._reserve()

    def _read(self) -> int:
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return 0
        if not text.isdigit():
            # Never guess low: a damaged file must not lead to reused ids.
            raise ValueError(f"{self.path}: damaged counter file (content {text[:20]!r})")
        return int(text)

    def _reserve(self) -> None:
        limit = self._limit + self.block
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            self.fs.write(fd, f"{limit}\n".encode())
            self.fs.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self.fs.fsync_dir(self.path.parent)
        self._limit = limit

    def next(self) -> int:
        with self._lock:
            if self._next >= self._limit:
                self._reserve()
            value = self._next
            self._next += 1
            return value

    def peek(self) -> int:
        """The id the next call to ``next()`` returns (for display)."""
        return self._next
