"""Whole-gateway harness for the reliability tests and benchmarks.

Owns: a mailward gateway run as a separate process (`mailward run --config FILE`) that can
be SIGKILLed and restarted on the same spool and port; a recording SMTP destination that
counts deliveries per Message-ID and can itself be killed mid-delivery and restarted on the
same port; a load client that sends messages with unique Message-IDs and remembers which
ones got a 250; the crash scenario the CI test and `bench/reliability.py` share; and a
byte-exact SMTP client for hostile input. Must not know mailward's internals: it talks to the
gateway only through its CLI, its config file and SMTP, as an operator would.
"""
from __future__ import annotations

import asyncio
import collections
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"
MAILWARD = Path(sys.executable).parent / "mailward"
MESSAGE_ID = re.compile(rb"^Message-ID:\s*<([^>\r\n]+)>", re.IGNORECASE | re.MULTILINE)


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# --- the destination ---------------------------------------------------------------------

class RecordingSink:
    """An SMTP destination in its own thread and event loop.

    Counts each message by its Message-ID header once the final dot arrived (before the 250
    is written: a destination that dies between the two is the classic duplicate source).
    ``kill()`` drops every connection at once, mid-command or mid-DATA, and stops listening;
    ``start()`` listens again on the same port.
    """

    def __init__(self, host: str = LOOPBACK, port: int | None = None, auth: str | None = None,
                 data_delay: float = 0.0):
        self.host = host
        # Time between the final dot and recording + 250: a destination that "thinks" a
        # little, so that a kill lands mid-DATA rather than between messages.
        self.data_delay = data_delay
        self.data_reply = b"250 2.0.0 Ok: recorded\r\n"   # the answer to the final dot
        self.port = port or free_port(host)
        self.auth = auth                  # None: no AUTH offered; "accept" / "reject": AUTH PLAIN
        self.auth_seen: list[bytes] = []  # the raw AUTH PLAIN blobs (decoded) clients sent
        self.counts: collections.Counter[str] = collections.Counter()
        self.received = 0
        self.cut = 0                      # connections dropped by kill() (mid-command or mid-DATA)
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="recording-sink", daemon=True)
        self._thread.start()
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def _call(self, coro, timeout: float = 10):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> "RecordingSink":
        async def go():
            self._server = await asyncio.start_server(self._handle, self.host, self.port, reuse_address=True)
        self._call(go())
        return self

    def kill(self) -> None:
        async def go():
            if self._server is not None:
                self._server.close()
                self._server = None
            for w in list(self._writers):
                self.cut += 1
                w.transport.abort()
            self._writers.clear()
        self._call(go())

    def close(self) -> None:
        self.kill()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def snapshot(self) -> collections.Counter[str]:
        with self._lock:
            return collections.Counter(self.counts)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            writer.write(b"220 sink.reliability.test ESMTP\r\n")
            rcpts = 0
            while True:
                line = await asyncio.wait_for(reader.readline(), 60)
                if not line:
                    return
                verb = line[:4].upper()
                if verb == b"EHLO":
                    auth = b"250-AUTH PLAIN\r\n" if self.auth else b""
                    writer.write(b"250-sink.reliability.test\r\n250-PIPELINING\r\n" + auth + b"250 8BITMIME\r\n")
                elif verb == b"AUTH" and self.auth:
                    import base64

                    blob = line.split()[2] if len(line.split()) > 2 else b""
                    with self._lock:
                        self.auth_seen.append(base64.b64decode(blob))
                    writer.write(b"235 2.7.0 ok\r\n" if self.auth == "accept" else b"535 5.7.8 no\r\n")
                elif verb == b"HELO":
                    writer.write(b"250 sink.reliability.test\r\n")
                elif verb in (b"MAIL", b"RSET", b"NOOP"):
                    rcpts = 0 if verb != b"NOOP" else rcpts
                    writer.write(b"250 2.0.0 Ok\r\n")
                elif verb == b"RCPT":
                    rcpts += 1
                    writer.write(b"250 2.1.5 Ok\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 go ahead\r\n")
                    await writer.drain()
                    body = await self._read_data(reader)
                    if body is None:
                        return
                    if self.data_delay:
                        await asyncio.sleep(self.data_delay)
                        if writer.transport.is_closing():
                            return              # killed before it could take the message
                    m = MESSAGE_ID.search(body)
                    with self._lock:
                        self.received += 1
                        self.counts[m.group(1).decode() if m else "<none>"] += 1
                    writer.write(self.data_reply)
                elif verb == b"QUIT":
                    writer.write(b"221 2.0.0 Bye\r\n")
                    await writer.drain()
                    return
                else:
                    writer.write(b"502 5.5.2 not here\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    @staticmethod
    async def _read_data(reader: asyncio.StreamReader) -> bytes | None:
        parts = []
        while True:
            line = await reader.readline()
            if not line:
                return None
            if line == b".\r\n":
                return b"".join(parts)
            parts.append(line[1:] if line.startswith(b".") else line)


# --- the gateway process -------------------------------------------------------------------

def gateway_config(root: Path, port: int, dest_port: int, *, listener_extra: str = "", extra: str = "",
                   delivery_extra: str = "", loopback_relays: bool = True, hash_chain: bool = False) -> str:
    """A gateway relaying everything to ``dest_port``. ``loopback_relays``: 127/8 may relay
    without AUTH (the load clients); False: everyone is only ACCEPTed (relay attempts fail)."""
    hat = ('group = "RELAYLIST"\nmatch = ["127.0.0.0/8"]\npolicy = "RELAY"' if loopback_relays
           else 'group = "None"\nmatch = ["ALL"]\npolicy = "ACCEPT"')
    return f"""
[gateway]
hostname = "gw.reliability.test"
spool_dir = "{root / 'spool'}"
log_dir = "{root / 'log'}"
serial = "MWREL-0001"

[logging]
hash_chain = {"true" if hash_chain else "false"}

[dns]
reverse_lookups = false

[delivery]
initial_retry = 1
max_retry_interval = 2
connect_timeout = 5.0
command_timeout = 20.0
{delivery_extra}

[[listener]]
name = "IncomingMail"
address = "127.0.0.1"
port = {port}
type = "private"
auth = "off"
accepted_domains = ["example.test"]
max_connections = 1000
max_connections_per_ip = 1000
max_messages_per_connection = 1000
{listener_extra}

[[listener.hat]]
{hat}

[[route]]
domain = "ALL"
hosts = [{{ host = "127.0.0.1", port = {dest_port} }}]
tls = "off"

{extra}
"""


class GatewayProcess:
    """`mailward run --config FILE` as a child process on a fixed port."""

    def __init__(self, config_path: Path, port: int):
        self.config_path = config_path
        self.port = port
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.kills = 0

    def start(self, timeout: float = 30) -> None:
        log = open(self.config_path.parent / f"gateway-{self.starts}.out", "wb")
        self.proc = subprocess.Popen([str(MAILWARD), "run", "--config", str(self.config_path)],
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}: {self.output()}")
            try:
                with socket.create_connection((LOOPBACK, self.port), timeout=1) as s:
                    s.recv(100)
                    s.sendall(b"QUIT\r\n")
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"gateway did not listen within {timeout}s: {self.output()}")

    def output(self) -> str:
        path = self.config_path.parent / f"gateway-{self.starts - 1}.out"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a power cut of the process."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.kills += 1

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def queue_length(self, spool: Path) -> int:
        """Live messages in the spool, read with the read-only `mailward queue list`."""
        out = subprocess.run([str(MAILWARD), "queue", "list", "--spool", str(spool), "--json"],
                             capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise RuntimeError(out.stderr)
        return sum(1 for line in out.stdout.splitlines() if line.strip().startswith("{"))


# --- the load ------------------------------------------------------------------------------

def message(mid: str, size: int = 300) -> bytes:
    filler = (b"x" * 70 + b"\r\n") * max(1, size // 72)
    return (f"From: load@client.test\r\nTo: rcpt@dest.test\r\nMessage-ID: <{mid}>\r\n"
            f"Subject: reliability {mid}\r\n\r\n").encode() + filler


@dataclass
class LoadResult:
    sent: int = 0                      # DATA fully written (a 250 may or may not have come)
    acknowledged: set[str] = field(default_factory=set)
    attempts: int = 0                  # connections tried, including refused ones
    lock: threading.Lock = field(default_factory=threading.Lock)


def run_load(port: int, total: int, clients: int, result: LoadResult, *, prefix: str = "m",
             per_connection: int = 5, deadline: float = 120.0) -> None:
    """``clients`` threads send ``total`` messages; a message that got no 250 (gateway down,
    connection dropped) is retried under a NEW Message-ID, as a real client would resend it;
    only 250-acknowledged IDs are promised to the destination."""
    ids = iter(range(total))
    ids_lock = threading.Lock()
    stop_at = time.monotonic() + deadline

    def next_id() -> int | None:
        with ids_lock:
            return next(ids, None)

    def worker(w: int) -> None:
        pending: list[int] = []
        attempt = 0
        while time.monotonic() < stop_at:
            while len(pending) < per_connection:
                n = next_id()
                if n is None:
                    break
                pending.append(n)
            if not pending:
                return
            attempt += 1
            with result.lock:
                result.attempts += 1
            try:
                with smtplib.SMTP(LOOPBACK, port, timeout=20) as s:
                    s.ehlo("load.client.test")
                    while pending:
                        n = pending[0]
                        mid = f"{prefix}{n}.a{attempt}@load.test"
                        with result.lock:
                            result.sent += 1
                        s.sendmail("load@client.test", ["rcpt@dest.test"], message(mid))
                        with result.lock:
                            result.acknowledged.add(mid)
                        pending.pop(0)
            except (OSError, smtplib.SMTPException):
                time.sleep(0.05)

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, stop_at - time.monotonic()) + 5)


