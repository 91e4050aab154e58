"""Rebuilding the index from the segment files.

Owns: listing segments, replaying their records in order into an ``Index``, and (only
when asked to repair, i.e. by the process that owns the spool) truncating a torn tail and
removing body files nobody references. The read-only view used by ``mailward queue`` calls
the same replay without repair while the gateway may be writing. It must not know about
the committer or the network.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .index import Index, Location
from .records import F_LARGE, MAGIC, T_MSG, Scan

SEGMENTS = "segments"
LARGE = "large"


def seg_path(root: Path, n: int) -> Path:
    return root / SEGMENTS / f"{n:08d}.seg"


def segment_numbers(root: Path) -> list[int]:
    out = []
    try:
        names = os.listdir(root / SEGMENTS)
    except FileNotFoundError:
        return []
    for name in names:
        stem, dot, ext = name.partition(".")
        if ext == "seg" and stem.isdigit():
            out.append(int(stem))
    return sorted(out)


@dataclass
class Replayed:
    index: Index
    seg_sizes: dict[int, int] = field(default_factory=dict)   # valid length of each segment
    file_sizes: dict[int, int] = field(default_factory=dict)  # incl. a preallocated zero tail
    torn: dict[int, int] = field(default_factory=dict)        # segment -> bytes discarded


class SegmentVanished(Exception):
    """A segment listed at the start of a read-only replay was reclaimed meanwhile."""


def replay(root: Path, *, repair: bool) -> Replayed:
    out = Replayed(Index())
    for n in segment_numbers(root):
        path = seg_path(root, n)
        try:
            fd = os.open(path, os.O_RDWR if repair else os.O_RDONLY)
        except FileNotFoundError:
            raise SegmentVanished(n) from None
        try:
            size = os.fstat(fd).st_size
            zero_tail = _replay_segment(out, n, fd, size)
            end = out.seg_sizes[n]
            out.file_sizes[n] = size
            if end < size and not zero_tail:
                out.torn[n] = size - end
                if repair:
                    # Whatever follows the last valid record was never acknowledged (acks
                    # come only after fdatasync of complete records): cut it off so new
                    # records are appended to a clean log.
                    os.ftruncate(fd, end)
                    os.fsync(fd)
                    out.file_sizes[n] = end
        finally:
            os.close(fd)
    if repair:
        _remove_unreferenced_large(root, out.index)
    return out


def _replay_segment(out: Replayed, n: int, fd: int, size: int) -> bool:
    """Replay one segment; returns True if everything after its last record is zeros
    (the committer's preallocation, not a torn write)."""
    idx = out.index
    if size == 0:
        out.seg_sizes[n] = 0
        return True
    data = _read_all(fd, size)
    scan = Scan(data)
    for rec in scan:
        if rec.rtype == T_MSG:
            flags, meta, body_off, body_len = rec.msg()
            msg = idx.msg_from_meta(meta)
            large = bool(flags & F_LARGE)
            idx.put(msg, Location(n, body_off, msg.size if large else body_len, large))
        else:
            idx.apply(rec.rtype, rec.json())
    out.seg_sizes[n] = scan.end
    rest = len(data) - scan.end
    return scan.end >= len(MAGIC) and data.count(0, scan.end) == rest


def _read_all(fd: int, size: int) -> bytes:
    parts = []
    pos = 0
    while pos < size:
        chunk = os.pread(fd, min(size - pos, 16 << 20), pos)
        if not chunk:
            break  # the file shrank under a read-only reader: what we have is what there is
        parts.append(chunk)
        pos += len(chunk)
    return b"".join(parts)


def _remove_unreferenced_large(root: Path, idx: Index) -> None:
    keep = {str(mid) for mid, loc in idx.loc.items() if loc.large}
    d = root / LARGE
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return
    for name in names:
        if name not in keep:
            # Spill files of receptions that never committed, and bodies of finished messages.
            try:
                os.unlink(d / name)
            except FileNotFoundError:
                pass


def snapshot(root: Path, *, attempts: int = 5) -> Replayed:
    """Read-only replay for viewers while the owner may be writing.

    Consistency: the result is the queue as of some moment during the call, except that a
    commit being written at that moment may or may not be included (a record still being
    appended fails its CRC and is ignored, never truncated). If the owner reclaims a segment
    while we read, we start over (bounded), so a reclaimed segment never makes live messages
    vanish from the view."""
    for attempt in range(attempts):
        try:
            return replay(root, repair=False)
        except SegmentVanished:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover
