"""The vocabulary every authentication profile speaks: verdicts, credentials, outcomes.

Owns the small value types the SMTP core and the profiles exchange and the ``AuthProfile``
protocol. It must not know how any profile checks a password, nor SMTP reply codes (the
core maps verdicts to replies: OK -> 235, FAIL -> 535, TEMPFAIL/MISCONFIGURED -> 454,
LOCKED -> 454 as well, so a locked-out client learns nothing a wrong password would not
tell it and may retry later).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..maillog.events import Event
from ..smtp.sasl import Credentials as _SaslCredentials

# Mechanisms a profile that sees the clear-text password can verify.
PASSWORD_MECHANISMS: tuple[str, ...] = ("PLAIN", "LOGIN")


class Verdict(enum.Enum):
    OK = "ok"                        # 235 2.7.0
    FAIL = "fail"                    # 535 5.7.8
    TEMPFAIL = "tempfail"            # 454 4.7.0: a backend is down, the client may retry
    MISCONFIGURED = "misconfigured"  # 454 4.7.0: the profile cannot work (logged as such)
    LOCKED = "locked"                # 454 4.7.0: the brute-force guard refuses this attempt


# What the client presented: the SMTP core's SASL result is the one credentials type (the
# password and the CRAM-MD5 digest are kept out of its repr).
Credentials = _SaslCredentials


@dataclass(frozen=True)
class AuthOutcome:
    """A profile's answer. ``profile`` names the profile that decided (a chain names its member).

    ``events`` are mail_logs events to emit besides the succeeded/failed line (e.g.
    ``SmtpAuthForwardUnreachable``); their icid is the one passed to ``verify``.
    """

    verdict: Verdict
    profile: str
    detail: str | None = None
    events: tuple[Event, ...] = ()

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.OK


@runtime_checkable
class AuthProfile(Protocol):
    name: str
    mechanisms: tuple[str, ...]

    async def verify(self, creds: Credentials, *, icid: int, client_ip: str) -> AuthOutcome:
        """Check ``creds``; never raise for a backend problem (answer TEMPFAIL instead)."""
        ...


def password_of(creds: Credentials) -> str | None:
    """The clear-text password when the mechanism carries one, else None.

    Also None when the client asks to act as someone else (a PLAIN authzid other than its
    own name): no profile here grants proxy rights, so such a login is refused.
    """
    if creds.authzid not in (None, "", creds.username):
        return None
    if creds.mechanism.upper() in PASSWORD_MECHANISMS and creds.password is not None:
        return creds.password
    return None
