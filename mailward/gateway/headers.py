"""What the gateway reads and writes in message headers while the body streams past.

Owns: the `Received:` header the gateway prepends (in Postfix's shape, with the
authenticated user noted the way Postfix's `smtpd_sasl_authenticated_header` does), and a
bounded incremental scanner that picks Message-ID and Subject out of the header block for
mail_logs. It never holds more than `limit` bytes of headers and never sees the body.
"""
from __future__ import annotations

import email.utils
import time


def _clean(value: str, limit: int = 200) -> str:
    # Client-supplied text goes into a header: no CR/LF/controls (header injection), and
    # no parentheses that would end the comment it sits in.
    if value.isprintable() and "(" not in value and ")" not in value and "\\" not in value:
        return value[:limit]            # the usual case, without a loop over the characters
    out = "".join(c if c.isprintable() and c not in "()\\" else "?" for c in value)
    return out[:limit]


_date_cache: tuple[int, str] = (-1, "")


def _rfc2822_date(now: float) -> str:
    """``email.utils.formatdate(now, localtime=True)``, made once per second (it costs about
    as much as the rest of the header)."""
    global _date_cache
    sec = int(now)
    if _date_cache[0] != sec:
        _date_cache = (sec, email.utils.formatdate(sec, localtime=True))
    return _date_cache[1]


def received_header(*, helo: str, rdns: str | None, ip: str, hostname: str, mid: int,
                    esmtp: bool, tls: tuple[str, str] | None, auth_user: str | None,
                    rcpt: str | None, now: float | None = None) -> bytes:
    proto = "ESMTP" if esmtp else "SMTP"
    if tls:
        proto += "S"
    if auth_user:
        proto += "A"
    client = f"{_clean(rdns) if rdns else 'unknown'} [{ip}]"
    lines = [f"Received: from {_clean(helo) or 'unknown'} ({client})"]
    if tls:
        lines.append(f"\t(using {_clean(tls[0])} with cipher {_clean(tls[1])})")
    if auth_user:
        lines.append(f"\t(Authenticated sender: {_clean(auth_user)})")
    lines.append(f"\tby {hostname} (mailward) with {proto} id {mid}")
    date = _rfc2822_date(now if now is not None else time.time())
    if rcpt is not None:
        lines.append(f"\tfor <{_clean(rcpt, 320)}>; {date}")
    else:
        lines[-1] += ";"
        lines.append(f"\t{date}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "replace")


class HeaderScanner:
    """Feed body chunks; after the blank line (or `limit` bytes) the header block is parsed.

    Values are kept raw, folding included (CRLF + WSP), as the appliance logs them (escaped
    by the log writer).
    """

    __slots__ = ("limit", "_buf", "done", "message_id", "subject")

    def __init__(self, limit: int = 65536):
        self.limit = limit
        self._buf = bytearray()
        self.done = False
        self.message_id: str | None = None
        self.subject: str | None = None

    def feed(self, chunk: bytes) -> None:
        if self.done:
            return
        start = max(0, len(self._buf) - 3)
        self._buf += chunk
        end = self._buf.find(b"\r\n\r\n", start)
        if self._buf.startswith(b"\r\n"):
            end = -2   # no headers at all
        if end >= -2 and end != -1:
            self._parse(bytes(self._buf[: max(end + 2, 0)]))
        elif len(self._buf) >= self.limit:
            self._parse(bytes(self._buf[: self.limit]))

    def finish(self) -> None:
        if not self.done:
            self._parse(bytes(self._buf))

    def _parse(self, block: bytes) -> None:
        self.done = True
        self._buf = bytearray()
        text = block.decode("utf-8", "surrogateescape")
        name, value = None, []
        fields: list[tuple[str, str]] = []
        for line in text.split("\r\n"):
            if line[:1] in (" ", "\t") and name is not None:
                value.append(line)
                continue
            if name is not None:
                fields.append((name, "\r\n".join(value)))
            name, sep, rest = line.partition(":")
            if not sep:
                name = None
                continue
            name, value = name.strip().lower(), [rest.lstrip(" \t")]
        if name is not None:
            fields.append((name, "\r\n".join(value)))
        for key, val in fields:
            if key == "message-id" and self.message_id is None:
                self.message_id = val.strip()
            elif key == "subject" and self.subject is None:
                self.subject = val.rstrip()
