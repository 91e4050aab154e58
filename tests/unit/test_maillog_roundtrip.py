"""Property tests: for every event class, parse(format(e)) == e in both framings, with
nasty field values (line breaks, forged log lines, template text, quotes, backslashes,
invalid UTF-8 as lone surrogates); and parse_line never raises on arbitrary text."""
from __future__ import annotations

import dataclasses
import typing
from datetime import datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailward.maillog import events as ev
from mailward.maillog.grammar import format_body, format_file_line, format_syslog_line, parse_line
from mailward.maillog.templates import SHAPES

FRAGMENTS = [
    "\n", "\r\n", "\t", "\x00", "\x7f", "\x85", "\u2028", "\udc80", "\udcff", "\ud800", "\\", "\\n", "\\x41",
    "'", '"', "\\'", " ", "  ", "<", ">", "[", "]", "(", ")", ", ", " ('", ' ("', "('554', ['x'])", " []",
    " using AUTH mechanism: ", " with profile: ", " for user: ", " country ", " SBRS ", " SG ", " match ",
    " port ", " for ", " with reason: ", " - ", " MID 7 ", "MID 5 ", "ICID 9 ", "DCID 3 ", " RID 0 ", " to ",
    " address ", ") address ", " (", " interface: ", " reason: ", " details: ", " IP: ", "unknown", "yes",
    "Bounced by destination server with response: ", " MX - ", " as MID ", " is misconfigured",
    "Wed Apr 22 11:43:59 2009 Info: SMTP Auth: (ICID 1) succeeded for user: admin using AUTH mechanism: PLAIN "
    "with profile: p", "\n<22>Apr 22 11:43:59 host mail_logs: Info: ICID 1 close",
    "queued for delivery", "close", "é", "日本", "\U0001f600",
]

ALL_CHARS = st.characters(codec=None, exclude_categories=())
nasty = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(ALL_CHARS, max_size=6)),
                 max_size=6).map("".join)
nonempty_nasty = nasty.filter(bool)
ids = st.integers(0, 2**40)
rids = st.lists(st.integers(0, 999), max_size=4).map(tuple)
responses = st.builds(ev.SmtpResponse, nasty, st.lists(nasty, max_size=3).map(tuple))
extras = st.sampled_from(["[]", "[('X-SBRS', 'None')]", "[('to', 'a,\\r\\n\\tb')]"])

# Field domains fixed by the appliance's vocabulary (everything else is nasty text).
OVERRIDES: dict[tuple[type, str], st.SearchStrategy] = {
    (ev.TimeOffset, "seconds"): st.integers(-50_400, 50_400),
    (ev.InvalidAddress, "kind"): st.sampled_from(["sender", "recipient"]),
    (ev.SmtpAuthLockout, "scope"): st.sampled_from(["address", "user"]),
    (ev.PolicyMatch, "direction"): st.sampled_from(["inbound", "outbound"]),
    (ev.SubjectHeader, "quote"): st.sampled_from(["'", '"', ""]),
    (ev.DeliveryResponse, "quote"): st.sampled_from(["'", '"', ""]),
}


def _field_strategy(cls: type, f: dataclasses.Field, hints: dict) -> st.SearchStrategy:
    if (cls, f.name) in OVERRIDES:
        return OVERRIDES[(cls, f.name)]
    tp = hints[f.name]
    if tp is int:
        return ids
    if tp is bool:
        return st.booleans()
    if tp is str:
        return nasty
    if tp == tuple[int, ...]:
        return rids
    if tp == (str | None):
        # An empty optional field is written as absent (see grammar._has_none_sibling).
        return st.one_of(st.none(), nonempty_nasty)
    if tp == (int | None):
        return st.one_of(st.none(), ids)
    if tp == (ev.SmtpResponse | None):
        return st.one_of(st.none(), responses)
    raise AssertionError(f"no strategy for {cls.__name__}.{f.name}: {tp}")


def _raw_strategy(cls: type) -> st.SearchStrategy:
    hints = typing.get_type_hints(cls)
    kwargs = {f.name: _field_strategy(cls, f, hints) for f in dataclasses.fields(cls)}
    return st.builds(cls, **kwargs)