# --- the crash scenario (the CI test and the benchmark share it) ---------------------------

@dataclass
class CrashReport:
    sent: int
    acknowledged: int
    delivered: int                     # acknowledged messages that reached the destination
    lost: int                          # acknowledged, never delivered: must be 0
    duplicated: int                    # extra copies at the destination
    unacknowledged_delivered: int      # no 250 seen (killed mid-DATA), delivered anyway: allowed
    gateway_kills: int
    destination_kills: int
    destination_connections_cut: int  # open delivery connections dropped by the destination kills
    connections: int
    drained: bool
    seconds: float
    lost_ids: list[str] = field(default_factory=list)

    def table(self) -> str:
        rows = [("sent", self.sent), ("acknowledged (250)", self.acknowledged), ("delivered", self.delivered),
                ("lost", self.lost), ("duplicated", self.duplicated),
                ("unacknowledged but delivered", self.unacknowledged_delivered),
                ("gateway SIGKILLs", self.gateway_kills), ("destination kills", self.destination_kills),
                ("destination connections cut", self.destination_connections_cut),
                ("client connections", self.connections), ("queue drained", self.drained),
                ("seconds", f"{self.seconds:.1f}")]
        return "\n".join(f"  {k:<30} {v}" for k, v in rows)


def crash_scenario(root: Path, *, total: int, clients: int, gateway_kills: int, destination_kills: int = 0,
                   seed: int = 0, drain_timeout: float = 60.0, load_timeout: float = 120.0) -> CrashReport:
    """Send ``total`` messages from ``clients`` concurrent clients through a gateway process
    to a recording destination while SIGKILLing (and restarting) the gateway ``gateway_kills``
    times and dropping the destination ``destination_kills`` times, then wait for the queue
    to drain and compare what was acknowledged with what arrived."""
    import random

    rng = random.Random(seed)
    t0 = time.monotonic()
    sink = RecordingSink(data_delay=0.01).start()
    port = free_port()
    cfg = root / "mailward.toml"
    cfg.write_text(gateway_config(root, port, sink.port))
    gw = GatewayProcess(cfg, port)
    result = LoadResult()
    try:
        gw.start()
        load = threading.Thread(target=run_load, args=(port, total, clients, result),
                                kwargs={"deadline": load_timeout}, daemon=True)
        load.start()
        # Faults strike at random points of the load's progress (not of the clock), so each
        # one lands while clients are mid-transaction and deliveries are in flight.
        faults = ["gateway"] * gateway_kills + ["destination"] * destination_kills
        rng.shuffle(faults)
        points = sorted(rng.uniform(0.05, 0.9) for _ in faults)
        for fault, point in zip(faults, points):
            while load.is_alive() and len(result.acknowledged) < point * total:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.05))
            if fault == "gateway":
                gw.kill()
                time.sleep(rng.uniform(0.0, 0.3))
                gw.start()
            else:
                sink.kill()
                time.sleep(rng.uniform(0.2, 1.0))
                sink.start()
        load.join(load_timeout + 10)
        spool = root / "spool"
        drained = False
        deadline = time.monotonic() + drain_timeout
        while time.monotonic() < deadline:
            got = sink.snapshot()
            if all(got[m] for m in result.acknowledged) and gw.queue_length(spool) == 0:
                drained = True
                break
            time.sleep(0.5)
    finally:
        gw.stop()
        sink.close()
    got = sink.snapshot()
    acked = result.acknowledged
    lost = sorted(m for m in acked if not got[m])
    return CrashReport(
        sent=result.sent, acknowledged=len(acked), delivered=sum(1 for m in acked if got[m]), lost=len(lost),
        duplicated=sum(c - 1 for c in got.values() if c > 1),
        unacknowledged_delivered=sum(1 for m in got if m not in acked),
        gateway_kills=gw.kills, destination_kills=destination_kills, destination_connections_cut=sink.cut,
        connections=result.attempts,
        drained=drained, seconds=time.monotonic() - t0, lost_ids=lost[:20])


# --- a raw SMTP client for hostile input -------------------------------------------------

class RawClient:
    """A byte-exact SMTP client: sends what it is given (no normalising, no dot-stuffing) and
    reads complete replies, so tests can count every reply the server wrote."""

    def __init__(self, port: int, host: str = LOOPBACK, timeout: float = 10.0, source: str | None = None):
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> tuple[int, str]:
        """One complete (possibly multi-line) reply; (0, '') when the server closed."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return (0, "")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line.decode("utf-8", "replace"))
            if len(line) < 4 or line[3:4] != b"-":
                return (int(line[:3]), "\n".join(lines))

    def replies_until_close(self, timeout: float = 5.0) -> list[tuple[int, str]]:
        self.sock.settimeout(timeout)
        out = []
        while True:
            r = self.reply()
            if r[0] == 0:
                return out
            out.append(r)

    def starttls(self) -> None:
        import ssl

        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        assert not self.buf, f"server sent bytes before the handshake: {self.buf!r}"
        self.sock = ctx.wrap_socket(self.sock, server_hostname="gw.example.test")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "RawClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
