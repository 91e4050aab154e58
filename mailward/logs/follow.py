"""Tail a live log file (``mail.current``) across rotation and truncation.

Owns: polling a path, noticing that it was replaced (inode/device change: the appliance or
logrotate renamed it and started a new file) or truncated (size below our offset), finishing the
old file before switching, and holding back a partly written last line until its newline
arrives. It does not parse lines. The only clock it reads is for polling and ``max_seconds``.
"""
from __future__ import annotations

import os
import time
from typing import BinaryIO, Callable, Iterator


class Follower:
    """Yields complete lines (``str``, with their newline) appended to ``path``.

    ``from_start``: read what is already in the file first (default: start at its end, like
    ``tail -F``). ``poll``: seconds between checks when nothing new arrived.
    """

    def __init__(self, path: str, from_start: bool = False, poll: float = 0.2) -> None:
        self.path = path
        self.from_start = from_start
        self.poll = poll
        self.rotations = 0
        self.truncations = 0
        self._f: BinaryIO | None = None
        self._ident: tuple[int, int] | None = None
        self._pending = b""
        self._tail = b""            # the last bytes read: detects a truncate-and-refill to our size
        self._mtime = 0

    def _open(self, at_end: bool) -> bool:
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            return False
        st = os.fstat(f.fileno())
        if at_end:
            f.seek(0, os.SEEK_END)
        self._f = f
        self._ident = (st.st_dev, st.st_ino)
        self._pending = b""
        self._mtime = st.st_mtime_ns
        pos = f.tell()
        if pos:
            f.seek(max(0, pos - 64))
            self._tail = f.read(pos - max(0, pos - 64))
        else:
            self._tail = b""
        return True

    def _drain(self) -> list[bytes]:
        """Whole lines available now from the open file."""
        assert self._f is not None
        data = self._f.read()
        if not data:
            return []
        self._tail = (self._tail + data)[-64:]
        buf = self._pending + data
        parts = buf.split(b"\n")
        self._pending = parts.pop()
        return [p + b"\n" for p in parts]

    def _replaced(self) -> str | None:
        """'rotated', 'truncated' or None, judged from the path's current state."""
        assert self._f is not None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None     # between rename and re-create: keep reading the old file for now
        if (st.st_dev, st.st_ino) != self._ident:
            return "rotated"
        pos = self._f.tell()
        if st.st_size < pos:
            return "truncated"
        if st.st_mtime_ns != self._mtime:
            self._mtime = st.st_mtime_ns
            # Truncated and refilled to at least our offset between two polls: the bytes we
            # last read are no longer where we read them.
            if self._tail and os.pread(self._f.fileno(), len(self._tail), pos - len(self._tail)) != self._tail:
                return "truncated"
        return None

    def lines(self, max_seconds: float | None = None,
              stop: Callable[[], bool] | None = None) -> Iterator[str]:
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        opened = self._open(at_end=not self.from_start)
        try:
            while True:
                if deadline is not None and time.monotonic() >= deadline:
                    return
                if stop is not None and stop():
                    return
                if not opened:
                    opened = self._open(at_end=False)
                    if not opened:
                        time.sleep(self.poll)
                        continue
                # Judge the path before reading: after a truncate-and-refill the bytes past our
                # offset belong to a new file and must be read from its start.
                change = self._replaced()
                if change == "rotated":
                    # Finish the old file (lines written just before the switch), then move on.
                    for raw in self._drain():
                        yield raw.decode("utf-8", "replace")
                if change is not None:
                    if self._pending:   # the old content ended without a newline: a cut line
                        yield self._pending.decode("utf-8", "replace") + "\n"
                    assert self._f is not None
                    self._f.close()
                    if change == "rotated":
                        self.rotations += 1
                    else:
                        self.truncations += 1
                    opened = self._open(at_end=False)
                    continue
                got = self._drain()
                for raw in got:
                    yield raw.decode("utf-8", "replace")
                if got:
                    continue
                time.sleep(self.poll)
        finally:
            if self._f is not None:
                self._f.close()
                self._f = None
