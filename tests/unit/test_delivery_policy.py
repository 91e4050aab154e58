"""The failure-policy table, the appliance's status texts, the retry schedule, routes, next
hops from an injected resolver, fair ordering, AUTH mechanism choice and DSN bytes."""
from __future__ import annotations

import asyncio
import email
import email.policy
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailward.delivery.client import DotStuffer, Reply, _parse_ehlo, choose_mechanism
from mailward.delivery.dsn import FailedRecipient, build_dsn, original_headers, wants_dsn
from mailward.delivery.schedule import fair_order
from mailward.delivery.routes import (DestinationError, Route, RouteHost, RouteTable, domain_of, next_hops,
                                      routes_from_config)
from mailward.delivery.trouble import (EXPIRED, Kind, Outcome, RetryPolicy, Stage, after_last_host,
                                       as_temporary, decide, status_for)
from mailward.maillog.events import SmtpResponse
from mailward.net.dns import StaticResolver
from mailward.queue.model import Envelope, QueuedMessage, RcptState


# --- trouble table --------------------------------------------------------------------------

@pytest.mark.parametrize("stage,kind,outcome", [
    (Stage.CONNECT, Kind.NETWORK, Outcome.NEXT_HOST),
    (Stage.CONNECT, Kind.TIMEOUT, Outcome.NEXT_HOST),
    (Stage.GREETING, Kind.TEMP, Outcome.NEXT_HOST),
    (Stage.EHLO, Kind.PERM, Outcome.NEXT_HOST),
    (Stage.STARTTLS, Kind.TLS, Outcome.NEXT_HOST),
    (Stage.AUTH, Kind.TEMP, Outcome.NEXT_HOST),
    (Stage.MAIL, Kind.TEMP, Outcome.DEFER_MESSAGE),
    (Stage.MAIL, Kind.PERM, Outcome.BOUNCE_MESSAGE),
    (Stage.RCPT, Kind.TEMP, Outcome.DEFER_RECIPIENT),
    (Stage.RCPT, Kind.PERM, Outcome.BOUNCE_RECIPIENT),
    (Stage.RCPT, Kind.NETWORK, Outcome.DEFER_MESSAGE),
    (Stage.DATA, Kind.TEMP, Outcome.DEFER_MESSAGE),
    (Stage.DATA, Kind.PERM, Outcome.BOUNCE_MESSAGE),
    (Stage.DATA, Kind.TIMEOUT, Outcome.DEFER_MESSAGE),
    (Stage.DNS, Kind.TEMP, Outcome.DEFER_DESTINATION),
    (Stage.DNS, Kind.PERM, Outcome.BOUNCE_MESSAGE),
])
def test_table(stage, kind, outcome):
    assert decide(stage, kind) is outcome


def test_auth_failure_is_the_routes_choice():
    assert decide(Stage.AUTH, Kind.PERM, on_auth_failure="continue") is Outcome.CONTINUE
    assert decide(Stage.AUTH, Kind.PERM, on_auth_failure="defer") is Outcome.DEFER_DESTINATION
    with pytest.raises(ValueError):
        decide(Stage.AUTH, Kind.PERM, on_auth_failure="bounce")


def test_after_the_last_host():
    assert after_last_host(Stage.GREETING, Kind.PERM) is Outcome.BOUNCE_MESSAGE
    assert after_last_host(Stage.CONNECT, Kind.NETWORK) is Outcome.DEFER_DESTINATION
    assert after_last_host(Stage.STARTTLS, Kind.TLS) is Outcome.DEFER_DESTINATION


def test_status_texts():
    # The seed: Postfix's 554 to RCPT is logged as 5.1.0 - Unknown address error.
    s = status_for(Stage.RCPT, Kind.PERM, 554)
    assert (s.code, s.description) == ("5.1.0", "Unknown address error")
    s = status_for(Stage.CONNECT, Kind.NETWORK)
    assert (s.code, s.description) == ("4.4.0", "Other network problem")
    assert status_for(Stage.MAIL, Kind.TEMP, 421).code == "4.3.2"
    assert (EXPIRED.code, EXPIRED.description) == ("5.4.7", "Delivery expired (message too old)")
    assert as_temporary(status_for(Stage.AUTH, Kind.PERM)).code == "4.7.0"


