"""The on-disk record format of spool segments.

Owns: the segment header, the framing of one record (length, CRC-32, type, payload), the
payload layouts, and scanning a segment's bytes up to the first record that is incomplete
or fails its CRC (a torn tail after a crash). It must not know about the index, the
committer or what a record means for a message.

Layout::

    segment := MAGIC record*
    record  := u32 payload_len | u32 crc32(type || payload) | u8 type | payload
    MSG     := u8 flags | u32 meta_len | meta (JSON) | body (inline messages only)
    STATE, DEFER, DELETE := JSON

A MSG meta is the envelope, the size and, for a copy written by compaction, the message's
state at the time of the copy. Integers are little-endian.
"""
from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from typing import Iterator

MAGIC = b"MWSEG01\n"
HEADER = struct.Struct("<IIB")
MSG_HEAD = struct.Struct("<BI")

T_MSG = 1      # a committed message (envelope + inline body, or a pointer to large/<mid>)
T_STATE = 2    # one recipient's outcome: delivered / bounced / pending with a next attempt
T_DEFER = 3    # a failed attempt for some recipients: attempts += 1, next attempt, error
T_DELETE = 4   # removed from the queue by the operator

F_LARGE = 1    # body lives in its own file, large/<mid>

# A record larger than this cannot have been written by us: treat it as garbage (torn).
MAX_RECORD = 1 << 30

# ASCII-only JSON: any str (even a lone surrogate from a surrogateescape-decoded address)
# round-trips exactly, and the bytes are always valid UTF-8.
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode


def frame(rtype: int, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(bytes((rtype,))))
    return HEADER.pack(len(payload), crc, rtype) + payload


def msg_record(meta: dict, body: bytes | bytearray | memoryview | None) -> tuple[bytes, int]:
    """Return (framed record, offset of the body inside it)."""
    mb = _dumps(meta).encode()
    flags = 0 if body is not None else F_LARGE
    head = MSG_HEAD.pack(flags, len(mb)) + mb
    payload = head + bytes(body) if body is not None else head
    return frame(T_MSG, payload), HEADER.size + len(head)


def json_record(rtype: int, obj: dict) -> bytes:
    return frame(rtype, _dumps(obj).encode())


@dataclass(frozen=True)
class Record:
    offset: int           # of the record header in the segment
    rtype: int
    payload: memoryview

    @property
    def end(self) -> int:
        return self.offset + HEADER.size + len(self.payload)

    def json(self) -> dict:
        return json.loads(bytes(self.payload))

    def msg(self) -> tuple[int, dict, int, int]:
        """For T_MSG: (flags, meta, body offset in the segment, body length)."""
        flags, mlen = MSG_HEAD.unpack_from(self.payload, 0)
        meta = json.loads(bytes(self.payload[MSG_HEAD.size:MSG_HEAD.size + mlen]))
        body_rel = MSG_HEAD.size + mlen
        return flags, meta, self.offset + HEADER.size + body_rel, len(self.payload) - body_rel


class Scan:
    """Iterate the valid records of a segment image; afterwards ``.end`` is the offset just
    past the last valid record and ``.torn`` says whether bytes after it were discarded."""

    def __init__(self, buf: bytes | memoryview) -> None:
        self.buf = memoryview(buf)
        self.end = 0
        self.torn = False
        self.bad_magic = False

    def __iter__(self) -> Iterator[Record]:
        buf = self.buf
        n = len(buf)
        if n < len(MAGIC) or bytes(buf[:len(MAGIC)]) != MAGIC:
            # Empty or cut before the magic was complete: the segment holds nothing.
            self.bad_magic = n > 0
            self.torn = n > 0
            self.end = 0
            return
        pos = len(MAGIC)
        self.end = pos
        while pos < n:
            if n - pos < HEADER.size:
                self.torn = True
                return
            length, crc, rtype = HEADER.unpack_from(buf, pos)
            start = pos + HEADER.size
            if length > MAX_RECORD or start + length > n:
                self.torn = True
                return
            payload = buf[start:start + length]
            if zlib.crc32(payload, zlib.crc32(bytes((rtype,)))) != crc or rtype not in (T_MSG, T_STATE, T_DEFER, T_DELETE):
                self.torn = True
                return
            yield Record(pos, rtype, payload)
            pos = start + length
            self.end = pos
