"""``mailward logs`` commands through click's CliRunner, over the real samples and over logs
written with the gateway's own formatter."""
from __future__ import annotations

import csv
import os
import gzip
import io
import json
from datetime import datetime, timedelta
from pathlib import Path

from click.testing import CliRunner

from mailward.logs.cli import logs_group
from mailward.maillog import events as E
from mailward.maillog.grammar import format_file_line, format_syslog_line

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "samples"
CRIBL = str(SAMPLES / "cribl_esa_7.6_2014_sanitised.log")
SEED = str(SAMPLES / "seed_smtp_auth_technote.log")
T0 = datetime(2026, 3, 2, 8, 0, 0)


def invoke(*args, input=None):
    assert SAMPLES.is_dir(), f"samples folder missing: {SAMPLES}"
    res = CliRunner().invoke(logs_group, list(args), input=input, catch_exceptions=False)
    return res


def write_log(path: Path, events: list[tuple[float, E.Event]], serial="SN-TEST-1") -> Path:
    start = T0 + timedelta(seconds=events[0][0] if events else 0)      # the file opens with its header
    lines = [format_file_line(E.BeginLogfile(), start), format_file_line(E.VersionInfo("16.0.0", serial), start),
             format_file_line(E.TimeOffset(0), start)]
    lines += [format_file_line(ev, T0 + timedelta(seconds=s)) for s, ev in events]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def session(icid: int, ip: str, logins: list[tuple[str, bool]], t: float) -> list[tuple[float, E.Event]]:
    out = [(t, E.NewIcid(icid, "IncomingMail", "10.0.0.25", ip, None, False)),
           (t, E.HatDecision(icid, "ACCEPT", "UNKNOWNLIST", "ALL", "None"))]
    for user, ok in logins:
        out.append((t, E.SmtpAuthResult(icid, ok, user, "LOGIN", "IncomingAuthentication")))
    out.append((t, E.IcidClose(icid)))
    return out


# --- auth ------------------------------------------------------------------------------------

def test_auth_seed_json_summary():
    res = invoke("auth", SEED, "--format", "json")
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert len(d["attempts"]) == 4
    assert d["summary"]["by_user"]["ironport"]["successes"] == 1
    assert d["summary"]["by_user"]["ironport"]["failures"] == 1
    prof = d["summary"]["by_profile"]["OutboundAuthentication"]
    assert (prof["successes"], prof["failures"]) == (1, 1)
    assert prof["first_seen"] == "2009-04-22T11:06:20Z" and prof["last_seen"] == "2009-04-22T11:19:41Z"