def test_retry_schedule_is_the_appliance_default():
    p = RetryPolicy()
    assert [p.delay(n) for n in (1, 2, 3, 4, 5, 6, 7, 8)] == [60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert p.delay(100) == 3600
    assert p.next_attempt(attempts=1, now=1000.0, received_at=1000.0) == 1060.0
    assert p.next_attempt(attempts=100, now=1000.0, received_at=1000.0) is None
    # 72 hours: a retry that would land after the lifetime is no retry at all.
    assert p.next_attempt(attempts=5, now=72 * 3600 - 10, received_at=0.0) is None
    assert p.expired(attempts=3, now=72 * 3600 + 1, received_at=0.0)
    assert not p.expired(attempts=3, now=3600, received_at=0.0)


# --- routes ---------------------------------------------------------------------------------

def test_route_lookup_exact_suffix_default():
    t = RouteTable([Route("example.com", (RouteHost("10.0.0.1"),)),
                    Route(".example.com", (RouteHost("10.0.0.2"),)),
                    Route(".mail.example.com", (RouteHost("10.0.0.3"),)),
                    Route("ALL", (RouteHost("10.0.0.9"),))])
    assert t.lookup("Example.COM.").hosts[0].host == "10.0.0.1"
    assert t.lookup("a.example.com").hosts[0].host == "10.0.0.2"
    assert t.lookup("x.mail.example.com").hosts[0].host == "10.0.0.3"
    assert t.lookup("other.org").hosts[0].host == "10.0.0.9"
    assert RouteTable([]).lookup("other.org").usedns          # no route at all: DNS
    assert domain_of("Bob@Example.COM") == "example.com" and domain_of("postmaster") == ""


def test_route_rejects_bad_options():
    with pytest.raises(ValueError):
        Route("x", tls="sometimes")
    with pytest.raises(ValueError):
        Route("x", on_auth_failure="retry")


def test_routes_from_config_objects():
    from mailward.config import Route as CfgRoute, RouteHost as CfgHost

    t = routes_from_config([CfgRoute(domain="example.com", hosts=[CfgHost(host="10.1.1.1", port=2525)],
                                     auth_profile="Out", tls="required", on_auth_failure="defer"),
                            CfgRoute(domain="ALL", usedns=True)])
    r = t.lookup("example.com")
    assert r.hosts == (RouteHost("10.1.1.1", 2525, 0),) and r.auth_profile == "Out"
    assert (r.tls, r.on_auth_failure) == ("required", "defer")
    assert t.lookup("else.org").usedns


def hops(route, domain, resolver=None, seed=1):
    return asyncio.run(next_hops(route, domain, resolver, random.Random(seed)))


def test_fixed_hosts_by_priority_and_equal_priorities_share_the_load():
    route = Route("d", (RouteHost("10.0.0.3", priority=20), RouteHost("10.0.0.1", priority=10),
                        RouteHost("10.0.0.2", priority=10)))
    firsts = {hops(route, "d", seed=s)[0].address for s in range(40)}
    assert firsts == {"10.0.0.1", "10.0.0.2"}
    assert all(hops(route, "d", seed=s)[2].address == "10.0.0.3" for s in range(10))


def test_usedns_orders_mx_and_resolves_names():
    r = StaticResolver(mxs={"d.test": [(20, "b.d.test"), (10, "a.d.test")]},
                       hosts={"a.d.test": ["192.0.2.1", "192.0.2.2"], "b.d.test": ["192.0.2.3"]})
    got = hops(Route("d.test"), "d.test", r)
    assert [(h.name, h.address, h.port) for h in got] == [
        ("a.d.test", "192.0.2.1", 25), ("a.d.test", "192.0.2.2", 25), ("b.d.test", "192.0.2.3", 25)]


def test_usedns_skips_a_broken_mx_and_fails_clearly():
    r = StaticResolver(mxs={"d.test": [(10, "gone.d.test"), (20, "ok.d.test")]}, hosts={"ok.d.test": ["192.0.2.7"]})
    assert [h.address for h in hops(Route("d.test"), "d.test", r)] == ["192.0.2.7"]
    with pytest.raises(DestinationError) as exc:
        hops(Route("x.test"), "x.test", StaticResolver())
    assert not exc.value.temporary and exc.value.detail == "NXDomain" and exc.value.kind == "Error"
    with pytest.raises(DestinationError) as exc:
        hops(Route("t.test"), "t.test", StaticResolver(temporary_failures={"t.test"}))
    assert exc.value.temporary and exc.value.kind == "Temporary Failure"
    with pytest.raises(DestinationError) as exc:
        hops(Route("n.test"), "n.test", StaticResolver(mxs={"n.test": [(0, ".")]}))
    assert exc.value.null_mx and not exc.value.temporary


# --- fairness -------------------------------------------------------------------------------

def _msg(mid, attempts, at):
    m = QueuedMessage(Envelope(mid, 0, "s@x", ("r@y",), received_at=at), 10, [RcptState.PENDING])
    m.attempts, m.next_attempt = attempts, at
    return m


def test_new_and_deferred_mail_alternate():
    msgs = [_msg(1, 3, 1.0), _msg(2, 2, 2.0), _msg(3, 0, 5.0), _msg(4, 0, 6.0), _msg(5, 0, 7.0)]
    assert [m.mid for m in fair_order(msgs)] == [3, 1, 4, 2, 5]


# --- client helpers -------------------------------------------------------------------------

def test_ehlo_parsing_and_mechanism_choice():
    ext = _parse_ehlo(Reply(250, ("mx", "PIPELINING", "AUTH PLAIN LOGIN CRAM-MD5", "AUTH=LOGIN", "SIZE 100")))
    assert ext["PIPELINING"] == "" and ext["SIZE"] == "100" and ext["AUTH"] == "PLAIN LOGIN CRAM-MD5"
    offered = {"PLAIN", "LOGIN", "CRAM-MD5"}
    assert choose_mechanism(offered, tls=True) == "PLAIN"
    assert choose_mechanism(offered, tls=False) == "CRAM-MD5"
    assert choose_mechanism({"LOGIN"}, tls=True) == "LOGIN"
    assert choose_mechanism({"XOAUTH2"}, tls=True) is None


def stuff(body: bytes, cuts=()) -> bytes:
    d = DotStuffer()
    out, last = b"", 0
    for c in sorted(set(cuts)) + [len(body)]:
        out += d.feed(body[last:c])
        last = c
    return out + d.finish()


def test_dot_stuffing_and_line_ends():
    assert stuff(b"a\r\n.b\r\n") == b"a\r\n..b\r\n.\r\n"
    assert stuff(b"no newline") == b"no newline\r\n.\r\n"
    assert stuff(b"") == b".\r\n"
    # Bare CR and bare LF never reach the wire alone (SMTP smuggling: <LF>.<LF>, <CR>.<CR>).
    assert stuff(b"x\n.\nMAIL FROM:<evil>\n") == b"x\r\n..\r\nMAIL FROM:<evil>\r\n.\r\n"
    assert stuff(b"x\r.\rRCPT") == b"x\r\n..\r\nRCPT\r\n.\r\n"
    # A CRLF split across two chunks is one line break, not two.
    assert stuff(b"a\r\nb\r\n", cuts=[2]) == b"a\r\nb\r\n.\r\n"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=300), max_size=6))
