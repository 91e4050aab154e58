"""A real full file system (a 1 MiB tmpfs): commits fail with SpoolError (the gateway's
452 4.3.1), nothing acknowledged is harmed, and the spool works again once space returns.
Needs root to mount; skipped otherwise."""
from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.tmpfs import tmpfs

from mailward.queue import Envelope, RcptState, Spool, SpoolError


@pytest.fixture
def tiny_fs(tmp_path):
    with tmpfs(tmp_path, "1m") as mnt:
        yield mnt


def body(mid: int, size: int) -> bytes:
    return (b"%d:" % mid) + bytes((mid + i) % 256 for i in range(size))


def test_full_disk_refuses_new_mail_and_keeps_acknowledged(tiny_fs):
    root = tiny_fs / "spool"
    ballast = tiny_fs / "ballast"
    ballast.write_bytes(b"\0" * (200 << 10))

    async def go():
        s = Spool(root, memory_threshold=16 << 10, segment_bytes=256 << 10)
        await s.open()
        acked: dict[int, bytes] = {}
        failures = 0
        for mid in range(1, 400):              # bounded: 1 MiB fills long before this
            data = body(mid, 30_000 if mid % 3 == 0 else 5_000)
            w = s.writer()
            try:
                for i in range(0, len(data), 4096):
                    w.write(data[i:i + 4096])
                await w.commit(Envelope(mid, 1, "s@x", ("r@x",), time.time()))
            except SpoolError:
                w.abort()
                failures += 1
                if failures >= 5:
                    break
                continue
            acked[mid] = data
        assert failures >= 5 and len(acked) > 10
        for mid, data in acked.items():
            assert s.read_body(mid) == data
        await s.close()

        s = Spool(root)
        await s.open()                         # recovery works on the full file system
        assert {m.mid for m in s.messages()} == set(acked)
        for mid, data in acked.items():
            assert s.read_body(mid) == data
        ballast.unlink()                       # space comes back
        w = s.writer()
        w.write(b"after")
        await w.commit(Envelope(1000, 1, "s@x", ("r@x",), time.time()))
        for mid in list(acked)[:5]:
            await s.record(mid, 0, RcptState.DELIVERED)
        await s.close()

        s = Spool(root)
        await s.open()
        assert {m.mid for m in s.messages()} == (set(acked) - set(list(acked)[:5])) | {1000}
        assert s.read_body(1000) == b"after"
        await s.close()

    asyncio.run(go())
