"""The outbound SMTP client: one connection to one next hop, over asyncio streams.

Owns: connecting (optionally from a source address), the greeting, EHLO (HELO fallback),
STARTTLS, one AUTH attempt with one mechanism (PLAIN, LOGIN or CRAM-MD5, encoded by
aiosmtplib's helpers), mail transactions with PIPELINING when offered (MAIL and all RCPTs in
one write), streaming the body with CRLF normalisation and dot-stuffing, RSET between
messages so one connection carries many (pipelined with the next envelope when offered: the
RSET reply still proves the kept connection alive before anything of the message counts), and
QUIT. Every failure becomes a
``DeliveryFailure(stage, kind, reply, detail)``, the vocabulary of ``trouble.py``.

Must not know the spool, routes, retry policy or the log: the queue manager decides what a
failure means and what to write.

Why not aiosmtplib's SMTP class: its protocol reads exactly one reply per command and drops
data that arrives while no command is pending, so PIPELINING is impossible; and after a
wrong password its ``login()`` tries the next mechanism, turning one bad password into two
or three failures at the server. The reply reader here is a plain line reader, which
pipelines naturally.
"""
from __future__ import annotations

import asyncio
import re
import socket
import ssl
from dataclasses import dataclass, field
from typing import BinaryIO, Callable

from aiosmtplib.auth import auth_crammd5_verify, auth_login_encode, auth_plain_encode

from ..maillog.events import SmtpResponse
from .trouble import Kind, Stage, kind_of_code

MAX_REPLY_LINE = 4096      # RFC 5321 says 512; be lenient, but bounded
MAX_REPLY_LINES = 200
CHUNK = 64 * 1024
# Send-buffer bytes above which a writer waits for the socket (the stream's default high-water
# mark is 64 KiB; below this a drain returns at once, so it is not even awaited).
DRAIN_ABOVE = 64 * 1024

# Mechanisms in order of preference. CRAM-MD5 never shows the password to the wire, so it
# is preferred when there is no TLS; under TLS PLAIN is as safe and needs one round trip.
PREFERENCE_CLEAR = ("CRAM-MD5", "PLAIN", "LOGIN")
PREFERENCE_TLS = ("PLAIN", "LOGIN", "CRAM-MD5")
REVEALING = {"PLAIN", "LOGIN"}


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]

    @property
    def response(self) -> SmtpResponse:
        return SmtpResponse(str(self.code), self.lines)

    @property
    def text(self) -> str:
        return " ".join(self.lines)

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 400

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


class ConnectionStale(Exception):
    """A kept connection failed the RSET that starts its next transaction: the peer went away
    (or refused) before any command of the message was answered, and the connection is closed.
    Nothing of the message happened: deliver it over a new connection, count no failure."""


class DeliveryFailure(Exception):
    """A failure at ``stage``: a reply (``reply`` set) or a network/TLS problem."""

    def __init__(self, stage: Stage, kind: Kind, detail: str, reply: Reply | None = None):
        super().__init__(f"{stage.value}: {detail}")
        self.stage = stage
        self.kind = kind
        self.detail = detail
        self.reply = reply

    @classmethod
    def from_reply(cls, stage: Stage, reply: Reply) -> "DeliveryFailure":
        return cls(stage, kind_of_code(reply.code), str(reply), reply)

    @property
    def response(self) -> SmtpResponse:
        """As logged: the server's reply, or ``('000', [detail])`` when there was none."""
        if self.reply is not None:
            return self.reply.response
        return SmtpResponse("000", (self.detail,))


@dataclass(frozen=True)
class TlsInfo:
    protocol: str | None
    cipher: str | None


@dataclass(frozen=True)
class TransactionResult:
    """Replies of one mail transaction. ``rcpts[i]`` answers recipient i; ``data`` is the
    reply after the final dot (None when no recipient was accepted: RSET was sent)."""

    mail: Reply
    rcpts: tuple[Reply, ...]
    data: Reply | None


def tls_context(policy: str, cafile: str | None = None) -> ssl.SSLContext:
    """``required-verify`` checks the certificate chain and name; ``preferred`` and
    ``required`` encrypt without verification (opportunistic TLS, as MTAs do by default)."""
    if policy == "required-verify":
        return ssl.create_default_context(cafile=cafile)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def choose_mechanism(offered: set[str], *, tls: bool, allowed: tuple[str, ...] | None = None) -> str | None:
    order = PREFERENCE_TLS if tls else PREFERENCE_CLEAR
    for mech in order:
        if mech in offered and (allowed is None or mech in allowed):
            return mech
    return None


