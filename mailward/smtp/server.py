"""The server side of ESMTP as a pure state machine: bytes in, events out, answers in,
bytes out (the h11 model).

Owns the sequence and syntax of an SMTP session (RFC 5321, 1870 SIZE, 2920 PIPELINING,
3207 STARTTLS, 4954 AUTH, 6152 8BITMIME, 2034 ENHANCEDSTATUSCODES, 6531 SMTPUTF8): it
answers syntax, sequence and line-length errors by itself with their enhanced codes, and
hands everything that needs a decision to the application as an event from `events.py`.
It imports no asyncio, socket or ssl (a test enforces it), reads no clock and no config
file; it does not know who the peer is, what the policy says, or where mail goes.

Driving it::

    conn = ServerConnection(ServerConfig(hostname="mx.example"))
    conn.greet("mx.example ESMTP")             # queue the 220 banner
    conn.receive_data(bytes_from_socket)       # b"" means the peer closed
    while (ev := conn.next_event()) not in (NEED_DATA, PAUSED):
        if ev.needs_answer:
            conn.respond(app_decides(ev))      # None = the core's default reply
        ...
    sock.send(conn.data_to_send())             # every reply, in order, in one write

One answer-needing event is outstanding at a time; until ``respond()`` is called
``next_event()`` returns ``PAUSED`` and input stays buffered, so replies to a pipelined
batch come out in command order. After a ``StartTls`` is accepted the core discards every
byte already received (STARTTLS injection) and everything until the driver calls
``tls_started()``, then forgets the HELO/AUTH state (RFC 3207 §4.2).
"""
from __future__ import annotations

import base64
import binascii
import secrets
from collections import deque
from dataclasses import dataclass

from . import sasl
from .address import Address, AddressError, parse_params, parse_path
from .codes import (R_AUTH_ALREADY, R_AUTH_AUTHZ, R_AUTH_B64, R_AUTH_CANCEL, R_AUTH_UNKNOWN,
                    R_BAD_CHARS, R_BARE_LF, R_BARE_LF_CMD, R_BYE, R_DATA_LINE, R_DEFAULT, R_HELP,
                    R_IN_TRANSACTION, R_NEED_HELO, R_NEED_MAIL, R_NEED_RCPT, R_NESTED_MAIL,
                    R_NOT_IMPL, R_NO_VALID_RCPT, R_OK, R_SIZE, R_SYNTAX, R_TLS_ALREADY, R_TLS_GO,
                    R_TOO_LONG, R_UTF8, R_VRFY)
from .events import (AuthCredentials, AuthStart, Closed, DataChunk, DataEnd, DataStart, Event, Helo,
                     MailFrom, RcptTo, Rset, StartTls)
from .lines import DataReader, LineReader
from .reply import Reply

__all__ = ["ServerConfig", "ServerConnection", "NEED_DATA", "PAUSED", "Reply", "Address", "ProtocolError"]


class _Sentinel:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA = _Sentinel("NEED_DATA")      # feed more bytes
PAUSED = _Sentinel("PAUSED")            # an event awaits respond() (or tls_started())


