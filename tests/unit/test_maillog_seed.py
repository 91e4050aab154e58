"""Exact text: the seed lines and the real samples.

Every seed line parses to the expected event and formats back byte for byte; every line of
every sample file that carries an ICID, MID, DCID, RCID or RID is typed (not unparsed).
"""
from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pytest

from mailward.maillog import events as ev
from mailward.maillog.grammar import format_file_line, parse_line

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "samples"


def _samples_dir() -> Path:
    # Fail loudly: these tests are the proof that real appliance text reads.
    assert SAMPLES.is_dir(), f"sample folder missing: {SAMPLES}"
    return SAMPLES


def _lines(name: str) -> list[str]:
    path = _samples_dir() / name
    assert path.is_file(), f"sample missing: {path}"
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fh:
        return [line.rstrip("\r\n") for line in fh]


R = ev.SmtpResponse
SEED_EVENTS = [
    ev.NewIcid(450, "IncomingMail", "172.16.155.16", "172.16.155.102", None, False),
    ev.HatDecision(450, "ACCEPT", "None", "ALL", "None"),
    ev.SmtpAuthResult(450, True, "ironport", "PLAIN", "IncomingAuthentication"),
    ev.IcidClose(450),
    ev.NewIcid(451, "mail", "172.16.155.16", "172.16.155.102", None, False),
    ev.HatDecision(451, "ACCEPT", "None", "ALL", "None"),
    ev.SmtpAuthResult(451, False, "ironport", "PLAIN", "IncomingAuthentication"),
    ev.IcidClose(451),
    ev.NewDcid(5633, "172.16.155.16", "172.16.155.102", 25),
    ev.OutboundAuthResult(5633, "172.16.155.102", "OutboundAuthentication", True),
    ev.DeliveryStart(5633, 441, (0,)),
    ev.MessageDone(5633, 441, (0,)),
    ev.DcidClose(5633),
    ev.NewDcid(5640, "172.16.155.16", "172.16.155.102", 25),
    ev.OutboundAuthResult(5640, "172.16.155.102", "OutboundAuthentication", False,
                          R("535", ("5.7.8 Error: authentication failed: authentication failure",))),
    ev.DeliveryStart(5640, 448, (0,)),
    ev.Bounced(5640, 448, 0, "5.1.0", "Unknown address error",
               R("554", ("5.7.1 <postmaster@example.com>: Relay access denied",)), by_destination=True),
    ev.DcidClose(5640),
]


def test_seed_lines_parse_to_expected_events_and_format_back_byte_for_byte():
    lines = _lines("seed_smtp_auth_technote.log")
    assert len(lines) == len(SEED_EVENTS)
    for line, expected in zip(lines, SEED_EVENTS):
        rec = parse_line(line)
        assert rec.unparsed is None, line
        assert rec.event == expected, line
        assert rec.level == "Info"
        assert rec.timestamp is not None and rec.timestamp.year == 2009
        assert format_file_line(expected, rec.timestamp) == line


def test_seed_timestamps_are_naive_local_as_written():
    rec = parse_line(_lines("seed_smtp_auth_technote.log")[0])
    assert rec.timestamp == datetime(2009, 4, 22, 11, 43, 59)


_ID = re.compile(r"(?<![A-Za-z])(ICID|MID|DCID|RCID|RID)\b")


@pytest.mark.parametrize("name", ["seed_smtp_auth_technote.log", "cribl_esa_7.6_2014_sanitised.log",
                                  "elastic_file_form.log", "elastic_syslog_mixed.log"])
def test_every_sample_line_with_an_id_is_typed(name):
    lines = _lines(name)
    assert lines, name
    with_ids = 0
    for line in lines:
        rec = parse_line(line)
        assert rec.level is not None, line           # every sample line has a header
        if _ID.search(line.split(": ", 1)[-1]):
            with_ids += 1
            assert rec.unparsed is None and rec.event is not None, line
            assert not isinstance(rec.event, ev.SystemNote), line
    assert with_ids > 0


def test_all_sample_files_are_covered():
    names = {p.name for p in _samples_dir().glob("*.log")}
    assert names >= {"seed_smtp_auth_technote.log", "cribl_esa_7.6_2014_sanitised.log",
                     "elastic_file_form.log", "elastic_syslog_mixed.log"}


