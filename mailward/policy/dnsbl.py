"""DNS blocklists (RFC 5782) for the host access table's ``dnslist[zone]`` sender groups.

Owns: the query name of an address in a list (reversed IPv4 octets, IPv6 nibbles), what
counts as "listed" (an A record in 127.0.0.0/8, but not 127.255.255.0/24, which lists use for
error codes such as "query refused"), and asking every list of a table at once under one
timeout. A list that does not answer in time, or fails, lists nobody: a blocklist outage
must not close the gateway (Postfix's reject_rbl_client does the same). Knows nothing of HAT
rows or SMTP; the resolver is the gateway's.
"""
from __future__ import annotations

import asyncio
import ipaddress
from typing import Iterable

from ..net.dns import DnsFailure, Resolver

_LISTED = ipaddress.ip_network("127.0.0.0/8")
_ERRORS = ipaddress.ip_network("127.255.255.0/24")


def query_name(ip: str, zone: str) -> str:
    """``2.0.0.127.zone`` for 127.0.0.2; nibbles for IPv6 (an IPv4-mapped one as IPv4)."""
    addr = ipaddress.ip_address(ip)
    if addr.version == 6 and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    if addr.version == 4:
        head = ".".join(reversed(str(addr).split(".")))
    else:
        head = ".".join(reversed(addr.exploded.replace(":", "")))
    return f"{head}.{zone.rstrip('.')}"


def _is_listing(answer: str) -> bool:
    try:
        a = ipaddress.ip_address(answer)
    except ValueError:
        return False
    return a.version == 4 and a in _LISTED and a not in _ERRORS


async def _listed(resolver: Resolver, ip: str, zone: str) -> bool:
    try:
        answers = await resolver.addresses(query_name(ip, zone))
    except DnsFailure:              # NXDOMAIN (not listed) or a failing list (fail open)
        return False
    return any(_is_listing(a) for a in answers)


async def listed_in(resolver: Resolver, ip: str, zones: Iterable[str], timeout: float) -> frozenset[str]:
    """The zones among ``zones`` that list ``ip``, asked all at once; a zone that has not
    answered within ``timeout`` seconds counts as not listing it."""
    zones = list(dict.fromkeys(zones))
    if not zones:
        return frozenset()
    tasks = [asyncio.ensure_future(_listed(resolver, ip, z)) for z in zones]
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    return frozenset(z for z, t in zip(zones, tasks) if t in done and not t.cancelled()
                     and t.exception() is None and t.result())
