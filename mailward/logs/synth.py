"""Synthetic but realistic mail_logs, written through the real formatter.

Owns a seeded simulation of an appliance's day: inbound connections (HAT decision, TLS, SMTP
AUTH successes and failures, password-guessing bots), messages with several recipients, delivery
connections (TLS, outbound AUTH), delivered / bounced / delayed recipients, bcc copies and
bounce messages, all interleaved as concurrent sessions interleave in a real log. Used by
``bench/logs.py`` and by tests that need large or attack-shaped logs. Every line is produced by
``mailward.maillog.grammar.format_file_line``, so the lines are exactly what the gateway writes.
"""
from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Iterator, TextIO

from mailward.maillog import events as E
from mailward.maillog.grammar import format_file_line

HEADER_TIME = datetime(2026, 11, 26, 0, 0, 0)


def header(when: datetime = HEADER_TIME, serial: str = "4C4C4544-0042-SYNTH", offset: int = 0) -> list[str]:
    return [format_file_line(E.BeginLogfile(), when),
            format_file_line(E.VersionInfo("16.0.0-000", serial), when),
            format_file_line(E.TimeOffset(offset), when)]


class _Ids:
    def __init__(self) -> None:
        self.icid = 1000
        self.mid = 5000
        self.dcid = 9000

    def next(self, kind: str) -> int:
        v = getattr(self, kind) + 1
        setattr(self, kind, v)
        return v


def _session(rng: random.Random, ids: _Ids, users: list[str]) -> Iterator[E.Event]:
    """One inbound connection and what follows from it, as a stream of events."""
    icid = ids.next("icid")
    peer = f"198.51.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    yield E.NewIcid(icid, "IncomingMail", "10.0.0.25", peer,
                    None if rng.random() < 0.3 else f"host-{peer.replace('.', '-')}.example.net",
                    rng.random() < 0.5)
    if rng.random() < 0.08:
        yield E.HatDecision(icid, "REJECT", "BLACKLIST", "sbrs[-10.0:-3.0]", "-5.2")
        yield E.IcidClose(icid)
        return
    relay = rng.random() < 0.4
    yield E.HatDecision(icid, "RELAY" if relay else "ACCEPT", "RELAYLIST" if relay else "UNKNOWNLIST",
                        "ALL" if relay else "sbrs[-1.0:10.0]", "None" if relay else f"{rng.uniform(-1, 10):.1f}")
    if rng.random() < 0.6:
        yield E.IcidTlsSuccess(icid, "TLSv1.3", "TLS_AES_256_GCM_SHA384")
    if relay:
        user = rng.choice(users)
        for _ in range(rng.choice((0, 0, 0, 1, 2))):
            yield E.SmtpAuthResult(icid, False, user, "PLAIN", "IncomingAuthentication")
        yield E.SmtpAuthResult(icid, True, user, rng.choice(("PLAIN", "LOGIN")), "IncomingAuthentication")
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        mid = ids.next("mid")
        sender = f"s{rng.randrange(5000)}@{'example.org' if relay else 'sender.example'}"
        yield E.StartMid(mid, icid)
        yield E.MailFrom(mid, icid, sender)
        nr = rng.choice((1, 1, 1, 2, 3, 5))
        for rid in range(nr):
            yield E.RcptTo(mid, icid, rid, f"r{rng.randrange(20000)}@dest{rid % 7}.example")
        yield E.MessageIdHeader(mid, f"<{mid}.{rng.randrange(10**9)}@mx.example>")
        yield E.SubjectHeader(mid, rng.choice(("Invoice", "Re: meeting", "Hello", "Report Q3",
                                               "Your order #%d" % rng.randrange(10**5))))
        yield E.MessageReady(mid, rng.randrange(800, 200000), sender)
        yield E.PolicyMatch(mid, "DEFAULT", "outbound" if relay else "inbound")
        yield E.MidNote(mid, "interim verdict using engine: CASE spam negative")
        yield E.MidNote(mid, "using engine: CASE spam negative")
        yield E.MidNote(mid, "antivirus negative")
        yield E.MidNote(mid, "Outbreak Filters: verdict negative")
        yield E.QueuedForDelivery(mid)
        dcid = ids.next("dcid")
        dest = f"203.0.113.{rng.randrange(1, 255)}"
        yield E.NewDcid(dcid, "10.0.0.25", dest, 25)
        if rng.random() < 0.7:
            yield E.DcidTlsSuccess(dcid, "TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384")
        if relay and rng.random() < 0.2:
            ok = rng.random() < 0.9
            yield E.OutboundAuthResult(dcid, dest, "OutboundAuthentication", ok,
                                       None if ok else E.SmtpResponse(
                                           "535", ("5.7.8 Error: authentication failed: authentication failure",)))
        rids = tuple(range(nr))
        yield E.DeliveryStart(dcid, mid, rids)
        fate = rng.random()
        if fate < 0.85:
            yield E.MessageDone(dcid, mid, rids)
            yield E.DeliveryResponse(mid, rids, f"2.0.0 Ok: queued as {rng.randrange(16**10):X}")
        elif fate < 0.95:
            for rid in rids:
                yield E.Bounced(dcid, mid, rid, "5.1.0", "Unknown address error",
                                E.SmtpResponse("550", (f"5.1.1 <r{rid}@dest.example>: Recipient address rejected",)))
            bmid = ids.next("mid")
            yield E.StartMid(bmid, 0)
            yield E.GeneratedForBounce(bmid, mid)
            yield E.MailFrom(bmid, 0, "")
            yield E.RcptTo(bmid, 0, 0, sender)
            yield E.MessageFinished(bmid, "done")
        else:
            for rid in rids:
                yield E.Delayed(dcid, mid, rid, "4.3.2", "Not accepting messages at this time",
                                E.SmtpResponse("421", ("4.3.2 try again later",)))
            yield E.PendingTill(mid, rids, "Thu Nov 26 23:00:00 2026")
        yield E.MessageFinished(mid, "done")
        yield E.DcidClose(dcid)
    yield E.IcidClose(icid)


