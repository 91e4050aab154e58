"""The correlator over hand-built event streams: joins, outcomes, families, expiry, appliances."""
from __future__ import annotations

from dataclasses import dataclass

from mailward.logs.correlate import Correlator
from mailward.logs.model import AuthAttempt, Message
from mailward.maillog import events as E


@dataclass
class Rec:
    """The two fields of a grammar LogRecord the correlator reads."""

    event: E.Event | None
    raw: str


class Run:
    def __init__(self, **kw) -> None:
        self.stories: list[Message] = []
        self.auth: list[AuthAttempt] = []
        self.c = Correlator(on_story=self.stories.append, on_auth=self.auth.append, **kw)
        self.t = 1_000_000.0

    def __call__(self, ev: E.Event, app: str = "", dt: float = 1.0) -> None:
        self.t += dt
        self.c.feed(app, self.t, Rec(ev, f"line {type(ev).__name__}"))

    def story(self, mid: int, app: str = "") -> Message:
        got = [m for m in self.stories if m.mid == mid and m.appliance == app]
        assert len(got) == 1, [(m.mid, m.appliance) for m in self.stories]
        return got[0]


def inbound(r: Run, icid=10, mid=100, app="", user=None) -> None:
    r(E.NewIcid(icid, "IncomingMail", "10.0.0.1", "192.0.2.7", "mx.example.net", True), app)
    r(E.HatDecision(icid, "RELAY", "RELAYLIST", "ALL", "None"), app)
    r(E.IcidTlsSuccess(icid, "TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384"), app)
    if user:
        r(E.SmtpAuthResult(icid, True, user, "PLAIN", "IncomingAuthentication"), app)
    r(E.StartMid(mid, icid), app)
    r(E.MailFrom(mid, icid, "alice@example.org"), app)
    r(E.RcptTo(mid, icid, 0, "bob@example.com"), app)
    r(E.RcptTo(mid, icid, 1, "carol@example.com"), app)
    r(E.MessageIdHeader(mid, "<x@y>"), app)
    r(E.SubjectHeader(mid, "hello"), app)
    r(E.MessageReady(mid, 1234, "alice@example.org"), app)
    r(E.PolicyMatch(mid, "DEFAULT", "outbound"), app)
    r(E.QueuedForDelivery(mid), app)


def test_icid_and_dcid_facts_join_the_message_and_each_recipient():
    r = Run(keep_lines=True)
    inbound(r, user="ironport")
    r(E.IcidClose(10))       # the connection closes before delivery: facts must survive
    r(E.NewDcid(55, "10.0.0.1", "198.51.100.9", 25))
    r(E.DcidTlsSuccess(55, "TLSv1.2", "AES128-SHA"))
    r(E.OutboundAuthResult(55, "198.51.100.9", "OutAuth", True))
    r(E.DeliveryStart(55, 100, (0, 1)))
    r(E.MessageDone(55, 100, (0,)))
    r(E.DeliveryResponse(100, (0,), "2.0.0 Ok: queued as X"))
    r(E.Bounced(55, 100, 1, "5.1.0", "Unknown address error",
                E.SmtpResponse("550", ("5.1.1 no such user",))))
    r(E.MessageFinished(100, "done"))
    r(E.DcidClose(55))
    m = r.story(100)
    assert m.sender == "alice@example.org" and m.subject == "hello" and m.size == 1234
    c = m.connection
    assert (c.peer_ip, c.rdns, c.sender_group, c.policy, c.auth_user) == (
        "192.0.2.7", "mx.example.net", "RELAYLIST", "RELAY", "ironport")
    assert c.tls_protocol == "TLSv1.2" and c.closed is not None
    r0, r1 = m.recipients[0], m.recipients[1]
    assert (r0.address, r0.outcome, r0.response) == ("bob@example.com", "delivered", "2.0.0 Ok: queued as X")
    assert (r1.address, r1.outcome, r1.status) == ("carol@example.com", "bounced", "5.1.0")
    assert r1.response == "('550', ['5.1.1 no such user'])"
    assert r0.delivery is r1.delivery and r0.delivery.address == "198.51.100.9"
    assert r0.delivery.auth_profile == "OutAuth" and r0.delivery.auth_succeeded is True
    assert r0.delivery.closed is not None      # DCID close after the story still reaches it
    assert not m.partial and not m.expired and m.status == "done"
    assert [ln for _, ln in m.lines][0] == "line StartMid" and len(m.lines) == 14
    ev = m.evidence()       # ICID lines, MID lines and DCID lines, in arrival order
    assert ev[:4] == ["line NewIcid", "line HatDecision", "line IcidTlsSuccess", "line SmtpAuthResult"]
    assert ev[-1] == "line DcidClose" and "line OutboundAuthResult" in ev and len(ev) == 5 + 14 + 4
    assert r.c.live() == {"messages": 0, "connections": 0, "deliveries": 0}


