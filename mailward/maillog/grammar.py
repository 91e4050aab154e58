"""One grammar for mail_logs lines: the template table drives both formatting and parsing.

Owns: compiling the shapes of ``templates.py`` into (a) formatters that write an event as
the appliance does, escaping every field, and (b) precompiled regexes, dispatched on the first
words of a body, that read any line (ours or a real appliance's) back into a typed event.
Also the line framings: file (ctime) and RFC 3164 syslog. It knows nothing of files,
sockets, rotation or correlation.

``parse_line`` never raises. Its fast path (a file line whose ``Www Mmm dd HH:MM:SS YYYY Info: ``
header was seen before): one dict lookup for the header's time, one dict lookup on the body's
first and third words, then per candidate template one generated parser (its regex, then the
event built positionally through the slot setters); the record is filled from one dict.
Figures: ``bench/logs.py`` and the log part of ``bench/README.md``.
"""
from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass
from datetime import datetime

from . import escape as esc
from . import events as ev
from .templates import CATCH_ALLS, KNOWN_SYSTEM_PREFIXES, SHAPES, Shape
from .timefmt import format_ctime, format_syslog_time, make_time

LEVELS = ("Info", "Warning", "Critical", "Debug", "Trace", "Alert")


@dataclass(frozen=True)
class LogRecord:
    """One line as read. ``event`` is None only when the body could not be typed at all.

    Deliberately without ``slots``: one record is built per line read, and a frozen slots
    dataclass needs one descriptor call per field (~550 ns for these nine, a sixth of the
    reader's time), while an instance with a ``__dict__`` is filled by handing it one dict
    (see ``_record``, ~2.5 times cheaper). Still frozen, hashable and ``replace``-able.
    """

    timestamp: datetime | None      # naive, as written (syslog: year supplied, see has_year)
    host: str | None
    subscription: str | None        # the syslog tag (log subscription name)
    level: str | None
    event: ev.Event | None
    raw: str
    unparsed: str | None = None     # "no-header" | "truncated" | "unknown-body" | "bad-time"
    pri: int | None = None
    has_year: bool = True           # False for syslog lines: the year was assumed


_new = object.__new__
_set_dict = LogRecord.__dict__["__dict__"].__set__


def _record(ts, host, tag, level, event, raw, unparsed, pri, has_year):
    """``LogRecord(...)`` without the frozen ``__init__`` (the same value, built faster)."""
    r = _new(LogRecord)
    _set_dict(r, {"timestamp": ts, "host": host, "subscription": tag, "level": level, "event": event,
                  "raw": raw, "unparsed": unparsed, "pri": pri, "has_year": has_year})
    return r


# ---------------------------------------------------------------------------------------
# Slot kinds: (regex when followed by literal text, regex at end of line, format, parse)
# ---------------------------------------------------------------------------------------

_Q = esc.QUOTED_RE
_RESP_RE = r"(\(%s, \[(?:%s(?:, %s)*)?\]\))" % (_Q, _Q, _Q)
_RIDS_RE = r"\[((?:\d+(?:, \d+)*)?)\]"
_QUOTED_FIND = re.compile(_Q)


def _fmt_resp(r: ev.SmtpResponse, limit: int | None) -> str:
    lines = ", ".join(esc.quote(x, None, limit) for x in r.lines)
    return "(%s, [%s])" % (esc.quote(r.code, None, limit), lines)


def _parse_resp(text: str) -> ev.SmtpResponse:
    parts = [esc.unquote(m.group(0)) for m in _QUOTED_FIND.finditer(text)]
    return ev.SmtpResponse(parts[0], tuple(parts[1:]))


def _fmt_rids(rids: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(int(r)) for r in rids) + "]"


def _parse_rids(text: str) -> tuple[int, ...]:
    if not text:
        return ()
    if "," not in text:
        return (int(text),)
    return tuple(map(int, text.split(", ")))


def _fmt_qs(value: str, style: str, limit: int | None) -> str:
    """Quoted in the style of the event's ``quote`` field (see escape.choose_quote)."""
    if style == '"':
        body = esc.escape(value, limit).replace('"', '\\"')
        if "'" in value and '"' not in value:
            # Mark "always double" so it is not read back as repr's automatic choice.
            body = body.replace("'", "\\'")
        return '"' + body + '"'
    return esc.quote(value, None, limit)


