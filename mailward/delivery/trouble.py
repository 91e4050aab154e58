"""All delivery-failure policy in one table (the role of Postfix's smtp_trouble.c).

Owns: what a failure at each stage of an SMTP delivery means — try the next host, defer the
message, defer the whole destination, bounce a recipient — the appliance's status texts for
``Bounced:`` / ``Delayed:`` lines, and the retry schedule (first retry, exponential backoff,
cap, maximum queue lifetime and retries, then ``Delivery expired (message too old)``).

Must not know sockets, the spool or the log: callers describe a failure (stage, reply code
or network error) and get a decision back. Everything here is a pure function of its inputs,
so the whole policy is unit-tested without I/O.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass


class Stage(enum.Enum):
    CONNECT = "connect"
    GREETING = "greeting"
    EHLO = "EHLO"
    STARTTLS = "STARTTLS"
    AUTH = "AUTH"
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"          # the DATA command and the reply after the final dot
    DNS = "DNS"            # resolving the destination (MX, A/AAAA)


class Kind(enum.Enum):
    """What went wrong at a stage."""

    TEMP = "4xx"           # a 4xx reply
    PERM = "5xx"           # a 5xx reply
    NETWORK = "network"    # refused, reset, EOF, protocol garbage
    TIMEOUT = "timeout"
    TLS = "tls"            # STARTTLS required but not offered, or the handshake failed


class Outcome(enum.Enum):
    NEXT_HOST = "try next host"            # this host is unusable; the next one may do
    DEFER_DESTINATION = "defer destination"  # every message queued for this destination waits
    DEFER_MESSAGE = "defer message"        # the recipients of this transaction wait
    DEFER_RECIPIENT = "defer recipient"
    BOUNCE_MESSAGE = "bounce message"      # every recipient of this transaction bounces
    BOUNCE_RECIPIENT = "bounce recipient"
    CONTINUE = "continue"                  # logged, delivery goes on (AUTH failure, appliance style)


# The table. Connection-level stages never bounce directly: a host that is down, refuses
# us, or cannot do TLS says nothing about the recipients; after the last host the manager
# turns NEXT_HOST into DEFER_DESTINATION (or a bounce when the last host said 5xx at the
# greeting/EHLO, as Postfix does with a 5xx greeting from the only MX).
_TABLE: dict[tuple[Stage, Kind], Outcome] = {
    (Stage.CONNECT, Kind.NETWORK): Outcome.NEXT_HOST,
    (Stage.CONNECT, Kind.TIMEOUT): Outcome.NEXT_HOST,
    (Stage.GREETING, Kind.TEMP): Outcome.NEXT_HOST,
    (Stage.GREETING, Kind.PERM): Outcome.NEXT_HOST,
    (Stage.GREETING, Kind.NETWORK): Outcome.NEXT_HOST,
    (Stage.GREETING, Kind.TIMEOUT): Outcome.NEXT_HOST,
    (Stage.EHLO, Kind.TEMP): Outcome.NEXT_HOST,
    (Stage.EHLO, Kind.PERM): Outcome.NEXT_HOST,
    (Stage.EHLO, Kind.NETWORK): Outcome.NEXT_HOST,
    (Stage.EHLO, Kind.TIMEOUT): Outcome.NEXT_HOST,
    (Stage.STARTTLS, Kind.TEMP): Outcome.NEXT_HOST,
    (Stage.STARTTLS, Kind.PERM): Outcome.NEXT_HOST,
    (Stage.STARTTLS, Kind.NETWORK): Outcome.NEXT_HOST,
    (Stage.STARTTLS, Kind.TIMEOUT): Outcome.NEXT_HOST,
    (Stage.STARTTLS, Kind.TLS): Outcome.NEXT_HOST,
    # AUTH 5xx depends on the route's on_auth_failure (see decide()); 4xx is the server's
    # own trouble (e.g. 454 temporary authentication failure): another host may be fine.
    (Stage.AUTH, Kind.TEMP): Outcome.NEXT_HOST,
    (Stage.AUTH, Kind.NETWORK): Outcome.NEXT_HOST,
    (Stage.AUTH, Kind.TIMEOUT): Outcome.NEXT_HOST,
    (Stage.AUTH, Kind.TLS): Outcome.NEXT_HOST,     # refusing to send a password in clear
    (Stage.MAIL, Kind.TEMP): Outcome.DEFER_MESSAGE,
    (Stage.MAIL, Kind.PERM): Outcome.BOUNCE_MESSAGE,
    (Stage.MAIL, Kind.NETWORK): Outcome.DEFER_MESSAGE,
    (Stage.MAIL, Kind.TIMEOUT): Outcome.DEFER_MESSAGE,
    (Stage.RCPT, Kind.TEMP): Outcome.DEFER_RECIPIENT,
    (Stage.RCPT, Kind.PERM): Outcome.BOUNCE_RECIPIENT,
    (Stage.RCPT, Kind.NETWORK): Outcome.DEFER_MESSAGE,
    (Stage.RCPT, Kind.TIMEOUT): Outcome.DEFER_MESSAGE,
    (Stage.DATA, Kind.TEMP): Outcome.DEFER_MESSAGE,
    (Stage.DATA, Kind.PERM): Outcome.BOUNCE_MESSAGE,
    # A connection lost after the final dot may have delivered: deferring risks a duplicate,
    # bouncing risks a false bounce; every MTA chooses the duplicate (RFC 1047).
    (Stage.DATA, Kind.NETWORK): Outcome.DEFER_MESSAGE,
    (Stage.DATA, Kind.TIMEOUT): Outcome.DEFER_MESSAGE,
    (Stage.DNS, Kind.TEMP): Outcome.DEFER_DESTINATION,
    (Stage.DNS, Kind.TIMEOUT): Outcome.DEFER_DESTINATION,
    (Stage.DNS, Kind.PERM): Outcome.BOUNCE_MESSAGE,
}


def decide(stage: Stage, kind: Kind, *, on_auth_failure: str = "continue") -> Outcome:
    """The outcome of a failure of ``kind`` at ``stage``.

    ``on_auth_failure`` is the route's choice for a 5xx to AUTH: ``continue`` (the
    appliance: log the failure, deliver anyway and let the destination's own reply decide)
    or ``defer`` (Postfix's ``smtp_sasl_auth_soft_bounce = yes``: keep the mail queued, safer
    while a password is being rotated).
    """
    if stage is Stage.AUTH and kind is Kind.PERM:
        if on_auth_failure == "defer":
            return Outcome.DEFER_DESTINATION
        if on_auth_failure == "continue":
            return Outcome.CONTINUE
        raise ValueError(f"on_auth_failure must be 'continue' or 'defer', not {on_auth_failure!r}")
    try:
        return _TABLE[(stage, kind)]
    except KeyError:
        raise ValueError(f"no policy for {kind.value} at {stage.value}") from None


def after_last_host(last_stage: Stage, last_kind: Kind) -> Outcome:
    """What NEXT_HOST becomes when no host is left: a 5xx greeting/EHLO from the last host is
    a refusal (bounce), everything else is a temporary condition of the destination."""
    if last_kind is Kind.PERM and last_stage in (Stage.GREETING, Stage.EHLO):
        return Outcome.BOUNCE_MESSAGE
    return Outcome.DEFER_DESTINATION


def kind_of_code(code: int) -> Kind:
    if 400 <= code < 500:
        return Kind.TEMP
    if 500 <= code < 600:
        return Kind.PERM
    return Kind.NETWORK     # anything else where a reply was expected is a protocol error


# --- the appliance's texts -----------------------------------------------------------------

@dataclass(frozen=True)
class Status:
    """The ``<x.y.z> - <description>`` part of a Bounced:/Delayed: line."""

    code: str
    description: str


EXPIRED = Status("5.4.7", "Delivery expired (message too old)")
BAD_DESTINATION = Status("5.1.2", "Bad destination host")
ADMIN_BOUNCE = Status("5.0.0", "Message bounced by administrator")


def status_for(stage: Stage, kind: Kind, code: int | None = None) -> Status:
    """The status the appliance writes for a failure. 5xx to MAIL/RCPT is always ``5.1.0 -
    Unknown address error`` (the seed logs Postfix's ``554 5.7.1 Relay access denied`` so)."""
    if kind is Kind.PERM:
        if stage in (Stage.MAIL, Stage.RCPT):
            return Status("5.1.0", "Unknown address error")
        if stage is Stage.DNS:
            return BAD_DESTINATION
        if stage is Stage.AUTH:
            return Status("5.7.0", "Authentication failed")
        return Status("5.3.0", "Other mail system problem")
    if kind in (Kind.NETWORK, Kind.TIMEOUT):
        return Status("4.4.0", "Other network problem")
    if kind is Kind.TLS:
        return Status("4.7.0", "TLS required but could not be negotiated")
    # 4xx replies
    if code == 421 or stage in (Stage.GREETING, Stage.EHLO):
        return Status("4.3.2", "Not accepting messages at this time")
    if stage in (Stage.MAIL, Stage.RCPT):
        return Status("4.1.0", "Unknown address error")
    if stage is Stage.DNS:
        return Status("4.4.3", "DNS temporary failure")
    if stage is Stage.AUTH:
        return Status("4.7.0", "Authentication failed")
    return Status("4.3.0", "Other mail system problem")


def as_temporary(status: Status) -> Status:
    """A deferral is always logged with a 4.x.x status, even when the reply was a 5xx that
    policy chose to treat as temporary (AUTH with on_auth_failure = "defer")."""
    if status.code.startswith("5"):
        return Status("4" + status.code[1:], status.description)
    return status


# --- retry schedule ---------------------------------------------------------------------

@dataclass(frozen=True)
class RetryPolicy:
    """The appliance's bounce-profile defaults: 100 retries, 72 hours, first retry after
    60 s, at most one hour between retries."""

    initial: float = 60.0
    max_interval: float = 3600.0
    max_lifetime: float = 72 * 3600.0
    max_retries: int = 100

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt (1-based): 60, 120, 240…"""
        n = max(1, attempts)
        # Cap the exponent first: 2**100 overflows nothing in Python but wastes time.
        return min(self.initial * (2 ** min(n - 1, 40)), self.max_interval)

    def next_attempt(self, *, attempts: int, now: float, received_at: float) -> float | None:
        """When to try again after ``attempts`` failed attempts, or None when the message has
        used up its retries or would outlive the queue lifetime (then it bounces, expired)."""
        if attempts >= self.max_retries:
            return None
        when = now + self.delay(attempts)
        if when - received_at > self.max_lifetime:
            return None
        return when

    def expired(self, *, attempts: int, now: float, received_at: float) -> bool:
        return attempts >= self.max_retries or now - received_at > self.max_lifetime
