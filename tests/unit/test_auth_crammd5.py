"""CRAM-MD5 from a stored HMAC-MD5 context equals real HMAC-MD5 (RFC 2195 / RFC 2104)."""
from __future__ import annotations

import hmac

from hypothesis import given, settings
from hypothesis import strategies as st

from mailward.auth import crammd5


def test_rfc2195_example():
    # RFC 2195 section 2: user tim, password tanstaaftanstaaf.
    ctx = crammd5.context("tanstaaftanstaaf")
    challenge = b"<1896.697170952@postoffice.reston.mci.net>"
    assert crammd5.hmac_from_context(ctx, challenge) == "b913a602c7eda7a495b4e6e7334d3890"
    assert crammd5.verify(ctx, challenge, "b913a602c7eda7a495b4e6e7334d3890")
    assert crammd5.verify(ctx, challenge, "B913A602C7EDA7A495B4E6E7334D3890")
    assert not crammd5.verify(ctx, challenge, "b913a602c7eda7a495b4e6e7334d3891")
    assert not crammd5.verify(ctx, challenge, "")


@settings(max_examples=150, deadline=None)
@given(st.text(min_size=1, max_size=100), st.binary(max_size=300))
def test_matches_hmac_md5(password, message):
    expected = hmac.new(password.encode(), message, "md5").hexdigest()
    assert crammd5.hmac_from_context(crammd5.context(password), message) == expected


def test_encode_decode_and_no_password_inside():
    ctx = crammd5.context("correct horse")
    text = crammd5.encode(ctx)
    assert text.startswith("{HMAC-MD5}") and len(text) == len("{HMAC-MD5}") + 64
    assert crammd5.decode(text) == ctx
    assert b"correct horse" not in ctx
    for bad in ("{HMAC-MD5}abcd", "abcd" * 16, "{HMAC-MD5}" + "zz" * 32):
        try:
            crammd5.decode(bad)
        except ValueError:
            continue
        raise AssertionError(bad)