# A \' that is an escape (after an even run of backslashes), not an escaped backslash.
_ESCAPED_APOS = re.compile(r"(?<!\\)(?:\\\\)*\\'")


def _parse_qs(text: str) -> tuple[str, str]:
    value = esc.unquote(text)
    if text[0] == "'":
        return value, "'"
    if _ESCAPED_APOS.search(text) is None and "'" in value and '"' not in value:
        return value, "'"
    return value, '"'


@dataclass(frozen=True, slots=True)
class _Slot:
    name: str
    kind: str
    arg: str | None
    terminator: str         # literal text that follows ("" at end of line)
    tail: bool              # last thing on the line
    guards: tuple[str, ...]


def _slot_regex(slot: _Slot, at_end: bool) -> str:
    k = slot.kind
    if k == "int":
        return r"(\d+)"
    if k == "sint":
        return r"(-?\d+)"
    if k == "rids":
        return _RIDS_RE
    if k == "resp":
        return _RESP_RE
    if k == "yn":
        return r"(yes|no)"
    if k == "sf":
        return r"(succeeded|failed)"
    if k == "enum":
        return "(" + "|".join(re.escape(x) for x in slot.arg.split("|")) + ")"
    if k in ("q", "qs"):
        return r"('.*'|\".*\")" if at_end else "(" + _Q + ")"
    if k == "list":
        return r"(\[.*\])"
    # free text ("text", "uq", "rdns")
    return r"(.*)" if at_end else r"(.*?)"


def _has_none_sibling(shape: Shape, name: str) -> bool:
    """Is there a shape of the same class that writes this field as absent (None)?

    Then an empty value cannot be told from an absent one once trailing spaces are
    stripped: the line reads back as None (emitters should pass None, not "").
    """
    return any(s.cls is shape.cls and name in s.fixed and s.fixed[name] is None for s in SHAPES)


def _slot_setters(cls: type) -> list | None:
    """The slot descriptors' setters of a frozen slots dataclass, in field order.

    Filling slots through them builds the same frozen value as ``cls(...)`` about three
    times faster (a frozen ``__init__`` goes through ``object.__setattr__`` per field); the
    reader builds one event and one record per line, so this is most of its time. None when
    the class has no plain slots (then the normal constructor is used) or a __post_init__.
    """
    if hasattr(cls, "__post_init__"):
        return None
    setters = []
    for f in dataclasses.fields(cls):
        d = getattr(cls, f.name, None)
        if d is None or type(d).__name__ != "member_descriptor":
            return None
        setters.append(d.__set__)
    return setters


