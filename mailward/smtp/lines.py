"""Framing of the SMTP byte stream: command lines and the DATA body.

Owns where a line ends and where a message ends — the part of SMTP where smuggling
lives. Rules, all deliberate:

* A line ends only at CRLF. A bare LF or bare CR never ends a command line nor a data line.
* DATA ends only at ``<CRLF>.<CRLF>`` (or ``.<CRLF>`` as the first line). ``\\n.\\r\\n``,
  ``\\r.\\n``, ``\\n.\\n``, ``\\r\\n.\\n`` are message content, never an end (the SMTP-smuggling
  defence of Postfix's 2023 fix).
* A bare LF or CR inside data is remembered; with ``bare_newline="reject"`` the reader keeps
  reading to the real end and reports it (the app then answers 554 5.5.0 and keeps nothing),
  with ``"normalize"`` each bare LF/CR becomes CRLF in the delivered content.
* Dot-unstuffing is done as data arrives; the body is handed out in chunks, never buffered
  whole. The reader keeps at most one incomplete line (bounded by the line limit).
* A line longer than its limit is not buffered: the rest of it is dropped up to its CRLF
  and the line is reported as too long once.

Knows nothing of commands, replies or sockets.
"""
from __future__ import annotations

from dataclasses import dataclass

CRLF = b"\r\n"


class LineReader:
    """Splits command input into CRLF-terminated lines.

    ``feed()`` appends bytes; ``next_line()`` returns a complete line without its CRLF,
    the constant ``TOO_LONG`` for an over-long line (already discarded), or ``None`` when
    no complete line is buffered. ``limit`` counts the CRLF, like RFC 5321 §4.5.3.1.4.
    """

    TOO_LONG = object()

    __slots__ = ("_buf", "_pos", "_skipping", "_skip_cr")

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0
        self._skipping = False       # inside an over-long line: drop bytes up to its CRLF
        self._skip_cr = False        # the dropped part ended with CR; a LF next ends the line

    def feed(self, data: bytes) -> None:
        if self._pos:
            self._buf = self._buf[self._pos:]
            self._pos = 0
        self._buf = self._buf + data if self._buf else data

    def clear(self) -> None:
        """Forget everything buffered (STARTTLS: bytes sent before the handshake are void)."""
        self._buf, self._pos, self._skipping, self._skip_cr = b"", 0, False, False

    def take_rest(self) -> bytes:
        """Hand over the unread bytes (for the data reader after ``354``)."""
        rest = self._buf[self._pos:]
        self._buf, self._pos = b"", 0
        return rest

    def put_back(self, data: bytes) -> None:
        """Return bytes the data reader did not consume (input pipelined after ``.``)."""
        self._buf = data + self._buf[self._pos:]
        self._pos = 0

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def peek(self, n: int) -> bytes:
        """The next ``n`` unread bytes (fewer if fewer are buffered), not consumed."""
        return self._buf[self._pos:self._pos + n]

    def next_line(self, limit: int):
        buf, pos = self._buf, self._pos
        if self._skipping:
            if self._skip_cr and buf[pos:pos + 1] == b"\n":
                self._pos = pos + 1
                self._skipping = self._skip_cr = False
                return LineReader.TOO_LONG
            i = buf.find(CRLF, pos)
            if i < 0:
                self._skip_cr = buf.endswith(b"\r")
                self._buf, self._pos = b"", 0
                return None
            self._pos = i + 2
            self._skipping = self._skip_cr = False
            return LineReader.TOO_LONG
        i = buf.find(CRLF, pos, pos + limit)
        if i >= 0:
            self._pos = i + 2
            return buf[pos:i]
        if len(buf) - pos >= limit:
            # No CRLF within the limit: the line is too long whatever follows. Drop what we
            # have (keeping only a trailing CR, which may pair with the next LF) and skip on.
            self._skipping = True
            self._skip_cr = False
            self._pos = pos + limit - 1
            return self.next_line(limit)
        return None


@dataclass(frozen=True, slots=True)
class DataProgress:
    """What one ``DataReader.feed`` produced."""

    chunk: bytes            # unstuffed content, possibly empty
    done: bool              # the end-of-data line was seen
    rest: bytes             # bytes after the end-of-data line (pipelined commands)


