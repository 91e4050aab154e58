"""The mail_logs writer: an ``EventSink`` that appends appliance-exact lines to
``<log_dir>/<subscription>/mail.current``, rolls the file by size and/or age, and can push
the same events to syslog and keep a hash chain beside the file.

Owns: batching (``emit`` only appends to memory; one ``write()`` per batch, flushed by
``loop.call_soon`` when an asyncio loop runs in the calling thread, else at once), the file
header (``Begin Logfile`` / ``Version: v SN: s`` / ``Time offset from UTC: n seconds``), rolling
``mail.current`` to ``mail.@YYYYMMDDTHHMMSS.s`` (local time of the roll), and never raising to
the caller. It knows nothing of what the events mean.

No ``End Logfile`` line is written on roll: no appliance sample shows one.
"""
from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime, tzinfo
from pathlib import Path

from . import events as ev
from .chain import Chain, load_or_create_key
from .escape import DEFAULT_MAX_FIELD
from .grammar import format_body, format_file_line
from .timefmt import format_ctime
from .syslog import SyslogTarget

CURRENT = "mail.current"


class MailLogWriter:
    """Writes events as mail_logs lines. ``emit`` never blocks on disk and never raises.

    ``hash_chain=True`` (or a ``chain_key_file``) keeps ``mail.current.chain`` beside the log,
    one HMAC-SHA256 per line (see ``chain.py``); the key defaults to ``<log_dir>/chain.key``.
    ``tz`` None means the host's local time; the header's UTC offset follows it.
    """

    def __init__(self, log_dir: Path, *, subscription: str = "mail_logs", version: str, serial: str,
                 max_bytes: int | None = 10_485_760, rotate_seconds: int | None = None,
                 syslog: SyslogTarget | None = None, clock: Callable[[], float] = time.time,
                 tz: tzinfo | None = None, hash_chain: bool = False, chain_key_file: Path | None = None,
                 max_field: int | None = DEFAULT_MAX_FIELD, fsync: bool = False) -> None:
        self.dir = Path(log_dir) / subscription
        self.subscription = subscription
        self.version = version
        self.serial = serial
        self.max_bytes = max_bytes
        self.rotate_seconds = rotate_seconds
        self.syslog = syslog
        self.clock = clock
        self.tz = tz
        self.max_field = max_field
        self.fsync = fsync
        self.errors = 0             # events or writes that failed (counted, never raised)
        self.last_error: BaseException | None = None
        self._lock = threading.RLock()
        self._batch: list[str] = []
        self._stamp_sec = -1                # the second self._stamp / self._when are for
        self._stamp = ""
        self._when = datetime.fromtimestamp(0)
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None     # the loop flushes were last scheduled on
        self._loop_thread = 0                                    # and the thread it runs in
        self._closed = False
        self._fh = None
        self._chain_fh = None
        self._chain: Chain | None = None
        if hash_chain and chain_key_file is None:
            # Beside the subscription folders, not inside one: fetching a log folder does not fetch the key.
            chain_key_file = Path(log_dir) / "chain.key"
        # The log folder first: on a first start the key is created in <log_dir>, which the
        # folder's creation makes too.
        self.dir.mkdir(parents=True, exist_ok=True)
        self._key = load_or_create_key(Path(chain_key_file)) if chain_key_file is not None else None
        self._size = 0
        self._opened_at = 0.0
        self.path = self.dir / CURRENT
        self.chain_path = self.dir / (CURRENT + ".chain")
        with self._lock:
            # A file left by an earlier run is rolled, so that each file has exactly one header.
            if self.path.exists() and self.path.stat().st_size > 0:
                self._roll(self.clock())
            self._open(self.clock())

    # --- time ----------------------------------------------------------------------------

    def _local(self, ts: float) -> datetime:
        if self.tz is None:
            return datetime.fromtimestamp(ts)
        return datetime.fromtimestamp(ts, self.tz).replace(tzinfo=None)

    def _offset(self, ts: float) -> int:
        if self.tz is None:
            return int(time.localtime(ts).tm_gmtoff)
        off = datetime.fromtimestamp(ts, self.tz).utcoffset()
        return int(off.total_seconds()) if off is not None else 0

    # --- the sink ------------------------------------------------------------------------

    def emit(self, event: ev.Event) -> None:
        try:
            sec = int(self.clock())
            if sec != self._stamp_sec:
                # Lines carry whole seconds: the local time and its text are made once a second.
                self._when = self._local(sec)
                self._stamp = format_ctime(self._when)
                self._stamp_sec = sec
            when = self._when
            level = event.LEVEL
            body = format_body(event, max_field=self.max_field)
            line = "%s %s: %s" % (self._stamp, level, body)
        except Exception as exc:  # a bad event must not take its caller down
            self._fail(exc)
            return
        if self.syslog is not None:
            try:
                self.syslog.send_body(body, when, level, tag=self.subscription)
            except Exception as exc:  # the file copy is what counts; the push is best effort
                self._fail(exc)
        with self._lock:
            if self._closed:
                self.errors += 1
                return
            self._batch.append(line)
            if self._scheduled:
                return
            loop = self._loop
            if loop is None or not loop.is_running() or threading.get_ident() != self._loop_thread:
                # Asked only when the loop seen last is not running in this thread: on Python
                # 3.11 every get_running_loop() is a getpid system call, and a message's log
                # lines start several batches.
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:
                    loop = None
                if loop is None:
                    self._flush_locked()
                    return
                self._loop, self._loop_thread = loop, threading.get_ident()
            self._scheduled = True
        try:
            loop.call_soon(self._flush_scheduled)
        except Exception as exc:  # a closing loop: write now instead
            self._fail(exc)
            self.flush()

    def _flush_scheduled(self) -> None:
        with self._lock:
            self._scheduled = False
            self._flush_locked()

    def flush(self) -> None:
        """Write whatever is batched (synchronously)."""
        with self._lock:
            self._flush_locked()

    def close(self) -> None:
        """Flush, close the file; loses nothing on a clean stop."""
        with self._lock:
            if self._closed:
                return
            self._flush_locked()
            self._closed = True
            self._close_files()
        if self.syslog is not None:
            self.syslog.close()

    def __enter__(self) -> "MailLogWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- files ---------------------------------------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        self.errors += 1
        self.last_error = exc

    def _flush_locked(self) -> None:
        if not self._batch or self._fh is None:
            return
        lines, self._batch = self._batch, []
        try:
            data = _encode(lines)
            if self._should_roll(len(data)):
                now = self.clock()
                self._roll(now)
                self._open(now)
            self._write(lines, data)
        except Exception as exc:  # a full disk loses these lines, it does not stop the gateway
            self._fail(exc)

    def _should_roll(self, incoming: int) -> bool:
        """Does a batch of ``incoming`` bytes start a new file (age or size)?"""
        if self.rotate_seconds is not None and self.clock() - self._opened_at >= self.rotate_seconds:
            return True
        if self.max_bytes is not None and self._size > self._header_size:
            return self._size + incoming > self.max_bytes
        return False

    def _write(self, lines: list[str], data: bytes | None = None) -> None:
        if data is None:
            data = _encode(lines)
        assert self._fh is not None
        self._fh.write(data)
        self._fh.flush()
        if self._chain is not None and self._chain_fh is not None:
            digests = "".join(self._chain.add(x) + "\n" for x in lines)
            self._chain_fh.write(digests.encode("ascii"))
            self._chain_fh.flush()
        if self.fsync:
            os.fsync(self._fh.fileno())
        self._size += len(data)

    def _open(self, now: float) -> None:
        self._fh = open(self.path, "ab", buffering=0)
        if self._key is not None:
            self._chain = Chain(self._key)
            self._chain_fh = open(self.chain_path, "ab", buffering=0)
        self._size = 0
        self._opened_at = now
        when = self._local(now)
        header = [
            format_file_line(ev.BeginLogfile(), when),
            format_file_line(ev.VersionInfo(self.version, self.serial), when),
            format_file_line(ev.TimeOffset(self._offset(now)), when),
        ]
        self._write(header)
        self._header_size = self._size

    def _close_files(self) -> None:
        for fh in (self._fh, self._chain_fh):
            if fh is not None:
                try:
                    fh.close()
                except OSError as exc:
                    self._fail(exc)
        self._fh = None
        self._chain_fh = None

    def _roll(self, now: float) -> None:
        self._close_files()
        stamp = self._local(now).strftime("%Y%m%dT%H%M%S")
        target = self.dir / ("mail.@%s.s" % stamp)
        n = 1
        while target.exists():
            # Two rolls in one second (tiny max_bytes): keep both, in order.
            target = self.dir / ("mail.@%s-%d.s" % (stamp, n))
            n += 1
        os.replace(self.path, target)
        if self.chain_path.exists():
            os.replace(self.chain_path, target.with_name(target.name + ".chain"))

    _header_size = 0


def _encode(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")