def test_cribl_core_lines_type_to_specific_classes():
    by_text = {}
    for line in _lines("cribl_esa_7.6_2014_sanitised.log"):
        rec = parse_line(line)
        by_text[line] = rec
    first = _lines("cribl_esa_7.6_2014_sanitised.log")[:5]
    assert isinstance(by_text[first[0]].event, ev.BeginLogfile)
    assert by_text[first[1]].event == ev.VersionInfo("7.6.3-019", "420D4FEA709365BFB3E3-0AF2EE5E700E")
    assert by_text[first[2]].event == ev.TimeOffset(-21600)
    assert by_text[first[3]].event == ev.NewIcid(60140291, "Data 1", "68.232.141.109", "176.227.203.114",
                                                 "h176-227-203-114.host.redstation.co.uk", False)
    assert by_text[first[4]].event == ev.HatDecision(60140291, "REJECT", "BLACKLIST", "sbrs[-10.0:-2.5]", "-9.5")
    counts: dict[type, int] = {}
    for rec in by_text.values():
        counts[type(rec.event)] = counts.get(type(rec.event), 0) + 1
    for cls in (ev.StartMid, ev.MailFrom, ev.RcptTo, ev.MessageReady, ev.QueuedForDelivery, ev.DeliveryStart,
                ev.MessageDone, ev.DeliveryResponse, ev.MessageFinished, ev.MessageAborted, ev.GeneratedBcc,
                ev.SplitMid, ev.IsqTagged, ev.SubjectHeader, ev.MessageIdHeader, ev.PolicyMatch):
        assert counts.get(cls, 0) > 0, cls.__name__


def test_message_id_with_apostrophe_uses_double_quotes_both_ways():
    line = "Wed Nov 19 09:16:43 2014 Info: MID 24611516 Message-ID \"<Lands'End.6cl2sv--1f.tlmd@email.landsend.com>\""
    rec = parse_line(line)
    assert rec.event == ev.MessageIdHeader(24611516, "<Lands'End.6cl2sv--1f.tlmd@email.landsend.com>")
    assert format_file_line(rec.event, rec.timestamp) == line


def test_folded_subject_escapes_read_as_real_control_characters_and_write_back():
    line = ("Wed Nov 19 09:16:42 2014 Info: MID 24611532 Subject "
            "'=?utf-8?B?wqFTb2xv?=\\r\\n\\t=?utf-8?B?IFIu?='")
    rec = parse_line(line)
    assert rec.event == ev.SubjectHeader(24611532, "=?utf-8?B?wqFTb2xv?=\r\n\t=?utf-8?B?IFIu?=")
    assert format_file_line(rec.event, rec.timestamp) == line


def test_subject_quoting_variants():
    base = "<94>Nov 24 14:22:57 host mail_logs: Info: MID 5 Subject "
    assert parse_line(base + '"redacted subject"').event == ev.SubjectHeader(5, "redacted subject", '"')
    assert parse_line(base + "'x'").event == ev.SubjectHeader(5, "x", "'")
    got = parse_line(base + "Re: [x: #1] FW: A\\r\\n (PTY) LTD | B").event
    assert got == ev.SubjectHeader(5, "Re: [x: #1] FW: A\r\n (PTY) LTD | B", "")



