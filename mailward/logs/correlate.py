"""The streaming correlator: typed mail_logs events in, finished message stories out.

Owns the engine (per-appliance state, dispatch by event class, lookups, expiry, end of input);
the join rules themselves live in ``rules_inbound`` (ICID, AUTH), ``rules_message`` (MID,
families) and ``rules_delivery`` (DCID, outcomes), mixed into ``Correlator``. The rules are those
of MAIL_LOGS.md §3: ICID facts (peer, rDNS, HAT decision, SBRS, TLS,
authenticated user and failures) reach every MID started on that ICID; DCID facts (destination,
TLS, outbound AUTH) reach every MID/RID delivered on it; per-recipient outcomes come from
``Message done`` / ``Bounced`` / ``Delayed`` / ``Response``; MID families (split, rewritten, bcc,
bounce, reinjected) are linked both ways. Every id is keyed by appliance, since ids restart.

Bounded memory: a message's state is dropped when ``Message finished`` arrives (its story is
handed to ``on_story``), a connection's at ``ICID close``/``DCID close``; anything not seen for
``idle`` seconds of *log* time is swept out (the story is handed out with ``expired`` set).
Stories still hold references to their connection/delivery objects, so ICID/DCID lines that
arrive after the message ended still reach a story a caller kept.

It does not read files, format text or decide what is suspicious; it is a pure function of the
record stream (no clocks, no I/O).
"""
from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING, Callable

from mailward.maillog import events as E

if TYPE_CHECKING:  # the correlator only reads .event and .raw of a record
    from mailward.maillog.grammar import LogRecord

from .model import AuthAttempt, Connection, Delivery, Message
from .rules_delivery import DeliveryRules
from .rules_inbound import InboundRules
from .rules_message import MAX_VERDICTS, MessageRules

MAX_LINES = 400         # evidence lines kept per message/connection when lines are kept


class _State:
    """Live ids of one appliance."""

    __slots__ = ("icids", "mids", "dcids", "now")

    def __init__(self) -> None:
        # Latest log time seen for this appliance: idle expiry is judged per appliance, so a
        # second appliance's (or an older file's) clock never expires this one's state.
        self.now = 0.0
        self.icids: dict[int, Connection] = {}
        self.mids: dict[int, Message] = {}
        self.dcids: dict[int, Delivery] = {}


class Counters:
    __slots__ = ("events", "stories", "finished", "expired", "connections", "deliveries", "auth")

    def __init__(self) -> None:
        self.events = 0
        self.stories = 0
        self.finished = 0
        self.expired = 0
        self.connections = 0
        self.deliveries = 0
        self.auth = 0

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__slots__}