class _Compiled:
    __slots__ = ("shape", "cls", "regex", "slots", "pieces", "fixed", "names", "convs", "catch_all",
                 "parse", "match", "eligible", "format")

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self.cls = shape.cls
        self.fixed = shape.fixed
        self.catch_all = shape.cls in CATCH_ALLS
        parts = re.split(r"\{(\w+)(?::([^}]*))?\}", shape.text)
        # parts: lit, name, spec, lit, name, spec, ..., lit
        lits = parts[0::3]
        names = parts[1::3]
        specs = parts[2::3]
        slots: list[_Slot] = []
        for i, (name, spec) in enumerate(zip(names, specs)):
            spec = spec or "text"
            kind, _, arg = spec.partition(":")
            term = lits[i + 1]
            tail = i == len(names) - 1 and term == ""
            extra = tuple(shape.guards.get(name, ()))
            if kind in ("text", "uq", "rdns") and term:
                # guard() rewrites the first character of a false terminator as \xNN; that
                # only stays unambiguous if no terminator starts with an escape's letters.
                assert term[0] in " )>", (shape.text, name)
                assert term != " " or extra, ("a lone-space terminator needs guards", shape.text, name)
            slots.append(_Slot(name, kind, arg or None, term, tail, extra))
        self.slots = tuple(slots)
        self.names = tuple(names)
        # A field the shape does not write reads back as its default (None when it has
        # none), and the shape only fits events that hold exactly that value.
        fixed = dict(shape.fixed)
        implied = {"quote"} if any(sl.kind == "qs" for sl in slots) else set()
        for f in dataclasses.fields(shape.cls):
            if f.name in names or f.name in fixed or f.name in implied:
                continue
            fixed[f.name] = None if f.default is dataclasses.MISSING else f.default
        self.fixed = fixed
        self.pieces = tuple(lits)
        rx = ["^", re.escape(lits[0])]
        optional = set()        # slots whose group may be None (an empty last field)
        for i, slot in enumerate(slots):
            last_lit = lits[i + 1]
            at_end = i == len(slots) - 1 and last_lit == ""
            if at_end and slot.kind in ("text", "uq", "rdns") and lits[i].endswith(" ") \
                    and not _has_none_sibling(shape, slot.name):
                # Readers strip trailing spaces, so an empty last field loses its separator.
                rx.pop()
                rx.append(re.escape(lits[i][:-1]))
                rx.append("(?: " + _slot_regex(slot, True) + ")?")
                optional.add(i)
            else:
                rx.append(_slot_regex(slot, at_end))
            rx.append(re.escape(last_lit))
        rx.append("$")
        self.regex = re.compile("".join(rx), re.DOTALL)
        self.match = self.regex.match
        self.convs = tuple(_PARSERS[s.kind] for s in slots)
        self.parse = self._compile_parser(optional)
        self.eligible = self._compile_eligible()
        self.format = self._compile_formatter()

    def _compile_parser(self, optional: set[int]):
        """A function ``body -> event | None`` generated for this shape: match, then build the
        event positionally with no loop, no kwargs and no per-field calls where an inline
        expression does (ints, yes/no, text without a backslash). Reading logs spends most of
        its time here, so it is worth the generated code."""
        names = self.names
        env: dict = {"cls": self.cls, "new": object.__new__, "match": self.match, "unesc": esc.unescape}
        pre = []        # statements run before the event is built (a qs slot yields two fields)
        args = []
        qs_var = None
        for n, f in enumerate(dataclasses.fields(self.cls)):
            if f.name in names:
                i = names.index(f.name)
                conv = self.convs[i]
                if conv is _p_int:
                    args.append("int(g%d)" % i)
                elif conv is _p_text and i in optional:
                    args.append('("" if g%d is None else (unesc(g%d) if "\\\\" in g%d else g%d))' % (i, i, i, i))
                elif conv is _p_text:
                    # Most values hold no backslash: no call at all then.
                    args.append('(unesc(g%d) if "\\\\" in g%d else g%d)' % (i, i, i))
                elif conv is _p_same:
                    args.append("g%d" % i)
                elif conv is _p_yn:
                    args.append('g%d == "yes"' % i)
                elif conv is _p_sf:
                    args.append('g%d == "succeeded"' % i)
                elif conv is _parse_qs:
                    env["c%d" % n] = conv
                    qs_var = "q%d" % n
                    pre.append("    %s = c%d(g%d)" % (qs_var, n, i))
                    args.append("%s[0]" % qs_var)
                else:
                    env["c%d" % n] = conv
                    args.append("c%d(g%d)" % (n, i))
            elif f.name == "quote" and any(sl.kind == "qs" for sl in self.slots):
                # implied by the qs slot (its quoting style)
                args.append(None)
            else:
                env["k%d" % n] = self.fixed.get(f.name)
                args.append("k%d" % n)
        args = [("%s[1]" % qs_var) if a is None else a for a in args]
        head = ["def parse(body):", "    m = match(body)", "    if m is None:", "        return None"]
        if names:
            # unpacked into locals: cheaper than indexing the tuple once per field
            head.append("    %s, = m.groups()" % ", ".join("g%d" % i for i in range(len(names))))
        head += pre
        setters = _slot_setters(self.cls)
        if setters is None:
            lines = head + ["    return cls(%s)" % ", ".join(args)]
        else:
            lines = head + ["    o = new(cls)"]
            for n, (setter, arg) in enumerate(zip(setters, args)):
                env["s%d" % n] = setter
                lines.append("    s%d(o, %s)" % (n, arg))
            lines.append("    return o")
        exec("\n".join(lines) + "\n", env)
        return env["parse"]

    # --- formatting --------------------------------------------------------------------

    def _compile_eligible(self):
        """A function ``event -> bool``: does this shape write ``event`` (the values it fixes,
        no None where it has no word for one, a quote or enum value it can spell)?"""
        env: dict = {}
        lines = ["def eligible(e):"]
        for n, (k, v) in enumerate(self.fixed.items()):
            env["f%d" % n] = v
            lines.append("    if e.%s != f%d: return False" % (k, n))
        for name in self.names:
            if not self._none_ok(name):
                lines.append("    if e.%s is None: return False" % name)
        for n, slot in enumerate(self.slots):
            if slot.kind == "qs":
                lines.append("    if e.quote not in (\"'\", '\"'): return False")
            elif slot.kind == "enum":
                env["v%d" % n] = frozenset(slot.arg.split("|"))
                lines.append("    if e.%s not in v%d: return False" % (slot.name, n))
        lines.append("    return True")
        exec("\n".join(lines) + "\n", env)
        return env["eligible"]

    def _none_ok(self, name: str) -> bool:
        for s in self.slots:
            if s.name == name:
                return s.kind == "rdns"
        return False

    def _compile_formatter(self):
        """A function ``(event, limit) -> body`` generated for this shape: the literals and
        each slot's text joined in one expression, with no loop and no dispatch on the slot
        kind at run time. Every log line the gateway writes passes here (a message writes
        a dozen), so this is worth the generated code, as parsing is."""
        env: dict = {"join": "".join, "fmt_slot": _format_slot, "needs": esc.needs_translation}
        fast = []       # (slot number, value expression, end test) of the text slots tested inline
        parts = []
        for n, lit in enumerate(self.pieces):
            if lit:
                env["p%d" % n] = lit
                parts.append("p%d" % n)
            if n == len(self.slots):
                break
            slot = self.slots[n]
            value = "e." + slot.name
            k = slot.kind
            if k in ("int", "sint"):
                parts.append("str(int(%s))" % value)
            elif k in ("enum", "list"):
                parts.append(value)
            elif k == "yn":
                parts.append('("yes" if %s else "no")' % value)
            elif k == "sf":
                parts.append('("succeeded" if %s else "failed")' % value)
            elif k == "text":
                env["t%d" % n] = _slot_text_formatter(slot)
                clean = _clean_text_test(slot, "v%d" % n, "T%d" % n)
                if clean is None:
                    parts.append("t%d(%s, limit)" % (n, value))
                else:
                    env["T%d" % n] = slot.terminator
                    fast.append((n, value, clean))
                    parts.append("v%d" % n)
            else:               # the rarer kinds keep the general code
                env["s%d" % n] = slot
                parts.append("fmt_slot(s%d, e, limit)" % n)
        pre = []
        if fast:
            # Most values need nothing: one search over all of them together (no slot's value
            # holds a character to translate, and none is over the limit if their sum is not)
            # and each slot's own end test, inline; the escaping calls run only when a value
            # needs them, and what they return for a clean value is the value.
            names = ["v%d" % n for n, _, _ in fast]
            pre += ["    %s = %s" % (v, value) for v, (_, value, _) in zip(names, fast)]
            pre.append("    a = %s" % " + ".join(names) if len(names) > 1 else "    a = %s" % names[0])
            tests = ["needs(a) is None", "(limit is None or len(a) <= limit)"]
            tests += [clean for _, _, clean in fast if clean]
            pre.append("    if not (%s):" % " and ".join(tests))
            pre += ["        v%d = t%d(v%d, limit)" % (n, n, n) for n, _, _ in fast]
        body = "join((%s,))" % ", ".join(parts) if parts else '""'
        exec("def format(e, limit):\n%s    return %s\n" % ("".join(x + "\n" for x in pre), body), env)
        return env["format"]


