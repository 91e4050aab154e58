"""RFC 5321 path grammar: reverse-paths, forward-paths and ESMTP parameters.

Owns the parsing of `MAIL FROM:<...>` / `RCPT TO:<...>` arguments into an `Address`
value plus a parameter dict. It applies the grammar only (RFC 5321 §4.1.2, RFC 6531 for
UTF-8); it decides nothing about relaying, but it records what a relay policy needs to see
through tricks: a dropped source route, a quoted local part, `%`-hacks, bang paths, an
`@` hidden inside quotes, address literals. Knows nothing of sessions, replies or I/O.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ..values import fast_init

__all__ = ["Address", "AddressError", "parse_path", "parse_params", "NULL_SENDER"]

# atext of RFC 5322 as used by RFC 5321's Atom; UTF-8 (RFC 6531 UTF8-non-ascii) is added
# by the caller only when SMTPUTF8 was requested.
_ATEXT = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~"
_DOT_STRING = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*\Z")
_DOT_STRING_U = re.compile(rf"(?:[{_ATEXT}]|[^\x00-\x7f])+(?:\.(?:[{_ATEXT}]|[^\x00-\x7f])+)*\Z")
_SUBDOMAIN = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
# No trailing dot: RFC 5321's Domain has none, and "local.test." must not slip past a
# relay check that compares names.
_DOMAIN = re.compile(rf"{_SUBDOMAIN}(?:\.{_SUBDOMAIN})*\Z")
_SUBDOMAIN_U = r"(?:[A-Za-z0-9]|[^\x00-\x7f])(?:(?:[A-Za-z0-9-]|[^\x00-\x7f])*(?:[A-Za-z0-9]|[^\x00-\x7f]))?"
_DOMAIN_U = re.compile(rf"{_SUBDOMAIN_U}(?:\.{_SUBDOMAIN_U})*\Z")
_GENERAL_LITERAL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?:[\x21-\x5a\x5e-\x7e]+\Z")
_ESMTP_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")
_ESMTP_VALUE = re.compile(r"[\x21-\x3c\x3e-\x7e]+\Z")
_ESMTP_VALUE_U = re.compile(r"(?:[\x21-\x3c\x3e-\x7e]|[^\x00-\x7f])+\Z")

MAX_PATH = 256          # RFC 5321 §4.5.3.1.3 (a path, brackets included)
MAX_DOMAIN = 255        # RFC 5321 §4.5.3.1.2


class AddressError(ValueError):
    """The text is not a valid path; ``reason`` is short and safe to put in a reply."""

    def __init__(self, reason: str, *, utf8: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.utf8 = utf8            # invalid only because UTF-8 was used without SMTPUTF8


@fast_init
@dataclass(frozen=True, slots=True)
class Address:
    """A parsed mailbox. ``local_part`` is unquoted (``"a b"@x`` has local part ``a b``);
    ``domain`` is as sent (an address literal keeps its brackets)."""

    local_part: str
    domain: str
    quoted_local: bool = False
    had_source_route: bool = False
    source_route: tuple[str, ...] = ()
    is_literal: bool = False
    utf8: bool = False
    null: bool = False          # the null reverse-path <>

    @property
    def text(self) -> str:
        """The mailbox as logged and stored: ``local@domain``, ``""`` for ``<>``."""
        if self.null:
            return ""
        local = _quote_local(self.local_part) if self.quoted_local else self.local_part
        return f"{local}@{self.domain}" if self.domain else local

    @property
    def domain_lower(self) -> str:
        return self.domain.lower().rstrip(".")

    # The tricks a relay policy must not be fooled by (RFC 5321 §3.6.1, §4.1.1.3, and
    # the classic open-relay tests): each names a local part that some MTA downstream
    # might route elsewhere.
    @property
    def has_percent_hack(self) -> bool:
        return "%" in self.local_part

    @property
    def has_bang_path(self) -> bool:
        return "!" in self.local_part

    @property
    def has_quoted_at(self) -> bool:
        return "@" in self.local_part

    @property
    def routing_tricks(self) -> tuple[str, ...]:
        tricks = []
        if self.had_source_route:
            tricks.append("source-route")
        if self.has_percent_hack:
            tricks.append("percent")
        if self.has_bang_path:
            tricks.append("bang")
        if self.has_quoted_at:
            tricks.append("quoted-at")
        return tuple(tricks)

    def __str__(self) -> str:
        return f"<{self.text}>"


NULL_SENDER = Address("", "", null=True)


def _quote_local(local: str) -> str:
    if _DOT_STRING_U.match(local):
        return local
    return '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_path(text: str, *, allow_null: bool, utf8: bool, allow_postmaster: bool = False) -> tuple[Address, str]:
    """Parse ``<path>`` at the start of ``text``; return the address and the rest (params).

    ``allow_null``: the reverse-path ``<>`` is valid (MAIL). ``allow_postmaster``: the
    domain-less ``<Postmaster>`` is valid (RCPT, RFC 5321 §4.1.1.3). ``utf8``: SMTPUTF8
    was requested for this transaction.
    """
    text = text.lstrip(" ")           # tolerate `MAIL FROM: <a@b>`, as every MTA does
    if not text.startswith("<"):
        raise AddressError("missing <>")
    end = _find_close(text)
    inner, rest = text[1:end], text[end + 1:]
    if rest and not rest.startswith(" "):
        raise AddressError("junk after address")
    if end + 1 > MAX_PATH:
        raise AddressError("path too long")
    if inner == "":
        if allow_null:
            return NULL_SENDER, rest
        raise AddressError("empty address")
    route: tuple[str, ...] = ()
    if inner.startswith("@"):
        # A-d-l ":" Mailbox: accepted for syntax, the route itself is dropped (§4.1.1.3 / App. C)
        colon = inner.find(":")
        if colon < 0:
            raise AddressError("bad source route")
        hops = inner[:colon].split(",")
        for hop in hops:
            if not hop.startswith("@") or not _valid_domain(hop[1:], utf8):
                raise AddressError("bad source route")
        route = tuple(h[1:] for h in hops)
        inner = inner[colon + 1:]
    local, quoted, domain = _split_mailbox(inner, utf8)
    if domain is None:
        if allow_postmaster and not route and not quoted and local.lower() == "postmaster":
            return Address(local, "", utf8=False), rest
        raise AddressError("missing domain")
    literal = domain.startswith("[")
    if literal:
        if not _valid_literal(domain):
            raise AddressError("bad address literal")
    elif not _valid_domain(domain, utf8):
        if not utf8 and _valid_domain(domain, True):
            raise AddressError("UTF-8 domain without SMTPUTF8", utf8=True)
        raise AddressError("bad domain")
    is_utf8 = not (local.isascii() and domain.isascii())
    return Address(local, domain, quoted_local=quoted, had_source_route=bool(route), source_route=route,
                   is_literal=literal, utf8=is_utf8), rest


def _find_close(text: str) -> int:
    """Index of the `>` that closes the path, skipping quoted strings."""
    i, n, in_quote = 1, len(text), False
    while i < n:
        ch = text[i]
        if in_quote:
            if ch == "\\":
                i += 2
                continue
            if ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
        elif ch == ">":
            return i
        i += 1
    raise AddressError("missing >")


def _split_mailbox(inner: str, utf8: bool) -> tuple[str, bool, str | None]:
    if inner.startswith('"'):
        i, n, out = 1, len(inner), []
        while i < n:
            ch = inner[i]
            if ch == "\\":
                if i + 1 >= n or not (" " <= inner[i + 1] <= "~" or (utf8 and not inner[i + 1].isascii())):
                    raise AddressError("bad quoted local part")
                out.append(inner[i + 1])
                i += 2
                continue
            if ch == '"':
                break
            if not (ch in " !" or "#" <= ch <= "[" or "]" <= ch <= "~" or (not ch.isascii() and utf8)):
                if not ch.isascii():
                    raise AddressError("UTF-8 local part without SMTPUTF8", utf8=True)
                raise AddressError("bad quoted local part")
            out.append(ch)
            i += 1
        else:
            raise AddressError("unterminated quoted local part")
        after = inner[i + 1:]
        if after == "":
            return "".join(out), True, None
        if not after.startswith("@"):
            raise AddressError("bad local part")
        return "".join(out), True, after[1:]
    at = inner.rfind("@")
    local, domain = (inner, None) if at < 0 else (inner[:at], inner[at + 1:])
    if not (_DOT_STRING_U if utf8 else _DOT_STRING).match(local):
        if not utf8 and _DOT_STRING_U.match(local):
            raise AddressError("UTF-8 local part without SMTPUTF8", utf8=True)
        raise AddressError("bad local part")
    return local, False, domain


def _valid_domain(domain: str, utf8: bool) -> bool:
    if not domain or len(domain) > MAX_DOMAIN:
        return False
    return bool((_DOMAIN_U if utf8 else _DOMAIN).match(domain))


def _valid_literal(domain: str) -> bool:
    if not domain.endswith("]") or len(domain) > MAX_DOMAIN:
        return False
    body = domain[1:-1]
    if body[:5].lower() == "ipv6:":
        try:
            ipaddress.IPv6Address(body[5:])
        except ValueError:
            return False
        return True
    if re.fullmatch(r"\d{1,3}(?:\.\d{1,3}){3}", body):
        try:
            ipaddress.IPv4Address(body)
        except ValueError:
            return False
        return True
    return bool(_GENERAL_LITERAL.match(body)) and body[:5].lower() != "ipv6:"


def parse_params(text: str, *, utf8: bool = False) -> dict[str, str]:
    """``KEY=VALUE`` / ``KEY`` words after the path (RFC 5321 §4.1.2 esmtp-param).
    Keys are upper-cased; a key without value maps to ``""``. Duplicates are an error."""
    params: dict[str, str] = {}
    for word in text.split(" "):
        if not word:
            continue
        key, eq, value = word.partition("=")
        if not _ESMTP_KEYWORD.match(key):
            raise AddressError("bad parameter syntax")
        if eq and not (_ESMTP_VALUE_U if utf8 else _ESMTP_VALUE).match(value):
            raise AddressError("bad parameter value")
        key = key.upper()
        if key in params:
            raise AddressError(f"duplicate parameter {key}")
        params[key] = value
    return params