LEGACY = [
    ("SMTP Auth (ICID 5) succeeded for user: bob using AUTH mechanism: LOGIN with profile: p",
     ev.SmtpAuthResult(5, True, "bob", "LOGIN", "p", colon=False)),
    ("SMTP Auth (ICID 9) profile: ldapprof is misconfigured or missing causing an Auth failure",
     ev.SmtpAuthMisconfigured(9, "ldapprof", colon=False)),
    ("SMTP Auth: (ICID 9) was required but remote host did not initiate it", ev.SmtpAuthRequiredNotInitiated(9)),
    ("SMTP Auth (ICID 9) could not reach forwarding server ldap.example.com with reason: timed out",
     ev.SmtpAuthForwardUnreachable(9, "ldap.example.com", "timed out", colon=False)),
    ("New SMTP DCID 5 interface 172.19.0.11 address 63.251.108.110", ev.NewDcid(5, "172.19.0.11", "63.251.108.110", None)),
    ("ICID 9461571 SBRS None", ev.HatDecision(9461571, "", "", "", "None")),
    ("ICID 52525189 ACCEPT SG None match  SBRS 3.7", ev.HatDecision(52525189, "ACCEPT", "None", "", "3.7")),
    ("ICID 3 ACCEPT SG None SBRS rfc1918", ev.HatDecision(3, "ACCEPT", "None", "", "rfc1918")),
    ("ICID 824108 ACCEPT SG ACCEPTLIST match sbrs[0.0:10.0] SBRS 3.4 country United States",
     ev.HatDecision(824108, "ACCEPT", "ACCEPTLIST", "sbrs[0.0:10.0]", "3.4", "United States")),
    ("ICID 10152 RELAY SG RELAY_SG match 75.111.22.123 SBRS not enabled",
     ev.HatDecision(10152, "RELAY", "RELAY_SG", "75.111.22.123", "not enabled")),
    ("New SMTP ICID 10292815 interface private address 81.137.223.69",
     ev.NewIcid(10292815, "private", "", "81.137.223.69", None, False, legacy=True)),
    ("Delivery start DCID 5 MID 7 to [0]", ev.DeliveryStart(5, 7, (0,), legacy=True)),
    ("Delivery start DCID 6565554 MID 24611424 to RID [0] to offbox IronPort Spam Quarantine",
     ev.DeliveryStart(6565554, 24611424, (0,), "to offbox IronPort Spam Quarantine")),
    ("Delayed: DCID: 4370 Message 10800 to 0 - 4.4.0 - Other network problem "
     "('000', ['[Errno 54] Connection reset by peer']) []",
     ev.Delayed(4370, 10800, 0, "4.4.0", "Other network problem",
                R("000", ("[Errno 54] Connection reset by peer",)), extra="[]", legacy=True)),
    ("Delayed: DCID 8414309 MID 19410908 From: <WeiZhang@example.com> To: <mcintosh@buttercupgames.com> RID 0 - "
     "4.3.2 - Not accepting messages at this time ('421', ['4.3.2 try again later'])",
     ev.Delayed(8414309, 19410908, 0, "4.3.2", "Not accepting messages at this time",
                R("421", ("4.3.2 try again later",)), sender="WeiZhang@example.com",
                rcpt="mcintosh@buttercupgames.com")),
    ("Bounced: DCID 8413617 MID 19338947 From: <MariaDubois@example.com> To: <zecora@buttercupgames.com> RID 0 - "
     "5.4.7 - Delivery expired (message too old) ('000', ['timeout'])",
     ev.Bounced(8413617, 19338947, 0, "5.4.7", "Delivery expired (message too old)", R("000", ("timeout",)),
                sender="MariaDubois@example.com", rcpt="zecora@buttercupgames.com")),
    ("Bounced: DCID 0 MID 8 to RID 0 - 5.1.2 - Bad destination host "
     "('000', ['DNS Hard Error looking up BMQ-WIN.RUN (MX):  NXDomain'])",
     ev.Bounced(0, 8, 0, "5.1.2", "Bad destination host",
                R("000", ("DNS Hard Error looking up BMQ-WIN.RUN (MX):  NXDomain",)))),
    ("Bounced: DCID 3 MID 4 to RID 0 - 5.1.0 - Unknown address error "
     "('550', ['<george@yourdomain.com>... Relaying denied']) []",
     ev.Bounced(3, 4, 0, "5.1.0", "Unknown address error",
                R("550", ("<george@yourdomain.com>... Relaying denied",)), extra="[]")),
    ("Message done DCID 2386069 MID 200257070 to RID [0] [('X-SBRS', 'None')]",
     ev.MessageDone(2386069, 200257070, (0,), "[('X-SBRS', 'None')]")),
    ("Message done DCID 6565554 MID 24611414 to RID [0] (external quarantine) ",
     ev.MessageDone(6565554, 24611414, (0,), "(external quarantine)")),
    ("Message done DCID 26995470 MID 78069816 to RID [0, 1, 2, 3] [('to', 'a@b,\\r\\n\\tc@d')]",
     ev.MessageDone(26995470, 78069816, (0, 1, 2, 3), "[('to', 'a@b,\r\n\tc@d')]")),
    ("MID 200257070 RID [0] Response 2.6.0 <37gva9$5uvbhe@mail.example.com> Queued mail for delivery",
     ev.DeliveryResponse(200257070, (0,), "2.6.0 <37gva9$5uvbhe@mail.example.com> Queued mail for delivery", "")),
    ("MID 68119155 RID [0] Response '2.0.0 OK  1687954632 redactedstring - gsmtp'",
     ev.DeliveryResponse(68119155, (0,), "2.0.0 OK  1687954632 redactedstring - gsmtp")),
    ("Message 548799 to RID [712290] pending till Mon Aug 10 09:56:56 2020",
     ev.PendingTill(548799, (712290,), "Mon Aug 10 09:56:56 2020")),
    ("MID 154 to RID [0] pending till Wed Jul 20 10:15:41 2005 [Default]",
     ev.PendingTill(154, (0,), "Wed Jul 20 10:15:41 2005 [Default]", legacy=True)),
    ("Double bounce: Message 8963393 to 0 - 5.1.1 - Bad destination email address",
     ev.DoubleBounce(8963393, 0, "5.1.1", "Bad destination email address")),
    ("Possible Delivery: DCID: 4641294 MID 8956463 to [0]", ev.PossibleDelivery(4641294, 8956463, (0,))),
    ("ISQ: Tagging MID 4433 for quarantine", ev.IsqTagged(4433)),
    ("EUQ: Reinjected MID 4433 as MID 4449", ev.Reinjected(4433, 4449)),
    ("RPC Delivery start RCID 4051 MID 14077 to local IronPort Spam Quarantine",
     ev.RpcDeliveryStart(4051, 14077, "local IronPort Spam Quarantine")),
    ("RPC Message done RCID 4051 MID 14077", ev.RpcMessageDone(4051, 14077)),
    ("LDAP: Reroute query ChainRoute MID 38637862 RID 0 address thomas.force@temple.edu to "
     "[('tue58286@gomail.temple.edu', '')]",
     ev.LdapReroute("ChainRoute", 38637862, 0, "thomas.force@temple.edu", "[('tue58286@gomail.temple.edu', '')]")),
    ("LDAP: Drop query HutchLDAP.ldapaccept MID 349817 RID 1 address dlzb@hutchcity.com",
     ev.LdapDrop("HutchLDAP.ldapaccept", 349817, 1, "dlzb@hutchcity.com")),
    ("Start MID 9 ICID 0 (ISQ Notification)", ev.StartMid(9, 0, "(ISQ Notification)")),
    ("MID 38637862 rewritten to MID 38637865 by LDAP rewrite", ev.RewrittenMid(38637862, 38637865, "LDAP rewrite")),
    ("MID 2 rewritten to 3 by antispam", ev.RewrittenMid(2, 3, "antispam", legacy=True)),
    ("MID 14 generated based on MID 13 by bcc filter 'nonetest'", ev.GeneratedBcc(14, 13, "nonetest", legacy=True)),
    ("MID 691177 was generated for bounce of MID 691176", ev.GeneratedForBounce(691177, 691176)),
    ("ICID 282204970 TLS success", ev.IcidTlsSuccess(282204970, None, None)),
    ("ICID 4 TLS failed: [Errno 54] Connection reset by peer", ev.IcidTlsFailed(4, "[Errno 54] Connection reset by peer")),
    ("ICID 282204971 TLS failed", ev.IcidTlsFailed(282204971, None)),
    ("DCID 112095 TLS success protocol TLSv1 cipher AES128-SHA for dummy_domain.com",
     ev.DcidTlsSuccess(112095, "TLSv1", "AES128-SHA", "dummy_domain.com")),
    ("DCID 8 IP 204.15.82.140 TLS was required but could not be successfully negotiated",
     ev.DcidTlsRequired(8, "204.15.82.140")),
    ("ICID 3 MID 1 Invalid recipient address: Invalid character in address: '!'",
     ev.InvalidAddress(3, 1, "recipient", "Invalid character in address: '!'")),
    ("ICID 493829828 Invalid sender address: Unsupported domain literal: '[]'",
     ev.InvalidAddress(493829828, None, "sender", "Unsupported domain literal: '[]'")),
    ("ICID 146090719 Receiving Failed: Too Many Recipients", ev.ReceivingFailed(146090719, "Too Many Recipients")),
    ("MID 100543 ICID 50525 To: <CCCC0133@acmetech.com> Rejected by Receiving Control",
     ev.RcptRejected(100543, 50525, "CCCC0133@acmetech.com", "Receiving Control")),
    ("Connection Error: DCID 63 domain: domainsample2.com IP: 10.13.101.31 port: 25 details: [Errno 0] Error "
     "interface: 10.10.192.50 reason: network error",
     ev.DeliveryConnectionError(63, "domainsample2.com", "10.13.101.31", 25, "[Errno 0] Error", "10.10.192.50",
                                "network error")),
    ("Connection Error: DCID: 263 IP: 1.2.3.4 details: EOF interface: 5.6.7.8 reason: network error",
     ev.DeliveryConnectionError(263, "", "1.2.3.4", 0, "EOF", "5.6.7.8", "network error", legacy=True)),
    ("DNS Error who.acmetech.com MX - NXDomain", ev.DnsError("Error", "who.acmetech.com", "NXDomain")),
    ("DNS Temporary Failure 1sourcedist.com MX - unable to reach nameserver on any valid IP",
     ev.DnsError("Temporary Failure", "1sourcedist.com", "unable to reach nameserver on any valid IP")),
    ("DNS failure for SMTP route destination go2cntdomc01.acmetech.com",
     ev.DnsError("route", "go2cntdomc01.acmetech.com", "")),
    ("Dropping connection due to potential Directory Harvest Attack from host=('63.239.145.220', 'euci-events.com'),"
     " dhap_limit=20, sender_group=UNKNOWNLIST, listener=IncomingMail, reverse_dns=63.239.145.220, ICID 139900202",
     None),
    ("SMTP server connection killed ICID: 629531", ev.IcidNote(629531, "SMTP server connection killed ICID: 629531",
                                                              inline=True)),
    ("SMTP client connection killed DCID: 196546347",
     ev.DcidNote(196546347, "SMTP client connection killed DCID: 196546347", inline=True)),
    ("MID 24611421 antivirus negative ", ev.MidNote(24611421, "antivirus negative")),
    ("Status: CPULd 3 DskIO 0 RAMUtil 1 QKUsd 141 CrtMID 12 CrtICID 3 CrtDCID 4", None),
]


