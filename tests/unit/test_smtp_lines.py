"""Framing: command lines end only at CRLF; DATA ends only at CRLF.CRLF."""
from __future__ import annotations

from mailward.smtp.lines import DataReader, LineReader


def lines(data: bytes, limit=512):
    r = LineReader()
    r.feed(data)
    out = []
    while (line := r.next_line(limit)) is not None:
        out.append("TOO_LONG" if line is LineReader.TOO_LONG else line)
    return out, r


def test_crlf_only():
    out, r = lines(b"A\r\nB\nC\rD\r\nE")
    assert out == [b"A", b"B\nC\rD"] and r.buffered == 1


def test_too_long_once_and_discarded():
    out, r = lines(b"x" * 2000 + b"\r\nOK\r\n")
    assert out == ["TOO_LONG", b"OK"]


def test_too_long_split_crlf():
    r = LineReader()
    r.feed(b"x" * 600 + b"\r")
    assert r.next_line(512) is None and r.buffered == 0
    r.feed(b"\nNEXT\r\n")
    assert r.next_line(512) is LineReader.TOO_LONG
    assert r.next_line(512) == b"NEXT"


def test_limit_boundary():
    out, _ = lines(b"x" * 510 + b"\r\n" + b"y" * 511 + b"\r\n")
    assert out == [b"x" * 510, "TOO_LONG"]


def test_put_back_and_take_rest():
    r = LineReader()
    r.feed(b"A\r\nrest")
    assert r.next_line(512) == b"A"
    assert r.take_rest() == b"rest" and r.buffered == 0
    r.put_back(b"B\r\n")
    assert r.next_line(512) == b"B"


def feed_all(reader: DataReader, pieces):
    content = b""
    for i, p in enumerate(pieces):
        prog = reader.feed(p)
        content += prog.chunk
        if prog.done:
            return content, True, prog.rest + b"".join(pieces[i + 1:])
    return content, False, b""


def test_end_marker_and_rest():
    r = DataReader(max_size=1000)
    assert feed_all(r, [b"a\r\n..b\r\n.\r\nQUIT\r\n"]) == (b"a\r\n.b\r\n", True, b"QUIT\r\n")


def test_end_marker_split_everywhere():
    wire = b"a\r\n..b\r\n.\r\nX"
    for i in range(1, len(wire)):
        r = DataReader(max_size=1000)
        assert feed_all(r, [wire[:i], wire[i:]]) == (b"a\r\n.b\r\n", True, b"X"), i


def test_fake_ends_are_content():
    for fake in (b"\n.\r\n", b"\r.\n", b"\n.\n", b"\r\n.\n", b"\r\n.\r"):
        r = DataReader(max_size=1000, normalize=True)
        content, done, _ = feed_all(r, [b"a" + fake + b"b\r\n"])
        assert not done and r.bare_newline, fake


def test_bare_newline_detection_and_normalize():
    r = DataReader(max_size=1000)
    assert feed_all(r, [b"clean\r\n"])[0] == b"clean\r\n" and not r.bare_newline
    r = DataReader(max_size=1000, normalize=True)
    assert feed_all(r, [b"a\nb\r\rc\r\n.\r\n"])[0] == b"a\r\nb\r\n\r\nc\r\n"


def test_size_limit_counts_past_the_limit():
    r = DataReader(max_size=10)
    content, done, _ = feed_all(r, [b"0123456789\r\n", b"more\r\n", b".\r\n"])
    assert done and r.too_big and content == b"" and r.size == 18


def test_long_data_line_not_buffered():
    r = DataReader(max_size=10**9, line_limit=1000)
    for _ in range(100):
        r.feed(b"z" * 5000)
        assert len(r._carry) < 1000
    content, done, _ = feed_all(r, [b"\r\n.\r\n"])
    assert done and r.too_long


def test_verdict_independent_of_reads_for_long_lines():
    wire = b"ok\r\n" + b"\n" + b"y" * 1500 + b"\rz\r\n" + b"x" * 600 + b"\r\n.\r\n"
    verdicts = set()
    for step in (len(wire), 1, 7, 999, 1000, 1001):
        r = DataReader(max_size=2000)
        for i in range(0, len(wire), step):
            if r.feed(wire[i:i + step]).done:
                break
        verdicts.add((r.size, r.too_big, r.too_long, r.bare_newline))
    assert verdicts == {(len(wire) - 3, True, True, True)}