def test_auth_seed_csv_and_table_and_since():
    res = invoke("auth", SEED, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [(r["direction"], r["result"]) for r in rows] == [
        ("inbound", "success"), ("inbound", "failure"), ("outbound", "success"), ("outbound", "failure")]
    assert rows[1]["client_ip"] == "172.16.155.102" and rows[1]["user"] == "ironport"
    res = invoke("auth", SEED, "--format", "csv", "--summary-only")
    assert "user,ironport,1,1," in res.output
    res = invoke("auth", SEED)
    assert "ironport" in res.output and "OutboundAuthentication" in res.output
    res = invoke("auth", SEED, "--format", "json", "--since", "2009-04-22T11:40:00Z")
    assert [a["result"] for a in json.loads(res.stdout)["attempts"]] == ["success", "failure"]


def test_missing_file_and_bad_time_are_one_line_errors():
    res = CliRunner().invoke(logs_group, ["auth", "/nonexistent/mail.current"])
    assert res.exit_code == 2 and "no such file" in res.output
    res = CliRunner().invoke(logs_group, ["auth", SEED, "--since", "yesterday-ish"])
    assert res.exit_code == 2 and "cannot read time" in res.output


# --- track -----------------------------------------------------------------------------------

def test_track_mid_shows_story_family_and_evidence():
    res = invoke("track", CRIBL, "--mid", "24611507", "--format", "json")
    assert res.exit_code == 0
    stories = json.loads(res.stdout)
    mids = [s["mid"] for s in stories]
    assert mids[0] == 24611507 and set(mids) == {24611507, 24611528, 24611529, 24611531, 24611542}
    s = stories[0]
    assert s["connection"]["peer_ip"] == "69.67.18.139" and s["sender"] == "user15@fjvco.com"
    assert any("Start MID 24611507 ICID 60140302" in ln for ln in s["lines"])
    res = invoke("track", CRIBL, "--mid", "24611507", "--no-family")
    heads = [ln for ln in res.stdout.splitlines() if ln.startswith("MID ")]
    assert heads == ["MID 24611507  appliance 420D4FEA709365BFB3E3-0AF2EE5E700E"]
    assert "69.67.18.139 [mail.fjvco.com]" in res.output and "split -> MID 24611528" in res.output


def test_track_by_ip_rcpt_subject_and_no_match():
    res = invoke("track", CRIBL, "--ip", "144.191.128.195", "--format", "json", "--no-family")
    mids = {s["mid"] for s in json.loads(res.stdout)}
    assert {24611491, 24611494, 24611497} <= mids
    res = invoke("track", CRIBL, "--rcpt", "USER37@mycompany", "--format", "json", "--no-family")
    assert {s["mid"] for s in json.loads(res.stdout)} == {24611507, 24611528}
    res = invoke("track", CRIBL, "--subject", "hd-blade", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert rows[0]["mid"] == "24611498" and rows[0]["peer_ip"] == "74.218.204.185"
    res = CliRunner().invoke(logs_group, ["track", CRIBL, "--mid", "1"])
    assert res.exit_code == 1 and "no matching message" in res.output
    res = CliRunner().invoke(logs_group, ["track", CRIBL])
    assert res.exit_code == 2


def test_track_by_authenticated_user(tmp_path):
    ev = session(1, "192.0.2.10", [("alice", True)], 0)[:-1] + [
        (1, E.StartMid(10, 1)), (1, E.MailFrom(10, 1, "alice@example.org")),
        (1, E.RcptTo(10, 1, 0, "x@example.com")), (2, E.NewDcid(5, "10.0.0.25", "203.0.113.1", 25)),
        (2, E.DeliveryStart(5, 10, (0,))), (2, E.MessageDone(5, 10, (0,))),
        (2, E.DeliveryResponse(10, (0,), "250 ok")), (2, E.MessageFinished(10, "done")),
        (3, E.IcidClose(1)), (3, E.DcidClose(5))]
    p = write_log(tmp_path / "mail.current", ev)
    res = invoke("track", str(p), "--user", "alice", "--format", "json")
    (s,) = json.loads(res.stdout)
    assert s["connection"]["auth_user"] == "alice" and s["recipients"][0]["outcome"] == "delivered"
    assert s["recipients"][0]["delivery"]["address"] == "203.0.113.1"
    assert s["recipients"][0]["delivery"]["closed"] is not None


# --- detect ----------------------------------------------------------------------------------

def attack_log(tmp_path: Path) -> Path:
    ev: list[tuple[float, E.Event]] = []
    icid = 100
    # learning day: alice always from 192.0.2.10
    ev += session(icid := icid + 1, "192.0.2.10", [("alice", True)], 0)
    # brute force on bob from one IP, then success: compromise
    for i in range(12):
        ev += session(icid := icid + 1, "203.0.113.66", [("bob", False)], 90_000 + i * 5)
    ev += session(icid := icid + 1, "203.0.113.66", [("bob", True)], 90_070)
    # spraying from another IP
    ev += session(icid := icid + 1, "198.51.100.77", [(f"user{i}", False) for i in range(8)], 91_000)
    # distributed attack on carol
    for i in range(6):
        ev += session(icid := icid + 1, f"198.18.0.{i + 1}", [("carol", False)], 92_000 + i)
    # alice from a new IP after learning, then a burst of recipients
    icid += 1
    ev += session(icid, "203.0.113.200", [("alice", True)], 93_000)[:-1]
    mid = 500
    for k in range(3):
        mid += 1
        ev += [(93_001 + k, E.StartMid(mid, icid)), (93_001 + k, E.MailFrom(mid, icid, "alice@example.org"))]
        ev += [(93_001 + k, E.RcptTo(mid, icid, r, f"r{r}@example.net")) for r in range(50)]
        ev += [(93_002 + k, E.MessageFinished(mid, "done"))]
    ev += [(93_010, E.IcidClose(icid))]
    ev.sort(key=lambda x: x[0])
    return write_log(tmp_path / "attack.log", ev)


def test_detect_finds_each_attack_with_evidence(tmp_path):
    p = attack_log(tmp_path)
    res = invoke("detect", str(p), "--format", "json", "--brute-failures", "10", "--spray-users", "5",
                 "--distributed-ips", "5", "--compromise-failures", "5", "--burst-recipients", "100")
    assert res.exit_code == 0, res.output
    found = {(f["kind"], f["key"]): f for f in json.loads(res.stdout)}
    assert set(found) == {
        ("brute_force", "203.0.113.66"), ("success_after_failures", "bob"),
        ("password_spray", "198.51.100.77"), ("distributed_attack", "carol"),
        ("new_ip", "alice@203.0.113.200"), ("recipient_burst", "alice")}
    bf = found[("brute_force", "203.0.113.66")]
    assert bf["count"] == 12 and bf["severity"] == "high"
    assert all("SMTP Auth: (ICID" in ln and "failed for user: bob" in ln for ln in bf["evidence"])
    comp = found[("success_after_failures", "bob")]
    assert comp["severity"] == "critical" and "succeeded for user: bob" in comp["evidence"][-1]
    assert found[("recipient_burst", "alice")]["count"] == 150
    assert len(found[("password_spray", "198.51.100.77")]["users"]) == 8
    # raising the thresholds silences the rules
    res = invoke("detect", str(p), "--format", "json", "--brute-failures", "50", "--spray-users", "50",
                 "--distributed-ips", "50", "--compromise-failures", "50", "--burst-recipients", "1000",
                 "--learn-seconds", "1000000")
    assert json.loads(res.stdout) == []
    res = invoke("detect", str(p))
    assert "[critical] success_after_failures bob" in res.output and "    | " in res.output


# --- export ----------------------------------------------------------------------------------

def test_export_jsonl_ecs_and_cim(tmp_path):
    res = invoke("export", SEED)
    recs = [json.loads(x) for x in res.stdout.splitlines()]
    by_mid = {r["mid"]: r for r in recs}
    assert by_mid[448]["outcome"] == "bounced" and by_mid[448]["outbound_auth"] == "failure"
    assert by_mid[448]["dest_ip"] == "172.16.155.102" and by_mid[441]["outcome"] == "delivered"
    res = invoke("export", CRIBL, "--format", "ecs")
    docs = [json.loads(x) for x in res.stdout.splitlines()]
    d = next(d for d in docs if d["cisco"]["esa"]["mid"] == 24611491)
    assert d["destination"]["ip"] == "144.191.128.195" and d["event"]["action"] == "delivered"
    assert d["observer"]["serial_number"] == "420D4FEA709365BFB3E3-0AF2EE5E700E"
    d = next(d for d in docs if d["cisco"]["esa"]["mid"] == 24611528)
    assert d["source"]["ip"] == "69.67.18.139" and d["email"]["to"]["address"] == ["user37@mycompany.com"]
    assert d["email"]["from"]["address"] == ["user15@fjvco.com"]
    out = tmp_path / "cim.csv"
    res = invoke("export", CRIBL, "--format", "csv", "--names", "cim", "-o", str(out))
    rows = list(csv.DictReader(out.open()))
    r = next(r for r in rows if r["internal_message_id"] == "24611490")
    assert (r["src_ip"], r["action"], r["recipient"]) == ("", "blocked", "user1@mycompany.com")
    r = next(r for r in rows if r["internal_message_id"] == "24611507" and r["recipient"] == "user37@mycompany.com")
    assert r["src_ip"] == "69.67.18.139" and r["src_user"] == "user15@fjvco.com"


# --- stats and inputs ------------------------------------------------------------------------

def test_stats_over_all_samples_every_line_parsed():
    files = sorted(str(p) for p in SAMPLES.glob("*.log"))
    d = json.loads(invoke("stats", *files, "--format", "json").stdout)
    assert d["lines"] == sum(len(Path(f).read_text().splitlines()) for f in files)
    assert d["unparsed"] == 0 and d["parsed"] == d["lines"]
    assert set(d["appliances"]) == {"420D4FEA709365BFB3E3-0AF2EE5E700E", "-", "REDACTED.africa.example.net"}


def test_gz_rolled_stdin_truncated_and_host_filter(tmp_path):
    seed = Path(SEED).read_bytes()
    gz = tmp_path / "mail.@20090422T110000.s.gz"
    gz.write_bytes(gzip.compress(seed))
    rolled = tmp_path / "mail.@20090422T120000.s"
    rolled.write_bytes(seed[: len(seed) // 2] + b"\nWed Apr 22 11:4\n\xff\xfe junk\n")
    d = json.loads(invoke("stats", str(gz), str(rolled), "--format", "json").stdout)
    assert d["lines"] == 18 + seed[: len(seed) // 2].count(b"\n") + 3
    kinds = d["unparsed_by_kind"]
    assert kinds.get("truncated", 0) >= 1 and kinds.get("no-header") == 1      # kept and counted
    assert sum(kinds.values()) == d["unparsed"] and d["parsed"] >= 18
    d = json.loads(invoke("auth", "-", "--format", "json", input=seed.decode()).stdout)
    assert len(d["attempts"]) == 4
    syslog = "".join(
        format_syslog_line(ev, T0, hostname=h) + "\n"
        for h in ("esa1.example", "esa2.example")
        for ev in (E.NewIcid(7, "In", "10.0.0.1", "192.0.2.9", None, False),
                   E.SmtpAuthResult(7, False, "zed", "PLAIN", "Inc")))
    p = tmp_path / "syslog.log"
    p.write_text(syslog)
    d = json.loads(invoke("auth", str(p), "--format", "json", "--year", "2026").stdout)
    assert sorted(a["appliance"] for a in d["attempts"]) == ["esa1.example", "esa2.example"]
    assert d["attempts"][0]["time"] == "2026-03-02T08:00:00Z"
    d = json.loads(invoke("auth", str(p), "--format", "json", "--host", "esa2*").stdout)
    assert [a["appliance"] for a in d["attempts"]] == ["esa2.example"]


def test_export_json_and_ecs_csv_stream_fixed_columns():
    res = invoke("export", SEED, "--format", "json")
    recs = json.loads(res.stdout)
    assert sorted(r["mid"] for r in recs) == [441, 448]
    res = invoke("export", SEED, "--format", "csv", "--names", "ecs")
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert {"destination.ip", "source.ip", "user.name", "email.to.address", "cisco.esa.dcid"} <= set(rows[0])
    r448 = next(r for r in rows if r["cisco.esa.mid"] == "448")
    assert r448["destination.ip"] == "172.16.155.102" and r448["event.action"] == "bounced"
    res = invoke("export", SEED, "--format", "table")
    assert "bounced" in res.stdout and "delivered" in res.stdout


def test_stats_window_and_files_read_oldest_first(tmp_path):
    d = json.loads(invoke("stats", SEED, "--format", "json", "--since", "2009-04-22T11:40:00Z").stdout)
    assert d["lines"] == 18 and d["in_range"] == 8
    # a message that spans a rotation: the newer file named first is still read second
    older = write_log(tmp_path / "mail.@20260302T080000.s", [
        (0, E.StartMid(1, 0)), (0, E.MailFrom(1, 0, "a@example.org")), (0, E.RcptTo(1, 0, 0, "b@example.com"))])
    newer = write_log(tmp_path / "mail.current", [
        (7200, E.DeliveryStart(3, 1, (0,))), (7200, E.MessageDone(3, 1, (0,))),
        (7201, E.MessageFinished(1, "done"))])
    (s,) = json.loads(invoke("track", str(newer), str(older), "--mid", "1", "--format", "json",
                             "--idle", "86400").stdout)
    assert s["sender"] == "a@example.org" and s["recipients"][0]["outcome"] == "delivered"
    assert s["status"] == "done" and not s["expired"]


def test_truncated_gzip_reads_what_is_there_and_says_so(tmp_path):
    data = gzip.compress(Path(SEED).read_bytes() * 20)
    cut = tmp_path / "mail.@20090422T110000.s.gz"
    cut.write_bytes(data[: len(data) * 2 // 3])
    res = invoke("auth", str(cut), "--format", "json")
    assert res.exit_code == 0
    assert len(json.loads(res.stdout)["attempts"]) >= 4
    assert "file ends damaged, read up to there: " + str(cut) in res.stderr
    d = json.loads(invoke("stats", str(cut), "--format", "json").stdout)
    assert len(d["damaged_files"]) == 1 and d["damaged_files"][0].startswith(str(cut))
    unreadable = tmp_path / "locked.log"
    unreadable.write_text("x\n")
    unreadable.chmod(0)
    if os.geteuid() != 0:                       # root reads anything
        res = CliRunner().invoke(logs_group, ["stats", str(unreadable)])
        assert res.exit_code == 2 and "Permission denied" in res.output


def test_output_into_a_closed_pipe_stops_quietly(tmp_path):
    """``mailward logs auth big.log | head -1``: no traceback, no error line."""
    import subprocess
    import sys as _sys

    from mailward.logs import synth

    log = tmp_path / "mail.current"
    with log.open("w") as f:
        synth.write(f, 30_000, seed=2)
    cmd = [_sys.executable, "-m", "mailward", "logs", "auth", str(log), "--format", "csv"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()                         # the reader goes away after one line
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 141
    assert first.startswith(b"time,") and err == b""
