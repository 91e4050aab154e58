"""A full or read-only spool file system under the whole gateway, over a real socket.

The spool lives on a small (8 MiB) tmpfs mounted for the test (root is needed; the test is skipped
with the reason when mounting is impossible). When the file system fills up or turns
read-only, reception answers 452 4.3.1 and the log says why (``Receiving Failed: Spool
error: ...``); the gateway keeps serving; once space returns, mail is accepted again; and
after a restart every message acknowledged before, during and after the fault is delivered.
"""
from __future__ import annotations

import os
import smtplib
import subprocess
import time

import pytest

from tests.support.tmpfs import tmpfs

from mailward.auth.users import UserStore
from tests.reliability.support import RecordingSink, message
from tests.support.gateway import config_text, start_gateway

MSG_SIZE = 40_000
LARGE_SIZE = 600_000          # above the spool's in-record threshold: needs a new file


@pytest.fixture
def tiny_fs(tmp_path):
    with tmpfs(tmp_path, "8m") as mnt:
        yield mnt


def gateway_cfg(tmp_path, spool, sink_port: int) -> str:
    text = config_text(tmp_path, extra=f"""
[delivery]
initial_retry = 1
max_retry_interval = 1

[[route]]
domain = "ALL"
hosts = [{{ host = "127.0.0.1", port = {sink_port} }}]
tls = "off"
""")
    return text.replace(f'spool_dir = "{tmp_path / "spool"}"', f'spool_dir = "{spool}"')


def send(port: int, mid: str, size: int = MSG_SIZE) -> tuple[int, str]:
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
            s.sendmail("load@client.test", ["rcpt@dest.test"], message(mid, size))
            return 250, ""
    except smtplib.SMTPDataError as exc:
        return exc.smtp_code, exc.smtp_error.decode()
    except smtplib.SMTPResponseException as exc:
        return exc.smtp_code, exc.smtp_error.decode()


@pytest.mark.parametrize("fault", ["full", "readonly"])
def test_spool_fault_gives_452_logs_why_and_loses_nothing_acknowledged(tmp_path, tiny_fs, fault):
    UserStore(tmp_path / "users.db", create=True)
    spool = tiny_fs / "spool"
    ballast = tiny_fs / "ballast"
    sink = RecordingSink()                       # not listening yet: mail stays queued
    g = start_gateway(gateway_cfg(tmp_path, spool, sink.port), tmp_path, delivery=True)
    acked, refusals = [], []
    try:
        for n in range(3):                        # before the fault
            assert send(g.port, f"before{n}@t")[0] == 250
            acked.append(f"before{n}@t")
        if fault == "full":
            free = os.statvfs(tiny_fs)
            ballast.write_bytes(b"\0" * max(0, free.f_bavail * free.f_frsize - 3 * MSG_SIZE))
        else:
            # A read-only bind mount over the spool: open descriptors keep writing, every new
            # file fails with EROFS, so bodies above the in-record threshold cannot be stored.
            subprocess.run(["mount", "--bind", str(spool), str(spool)], check=True, timeout=10)
            subprocess.run(["mount", "-o", "remount,bind,ro", str(spool)], check=True, timeout=10)
        for n in range(40):                       # bounded: the first few may still fit
            code, text = send(g.port, f"during{n}@t", MSG_SIZE if fault == "full" else LARGE_SIZE)
            if code == 250:
                acked.append(f"during{n}@t")
            else:
                refusals.append((code, text))
            if len(refusals) >= 3:
                break
        assert refusals, "the spool never refused a message"
        assert all(code == 452 and text.startswith("4.3.1") for code, text in refusals), refusals
        why = [line for line in g.log_bodies() if "Receiving Failed: Spool error:" in line]
        assert len(why) >= len(refusals), g.log_bodies()[-10:]
        # still serving: a plain command works on a new connection
        with smtplib.SMTP("127.0.0.1", g.port, timeout=10) as s:
            assert s.noop()[0] == 250
        # the fault goes away: mail is accepted again
        if fault == "full":
            ballast.unlink()
        else:
            subprocess.run(["umount", str(spool)], check=True, timeout=10)
        after = send(g.port, "after@t")
        assert after[0] == 250, (after, [l for l in g.log_bodies() if "Spool" in l][-3:])
        acked.append("after@t")
    finally:
        g.stop()
    # a fresh process on the same spool delivers every acknowledged message
    sink.start()
    g = start_gateway(gateway_cfg(tmp_path, spool, sink.port), tmp_path, delivery=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(sink.snapshot()[m] for m in acked):
            time.sleep(0.1)
        got = sink.snapshot()
        assert [m for m in acked if not got[m]] == []
        assert not any(m.startswith("during") and m not in acked for m in got)
    finally:
        g.stop()
        sink.close()