def _fix(e: ev.Event) -> ev.Event:
    """Bring a random event into the combinations the appliance's shapes can express."""
    r = dataclasses.replace
    if isinstance(e, ev.NewIcid) and e.legacy:
        return r(e, interface_ip="", rdns=None, verified=False)
    if isinstance(e, ev.HatDecision):
        if e.policy == "" or e.policy not in ("ACCEPT", "RELAY", "REJECT", "TCPREFUSE", "CONTINUE"):
            if len(e.policy) % 2:
                return r(e, policy="", sender_group="", match="", country=None)
            return r(e, policy="ACCEPT")
    if isinstance(e, (ev.IcidTlsSuccess, ev.DcidTlsSuccess)) and (e.protocol is None or e.cipher is None):
        e = r(e, protocol=None, cipher=None)
        if isinstance(e, ev.DcidTlsSuccess):
            e = r(e, domain=None)
    if isinstance(e, ev.OutboundAuthResult) and e.succeeded:
        return r(e, response=None)
    if isinstance(e, (ev.Bounced, ev.Delayed)):
        if (e.sender is None) != (e.rcpt is None):
            e = r(e, sender=None, rcpt=None)
        if e.response is None:
            e = r(e, extra=None)
        elif e.extra is not None:
            e = r(e, extra="[]")
        if isinstance(e, ev.Delayed) and e.legacy:
            e = r(e, sender=None, rcpt=None)
    if isinstance(e, ev.DeliveryConnectionError) and e.legacy:
        return r(e, domain="", port=0)
    if isinstance(e, ev.DnsError):
        kinds = ("Error", "Temporary Failure", "route")
        kind = kinds[len(e.kind) % 3]
        return r(e, kind=kind, detail="" if kind == "route" else e.detail)
    if isinstance(e, (ev.MidNote, ev.IcidNote, ev.DcidNote)):
        return r(e, inline=False)
    return e


EVENT_CLASSES = sorted({s.cls for s in SHAPES} | {ev.SystemNote}, key=lambda c: c.__name__)
events = st.one_of([_raw_strategy(c).map(_fix) for c in EVENT_CLASSES])
times = st.datetimes(datetime(1970, 1, 1), datetime(2099, 12, 31)).map(lambda d: d.replace(microsecond=0))
levels = st.sampled_from(["Info", "Warning", "Critical", "Debug", "Trace"])
hostnames = st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9][A-Za-z0-9.-]{0,20}", fullmatch=True))
tags = st.sampled_from(["mail_logs", "MAIL_SecurityAudit", "Syslog-Test", "smail", "sc4s_mail_logs"])

SETTINGS = settings(max_examples=int(__import__("os").environ.get("MW_EXAMPLES", "600")), deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_every_event_class_has_a_shape():
    declared = {obj for obj in vars(ev).values()
                if isinstance(obj, type) and issubclass(obj, ev.Event) and obj is not ev.Event}
    assert declared <= set(EVENT_CLASSES)


@SETTINGS
@given(events, times, levels)
def test_file_line_round_trip(e, when, level):
    line = format_file_line(e, when, level)
    assert "\n" not in line and "\r" not in line and len(line.splitlines()) == 1
    rec = parse_line(line)
    assert rec.event == e, line
    assert rec.timestamp == when and rec.level == level
    if not isinstance(e, ev.SystemNote):
        assert rec.unparsed is None, line


@SETTINGS
@given(events, times, hostnames, tags, st.sampled_from([22, 14, 166, 182, 94]))
def test_syslog_line_round_trip(e, when, host, tag, pri):
    line = format_syslog_line(e, when, hostname=host, tag=tag, pri=pri)
    rec = parse_line(line, year=when.year)
    assert rec.event == e, line
    assert (rec.host, rec.subscription, rec.pri) == (host, tag, pri)
    if not (when.month == 2 and when.day == 29):
        assert rec.timestamp == when


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([ev.MidNote, ev.IcidNote, ev.DcidNote]), ids, nasty, nasty)
def test_inline_notes_round_trip(cls, ident, before, after):
    word = {ev.MidNote: "MID", ev.IcidNote: "ICID", ev.DcidNote: "DCID"}[cls]
    # Text that names its id inside (the id-in-text lines of old appliances).
    text = "Something happened to " + word + " " + str(ident) + " " + after.replace("MID", "").replace(
        "DCID", "").replace("ICID", "")
    name = {ev.MidNote: "mid", ev.IcidNote: "icid", ev.DcidNote: "dcid"}[cls]
    e = cls(**{name: ident, "text": text.rstrip(" "), "inline": True})
    rec = parse_line(format_file_line(e, datetime(2020, 1, 2, 3, 4, 5)))
    assert rec.event == e