def test_dot_stuffing_property(body, cuts):
    wire = stuff(body, [c for c in cuts if c <= len(body)])
    assert wire.endswith(b".\r\n")
    payload = wire[:-3]
    # Only CRLF line breaks on the wire, and no line is a lone dot before the end.
    assert b"\r" not in payload.replace(b"\r\n", b"") and b"\n" not in payload.replace(b"\r\n", b"")
    lines = payload.split(b"\r\n")
    assert payload == b"" or payload.endswith(b"\r\n")
    assert all(line != b"." for line in lines)
    # What a receiver un-stuffs is the body with every line break made CRLF; independent of chunking.
    unstuffed = b"".join((ln[1:] if ln.startswith(b".") else ln) + b"\r\n" for ln in lines[:-1])
    normal = re.sub(rb"\r\n|\r|\n", b"\r\n", body)
    if normal and not normal.endswith(b"\r\n"):
        normal += b"\r\n"
    assert unstuffed == normal
    assert wire == stuff(body)


# --- DSN ------------------------------------------------------------------------------------

def test_dsn_is_an_rfc3464_report_with_the_original_headers():
    headers = original_headers(b"From: a@x.test\r\nSubject: hello\r\n\r\nbody text\r\n")
    assert headers == b"From: a@x.test\r\nSubject: hello\r\n"
    data = build_dsn(hostname="gw.test", sender="a@x.test", mid=448, arrival=0.0, now=10.0,
                     recipients=[FailedRecipient("postmaster@example.com", "5.1.0", "Unknown address error",
                                                 SmtpResponse("554", ("5.7.1 <postmaster@example.com>: "
                                                                      "Relay access denied",)), "mx.example.com")],
                     headers=headers)
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["From"] == "Mail Delivery System <MAILER-DAEMON@gw.test>" and msg["To"] == "a@x.test"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "message/delivery-status",
                                                      "text/rfc822-headers"]
    report = parts[1].as_string()
    for field in ("Reporting-MTA: dns; gw.test", "Final-Recipient: rfc822; postmaster@example.com",
                  "Action: failed", "Status: 5.1.0", "Remote-MTA: dns; mx.example.com",
                  "Diagnostic-Code: smtp; 554 5.7.1 <postmaster@example.com>: Relay access denied"):
        assert field in report
    assert b"Subject: hello" in data and b"body text" not in data
    assert b"\n" not in data.replace(b"\r\n", b"")


