"""escape.py: every value survives a trip through a log line exactly, and nothing in a value
can make a line break or fool a reader."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailward.maillog import escape as esc

ANY = st.text(st.characters(codec=None, exclude_categories=()), max_size=80)
BREAKERS = "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


@settings(max_examples=800, deadline=None)
@given(ANY)
def test_escape_round_trips_and_never_leaves_a_line_breaker(value):
    text = esc.escape(value)
    assert esc.unescape(text) == value
    assert not any(ch in text for ch in BREAKERS)
    assert len(text.splitlines()) <= 1
    assert "\x00" not in text and "\x7f" not in text
    text.encode("utf-8")                             # no lone surrogate left


@settings(max_examples=1000, deadline=None)
@given(ANY, st.sampled_from([" using AUTH mechanism: ", " SG ", " - ", ") address ", " for ", "> ", " MX - "]))
def test_guard_makes_the_first_terminator_the_real_one(value, terminator):
    text = esc.guard(esc.escape(value), terminator)
    joined = text + terminator + "rest"
    assert joined.find(terminator) == len(text)
    assert esc.unescape(text) == value


@settings(max_examples=500, deadline=None)
@given(ANY)
def test_quote_round_trips(value):
    q = esc.quote(value)
    assert q[0] == q[-1] and q[0] in "'\""
    assert esc.unquote(q) == value


def test_appliance_escapes_and_python_repr_quoting():
    assert esc.escape("a\r\n\tb") == "a\\r\\n\\tb"
    assert esc.escape("back\\slash") == "back\\\\slash"
    assert esc.escape("nul\x00del\x7f") == "nul\\x00del\\x7f"
    assert esc.escape("bad\udcff") == "bad\\xff"
    assert esc.unescape("bad\\xff") == "bad\udcff"
    assert esc.quote("Hello") == "'Hello'"
    assert esc.quote("Lands'End") == '"Lands\'End"'
    assert esc.quote("both ' and \"") == "'both \\' and \"'"
    assert esc.escape("é日本") == "é日本"               # printable text is left alone


def test_unknown_escapes_in_real_text_are_kept():
    assert esc.unescape("C:\\dir\\q") == "C:\\dir\\q"
    assert esc.unescape("end\\") == "end\\"


def test_long_values_are_cut_with_a_marker():
    text = esc.escape("x" * 5000, 100)
    assert text == "x" * 100 + "...[cut 4900]"
    assert esc.escape("x" * 100, 100) == "x" * 100


def test_trailing_spaces_at_end_of_line_are_kept_visible():
    assert esc.guard_tail("a  ") == "a\\x20\\x20"
    assert esc.unescape("a\\x20\\x20") == "a  "
