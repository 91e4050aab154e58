"""The host access table (HAT): which sender group a connecting client falls in, and its policy.

Owns the matcher grammar (IP, CIDR, IP range, rDNS name or `.suffix`, `dnslist[zone]`, `ALL`)
and the ordered evaluation. Knows nothing of sockets or DNS: the caller passes the client IP,
the forward-confirmed reverse name and the DNS lists (``dnslists()``) that list the client.
Name matchers only match a *verified* name, so a client cannot claim a trusted group by
publishing a PTR record it does not own.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterable, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Matcher:
    text: str                      # as configured; logged after "match"
    kind: str                      # all | net | range | name | suffix | dnslist
    net: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    low: IPAddress | None = None
    high: IPAddress | None = None
    name: str | None = None        # a host name, a .suffix, or a DNS list's zone

    def matches(self, ip: IPAddress, rdns: str | None, verified: bool,
                listed: frozenset[str] = frozenset()) -> bool:
        if self.kind == "all":
            return True
        if self.kind == "dnslist":
            return self.name in listed
        if self.kind == "net":
            return ip.version == self.net.version and ip in self.net
        if self.kind == "range":
            return ip.version == self.low.version and self.low <= ip <= self.high
        if not (rdns and verified):
            return False
        name = rdns.lower().rstrip(".")
        if self.kind == "name":
            return name == self.name
        return name.endswith(self.name)  # suffix, stored with its leading dot


def parse_matcher(text: str) -> Matcher:
    """Parse one HAT entry; raise ValueError with a clear message on nonsense."""
    t = text.strip()
    if not t:
        raise ValueError("empty sender group entry")
    if t.upper() == "ALL":
        return Matcher(text=t, kind="all")
    if t.lower().startswith("dnslist[") and t.endswith("]"):
        zone = t[len("dnslist["):-1].strip().lower().rstrip(".")
        if not _is_host_name(zone) or "." not in zone:
            raise ValueError(f"{t!r}: dnslist[...] takes a DNS list's zone, e.g. dnslist[zen.spamhaus.org]")
        return Matcher(text=t, kind="dnslist", name=zone)
    if "-" in t and not any(c.isalpha() for c in t.replace("-", "")) or _looks_like_v6_range(t):
        lo, _, hi = t.partition("-")
        low = ipaddress.ip_address(lo.strip())
        hi = hi.strip()
        if low.version == 4 and "." not in hi:
            # 10.0.0.1-20: the last octet only (the appliance's short form)
            high = ipaddress.ip_address(lo.rsplit(".", 1)[0] + "." + hi)
        else:
            high = ipaddress.ip_address(hi)
        if high.version != low.version or high < low:
            raise ValueError(f"bad IP range {t!r}")
        return Matcher(text=t, kind="range", low=low, high=high)
    try:
        return Matcher(text=t, kind="net", net=ipaddress.ip_network(t, strict=False))
    except ValueError:
        pass
    name = t.lower().rstrip(".")
    if not _is_host_name(name.lstrip(".")):
        raise ValueError(f"{t!r} is not an IP, CIDR, range, host name, .suffix or dnslist[zone]")
    if name.startswith("."):
        return Matcher(text=t, kind="suffix", name=name)
    return Matcher(text=t, kind="name", name=name)


def _is_host_name(name: str) -> bool:
    return bool(name) and all(part and all(c.isalnum() or c in "-_" for c in part) for part in name.split("."))


def _looks_like_v6_range(t: str) -> bool:
    return ":" in t and "-" in t


@dataclass(frozen=True, slots=True)
class SenderGroupRule:
    group: str
    matchers: tuple[Matcher, ...]
    policy: str


@dataclass(frozen=True, slots=True)
class HatDecision:
    policy: str          # ACCEPT RELAY REJECT TCPREFUSE
    group: str           # "None" when the client matched no named group
    match: str           # the entry that matched


class HostAccessTable:
    def __init__(self, rules: Sequence[SenderGroupRule]):
        self.rules = tuple(rules)

    @classmethod
    def from_config(cls, groups: Iterable) -> "HostAccessTable":
        return cls([SenderGroupRule(g.group, tuple(parse_matcher(m) for m in g.match), g.policy)
                    for g in groups])

    def needs_rdns(self) -> bool:
        return any(m.kind in ("name", "suffix") for r in self.rules for m in r.matchers)

    def dnslists(self) -> tuple[str, ...]:
        """The zones of the table's ``dnslist[...]`` entries, in order, each once."""
        return tuple(dict.fromkeys(m.name for r in self.rules for m in r.matchers if m.kind == "dnslist"))

    def decide(self, ip: str, rdns: str | None = None, verified: bool = False,
               listed: frozenset[str] = frozenset()) -> HatDecision:
        """``listed``: the zones of ``dnslists()`` that list ``ip`` (asked by the caller)."""
        addr = ipaddress.ip_address(ip)
        if addr.version == 6 and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        for rule in self.rules:
            for m in rule.matchers:
                if m.matches(addr, rdns, verified, listed):
                    if rule.policy == "CONTINUE":
                        break  # this group exempts the client: go on with the next group
                    return HatDecision(rule.policy, rule.group, m.text)
        # Nothing matched: refuse by default (an explicit ALL row is the operator's choice).
        return HatDecision("REJECT", "None", "ALL")
