"""Detection rules and the auth report over hand-built attempts (log time, no clocks)."""
from __future__ import annotations

from mailward.logs.authreport import AuthReport
from mailward.logs.detect import Detector, Thresholds
from mailward.logs.model import AuthAttempt, Message, Recipient, Connection

T0 = 1_700_000_000.0


def att(ts, user, ip, ok=False, app="", icid=1):
    return AuthAttempt(app, T0 + ts, "inbound", ok, user, "PLAIN", "Inc", ip, "10.0.0.1", icid, None,
                       f"t={ts} SMTP Auth: (ICID {icid}) {'succeeded' if ok else 'failed'} for user: {user}")


def run(attempts, live=False, **th):
    found = []
    d = Detector(found.append, Thresholds(**th), live=live)
    for a in attempts:
        d.on_auth(a)
    d.flush()
    return found


def kinds(found):
    return sorted((f.kind, f.key) for f in found)


def test_brute_force_from_one_ip_is_one_episode_with_final_count():
    found = run([att(i, "ironport", "203.0.113.9") for i in range(30)], brute_failures=10)
    bf = [f for f in found if f.kind == "brute_force"]
    assert len(bf) == 1
    assert bf[0].key == "203.0.113.9" and bf[0].count == 30 and bf[0].severity == "high"
    assert bf[0].evidence[0].startswith("t=0 ") and len(bf[0].evidence) <= 25


def test_below_threshold_or_spread_in_time_is_quiet():
    assert run([att(i, "u", "203.0.113.9") for i in range(9)], brute_failures=10) == []
    spread = [att(i * 700, "u", "203.0.113.9") for i in range(20)]   # one per window
    assert [f for f in run(spread, brute_failures=10) if f.kind == "brute_force"] == []


def test_new_episode_after_a_quiet_window():
    burst1 = [att(i, "u", "198.51.100.1") for i in range(10)]
    burst2 = [att(5000 + i, "u", "198.51.100.1") for i in range(10)]
    bf = [f for f in run(burst1 + burst2, brute_failures=10) if f.kind == "brute_force"]
    assert len(bf) == 2


def test_password_spray_one_ip_many_users():
    found = run([att(i, f"user{i}", "203.0.113.50") for i in range(6)], spray_users=5, brute_failures=100)
    assert kinds(found) == [("password_spray", "203.0.113.50")]
    assert len(found[0].users) == 6


def test_distributed_attack_many_ips_one_user():
    found = run([att(i, "ceo", f"192.0.2.{i}") for i in range(7)], distributed_ips=5)
    assert kinds(found) == [("distributed_attack", "ceo")]
    assert len(found[0].ips) == 7


def test_success_after_failures_is_critical_and_carries_both_sides():
    seq = [att(i, "bob", "203.0.113.7") for i in range(6)] + [att(10, "bob", "203.0.113.7", ok=True)]
    found = run(seq, compromise_failures=5, brute_failures=100)
    f = [x for x in found if x.kind == "success_after_failures"]
    assert len(f) == 1 and f[0].severity == "critical" and f[0].count == 6
    assert "succeeded" in f[0].evidence[-1] and "failed" in f[0].evidence[0]
    # the same success after only 2 failures is normal
    assert [x for x in run(seq[-3:], compromise_failures=5) if x.kind == "success_after_failures"] == []


def test_new_ip_only_after_learning_window():
    seq = [att(0, "amy", "192.0.2.1", ok=True),
           att(100, "amy", "192.0.2.2", ok=True),          # learning: quiet
           att(100_000, "amy", "192.0.2.1", ok=True),      # known
           att(100_100, "amy", "203.0.113.99", ok=True)]   # new, after learning
    found = run(seq, learn_seconds=86400)
    assert kinds(found) == [("new_ip", "amy@203.0.113.99")]
    assert found[0].severity == "medium"


def test_live_mode_reports_when_the_threshold_is_crossed():
    out = []
    d = Detector(out.append, Thresholds(brute_failures=3), live=True)
    for i in range(3):
        d.on_auth(att(i, "x", "203.0.113.1"))
    assert [f.kind for f in out] == ["brute_force"]
    for i in range(3, 10):
        d.on_auth(att(i, "x", "203.0.113.1"))
    d.flush()
    assert [f.kind for f in out] == ["brute_force"]     # reported once per episode