def test_no_dsn_for_the_null_sender():
    assert not wants_dsn("") and not wants_dsn("<>") and wants_dsn("a@b")
    with pytest.raises(ValueError):
        build_dsn(hostname="h", sender="", mid=1, arrival=0, now=0, recipients=[], headers=b"")


def test_delay_warning_dsn():
    data = build_dsn(hostname="gw.test", sender="a@x.test", mid=1, arrival=0.0, now=10.0, delayed=True,
                     retry_until=3600.0, recipients=[FailedRecipient("b@y.test", "4.4.0", "Other network problem",
                                                                     None)], headers=b"")
    assert b"Action: delayed" in data and b"Status: 4.4.0" in data and b"Will-Retry-Until:" in data


class _Spool:
    def __init__(self, msgs):
        self.msgs = {m.mid: m for m in msgs}
        self.scans = 0

    def get(self, mid):
        return self.msgs.get(mid)

    def messages(self):
        self.scans += 1
        return iter(list(self.msgs.values()))


def test_schedule_timers_fresh_commits_locks_and_flush():
    from mailward.delivery.schedule import Schedule

    now = [100.0]
    a, b = _msg(1, 1, 150.0), _msg(2, 0, 0.0)
    spool = _Spool([a])
    s = Schedule(spool, rescan_interval=1000, clock=lambda: now[0])
    assert spool.scans == 1 and s.seconds_to_next() == 50.0
    spool.msgs[2] = b
    s.committed(2)
    assert [m.mid for m in s.due(busy=set(), locked=set())] == [2]
    assert s.due(busy=set(), locked=set()) == []
    now[0] = 151.0
    assert [m.mid for m in s.due(busy=set(), locked={1})] == []       # due but locked: held
    assert s.seconds_to_next() == 0.05
    assert [m.mid for m in s.due(busy=set(), locked=set())] == [1]
    a.next_attempt = 500.0                                             # rescheduled: old entry is stale
    s.arm(a)
    s.arm(a, at=152.0)
    now[0] = 160.0
    assert s.due(busy=set(), locked=set()) == []
    assert [m.mid for m in s.due(busy=set(), locked=set(), flush=True)] == [2, 1]
    assert spool.scans == 2                                            # start + flush, never per pass


def _reference_stuffing(body: bytes) -> bytes:
    """The wire form computed the slow, obvious way on the whole body."""
    lines = re.split(rb"\r\n|\r|\n", body)
    out = b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n" for ln in lines[:-1])
    last = lines[-1]
    if last:
        out += (b"." + last if last.startswith(b".") else last) + b"\r\n"
    return out + b".\r\n"


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from([b"ab", b".", b"\r\n", b"\r", b"\n", b"x.y", b"..", b"\r\n.\r\n"]), max_size=40),
       st.lists(st.integers(min_value=0, max_value=200), max_size=6))
def test_dot_stuffing_matches_the_obvious_way_for_any_chunking(parts, cuts):
    # text-like bodies, mostly clean CRLF lines: the chunks that go out unchanged and the ones
    # walked line by line must agree with each other and with the whole-body computation
    body = b"".join(parts)
    assert stuff(body, [c for c in cuts if c <= len(body)]) == _reference_stuffing(body)