def _clean_text_test(slot: _Slot, var: str, term_var: str) -> str | None:
    """The slot's end test: with nothing to translate and nothing over the limit (tested for
    all inline slots at once), ``_slot_text_formatter(slot)`` returns a value unchanged when
    this holds: no trailing space at the end of the line, no early occurrence of the
    terminator before a literal ("" when there is nothing to test). None for a slot with
    guards of its own: those always take the call."""
    if slot.guards:
        return None
    if slot.tail:
        return '%s[-1:] != " "' % var
    if slot.terminator and slot.terminator != " ":
        return "(%s + %s).find(%s) == len(%s)" % (var, term_var, term_var, var)
    return ""


def _slot_text_formatter(slot: _Slot, *, guards_at_tail: bool = True):
    """``(value, limit) -> text`` for a free-text slot, with its terminator and guards decided
    once instead of per line: the value escaped, then kept from ending early (``guard_tail``
    at the end of the line, else ``guard`` against the literal that follows it, except a lone
    space before a structured slot, where the template lists the texts that would start that
    slot instead), then the slot's own guards. ``guards_at_tail=False``: a last slot gets no
    guards of its own (the rdns and uq kinds add their own rule, in ``_format_slot``)."""
    term = slot.terminator
    guards = slot.guards if guards_at_tail or not slot.tail else ()
    escape = esc.escape
    if slot.tail:
        guard_tail = esc.guard_tail
        if guards:
            return lambda value, limit: _apply_guards(guard_tail(escape(value, limit)), guards)
        return lambda value, limit: guard_tail(escape(value, limit))
    if term and term != " ":
        guard = esc.guard
        if guards:
            return lambda value, limit: _apply_guards(guard(escape(value, limit), term), guards)
        return lambda value, limit: guard(escape(value, limit), term)
    if guards:
        return lambda value, limit: _apply_guards(escape(value, limit), guards)
    return escape