def _net_detail(exc: BaseException) -> str:
    if isinstance(exc, asyncio.IncompleteReadError) or isinstance(exc, EOFError):
        return "EOF"
    text = str(exc)
    return text or type(exc).__name__


@dataclass
class SmtpConnection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    command_timeout: float
    local_address: str = ""
    peer_address: str = ""
    port: int = 0
    greeting: Reply | None = None
    extensions: dict[str, str] = field(default_factory=dict)
    tls: TlsInfo | None = None
    alive: bool = True
    _helo: str = ""
    _loop: asyncio.AbstractEventLoop | None = None   # set by open(); kept: get_running_loop() is a getpid() on 3.11

    # -- opening --

    @classmethod
    async def open(cls, address: str, port: int, *, helo: str, connect_timeout: float,
                   command_timeout: float, source_address: str | None = None) -> "SmtpConnection":
        """Connect, read the greeting and say EHLO. Raises DeliveryFailure."""
        try:
            async with asyncio.timeout(connect_timeout):
                reader, writer = await asyncio.open_connection(
                    address, port, local_addr=(source_address, 0) if source_address else None,
                    limit=MAX_REPLY_LINE * 4)
        except TimeoutError:
            raise DeliveryFailure(Stage.CONNECT, Kind.TIMEOUT, "timeout") from None
        except OSError as exc:
            raise DeliveryFailure(Stage.CONNECT, Kind.NETWORK, _net_detail(exc)) from None
        sock = writer.get_extra_info("sockname") or ("", 0)
        conn = cls(reader, writer, command_timeout, local_address=sock[0], peer_address=address, port=port)
        conn._helo = helo
        conn._loop = asyncio.get_running_loop()
        try:
            conn.greeting = await conn._read_reply(Stage.GREETING)
            if conn.greeting.code != 220:
                raise DeliveryFailure.from_reply(Stage.GREETING, conn.greeting)
            await conn._hello(helo)
        except BaseException:
            conn.abort()
            raise
        return conn

    async def _hello(self, helo: str) -> None:
        reply = await self.command(f"EHLO {helo}", Stage.EHLO)
        if reply.code == 250:
            self.extensions = _parse_ehlo(reply)
            return
        if 500 <= reply.code < 600 and reply.code != 554:
            # An old server without ESMTP: plain HELO, no extensions.
            reply = await self.command(f"HELO {helo}", Stage.EHLO)
            if reply.code == 250:
                self.extensions = {}
                return
        raise DeliveryFailure.from_reply(Stage.EHLO, reply)

    def offers(self, extension: str) -> bool:
        return extension.upper() in self.extensions

    @property
    def auth_mechanisms(self) -> set[str]:
        return set(self.extensions.get("AUTH", "").upper().split())

    async def starttls(self, context: ssl.SSLContext, server_hostname: str | None) -> TlsInfo:
        reply = await self.command("STARTTLS", Stage.STARTTLS)
        if reply.code != 220:
            raise DeliveryFailure.from_reply(Stage.STARTTLS, reply)
        if self.reader._buffer:     # noqa: SLF001 - asyncio keeps no public way to ask
            # Bytes that arrived in clear after the 220 would be read as if they came over
            # TLS (the STARTTLS response-injection attack, CVE-2011-0411 and kin): refuse.
            self.abort()
            raise DeliveryFailure(Stage.STARTTLS, Kind.TLS, "plaintext data after the STARTTLS reply")
        try:
            async with asyncio.timeout(self.command_timeout):
                await self.writer.start_tls(context, server_hostname=server_hostname)
        except TimeoutError:
            self.abort()
            raise DeliveryFailure(Stage.STARTTLS, Kind.TIMEOUT, "TLS handshake timeout") from None
        except (ssl.SSLError, OSError) as exc:
            self.abort()
            raise DeliveryFailure(Stage.STARTTLS, Kind.TLS, _net_detail(exc)) from None
        obj = self.writer.get_extra_info("ssl_object")
        self.tls = TlsInfo(obj.version() if obj else None, obj.cipher()[0] if obj and obj.cipher() else None)
        # RFC 3207: forget everything learned before TLS and ask again.
        await self._hello(self._helo)
        return self.tls

    # -- AUTH --

    async def authenticate(self, mechanism: str, username: str, password: str) -> Reply:
        """One AUTH exchange with one mechanism. Returns the final reply (235 or a failure
        reply); raises DeliveryFailure only for network trouble."""
        mech = mechanism.upper()
        if mech == "PLAIN":
            return await self.command(f"AUTH PLAIN {auth_plain_encode(username, password).decode()}",
                                      Stage.AUTH, secret=True)
        if mech == "LOGIN":
            user64, pass64 = auth_login_encode(username, password)
            reply = await self.command("AUTH LOGIN", Stage.AUTH)
            if reply.code != 334:
                return reply
            reply = await self.command(user64.decode(), Stage.AUTH, secret=True)
            if reply.code != 334:
                return reply
            return await self.command(pass64.decode(), Stage.AUTH, secret=True)
        if mech == "CRAM-MD5":
            reply = await self.command("AUTH CRAM-MD5", Stage.AUTH)
            if reply.code != 334:
                return reply
            try:
                answer = auth_crammd5_verify(username, password, reply.text.strip())
            except Exception:
                await self.command("*", Stage.AUTH)     # cancel the exchange (RFC 4954)
                raise DeliveryFailure(Stage.AUTH, Kind.NETWORK, "bad CRAM-MD5 challenge") from None
            return await self.command(answer.decode(), Stage.AUTH, secret=True)
        raise ValueError(f"unsupported AUTH mechanism {mechanism}")

    # -- transactions --

    async def transaction(self, sender: str, recipients: list[str], body: bytes | BinaryIO, *,
                          size: int | None = None, params: tuple[tuple[str, str], ...] = (),
                          reset_first: bool = False,
                          started: Callable[[], None] | None = None) -> TransactionResult:
        """[RSET,] MAIL, RCPT…, DATA. A 4xx/5xx to MAIL raises DeliveryFailure(MAIL); RCPT
        replies are returned one per recipient; DATA's 354 and final reply: a failure raises
        DeliveryFailure(DATA) naming the reply. With no accepted recipient, RSET is sent.

        ``reset_first`` (a kept connection's next message): RSET opens the transaction, in the
        same write as the envelope when PIPELINING is offered, which saves the round trip a
        separate RSET costs per message. Its failure raises ``ConnectionStale``. ``started``
        is called once the transaction really begins (after that RSET's 250)."""
        mail_cmd = f"MAIL FROM:<{sender}>"
        if size is not None and self.offers("SIZE"):
            mail_cmd += f" SIZE={size}"
        for key, value in params:
            if key.upper() == "BODY" and self.offers("8BITMIME"):
                mail_cmd += f" BODY={value}"
            elif key.upper() == "SMTPUTF8" and self.offers("SMTPUTF8"):
                mail_cmd += " SMTPUTF8"
        rcpt_cmds = [f"RCPT TO:<{r}>" for r in recipients]
        pipelining = self.offers("PIPELINING")
        # RFC 2920: [RSET,] MAIL, the RCPTs and DATA (last in the group) in one write; the
        # replies come back in order. One round trip for the whole envelope.
        group = [mail_cmd, *rcpt_cmds, "DATA"] if pipelining else []
        if reset_first:
            await self._reset_before(group)
        elif group:
            self._write_lines(group)
        if started is not None:
            started()
        if pipelining:
            mail = await self._read_reply(Stage.MAIL)
            rcpts = tuple([await self._read_reply(Stage.RCPT) for _ in rcpt_cmds])
            reply = await self._read_reply(Stage.DATA)
            if reply.code == 354 and not (mail.ok and any(r.ok for r in rcpts)):
                # A server that opened DATA with nobody to deliver to: end it empty, unused.
                await self._send_body(b"")
                await self._read_reply(Stage.DATA)
                reply = Reply(554, ("no valid recipients",))
            if not mail.ok:
                raise DeliveryFailure.from_reply(Stage.MAIL, mail)
            if not any(r.ok for r in rcpts):
                await self.reset()
                return TransactionResult(mail, rcpts, None)
        else:
            mail = await self.command(mail_cmd, Stage.MAIL)
            if not mail.ok:
                raise DeliveryFailure.from_reply(Stage.MAIL, mail)
            rcpts = tuple([await self.command(c, Stage.RCPT) for c in rcpt_cmds])
            if not any(r.ok for r in rcpts):
                await self.reset()
                return TransactionResult(mail, rcpts, None)
            reply = await self.command("DATA", Stage.DATA)
        if reply.code != 354:
            raise DeliveryFailure.from_reply(Stage.DATA, reply)
        await self._send_body(body)
        final = await self._read_reply(Stage.DATA)
        if not final.ok:
            raise DeliveryFailure.from_reply(Stage.DATA, final)
        return TransactionResult(mail, rcpts, final)

    async def _reset_before(self, pipelined: list[str]) -> None:
        """RSET on a kept connection, in one write with the commands ``pipelined`` behind it,
        and its reply: anything but 250 closes the connection (those commands are never
        answered on it) and raises ConnectionStale."""
        try:
            self._write_lines(["RSET", *pipelined])
            reply = await self._read_reply(Stage.MAIL)
        except DeliveryFailure as f:
            self.abort()
            raise ConnectionStale(f"RSET: {f.detail}") from None
        if reply.code != 250:
            self.abort()
            raise ConnectionStale(f"RSET: {reply}")

    async def reset(self) -> Reply:
        reply = await self.command("RSET", Stage.MAIL)
        if reply.code != 250:
            raise DeliveryFailure.from_reply(Stage.MAIL, reply)
        return reply

    async def quit(self) -> None:
        if self.alive:
            try:
                async with asyncio.timeout(min(self.command_timeout, 5.0)):
                    self._write_lines(["QUIT"])
                    await self.writer.drain()
                    await self.reader.readline()
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ssl.SSLError):
                pass
        self.abort()

    def abort(self) -> None:
        self.alive = False
        try:
            self.writer.close()
        except Exception:   # closing a broken transport must not mask the real error
            pass

    # -- low level --

    def _write_lines(self, lines: list[str]) -> None:
        if any("\r" in line or "\n" in line for line in lines):
            raise ValueError("SMTP command contains CR or LF")
        if not self.alive or self.writer.is_closing():
            raise DeliveryFailure(Stage.MAIL, Kind.NETWORK, "connection closed")
        self.writer.write("".join(f"{line}\r\n" for line in lines).encode("utf-8"))

    async def command(self, line: str, stage: Stage, *, secret: bool = False) -> Reply:
        # ``secret`` marks lines carrying credentials: they are never echoed into errors.
        if "\r" in line or "\n" in line:
            raise ValueError("SMTP command contains CR or LF")
        try:
            self._write_lines([line])
            await self._drain()
        except TimeoutError:
            self.abort()
            raise DeliveryFailure(stage, Kind.TIMEOUT, "timeout") from None
        except (OSError, ssl.SSLError) as exc:
            self.abort()
            raise DeliveryFailure(stage, Kind.NETWORK, _net_detail(exc)) from None
        return await self._read_reply(stage)

    async def _drain(self) -> None:
        """Wait (bounded) while the socket's send buffer is over its high-water mark; below it
        there is nothing to wait for, and no timer is set up."""
        if self.writer.transport.get_write_buffer_size() > DRAIN_ABOVE:
            async with asyncio.timeout(self.command_timeout):
                await self.writer.drain()

    async def _read_reply(self, stage: Stage) -> Reply:
        code, lines = None, []
        expired = False

        def expire() -> None:
            # Tearing the connection down ends the read; a timed-out connection is dropped
            # anyway. One timer handle per reply costs far less than asyncio.timeout()'s
            # cancellation machinery, and this runs for every reply of every message.
            nonlocal expired
            expired = True
            self.alive = False
            self.writer.transport.abort()

        timer = self._loop.call_later(self.command_timeout, expire)
        try:
            while True:
                raw = await self.reader.readline()
                if not raw:
                    raise EOFError()
                if len(lines) >= MAX_REPLY_LINES:
                    raise DeliveryFailure(stage, Kind.NETWORK, "reply too long")
                # An over-long line is cut, not refused: after DATA the next hop may already
                # have taken the message, and refusing its 250 would deliver it again.
                text = raw[:MAX_REPLY_LINE].decode("utf-8", "replace").rstrip("\r\n")
                if len(text) < 3 or not text[:3].isdigit() or text[3:4] not in ("", " ", "-"):
                    raise DeliveryFailure(stage, Kind.NETWORK, f"malformed reply {text[:80]!r}")
                if code is not None and int(text[:3]) != code:
                    raise DeliveryFailure(stage, Kind.NETWORK, "inconsistent multi-line reply")
                code = int(text[:3])
                lines.append(text[4:])
                if text[3:4] != "-":
                    return Reply(code, tuple(lines))
        except DeliveryFailure:
            self.abort()
            if expired:         # a line cut short by the teardown
                raise DeliveryFailure(stage, Kind.TIMEOUT, "timeout") from None
            raise
        except (OSError, EOFError, ValueError, ssl.SSLError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError) as exc:
            self.abort()
            if expired:
                raise DeliveryFailure(stage, Kind.TIMEOUT, "timeout") from None
            raise DeliveryFailure(stage, Kind.NETWORK, _net_detail(exc)) from None
        finally:
            timer.cancel()

    async def _send_body(self, body: bytes | BinaryIO) -> None:
        """Stream the message through ``DotStuffer`` in bounded chunks, then the final dot
        (with the last chunk: a small message is one write)."""
        stuffer = DotStuffer()
        try:
            pending = b""
            for chunk in _chunks_of(body):
                if pending:
                    self.writer.write(pending)
                    await self._drain()
                pending = stuffer.feed(chunk)
            self.writer.write(pending + stuffer.finish())
            await self._drain()
        except TimeoutError:
            self.abort()
            raise DeliveryFailure(Stage.DATA, Kind.TIMEOUT, "timeout") from None
        except (OSError, ssl.SSLError) as exc:
            self.abort()
            raise DeliveryFailure(Stage.DATA, Kind.NETWORK, _net_detail(exc)) from None


