"""Reliability benchmark: the long versions of the crash, hostile-input and memory proofs.

Owns: three runs against real `mailward run --config FILE` processes and one summary table.

1. Crash safety under load: >= 5,000 messages from concurrent clients through a gateway to a
   recording destination; the gateway is SIGKILLed and restarted on the same spool several
   times and the destination is killed mid-delivery several times; at the end every message
   that got a 250 must have arrived (lost = 0), duplicates are counted.
2. Hostile input: the SMTP smuggling battery (end-of-data tricks behind a smuggled second
   transaction), the open-relay battery without AUTH, and seeded random hostile sessions
   (mutated command streams: bare CR/LF, NUL, over-long lines, pipelining, STARTTLS, junk) to a
   gateway with a hash-chained log. It must stay up, answer only well-formed replies, relay
   nothing, queue no smuggled message, and write only lines the log grammar parses, with a
   chain `mailward logs verify` accepts.
3. Memory: `bench/memory.py` (10 concurrent 25 MB messages), its peak RSS.

Must not know mailward's internals: it uses the CLI, config files and SMTP only.

Usage: python bench/reliability.py [--messages 5000] [--clients 16] [--gateway-kills 5]
                                   [--destination-kills 3] [--fuzz 3000] [--seed N] [--no-memory]
Exit status 1 when any proof fails (lost > 0, a relay, a smuggled message, a bad line...).
"""
from __future__ import annotations

import argparse
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mailward.maillog.grammar import parse_line  # noqa: E402
from tests.integration.test_security_relay import LOCAL_OK, RELAY_ATTEMPTS  # noqa: E402
from tests.reliability.support import (MAILWARD, GatewayProcess, RawClient, RecordingSink,  # noqa: E402
                                       crash_scenario, free_port, gateway_config)
from tests.reliability.test_smuggling import SMUGGLE, SMUGGLED_TX  # noqa: E402

REPLY_LINE = re.compile(rb"^[2-5]\d\d(?:[ -].*)?$")


# --- hostile input -------------------------------------------------------------------------

COMMANDS = [b"EHLO fuzz.test", b"HELO fuzz.test", b"MAIL FROM:<a@client.test>", b"MAIL FROM:<>",
            b"RCPT TO:<x@example.test>", b"RCPT TO:<v@elsewhere.test>", b"RCPT TO:<v%elsewhere.test@example.test>",
            b"DATA", b"RSET", b"NOOP", b"STARTTLS", b"AUTH PLAIN", b"AUTH PLAIN AGFsaWNlAHdyb25n", b"AUTH LOGIN",
            b"AUTH CRAM-MD5", b"*", b"VRFY root", b"EXPN all", b"BDAT 10 LAST", b"HELP", b"MAIL FROM:<a@b> SIZE=99999999999",
            b"MAIL FROM:<a@b> BODY=8BITMIME SMTPUTF8", b"RCPT TO:<postmaster>", b"QUIT", b"Subject: x",
            b"Message-ID: <fuzz@x>", b".", b"..", b""]
JUNK = [b"\x00", b"\r", b"\n", b"\r\n", b"\n.\r\n", b"\r.\n", b"\n.\n", b".\r\n", b"\xff\xfe", b"\x1b[2J",
        "\u2028".encode(), b"\t", b" ", b"%", b"<", b">", b":", b"\\", b'"']
TERMINATORS = [b"\r\n"] * 8 + [b"\n", b"\r", b"", b"\r\r\n", b"\n\r"]


def fuzz_session(rng: random.Random) -> bytes:
    parts = []
    for _ in range(rng.randint(1, 14)):
        cmd = bytearray(rng.choice(COMMANDS))
        for _ in range(rng.choice((0, 0, 0, 1, 2, 4))):
            pos = rng.randint(0, len(cmd))
            cmd[pos:pos] = rng.choice(JUNK)
        if rng.random() < 0.05:
            cmd += bytes(rng.randrange(256) for _ in range(rng.choice((600, 1200, 5000))))
        parts.append(bytes(cmd) + rng.choice(TERMINATORS))
    return b"".join(parts)


