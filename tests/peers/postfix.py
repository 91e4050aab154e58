"""A private Postfix instance as a real SMTP next hop for end-to-end tests.

Owns: one throw-away Postfix (its own config, queue and data directories under one temp
dir, started with ``postfix -c DIR start``, listening on loopback on a private free port),
a Cyrus SASL sasldb for its users, and a small recording SMTP sink that Postfix relays
accepted mail to (``relayhost``). It reproduces the seed's destination exactly:

- ``smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination`` and
  ``mynetworks = 127.0.0.254/32``: only SMTP AUTH grants relaying, so an unauthenticated
  (or failed-AUTH) client gets Postfix's real ``554 5.7.1 <rcpt>: Relay access denied``;
- a wrong password gets Cyrus's real ``535 5.7.8 Error: authentication failed:
  authentication failure``.

Must not know anything about mailward: tests drive it with any SMTP client.

Use the ``postfix_peer`` fixture (module scoped: one instance per test module) or
``PostfixInstance`` directly. Stopping leaves no process behind: after ``postfix stop`` every
process still carrying this instance's ``MAIL_CONFIG`` is killed by pid.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import socketserver
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

LOOPBACK = "127.0.0.1"
DEFAULT_HOSTNAME = "mx.peer.test"


def free_port(host: str = LOOPBACK) -> int:
    """A port nobody listens on right now (bind port 0, read it back, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def postfix_available() -> bool:
    return all(shutil.which(tool) for tool in ("postfix", "postconf", "saslpasswd2"))


# --- the recording sink Postfix relays to --------------------------------------------------

@dataclass(frozen=True)
class ReceivedMessage:
    """One message as the sink received it: envelope and raw (dot-unstuffed) content."""

    mail_from: str
    rcpts: tuple[str, ...]
    data: bytes
    helo: str


class MessageList(list):
    """A snapshot list of received messages that may also be called: ``peer.messages`` and
    ``peer.messages()`` both work (tests in the tree use either spelling)."""

    def __call__(self) -> "MessageList":
        return self


class _SinkHandler(socketserver.StreamRequestHandler):
    """A minimal SMTP server: EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT. No AUTH, no TLS."""

    timeout = 30  # a stuck peer must not keep the thread forever

    def _reply(self, text: str) -> None:
        self.wfile.write(text.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self) -> None:
        sink: SmtpSink = self.server.sink  # type: ignore[attr-defined]
        self._reply(f"220 {sink.hostname} ESMTP sink")
        helo, mail_from, rcpts = "", None, []
        while True:
            raw = self.rfile.readline(4096)
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            verb = line[:4].upper()
            arg = line[5:] if len(line) > 5 else ""
            if verb in ("EHLO", "HELO"):
                helo = arg
                if verb == "EHLO":
                    self._reply(f"250-{sink.hostname}\r\n250-8BITMIME\r\n250 SIZE 104857600")
                else:
                    self._reply(f"250 {sink.hostname}")
            elif verb == "MAIL":
                mail_from, rcpts = _angle(arg), []
                self._reply("250 2.1.0 Ok")
            elif verb == "RCPT":
                rcpts.append(_angle(arg))
                self._reply("250 2.1.5 Ok")
            elif verb == "DATA":
                if mail_from is None or not rcpts:
                    self._reply("503 5.5.1 Error: need MAIL and RCPT")
                    continue
                self._reply("354 End data with <CR><LF>.<CR><LF>")
                data = self._read_data()
                if data is None:
                    return
                queue_id = sink.record(ReceivedMessage(mail_from, tuple(rcpts), data, helo))
                self._reply(f"250 2.0.0 Ok: queued as {queue_id}")
                mail_from, rcpts = None, []
            elif verb == "RSET":
                mail_from, rcpts = None, []
                self._reply("250 2.0.0 Ok")
            elif verb == "NOOP":
                self._reply("250 2.0.0 Ok")
            elif verb == "QUIT":
                self._reply("221 2.0.0 Bye")
                return
            else:
                self._reply("502 5.5.2 Error: command not recognized")

    def _read_data(self) -> bytes | None:
        chunks: list[bytes] = []
        while True:
            raw = self.rfile.readline(1 << 20)
            if not raw:
                return None
            if raw in (b".\r\n", b".\n"):
                return b"".join(chunks)
            chunks.append(raw[1:] if raw.startswith(b".") else raw)


def _angle(arg: str) -> str:
    """The address inside FROM:<...> / TO:<...>, parameters dropped."""
    m = re.search(r"<([^>]*)>", arg)
    return m.group(1) if m else arg.split(":", 1)[-1].strip().split(" ")[0]


class _ThreadingServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class SmtpSink:
    """Records every message relayed to it; ``wait_for_messages`` polls with a deadline."""

    def __init__(self, host: str = LOOPBACK, hostname: str = "sink.peer.test"):
        self.hostname = hostname
        self._lock = threading.Condition()
        self._messages: list[ReceivedMessage] = []
        self._server = _ThreadingServer((host, 0), _SinkHandler)
        self._server.sink = self  # type: ignore[attr-defined]
        self.host, self.port = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, name="smtp-sink",
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> "SmtpSink":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def record(self, message: ReceivedMessage) -> str:
        with self._lock:
            self._messages.append(message)
            self._lock.notify_all()
            return f"SINK{len(self._messages)}"

    @property
    def messages(self) -> MessageList:
        with self._lock:
            return MessageList(self._messages)

    def wait_for_messages(self, count: int, timeout: float = 15.0) -> list[ReceivedMessage]:
        """Block until at least ``count`` messages arrived; raise AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"sink got {len(self._messages)} message(s), wanted {count} within {timeout}s")
                self._lock.wait(left)
            return list(self._messages)


# --- the Postfix instance --------------------------------------------------------------------

_MASTER_CF = """\
# Private test instance: no chroot, only the services a relay needs.
{listen} inet  n       -       n       -       -       smtpd
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_tls_auth_only=no
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def wait_for_banner(host: str, port: int, *, timeout: float, proc: subprocess.Popen | None = None,
                    what: str = "server") -> None:
    """Until ``host:port`` answers with a 220 banner; RuntimeError on timeout or if ``proc`` died."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=1.0) as s:
                s.settimeout(5.0)
                if s.recv(512).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return
        except OSError:
            pass
        if time.monotonic() >= deadline:
            raise RuntimeError(f"{what} did not answer on {host}:{port} within {timeout}s")
        time.sleep(0.05)



class PostfixInstance:
    """One private Postfix on ``host:port`` relaying authenticated mail to a recording sink.

    ``mechanisms`` is Cyrus's ``mech_list`` (the AUTH mechanisms Postfix offers).
    ``extra_main_cf`` adds or overrides main.cf parameters.
    ``tls_cert`` = (certificate, key) PEM files: offer STARTTLS with them (and run tlsmgr).
    """

    def __init__(self, root: Path | None = None, *, hostname: str = DEFAULT_HOSTNAME,
                 mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN"),
                 extra_main_cf: dict[str, str] | None = None,
                 tls_cert: tuple[Path, Path] | None = None):
        if root is None:
            # Not pytest's tmp_path: Postfix's unprivileged daemons must traverse the path
            # (pytest's base dir is 0700) and Unix socket paths must stay short.
            root = Path(tempfile.mkdtemp(prefix="mwpf-"))
            self._owns_root = True
        else:
            root.mkdir(parents=True, exist_ok=True)
            self._owns_root = False
        os.chmod(root, 0o755)
        self.root = root
        self.hostname = hostname
        self.host = LOOPBACK
        self.port = 0
        self.mechanisms = mechanisms
        self.config_dir = root / "etc"
        self.queue_dir = root / "spool"
        self.data_dir = root / "data"
        self.sasl_dir = self.config_dir / "sasl"
        self.sasldb = self.sasl_dir / "sasldb2"
        self.log_path = root / "maillog"
        self.sink = SmtpSink(hostname="sink.peer.test")
        self._extra = dict(extra_main_cf or {})
        self.tls_cert = tls_cert
        self._started = False

    # -- lifecycle --

    def start(self) -> "PostfixInstance":
        self.sink.start()
        self.port = free_port(self.host)
        self._write_config()
        self._postfix("start")
        self._started = True
        self._wait_listening(timeout=15.0)
        return self

    def stop(self) -> None:
        try:
            if self._started:
                self._postfix("stop", check=False)
                self._reap(timeout=10.0)
        finally:
            self._started = False
            self.sink.stop()
            if self._owns_root:
                shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "PostfixInstance":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- users and logs --

    def add_user(self, user: str, password: str) -> None:
        """Create (or replace) a sasldb user in this instance's realm (its hostname)."""
        subprocess.run(["saslpasswd2", "-p", "-c", "-f", str(self.sasldb), "-u", self.hostname, user],
                       input=password.encode(), check=True, capture_output=True, timeout=10)
        # smtpd (user postfix) opens the db on every AUTH, so a later user works at once.
        shutil.chown(self.sasldb, user="root", group="postfix")
        os.chmod(self.sasldb, 0o640)

    def log_text(self) -> str:
        """Postfix's own log (postlogd's maillog_file) as written so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, pattern: str, timeout: float = 15.0) -> re.Match:
        """Poll the log until the regex ``pattern`` matches; AssertionError on timeout."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log_text())
            if m:
                return m
            if time.monotonic() >= deadline:
                raise AssertionError(f"no {pattern!r} in Postfix log within {timeout}s:\n{self.log_text()}")
            time.sleep(0.05)

    @property
    def messages(self) -> MessageList:
        return self.sink.messages

    def wait_for_messages(self, count: int, timeout: float = 15.0) -> list[ReceivedMessage]:
        return self.sink.wait_for_messages(count, timeout)

    # -- internals --

    def _write_config(self) -> None:
        for d in (self.config_dir, self.sasl_dir, self.queue_dir, self.data_dir):
            d.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.data_dir, user="postfix", group="postfix")
        (self.sasl_dir / "smtpd.conf").write_text(
            "pwcheck_method: auxprop\n"
            "auxprop_plugin: sasldb\n"
            f"mech_list: {' '.join(self.mechanisms)}\n"
            f"sasldb_path: {self.sasldb}\n")
        params = {
            "compatibility_level": "3.6",
            "myhostname": self.hostname,
            "mydomain": "peer.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "relay_domains": "",
            "mynetworks": "127.0.0.254/32",
            "inet_interfaces": self.host,
            "inet_protocols": "ipv4",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "maillog_file": str(self.log_path),
            "maillog_file_prefixes": f"/var, /dev/stdout, {self.root}",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "local_transport": "error:local delivery disabled",
            "relayhost": f"[{self.sink.host}]:{self.sink.port}",
            "smtpd_banner": "$myhostname ESMTP",
            "smtpd_relay_restrictions": "permit_sasl_authenticated, reject_unauth_destination",
            "smtpd_sasl_type": "cyrus",
            "smtpd_sasl_path": "smtpd",
            "cyrus_sasl_config_path": str(self.sasl_dir),
            "smtpd_sasl_local_domain": "$myhostname",
            "smtpd_sasl_security_options": "noanonymous",
            "smtpd_tls_security_level": "none",
            "smtp_tls_security_level": "none",
            # No DNS at all: the peer name of a loopback client and the relayhost IP literal.
            "smtpd_peername_lookup": "no",
            "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            # A sink that was briefly down must not stall a test for minutes.
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "biff": "no",
            "append_dot_mydomain": "no",
        }
        master = _MASTER_CF.format(listen=f"{self.host}:{self.port}")
        if self.tls_cert is not None:
            cert, key = self.tls_cert
            params.update({"smtpd_tls_security_level": "may", "smtpd_tls_cert_file": str(cert),
                           "smtpd_tls_key_file": str(key), "smtpd_tls_loglevel": "1"})
            # Without tlsmgr Postfix answers STARTTLS with "454 4.7.0 TLS not available".
            master += "tlsmgr    unix  -       -       n       1000?   1       tlsmgr\n"
        params.update(self._extra)
        (self.config_dir / "main.cf").write_text(
            "".join(f"{k} = {v}\n" for k, v in params.items()))
        (self.config_dir / "master.cf").write_text(master)
        # The sasldb exists from the start so smtpd's auxprop lookups fail as "no such user",
        # which Postfix reports with the same 535 text as a wrong password.
        if not self.sasldb.exists():
            self.add_user("nobody-placeholder", os.urandom(8).hex())

    def _postfix(self, command: str, check: bool = True) -> None:
        proc = subprocess.run(["postfix", "-c", str(self.config_dir), command],
                              capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise RuntimeError(f"postfix {command} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")

    def _wait_listening(self, timeout: float) -> None:
        try:
            wait_for_banner(self.host, self.port, timeout=timeout, what="Postfix")
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}:\n{self.log_text()}") from None

    def _own_pids(self) -> list[int]:
        """Pids of processes belonging to this instance: they carry our MAIL_CONFIG."""
        marker = f"MAIL_CONFIG={self.config_dir}".encode()
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                env = Path(f"/proc/{entry}/environ").read_bytes()
            except OSError:
                continue
            if marker in env.split(b"\0"):
                pids.append(int(entry))
        return pids

    def _reap(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._own_pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in self._own_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def postfix_peer():
    """A started private Postfix (see ``PostfixInstance``); stopped and removed after the module."""
    if not postfix_available():
        pytest.skip("postfix / saslpasswd2 not installed (run `make system-deps`)")
    if os.geteuid() != 0:
        pytest.skip("a private Postfix instance needs root")
    instance = PostfixInstance()
    try:
        instance.start()
    except BaseException:
        instance.stop()
        raise
    yield instance
    instance.stop()
