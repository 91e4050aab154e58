"""Host access table matching and relay control, without sockets."""
import pytest

from mailward.policy.hat import HostAccessTable, SenderGroupRule, parse_matcher
from mailward.policy.relay import check_recipient


def hat(*rows):
    return HostAccessTable([SenderGroupRule(g, tuple(parse_matcher(m) for m in ms), p) for g, ms, p in rows])


def test_matchers():
    t = hat(("RANGE", ["10.0.0.5-9"], "RELAY"), ("NET", ["192.0.2.0/24", "2001:db8::/32"], "REJECT"),
            ("NAMES", ["mx.partner.test", ".trusted.test"], "RELAY"), ("None", ["ALL"], "ACCEPT"))
    assert t.decide("10.0.0.7").policy == "RELAY"
    assert t.decide("10.0.0.10").policy == "ACCEPT"
    assert t.decide("192.0.2.44").group == "NET"
    assert t.decide("2001:db8::1").match == "2001:db8::/32"
    assert t.decide("198.51.100.1", "MX.Partner.test.", True).group == "NAMES"
    assert t.decide("198.51.100.1", "a.b.trusted.test", True).match == ".trusted.test"
    # an unverified PTR never matches a name
    assert t.decide("198.51.100.1", "mx.partner.test", False).group == "None"
    assert t.decide("::ffff:10.0.0.5").policy == "RELAY"


def test_continue_skips_group_and_default_refuses():
    t = hat(("EXEMPT", ["10.1.1.1"], "CONTINUE"), ("BLOCK", ["10.1.0.0/16"], "REJECT"))
    assert t.decide("10.1.2.2").policy == "REJECT"
    assert t.decide("10.1.1.1").group == "BLOCK"   # CONTINUE: the next matching group decides
    assert t.decide("172.16.0.1").group == "None"   # nothing matched: refused by default
    assert hat(("A", ["10.1.1.1"], "CONTINUE"), ("B", ["ALL"], "ACCEPT")).decide("10.1.1.1").group == "B"


@pytest.mark.parametrize("bad", ["", "10.0.0.9-5", "bad host!", "1.2.3.4-::1"])
def test_bad_matchers(bad):
    with pytest.raises(ValueError):
        parse_matcher(bad)


ACCEPTED = ("example.test", ".sub.example.test")


@pytest.mark.parametrize("local,domain,ok", [
    ("user", "example.test", True),
    ("user", "EXAMPLE.Test", True),
    ("user", "example.test.", True),
    ("user", "a.sub.example.test", True),
    ("user", "other.test", False),
    ("user%other.test", "example.test", False),       # percent hack
    ("other.test!user", "example.test", False),       # bang path
    ("user@other.test", "example.test", False),       # quoted local part "user@other"@local
    ("user", "example.test..", False),
    ("user", "[127.0.0.1]", False),                   # address literal
    ("user", "example.test.other.test", False),
    ("user", "notexample.test", False),
    ("user", " example.test", False),
    ("user", "", False),
])
def test_relay_without_auth(local, domain, ok):
    assert check_recipient(local, domain, accepted_domains=ACCEPTED, may_relay=False).allowed is ok


def test_source_route_and_auth():
    assert not check_recipient("user", "example.test", accepted_domains=ACCEPTED, may_relay=False,
                               had_source_route=True).allowed
    assert check_recipient("user%x", "anywhere.test", accepted_domains=ACCEPTED, may_relay=True).allowed
