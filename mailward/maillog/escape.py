"""Escaping of field values in mail_logs lines: the one place that guards against log forgery.

Owns: turning an arbitrary Python string (a user name, a HELO, a Subject, a remote reply...)
into text that cannot create, split or alter a log line, and turning that text back into the
exact original. It knows nothing of templates, events, files or time.

The escapes (a superset of what the appliance itself writes, which is ``\\r \\n \\t``):

==============  ==========================================================================
``\\\\``        a backslash
``\\r \\n \\t`` carriage return, line feed, tab (as the appliance writes them)
``\\xNN``       NN < 0x80: that C0 control / DEL / any character escaped to break a match
                NN >= 0x80: the raw byte NN of undecodable input (a ``surrogateescape``
                lone surrogate U+DC80..U+DCFF), so invalid UTF-8 survives exactly
``\\uNNNN``     C1 controls, U+2028/U+2029 and other lone surrogates: characters that some
                readers (``str.splitlines``) treat as line breaks
``\\UNNNNNNNN`` a character beyond the BMP escaped to break a match
``\\' \\"``     the quote character inside a quoted field, as Python's repr does
==============  ==========================================================================

A backslash followed by anything else is kept literally on parse, so real appliance text
with stray backslashes still reads.

Values that sit between two pieces of literal template text are made unambiguous by
``guard()``: every place where the text that follows the field in the template (its
*terminator*) would be found too early gets its first character written as ``\\xNN``; a
parser that takes the *first* terminator then always finds the real one.
"""
from __future__ import annotations

import re

#: Default longest field value (in characters) written to a line; longer values are cut.
DEFAULT_MAX_FIELD = 4096

#: What a cut value ends with, followed by the count of characters dropped and "]".
CUT_MARKER = "...[cut "

_SIMPLE = {"\\": "\\\\", "\r": "\\r", "\n": "\\n", "\t": "\\t"}


def _build_table() -> dict[int, str]:
    table: dict[int, str] = {}
    for code in range(0x20):
        table[code] = "\\x%02x" % code
    table[0x7F] = "\\x7f"
    for code in range(0x80, 0xA0):
        table[code] = "\\u%04x" % code
    table[0x2028] = "\\u2028"
    table[0x2029] = "\\u2029"
    for code in range(0xD800, 0xE000):
        if 0xDC80 <= code <= 0xDCFF:
            table[code] = "\\x%02x" % (code - 0xDC00)
        else:
            table[code] = "\\u%04x" % code
    for ch, esc in _SIMPLE.items():
        table[ord(ch)] = esc
    return table


_TABLE = _build_table()
# Fast check: does the value need any translation at all? (Most values do not.)
_NEEDS = re.compile("[\x00-\x1f\x7f-\x9f\\\\\u2028\u2029\ud800-\udfff]")
# ``needs_translation(value) is None``: ``escape`` (without a limit) returns ``value`` itself.
needs_translation = _NEEDS.search
_UNESC = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U0[0-9a-fA-F]{7}|.)", re.DOTALL)
_SINGLE = {"\\": "\\", "r": "\r", "n": "\n", "t": "\t", "'": "'", '"': '"'}


def cut(value: str, limit: int | None) -> str:
    """Cut ``value`` to ``limit`` characters, ending it with a visible marker."""
    if limit is None or len(value) <= limit:
        return value
    return value[:limit] + CUT_MARKER + str(len(value) - limit) + "]"


def escape(value: str, limit: int | None = None) -> str:
    """Escape one field value so that it stays inside its field on one line."""
    if limit is not None and len(value) > limit:
        value = cut(value, limit)
    if _NEEDS.search(value) is None:
        return value
    return value.translate(_TABLE)


def escape_char(ch: str) -> str:
    """The ``\\xNN``/``\\uNNNN`` form of one character (used to break a false match)."""
    code = ord(ch)
    if code < 0x80:
        return "\\x%02x" % code
    if 0xDC80 <= code <= 0xDCFF:
        return "\\x%02x" % (code - 0xDC00)
    if code > 0xFFFF:
        return "\\U%08x" % code
    return "\\u%04x" % code


def _unesc(m: re.Match[str]) -> str:
    s = m.group(1)
    c = s[0]
    if len(s) == 1:
        got = _SINGLE.get(c)
        # An unknown escape is kept as written: real logs have stray backslashes.
        return got if got is not None else "\\" + s
    code = int(s[1:], 16)
    if code > 0x10FFFF:
        return "\\" + s
    if c == "x" and code >= 0x80:
        return chr(0xDC00 + code)
    return chr(code)


def unescape(text: str) -> str:
    """Inverse of ``escape`` (and of ``guard``/``quote``): gives the original value back."""
    if "\\" not in text:
        return text
    return _UNESC.sub(_unesc, text)


def guard(escaped: str, terminator: str) -> str:
    """Make ``escaped + terminator`` contain ``terminator`` only at its end.

    Each early occurrence gets its first character rewritten as ``\\xNN``. The rewritten
    character starts with a backslash, which no template literal contains, so no new
    occurrence can start at or before it and the loop ends.
    """
    if not terminator:
        return escaped
    joined = escaped + terminator
    pos = joined.find(terminator)
    limit = len(escaped)
    while pos < limit:
        escaped = escaped[:pos] + escape_char(escaped[pos]) + escaped[pos + 1:]
        limit = len(escaped)
        pos = (escaped + terminator).find(terminator, pos + 1)
    return escaped


def guard_tail(escaped: str) -> str:
    """A field that ends the line: trailing spaces are written ``\\x20`` because parsers
    strip trailing spaces (real appliance lines carry stray ones)."""
    if not escaped or escaped[-1] != " ":
        return escaped
    stripped = escaped.rstrip(" ")
    return stripped + "\\x20" * (len(escaped) - len(stripped))


def choose_quote(value: str) -> str:
    """Python repr's choice: ``'`` unless the value has ``'`` and no ``"``."""
    if "'" in value and '"' not in value:
        return '"'
    return "'"


def quote(value: str, q: str | None = None, limit: int | None = None) -> str:
    """Quote like Python's repr (``'x'``, ``"it's"``) with our escapes inside."""
    if q is None:
        q = choose_quote(value)
    body = escape(value, limit)
    if q in body:
        body = body.replace(q, "\\" + q)
    return q + body + q


# A quoted string as written by ``quote`` or by Python's repr.
QUOTED_RE = r"""(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""


def unquote(text: str) -> str:
    """Inverse of ``quote`` for one quoted token (quotes included)."""
    return unescape(text[1:-1])