def test_auth_attempts_carry_client_ip_and_destination():
    r = Run()
    r(E.NewIcid(7, "In", "10.0.0.1", "203.0.113.5", None, False))
    r(E.SmtpAuthResult(7, False, "mallory", "LOGIN", "Inc"))
    r(E.SmtpAuthResult(7, True, "mallory", "LOGIN", "Inc"))
    r(E.NewDcid(9, "10.0.0.1", "198.51.100.2", 587))
    r(E.OutboundAuthResult(9, "198.51.100.2", "Out", False,
                           E.SmtpResponse("535", ("5.7.8 Error: authentication failed: x",))))
    a1, a2, a3 = r.auth
    assert (a1.direction, a1.succeeded, a1.user, a1.client_ip, a1.mechanism) == (
        "inbound", False, "mallory", "203.0.113.5", "LOGIN")
    assert a2.succeeded and a2.conn_id == 7
    assert (a3.direction, a3.profile, a3.server_ip, a3.succeeded) == ("outbound", "Out", "198.51.100.2", False)
    assert a3.response == "('535', ['5.7.8 Error: authentication failed: x'])"


def test_split_child_inherits_connection_and_envelope_bcc_does_not():
    r = Run()
    inbound(r)
    r(E.SplitMid(100, 101, "a SL/BL configuration for following recipients: carol@example.com"))
    r(E.MailFrom(101, 0, "alice@example.org"))
    r(E.RcptTo(101, 0, 0, "carol@example.com"))
    r(E.MessageFinished(100, "done"))
    r(E.StartMid(102, 0))
    r(E.GeneratedBcc(102, 101, "FireEye_BCC"))
    r(E.MailFrom(102, 0, "noreply@cisco.com"))
    r(E.RcptTo(102, 0, 0, "blackhole@example.com"))
    r(E.MessageFinished(101, "done"))
    r(E.MessageFinished(102, "done"))
    parent, child, bcc = r.story(100), r.story(101), r.story(102)
    assert parent.children == [(101, "split")]
    assert (child.parent, child.relation, child.icid) == (100, "split", 10)
    assert child.connection is parent.connection and child.connection.peer_ip == "192.0.2.7"
    assert child.subject == "hello" and child.recipients[0].address == "carol@example.com"
    assert (bcc.parent, bcc.relation, bcc.connection, bcc.icid) == (101, "bcc", None, 0)
    assert child.children == [(102, "bcc")]


def test_rewritten_in_place_is_a_note_and_rewritten_to_new_mid_links():
    r = Run()
    inbound(r)
    r(E.RewrittenMid(100, 100, "add-footer filter 'Footer'"))
    r(E.RewrittenMid(100, 200, "LDAP rewrite"))
    r(E.MessageFinished(100, "done"))
    r(E.DeliveryStart(3, 200, (1,)))
    r(E.MessageDone(3, 200, (1,)))
    r(E.MessageFinished(200, "done"))
    old, new = r.story(100), r.story(200)
    assert "rewritten by add-footer filter 'Footer'" in old.verdicts
    assert old.children == [(200, "rewritten")]
    assert new.connection.peer_ip == "192.0.2.7"
    assert new.recipients[1].address == "carol@example.com" and new.recipients[1].outcome == "delivered"


def test_bounce_generated_links_and_delay_then_pending():
    r = Run()
    inbound(r)
    r(E.NewDcid(4, "10.0.0.1", "198.51.100.3", 25))
    r(E.DeliveryStart(4, 100, (0,)))
    r(E.Delayed(4, 100, 0, "4.3.2", "Not accepting messages at this time",
                E.SmtpResponse("421", ("4.3.2 try again later",))))
    r(E.PendingTill(100, (0,), "Wed Nov 19 10:16:38 2014"))
    r(E.DeliveryStart(0, 100, (1,)))
    r(E.Bounced(0, 100, 1, "5.1.2", "Bad destination host", E.SmtpResponse("000", ("DNS Hard Error",))))
    r(E.StartMid(300, 0))
    r(E.GeneratedForBounce(300, 100))
    r.c.flush()
    m = r.story(100)
    assert m.expired and m.status is None
    assert m.recipients[0].outcome == "delayed" and m.recipients[0].pending_till.startswith("Wed Nov 19")
    assert m.recipients[1].outcome == "bounced" and m.recipients[1].delivery is None  # DCID 0
    assert (300, "bounce") in m.children and r.story(300).parent == 100