def _story(mid, user, n, ts):
    m = Message("", mid, T0 + ts)
    c = Connection("", 1, T0 + ts)
    c.auth_user = user
    c.peer_ip = "192.0.2.44"
    m.connection = c
    for i in range(n):
        m.recipients[i] = Recipient(i, f"r{i}@example.com")
    return m


def test_recipient_burst_by_authenticated_user():
    found = []
    d = Detector(found.append, Thresholds(burst_recipients=100, burst_window=3600))
    for i in range(12):
        d.on_story(_story(i, "sales", 10, i * 60))
    d.on_story(_story(99, None, 500, 0))          # not authenticated: not this rule
    d.flush()
    assert kinds(found) == [("recipient_burst", "sales")]
    assert found[0].count == 120 and found[0].ips == ("192.0.2.44",)


def test_auth_report_tallies_and_window():
    rep = AuthReport(since=T0 + 1, until=T0 + 100)
    for a in [att(0, "a", "1.1.1.1"), att(1, "a", "1.1.1.1", ok=True), att(2, "b", "1.1.1.1"),
              att(200, "a", "1.1.1.1")]:
        rep.add(a)
    s = rep.summary()
    assert s["by_user"]["a"]["successes"] == 1 and s["by_user"]["a"]["failures"] == 0
    assert s["by_user"]["b"]["failures"] == 1
    assert s["by_client_ip"]["1.1.1.1"] == {**s["by_client_ip"]["1.1.1.1"], "successes": 1, "failures": 1}
    assert s["by_mechanism"]["PLAIN"]["successes"] == 1
    assert len(rep.attempts) == 2


def test_rejections_lockouts_and_errors_are_listed_not_counted_as_verdicts():
    from mailward.logs.correlate import Correlator
    from mailward.logs.sources import Reader

    text = """\
Thu Mar  5 10:00:00 2026 Info: New SMTP ICID 9 interface In (10.0.0.1) address 203.0.113.4 reverse dns host unknown verified no
Thu Mar  5 10:00:01 2026 Info: SMTP Auth: (ICID 9) failed for user: root using AUTH mechanism: PLAIN with profile: Inc
Thu Mar  5 10:00:02 2026 Info: SMTP Auth: (ICID 9) rejected using AUTH mechanism: PLAIN reason: bad base64 encoding
Thu Mar  5 10:00:03 2026 Info: SMTP Auth: (ICID 9) lockout of address 203.0.113.4 for 300 seconds after 5 failures
Thu Mar  5 10:00:04 2026 Info: SMTP Auth (ICID 9) profile: ldapprof is misconfigured or missing causing an Auth failure
"""
    rep = AuthReport()
    reader = Reader()
    reader.read_lines(text.splitlines(keepends=True), Correlator(on_auth=rep.add).feed)
    assert reader.stats.unparsed == 0, reader.stats.by_kind
    assert [a.result for a in rep.attempts] == ["failure", "rejected", "lockout", "error"]
    assert rep.attempts[1].client_ip == "203.0.113.4" and rep.attempts[1].response == "bad base64 encoding"
    s = rep.summary()
    assert s["other_events"] == {"error": 1, "lockout": 1, "rejected": 1}
    assert s["by_user"]["root"]["failures"] == 1
    assert s["by_client_ip"]["203.0.113.4"]["failures"] == 2      # the rejection counts for the IP


def test_detector_state_stays_bounded_over_many_one_off_ips():
    d = Detector(lambda f: None, Thresholds(window=60))
    for i in range(5000):
        d.on_auth(att(i * 10, "u", f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}"))
    assert len(d._ip_fail) < 50


def test_split_children_do_not_count_their_recipients_twice():
    found = []
    d = Detector(found.append, Thresholds(burst_recipients=15, burst_window=3600))
    parent = _story(1, "sales", 10, 0)
    child = _story(2, "sales", 10, 1)
    child.relation, child.parent = "split", 1
    d.on_story(parent)
    d.on_story(child)
    d.flush()
    assert found == []
