"""The durable spool: committed messages and per-recipient outcomes, with group commit.

Owns: the public queue API the gateway and the delivery manager code against (commit a
body + envelope, record outcomes, defer, delete, read bodies, list live messages), the
in-memory index kept in step with the log, reclaiming segments and compacting old ones.
It must not know SMTP, delivery policy or mail_logs (callers log what happened).

Promise: ``MessageWriter.commit`` and ``record``/``defer``/``delete`` return only after
their record (and, for a large body, its file and directory entry) is fsynced. A message
acknowledged with 250 is never lost, even on ``kill -9``; a recipient recorded delivered is
never delivered again after a restart.

Design
------
* ``<root>/segments/NNNNNNNN.seg`` is an append-only log of CRC-framed records
  (``records.py``). All writers go through one ``Committer`` (``committer.py``): commits
  that arrive while the previous fdatasync runs are written together with one pwrite and
  one fdatasync. Segments rotate at ``segment_bytes``; a new segment's directory entry is
  fsynced before anything in it is acknowledged.
* A body up to ``memory_threshold`` travels inside its MSG record (one write, no extra
  file). A bigger one is streamed to ``large/tmp-*`` while it arrives, then fsynced,
  renamed to ``large/<mid>`` and its directory fsynced in the same batch as its record.
* STATE/DEFER/DELETE records change a message. They are applied to the in-memory index
  when submitted, i.e. in exactly the order they are written to the log, so a compaction
  copy (a snapshot of the message's state) can never be written behind a newer outcome.
  If such a write fails (SpoolError), memory keeps the change (the delivery did happen);
  a restart may then try that recipient again: at least once, never lost.
  A new message enters the index only once durable (even if its committer was cancelled).
* Reclaim: segments are deleted oldest first, and only while the oldest one holds no live
  message. Deleting strictly in order is what keeps replay correct: a state record is
  always in the same or a later segment than the MSG record it changes (or, when it is
  older than a compaction copy, already folded into that copy's state), so removing a
  prefix never drops an outcome of a message that is still on disk.
* Compaction copies the live messages of the oldest closed segment forward as MSG records
  carrying their current state; the segment then becomes reclaimable. It runs when that
  segment is mostly dead (live bytes <= ``compact_live_fraction``) and has been closed for
  ``compact_after`` seconds (time to empty by itself), or at once when closed segments hold
  more than twice the live data: one long-deferred message pins at most its own record,
  and disk use stays near 2x live. A long queue where everything is live copies nothing.
* Segments are zero-filled ahead of the records (``prealloc``), so the per-batch
  fdatasync overwrites allocated blocks and need not journal a new file size.
* Recovery (``open``): replay every segment in order, truncate a torn tail (it was never
  acknowledged; an all-zero tail is preallocation, not damage), drop spill files of
  unfinished receptions and bodies of finished messages.
* A lock file (flock) keeps a second process from owning the same spool; read-only viewers
  (``mailward queue``) use ``recovery.snapshot`` and take no lock.
"""
from __future__ import annotations

import asyncio
import fcntl
import io
import logging
import os
import time
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

from .committer import Committer, LargeBody, Pending
from .fsops import FileOps
from .index import Index, Location
from .model import Envelope, QueuedMessage, RcptState, SpoolError
from .records import MAGIC, T_DEFER, T_DELETE, T_STATE, json_record, msg_record
from .recovery import LARGE, SEGMENTS, replay, seg_path
from .writer import MessageWriter

__all__ = ["Envelope", "QueuedMessage", "RcptState", "Spool", "SpoolError", "MessageWriter"]

log = logging.getLogger(__name__)

READ_FDS = 4    # segment descriptors kept open for reading bodies (see Spool._read_fds)