def test_ids_restart_per_appliance():
    r = Run()
    inbound(r, app="esa1")
    inbound(r, icid=10, mid=100, app="esa2")
    r(E.MessageFinished(100, "done"), app="esa1")
    r(E.MessageFinished(100, "done"), app="esa2")
    assert r.story(100, "esa1").appliance == "esa1"
    assert r.story(100, "esa2").connection is not r.story(100, "esa1").connection


def test_partial_message_from_mid_stream_log():
    r = Run()
    r(E.MessageDone(6565548, 24611465, (0,)))
    r(E.DeliveryResponse(24611465, (0,), "2.0.0 Ok"))
    r(E.MessageFinished(24611465, "done"))
    m = r.story(24611465)
    assert m.partial and m.recipients[0].outcome == "delivered" and m.recipients[0].address is None


def test_idle_state_is_swept_in_log_time_and_memory_stays_bounded():
    r = Run(idle=100.0, sweep_every=10)
    for i in range(200):
        r(E.StartMid(i, 1), dt=50.0)        # never finished
        r(E.NewIcid(i, "In", "10.0.0.1", "192.0.2.1", None, False), dt=0.0)
    live = r.c.live()
    assert live["messages"] <= 12 and live["connections"] <= 12
    assert r.c.counters.expired >= 185
    assert all(m.expired for m in r.stories)


def test_unknown_and_none_events_are_ignored():
    r = Run()
    r.c.feed("", 1.0, Rec(None, "garbage"))
    r.c.feed("", 1.0, Rec(E.SystemNote("CASE cache status"), "x"))
    assert r.stories == [] and r.c.counters.events == 0


def test_quarantine_reinjection_ldap_and_double_bounce_from_real_line_texts():
    """Line texts as documented from real appliances (MAIL_LOGS.md §2.4/2.5), parsed by the
    shared grammar, then joined."""
    from mailward.logs.sources import Reader

    text = """\
Fri Nov 17 06:00:31 2006 Info: Start MID 4433 ICID 77
Fri Nov 17 06:00:31 2006 Info: MID 4433 ICID 77 From: <a@example.org>
Fri Nov 17 06:00:31 2006 Info: MID 4433 ICID 77 RID 0 To: <b@example.com>
Fri Nov 17 06:00:31 2006 Info: MID 4433 ICID 77 RID 1 To: <c@example.com>
Fri Nov 17 06:00:31 2006 Info: LDAP: Drop query HutchLDAP.ldapaccept MID 4433 RID 1 address c@example.com
Fri Nov 17 06:00:32 2006 Info: ISQ: Tagging MID 4433 for quarantine
Fri Nov 17 06:00:32 2006 Info: RPC Delivery start RCID 4051 MID 4433 to local IronPort Spam Quarantine
Fri Nov 17 06:00:32 2006 Info: RPC Message done RCID 4051 MID 4433
Fri Nov 17 06:00:33 2006 Info: EUQ: Reinjected MID 4433 as MID 4449
Fri Nov 17 06:00:33 2006 Info: Message finished MID 4433 done
Fri Nov 17 06:00:34 2006 Info: Double bounce: Message 4449 to 0 - 5.1.1 - Bad destination email address
Fri Nov 17 06:00:35 2006 Info: Message finished MID 4449 done
"""
    stories: list[Message] = []
    corr = Correlator(on_story=stories.append, keep_lines=True)
    reader = Reader()
    reader.read_lines(text.splitlines(keepends=True), corr.feed)
    assert reader.stats.unparsed == 0
    old, new = stories
    assert old.mid == 4433 and old.recipients[0].outcome == "quarantined"
    assert old.recipients[1].outcome == "dropped"
    assert "ISQ: tagged for quarantine" in old.verdicts
    assert old.children == [(4449, "reinjected")]
    assert (new.parent, new.relation, new.icid, new.sender) == (4433, "reinjected", 77, "a@example.org")
    assert new.recipients[0].outcome == "bounced" and new.recipients[0].status == "5.1.1"
    assert len(old.lines) == 10 and old.evidence()[-1].endswith("Message finished MID 4433 done")


def test_memory_stays_bounded_on_a_long_synthetic_log(tmp_path):
    """Live state tracks messages in flight, not the file: 60k lines, a handful live at a time."""
    import io

    from mailward.logs import synth
    from mailward.logs.sources import Reader

    buf = io.StringIO()
    synth.write(buf, 60_000, seed=7, concurrency=20)
    peak = {"messages": 0, "connections": 0, "deliveries": 0}
    stories = []
    corr = Correlator(on_story=stories.append, idle=600, sweep_every=2000)
    n = 0

    def feed(app, ts, rec):
        nonlocal n
        corr.feed(app, ts, rec)
        n += 1
        if n % 1000 == 0:
            for k, v in corr.live().items():
                peak[k] = max(peak[k], v)

    reader = Reader()
    reader.read_lines(buf.getvalue().splitlines(keepends=True), feed)
    corr.flush()
    assert reader.stats.unparsed == 0 and n > 60_000
    assert peak["messages"] < 200 and peak["connections"] < 200 and peak["deliveries"] < 200, peak
    assert len(stories) > 2000 and sum(m.expired for m in stories) < 60
    assert sum(m.status == "done" for m in stories) > 2000