_BREAK = re.compile(rb"\r\n|\r|\n")


class DotStuffer:
    """Message bytes -> DATA wire bytes, incrementally, for any chunking of the input.

    Every line break (CRLF, and also a bare CR or bare LF, which RFC 5321 2.3.8 forbids on
    the wire and which SMTP smuggling abuses) goes out as CRLF; a line starting with a dot
    gets a second dot; ``finish()`` ends an unterminated last line and adds ``.`` CRLF.
    Nothing else is changed, and a very long line is passed through in pieces unbroken."""

    def __init__(self) -> None:
        self.at_line_start = True
        self.skip_lf = False        # the previous chunk ended in CR: a leading LF completes it

    def feed(self, data: bytes) -> bytes:
        if data and not self.skip_lf:
            # The common chunk: every break already CRLF, no line starting with a dot. It goes
            # out as it is (counting bytes in C instead of walking its lines in Python).
            crlf = data.count(b"\r\n")
            if data.count(b"\r") == crlf and data.count(b"\n") == crlf and b"\r\n." not in data \
                    and not (self.at_line_start and data[:1] == b"."):
                self.at_line_start = data.endswith(b"\r\n")
                return data
        out = bytearray()
        i = 0
        if self.skip_lf and data[:1] == b"\n":
            i = 1
        if data:
            self.skip_lf = False
        for m in _BREAK.finditer(data, i):
            self._text(out, data[i:m.start()])
            out += b"\r\n"
            self.at_line_start = True
            i = m.end()
        self._text(out, data[i:])
        if data.endswith(b"\r"):
            self.skip_lf = True
        return bytes(out)

    def _text(self, out: bytearray, segment: bytes) -> None:
        if not segment:
            return
        if self.at_line_start and segment[:1] == b".":
            out += b"."
        out += segment
        self.at_line_start = False

    def finish(self) -> bytes:
        return (b"" if self.at_line_start else b"\r\n") + b".\r\n"


def _chunks_of(body: bytes | BinaryIO):
    if isinstance(body, (bytes, bytearray, memoryview)):
        data = bytes(body)
        for start in range(0, len(data), CHUNK):
            yield data[start:start + CHUNK]
        return
    while True:
        chunk = body.read(CHUNK)
        if not chunk:
            return
        yield chunk


def _parse_ehlo(reply: Reply) -> dict[str, str]:
    ext: dict[str, str] = {}
    for line in reply.lines[1:]:
        keyword, _, params = line.strip().partition(" ")
        if not keyword:
            continue
        if keyword.upper().startswith("AUTH="):
            # Old-style "AUTH=PLAIN LOGIN" advertisement.
            ext.setdefault("AUTH", (keyword[5:] + " " + params).strip())
            continue
        ext[keyword.upper()] = params
    return ext


def local_address_for(address: str, port: int, source_address: str | None = None) -> str:
    """The source IP the kernel would use towards ``address`` (for logging a connection that
    failed before it had a socket). A UDP connect sends nothing."""
    if source_address:
        return source_address
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((address, port or 25))
            return s.getsockname()[0]
    except OSError:
        return "0.0.0.0" if family == socket.AF_INET else "::"