def _format_text(value: str, slot: _Slot, limit: int | None) -> str:
    return _slot_text_formatter(slot, guards_at_tail=False)(value, limit)


def _apply_guards(text: str, guards: tuple[str, ...]) -> str:
    for g in guards:
        if g[0] == "^":
            if text.startswith(g[1:]):
                text = esc.escape_char(text[0]) + text[1:]
        else:
            text = esc.guard(text, g)
    return text


def _format_slot(slot: _Slot, event: ev.Event, limit: int | None) -> str:
    """The text of one of the rarer slot kinds; the generated formatters (``_Compiled.format``)
    write ints, yes/no, enums, lists and free text themselves."""
    value = getattr(event, slot.name)
    k = slot.kind
    if k == "rids":
        return _fmt_rids(value)
    if k == "resp":
        return _fmt_resp(value, limit)
    if k == "q":
        return esc.quote(value, None, limit)
    if k == "qs":
        return _fmt_qs(value, getattr(event, "quote"), limit)
    if k == "rdns":
        if value is None:
            return "unknown"
        text = _format_text(value, slot, limit)
        if text == "unknown":
            text = esc.escape_char("u") + text[1:]
        return text
    if k == "uq":
        text = _format_text(value, slot, limit)
        if text[:1] in ("'", '"'):
            text = esc.escape_char(text[0]) + text[1:]
        return text
    raise ValueError(k)


def _p_int(s: str) -> int:
    return int(s)


def _p_yn(s: str) -> bool:
    return s == "yes"


def _p_sf(s: str) -> bool:
    return s == "succeeded"


def _p_same(s: str) -> str:
    return s


def _p_text(s: str | None) -> str:
    if s is None:
        return ""
    return esc.unescape(s)


def _p_rdns(s: str | None) -> str | None:
    if s == "unknown":
        return None
    return _p_text(s)


_PARSERS = {
    "int": _p_int, "sint": _p_int, "rids": _parse_rids, "resp": _parse_resp, "yn": _p_yn,
    "sf": _p_sf, "enum": _p_same, "q": esc.unquote, "qs": _parse_qs, "list": _p_same,
    "text": _p_text, "uq": _p_text, "rdns": _p_rdns,
}


# ---------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------

_BY_CLASS: dict[type, list[_Compiled]] = {}
_BY_KEY: dict[tuple, list[_Compiled]] = {}
_BY_KEY1: dict[str, tuple] = {}         # first word -> parsers (catch-alls last)
_BY_KEY2: dict[tuple, tuple] = {}       # (first, third word) -> its parsers, then _BY_KEY1's


def _key_of(text: str) -> tuple:
    # The third word is a safe key only when the second cannot hold spaces (a literal
    # or a number); otherwise a value with spaces would shift the words.
    words = text.split(" ", 3)
    w0 = words[0]
    if len(words) > 2 and "{" not in words[2] and "{" not in w0 and \
            ("{" not in words[1] or re.fullmatch(r"\{\w+:int\}", words[1])):
        return (w0, words[2])
    return (w0,)