class ProtocolError(RuntimeError):
    """The driver misused the core (answered nothing pending, wrong answer type)."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    hostname: str
    max_message_size: int = 10 * 1024 * 1024   # RFC 1870 SIZE; the appliance's 10 MB default
    command_line_limit: int = 512               # RFC 5321 §4.5.3.1.4, CRLF included
    auth_line_limit: int = 12288                # RFC 4954 §4: AUTH lines may be longer
    text_line_limit: int = 1000                 # RFC 5321 §4.5.3.1.6, CRLF included
    bare_newline: str = "reject"                # reject | normalize (Postfix smtpd_forbid_bare_newline)
    max_errors: int = 20                        # Postfix smtpd_hard_error_limit
    max_junk_commands: int = 100                # Postfix smtpd_junk_command_limit (NOOP, RSET, VRFY, HELP)
    max_messages: int | None = None             # per connection; None = no limit
    tls_available: bool = False                 # a TLS context exists for STARTTLS
    implicit_tls: bool = False                  # the connection is TLS from the first byte
    allow_authzid: bool = False                 # PLAIN authzid != authcid (proxy auth) allowed

    def __post_init__(self) -> None:
        if self.bare_newline not in ("reject", "normalize"):
            raise ValueError("bare_newline must be 'reject' or 'normalize'")


# The extensions the core implements itself, in the order they are advertised around the
# application's keywords (SIZE, STARTTLS, AUTH ...).
CORE_FIRST = ("PIPELINING",)
CORE_LAST = ("ENHANCEDSTATUSCODES", "8BITMIME", "SMTPUTF8")
_NON_SMTP = {"GET", "POST", "HEAD", "PUT", "CONNECT", "OPTIONS", "USER"}
_MAIL_PARAMS = {"SIZE", "BODY", "SMTPUTF8", "AUTH", "RET", "ENVID"}
_RCPT_PARAMS = {"NOTIFY", "ORCPT"}

# phases
_GREETING, _COMMAND, _DATA, _AUTH, _TLS_PENDING, _CLOSED = range(6)


class ServerConnection:
    """One SMTP server session, without I/O. See the module docstring for the protocol."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._lines = LineReader()
        self._out: list[bytes] = []
        self._events: deque[Event] = deque()
        self._pending: Event | None = None
        self._phase = _GREETING
        self._eof = False
        self._data: DataReader | None = None
        self._mech: sasl.Mechanism | None = None
        self._initial: bytes | None = None
        self.tls = config.implicit_tls
        self.helo: str | None = None
        self.esmtp = False
        self.authenticated = False
        self.errors = 0
        self.messages = 0
        self.lines = 0          # command and AUTH lines taken in (a driver's deadlines follow it)
        self.junk = 0           # NOOP, RSET, VRFY, HELP since the last accepted message
        self.close_reason: str | None = None
        self._reset_transaction()

    # --- state read by drivers and tests --------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._phase == _CLOSED

    @property
    def tls_pending(self) -> bool:
        """STARTTLS was accepted: flush the 220, do the handshake, then ``tls_started()``."""
        return self._phase == _TLS_PENDING

    @property
    def in_data(self) -> bool:
        return self._phase == _DATA

    @property
    def data_refused(self) -> bool:
        """In DATA, and the body will be refused at its end (too big, bare newline, long
        line): the rest is read and discarded, no more chunks come."""
        d = self._data
        return d is not None and (d.too_big or d.too_long or (d.bare_newline and not d.normalize))

    @property
    def in_transaction(self) -> bool:
        return self.mail_from is not None

    @property
    def buffered(self) -> int:
        """Input received but not processed yet (drivers pause reading when it grows)."""
        return self._lines.buffered

    def _reset_transaction(self) -> None:
        self.mail_from: Address | None = None
        self.rcpt_count = 0
        self.rcpt_attempts = 0
        self.smtputf8 = False

    # --- bytes in / out ---------------------------------------------------------------------

    def greet(self, text: str) -> None:
        """Queue the 220 banner and start reading commands."""
        if self._phase != _GREETING:
            raise ProtocolError("greet() twice")
        self._send(Reply(220, text))
        self._phase = _COMMAND

    def refuse(self, reply: Reply) -> None:
        """Queue a refusal (e.g. 554 at connect, 421 at shutdown) and end the session."""
        self._send(reply)
        self._close("limit" if reply.code == 421 else "refused")

    def receive_data(self, data: bytes) -> None:
        if not data:
            self._eof = True
            return
        if self._phase in (_TLS_PENDING, _CLOSED):
            return          # plaintext after an accepted STARTTLS is never a command
        self._lines.feed(data)

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def _send(self, reply: Reply) -> None:
        self._out.append(reply.to_bytes())

    def _close(self, reason: str) -> None:
        self._phase = _CLOSED
        self.close_reason = reason
        self._lines.clear()
        self._events.append(Closed(reason))

    # --- events out ------------------------------------------------------------------------

    def next_event(self):
        while True:
            if self._events:
                return self._events.popleft()
            if self._pending is not None or self._phase == _TLS_PENDING:
                return PAUSED
            if self._phase == _CLOSED or self._phase == _GREETING:
                return NEED_DATA
            if self._phase == _DATA:
                if not self._step_data():
                    break
                continue
            limit = self.config.command_line_limit
            if self._phase == _AUTH or self._lines_start_with_auth():
                limit = self.config.auth_line_limit
            line = self._lines.next_line(limit)
            if line is None:
                break
            if line is LineReader.TOO_LONG:
                self._error(R_TOO_LONG)
                continue
            self.lines += 1
            if self._phase == _AUTH:
                self._auth_line(line)
            else:
                self._command(line)
        if self._eof and self._phase != _CLOSED:
            self._abandon()
            return self._events.popleft()
        return NEED_DATA

    def _lines_start_with_auth(self) -> bool:
        return self._lines.peek(5).upper() == b"AUTH "

    def _abandon(self) -> None:
        self._data = None
        self._close("eof")

    def _emit(self, event: Event) -> None:
        if event.needs_answer:
            self._pending = event
        self._events.append(event)

    def _error(self, reply: Reply) -> None:
        """A client error answered by the core; too many of them end the session."""
        self._send(reply)
        self._count_error()

    def _count_error(self) -> bool:
        """One more client error; at ``max_errors`` the session ends with 421 (False then)."""
        self.errors += 1
        if self.errors >= self.config.max_errors:
            self._send(Reply(421, f"4.7.0 {self.config.hostname} Error: too many errors"))
            self._close("limit")
            return False
        return True

    # --- DATA ----------------------------------------------------------------------------

    def _step_data(self) -> bool:
        rest = self._lines.take_rest()
        if not rest:
            return False
        progress = self._data.feed(rest)
        if progress.chunk:
            self._events.append(DataChunk(progress.chunk))
        if progress.done:
            self._lines.put_back(progress.rest)
            reader, self._data = self._data, None
            self._phase = _COMMAND
            error = None
            if reader.too_big:
                error = R_SIZE
            elif reader.bare_newline and not reader.normalize:
                error = R_BARE_LF
            elif reader.too_long:
                error = R_DATA_LINE
            self._emit(DataEnd(error))
        return True

    # --- commands ------------------------------------------------------------------------

    def _command(self, raw: bytes) -> None:
        if b"\n" in raw or b"\r" in raw:
            self._error(R_BARE_LF_CMD)
            return
        if b"\x00" in raw:
            self._error(R_BAD_CHARS)
            return
        try:
            line = raw.decode("ascii")
        except UnicodeDecodeError:
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                self._error(R_BAD_CHARS)
                return
        verb, _, arg = line.partition(" ")
        verb = verb.upper()
        handler = _COMMANDS.get(verb)
        if handler is None:
            if verb in _NON_SMTP or verb.endswith(":"):
                # An HTTP proxy probe or header: not an SMTP client (Postfix does the same).
                self._send(Reply(421, f"4.7.0 {self.config.hostname} Error: non-SMTP command"))
                self._close("error")
                return
            self._error(R_SYNTAX)
            return
        if not line.isascii() and verb not in ("MAIL", "RCPT"):
            self._error(R_BAD_CHARS)
            return
        handler(self, arg.strip(" "))

    def _cmd_helo(self, arg: str, esmtp: bool) -> None:
        name = arg.split(" ")[0] if arg else ""
        if not name:
            self._error(Reply(501, f"5.5.4 Syntax: {'EHLO' if esmtp else 'HELO'} hostname"))
            return
        self._emit(Helo(name, esmtp))

    def _ehlo(self, arg: str) -> None:
        self._cmd_helo(arg, True)

    def _helo(self, arg: str) -> None:
        self._cmd_helo(arg, False)

    def _mail(self, arg: str) -> None:
        if self.helo is None:
            self._error(R_NEED_HELO)
            return
        if self.mail_from is not None:
            self._error(R_NESTED_MAIL)
            return
        if arg[:5].upper() != "FROM:":
            self._error(Reply(501, "5.5.4 Syntax: MAIL FROM:<address>"))
            return
        if self.config.max_messages is not None and self.messages >= self.config.max_messages:
            self._send(Reply(421, f"4.7.0 {self.config.hostname} Error: too many messages in this session"))
            self._close("limit")
            return
        rest = arg[5:]
        # SMTPUTF8 in the parameters decides whether the path may hold UTF-8 (RFC 6531 §3.4)
        wants_utf8 = any(w.upper() == "SMTPUTF8" for w in rest.split(" "))
        try:
            address, ptext = parse_path(rest, allow_null=True, utf8=wants_utf8)
            params = parse_params(ptext, utf8=wants_utf8)
        except AddressError as exc:
            self._error(R_UTF8 if exc.utf8 else Reply(501, f"5.1.7 Bad sender address syntax: {exc.reason}"))
            return
        bad = self._check_mail_params(params)
        if bad is not None:
            self._error(bad)
            return
        self._emit(MailFrom(address, params))

    def _check_mail_params(self, params: dict[str, str]) -> Reply | None:
        if params and not self.esmtp:
            return Reply(555, "5.5.4 Error: MAIL parameters need EHLO")
        for key, value in params.items():
            if key not in _MAIL_PARAMS:
                return Reply(555, f"5.5.4 Unsupported option: {key}")
        size = params.get("SIZE")
        if size is not None and (not size.isdigit() or len(size) > 20):
            return Reply(501, "5.5.4 Bad SIZE syntax")
        body = params.get("BODY")
        if body is not None and body.upper() not in ("7BIT", "8BITMIME"):
            return Reply(501, "5.5.4 Bad BODY syntax")
        if "SMTPUTF8" in params and params["SMTPUTF8"] != "":
            return Reply(501, "5.5.4 Bad SMTPUTF8 syntax")
        if "AUTH" in params and not params["AUTH"]:
            return Reply(501, "5.5.4 Bad AUTH syntax")
        return None

    def _rcpt(self, arg: str) -> None:
        if self.helo is None:
            self._error(R_NEED_HELO)
            return
        if self.mail_from is None:
            self._error(R_NEED_MAIL)
            return
        if arg[:3].upper() != "TO:":
            self._error(Reply(501, "5.5.4 Syntax: RCPT TO:<address>"))
            return
        self.rcpt_attempts += 1
        try:
            address, ptext = parse_path(arg[3:], allow_null=False, utf8=self.smtputf8, allow_postmaster=True)
            params = parse_params(ptext, utf8=self.smtputf8)
        except AddressError as exc:
            self._error(R_UTF8 if exc.utf8 else Reply(501, f"5.1.3 Bad recipient address syntax: {exc.reason}"))
            return
        for key in params:
            if key not in _RCPT_PARAMS:
                self._error(Reply(555, f"5.5.4 Unsupported option: {key}"))
                return
        self._emit(RcptTo(address, params))

    def _data_cmd(self, arg: str) -> None:
        if arg:
            self._error(Reply(501, "5.5.4 Syntax: DATA"))
            return
        if self.helo is None:
            self._error(R_NEED_HELO)
            return
        if self.mail_from is None:
            self._error(R_NEED_MAIL)
            return
        if self.rcpt_count == 0:
            self._error(R_NO_VALID_RCPT if self.rcpt_attempts else R_NEED_RCPT)
            return
        self._emit(DataStart())

    def _junk(self) -> bool:
        """Count a NOOP, RSET, VRFY or HELP. Past ``max_junk_commands`` since the last accepted
        message each one also counts as an error, as Postfix's smtpd_junk_command_limit does:
        every command moves the command deadline, so without this a client could hold a
        connection for ever with them. False: the error limit closed the session."""
        self.junk += 1
        return self.junk <= self.config.max_junk_commands or self._count_error()

    def _rset(self, arg: str) -> None:
        if arg:
            self._error(Reply(501, "5.5.4 Syntax: RSET"))
            return
        if self._junk():
            self._emit(Rset())

    def _noop(self, arg: str) -> None:
        if self._junk():
            self._send(R_OK)

    def _quit(self, arg: str) -> None:
        self._send(R_BYE)
        self._close("quit")

    def _vrfy(self, arg: str) -> None:
        if not arg:
            self._error(Reply(501, "5.5.4 Syntax: VRFY address"))
            return
        if self._junk():
            self._send(R_VRFY)

    def _help(self, arg: str) -> None:
        if self._junk():
            self._send(R_HELP)

    def _not_implemented(self, arg: str) -> None:
        self._error(R_NOT_IMPL)

    def _starttls(self, arg: str) -> None:
        if arg:
            self._error(Reply(501, "5.5.4 Syntax: STARTTLS"))
            return
        if self.tls:
            self._error(R_TLS_ALREADY)
            return
        if not self.config.tls_available:
            self._error(R_NOT_IMPL)
            return
        if self.helo is None:
            self._error(R_NEED_HELO)
            return
        if self.mail_from is not None:
            self._error(R_IN_TRANSACTION)
            return
        self._emit(StartTls())

    def _auth(self, arg: str) -> None:
        words = arg.split(" ") if arg else []
        if not words or len(words) > 2:
            self._error(Reply(501, "5.5.4 Syntax: AUTH mechanism [initial-response]"))
            return
        if self.helo is None:
            self._error(R_NEED_HELO)
            return
        if self.authenticated:
            self._error(R_AUTH_ALREADY)
            return
        if self.mail_from is not None:
            self._error(R_IN_TRANSACTION)
            return
        mech = words[0].upper()
        if mech not in sasl.MECHANISMS:
            self._error(R_AUTH_UNKNOWN)
            return
        initial = None
        if len(words) == 2:
            initial = _b64(words[1])
            if initial is None:
                self._error(R_AUTH_B64)
                return
        self._initial = initial
        self._emit(AuthStart(mech))

    def _auth_line(self, raw: bytes) -> None:
        if raw == b"*":
            self._end_auth(R_AUTH_CANCEL)
            return
        decoded = _b64(raw.decode("latin-1"))
        if decoded is None:
            self._end_auth(R_AUTH_B64)
            return
        try:
            result = self._mech.step(decoded)
        except sasl.SaslError:
            self._end_auth(Reply(501, "5.5.2 Invalid authentication response"))
            return
        self._auth_result(result)

    def _auth_result(self, result) -> None:
        if isinstance(result, sasl.Credentials):
            self._mech = None
            self._phase = _COMMAND
            if result.authzid and result.authzid != result.username and not self.config.allow_authzid:
                self._send(R_AUTH_AUTHZ)
                return
            self._emit(AuthCredentials(result))
            return
        self._phase = _AUTH
        self._send(Reply(334, base64.b64encode(result).decode("ascii")))

    def _end_auth(self, reply: Reply) -> None:
        self._mech = None
        self._phase = _COMMAND
        self._error(reply)

    # --- answers in --------------------------------------------------------------------------

    def respond(self, reply: Reply | None = None, *, keywords: list[str] | None = None,
                challenge: str | None = None) -> None:
        """Answer the pending event. ``None`` means the core's default reply."""
        event = self._pending
        if event is None:
            raise ProtocolError("respond() with no event pending")
        self._pending = None
        kind = type(event)
        if kind is Helo:
            self._answer_helo(event, reply, keywords)
        elif kind is StartTls:
            if reply is None or reply.code == 220:
                self._send(reply or R_TLS_GO)
                self._lines.clear()        # the STARTTLS-injection defence
                self._phase = _TLS_PENDING
            else:
                self._send(reply)
        elif kind is AuthStart:
            if reply is not None:
                self._initial = None
                self._send(reply)
                return
            if not challenge and event.mechanism == "CRAM-MD5":
                challenge = self._challenge()   # only CRAM-MD5 has one: no random bytes per PLAIN
            self._mech = sasl.start(event.mechanism, challenge=challenge or "")
            initial, self._initial = self._initial, None
            try:
                self._auth_result(self._mech.first(initial))
            except sasl.SaslError:
                self._end_auth(Reply(501, "5.5.2 Invalid authentication response"))
        elif kind is AuthCredentials:
            reply = reply or R_DEFAULT[AuthCredentials]
            if reply.code == 235:
                self.authenticated = True
            self._send(reply)
        elif kind is MailFrom:
            reply = reply or R_DEFAULT[MailFrom]
            if reply.is_positive:
                self._reset_transaction()
                self.mail_from = event.address
                self.smtputf8 = "SMTPUTF8" in event.params
            self._send(reply)
        elif kind is RcptTo:
            reply = reply or R_DEFAULT[RcptTo]
            if reply.is_positive:
                self.rcpt_count += 1
            self._send(reply)
        elif kind is DataStart:
            reply = reply or R_DEFAULT[DataStart]
            if reply.code == 354:
                self._phase = _DATA
                self._data = DataReader(max_size=self.config.max_message_size,
                                        line_limit=self.config.text_line_limit,
                                        normalize=self.config.bare_newline == "normalize")
            self._send(reply)
        elif kind is DataEnd:
            reply = reply or event.error or R_DEFAULT[DataEnd]
            if reply.is_positive:
                self.messages += 1
                self.junk = 0           # as Postfix: the junk count starts again after a message
            self._reset_transaction()
            self._send(reply)
        elif kind is Rset:
            self._reset_transaction()
            self._send(reply or R_OK)
        else:                                   # pragma: no cover - every answerable kind is above
            raise ProtocolError(f"cannot answer {kind.__name__}")

    def _answer_helo(self, event: Helo, reply: Reply | None, keywords: list[str] | None) -> None:
        if reply is not None and not reply.is_positive:
            self._send(reply)
            return
        # RFC 5321 §4.1.4: HELO/EHLO resets the transaction as RSET would
        self._reset_transaction()
        self.helo = event.name
        self.esmtp = event.esmtp
        if reply is not None:
            self._send(reply)
        elif not event.esmtp:
            self._send(Reply(250, self.config.hostname))
        else:
            self._send(Reply(250, "\n".join([self.config.hostname, *self.ehlo_lines(keywords or [])])))

    def ehlo_lines(self, keywords: list[str]) -> list[str]:
        app = [k for k in keywords if k.split(" ")[0].upper() not in CORE_FIRST + CORE_LAST]
        if self.tls or not self.config.tls_available:
            # never advertise what this connection cannot do (no context, or TLS already on)
            app = [k for k in app if k.upper() != "STARTTLS"]
        if not any(k.split(" ")[0].upper() == "SIZE" for k in app):
            app.insert(0, f"SIZE {self.config.max_message_size}")
        return [*CORE_FIRST, *app, *CORE_LAST]

    def _challenge(self) -> str:
        # RFC 2195 wants a unique msg-id-like string; randomness keeps it unguessable.
        return f"<{secrets.randbits(63)}.{secrets.randbits(31)}@{self.config.hostname}>"

    def tls_started(self) -> None:
        """The TLS handshake after STARTTLS succeeded: back to the pre-EHLO state (RFC 3207 §4.2)."""
        if self._phase != _TLS_PENDING:
            raise ProtocolError("tls_started() without an accepted STARTTLS")
        self._lines.clear()
        self.tls = True
        self.helo = None
        self.esmtp = False
        self.authenticated = False
        self._reset_transaction()
        self._phase = _COMMAND


def _b64(text: str) -> bytes | None:
    if text == "=":
        return b""
    try:
        # What base64.b64decode(text, validate=True) does, without its two Python-level calls.
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        return None


_COMMANDS = {
    "HELO": ServerConnection._helo,
    "EHLO": ServerConnection._ehlo,
    "MAIL": ServerConnection._mail,
    "RCPT": ServerConnection._rcpt,
    "DATA": ServerConnection._data_cmd,
    "RSET": ServerConnection._rset,
    "NOOP": ServerConnection._noop,
    "QUIT": ServerConnection._quit,
    "VRFY": ServerConnection._vrfy,
    "EXPN": ServerConnection._not_implemented,
    "HELP": ServerConnection._help,
    "STARTTLS": ServerConnection._starttls,
    "AUTH": ServerConnection._auth,
}
