"""The Received: header the gateway prepends: client text cannot break out of it."""
import email.utils

from hypothesis import given
from hypothesis import strategies as st

from mailward.gateway.headers import _clean, received_header


def test_plain_text_is_kept_and_cut_to_the_limit():
    assert _clean("client.example") == "client.example"
    assert _clean("x" * 300) == "x" * 200
    assert _clean("y" * 400, 320) == "y" * 320


def test_controls_parentheses_and_backslashes_become_question_marks():
    assert _clean("evil\r\nX-Injected: 1") == "evil??X-Injected: 1"
    assert _clean("a(b)c\\d\te\x00") == "a?b?c?d?e?"
    assert _clean("caf\u00e9") == "caf\u00e9"         # printable non-ASCII stays


@given(st.text(max_size=60))
def test_any_client_text_stays_inside_its_comment(helo):
    out = _clean(helo)
    assert out.isprintable()
    assert not set(out) & set("()\\\r\n")
    assert len(out) <= 200


def test_header_shape_and_date_of_the_given_time():
    now = 1_700_000_000.7
    got = received_header(helo="c(l)ient\r\n", rdns=None, ip="192.0.2.1", hostname="gw.example", mid=7,
                          esmtp=True, tls=None, auth_user="alice", rcpt="bob@example.com", now=now)
    assert got.decode() == (
        "Received: from c?l?ient?? (unknown [192.0.2.1])\r\n"
        "\t(Authenticated sender: alice)\r\n"
        "\tby gw.example (mailward) with ESMTPA id 7\r\n"
        f"\tfor <bob@example.com>; {email.utils.formatdate(int(now), localtime=True)}\r\n")
    later = received_header(helo="c", rdns="r.example", ip="192.0.2.1", hostname="gw.example", mid=8,
                            esmtp=False, tls=None, auth_user=None, rcpt=None, now=now + 5)
    assert later.decode().endswith(f"\t{email.utils.formatdate(int(now) + 5, localtime=True)}\r\n")
