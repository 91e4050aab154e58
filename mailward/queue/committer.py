"""Group commit: many concurrent commits share one write and one fdatasync.

Owns: the current segment file (opening, rotating by size, the directory fsync a new
segment needs), appending batches of framed records, making large body files durable
(rename to their final name after their fsync, one directory fsync per batch), and
resolving each submitter's future only after its bytes are on disk. It must not know what the records mean.

How batching happens: submitters append to ``_queue`` and wake the loop. The loop takes
everything queued, hands it to a single I/O thread (one ``pwrite`` + one ``fdatasync``),
and while that thread waits for the disk, new submissions pile up for the next batch. So
under load the batch size grows by itself to match the disk's latency; with one client
there is no added wait. An optional ``window`` sleeps a little before each batch to gather
more when the disk is very fast but fsync-bound.

All file work happens in that one thread, so segment state (fd, number, size) is only
touched there or between batches; ``run_io`` runs maintenance (segment deletion) in the
same thread, ordered with the writes.
"""
from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..wakeup import Wakeup
from .fsops import FileOps
from .model import SpoolError
from .records import MAGIC
from .recovery import SEGMENTS, LARGE, seg_path

log = logging.getLogger(__name__)


@dataclass(slots=True)
class LargeBody:
    fd: int               # open spill file still to be fsynced and closed, or -1 if done
    tmp: Path
    final: Path


@dataclass(slots=True, eq=False)
class Pending:
    data: bytes
    fut: asyncio.Future
    large: LargeBody | None = None
    on_durable: Callable[["Pending"], None] | None = None
    lazy_until: float = 0.0   # loop time before which this record does not force a batch
    seg: int = 0          # where the record landed, set by the I/O thread
    offset: int = 0


