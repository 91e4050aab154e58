"""DNS for the gateway: reverse lookups with forward confirmation, MX and address lookups.

Owns the one `Resolver` interface every part uses, so tests inject a `StaticResolver` and
never touch real DNS. The dnspython implementation is the only place that talks to a name
server. Knows nothing of SMTP or logging.
"""
from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass, field
from typing import Protocol


class DnsFailure(Exception):
    """A lookup failed. ``temporary`` tells a SERVFAIL/timeout from an NXDOMAIN."""

    def __init__(self, message: str, *, temporary: bool):
        super().__init__(message)
        self.temporary = temporary


class Resolver(Protocol):
    async def ptr(self, ip: str) -> list[str]: ...
    async def addresses(self, name: str) -> list[str]: ...
    async def mx(self, domain: str) -> list[tuple[int, str]]: ...


@dataclass
class StaticResolver:
    """A resolver from dictionaries, for tests and for `make run` without a network."""

    ptrs: dict[str, list[str]] = field(default_factory=dict)
    hosts: dict[str, list[str]] = field(default_factory=dict)
    mxs: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    temporary_failures: set[str] = field(default_factory=set)

    def _check(self, key: str) -> None:
        if key in self.temporary_failures:
            raise DnsFailure(f"{key}: SERVFAIL", temporary=True)

    async def ptr(self, ip: str) -> list[str]:
        self._check(ip)
        return list(self.ptrs.get(ip, []))

    async def addresses(self, name: str) -> list[str]:
        key = name.lower().rstrip(".")
        self._check(key)
        if key not in self.hosts:
            raise DnsFailure(f"{name}: NXDomain", temporary=False)
        return list(self.hosts[key])

    async def mx(self, domain: str) -> list[tuple[int, str]]:
        key = domain.lower().rstrip(".")
        self._check(key)
        if key not in self.mxs and key not in self.hosts:
            raise DnsFailure(f"{domain}: NXDomain", temporary=False)
        return list(self.mxs.get(key, []))


class DnsPythonResolver:
    """The real resolver (dnspython's asyncio resolver)."""

    def __init__(self, nameservers: list[str] | None = None, timeout: float = 5.0):
        import dns.asyncresolver

        self._r = dns.asyncresolver.Resolver(configure=not nameservers)
        if nameservers:
            self._r.nameservers = [_nameserver(n) for n in nameservers]
        self._r.lifetime = timeout

    async def _query(self, name: str, rdtype: str):
        import dns.exception
        import dns.resolver

        try:
            return await self._r.resolve(name, rdtype)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.resolver.NoNameservers, dns.exception.Timeout) as exc:
            raise DnsFailure(f"{name} {rdtype}: {exc}", temporary=True) from None

    async def ptr(self, ip: str) -> list[str]:
        import dns.reversename

        answer = await self._query(dns.reversename.from_address(ip).to_text(), "PTR")
        return [r.target.to_text().rstrip(".") for r in answer]

    async def addresses(self, name: str) -> list[str]:
        out: list[str] = []
        for rdtype in ("A", "AAAA"):
            out += [r.address for r in await self._query(name, rdtype)]
        if not out:
            raise DnsFailure(f"{name}: NXDomain", temporary=False)
        return out

    async def mx(self, domain: str) -> list[tuple[int, str]]:
        answer = await self._query(domain, "MX")
        return sorted((r.preference, r.exchange.to_text().rstrip(".")) for r in answer)


def _nameserver(text: str):
    """``192.0.2.53``, ``2001:db8::53``, or with a port: ``192.0.2.53:5353``, ``[2001:db8::53]:5353``."""
    import dns.nameserver

    host, port = parse_nameserver(text)
    return dns.nameserver.Do53Nameserver(host, port)


def parse_nameserver(text: str) -> tuple[str, int]:
    """(address, port) of a configured name server; ValueError with a clear message on nonsense."""
    t = text.strip()
    host, port = t, 53
    if t.startswith("["):
        host, sep, rest = t[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"name server {text!r}: use [IPv6]:port")
        if rest:
            port = int(rest[1:]) if rest[1:].isdigit() else -1
    elif t.count(":") == 1:
        host, _, p = t.partition(":")
        port = int(p) if p.isdigit() else -1
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"name server {text!r} is not an IP address (optionally with :port)") from None
    if not 0 < port < 65536:
        raise ValueError(f"name server {text!r}: bad port")
    return host, port


async def reverse_name(resolver: Resolver, ip: str, timeout: float = 5.0) -> tuple[str | None, bool]:
    """The client's PTR name and whether it is forward-confirmed (FCrDNS).

    Returns (None, False) when there is no PTR or the lookup fails: the log then says
    ``reverse dns host unknown verified no``, and name-based HAT rows cannot match.
    """
    try:
        async with asyncio.timeout(timeout):
            names = await resolver.ptr(ip)
            if not names:
                return None, False
            name = names[0]
            try:
                forward = await resolver.addresses(name)
            except DnsFailure:
                return name, False
    except (DnsFailure, TimeoutError):
        return None, False
    want = ipaddress.ip_address(ip)
    return name, any(_same_ip(a, want) for a in forward)


def _same_ip(a: str, want) -> bool:
    try:
        return ipaddress.ip_address(a) == want
    except ValueError:
        return False
