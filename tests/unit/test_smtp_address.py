"""RFC 5321 path grammar: what parses, what does not, and what the flags reveal."""
from __future__ import annotations

import pytest

from mailward.smtp.address import NULL_SENDER, AddressError, parse_params, parse_path


def p(text, utf8=False, null=True, pm=True):
    return parse_path(text, allow_null=null, utf8=utf8, allow_postmaster=pm)


@pytest.mark.parametrize("text,local,domain", [
    ("<a@b.test>", "a", "b.test"),
    ("<first.last+tag@sub.example.test>", "first.last+tag", "sub.example.test"),
    ("<\"a b\"@c>", "a b", "c"),
    ("<\"a\\\"b\"@c>", 'a"b', "c"),
    ("<a@[192.0.2.1]>", "a", "[192.0.2.1]"),
    ("<a@[IPv6:2001:db8::1]>", "a", "[IPv6:2001:db8::1]"),
    ("<a@[x-tag:stuff]>", "a", "[x-tag:stuff]"),
    (" <a@b>", "a", "b"),
    ("<!#$%&'*+-/=?^_`{|}~@b>", "!#$%&'*+-/=?^_`{|}~", "b"),
])
def test_valid_paths(text, local, domain):
    addr, rest = p(text)
    assert (addr.local_part, addr.domain, rest) == (local, domain, "")


@pytest.mark.parametrize("text", [
    "a@b", "<a@b", "<>x", "<a@b.test.>", "<a@.>", "<a..b@c>", "<.a@c>", "<a.@c>", "<a b@c>", "<a@b..c>", "<a@-b>", "<a@b->",
    "<a@[1.2.3]>", "<a@[IPv6:zz]>", "<a@[]>", "<\"unterminated@c>", "<\"a\"x@c>", "<@:a@b>", "<@a:b>",
    "<@a,b:c@d>", "<a@b>junk", "<a@>", "<@b>", "<a@" + "x" * 260 + ">", "<a\x01@b>",
])
def test_invalid_paths(text):
    with pytest.raises(AddressError):
        p(text)


def test_null_and_postmaster():
    assert p("<>")[0] is NULL_SENDER and NULL_SENDER.text == ""
    with pytest.raises(AddressError):
        p("<>", null=False)
    pm, _ = p("<Postmaster>")
    assert pm.text == "Postmaster" and pm.domain == ""
    with pytest.raises(AddressError):
        p("<Postmaster>", pm=False)
    with pytest.raises(AddressError):
        p("<someone>")


def test_source_route_dropped():
    addr, _ = p("<@hop1.test,@hop2.test:user@dest.test>")
    assert addr.text == "user@dest.test" and addr.had_source_route
    assert addr.source_route == ("hop1.test", "hop2.test") and "source-route" in addr.routing_tricks


def test_tricks_flags():
    assert p("<u%evil.test@local.test>")[0].has_percent_hack
    assert p("<evil.test!u@local.test>")[0].has_bang_path
    quoted = p('<"u@evil.test"@local.test>')[0]
    assert quoted.has_quoted_at and quoted.quoted_local and quoted.domain == "local.test"
    assert quoted.text == '"u@evil.test"@local.test'
    assert p("<plain@local.test>")[0].routing_tricks == ()
    assert p("<a@[127.0.0.1]>")[0].is_literal


def test_quoted_simple_local_part_text_unquoted():
    assert p('<"abc"@d>')[0].text == "abc@d"


def test_utf8_requires_smtputf8():
    with pytest.raises(AddressError) as err:
        p("<jörg@b.test>")
    assert err.value.utf8
    with pytest.raises(AddressError) as err:
        p("<a@bücher.test>")
    assert err.value.utf8
    addr, _ = p("<jörg@bücher.test>", utf8=True)
    assert addr.utf8 and addr.text == "jörg@bücher.test"


def test_params():
    assert parse_params(" SIZE=100  body=8BITMIME SMTPUTF8") == {"SIZE": "100", "BODY": "8BITMIME", "SMTPUTF8": ""}
    for bad in ("SIZE=1 SIZE=2", "=x", "SI_ZE=1", "A=b=c", "-A=1"):
        with pytest.raises(AddressError):
            parse_params(bad)


def test_rest_after_path_is_params():
    addr, rest = p("<a@b> SIZE=10 BODY=7BIT")
    assert rest == " SIZE=10 BODY=7BIT"
    assert p("<\"a>b\"@c> X")[0].local_part == "a>b"
