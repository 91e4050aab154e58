"""The file-system operations the spool performs, behind one small injectable object.

Owns: writing whole buffers, fsync/fdatasync of files and directories, and counting the
syncs. The spool calls only these for anything whose failure or durability matters, so a
test can count fsyncs (group commit) or make a write fail like a full disk (ENOSPC) without
mounting anything. It must not know about records, segments or messages.
"""
from __future__ import annotations

import os
import threading
from typing import Callable


class FileOps:
    """Real file operations. ``sync=False`` turns every fsync into a no-op (tests, benches
    that measure the rest). ``on_sync(kind, target)`` is called before each real sync."""

    def __init__(self, *, sync: bool = True, on_sync: Callable[[str, object], None] | None = None) -> None:
        self.sync = sync
        self.on_sync = on_sync
        self._lock = threading.Lock()
        self.syncs = 0          # every fsync/fdatasync issued (files and directories)
        self.data_syncs = 0     # fdatasync of segment files only: the group-commit figure

    def _count(self, kind: str, target: object) -> None:
        with self._lock:
            self.syncs += 1
            if kind == "fdatasync":
                self.data_syncs += 1
        if self.on_sync is not None:
            self.on_sync(kind, target)

    def write(self, fd: int, data: bytes | bytearray | memoryview, offset: int | None = None) -> None:
        """Write all of ``data`` at ``offset`` (or the file position). os.write/pwrite may
        write less than asked, e.g. near ENOSPC, so loop until done or an error is raised."""
        view = memoryview(data)
        while view:
            n = os.write(fd, view) if offset is None else os.pwrite(fd, view, offset)
            if n <= 0:  # pragma: no cover - the kernel raises rather than returning 0 on files
                raise OSError("short write")
            view = view[n:]
            if offset is not None:
                offset += n

    def fsync(self, fd: int) -> None:
        if not self.sync:
            return
        self._count("fsync", fd)
        os.fsync(fd)

    def fdatasync(self, fd: int) -> None:
        if not self.sync:
            return
        self._count("fdatasync", fd)
        os.fdatasync(fd)

    def fsync_dir(self, path: os.PathLike | str) -> None:
        """Make the directory's entries (new, renamed, removed files) durable."""
        if not self.sync:
            return
        self._count("fsync_dir", path)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