def exchange(port: int, data: bytes, rng: random.Random | None = None, wait: float = 0.4) -> tuple[list[bytes], bool]:
    """Send ``data`` (in random slices when rng is given), read until the server closes or is
    quiet for ``wait`` seconds. Returns the reply lines and whether the server closed."""
    lines, buf, closed = [], b"", False
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        try:
            if rng is None:
                s.sendall(data)
            else:
                i = 0
                while i < len(data):
                    n = rng.randint(1, 600)
                    s.sendall(data[i:i + n])
                    i += n
            s.settimeout(wait)
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    closed = True
                    break
                buf += chunk
        except (socket.timeout, ConnectionError):
            pass
    lines = buf.split(b"\r\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines, closed


@dataclass
class HostileReport:
    smuggling_inputs: int = 0
    smuggled_queued: int = 0
    relay_attempts: int = 0
    relayed: int = 0
    fuzz_sessions: int = 0
    bad_reply_lines: int = 0
    log_lines: int = 0
    unparsed_lines: int = 0
    chain_ok: bool = False
    alive: bool = False
    seconds: float = 0.0


def hostile_run(fuzz: int, seed: int) -> HostileReport:
    rep = HostileReport()
    t0 = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="mw-hostile-"))
    sink = RecordingSink().start()
    port = free_port()
    cfg = root / "mailward.toml"
    cfg.write_text(gateway_config(root, port, sink.port, loopback_relays=False, hash_chain=True,
                                  listener_extra="command_timeout = 2.0\ndata_timeout = 2.0"))
    gw = GatewayProcess(cfg, port)
    rng = random.Random(seed)
    try:
        gw.start()
        # 1. smuggling: every trick, a smuggled second transaction behind it
        for name, seq in sorted(SMUGGLE.items()):
            for split in (False, True):
                data = (b"EHLO attacker.test\r\nMAIL FROM:<a@client.test>\r\nRCPT TO:<x@example.test>\r\nDATA\r\n"
                        b"Message-ID: <first@client.test>\r\n\r\nbody\r\n" + seq + SMUGGLED_TX + b".\r\nQUIT\r\n")
                lines, _ = exchange(port, data, rng if split else None)
                rep.smuggling_inputs += 1
                rep.bad_reply_lines += sum(1 for line in lines if not REPLY_LINE.match(line))
        # 2. open relay battery, no AUTH, from an address that may not relay
        for sender in ("", "attacker@outside.test", "postmaster@example.test"):
            for rcpt in RELAY_ATTEMPTS:
                with RawClient(port) as c:
                    c.reply()
                    c.send(b"EHLO attacker.test\r\n")
                    c.reply()
                    c.send(f"MAIL FROM:<{sender}>\r\n".encode())
                    c.reply()
                    c.send(b"RCPT TO:<" + rcpt.encode("utf-8") + b">\r\n")
                    code, _ = c.reply()
                rep.relay_attempts += 1
                if code and code < 400 and rcpt not in LOCAL_OK:
                    rep.relayed += 1
        # 3. random hostile sessions
        for n in range(fuzz):
            lines, _ = exchange(port, fuzz_session(rng), rng if n % 2 else None, wait=0.05)
            rep.fuzz_sessions += 1
            rep.bad_reply_lines += sum(1 for line in lines if not REPLY_LINE.match(line))
            if n % 500 == 499 and gw.proc.poll() is not None:
                break
        rep.alive = gw.proc.poll() is None and exchange(port, b"NOOP\r\nQUIT\r\n")[0][1:2] == [b"250 2.0.0 Ok"]
        time.sleep(3)              # let deliveries of accidental messages settle
    finally:
        gw.stop()
        sink.close()
    log = root / "log" / "mail_logs" / "mail.current"
    text = log.read_bytes().decode("utf-8", "surrogateescape")
    for line in text.split("\n")[:-1]:
        rep.log_lines += 1
        rec = parse_line(line)
        if rec.unparsed is not None or rec.event is None:
            rep.unparsed_lines += 1
    rep.smuggled_queued = text.count("<smuggled@evil.test>") + sink.snapshot()["smuggled@evil.test"]
    verify = subprocess.run([str(MAILWARD), "logs", "verify", "--key", str(root / "log" / "chain.key"), str(log)],
                            capture_output=True, timeout=120)
    rep.chain_ok = verify.returncode == 0
    rep.seconds = time.monotonic() - t0
    shutil.rmtree(root, ignore_errors=True)
    return rep