@pytest.mark.parametrize("body,expected", LEGACY, ids=[b[:40] for b, _ in LEGACY])
def test_legacy_and_variant_bodies(body, expected):
    rec = parse_line("Fri Feb 27 09:26:25 2004 Info: " + body)
    assert rec.unparsed is None, body
    if expected is None:
        assert rec.event is not None
        if "ICID 139900202" in body:
            assert rec.event == ev.IcidNote(139900202, body, inline=True)
        else:
            assert isinstance(rec.event, ev.SystemNote)
        return
    assert rec.event == expected


@pytest.mark.parametrize("body,cls,ident", [
    ("Mail delivery client with DCID 8163315 exited due to the maximum concurrency configuration.",
     ev.DcidNote, 8163315),
    ("MID 464421: scanning error (name='c150547.ics', type=text/plain): no filter available for this file type",
     ev.MidNote, 464421),
    ("A Anti-Virus/Critical alert was sent to x@example.com with subject \"Critical <Anti-Virus> gw: MID 198463616 "
     "antivirus timeout error\".", ev.MidNote, 198463616),
    ("ICID 30308138 Connection from 216.39.115.138 on interface PublicNet (202.123.2.25) lost after 139 seconds "
     "(DNS query took 139 seconds), before any commands were received", ev.IcidNote, 30308138),
])
def test_ids_inside_text_are_typed(body, cls, ident):
    e = parse_line("Fri Feb 27 09:26:25 2004 Info: " + body).event
    assert isinstance(e, cls)
    assert getattr(e, {ev.MidNote: "mid", ev.IcidNote: "icid", ev.DcidNote: "dcid"}[cls]) == ident


@pytest.mark.parametrize("name", ["cribl_esa_7.6_2014_sanitised.log", "elastic_file_form.log",
                                  "elastic_syslog_mixed.log"])
def test_every_sample_event_writes_and_reads_back_the_same(name):
    when = datetime(2020, 1, 1, 0, 0, 0)
    for line in _lines(name):
        rec = parse_line(line, year=2020)
        assert rec.event is not None, line
        assert parse_line(format_file_line(rec.event, when)).event == rec.event, line


def test_parsed_values_are_real_frozen_events_and_records():
    import dataclasses

    rec = parse_line(_lines("seed_smtp_auth_technote.log")[2])
    expected = SEED_EVENTS[2]
    assert rec.event == expected and hash(rec.event) == hash(expected) and type(rec.event) is type(expected)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.event.user = "admin"                      # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.level = "Warning"                         # type: ignore[misc]
    assert dataclasses.replace(rec, level="Warning").level == "Warning"
