"""Delivery status notifications (RFC 3464): the bounce (and optional delay warning) message.

Owns: the bytes of a ``multipart/report; report-type=delivery-status`` message from
``MAILER-DAEMON@<hostname>`` to the original envelope sender: a human-readable part, the
machine-readable ``message/delivery-status`` part (per-message and per-recipient fields),
and the original message's headers (``text/rfc822-headers``). Also the rule that a null
sender never gets a DSN (no bounce loops).

Must not know the spool or the log: the queue manager injects what this builds.
"""
from __future__ import annotations

import email.utils
import uuid
from dataclasses import dataclass
from typing import BinaryIO, Sequence

from ..maillog.events import SmtpResponse

MAX_HEADER_BYTES = 64 * 1024   # the original's header block is quoted, never a huge body


@dataclass(frozen=True)
class FailedRecipient:
    address: str
    status: str                       # 5.1.0
    description: str                  # Unknown address error
    response: SmtpResponse | None     # the remote reply, if there was one
    remote_mta: str | None = None     # the host that answered


def wants_dsn(sender: str) -> bool:
    """A bounce goes to the envelope sender, never to the null sender (RFC 5321 6.1)."""
    return sender.strip() not in ("", "<>")


def original_headers(body: bytes | BinaryIO) -> bytes:
    """The header block of a stored message (up to the first empty line), CRLF endings."""
    out = bytearray()
    lines = body.splitlines(keepends=True) if isinstance(body, (bytes, bytearray)) else iter(
        lambda: body.readline(8192), b"")
    for line in lines:
        if line in (b"\r\n", b"\n") or len(out) > MAX_HEADER_BYTES:
            break
        out += line.rstrip(b"\r\n") + b"\r\n"
    return bytes(out)


def _diagnostic(r: FailedRecipient) -> str | None:
    if r.response is None or r.response.code == "000":
        return None
    return f"smtp; {r.response.code} {' '.join(r.response.lines)}"


def _ascii(text: str) -> str:
    # DSN fields are ASCII (RFC 3464 2.1.2 allows xtext); keep the text readable.
    return text.encode("ascii", "replace").decode("ascii").replace("\r", " ").replace("\n", " ")


def build_dsn(*, hostname: str, sender: str, mid: int, arrival: float, now: float,
              recipients: Sequence[FailedRecipient], headers: bytes, delayed: bool = False,
              retry_until: float | None = None) -> bytes:
    """The complete DSN message (CRLF line endings), ready for the spool.

    ``delayed`` builds a delay warning (Action: delayed, 4.x.x) instead of a failure."""
    if not wants_dsn(sender):
        raise ValueError("no DSN for the null sender")
    boundary = f"=_mailward_{uuid.uuid4().hex}"
    action = "delayed" if delayed else "failed"
    subject = "Delayed Mail (still being retried)" if delayed else "Undelivered Mail Returned to Sender"
    date = email.utils.formatdate(now, localtime=True)
    msgid = f"<{uuid.uuid4().hex}.{mid}@{hostname}>"
    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{sender}>",
        f"Subject: {subject}",
        f"Date: {date}",
        f"Message-ID: {msgid}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=us-ascii",
        "Content-Description: Notification",
        "",
        f"This is the mail system at host {hostname}.",
        "",
    ]
    if delayed:
        lines += ["Your message could not be delivered yet; the mail system will keep trying.",
                  f"It will give up at {email.utils.formatdate(retry_until, localtime=True)}." if retry_until else "",
                  ""]
    else:
        lines += ["I'm sorry to have to inform you that your message could not",
                  "be delivered to one or more recipients. It's attached below.", ""]
    for r in recipients:
        reply = f": {r.response.code} {' '.join(r.response.lines)}" if r.response else ""
        lines.append(_ascii(f"<{r.address}>: {r.status} - {r.description}{reply}"))
    lines += [
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "Content-Description: Delivery report",
        "",
        f"Reporting-MTA: dns; {hostname}",
        f"X-Mailward-Queue-ID: MID {mid}",
        f"Arrival-Date: {email.utils.formatdate(arrival, localtime=True)}",
    ]
    for r in recipients:
        lines += ["", f"Final-Recipient: rfc822; {_ascii(r.address)}", f"Action: {action}", f"Status: {r.status}"]
        if r.remote_mta:
            lines.append(f"Remote-MTA: dns; {_ascii(r.remote_mta)}")
        diag = _diagnostic(r)
        if diag:
            lines.append(_ascii(f"Diagnostic-Code: {diag}"))
        if delayed and retry_until:
            lines.append(f"Will-Retry-Until: {email.utils.formatdate(retry_until, localtime=True)}")
    lines += [
        "",
        f"--{boundary}",
        "Content-Type: text/rfc822-headers",
        "Content-Description: Undelivered Message Headers",
        "",
    ]
    text = "\r\n".join(lines).encode("ascii", "replace") + b"\r\n"
    return text + headers + f"\r\n--{boundary}--\r\n".encode()