def _build() -> None:
    for shape in SHAPES:
        comp = _Compiled(shape)
        if not shape.parse_only:
            _BY_CLASS.setdefault(shape.cls, []).append(comp)
        _BY_KEY.setdefault(_key_of(shape.text), []).append(comp)
    # Within a bucket, catch-alls go last (stable sort keeps the table's order otherwise).
    for key, comps in _BY_KEY.items():
        comps.sort(key=lambda c: c.catch_all)
    # The parse path: one lookup. A two-word bucket already holds the one-word bucket of its
    # first word after its own templates, so a miss there needs no second lookup.
    for key, comps in _BY_KEY.items():
        if len(key) == 1:
            _BY_KEY1[key[0]] = tuple(c.parse for c in comps)
    for key, comps in _BY_KEY.items():
        if len(key) == 2:
            _BY_KEY2[key] = tuple(c.parse for c in comps) + _BY_KEY1.get(key[0], ())


_build()


# ---------------------------------------------------------------------------------------
# Body parsing
# ---------------------------------------------------------------------------------------

_ID_SEARCH = {
    "MID": (re.compile(r"(?<![A-Za-z])MID:? (\d+)"), ev.MidNote, "mid"),
    "DCID": (re.compile(r"(?<![A-Za-z])DCID:? (\d+)"), ev.DcidNote, "dcid"),
    "ICID": (re.compile(r"(?<![A-Za-z])ICID:? (\d+)"), ev.IcidNote, "icid"),
}
_ID_ORDER = ("MID", "DCID", "ICID")


def _typed(body: str) -> ev.Event | None:
    """The event of the first template that reads ``body`` (trailing spaces stripped), or None."""
    words = body.split(" ", 3)
    try:
        parsers = _BY_KEY2.get((words[0], words[2]))
    except IndexError:
        parsers = None
    if parsers is None:
        parsers = _BY_KEY1.get(words[0], ())
    for parse in parsers:
        e = parse(body)
        if e is not None:
            return e
    return None


def parse_body(body: str) -> tuple[ev.Event, str | None]:
    """Type one body (the text after ``Level: ``). Returns (event, unparsed-kind or None)."""
    if body[-1:] == " ":
        body = body.rstrip(" ")
    e = _typed(body)
    if e is not None:
        return e, None
    return _fallback(body)


def _fallback(body: str) -> tuple[ev.Event, str | None]:
    # An id anywhere in the text wins over a known id-less prefix: a line that names a
    # message or a connection must reach that message's story. (Status counters such as
    # "CrtMID 5" do not count: the id word must not follow a letter.)
    for name in _ID_ORDER:
        rx, cls, field_name = _ID_SEARCH[name]
        m = rx.search(body)
        if m is not None:
            return cls(**{field_name: int(m.group(1)), "text": esc.unescape(body), "inline": True}), None
    text = esc.unescape(body)
    for prefix in KNOWN_SYSTEM_PREFIXES:
        if body.startswith(prefix):
            return ev.SystemNote(text), None
    return ev.SystemNote(text), "unknown-body"


# ---------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------

def _format_note(event: ev.Event, limit: int | None) -> str:
    inline = getattr(event, "inline", False)
    if isinstance(event, ev.SystemNote) or inline:
        return _format_free(event, esc.escape(event.text, limit))
    comp = _BY_CLASS[type(event)][0]
    body = comp.format(event, limit)
    got, _ = parse_body(body)
    if got == event:
        return body
    # A specific template would read this text: break its literal with one escape.
    text = _break_first(event.text, limit)
    return comp.pieces[0] + str(getattr(event, comp.names[0])) + comp.pieces[1] + esc.guard_tail(text)


def _break_first(value: str, limit: int | None) -> str:
    """Escape ``value`` with its first character always written as ``\\xNN``."""
    if not value:
        return ""
    return esc.escape_char(value[0]) + esc.escape(value[1:], limit)


def _format_free(event: ev.Event, text: str) -> str:
    """A whole-body note (SystemNote, inline notes): re-read it and, for SystemNote, break
    any id or template it would be read as."""
    text = esc.guard_tail(text)
    if not isinstance(event, ev.SystemNote):
        return text
    got, _ = parse_body(text)
    if got == event:
        return text
    text = esc.guard_tail(_break_first(event.text, None))
    for name in _ID_ORDER:
        text = re.sub(r"(?<![A-Za-z\\])(%s)(?=:? \d)" % name, lambda m: esc.escape_char(m.group(1)[0]) + m.group(1)[1:], text)
    return text