EVENT_MAKERS = [
    lambda i, j: E.NewIcid(i, "In", "10.0.0.1", f"192.0.2.{j % 250}", None, bool(j % 2)),
    lambda i, j: E.HatDecision(i, "ACCEPT", "None", "ALL", "None"),
    lambda i, j: E.SmtpAuthResult(i, bool(j % 2), f"u{j}", "PLAIN", "P"),
    lambda i, j: E.IcidClose(i),
    lambda i, j: E.StartMid(j, i),
    lambda i, j: E.MailFrom(j, i, "a@b"),
    lambda i, j: E.RcptTo(j, i, j % 3, "c@d"),
    lambda i, j: E.SplitMid(j, i, "x"),
    lambda i, j: E.RewrittenMid(j, i, "x"),
    lambda i, j: E.GeneratedBcc(i, j, "f"),
    lambda i, j: E.GeneratedForBounce(i, j),
    lambda i, j: E.Reinjected(j, i),
    lambda i, j: E.NewDcid(i, "10.0.0.1", "203.0.113.1", 25),
    lambda i, j: E.DeliveryStart(i, j, (0, j % 3)),
    lambda i, j: E.MessageDone(i, j, (j % 3,)),
    lambda i, j: E.Bounced(i, j, j % 3, "5.1.0", "x", None),
    lambda i, j: E.Delayed(i, j, j % 3, "4.1.0", "x", None),
    lambda i, j: E.DcidClose(i),
    lambda i, j: E.MessageAborted(j, "x"),
    lambda i, j: E.MessageFinished(j, "done"),
    lambda i, j: E.OutboundAuthResult(i, "203.0.113.1", "O", bool(j % 2)),
]


def test_any_order_of_events_never_raises_and_every_message_comes_out():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=150, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, len(EVENT_MAKERS) - 1), st.integers(0, 6), st.integers(0, 6),
                              st.sampled_from(["", "esa2"]), st.floats(0, 5000)), max_size=80))
    def check(script):
        r = Run(keep_lines=True, idle=1000, sweep_every=7)
        for k, i, j, app, dt in script:
            ev = EVENT_MAKERS[k](i, j)
            r(ev, app, dt)
        r.c.flush()
        assert r.c.live() == {"messages": 0, "connections": 0, "deliveries": 0}
        for m in r.stories:
            m.as_dict()                     # every story renders
        assert r.c.counters.stories == len(r.stories)

    check()


def test_a_restarted_mid_counter_does_not_merge_two_messages():
    r = Run()
    r(E.StartMid(1, 10))
    r(E.MailFrom(1, 10, "first@example.org"))
    r(E.StartMid(1, 20))                 # the appliance restarted its counters
    r(E.MailFrom(1, 20, "second@example.org"))
    r(E.MessageFinished(1, "done"))
    first, second = r.stories
    assert (first.sender, first.expired, first.icid) == ("first@example.org", True, 10)
    assert (second.sender, second.status, second.icid) == ("second@example.org", "done", 20)


def test_content_filter_drop_and_bounce_end_the_recipients():
    from mailward.logs.sources import Reader

    text = """\
Wed May  4 00:24:31 2005 Info: Start MID 1960958 ICID 5
Wed May  4 00:24:31 2005 Info: MID 1960958 ICID 5 RID 0 To: <a@example.com>
Wed May  4 00:24:31 2005 Info: MID 1960958 was dropped by content filter 'dontsend' in the inbound table
Wed May  4 00:24:31 2005 Info: Message finished MID 1960958 done
Wed May  4 00:24:32 2005 Info: Start MID 1960959 ICID 5
Wed May  4 00:24:32 2005 Info: MID 1960959 ICID 5 RID 0 To: <b@example.com>
Wed May  4 00:24:32 2005 Info: MID 1960959 was bounced by content filter 'bounceme' in the inbound table
Wed May  4 00:24:32 2005 Info: Message finished MID 1960959 done
"""
    stories: list[Message] = []
    Reader().read_lines(text.splitlines(keepends=True), Correlator(on_story=stories.append).feed)
    dropped, bounced = stories
    assert dropped.recipients[0].outcome == "dropped" and "dontsend" in dropped.abort_reason
    assert bounced.recipients[0].outcome == "bounced"