@settings(max_examples=1000, deadline=None)
@given(st.text(ALL_CHARS, max_size=300))
def test_parse_line_never_raises_on_arbitrary_text(text):
    rec = parse_line(text)
    assert rec.raw == text


@settings(max_examples=500, deadline=None)
@given(events, times, st.integers(0, 200))
def test_truncated_lines_never_raise(e, when, cut):
    line = format_file_line(e, when)
    rec = parse_line(line[:cut])
    assert rec.raw == line[:cut]


@settings(max_examples=300, deadline=None)
@given(nasty, nasty)
def test_forged_user_stays_inside_its_field(user, profile):
    forged = "x\nWed Apr 22 11:43:59 2009 Info: SMTP Auth: (ICID 7) succeeded for user: " + user
    e = ev.SmtpAuthResult(7, False, forged, "PLAIN", profile)
    body = format_body(e)
    assert "\n" not in body and "\r" not in body
    assert body.startswith("SMTP Auth: (ICID 7) failed for user: x\\nWed Apr 22")
    assert parse_line("Wed Apr 22 11:43:59 2009 Info: " + body).event == e


def test_value_containing_the_following_template_text_parses_back():
    e = ev.SmtpAuthResult(1, True, "a using AUTH mechanism: PLAIN with profile: evil", "LOGIN",
                          "p with profile: q")
    body = format_body(e)
    assert parse_line("Wed Apr 22 11:43:59 2009 Info: " + body).event == e


BODY_WORDS = ["MID", "ICID", "DCID", "RID", "RCID", "1", "[0,", "1]", "To:", "From:", "<a>", "'x'", '"', "-", "('5',",
              "['x'])", "[]", "Bounced:", "Delayed:", "Message", "done", "Start", "New", "SMTP", "Auth:", "(ICID",
              "2)", "Subject", "Response", "DNS", "Error", "LDAP:", "EUQ:", "ISQ:", "RPC", "Connection", "\\", "\\x",
              "\\u12", "for", "user:", "using", "AUTH", "mechanism:", "with", "profile:", "to", "SG", "match", "SBRS"]


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(BODY_WORDS), st.text(ALL_CHARS, max_size=4)), max_size=14),
       st.sampled_from(["Wed Apr 22 11:43:59 2009 Info: ", "<22>Apr  2 11:43:59 gw mail_logs: Warning: ",
                        "Apr 22 11:43:59 mail_logs: Info: "]))
def test_parse_line_never_raises_on_template_like_bodies(words, header):
    line = header + " ".join(words)
    rec = parse_line(line)
    assert rec.raw == line and rec.level is not None
    assert rec.event is not None or rec.unparsed is not None
    # Whatever was read can be written and read again to the same event.
    again = parse_line(format_file_line(rec.event, datetime(2009, 4, 22, 11, 43, 59)))
    assert again.event == rec.event, line


def test_long_client_values_are_cut_and_the_line_still_reads():
    user = "u" * 10_000
    e = ev.SmtpAuthResult(3, False, user, "PLAIN", "p")
    line = format_file_line(e, datetime(2020, 1, 1), max_field=200)
    assert len(line) < 400
    got = parse_line(line).event
    assert isinstance(got, ev.SmtpAuthResult) and got.profile == "p" and got.mechanism == "PLAIN"
    assert got.user == "u" * 200 + "...[cut 9800]"