def format_body(event: ev.Event, *, max_field: int | None = esc.DEFAULT_MAX_FIELD) -> str:
    """The text after ``<Level>: `` exactly as the appliance writes it, every field escaped."""
    if isinstance(event, CATCH_ALLS):
        return _format_note(event, max_field)
    comps = _BY_CLASS.get(type(event))
    if not comps:
        raise TypeError("no template for %s" % type(event).__name__)
    for comp in comps:
        if comp.eligible(event):
            return comp.format(event, max_field)
    raise ValueError("no template of %s fits %r" % (type(event).__name__, event))


def format_file_line(event: ev.Event, when: datetime, level: str | None = None, *,
                     max_field: int | None = esc.DEFAULT_MAX_FIELD) -> str:
    """``Wed Apr 22 11:43:59 2009 Info: <body>`` (no newline); ``when`` is local time as given."""
    return "%s %s: %s" % (format_ctime(when), level or event.LEVEL, format_body(event, max_field=max_field))


def format_syslog_line(event: ev.Event, when: datetime, *, hostname: str | None, tag: str = "mail_logs",
                       pri: int = 22, level: str | None = None,
                       max_field: int | None = esc.DEFAULT_MAX_FIELD) -> str:
    """RFC 3164: ``<22>Apr 22 11:43:59 host mail_logs: Info: <body>`` (hostname optional)."""
    host = (hostname + " ") if hostname else ""
    return "<%d>%s %s%s: %s: %s" % (pri, format_syslog_time(when), host, tag, level or event.LEVEL,
                                    format_body(event, max_field=max_field))


# ---------------------------------------------------------------------------------------
# Line parsing
# ---------------------------------------------------------------------------------------

_LEVEL_RE = "|".join(LEVELS)
_MON = "Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec"
_FILE_RE = re.compile(
    r"(?:<(\d{1,3})>)?(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) )(%s) {1,2}(\d{1,2}) (\d\d:\d\d:\d\d) (\d{4}) (%s): "
    % (_MON, _LEVEL_RE))
_SYSLOG_RE = re.compile(
    r"(?:<(\d{1,3})>)?(%s) {1,2}(\d{1,2}) (\d\d:\d\d:\d\d) (?:(\S*[^\s:]) )?(\S+?): (%s): "
    % (_MON, _LEVEL_RE))
# Relays that prepend their own header: find "<tag>: <Level>: " anywhere.
_LOOSE_RE = re.compile(r"(?:^|\s)([^\s:]\S*?): (%s): " % _LEVEL_RE)
_LOOSE_TIME = re.compile(r"(?:<(\d{1,3})>)?(%s) {1,2}(\d{1,2}) (\d\d:\d\d:\d\d)" % _MON)
_TRUNC_RE = re.compile(r"(?:<\d{0,3}>?|<\d{1,3}>[A-Z][a-z]{0,2}|[A-Z][a-z]{0,2}|(?:<\d{1,3}>)?[A-Z][a-z]{2} [ \w:.-]*)$")

_LEVEL_SET = frozenset(LEVELS)
_ts_cache: dict[str, datetime | None] = {}
_info_cache: dict[str, datetime] = {}
_EOL = ("\n", "\r")
_year_cache = [0.0, time.localtime().tm_year]
# The fields of a record of the fast path, copied then three set: cheaper than a 9-key literal.
_INFO_RECORD = {"timestamp": None, "host": None, "subscription": None, "level": "Info", "event": None,
                "raw": None, "unparsed": None, "pri": None, "has_year": True}


def _this_year() -> int:
    now = time.time()
    if now - _year_cache[0] > 60:
        _year_cache[0] = now
        _year_cache[1] = time.localtime(now).tm_year
    return int(_year_cache[1])


def _syslog_time(mon: str, day: str, hms: str, year: int | None) -> datetime | None:
    """A syslog timestamp in the given (or current) year; Feb 29 in an assumed year that is
    not a leap year goes to the leap year before it rather than being lost."""
    ts = make_time(mon, day, hms, year or _this_year())
    if ts is None and year is None and mon == "Feb" and day == "29":
        y = _this_year()
        while not (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)):
            y -= 1
        ts = make_time(mon, day, hms, y)
    return ts


