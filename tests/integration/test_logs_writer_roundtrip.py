"""Logs written by the gateway's own writer (MailLogWriter: header, local time with a UTC
offset, rolling to ``mail.@….s``) are read back by the toolkit and joined across the rolls, and
``follow`` keeps up with the writer rolling under it."""
from __future__ import annotations

import json
import threading
import time
from datetime import timedelta, timezone

from click.testing import CliRunner

from mailward.logs.cli import logs_group
from mailward.maillog import events as E
from mailward.maillog.writer import MailLogWriter

T0 = 1_772_438_400.0          # 2026-03-02T08:00:00Z
TZ = timezone(timedelta(hours=-6))


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def seed_story(w: MailLogWriter, clock: Clock, icid: int, mid: int, dcid: int, user: str, ok: bool) -> None:
    def at(dt: float, ev: E.Event) -> None:
        clock.now += dt
        w.emit(ev)

    at(1, E.NewIcid(icid, "IncomingMail", "172.16.155.16", "172.16.155.102", None, False))
    at(0, E.HatDecision(icid, "ACCEPT", "None", "ALL", "None"))
    at(1, E.SmtpAuthResult(icid, True, user, "PLAIN", "IncomingAuthentication"))
    at(1, E.StartMid(mid, icid))
    at(0, E.MailFrom(mid, icid, f"{user}@example.test"))
    at(0, E.RcptTo(mid, icid, 0, "postmaster@example.com"))
    at(0, E.MessageIdHeader(mid, f"<{mid}@example.test>"))
    at(0, E.SubjectHeader(mid, "through two AUTHs"))
    at(0, E.MessageReady(mid, 321, f"{user}@example.test"))
    at(0, E.PolicyMatch(mid, "DEFAULT", "outbound"))
    at(0, E.QueuedForDelivery(mid))
    at(1, E.IcidClose(icid))
    at(1, E.NewDcid(dcid, "172.16.155.16", "172.16.155.102", 25))
    resp = None if ok else E.SmtpResponse("535", ("5.7.8 Error: authentication failed: authentication failure",))
    at(2, E.OutboundAuthResult(dcid, "172.16.155.102", "OutboundAuthentication", ok, resp))
    at(0, E.DeliveryStart(dcid, mid, (0,)))
    if ok:
        at(0, E.MessageDone(dcid, mid, (0,)))
        at(0, E.DeliveryResponse(mid, (0,), "2.0.0 Ok: queued as 4Xyz"))
    else:
        at(0, E.Bounced(dcid, mid, 0, "5.1.0", "Unknown address error",
                        E.SmtpResponse("554", ("5.7.1 <postmaster@example.com>: Relay access denied",)),
                        by_destination=True))
    at(0, E.MessageFinished(mid, "done"))
    at(5, E.DcidClose(dcid))


def test_writer_output_rolled_and_read_back_joined(tmp_path):
    clock = Clock()
    w = MailLogWriter(tmp_path, version="0.1.0", serial="MW-TEST-SERIAL", max_bytes=1500, clock=clock, tz=TZ)
    try:
        for i in range(6):
            seed_story(w, clock, 450 + i, 441 + i, 5633 + i, "ironport", ok=(i % 2 == 0))
    finally:
        w.close()
    files = sorted((tmp_path / "mail_logs").glob("mail.*"))
    assert len(files) >= 4, files                   # rolled several times, stories span rolls
    names = [str(p) for p in reversed(files)]       # newest first on purpose
    res = CliRunner().invoke(logs_group, ["auth", *names, "--format", "json"], catch_exceptions=False)
    d = json.loads(res.stdout)
    assert d["summary"]["by_user"]["ironport"]["successes"] == 6
    prof = d["summary"]["by_profile"]["OutboundAuthentication"]
    assert (prof["successes"], prof["failures"]) == (3, 3)
    assert {a["appliance"] for a in d["attempts"]} == {"MW-TEST-SERIAL"}
    # local time -06:00 in the file, UTC in the report
    assert d["attempts"][0]["time"] == "2026-03-02T08:00:02Z"

    res = CliRunner().invoke(logs_group, ["export", *names, "--format", "jsonl"], catch_exceptions=False)
    recs = {r["mid"]: r for r in map(json.loads, res.stdout.splitlines())}
    assert sorted(recs) == list(range(441, 447))
    for i, mid in enumerate(range(441, 447)):
        r = recs[mid]
        assert (r["icid"], r["dcid"], r["peer_ip"], r["auth_user"]) == (450 + i, 5633 + i, "172.16.155.102", "ironport")
        assert r["recipient"] == "postmaster@example.com" and r["subject"] == "through two AUTHs"
        assert r["outcome"] == ("delivered" if i % 2 == 0 else "bounced")
        assert r["outbound_auth"] == ("success" if i % 2 == 0 else "failure")
        assert r["message_status"] == "done" and not r["expired"]


def test_follow_keeps_up_with_the_writer_rolling(tmp_path):
    clock = Clock()
    w = MailLogWriter(tmp_path, version="0.1.0", serial="MW-FOLLOW", max_bytes=700, clock=clock, tz=TZ)
    path = tmp_path / "mail_logs" / "mail.current"

    def attack():
        time.sleep(0.3)
        for i in range(8):
            clock.now += 1
            w.emit(E.NewIcid(900 + i, "IncomingMail", "10.0.0.1", "198.51.100.23", None, False))
            w.emit(E.SmtpAuthResult(900 + i, False, f"user{i}", "LOGIN", "IncomingAuthentication"))
            w.emit(E.IcidClose(900 + i))
            time.sleep(0.03)

    th = threading.Thread(target=attack)
    th.start()
    try:
        res = CliRunner().invoke(logs_group, ["follow", str(path), "--from-start", "--max-seconds", "2",
                                              "--poll", "0.02", "--spray-users", "6", "--format", "json"],
                                 catch_exceptions=False)
    finally:
        th.join(5)
        w.close()
    findings = [json.loads(x) for x in res.stdout.splitlines()]
    assert [(f["kind"], f["key"]) for f in findings] == [("password_spray", "198.51.100.23")]
    assert len(findings[0]["users"]) == 6
    assert len(list((tmp_path / "mail_logs").glob("mail.@*.s"))) >= 2      # it did roll under us
    assert "rotation(s)" in res.stderr and "0 rotation(s)" not in res.stderr