class Committer:
    def __init__(self, root: Path, fs: FileOps, *, segment_bytes: int, seg: int, seg_size: int,
                 file_size: int = 0, window: float = 0.0, prealloc: int = 1 << 20,
                 lazy_delay: float = 0.005) -> None:
        self.root = root
        self.fs = fs
        self.segment_bytes = segment_bytes
        self.window = window
        # A lazy record (a delivery outcome) waits up to this long for an urgent one (a
        # reception someone is waiting a 250 for) to share its fdatasync; with one client
        # that halves the syncs per message, under load batches form anyway.
        self.lazy_delay = lazy_delay
        self.seg = seg                # current segment number (0: none yet)
        self.size = seg_size          # valid bytes in it
        # Segments are zero-filled ahead of the records (``prealloc`` bytes at a time, in the
        # same write as a batch): overwriting already-allocated blocks lets fdatasync flush
        # data only, without a journal commit for the growing file size (measured several
        # times faster). Recovery treats an all-zero tail as the clean end of the log.
        self.prealloc = max(0, min(prealloc, segment_bytes))
        self.zeroed = max(file_size, seg_size)
        self.fd: int | None = None
        if seg:
            self.fd = os.open(seg_path(root, seg), os.O_WRONLY)
        self._queue: list[Pending] = []
        self._wake: Wakeup | None = None      # the committer task's wait for work (start())
        self._closing = False
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None   # set by start(), before any use
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool-io")
        self.after_batch: Callable[[], None] | None = None
        self.batches = 0
        self.records = 0
        # (segment, final size) of segments rotated away from; the spool drains this list.
        self.closed: list[tuple[int, int]] = []

    # --- loop side ---------------------------------------------------------------------------

    def start(self) -> None:
        # The loop is kept, not asked for per commit: on Python 3.11 every
        # asyncio.get_running_loop() is a getpid() system call.
        self._loop = asyncio.get_running_loop()
        # A Wakeup, not an asyncio.Event with wait_for: see wakeup.py.
        self._wake = Wakeup(self._loop)
        self._task = self._loop.create_task(self._run(), name="spool-committer")

    def submit(self, data: bytes, *, large: LargeBody | None = None,
               on_durable: Callable[[Pending], None] | None = None, lazy: bool = False) -> Pending:
        """Queue ``data`` for the next batch; ``item.fut`` resolves once it is on disk.

        ``lazy``: durable just the same when the future resolves, but it may wait up to
        ``lazy_delay`` for an urgent record to share the fdatasync with.
        """
        if self._closing:
            raise SpoolError("spool is closed")
        loop = self._loop
        item = Pending(data, loop.create_future(), large, on_durable,
                       loop.time() + self.lazy_delay if lazy else 0.0)
        self._queue.append(item)
        self._wake.set()
        return item

    def _lazy_wait(self) -> float:
        """Seconds the current queue may still wait (0 when a batch must start now)."""
        if self._closing:
            return 0.0
        first = 0.0
        for item in self._queue:
            if not item.lazy_until:
                return 0.0
            first = item.lazy_until if not first else min(first, item.lazy_until)
        return max(0.0, first - self._loop.time())

    async def run_io(self, fn: Callable, *args):
        """Run ``fn`` in the I/O thread, ordered with batch writes."""
        return await self._loop.run_in_executor(self._pool, fn, *args)

    async def close(self) -> None:
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            await self._task
        self._pool.shutdown(wait=True)
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    async def _run(self) -> None:
        loop = self._loop
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            wait = self._lazy_wait()
            if wait > 0:
                self._wake.clear()
                await self._wake.wait(wait)
                continue
            if self.window > 0:
                await asyncio.sleep(self.window)
            batch, self._queue = self._queue, []
            try:
                await loop.run_in_executor(self._pool, self._write_batch, batch)
            except Exception as exc:  # any failure of the batch fails every commit in it
                err = exc if isinstance(exc, SpoolError) else SpoolError(_describe(exc))
                for item in batch:
                    if not item.fut.done():
                        item.fut.set_exception(err)
                continue
            self.batches += 1
            self.records += len(batch)
            for item in batch:
                # Index updates run here, not in the awaiting coroutine, so they happen even
                # if the submitter was cancelled (a client that hung up after DATA).
                if item.on_durable is not None:
                    try:
                        item.on_durable(item)
                    except Exception:  # pragma: no cover - a bug there must not stall the queue
                        log.exception("spool: on_durable callback failed")
                if not item.fut.done():
                    item.fut.set_result(None)
            if self.after_batch is not None:
                try:
                    self.after_batch()
                except Exception:  # pragma: no cover
                    log.exception("spool: after_batch failed")

    # --- I/O thread --------------------------------------------------------------------------

    def _write_batch(self, batch: list[Pending]) -> None:
        larges = [item.large for item in batch if item.large is not None]
        try:
            for lb in larges:
                if lb.fd >= 0:
                    self.fs.fsync(lb.fd)
            for lb in larges:
                if lb.fd >= 0:
                    os.close(lb.fd)
                    lb.fd = -1
                os.rename(lb.tmp, lb.final)
        finally:
            for lb in larges:
                if lb.fd >= 0:
                    os.close(lb.fd)
                    lb.fd = -1
        if larges:
            # One directory fsync makes every renamed body of this batch durable.
            self.fs.fsync_dir(self.root / LARGE)
        if self.fd is None or self.size >= self.segment_bytes:
            self._rotate()
        offset = self.size
        for item in batch:
            item.seg = self.seg
            item.offset = offset
            offset += len(item.data)
        parts = [item.data for item in batch]
        zeroed = self.zeroed
        if offset > zeroed and self.prealloc:
            # Extend the zero-filled region in the same write: no extra sync for it.
            zeroed = (offset // self.prealloc + 1) * self.prealloc
            parts.append(bytes(zeroed - offset))
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        try:
            self.fs.write(self.fd, data, self.size)
        except OSError:
            # Cut any partial record off so later batches append to a clean log; the segment
            # stays usable (typically ENOSPC: space may come back).
            try:
                os.ftruncate(self.fd, self.size)
                self.zeroed = self.size
            except OSError:
                self._abandon()
            raise
        try:
            self.fs.fdatasync(self.fd)
        except OSError:
            # After a failed fsync the page cache state is unknown: never append to this
            # segment again. Its earlier records were synced by earlier successful batches.
            try:
                os.ftruncate(self.fd, self.size)
            except OSError:
                pass
            self._abandon()
            raise
        self.size = offset
        self.zeroed = max(zeroed, offset)

    def _abandon(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _rotate(self) -> None:
        n = self.seg + 1
        path = seg_path(self.root, n)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        head = MAGIC + bytes(max(0, self.prealloc - len(MAGIC)))
        try:
            self.fs.write(fd, head, 0)
            self.fs.fdatasync(fd)
            # A new file's directory entry must be durable before records in it are acked.
            self.fs.fsync_dir(self.root / SEGMENTS)
        except OSError:
            os.close(fd)
            try:
                os.unlink(path)
            except OSError:
                pass
            raise
        if self.fd is not None:
            try:
                # The old segment's unused zero tail is just waste now (no sync needed:
                # after a crash recovery reads zeros as the end anyway).
                os.ftruncate(self.fd, self.size)
            except OSError:
                pass
            os.close(self.fd)
        if self.seg:
            self.closed.append((self.seg, self.size))
        self.fd = fd
        self.seg = n
        self.size = len(MAGIC)
        self.zeroed = len(head)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} (errno {exc.errno})"
    return str(exc) or type(exc).__name__
