"""Relay control: may this session send to this recipient?

Owns the one rule of the gateway's relay policy: an authenticated session or a client in a
RELAY sender group may send anywhere; everyone else only to the listener's accepted domains.
It also owns the defences against the classic open-relay tricks, which all rely on a
downstream server re-routing an address that *looks* local here:
  - percent hack `user%other@local`, bang paths `other!user@local`, quoted local parts
    `"user@other"@local`: routing characters in the local part are refused unless relaying
    is allowed anyway (Postfix's allow_untrusted_routing = no);
  - source routes `@local:user@other`: the core drops the route (RFC 5321 §4.1.1.3) and flags
    it; a flagged address is treated like routing characters;
  - address literals `user@[1.2.3.4]` are never local;
  - trailing dots and case: the domain is compared case-insensitively with one trailing dot
    removed; anything else odd (empty labels, spaces) is not local.
"""
from __future__ import annotations

from dataclasses import dataclass

_ROUTING_CHARS = ("%", "!", "@")


@dataclass(frozen=True, slots=True)
class RelayVerdict:
    allowed: bool
    reason: str = ""   # why not, for tests and debugging; the client sees the standard text


def normalise_domain(domain: str) -> str | None:
    """Lower-case domain with one trailing dot removed, or None when it cannot be local."""
    d = domain.strip()
    if d != domain or not d or d.startswith("["):
        return None
    d = d.lower()
    if d.endswith("."):
        d = d[:-1]
    labels = d.split(".")
    if not all(labels) or any(c.isspace() for c in d):
        return None
    return d


def is_accepted_domain(domain: str, accepted: tuple[str, ...] | list[str]) -> bool:
    d = normalise_domain(domain)
    if d is None:
        return False
    for entry in accepted:
        if entry.startswith("."):
            if d.endswith(entry):
                return True
        elif d == entry:
            return True
    return False


def check_recipient(local_part: str, domain: str, *, accepted_domains, may_relay: bool,
                    had_source_route: bool = False) -> RelayVerdict:
    if may_relay:
        return RelayVerdict(True)
    if had_source_route:
        return RelayVerdict(False, "source route")
    if any(c in local_part for c in _ROUTING_CHARS):
        return RelayVerdict(False, "routing characters in local part")
    if not domain:
        return RelayVerdict(False, "no domain")
    if not is_accepted_domain(domain, accepted_domains):
        return RelayVerdict(False, "not an accepted domain")
    return RelayVerdict(True)
