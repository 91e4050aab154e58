"""The real appliance samples: every line read, every id-carrying line typed, real stories joined,
the seed's AUTH report exact."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from mailward.logs.authreport import AuthReport
from mailward.logs.pipeline import Options, run
from mailward.logs.sources import Reader
from mailward.maillog import events as E

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "samples"
CRIBL = SAMPLES / "cribl_esa_7.6_2014_sanitised.log"
SEED = SAMPLES / "seed_smtp_auth_technote.log"
SERIAL = "420D4FEA709365BFB3E3-0AF2EE5E700E"
ID_RE = re.compile(r"\b(?:ICID|MID|DCID|RID|RCID)\b:? \[?\d")


def sample_files() -> list[Path]:
    # Fail loudly, never skip: these files are the ground truth of the format.
    assert SAMPLES.is_dir(), f"samples folder missing: {SAMPLES}"
    files = sorted(p for p in SAMPLES.iterdir() if p.suffix == ".log")
    assert len(files) >= 4, files
    return files


@pytest.mark.parametrize("path", sample_files(), ids=lambda p: p.name)
def test_every_line_read_and_every_id_line_typed(path: Path):
    raw_lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    seen = []
    reader = Reader(year=2022)
    reader.read([str(path)], lambda app, ts, rec: seen.append((ts, rec)))
    assert len(seen) == len(raw_lines) == reader.stats.lines
    untyped = []
    for (ts, rec), line in zip(seen, raw_lines):
        assert rec.raw == line
        assert ts is not None, line
        body = line.split(": ", 1)[-1]
        if ID_RE.search(body):
            if rec.event is None or rec.unparsed is not None or isinstance(rec.event, E.SystemNote):
                untyped.append(line)
    assert untyped == []
    assert reader.stats.unparsed == 0, reader.stats.by_kind


def test_file_header_keys_the_appliance_and_converts_to_utc():
    seen = []
    Reader().read([str(CRIBL)], lambda app, ts, rec: seen.append((app, ts)))
    assert {app for app, _ in seen} == {SERIAL}
    # "Wed Nov 19 09:16:38 2014" local, offset -21600 s -> 15:16:38 UTC
    from mailward.logs.times import iso
    assert iso(seen[3][1]) == "2014-11-19T15:16:38Z"


def test_syslog_host_keys_the_appliance_and_year_is_inferred(tmp_path):
    seen = []
    Reader(year=2023).read([str(SAMPLES / "elastic_syslog_mixed.log")],
                           lambda app, ts, rec: seen.append((app, ts)))
    from mailward.logs.times import iso
    assert seen[-1][0] == "REDACTED.africa.example.net" and iso(seen[-1][1]) == "2023-11-24T14:22:57Z"
    assert seen[0][0] == ""
    # without --year: the file's mtime year, minus one for months after the mtime's month
    import os
    p = tmp_path / "s.log"
    p.write_text("<22>Dec 31 23:59:59 esa1 mail_logs: Info: ICID 5 close\n"
                 "<22>Jan  1 00:00:01 esa1 mail_logs: Info: ICID 6 close\n")
    os.utime(p, (1769904000, 1769904000))     # 2026-02-01
    got = []
    Reader().read([str(p)], lambda app, ts, rec: got.append(iso(ts)))
    assert got == ["2025-12-31T23:59:59Z", "2026-01-01T00:00:01Z"]


def cribl_stories():
    out = {}
    run([str(CRIBL)], Options(keep_lines=True), on_story=lambda m: out.__setitem__(m.mid, m))
    return out


def test_cribl_split_parent_joins_icid_facts_and_links_children():
    m = cribl_stories()[24611507]
    c = m.connection
    assert m.appliance == SERIAL and m.icid == 60140302
    assert (c.peer_ip, c.rdns, c.verified) == ("69.67.18.139", "mail.fjvco.com", True)
    assert (c.policy, c.sender_group, c.sbrs) == ("ACCEPT", "UNKNOWNLIST", "5.1")
    assert (c.tls_protocol, c.tls_cipher) == ("TLSv1", "AES128-SHA")
    assert m.sender == "user15@fjvco.com"
    assert m.subject.startswith("RE: Problem Report# PR59725")
    assert [r.address for r in m.recipients.values()] == [
        "user25@mycompany.com", "user26@mycompany.com", "user37@mycompany.com"]
    assert m.children == [(24611528, "split"), (24611529, "split")]
    assert m.status == "done" and {r.outcome for r in m.recipients.values()} == {"split"}


def test_cribl_split_child_carries_the_connection_and_its_own_bcc():
    stories = cribl_stories()
    child = stories[24611528]
    assert (child.parent, child.relation) == (24611507, "split")
    assert child.connection.peer_ip == "69.67.18.139"
    assert [r.address for r in child.recipients.values()] == ["user37@mycompany.com"]
    assert child.children == [(24611531, "bcc")]
    assert stories[24611531].parent == 24611528 and stories[24611531].relation == "bcc"


def test_cribl_delivered_message_joins_dcid_facts_and_response():
    m = cribl_stories()[24611491]
    r = m.recipients[0]
    d = r.delivery
    assert (d.dcid, d.address, d.port, d.interface) == (6565556, "144.191.128.195", 25, "68.232.141.109")
    assert (d.tls_protocol, d.tls_cipher) == ("TLSv1", "RC4-SHA")
    assert r.outcome == "delivered" and r.response == "2.0.0 Ok: queued as 3jjSKj0N7xz1Vvjv"
    assert m.status == "done" and m.partial   # the log starts after its reception


def test_cribl_bcc_copy_is_delivered_and_linked_to_its_original():
    stories = cribl_stories()
    bcc = stories[24611495]
    assert (bcc.parent, bcc.relation, bcc.icid, bcc.sender) == (24611421, "bcc", 0, "noreply@cisco.com")
    r = bcc.recipients[0]
    assert (r.address, r.outcome, r.delivery.dcid) == ("fireeyeblackhole@mycompany.com", "delivered", 6565550)
    assert r.response == "2.0.0 Ok: queued as 3jjSKj65PDz4GTHJ"
    assert (24611495, "bcc") in stories[24611421].children


def test_cribl_dropped_by_case_and_quarantined():
    stories = cribl_stories()
    m = stories[24611490]
    assert m.icid == 60140120 and m.abort_reason == "Dropped by CASE" and m.status == "done"
    assert (m.recipients[0].address, m.recipients[0].outcome) == ("user1@mycompany.com", "dropped")
    assert m.subject == "Webinar: Working Together 101: Preventing Departmental Silos"
    q = stories[24611414].recipients[0]
    assert q.outcome == "quarantined" and q.response == "ok:  Message 30631618 accepted"


def test_cribl_unfinished_message_is_reported_with_what_is_known():
    m = cribl_stories()[24611498]
    assert m.expired and m.status is None
    assert m.connection.peer_ip == "74.218.204.185" and m.connection.sbrs == "5.6"
    assert m.recipients[0].outcome == "pending"
    ev = m.evidence()
    assert any("queued for delivery" in ln for ln in ev)
    assert ev[0].endswith("New SMTP ICID 60140296 interface Data 1 (68.232.141.109) address 74.218.204.185 "
                          "reverse dns host email2.solidsignal.com verified yes")
    assert any(ln.endswith("ICID 60140296 close") for ln in ev)


def test_seed_auth_report():
    rep = AuthReport()
    run([str(SEED)], Options(), on_auth=rep.add)
    s = rep.summary()
    assert (s["by_user"]["ironport"]["successes"], s["by_user"]["ironport"]["failures"]) == (1, 1)
    out = s["by_profile"]["OutboundAuthentication"]
    assert (out["successes"], out["failures"]) == (1, 1)
    assert (s["by_profile"]["IncomingAuthentication"]["successes"],
            s["by_profile"]["IncomingAuthentication"]["failures"]) == (1, 1)
    assert s["by_client_ip"]["172.16.155.102"]["failures"] == 1
    assert s["by_mechanism"]["PLAIN"] == {**s["by_mechanism"]["PLAIN"], "successes": 1, "failures": 1}
    fail = [a for a in rep.attempts if a.direction == "outbound" and not a.succeeded][0]
    assert fail.conn_id == 5640 and fail.server_ip == "172.16.155.102"
    assert fail.response == "('535', ['5.7.8 Error: authentication failed: authentication failure'])"


def test_seed_outbound_failure_then_bounce_story():
    out = {}
    run([str(SEED)], Options(), on_story=lambda m: out.__setitem__(m.mid, m))
    r = out[448].recipients[0]
    assert r.outcome == "bounced" and r.status == "5.1.0"
    assert r.delivery.auth_profile == "OutboundAuthentication" and r.delivery.auth_succeeded is False
    assert r.response == "('554', ['5.7.1 <postmaster@example.com>: Relay access denied'])"
    assert out[441].recipients[0].outcome == "delivered" and out[441].recipients[0].delivery.auth_succeeded