def _bot(rng: random.Random, ids: _Ids, users: list[str]) -> Iterator[E.Event]:
    """A password-guessing client: one connection, several failed logins, then close."""
    icid = ids.next("icid")
    peer = f"192.0.2.{rng.randrange(1, 30)}"
    yield E.NewIcid(icid, "IncomingMail", "10.0.0.25", peer, None, False)
    yield E.HatDecision(icid, "ACCEPT", "UNKNOWNLIST", "sbrs[-1.0:10.0]", "-0.5")
    for _ in range(rng.randrange(1, 6)):
        yield E.SmtpAuthResult(icid, False, rng.choice(users + ["admin", "test", "info"]), "LOGIN",
                               "IncomingAuthentication")
    yield E.IcidClose(icid)


def write(out: TextIO, lines: int, seed: int = 1, start: datetime = HEADER_TIME,
          concurrency: int = 20, with_header: bool = True) -> int:
    """Write about ``lines`` lines (stops at the first session end past it). Returns the count."""
    rng = random.Random(seed)
    ids = _Ids()
    users = [f"user{i}" for i in range(200)]
    now = start
    n = 0
    if with_header:
        for ln in header(start):
            out.write(ln + "\n")
            n += 1
    active: list[Iterator[E.Event]] = []
    fmt = format_file_line
    step = timedelta(milliseconds=40)
    while n < lines or active:
        while n < lines and len(active) < concurrency:
            active.append(_bot(rng, ids, users) if rng.random() < 0.05 else _session(rng, ids, users))
        i = rng.randrange(len(active))
        ev = next(active[i], None)
        if ev is None:
            active[i] = active[-1]
            active.pop()
            continue
        now += step
        out.write(fmt(ev, now) + "\n")
        n += 1
    return n
