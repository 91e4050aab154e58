"""DNS blocklists for the HAT (RFC 5782): query names, what counts as listed, fail-open, and
the dnslist[zone] matcher."""
from __future__ import annotations

import asyncio

import pytest

from mailward.net.dns import StaticResolver, parse_nameserver
from mailward.policy.dnsbl import listed_in, query_name
from mailward.policy.hat import HostAccessTable, SenderGroupRule, parse_matcher


def test_query_names():
    assert query_name("127.0.0.2", "bl.test") == "2.0.0.127.bl.test"
    assert query_name("192.0.2.99", "zen.example.") == "99.2.0.192.zen.example"
    assert query_name("::ffff:192.0.2.1", "bl.test") == "1.2.0.192.bl.test"
    # RFC 5782 2.4: nibbles, least significant first
    assert query_name("2001:db8:1:2:3:4:567:89ab", "bl.test") == (
        "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.test")


def run(coro):
    return asyncio.run(coro)


def test_listed_not_listed_error_codes_and_failures():
    r = StaticResolver(hosts={"2.0.0.127.a.test": ["127.0.0.2"], "2.0.0.127.b.test": ["127.0.0.10", "127.0.0.4"],
                              "2.0.0.127.c.test": ["127.255.255.254"],    # "query refused": not a listing
                              "2.0.0.127.d.test": ["192.0.2.1"]},         # outside 127/8: not a listing
                       temporary_failures={"2.0.0.127.e.test"})
    got = run(listed_in(r, "127.0.0.2", ["a.test", "b.test", "c.test", "d.test", "e.test", "f.test"], 2.0))
    assert got == frozenset({"a.test", "b.test"})
    assert run(listed_in(r, "127.0.0.2", [], 2.0)) == frozenset()


def test_a_list_that_does_not_answer_in_time_lists_nobody():
    class Slow(StaticResolver):
        async def addresses(self, name):
            if name.endswith("slow.test"):
                await asyncio.sleep(30)
            return await super().addresses(name)

    r = Slow(hosts={"2.0.0.127.fast.test": ["127.0.0.2"]})

    async def go():
        loop = asyncio.get_running_loop()
        t = loop.time()
        got = await listed_in(r, "127.0.0.2", ["slow.test", "fast.test"], 0.3)
        return got, loop.time() - t
    got, took = run(go())
    assert got == frozenset({"fast.test"})
    assert took < 2.0


def test_dnslist_matcher_and_decision():
    m = parse_matcher("dnslist[Zen.Spamhaus.Org]")
    assert (m.kind, m.name, m.text) == ("dnslist", "zen.spamhaus.org", "dnslist[Zen.Spamhaus.Org]")
    for bad in ("dnslist[]", "dnslist[local]", "dnslist[a b.test]", "dnslist[bl.test"):
        with pytest.raises(ValueError):
            parse_matcher(bad)
    hat = HostAccessTable([SenderGroupRule("RELAYLIST", (parse_matcher("127.0.0.5"),), "RELAY"),
                           SenderGroupRule("RBLBlacklist", (parse_matcher("dnslist[bl.test]"),
                                                            parse_matcher("dnslist[other.test]")), "TCPREFUSE"),
                           SenderGroupRule("None", (parse_matcher("ALL"),), "ACCEPT")])
    assert hat.dnslists() == ("bl.test", "other.test")
    d = hat.decide("127.0.0.2", listed=frozenset({"other.test"}))
    assert (d.policy, d.group, d.match) == ("TCPREFUSE", "RBLBlacklist", "dnslist[other.test]")
    assert hat.decide("127.0.0.2").policy == "ACCEPT"
    # an earlier row still wins: a listed relay host is a relay host
    assert hat.decide("127.0.0.5", listed=frozenset({"bl.test"})).policy == "RELAY"


def test_name_server_syntax():
    assert parse_nameserver("192.0.2.53") == ("192.0.2.53", 53)
    assert parse_nameserver("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_nameserver("2001:db8::53") == ("2001:db8::53", 53)
    assert parse_nameserver("[2001:db8::53]:5353") == ("2001:db8::53", 5353)
    for bad in ("ns.example", "127.0.0.1:x", "127.0.0.1:0", "[2001:db8::53", "[::1]x"):
        with pytest.raises(ValueError):
            parse_nameserver(bad)
