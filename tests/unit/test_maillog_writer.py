"""MailLogWriter: file layout, header, batching (sync and under asyncio), rotation by size
and age, never raising, and the hash chain."""
from __future__ import annotations

import asyncio
import os
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

from mailward.maillog import MailLogWriter, parse_line
from mailward.maillog import events as ev
from mailward.maillog.chain import load_or_create_key, verify
from mailward.maillog.sink import EventSink

T0 = datetime(2009, 4, 22, 11, 43, 59, tzinfo=timezone.utc).timestamp()
TZ = timezone(timedelta(hours=-6))


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _writer(tmp_path: Path, **kw) -> MailLogWriter:
    kw.setdefault("clock", Clock())
    kw.setdefault("tz", TZ)
    return MailLogWriter(tmp_path, version="0.1.0", serial="MW-TEST-1", **kw)


def _read(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_writer_satisfies_event_sink(tmp_path):
    w: EventSink = _writer(tmp_path)
    w.emit(ev.IcidClose(1))
    w.close()


def test_new_file_has_the_appliance_header_and_local_ctime(tmp_path):
    w = _writer(tmp_path)
    w.emit(ev.SmtpAuthResult(450, True, "ironport", "PLAIN", "IncomingAuthentication"))
    w.close()
    lines = _read(tmp_path / "mail_logs" / "mail.current")
    assert lines == [
        "Wed Apr 22 05:43:59 2009 Info: Begin Logfile",
        "Wed Apr 22 05:43:59 2009 Info: Version: 0.1.0 SN: MW-TEST-1",
        "Wed Apr 22 05:43:59 2009 Info: Time offset from UTC: -21600 seconds",
        "Wed Apr 22 05:43:59 2009 Info: SMTP Auth: (ICID 450) succeeded for user: ironport using AUTH "
        "mechanism: PLAIN with profile: IncomingAuthentication",
    ]


def test_subscription_names_the_folder(tmp_path):
    w = _writer(tmp_path, subscription="sc4s_mail_logs")
    w.emit(ev.IcidClose(3))
    w.close()
    assert (tmp_path / "sc4s_mail_logs" / "mail.current").is_file()


def test_without_loop_each_emit_is_written_at_once(tmp_path):
    w = _writer(tmp_path)
    w.emit(ev.IcidClose(1))
    assert _read(w.path)[-1].endswith("Info: ICID 1 close")
    w.close()


def test_under_asyncio_emits_are_batched_into_one_write(tmp_path, monkeypatch):
    w = _writer(tmp_path)
    writes = []
    real = w._write

    def spy(lines, data=None):
        writes.append(list(lines))
        real(lines, data)

    monkeypatch.setattr(w, "_write", spy)

    async def main():
        for i in range(50):
            w.emit(ev.IcidClose(i))
        assert writes == []          # nothing written inside emit
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(main())
    assert len(writes) == 1 and len(writes[0]) == 50
    w.close()
    assert len(_read(w.path)) == 3 + 50


def test_close_loses_nothing_batched(tmp_path):
    w = _writer(tmp_path)

    async def main():
        for i in range(10):
            w.emit(ev.DcidClose(i))
        w.close()                    # before the loop ran the scheduled flush

    asyncio.run(main())
    body = [parse_line(x).event for x in _read(w.path)[3:]]
    assert body == [ev.DcidClose(i) for i in range(10)]


def test_rotation_by_size_rolls_to_saved_file_with_header_each(tmp_path):
    clock = Clock()
    w = _writer(tmp_path, max_bytes=600, clock=clock)
    for i in range(40):
        clock.t += 1
        w.emit(ev.MidNote(i, "antivirus negative"))
    w.close()
    folder = tmp_path / "mail_logs"
    saved = sorted(p.name for p in folder.glob("mail.@*.s"))
    assert saved and all(len(n) == len("mail.@20090422T054400.s") for n in saved)
    events = []
    for name in saved + ["mail.current"]:
        lines = _read(folder / name)
        assert lines[0].endswith("Info: Begin Logfile")
        assert lines[1].endswith("Version: 0.1.0 SN: MW-TEST-1")
        assert (folder / name).stat().st_size <= 600 or len(lines) == 4
        assert not any("End Logfile" in x for x in lines)
        events += [parse_line(x).event for x in lines[3:]]
    assert events == [ev.MidNote(i, "antivirus negative") for i in range(40)]


def test_rotation_by_age(tmp_path):
    clock = Clock()
    w = _writer(tmp_path, max_bytes=None, rotate_seconds=60, clock=clock)
    w.emit(ev.IcidClose(1))
    clock.t += 61
    w.emit(ev.IcidClose(2))
    w.close()
    folder = tmp_path / "mail_logs"
    saved = list(folder.glob("mail.@*.s"))
    assert [p.name for p in saved] == ["mail.@20090422T054500.s"]
    assert _read(saved[0])[-1].endswith("ICID 1 close")
    assert _read(folder / "mail.current")[-1].endswith("ICID 2 close")


def test_restart_rolls_the_previous_current_file(tmp_path):
    _writer(tmp_path).close()
    w = _writer(tmp_path, clock=Clock(T0 + 5))
    w.close()
    assert len(list((tmp_path / "mail_logs").glob("mail.@*.s"))) == 1


def test_emit_never_raises(tmp_path):
    w = _writer(tmp_path)

    class Weird(ev.Event):
        pass

    w.emit(Weird())                                  # no template
    w.emit(ev.IcidClose("not a number"))             # type: ignore[arg-type]
    assert w.errors == 2
    w._fh.close()                                    # a broken file: the write fails, emit still returns
    w.emit(ev.IcidClose(1))
    assert w.errors == 3
    w.close()
    w.emit(ev.IcidClose(2))                          # after close
    assert w.errors == 4


def test_client_text_cannot_forge_a_line(tmp_path):
    w = _writer(tmp_path)
    forged = "bob\nWed Apr 22 05:43:59 2009 Info: SMTP Auth: (ICID 9) succeeded for user: admin"
    w.emit(ev.SmtpAuthResult(9, False, forged, "PLAIN", "p"))
    w.close()
    lines = _read(w.path)
    assert len(lines) == 4
    assert parse_line(lines[3]).event == ev.SmtpAuthResult(9, False, forged, "PLAIN", "p")


# --- hash chain ---------------------------------------------------------------------------

def _chained(tmp_path: Path, n: int = 6) -> tuple[Path, Path, bytes]:
    keyfile = tmp_path / "chain.key"
    w = _writer(tmp_path, chain_key_file=keyfile)
    for i in range(n):
        w.emit(ev.IcidClose(i))
    w.close()
    return w.path, w.chain_path, load_or_create_key(keyfile)


def test_key_file_is_created_private(tmp_path):
    key = load_or_create_key(tmp_path / "k")
    assert len(key) == 32
    assert stat.S_IMODE(os.stat(tmp_path / "k").st_mode) == 0o600
    assert load_or_create_key(tmp_path / "k") == key


def test_untouched_chain_verifies(tmp_path):
    log, chain, key = _chained(tmp_path)
    assert len(_read(chain)) == len(_read(log)) == 9
    assert verify(log, chain, key) == []


def _rewrite(path: Path, lines: list[str]) -> None:
    path.write_text("".join(x + "\n" for x in lines), encoding="utf-8")


def test_deleted_line_is_detected(tmp_path):
    log, chain, key = _chained(tmp_path)
    lines = _read(log)
    del lines[5]
    _rewrite(log, lines)
    problems = verify(log, chain, key)
    assert [(p.kind, p.line) for p in problems] == [("deleted", 6)]


def test_inserted_line_is_detected(tmp_path):
    log, chain, key = _chained(tmp_path)
    lines = _read(log)
    lines.insert(4, lines[4].replace("ICID 1", "ICID 77"))
    _rewrite(log, lines)
    assert [(p.kind, p.line) for p in verify(log, chain, key)] == [("inserted", 5)]


def test_edited_line_is_detected(tmp_path):
    log, chain, key = _chained(tmp_path)
    lines = _read(log)
    lines[6] = lines[6].replace("close", "lost")
    _rewrite(log, lines)
    assert [(p.kind, p.line) for p in verify(log, chain, key)] == [("edited", 7)]


def test_wrong_key_fails_every_line(tmp_path):
    log, chain, _ = _chained(tmp_path)
    assert len(verify(log, chain, b"x" * 32)) == 9


def test_chain_follows_rotation(tmp_path):
    keyfile = tmp_path / "chain.key"
    clock = Clock()
    w = _writer(tmp_path, chain_key_file=keyfile, max_bytes=500, clock=clock)
    for i in range(30):
        clock.t += 1
        w.emit(ev.DcidClose(i))
    w.close()
    key = load_or_create_key(keyfile)
    saved = sorted((tmp_path / "mail_logs").glob("mail.@*.s"))
    assert saved
    for log in saved + [w.path]:
        assert verify(log, log.with_name(log.name + ".chain"), key) == []


def test_hash_chain_flag_uses_a_key_beside_the_subscription_folders(tmp_path):
    w = _writer(tmp_path, hash_chain=True)
    w.emit(ev.IcidClose(1))
    w.close()
    key = load_or_create_key(tmp_path / "chain.key")
    assert stat.S_IMODE(os.stat(tmp_path / "chain.key").st_mode) == 0o600
    assert verify(w.path, w.chain_path, key) == []


def test_each_line_carries_its_own_second_across_second_and_day_boundaries(tmp_path):
    clock = Clock(T0 + 0.2)
    w = _writer(tmp_path, clock=clock)
    for dt in (0.0, 0.7, 0.79, 1.9, 86400.0):       # same second, a later one, next day
        clock.t = T0 + 0.2 + dt
        w.emit(ev.IcidClose(int(dt * 100)))
    w.close()
    stamps = [ln[:24] for ln in _read(tmp_path / "mail_logs" / "mail.current")[3:]]
    assert stamps == ["Wed Apr 22 05:43:59 2009"] * 3 + ["Wed Apr 22 05:44:01 2009", "Thu Apr 23 05:43:59 2009"]


def test_a_later_loop_in_the_same_thread_gets_the_flushes(tmp_path):
    """The writer remembers the loop it scheduled on; a second loop after the first ended (as
    in two asyncio.run calls) must still get its batches flushed, and a thread without a loop
    writes at once even while another thread's loop runs."""
    import threading

    w = _writer(tmp_path)

    async def batch(start):
        for i in range(start, start + 3):
            w.emit(ev.IcidClose(i))
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(batch(1))
    asyncio.run(batch(4))
    assert [x.rsplit(" ", 2)[-2] for x in _read(w.path)[3:]] == ["1", "2", "3", "4", "5", "6"]

    async def with_other_thread():
        t = threading.Thread(target=lambda: w.emit(ev.IcidClose(99)))
        t.start()
        t.join()
        assert _read(w.path)[-1].endswith("ICID 99 close")    # written by that thread, at once
        w.emit(ev.IcidClose(7))
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(with_other_thread())
    assert _read(w.path)[-1].endswith("ICID 7 close")
    w.close()
