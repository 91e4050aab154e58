"""SASL mechanisms for the server side of SMTP AUTH (RFC 4954): PLAIN, LOGIN, CRAM-MD5.

Owns the message exchange of each mechanism — which challenge to send, how to read each
response, when credentials are complete — and the `Credentials` value that comes out.
It verifies nothing: checking a password or a CRAM digest is the application's job
(`cram_md5_digest` helps it). Knows nothing of SMTP replies, sessions or I/O; base64
transport encoding and the ``*`` cancel line are handled by the SMTP core.
"""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from ..values import fast_init

__all__ = ["Credentials", "SaslError", "Mechanism", "MECHANISMS", "start", "cram_md5_digest"]


@fast_init
@dataclass(frozen=True, slots=True)
class Credentials:
    """What a finished SASL exchange produced. For PLAIN and LOGIN ``password`` is set;
    for CRAM-MD5 ``password`` is None and ``challenge``/``digest`` (lower-case hex) are."""

    mechanism: str
    username: str
    password: str | None = field(default=None, repr=False)
    authzid: str = ""
    challenge: str | None = None
    digest: str | None = field(default=None, repr=False)

    def check_cram(self, secret: str) -> bool:
        """For CRAM-MD5: does ``digest`` match HMAC-MD5(secret, challenge)?"""
        if self.challenge is None or self.digest is None:
            return False
        return hmac.compare_digest(cram_md5_digest(secret, self.challenge), self.digest.lower())


class SaslError(ValueError):
    """The client's response breaks the mechanism's syntax (the core answers 501)."""


def cram_md5_digest(secret: str, challenge: str) -> str:
    return hmac.new(secret.encode("utf-8"), challenge.encode("utf-8"), hashlib.md5).hexdigest()


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslError("credentials are not UTF-8") from None


class Mechanism:
    """One exchange in progress. ``first()`` gives the first challenge (bytes, before
    base64) or None when an initial response made it unnecessary; ``step(response)``
    returns the next challenge or a `Credentials` when done."""

    name = ""

    def first(self, initial: bytes | None) -> bytes | Credentials:
        raise NotImplementedError

    def step(self, response: bytes) -> bytes | Credentials:
        raise NotImplementedError


class Plain(Mechanism):
    """RFC 4616: ``[authzid] NUL authcid NUL passwd`` in one message."""

    name = "PLAIN"

    def first(self, initial):
        return b"" if initial is None else self.step(initial)

    def step(self, response):
        # One decode for the three fields: NUL is never part of a UTF-8 multi-byte sequence,
        # so splitting the text is splitting the bytes (and any invalid field fails the whole).
        parts = _text(response).split("\x00")
        if len(parts) != 3 or not parts[1]:
            raise SaslError("malformed PLAIN response")
        return Credentials("PLAIN", parts[1], parts[2], authzid=parts[0])


class Login(Mechanism):
    """The de-facto LOGIN mechanism: username, then password, each prompted."""

    name = "LOGIN"
    USER_PROMPT = b"Username:"
    PASS_PROMPT = b"Password:"

    def __init__(self) -> None:
        self._user: str | None = None

    def first(self, initial):
        if initial is None:
            return self.USER_PROMPT
        return self.step(initial)

    def step(self, response):
        if self._user is None:
            self._user = _text(response)
            return self.PASS_PROMPT
        return Credentials("LOGIN", self._user, _text(response))


class CramMd5(Mechanism):
    """RFC 2195: the server sends a challenge, the client answers ``user SP hex-digest``."""

    name = "CRAM-MD5"

    def __init__(self, challenge: str) -> None:
        self.challenge = challenge

    def first(self, initial):
        if initial is not None:
            raise SaslError("CRAM-MD5 takes no initial response")
        return self.challenge.encode("utf-8")

    def step(self, response):
        user, sep, digest = _text(response).rpartition(" ")
        if not sep or not user or len(digest) != 32 or any(c not in "0123456789abcdefABCDEF" for c in digest):
            raise SaslError("malformed CRAM-MD5 response")
        return Credentials("CRAM-MD5", user, None, challenge=self.challenge, digest=digest.lower())


MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5")


def start(name: str, *, challenge: str) -> Mechanism:
    """A fresh exchange for mechanism ``name`` (upper case, one of `MECHANISMS`)."""
    if name == "PLAIN":
        return Plain()
    if name == "LOGIN":
        return Login()
    if name == "CRAM-MD5":
        return CramMd5(challenge)
    raise KeyError(name)
