"""`mailward logs verify`: a hash-chained mail_logs detects deleted, inserted and edited lines."""
from __future__ import annotations

from click.testing import CliRunner

from mailward.cli import main
from mailward.maillog import events as ev
from mailward.maillog.writer import MailLogWriter


def write_log(tmp_path):
    w = MailLogWriter(tmp_path, version="0.1.0", serial="SN1", hash_chain=True)
    for i in range(1, 6):
        w.emit(ev.NewIcid(i, "IncomingMail", "127.0.0.1", "127.0.0.2", None, False))
        w.emit(ev.SmtpAuthResult(i, False, "ironport", "PLAIN", "IncomingAuthentication"))
        w.emit(ev.IcidClose(i))
    w.close()
    return tmp_path / "mail_logs" / "mail.current", tmp_path / "chain.key"


def verify(log, key):
    return CliRunner().invoke(main, ["logs", "verify", "--key", str(key), str(log)])


def test_untouched_log_verifies(tmp_path):
    log, key = write_log(tmp_path)
    r = verify(log, key)
    assert r.exit_code == 0, r.output
    assert r.output.strip().endswith("OK")


def _rewrite(log, fn):
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(fn(lines)))


def test_edited_line_detected(tmp_path):
    log, key = write_log(tmp_path)
    _rewrite(log, lambda ls: [l.replace("failed for user", "succeeded for user") for l in ls])
    r = verify(log, key)
    assert r.exit_code == 1 and "edited" in r.output


def test_deleted_line_detected(tmp_path):
    log, key = write_log(tmp_path)
    _rewrite(log, lambda ls: ls[:5] + ls[6:])
    r = verify(log, key)
    assert r.exit_code == 1 and "deleted" in r.output


def test_inserted_line_detected(tmp_path):
    log, key = write_log(tmp_path)
    forged = "Thu Nov 26 10:00:00 2026 Info: SMTP Auth: (ICID 3) succeeded for user: admin using AUTH mechanism: " \
             "PLAIN with profile: IncomingAuthentication\n"
    _rewrite(log, lambda ls: ls[:7] + [forged] + ls[7:])
    r = verify(log, key)
    assert r.exit_code == 1 and "inserted" in r.output


def test_wrong_key_fails(tmp_path):
    log, key = write_log(tmp_path)
    key.write_text("00" * 32)
    assert verify(log, key).exit_code == 1