# --- memory --------------------------------------------------------------------------------

def memory_run() -> tuple[float | None, bool, str]:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "memory.py")], capture_output=True, text=True,
                         timeout=600)
    m = re.search(r"peak RSS \(VmHWM\)\s+([\d.]+) MB", out.stdout)
    return (float(m.group(1)) if m else None), out.returncode == 0, out.stdout + out.stderr


# --- main ----------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--gateway-kills", type=int, default=5)
    ap.add_argument("--destination-kills", type=int, default=3)
    ap.add_argument("--fuzz", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    ap.add_argument("--no-memory", action="store_true")
    args = ap.parse_args()
    print(f"mailward reliability (seed {args.seed})", flush=True)

    root = Path(tempfile.mkdtemp(prefix="mw-crash-"))
    print(f"crash safety: {args.messages} messages, {args.clients} clients ...", flush=True)
    crash = crash_scenario(root, total=args.messages, clients=args.clients, gateway_kills=args.gateway_kills,
                           destination_kills=args.destination_kills, seed=args.seed,
                           drain_timeout=180, load_timeout=600)
    shutil.rmtree(root, ignore_errors=True)
    print(crash.table(), flush=True)

    print(f"hostile input: smuggling, relay battery, {args.fuzz} random sessions ...", flush=True)
    hostile = hostile_run(args.fuzz, args.seed)

    peak = None
    mem_ok = True
    if not args.no_memory:
        print("memory: 10 concurrent 25 MB messages ...", flush=True)
        peak, mem_ok, mem_out = memory_run()
        print(mem_out.rstrip(), flush=True)

    rate = crash.acknowledged / crash.seconds if crash.seconds else 0.0
    rows = [
        ("load held", f"{crash.acknowledged} acknowledged of {crash.sent} sent by {args.clients} clients "
                      f"({crash.connections} connections, {rate:.0f} msg/s incl. restarts)",
         crash.acknowledged >= args.messages),
        ("faults injected", f"{crash.gateway_kills} gateway SIGKILLs, {crash.destination_kills} destination kills "
                            f"({crash.destination_connections_cut} connections cut)",
         crash.gateway_kills == args.gateway_kills),
        ("delivered", f"{crash.delivered} of {crash.acknowledged} acknowledged; queue drained: {crash.drained}",
         crash.drained),
        ("lost", str(crash.lost), crash.lost == 0),
        ("duplicated", f"{crash.duplicated} (in flight at a kill; {crash.unacknowledged_delivered} unacknowledged "
                       f"also arrived)", True),
        ("inputs tried", f"{hostile.smuggling_inputs} smuggling, {hostile.relay_attempts} relay attempts, "
                         f"{hostile.fuzz_sessions} random hostile sessions", hostile.fuzz_sessions == args.fuzz),
        ("relayed without AUTH", str(hostile.relayed), hostile.relayed == 0),
        ("smuggled messages", str(hostile.smuggled_queued), hostile.smuggled_queued == 0),
        ("malformed replies", str(hostile.bad_reply_lines), hostile.bad_reply_lines == 0),
        ("log lines / unparsed", f"{hostile.log_lines} / {hostile.unparsed_lines}", hostile.unparsed_lines == 0),
        ("hash chain verifies", str(hostile.chain_ok), hostile.chain_ok),
        ("gateway alive after", str(hostile.alive), hostile.alive),
    ]
    if not args.no_memory:
        rows.append(("peak RSS, 10 x 25 MB", f"{peak:.1f} MB (target < 150 MB)" if peak else "n/a", mem_ok))
    print("\nsummary")
    print(f"  {'proof':<24} {'result':<90} ok")
    for name, value, ok in rows:
        print(f"  {name:<24} {value:<90} {'yes' if ok else 'NO'}")
    failed = [name for name, _, ok in rows if not ok]
    print("\nresult: " + ("all proofs hold" if not failed else "FAILED: " + ", ".join(failed)))
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