class Spool:
    def __init__(self, root: Path | str, *, fsync: bool = True, segment_bytes: int = 64 << 20,
                 memory_threshold: int = 256 << 10, fs: FileOps | None = None,
                 commit_window: float = 0.0, compact_after: float = 300.0,
                 compact_live_fraction: float = 0.25, prealloc: int = 1 << 20) -> None:
        """``fsync=False`` only for tests/benches; ``fs`` injects file operations (fault
        injection, sync counting); ``commit_window`` (seconds) waits before each batch to
        gather more commits; ``compact_after``/``compact_live_fraction`` tune compaction;
        ``prealloc`` is how far ahead segments are zero-filled (0: never)."""
        self.root = Path(root)
        self.fs = fs if fs is not None else FileOps(sync=fsync)
        self.segment_bytes = segment_bytes
        self.memory_threshold = memory_threshold
        self.commit_window = commit_window
        self.compact_after = compact_after
        self.compact_live_fraction = compact_live_fraction
        self.prealloc = prealloc
        self._index = Index()
        self._committer: Committer | None = None
        self._callbacks: list[Callable[[QueuedMessage], None]] = []
        self._seg_sizes: dict[int, int] = {}       # closed segments: their size
        self._seg_closed_at: dict[int, float] = {}
        self._maint: asyncio.Task | None = None
        self._lock_fd: int | None = None
        self._wakeup: asyncio.TimerHandle | None = None
        self._wakeup_at = 0.0
        self._closing = False
        self.recovered_torn: dict[int, int] = {}
        # Read-only descriptors of the segments delivery reads bodies from (loop thread only):
        # each delivery would otherwise pay an open and a close, and most read the newest
        # segment. Closed before their segment is deleted, and at close().
        self._read_fds: dict[int, int] = {}

    # --- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the directories, recover the log, start the committer."""
        if self._committer is not None:
            raise SpoolError("spool is already open")
        for d in (self.root, self.root / SEGMENTS, self.root / LARGE):
            d.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise SpoolError(f"spool {self.root} is in use by another process") from None
        loop = asyncio.get_running_loop()
        rep = await loop.run_in_executor(None, lambda: replay(self.root, repair=True))
        self._index = rep.index
        self.recovered_torn = rep.torn
        if rep.torn:
            log.warning("spool: truncated torn tail(s) %s", rep.torn)
        segs = sorted(rep.seg_sizes)
        current, current_size, current_file = 0, 0, 0
        if segs:
            last = segs[-1]
            if rep.seg_sizes[last] >= len(MAGIC) and rep.seg_sizes[last] < self.segment_bytes:
                current, current_size = last, rep.seg_sizes[last]
                current_file = rep.file_sizes.get(last, current_size)
        now = time.time()
        for n in segs:
            if n != current:
                self._seg_sizes[n] = rep.seg_sizes[n]
                self._seg_closed_at[n] = now
        self._committer = Committer(self.root, self.fs, segment_bytes=self.segment_bytes,
                                    seg=current, seg_size=current_size, file_size=current_file,
                                    window=self.commit_window, prealloc=self.prealloc)
        if not current and segs:
            # Continue numbering after the last existing segment.
            self._committer.seg = segs[-1]
        self._committer.after_batch = self._after_batch
        self._committer.start()
        self._schedule_maintenance()

    async def close(self) -> None:
        """Flush pending commits and stop. Idempotent."""
        if self._committer is None:
            return
        # No new maintenance from here on; the one running may still submit compaction
        # copies, so it finishes before the committer drains and stops.
        self._closing = True
        if self._wakeup is not None:
            self._wakeup.cancel()
            self._wakeup = None
        if self._maint is not None:
            try:
                await self._maint
            except Exception:  # pragma: no cover - already logged by the task
                pass
        await self._committer.close()
        self._committer = None
        self._close_read_fds()

    def _close_read_fds(self, seg: int | None = None) -> None:
        for n in ([seg] if seg is not None else list(self._read_fds)):
            fd = self._read_fds.pop(n, None)
            if fd is not None:
                os.close(fd)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        self._closing = False

    async def __aenter__(self) -> "Spool":
        await self.open()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def _c(self) -> Committer:
        if self._committer is None:
            raise SpoolError("spool is not open")
        return self._committer

    # --- receiving -----------------------------------------------------------------------------

    def writer(self) -> MessageWriter:
        self._c()
        return MessageWriter(self, self.root / LARGE, self.fs, self.memory_threshold)

    def on_commit(self, callback: Callable[[QueuedMessage], None]) -> None:
        """``callback(msg)`` runs after each durable commit (e.g. wake the delivery manager)."""
        self._callbacks.append(callback)

    def _new_message(self, env: Envelope, size: int) -> QueuedMessage:
        if env.mid in self._index.messages:
            raise SpoolError(f"MID {env.mid} is already queued")
        if not env.recipients:
            raise SpoolError("a message needs at least one recipient")
        return QueuedMessage(env, size, [RcptState.PENDING] * len(env.recipients))

    async def _commit_small(self, env: Envelope, body: bytearray) -> QueuedMessage:
        msg = self._new_message(env, len(body))
        data, body_rel = msg_record({"env": env.to_json(), "size": msg.size}, body)

        def durable(item: Pending) -> None:
            self._index.put(msg, Location(item.seg, item.offset + body_rel, msg.size, False))
            self._notify(msg)

        await self._c().submit(data, on_durable=durable).fut
        return msg

    async def _commit_large(self, env: Envelope, size: int, fd: int, tmp: Path) -> QueuedMessage:
        final = self.root / LARGE / str(env.mid)
        try:
            msg = self._new_message(env, size)
            data, _ = msg_record({"env": env.to_json(), "size": size}, None)
            committer = self._c()
            # The body's own fsync runs here, outside the batch: a big body must not hold
            # up the small commits sharing the next fdatasync. The batch then only renames
            # it and fsyncs the directory (once for all bodies of the batch).
            await asyncio.get_running_loop().run_in_executor(None, self.fs.fsync, fd)
        except OSError as exc:
            _close_quietly(fd)
            _unlink(tmp)
            raise SpoolError(f"{exc.strerror or exc} (errno {exc.errno})") from exc
        except BaseException:
            _close_quietly(fd)
            _unlink(tmp)
            raise
        _close_quietly(fd)

        def durable(item: Pending) -> None:
            self._index.put(msg, Location(item.seg, 0, size, True))
            self._notify(msg)

        try:
            await committer.submit(data, large=LargeBody(-1, tmp, final), on_durable=durable).fut
        except SpoolError:
            _unlink(tmp)
            _unlink(final)
            raise
        return msg

    def _notify(self, msg: QueuedMessage) -> None:
        for cb in self._callbacks:
            try:
                cb(msg)
            except Exception:  # a listener's bug must not undo a durable commit
                log.exception("spool: on_commit callback failed")

    # --- reading -------------------------------------------------------------------------------

    def get(self, mid: int) -> QueuedMessage | None:
        return self._index.messages.get(mid)

    def __len__(self) -> int:
        """Number of live messages (O(1), unlike counting ``messages()``)."""
        return len(self._index.messages)

    def __bool__(self) -> bool:
        # An empty queue is still a spool: `if spool:` must not depend on the queue length.
        return True

    def messages(self) -> Iterator[QueuedMessage]:
        """Live messages (a snapshot list, safe to iterate while the queue changes)."""
        return iter(list(self._index.messages.values()))

    def due(self, now: float | None = None) -> list[QueuedMessage]:
        """Live messages whose next attempt time has come, oldest attempt first."""
        now = time.time() if now is None else now
        out = [m for m in self._index.messages.values() if m.next_attempt <= now]
        out.sort(key=lambda m: (m.next_attempt, m.mid))
        return out

    def open_body(self, mid: int) -> BinaryIO:
        """A binary stream of the body. Large bodies stream from their file."""
        loc = self._index.loc.get(mid)
        if loc is None:
            raise KeyError(f"MID {mid} is not queued")
        if loc.large:
            return open(self.root / LARGE / str(mid), "rb")
        fd = self._read_fds.get(loc.seg)
        if fd is None:
            if len(self._read_fds) >= READ_FDS:
                self._close_read_fds(next(iter(self._read_fds)))     # the oldest opened
            fd = self._read_fds[loc.seg] = os.open(seg_path(self.root, loc.seg), os.O_RDONLY)
        return io.BytesIO(self._pread(fd, loc))

    def read_body(self, mid: int) -> bytes:
        with self.open_body(mid) as f:
            return f.read()

    def _read_inline(self, loc: Location) -> bytes:
        # Any thread (compaction reads off the loop): its own descriptor.
        fd = os.open(seg_path(self.root, loc.seg), os.O_RDONLY)
        try:
            return self._pread(fd, loc)
        finally:
            os.close(fd)

    @staticmethod
    def _pread(fd: int, loc: Location) -> bytes:
        data = os.pread(fd, loc.body_len, loc.body_offset)
        if len(data) != loc.body_len:  # pragma: no cover - would mean a damaged segment
            raise SpoolError(f"short read of body in segment {loc.seg}")
        return data

    # --- outcomes ------------------------------------------------------------------------------

    async def record(self, mid: int, rid: int, state: RcptState, *, next_attempt: float | None = None,
                     error: str | None = None) -> None:
        """Durably set one recipient's outcome. A PENDING state with ``next_attempt`` just
        reschedules it."""
        msg = self._index.messages.get(mid)
        if msg is None:
            raise KeyError(f"MID {mid} is not queued")
        if not 0 <= rid < len(msg.states):
            raise ValueError(f"MID {mid} has no RID {rid}")
        d: dict = {"m": mid, "r": rid, "s": int(state), "t": time.time()}
        if next_attempt is not None:
            d["na"] = next_attempt
        if error is not None:
            d["e"] = error
        await self._submit_change(T_STATE, d)

    async def defer(self, mid: int, rids: Iterable[int], *, next_attempt: float, error: str) -> None:
        """Durably record a failed attempt for ``rids``: attempts += 1, next attempt time."""
        if mid not in self._index.messages:
            raise KeyError(f"MID {mid} is not queued")
        d = {"m": mid, "r": sorted(set(rids)), "na": next_attempt, "e": error, "t": time.time()}
        await self._submit_change(T_DEFER, d)

    async def delete(self, mid: int) -> None:
        """Durably remove a message from the queue (operator action)."""
        if mid not in self._index.messages:
            raise KeyError(f"MID {mid} is not queued")
        await self._submit_change(T_DELETE, {"m": mid, "t": time.time()})

    async def _submit_change(self, rtype: int, d: dict) -> None:
        committer = self._c()
        data = json_record(rtype, d)
        loc = self._index.loc.get(d["m"])
        # Applied now, in log order (see the module docstring); durable when the await returns.
        gone = self._index.apply(rtype, d)
        on_durable = None
        if gone is not None and loc is not None and loc.large:
            # The body file may go only once the record that finishes the message is on disk.
            path = self.root / LARGE / str(d["m"])
            on_durable = lambda _item: _unlink(path)  # noqa: E731
        # Outcomes are lazy: nobody waits on a socket for them, so they ride along with the
        # next reception's fdatasync when one comes within a few milliseconds.
        await committer.submit(data, on_durable=on_durable, lazy=rtype != T_DELETE).fut

    # --- reclaim and compaction ------------------------------------------------------------------

    def _after_batch(self) -> None:
        c = self._committer
        if c is None:
            return
        if c.closed:
            # Segments the committer rotated away from are closed now: candidates for reclaim.
            now = time.time()
            for n, size in c.closed:
                self._seg_sizes.setdefault(n, size)
                self._seg_closed_at.setdefault(n, now)
            c.closed.clear()
        self._schedule_maintenance()

    def _schedule_maintenance(self) -> None:
        if self._closing or self._committer is None:
            return
        if self._maint is not None and not self._maint.done():
            return
        if not self._maintenance_needed():
            return
        self._maint = asyncio.get_running_loop().create_task(self._maintain(), name="spool-maintenance")

    def _oldest_closed(self) -> int | None:
        c = self._committer
        closed = [n for n in self._seg_sizes if c is None or n != c.seg]
        return min(closed) if closed else None

    def _maintenance_needed(self) -> bool:
        n = self._oldest_closed()
        if n is None:
            return False
        if not self._index.seg_live.get(n):
            return True
        return self._should_compact(n, time.time())

    def _should_compact(self, n: int, now: float) -> bool:
        idx = self._index
        if not idx.seg_live.get(n):
            return False
        # Segments are reclaimed oldest first, so a pinned head keeps every later segment on
        # disk too. When the closed segments hold more than twice the live data (plus some
        # slack), compact the head whatever its own fill: this bounds disk use at about
        # 2x live, and copies nothing when the queue is simply long (everything live).
        closed_bytes = sum(self._seg_sizes.values())
        if closed_bytes > 2 * idx.live_bytes + 4 * self.segment_bytes:
            return True
        # Otherwise compact a head that is mostly dead, once it had time to empty by itself.
        if idx.seg_live_bytes.get(n, 0) > self.compact_live_fraction * max(self._seg_sizes.get(n, 0), 1):
            return False
        due = self._seg_closed_at.get(n, now) + self.compact_after
        if now >= due:
            return True
        # Not yet: look again when it is due, even if no commit arrives meanwhile.
        if self._wakeup is None or self._wakeup_at > due:
            if self._wakeup is not None:
                self._wakeup.cancel()
            self._wakeup_at = due
            self._wakeup = asyncio.get_running_loop().call_later(due - now + 0.01, self._timer)
        return False

    def _timer(self) -> None:
        self._wakeup = None
        self._wakeup_at = 0.0
        if self._committer is not None:
            self._schedule_maintenance()

    async def _maintain(self) -> None:
        try:
            for _ in range(10_000):   # bounded: each round removes or compacts one segment
                n = self._oldest_closed()
                if n is None or self._committer is None:
                    return
                if self._index.seg_live.get(n):
                    if not self._should_compact(n, time.time()):
                        return
                    await self.compact(n)
                    if self._index.seg_live.get(n):
                        return
                self._close_read_fds(n)
                await self._committer.run_io(self._delete_segment, n)
                # Bookkeeping stays on the loop thread (the I/O thread only touches files).
                self._seg_sizes.pop(n, None)
                self._seg_closed_at.pop(n, None)
                self._index.forget_segment(n)
        except SpoolError as exc:
            log.warning("spool: maintenance failed: %s", exc)
        except OSError as exc:
            log.warning("spool: maintenance failed: %s", exc)

    def _delete_segment(self, n: int) -> None:
        # I/O thread. One directory fsync per deletion keeps deletions in log order on disk.
        try:
            os.unlink(seg_path(self.root, n))
        except FileNotFoundError:
            pass
        self.fs.fsync_dir(self.root / SEGMENTS)

    async def compact(self, seg: int | None = None) -> int:
        """Copy the live messages of segment ``seg`` (default: the oldest closed one) forward
        so it can be reclaimed. Returns how many messages were copied."""
        committer = self._c()
        n = self._oldest_closed() if seg is None else seg
        if n is None or n == committer.seg:
            return 0
        mids = sorted(self._index.seg_live.get(n, ()))
        loop = asyncio.get_running_loop()
        items = []
        for mid in mids:
            loc = self._index.loc.get(mid)
            if loc is None or loc.seg != n:
                continue
            # Read off the loop thread (a closed segment does not change), then snapshot the
            # state and submit with no await in between: the copy lands in log order.
            body = None if loc.large else await loop.run_in_executor(None, self._read_inline, loc)
            msg = self._index.messages.get(mid)
            if msg is None or self._index.loc.get(mid) is not loc:
                continue
            meta = {"env": msg.envelope.to_json(), "size": msg.size, "st": msg.state_json()}
            data, body_rel = msg_record(meta, body)

            def durable(item: Pending, mid=mid, msg=msg, large=loc.large, body_rel=body_rel) -> None:
                cur = self._index.loc.get(mid)
                if cur is None or cur.seg != n:
                    return   # finished or deleted meanwhile: nothing to move
                new = Location(item.seg, 0 if large else item.offset + body_rel, msg.size, large)
                self._index.put(msg, new)

            items.append(committer.submit(data, on_durable=durable))
        for item in items:
            await item.fut
        return len(items)

    # --- figures -------------------------------------------------------------------------------

    def stats(self) -> dict:
        msgs = list(self._index.messages.values())
        c = self._committer
        segs = set(self._seg_sizes)
        if c is not None and c.seg:
            segs.add(c.seg)
        return {
            "messages": len(msgs),
            "recipients_pending": sum(len(m.pending_rids()) for m in msgs),
            "bytes": sum(m.size for m in msgs),
            "oldest": min((m.envelope.received_at for m in msgs), default=None),
            "deferred": sum(1 for m in msgs if m.attempts > 0),
            "segments": len(segs),
            "segment_bytes": sum(self._seg_sizes.values()) + (c.size if c is not None else 0),
            "current_segment": c.seg if c is not None else None,
            "batches": c.batches if c is not None else 0,
            "records": c.records if c is not None else 0,
            "data_syncs": self.fs.data_syncs,
            "syncs": self.fs.syncs,
        }


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _unlink(path: Path | None) -> None:
    if path is None:
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