class DataReader:
    """Reads one DATA body. Counts its size as sent and stops passing content on once
    ``max_size`` is exceeded (the reader still reads to the real end)."""

    __slots__ = ("max_size", "line_limit", "normalize", "size", "bare_newline", "too_long", "too_big",
                 "_carry", "_skipping", "_skip_cr")

    def __init__(self, *, max_size: int, line_limit: int = 1000, normalize: bool = False):
        self.max_size = max_size
        self.line_limit = line_limit
        self.normalize = normalize
        # Octets of the body as sent (dot-stuffing included, the final "." line not), also
        # past the limit: counted on the raw stream so no read boundary can change it.
        self.size = 0
        self.bare_newline = False     # a bare LF or CR was seen
        self.too_long = False         # a line over line_limit was seen
        self.too_big = False          # size went over max_size
        self._carry = b""             # an incomplete line (starts at a line start)
        self._skipping = False        # inside an over-long line
        self._skip_cr = False

    def feed(self, data: bytes) -> DataProgress:
        if self._skipping:
            data = self._skip(data)
            if data is None:
                return DataProgress(b"", False, b"")
        buf = self._carry + data if self._carry else data
        self._carry = b""
        last = buf.rfind(CRLF)
        if last < 0:
            self._keep_tail(buf)
            return DataProgress(b"", False, b"")
        complete, tail = buf[:last + 2], buf[last + 2:]
        done, rest = False, b""
        if complete.startswith(b".\r\n"):
            end = 0
        else:
            end = complete.find(b"\r\n.\r\n")
            end = end + 2 if end >= 0 else -1
        if end >= 0:
            done = True
            rest = complete[end + 3:] + tail
            complete = complete[:end]
        else:
            self._keep_tail(tail)
        return DataProgress(self._content(complete), done, rest)

    def _skip(self, data: bytes) -> bytes | None:
        """Inside an over-long line: drop up to its CRLF, return what follows it. The
        dropped bytes are still counted and checked for bare CR/LF, so the verdict on a
        message never depends on how its bytes were split into reads."""
        if self._skip_cr:
            self._skip_cr = False
            if data[:1] == b"\n":
                self._count(1)
                self._skipping = False
                return data[1:]
            self.bare_newline = True          # the CR that ended the last read was bare
        i = data.find(CRLF)
        if i < 0:
            self._skip_cr = data.endswith(b"\r")
            self._check_bare(data[:-1] if self._skip_cr else data)
            self._count(len(data))
            return None
        self._check_bare(data[:i])
        self._count(i + 2)
        self._skipping = False
        return data[i + 2:]

    def _keep_tail(self, tail: bytes) -> None:
        if len(tail) >= self.line_limit:
            # Already over the limit without a CRLF: never buffer it. A final CR may pair
            # with the next LF, so remember it.
            self.too_long = True
            self._skipping = True
            self._skip_cr = tail.endswith(b"\r")
            self._check_bare(tail[:-1] if self._skip_cr else tail)
            self._count(len(tail))
            return
        self._carry = tail

    def _check_bare(self, part: bytes) -> None:
        """``part`` holds no CRLF: any CR or LF in it is bare."""
        if b"\n" in part or b"\r" in part:
            self.bare_newline = True

    def _count(self, n: int) -> None:
        self.size += n
        if self.size > self.max_size:
            self.too_big = True

    def _content(self, block: bytes) -> bytes:
        """Check and unstuff a run of complete CRLF lines. Once the message is known to be
        refused (too big, a line too long, a bare newline in reject mode) nothing more is
        handed on; the size is still counted."""
        if not block:
            return b""
        self._count(len(block))
        if len(block) > self.line_limit - 2:
            parts = block.split(CRLF)           # one C-speed pass gives lengths and pairs
            pairs = len(parts) - 1
            if not self.too_long and max(map(len, parts)) > self.line_limit - 2:
                self.too_long = True
        else:
            pairs = block.count(CRLF)
        # Every CR and LF must belong to a CRLF pair; counting is C speed and exact.
        if block.count(b"\n") != pairs or block.count(b"\r") != pairs:
            self.bare_newline = True
            bare = True
        else:
            bare = False
        if block[:1] == b".":
            block = block[1:]
        if b"\r\n." in block:
            block = block.replace(b"\r\n.", CRLF)
        if bare and self.normalize:
            block = block.replace(CRLF, b"\n").replace(b"\r", b"\n").replace(b"\n", CRLF)
        if self.too_big or self.too_long or (self.bare_newline and not self.normalize):
            return b""              # the message will be refused: hand nothing more on
        return block