def parse_line(line: str, *, year: int | None = None) -> LogRecord:
    """Read one line of either framing. Never raises; ``unparsed`` says what was not understood.

    ``year`` is used for syslog lines, which carry none (default: the current year).
    """
    try:
        # Fastest path: "Www Mmm dd HH:MM:SS YYYY Info: " seen before (most lines of a file
        # share their second with a neighbour).
        ts = _info_cache.get(line[:31])
        if ts is not None:
            # The body without its line end, then without trailing spaces (in that order, as
            # _parse_line does). One C call beats testing the last characters in Python.
            body = line[31:].rstrip("\r\n")
            if body[-1:] == " ":
                body = body.rstrip(" ")
            # _typed inlined (one call less per line)
            event = None
            words = body.split(" ", 3)
            try:
                parsers = _BY_KEY2.get((words[0], words[2]))
            except IndexError:      # fewer than three words (rare; cheaper than len() each line)
                parsers = None
            if parsers is None:
                parsers = _BY_KEY1.get(words[0], ())
            for parse in parsers:
                event = parse(body)
                if event is not None:
                    break
            else:
                event, unparsed = _fallback(body)
                return _record(ts, None, None, "Info", event, line, unparsed, None, True)
            # _record inlined: this is the path of nearly every line of a file
            r = _new(LogRecord)
            d = _INFO_RECORD.copy()
            d["timestamp"] = ts
            d["event"] = event
            d["raw"] = line
            _set_dict(r, d)
            return r
        return _parse_line(line, year)
    except Exception:  # the contract is "never raises": anything unforeseen is reported, not thrown
        return LogRecord(None, None, None, None, None, line, "error")


def _parse_line(line: str, year: int | None) -> LogRecord:
    raw = line
    if line.endswith("\n") or line.endswith("\r"):
        line = line.rstrip("\r\n")
    # Fast path: the common file framing with a 24-character ctime ("Wed Apr 22 11:43:59 2009").
    if len(line) > 31 and line[24] == " " and line[19] == " " and line[3] == " ":
        colon = line.find(": ", 25, 35)
        level = line[25:colon]
        if colon > 0 and level in _LEVEL_SET:
            stamp = line[:24]
            ts = _ts_cache.get(stamp, False)
            if ts is False:
                tm = _FILE_RE.match(line)
                ts = make_time(tm.group(2), tm.group(3), tm.group(4), int(tm.group(5))) if tm else None
                if tm is None or tm.end() != colon + 2:
                    ts = None
                if len(_ts_cache) > 4096:
                    _ts_cache.clear()
                _ts_cache[stamp] = ts
            if ts is not None:
                if colon == 29 and level == "Info":
                    if len(_info_cache) > 4096:
                        _info_cache.clear()
                    _info_cache[line[:31]] = ts
                event, unparsed = parse_body(line[colon + 2:])
                return _record(ts, None, None, level, event, raw, unparsed, None, True)
    m = _FILE_RE.match(line)
    if m is not None:
        pri, mon, day, hms, yr, level = m.groups()
        ts = make_time(mon, day, hms, int(yr))
        body = line[m.end():]
        event, unparsed = parse_body(body)
        return LogRecord(ts, None, None, level, event, raw, unparsed or (None if ts else "bad-time"),
                         int(pri) if pri else None, True)
    m = _SYSLOG_RE.match(line)
    if m is not None:
        pri, mon, day, hms, host, tag, level = m.groups()
        ts = _syslog_time(mon, day, hms, year)
        event, unparsed = parse_body(line[m.end():])
        return LogRecord(ts, host, tag, level, event, raw, unparsed, int(pri) if pri else None, False)
    m = _LOOSE_RE.search(line)
    if m is not None:
        tag, level = m.groups()
        tm = _LOOSE_TIME.match(line)
        ts = None
        pri = None
        if tm is not None:
            ts = _syslog_time(tm.group(2), tm.group(3), tm.group(4), year)
            pri = int(tm.group(1)) if tm.group(1) else None
        event, unparsed = parse_body(line[m.end():])
        return LogRecord(ts, None, tag, level, event, raw, unparsed, pri, False)
    # A line that stops inside its header (cut by a relay or a full disk) is "truncated".
    kind = "truncated" if line and len(line) < 48 and _TRUNC_RE.match(line) else "no-header"
    return LogRecord(None, None, None, None, None, raw, kind)

