"""The typed event model of mail_logs: one frozen dataclass per line type.

This module owns the *names and fields* of every event the gateway writes and the toolkit
reads. It knows nothing of files, sockets or time zones. The text form of each event (its
template) lives beside it in `grammar.py`, so that formatting and parsing share one grammar
and a property test can prove parse(format(e)) == e for every class here.

Conventions:
- ids (icid, mid, dcid, rid) are ints; ``rids`` is a tuple of ints, rendered ``[0, 1]``.
- client-supplied text (user, helo, addresses, Message-ID, Subject, reasons) is stored
  *unescaped* here; escaping against log forgery is the formatter's job, unescaping the
  parser's.
- a remote server response is ``Response(code, lines)`` and renders as Python's repr of
  ``('535', ['5.7.8 Error: ...'])``, as the appliance does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..values import fast_init_all


@dataclass(frozen=True, slots=True)
class Event:
    """Base of all events. ``level`` is the log level word written before the colon."""

    LEVEL: ClassVar[str] = "Info"


@dataclass(frozen=True, slots=True)
class SmtpResponse:
    """A remote SMTP reply as the appliance logs it: ('554', ['5.7.1 ...'])."""

    code: str
    lines: tuple[str, ...]


# --- housekeeping ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class BeginLogfile(Event):
    pass


@dataclass(frozen=True, slots=True)
class VersionInfo(Event):
    version: str
    serial: str


@dataclass(frozen=True, slots=True)
class TimeOffset(Event):
    seconds: int


@dataclass(frozen=True, slots=True)
class EndLogfile(Event):
    """``End Logfile``: read when present; the writer does not write it on roll (no
    appliance sample shows one)."""


# --- inbound connection (ICID) ---------------------------------------------------------

@dataclass(frozen=True, slots=True)
class NewIcid(Event):
    icid: int
    interface: str          # listener name, may contain spaces
    interface_ip: str
    address: str            # peer IP
    rdns: str | None        # None -> "unknown"; absent in the pre-3.8 form (see legacy flag)
    verified: bool
    legacy: bool = False    # pre-3.8 form: "New SMTP ICID i interface NAME address IP"


@dataclass(frozen=True, slots=True)
class HatDecision(Event):
    icid: int
    policy: str             # ACCEPT RELAY REJECT TCPREFUSE CONTINUE, or "" in the pre-3.8 form
    sender_group: str       # "None" when no named group
    match: str              # the rule that matched: ALL, an IP, a CIDR, sbrs[...]
    sbrs: str               # "None", "not enabled", "rfc1918", a score
    country: str | None = None


@dataclass(frozen=True, slots=True)
class IcidTlsSuccess(Event):
    icid: int
    protocol: str | None
    cipher: str | None


@dataclass(frozen=True, slots=True)
class IcidTlsFailed(Event):
    icid: int
    reason: str | None


@dataclass(frozen=True, slots=True)
class IcidTlsRequired(Event):
    """``ICID i TLS was required but remote host did not initiate it``."""

    icid: int


@dataclass(frozen=True, slots=True)
class IcidClose(Event):
    icid: int


@dataclass(frozen=True, slots=True)
class IcidLost(Event):
    icid: int


@dataclass(frozen=True, slots=True)
class ReceivingFailed(Event):
    icid: int
    reason: str


@dataclass(frozen=True, slots=True)
class InvalidAddress(Event):
    """``ICID i [MID m ]Invalid sender|recipient address: <reason>``."""

    icid: int
    mid: int | None
    kind: str               # "sender" | "recipient"
    reason: str


@dataclass(frozen=True, slots=True)
class IcidNote(Event):
    """Any other ``ICID i <text>`` line (keeps the id typed for correlation)."""

    icid: int
    text: str
    inline: bool = False    # True: ``text`` is the whole body and the ICID sits inside it


# --- SMTP AUTH (inbound, on the ICID) ---------------------------------------------------

@dataclass(frozen=True, slots=True)
class SmtpAuthResult(Event):
    icid: int
    succeeded: bool
    user: str
    mechanism: str
    profile: str
    colon: bool = True      # AsyncOS <= 5 wrote "SMTP Auth (ICID" without the colon


@dataclass(frozen=True, slots=True)
class SmtpAuthForwardUnreachable(Event):
    icid: int
    server: str
    reason: str | None
    colon: bool = True      # the ST-era source strings read "SMTP Auth (ICID" (no colon)


@dataclass(frozen=True, slots=True)
class SmtpAuthLdapLookupFailed(Event):
    icid: int
    user: str
    colon: bool = True      # the ST-era source strings read "SMTP Auth (ICID" (no colon)


@dataclass(frozen=True, slots=True)
class SmtpAuthMisconfigured(Event):
    icid: int
    profile: str
    colon: bool = True      # the ST-era source strings read "SMTP Auth (ICID" (no colon)


@dataclass(frozen=True, slots=True)
class SmtpAuthRequiredNotInitiated(Event):
    icid: int
    colon: bool = True      # the ST-era source strings read "SMTP Auth (ICID" (no colon)


@dataclass(frozen=True, slots=True)
class SmtpAuthLockout(Event):
    """mailward's own line (no public appliance example exists): a tarpit lockout.

    ``SMTP Auth: (ICID i) lockout of <scope> <key> for <seconds> seconds after <failures> failures``
    scope is "address" (client IP) or "user".
    """

    icid: int
    scope: str
    key: str
    seconds: int
    failures: int


@dataclass(frozen=True, slots=True)
class SmtpAuthRejected(Event):
    """mailward's own line: AUTH refused before a verdict (bad encoding, cancelled, locked out).

    ``SMTP Auth: (ICID i) rejected using AUTH mechanism: M reason: <reason>``
    """

    icid: int
    mechanism: str
    reason: str


# --- message lifecycle (MID) ------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class StartMid(Event):
    mid: int
    icid: int
    note: str | None = None  # "(ISQ Notification)" style suffix


@dataclass(frozen=True, slots=True)
class MailFrom(Event):
    mid: int
    icid: int
    sender: str             # without angle brackets; "" for the null sender


@dataclass(frozen=True, slots=True)
class RcptTo(Event):
    mid: int
    icid: int
    rid: int
    rcpt: str


@dataclass(frozen=True, slots=True)
class RcptRejected(Event):
    mid: int
    icid: int
    rcpt: str
    by: str                 # RAT, Receiving Control, LDAPACCEPT, Injection Control


@dataclass(frozen=True, slots=True)
class MessageIdHeader(Event):
    mid: int
    message_id: str


@dataclass(frozen=True, slots=True)
class SubjectHeader(Event):
    mid: int
    subject: str
    quote: str = "'"        # "'" repr style ('x', or "x" when x has '), '"' always double, "" unquoted


@dataclass(frozen=True, slots=True)
class MessageReady(Event):
    mid: int
    size: int
    sender: str


@dataclass(frozen=True, slots=True)
class PolicyMatch(Event):
    mid: int
    policy: str
    direction: str          # inbound | outbound


@dataclass(frozen=True, slots=True)
class QueuedForDelivery(Event):
    mid: int


@dataclass(frozen=True, slots=True)
class MessageFinished(Event):
    mid: int
    status: str             # done | aborted


@dataclass(frozen=True, slots=True)
class MessageAborted(Event):
    mid: int
    reason: str


@dataclass(frozen=True, slots=True)
class GeneratedForBounce(Event):
    mid: int                # the new (bounce) MID
    original_mid: int


@dataclass(frozen=True, slots=True)
class GeneratedBcc(Event):
    mid: int
    original_mid: int
    filter_name: str
    legacy: bool = False        # old form ``MID b generated based on MID a ...`` (no "was")


@dataclass(frozen=True, slots=True)
class SplitMid(Event):
    mid: int
    new_mid: int
    reason: str


@dataclass(frozen=True, slots=True)
class RewrittenMid(Event):
    mid: int
    new_mid: int
    by: str
    legacy: bool = False        # old form ``MID a rewritten to b by ...`` (no "MID")


@dataclass(frozen=True, slots=True)
class MidNote(Event):
    """Any other ``MID m <text>`` line (verdicts, attachments, SPF, DKIM...)."""

    mid: int
    text: str
    inline: bool = False    # True: ``text`` is the whole body and the MID sits inside it


# --- delivery (DCID) --------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class NewDcid(Event):
    dcid: int
    interface: str          # source IP
    address: str            # destination IP
    port: int | None


@dataclass(frozen=True, slots=True)
class DcidTlsSuccess(Event):
    dcid: int
    protocol: str | None
    cipher: str | None
    domain: str | None = None


@dataclass(frozen=True, slots=True)
class DcidTlsFailed(Event):
    dcid: int
    reason: str | None


@dataclass(frozen=True, slots=True)
class DcidTlsRequired(Event):
    """``DCID d IP a TLS was required but could not be successfully negotiated``."""

    dcid: int
    address: str


@dataclass(frozen=True, slots=True)
class OutboundAuthResult(Event):
    dcid: int
    address: str
    profile: str
    succeeded: bool
    response: SmtpResponse | None = None   # present on failure


@dataclass(frozen=True, slots=True)
class DeliveryStart(Event):
    dcid: int
    mid: int
    rids: tuple[int, ...]
    note: str | None = None
    legacy: bool = False        # old form ``... to [0]`` without "RID"


@dataclass(frozen=True, slots=True)
class MessageDone(Event):
    dcid: int
    mid: int
    rids: tuple[int, ...]
    note: str | None = None     # trailing logheaders list / "(external quarantine)" kept raw


@dataclass(frozen=True, slots=True)
class DeliveryResponse(Event):
    mid: int
    rids: tuple[int, ...]
    response: str
    quote: str = "'"             # "'" (repr style), '"' (always double), "" (old unquoted form)


@dataclass(frozen=True, slots=True)
class Bounced(Event):
    dcid: int
    mid: int
    rid: int
    status: str                 # 5.1.0
    description: str            # Unknown address error
    response: SmtpResponse | None
    by_destination: bool = False  # "Bounced by destination server with response:" form
    sender: str | None = None   # 2018 form with From:/To:
    rcpt: str | None = None
    extra: str | None = None    # trailing logheaders list kept raw, e.g. "[]"


@dataclass(frozen=True, slots=True)
class Delayed(Event):
    dcid: int
    mid: int
    rid: int
    status: str
    description: str
    response: SmtpResponse | None
    sender: str | None = None
    rcpt: str | None = None
    extra: str | None = None    # trailing logheaders list kept raw, e.g. "[]"
    legacy: bool = False        # 2004 form ``Delayed: DCID: d Message m to r - ...``


@dataclass(frozen=True, slots=True)
class PendingTill(Event):
    mid: int
    rids: tuple[int, ...]
    until: str                  # ctime text, as logged
    legacy: bool = False        # old form ``MID m to RID [r] pending till ...``


@dataclass(frozen=True, slots=True)
class DeliveryConnectionError(Event):
    dcid: int
    domain: str
    address: str
    port: int
    details: str
    interface: str
    reason: str
    legacy: bool = False        # old form ``Connection Error: DCID: d IP: ...`` (no domain, no port)


@dataclass(frozen=True, slots=True)
class DnsError(Event):
    """``DNS Error|Temporary Failure <domain> MX - <text>`` / ``DNS failure for SMTP route destination <d>``."""

    kind: str                   # "Error" | "Temporary Failure" | "route"
    domain: str
    detail: str


@dataclass(frozen=True, slots=True)
class DcidClose(Event):
    dcid: int


@dataclass(frozen=True, slots=True)
class DcidNote(Event):
    """Any other line carrying a DCID."""

    dcid: int
    text: str
    inline: bool = False    # True: ``text`` is the whole body and the DCID sits inside it


@dataclass(frozen=True, slots=True)
class DoubleBounce(Event):
    """``Double bounce: Message m to r - <status> - <description>`` (the bounce itself bounced)."""

    mid: int
    rid: int
    status: str
    description: str


@dataclass(frozen=True, slots=True)
class PossibleDelivery(Event):
    """``Possible Delivery: DCID: d MID m to [0]``: the connection broke after DATA."""

    dcid: int
    mid: int
    rids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class RpcDeliveryStart(Event):
    """``RPC Delivery start RCID r MID m to <destination>`` (spam quarantine hand-off)."""

    rcid: int
    mid: int
    destination: str


@dataclass(frozen=True, slots=True)
class RpcMessageDone(Event):
    """``RPC Message done RCID r MID m``."""

    rcid: int
    mid: int


# --- quarantine and LDAP (MID scoped, id not first) -------------------------------------

@dataclass(frozen=True, slots=True)
class IsqTagged(Event):
    """``ISQ: Tagging MID m for quarantine``."""

    mid: int


@dataclass(frozen=True, slots=True)
class Reinjected(Event):
    """``EUQ: Reinjected MID m as MID n``: links the released copy to the original."""

    mid: int
    new_mid: int


@dataclass(frozen=True, slots=True)
class LdapReroute(Event):
    """``LDAP: Reroute query Q MID m RID r address A to [(...)]`` (targets kept raw)."""

    query: str
    mid: int
    rid: int
    address: str
    targets: str


@dataclass(frozen=True, slots=True)
class LdapDrop(Event):
    """``LDAP: Drop query Q MID m RID r address A``."""

    query: str
    mid: int
    rid: int
    address: str


# --- anything else ----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SystemNote(Event):
    """A known-shape line without ids (alerts, status, engine housekeeping)."""

    text: str


# Built some thirty times per relayed message: slot-filling __init__s (see values.py).
fast_init_all(globals())