class Correlator(InboundRules, MessageRules, DeliveryRules):
    """Feed ``(appliance, utc_seconds, record)``; stories and auth attempts come out by callback.

    ``keep_lines``: keep the raw evidence lines with each story (``track`` wants them; bulk
    reports do not, and save the memory). ``idle``: seconds of log time after which unfinished
    state is swept. ``sweep_every``: lines between sweeps (amortises the scan).
    """

    def __init__(self, on_story: Callable[[Message], None] | None = None,
                 on_auth: Callable[[AuthAttempt], None] | None = None,
                 idle: float = 3600.0, keep_lines: bool = False, sweep_every: int = 50000) -> None:
        self.on_story = on_story
        self.on_auth = on_auth
        self.idle = idle
        self.keep_lines = keep_lines
        self.sweep_every = sweep_every
        self.counters = Counters()
        self._states: dict[str, _State] = {}
        self._last_app: str | None = None
        self._st = _State()
        self._sweeps = 0
        self._seq = 0                       # arrival order of evidence lines (to merge them)
        d = self._dispatch = {}
        for name in dir(self):
            if name.startswith("_on_"):
                cls = getattr(E, name[4:], None)
                if isinstance(cls, type) and issubclass(cls, E.Event):
                    d[cls] = getattr(self, name)
        # Event classes without a rule of their own (new ones included) still reach the story
        # of the id they carry, as evidence.
        for cls in vars(E).values():
            if isinstance(cls, type) and issubclass(cls, E.Event) and cls not in d:
                names = {f.name for f in fields(cls)}
                if "mid" in names:
                    d[cls] = self._mid_line
                elif "icid" in names:
                    d[cls] = self._icid_line
                elif "dcid" in names:
                    d[cls] = self._dcid_line
        self.feed = self._make_feed()

    # --- the per-line path ------------------------------------------------------------------

    def _make_feed(self) -> Callable[[str, float | None, "LogRecord"], None]:
        """Build ``feed``. A closure, not a method: its state lives in cells, which Python reads
        faster than attributes, and this is the one call made for every line (~20 % of the
        correlator's own time)."""
        get = self._dispatch.get
        states = self._states
        last_app: str | None = None
        st = self._st
        countdown = self.sweep_every

        def feed(appliance: str, ts: float | None, rec: "LogRecord") -> None:
            nonlocal last_app, st, countdown
            ev = rec.event
            handler = get(ev.__class__)     # None (no event) is not in the table
            if handler is None:
                return
            if appliance != last_app:
                st = states.get(appliance)
                if st is None:
                    st = states[appliance] = _State()
                self._st = st
                last_app = self._last_app = appliance
            if ts is not None and ts > st.now:
                st.now = ts
            handler(st, ev, ts, rec.raw)
            countdown -= 1
            if not countdown:
                countdown = self.sweep_every
                self._sweeps += 1
                self.sweep()

        def handled() -> int:
            return self._sweeps * self.sweep_every + (self.sweep_every - countdown)

        self._handled = handled
        return feed

    def __call__(self, appliance: str, ts: float | None, rec: "LogRecord") -> None:
        self.feed(appliance, ts, rec)

    @property
    def events(self) -> int:
        """Events handled so far."""
        return self._handled()

    # --- lookups --------------------------------------------------------------------------

    def _conn(self, st: _State, icid: int, ts: float | None) -> Connection:
        c = st.icids.get(icid)
        if c is None:
            c = st.icids[icid] = Connection(self._last_app or "", icid, ts)
            self.counters.connections += 1
        if ts is not None:
            c.last_seen = ts
        return c

    def _deliv(self, st: _State, dcid: int, ts: float | None) -> Delivery:
        d = st.dcids.get(dcid)
        if d is None:
            d = st.dcids[dcid] = Delivery(self._last_app or "", dcid, ts)
            self.counters.deliveries += 1
        if ts is not None:
            d.last_seen = ts
        return d

    def _msg(self, st: _State, mid: int, ts: float | None) -> Message:
        m = st.mids.get(mid)
        if m is None:
            m = st.mids[mid] = Message(self._last_app or "", mid, ts)
            if self.keep_lines:
                m.lines = []
        if ts is not None:
            m.last_seen = ts
        return m

    def _line(self, obj: Message | Connection | Delivery, raw: str) -> None:
        # Callers test ``self.keep_lines`` first: the call is skipped on the bulk path.
        lines = obj.lines
        if lines is None:
            lines = obj.lines = []
        if len(lines) < MAX_LINES:
            self._seq += 1
            lines.append((self._seq, raw.rstrip("\r\n")))

    def _attach(self, st: _State, m: Message, icid: int) -> None:
        if m.icid is None or (m.icid == 0 and icid):
            m.icid = icid
        if icid and m.connection is None:
            m.connection = st.icids.get(icid)

    # --- quarantine, LDAP, double bounces, reinjection ---------------------------------------

    def _mid_line(self, st: _State, ev, ts, raw) -> None:
        m = self._msg(st, ev.mid, ts)
        if self.keep_lines:
            self._line(m, raw)

    def _icid_line(self, st: _State, ev, ts, raw) -> None:
        c = self._conn(st, ev.icid, ts)
        if self.keep_lines:
            self._line(c, raw)

    def _dcid_line(self, st: _State, ev, ts, raw) -> None:
        d = self._deliv(st, ev.dcid, ts)
        if self.keep_lines:
            self._line(d, raw)

    def _note(self, st: _State, mid: int, text: str, ts, raw) -> Message:
        m = self._msg(st, mid, ts)
        if len(m.verdicts) < MAX_VERDICTS:
            m.verdicts.append(text)
        if self.keep_lines:
            self._line(m, raw)
        return m

    # --- ending -------------------------------------------------------------------------

    def _emit(self, m: Message) -> None:
        self.counters.stories += 1
        if self.on_story is not None:
            self.on_story(m)

    def sweep(self) -> None:
        """Hand out and drop state idle for longer than ``idle`` seconds of log time."""
        for st in self._states.values():
            limit = st.now - self.idle
            stale = [k for k, m in st.mids.items() if m.last_seen is not None and m.last_seen < limit]
            for k in stale:
                m = st.mids.pop(k)
                m.expired = True
                self.counters.expired += 1
                self._emit(m)
            for table in (st.icids, st.dcids):
                gone = [k for k, c in table.items() if c.last_seen is not None and c.last_seen < limit]
                for k in gone:
                    del table[k]

    def flush(self) -> None:
        """End of input: hand out every unfinished message (as expired), oldest first."""
        self.counters.events = self.events
        for st in self._states.values():
            pending = sorted(st.mids.values(), key=lambda m: (m.started or 0.0, m.mid))
            st.mids.clear()
            for m in pending:
                m.expired = True
                self.counters.expired += 1
                self._emit(m)
            st.icids.clear()
            st.dcids.clear()

    def live(self) -> dict[str, int]:
        """Sizes of the live tables (the memory bound, for stats and tests)."""
        return {
            "messages": sum(len(s.mids) for s in self._states.values()),
            "connections": sum(len(s.icids) for s in self._states.values()),
            "deliveries": sum(len(s.dcids) for s in self._states.values()),
        }
