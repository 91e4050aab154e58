"""A scriptable loopback SMTP server for the delivery tests (plain asyncio, no aiosmtpd),
and a few tests of the server itself.

``ScriptedServer`` records every connection's commands and every accepted message; its
replies can be overridden per command by a ``script(verb, arg, conn) -> str | None``
callable (None = the default reply), so a test can answer 451 once and 250 afterwards,
refuse one recipient, drop the connection, and so on.
"""
from __future__ import annotations

import asyncio
import base64
import datetime
import hmac
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

DROP = "__drop__"      # a script reply that closes the connection without answering


@dataclass
class Conn:
    n: int
    commands: list[str] = field(default_factory=list)
    tls: bool = False
    user: str | None = None
    pipelined_batches: int = 0     # MAIL commands that arrived together with a RCPT
    pipelined_rsets: int = 0       # RSET commands that arrived together with the next MAIL


@dataclass(frozen=True)
class Received:
    conn: int
    mail_from: str
    rcpts: tuple[str, ...]
    data: bytes


def make_cert(directory: Path, cn: str = "localhost") -> tuple[Path, Path]:
    """A self-signed certificate for ``cn`` (also valid for 127.0.0.1), written as PEM files."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn),
                                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class ScriptedServer:
    def __init__(self, *, pipelining: bool = True, auth: tuple[str, ...] = (),
                 users: dict[str, str] | None = None, tls: ssl.SSLContext | None = None,
                 script: Callable[[str, str, Conn], str | None] | None = None,
                 banner: str = "220 test.server ESMTP"):
        self.pipelining = pipelining
        self.auth = auth
        self.users = users or {}
        self.tls = tls
        self.script = script
        self.banner = banner
        self.conns: list[Conn] = []
        self.active = 0
        self.max_active = 0          # most connections open at the same time
        self.delay = 0.0             # seconds to sleep before answering DATA's final dot
        self.messages: list[Received] = []
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._handlers: set = set()

    async def __aenter__(self) -> "ScriptedServer":
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    def all_commands(self) -> list[str]:
        return [c for conn in self.conns for c in conn.commands]

    def _ehlo_lines(self, conn: Conn) -> list[str]:
        lines = ["test.server", "8BITMIME", "SIZE 10000000"]
        if self.pipelining:
            lines.append("PIPELINING")
        if self.tls is not None and not conn.tls:
            lines.append("STARTTLS")
        if self.auth:
            lines.append("AUTH " + " ".join(self.auth))
        return lines

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._handlers.add(task)
        conn = Conn(len(self.conns))
        self.conns.append(conn)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await self._session(conn, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, asyncio.CancelledError):
            pass            # a peer that went away, or the server shutting down
        finally:
            self.active -= 1
            self._handlers.discard(task)
            writer.close()

    async def _session(self, conn: Conn, reader, writer) -> None:
        async def send(text: str) -> None:
            writer.write(text.encode() + b"\r\n")
            await writer.drain()

        if self.banner is not None:
            await send(self.banner)
        mail_from, rcpts = None, []
        while True:
            raw = await asyncio.wait_for(reader.readline(), 10)
            if not raw:
                return
            line = raw.decode().rstrip("\r\n")
            conn.commands.append(line if not line.upper().startswith("AUTH PLAIN ") else "AUTH PLAIN ***")
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            if verb == "MAIL" and b"RCPT" in bytes(reader._buffer):
                conn.pipelined_batches += 1
            if verb == "RSET" and bytes(reader._buffer).startswith(b"MAIL"):
                conn.pipelined_rsets += 1
            custom = self.script(verb, arg, conn) if self.script else None
            if custom == DROP:
                return
            if custom is not None:
                await send(custom)
                if verb == "MAIL" and custom.startswith("2"):
                    mail_from, rcpts = arg.partition(":")[2].split(" ")[0].strip("<>"), []
                elif verb == "RCPT" and custom.startswith("2"):
                    rcpts.append(arg.partition(":")[2].strip().strip("<>"))
                elif verb == "DATA" and custom.startswith("354"):
                    data = await self._read_data(reader)
                    await send("250 2.0.0 Ok: queued")
                    self.messages.append(Received(conn.n, mail_from or "", tuple(rcpts), data))
                continue
            if verb == "EHLO":
                lines = self._ehlo_lines(conn)
                await send("\r\n".join(f"250-{x}" for x in lines[:-1]) + ("\r\n" if len(lines) > 1 else "")
                           + f"250 {lines[-1]}")
            elif verb == "HELO":
                await send("250 test.server")
            elif verb == "STARTTLS" and self.tls is not None and not conn.tls:
                await send("220 2.0.0 Ready to start TLS")
                await writer.start_tls(self.tls)
                conn.tls = True
            elif verb == "AUTH":
                await self._auth(conn, arg, reader, send)
            elif verb == "MAIL":
                mail_from, rcpts = arg.partition(":")[2].split(" ")[0].strip("<>"), []
                await send("250 2.1.0 Ok")
            elif verb == "RCPT":
                rcpts.append(arg.partition(":")[2].strip().strip("<>"))
                await send("250 2.1.5 Ok")
            elif verb == "DATA" and not rcpts:
                # as Postfix: a pipelined DATA after every RCPT failed is refused
                await send("554 5.5.1 Error: no valid recipients")
            elif verb == "DATA":
                await send("354 go ahead")
                data = await self._read_data(reader)
                if self.delay:
                    await asyncio.sleep(self.delay)
                self.messages.append(Received(conn.n, mail_from or "", tuple(rcpts), data))
                await send(getattr(self, "data_reply", None) or f"250 2.0.0 Ok: queued as Q{len(self.messages)}")
                mail_from, rcpts = None, []
            elif verb == "RSET":
                mail_from, rcpts = None, []
                await send("250 2.0.0 Ok")
            elif verb == "QUIT":
                await send("221 2.0.0 Bye")
                return
            else:
                await send("502 5.5.2 Error: command not recognized")

    async def _auth(self, conn: Conn, arg: str, reader, send) -> None:
        mech, _, initial = arg.partition(" ")
        mech = mech.upper()
        user = password = None
        if mech == "PLAIN":
            _, user, password = base64.b64decode(initial).decode().split("\0")
        elif mech == "LOGIN":
            await send("334 VXNlcm5hbWU6")
            user = base64.b64decode(await reader.readline()).decode()
            await send("334 UGFzc3dvcmQ6")
            password = base64.b64decode(await reader.readline()).decode()
        elif mech == "CRAM-MD5":
            challenge = b"<1234.5678@test.server>"
            await send("334 " + base64.b64encode(challenge).decode())
            user, _, digest = base64.b64decode(await reader.readline()).decode().partition(" ")
            expected = self.users.get(user)
            ok = expected is not None and hmac.compare_digest(
                hmac.new(expected.encode(), challenge, "md5").hexdigest(), digest)
            conn.commands.append(f"(CRAM-MD5 {user} {'ok' if ok else 'bad'})")
            await send("235 2.7.0 Authentication successful" if ok else
                       "535 5.7.8 Error: authentication failed: authentication failure")
            if ok:
                conn.user = user
            return
        if user is not None and self.users.get(user) == password:
            conn.user = user
            await send("235 2.7.0 Authentication successful")
        else:
            await send("535 5.7.8 Error: authentication failed: authentication failure")

    @staticmethod
    async def _read_data(reader) -> bytes:
        out = bytearray()
        while True:
            raw = await asyncio.wait_for(reader.readline(), 10)
            if raw in (b".\r\n", b""):
                return bytes(out)
            out += raw[1:] if raw.startswith(b".") else raw


# --- the server's own tests ------------------------------------------------------------------

def test_server_records_a_message_and_answers_scripted_replies():
    asyncio.run(_server_self_test())


async def _server_self_test():
    seen = []

    def script(verb, arg, conn):
        if verb == "RCPT" and "bad@" in arg:
            seen.append(arg)
            return "550 5.1.1 no such user"
        return None

    async with ScriptedServer(script=script) as srv:
        srv.seen = seen
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        assert (await reader.readline()).startswith(b"220")
        for cmd, want in [(b"EHLO me", b"250 "), (b"MAIL FROM:<a@x>", b"250"), (b"RCPT TO:<bad@y>", b"550"),
                          (b"RCPT TO:<b@y>", b"250"), (b"DATA", b"354")]:
            writer.write(cmd + b"\r\n")
            line = await reader.readline()
            while line[3:4] == b"-":
                line = await reader.readline()
            assert line.startswith(want), (cmd, line)
        writer.write(b"..dot\r\nbody\r\n.\r\n")
        assert (await reader.readline()).startswith(b"250")
        writer.close()
    assert srv.messages == [Received(0, "a@x", ("b@y",), b".dot\r\nbody\r\n")]
    assert seen == ["TO:<bad@y>"]
