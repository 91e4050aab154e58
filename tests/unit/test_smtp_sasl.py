"""SASL mechanisms: message exchange only, no verification."""
from __future__ import annotations

import hashlib
import hmac

import pytest

from mailward.smtp import sasl


def test_plain():
    m = sasl.start("PLAIN", challenge="")
    assert m.first(None) == b""
    c = m.step(b"authz\0user\0pass")
    assert (c.mechanism, c.authzid, c.username, c.password) == ("PLAIN", "authz", "user", "pass")
    assert "pass" not in repr(c)
    for bad in (b"", b"user\0pass", b"\0\0pass", b"a\0b\0c\0d", b"\0u\xff\0p"):
        with pytest.raises(sasl.SaslError):
            sasl.start("PLAIN", challenge="").step(bad)


def test_login():
    m = sasl.start("LOGIN", challenge="")
    assert m.first(None) == b"Username:"
    assert m.step(b"user") == b"Password:"
    c = m.step("pässword".encode())
    assert (c.username, c.password) == ("user", "pässword")
    m = sasl.start("LOGIN", challenge="")
    assert m.first(b"user") == b"Password:"


def test_cram_md5():
    m = sasl.start("CRAM-MD5", challenge="<123.456@mx.test>")
    assert m.first(None) == b"<123.456@mx.test>"
    digest = hmac.new(b"secret", b"<123.456@mx.test>", hashlib.md5).hexdigest()
    c = m.step(b"joe " + digest.upper().encode())
    assert c.password is None and c.digest == digest and c.challenge == "<123.456@mx.test>"
    assert c.check_cram("secret") and not c.check_cram("wrong")
    assert sasl.cram_md5_digest("secret", "<123.456@mx.test>") == digest
    with pytest.raises(sasl.SaslError):
        sasl.start("CRAM-MD5", challenge="x").first(b"initial")
    for bad in (b"joe", b"joe abc", b" " + digest.encode(), b"joe " + b"g" * 32):
        with pytest.raises(sasl.SaslError):
            sasl.start("CRAM-MD5", challenge="x").step(bad)


def test_unknown():
    with pytest.raises(KeyError):
        sasl.start("GSSAPI", challenge="")
    assert sasl.MECHANISMS == ("PLAIN", "LOGIN", "CRAM-MD5")
