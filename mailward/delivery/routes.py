"""SMTP routes: which hosts receive mail for a domain, and how to talk to them.

Owns: the route table (exact domain, ``.suffix`` for subdomains, ``ALL`` as default; with no
matching route a domain is delivered by DNS, as the appliance does), the per-route options
(outgoing AUTH profile name, TLS policy, ``on_auth_failure``), and turning a route into an
ordered list of next hops: fixed hosts by priority (equal priorities in random order, which
shares the load), or ``USEDNS``: MX records by preference, the implicit MX (the domain's own
A/AAAA) when there is none, and a null MX (RFC 7505) as a permanent refusal.

Must not know SMTP or the log. DNS goes through the injected ``Resolver`` only.
"""
from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from ..net.dns import DnsFailure, Resolver

TLS_POLICIES = ("off", "preferred", "required", "required-verify")
AUTH_FAILURE_CHOICES = ("continue", "defer")


@dataclass(frozen=True)
class RouteHost:
    host: str               # a name or an IP literal
    port: int = 25
    priority: int = 0       # lower first; equal priorities share the load


@dataclass(frozen=True)
class Route:
    domain: str                               # example.com, .example.com, or ALL
    hosts: tuple[RouteHost, ...] = ()         # empty = USEDNS
    auth_profile: str | None = None
    tls: str = "preferred"
    on_auth_failure: str = "continue"
    port: int = 25                            # the port for MX hosts (USEDNS)

    def __post_init__(self) -> None:
        if self.tls not in TLS_POLICIES:
            raise ValueError(f"route {self.domain}: tls must be one of {TLS_POLICIES}")
        if self.on_auth_failure not in AUTH_FAILURE_CHOICES:
            raise ValueError(f"route {self.domain}: on_auth_failure must be one of {AUTH_FAILURE_CHOICES}")

    @property
    def usedns(self) -> bool:
        return not self.hosts


# With no route at all the appliance delivers by MX, opportunistic TLS.
DEFAULT_ROUTE = Route(domain="ALL")


@dataclass(frozen=True)
class NextHop:
    """One address to try, with the name it came from (for logs and TLS verification)."""

    name: str
    address: str
    port: int
    priority: int


class DestinationError(Exception):
    """The destination cannot be resolved. ``temporary`` tells a DNS outage from NXDOMAIN
    or a null MX; ``kind`` is the DnsError line kind ("Error" / "Temporary Failure")."""

    def __init__(self, domain: str, detail: str, *, temporary: bool, null_mx: bool = False):
        super().__init__(detail)
        self.domain = domain
        self.detail = detail
        self.temporary = temporary
        self.null_mx = null_mx

    @property
    def kind(self) -> str:
        return "Temporary Failure" if self.temporary else "Error"


@dataclass
class RouteTable:
    routes: Sequence[Route] = ()
    _exact: dict[str, Route] = field(init=False, repr=False)
    _suffix: list[tuple[str, Route]] = field(init=False, repr=False)
    _default: Route = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._exact, self._suffix, self._default = {}, [], DEFAULT_ROUTE
        for r in self.routes:
            key = r.domain.lower().rstrip(".")
            if key == "all":
                self._default = r
            elif key.startswith("."):
                self._suffix.append((key, r))
            else:
                # The first route for a domain wins, as in a top-down table.
                self._exact.setdefault(key, r)
        # Longest suffix first: .mail.example.com beats .example.com.
        self._suffix.sort(key=lambda kr: -len(kr[0]))

    def lookup(self, domain: str) -> Route:
        d = domain.lower().rstrip(".")
        if d in self._exact:
            return self._exact[d]
        for suffix, route in self._suffix:
            if d.endswith(suffix):
                return route
        return self._default


def routes_from_config(items: Iterable[object]) -> RouteTable:
    """From ``config.Route`` items (duck-typed, so this module does not import the schema)."""
    out = []
    for r in items:
        hosts = tuple(RouteHost(h.host, h.port, h.priority) for h in getattr(r, "hosts", ()))
        if getattr(r, "usedns", False):
            hosts = ()
        out.append(Route(domain=r.domain, hosts=hosts, auth_profile=getattr(r, "auth_profile", None),
                         tls=getattr(r, "tls", "preferred"),
                         on_auth_failure=getattr(r, "on_auth_failure", "continue")))
    return RouteTable(out)


def domain_of(address: str) -> str:
    """The domain part of a recipient address, lower case ('' for a bare local part)."""
    return address.rpartition("@")[2].lower().rstrip(".") if "@" in address else ""


def _strip_name(detail: str, domain: str) -> str:
    # Resolvers say "example.com: NXDomain"; the log line names the domain already.
    prefix = f"{domain}: "
    return detail[len(prefix):] if detail.lower().startswith(prefix.lower()) else detail


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
        return True
    except ValueError:
        return False


def _shuffle_equal(items: list, key, rng: random.Random) -> list:
    """Sort by key; within each equal key, random order (load sharing)."""
    decorated = [(key(x), rng.random(), x) for x in items]
    decorated.sort(key=lambda t: (t[0], t[1]))
    return [t[2] for t in decorated]


async def next_hops(route: Route, domain: str, resolver: Resolver | None,
                    rng: random.Random | None = None) -> list[NextHop]:
    """The ordered addresses to try for ``domain`` under ``route``.

    Raises DestinationError when nothing can be tried. A host name that does not resolve is
    skipped as long as another host does (as Postfix skips a broken MX)."""
    rng = rng or random.Random()
    if route.hosts:
        targets = [(h.priority, h.host, h.port) for h in route.hosts]
    else:
        if resolver is None:
            raise DestinationError(domain, f"no resolver to look up {domain} (MX)", temporary=True)
        try:
            mx = await resolver.mx(domain)
        except DnsFailure as exc:
            raise DestinationError(domain, _strip_name(str(exc), domain), temporary=exc.temporary) from None
        if any(host in ("", ".") for _, host in mx):
            raise DestinationError(domain, f"{domain} has a null MX (does not accept mail)",
                                   temporary=False, null_mx=True)
        # No MX: the domain itself is the implicit MX (RFC 5321 5.1).
        targets = [(pref, host, route.port) for pref, host in mx] or [(0, domain, route.port)]
    ordered = _shuffle_equal(targets, key=lambda t: t[0], rng=rng)
    hops: list[NextHop] = []
    errors: list[DnsFailure] = []
    for priority, host, port in ordered:
        if _is_ip(host):
            hops.append(NextHop(host, host.strip("[]"), port, priority))
            continue
        if resolver is None:
            errors.append(DnsFailure(f"{host}: no resolver", temporary=True))
            continue
        try:
            addresses = await resolver.addresses(host)
        except DnsFailure as exc:
            errors.append(exc)
            continue
        hops += [NextHop(host, a, port, priority) for a in addresses]
    if not hops:
        temporary = any(e.temporary for e in errors) or not errors
        detail = "; ".join(_strip_name(str(e), domain) for e in errors) or f"no address for {domain}"
        raise DestinationError(domain, detail, temporary=temporary)
    return hops
