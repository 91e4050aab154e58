"""The body writer of one reception.

Owns: collecting a message body as it streams in during DATA with bounded memory: up to
``threshold`` bytes stay in memory (the common, small message goes into the segment record
in one write), beyond that everything goes to a spill file ``large/tmp-<random>`` which
becomes ``large/<mid>`` at commit. It must not know the record format or the committer:
``commit`` hands the body to the Spool, which makes it durable.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from .fsops import FileOps
from .model import Envelope, QueuedMessage, SpoolError

if TYPE_CHECKING:  # pragma: no cover
    from .spool import Spool


class MessageWriter:
    def __init__(self, spool: "Spool", large_dir: Path, fs: FileOps, threshold: int) -> None:
        self._spool = spool
        self._large_dir = large_dir
        self._fs = fs
        self._threshold = threshold
        self._buf = bytearray()
        self._fd: int | None = None
        self._tmp: Path | None = None
        self.size = 0
        self._done = False

    @property
    def spilled(self) -> bool:
        return self._fd is not None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append body bytes. Raises SpoolError if the spill file cannot be written."""
        if self._done:
            raise SpoolError("writer already committed or aborted")
        if not data:
            return
        try:
            if self._fd is None and len(self._buf) + len(data) > self._threshold:
                self._spill()
            if self._fd is None:
                self._buf += data
            else:
                self._fs.write(self._fd, data)
        except OSError as exc:
            self.abort()
            raise SpoolError(_describe(exc)) from exc
        self.size += len(data)

    def _spill(self) -> None:
        tmp = self._large_dir / f"tmp-{secrets.token_hex(8)}"
        self._fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        self._tmp = tmp           # only a file that exists is ours to remove
        if self._buf:
            self._fs.write(self._fd, self._buf)
        self._buf = bytearray()   # drop the in-memory copy: memory stays bounded

    def abort(self) -> None:
        """Forget the body (RSET, connection lost, size limit). Safe to call twice."""
        self._done = True
        self._buf = bytearray()
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
        if self._tmp is not None:
            try:
                os.unlink(self._tmp)
            except OSError:
                # Best effort (e.g. the file system turned read-only): recovery removes
                # every unreferenced file under large/ at the next open.
                pass
            self._tmp = None

    async def commit(self, envelope: Envelope) -> QueuedMessage:
        """Make envelope + body durable; returns once they are on disk (the moment the
        gateway may answer 250). Raises SpoolError, after which nothing of it remains."""
        if self._done:
            raise SpoolError("writer already committed or aborted")
        self._done = True
        if self._fd is None:
            body, self._buf = self._buf, bytearray()
            return await self._spool._commit_small(envelope, body)
        fd, tmp = self._fd, self._tmp
        self._fd = self._tmp = None
        return await self._spool._commit_large(envelope, self.size, fd, tmp)


def _describe(exc: OSError) -> str:
    return f"{exc.strerror} (errno {exc.errno})" if exc.strerror else str(exc)
