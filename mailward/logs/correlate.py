"""The streaming correlator: typed mail_logs events in, finished message stories out.

Owns the join rules of MAIL_LOGS.md §3: ICID facts (peer, rDNS, HAT decision, SBRS, TLS,
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

from .model import (BOUNCED, DELAYED, DELIVERED, DROPPED, PENDING, QUARANTINED, SPLIT, AuthAttempt, Connection, Delivery,
                    Message, Recipient)

MAX_VERDICTS = 64       # per message: enough for every engine line, bounded against odd logs
_BY_DEST = "Bounced by destination server with response: "
MAX_LINES = 400         # evidence lines kept per message/connection when lines are kept


def response_text(resp: E.SmtpResponse | None) -> str | None:
    """The appliance's own rendering of a remote reply: ('554', ['5.7.1 ...'])."""
    if resp is None:
        return None
    return repr((resp.code, list(resp.lines)))


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


class Correlator:
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
        self._countdown = sweep_every
        self._seq = 0                       # arrival order of evidence lines (to merge them)
        self._sweeps = 0
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

    # --- the per-line path ------------------------------------------------------------------

    def feed(self, appliance: str, ts: float | None, rec: "LogRecord") -> None:
        ev = rec.event
        handler = self._dispatch.get(ev.__class__)     # None (no event) is not in the table
        if handler is None:
            return
        if appliance != self._last_app:
            self._switch(appliance)
        st = self._st
        if ts is not None and ts > st.now:
            st.now = ts
        handler(st, ev, ts, rec.raw)
        self._countdown -= 1
        if not self._countdown:
            self._countdown = self.sweep_every
            self._sweeps += 1
            self.sweep()

    def _switch(self, appliance: str) -> None:
        st = self._states.get(appliance)
        if st is None:
            st = self._states[appliance] = _State()
        self._st = st
        self._last_app = appliance

    @property
    def events(self) -> int:
        """Events handled so far."""
        return self._sweeps * self.sweep_every + (self.sweep_every - self._countdown)

    __call__ = feed

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

    # --- ICID ---------------------------------------------------------------------------

    def _on_NewIcid(self, st: _State, ev: E.NewIcid, ts, raw) -> None:
        c = st.icids[ev.icid] = Connection(self._last_app or "", ev.icid, ts)
        self.counters.connections += 1
        c.peer_ip = ev.address
        c.rdns = ev.rdns
        c.verified = ev.verified
        c.interface = ev.interface
        c.interface_ip = ev.interface_ip
        if self.keep_lines:
            self._line(c, raw)

    def _on_HatDecision(self, st: _State, ev: E.HatDecision, ts, raw) -> None:
        c = self._conn(st, ev.icid, ts)
        c.policy = ev.policy or c.policy
        c.sender_group = ev.sender_group
        c.match = ev.match
        c.sbrs = ev.sbrs
        c.country = ev.country
        if self.keep_lines:
            self._line(c, raw)

    def _on_IcidTlsSuccess(self, st: _State, ev: E.IcidTlsSuccess, ts, raw) -> None:
        c = self._conn(st, ev.icid, ts)
        c.tls_protocol = ev.protocol or "TLS"
        c.tls_cipher = ev.cipher
        if self.keep_lines:
            self._line(c, raw)

    def _on_IcidTlsFailed(self, st: _State, ev, ts, raw) -> None:
        c = self._conn(st, ev.icid, ts)
        c.tls_failed = True
        if self.keep_lines:
            self._line(c, raw)

    _on_IcidTlsRequired = _on_IcidTlsFailed

    def _on_IcidClose(self, st: _State, ev, ts, raw) -> None:
        c = st.icids.pop(ev.icid, None)
        if c is not None:
            c.closed = ts
            if self.keep_lines:
                self._line(c, raw)

    _on_IcidLost = _on_IcidClose

    def _on_IcidNote(self, st: _State, ev, ts, raw) -> None:
        if self.keep_lines:
            self._line(self._conn(st, ev.icid, ts), raw)

    _on_ReceivingFailed = _on_IcidNote

    def _auth_other(self, st: _State, ev, ts, raw, kind: str, user: str | None, mechanism: str | None,
                    profile: str, detail: str) -> None:
        c = self._conn(st, ev.icid, ts)
        if self.keep_lines:
            self._line(c, raw)
        self.counters.auth += 1
        if self.on_auth is not None:
            self.on_auth(AuthAttempt(c.appliance, ts, "inbound", False, user, mechanism, profile,
                                     c.peer_ip, c.interface_ip, ev.icid, detail, raw.rstrip("\r\n"), kind))

    def _on_SmtpAuthRejected(self, st: _State, ev: E.SmtpAuthRejected, ts, raw) -> None:
        self._auth_other(st, ev, ts, raw, "rejected", None, ev.mechanism, "", ev.reason)

    def _on_SmtpAuthLockout(self, st: _State, ev: E.SmtpAuthLockout, ts, raw) -> None:
        self._auth_other(st, ev, ts, raw, "lockout", ev.key if ev.scope == "user" else None, None, "",
                         f"{ev.scope} {ev.key} locked out for {ev.seconds} s after {ev.failures} failures")

    def _on_SmtpAuthMisconfigured(self, st: _State, ev: E.SmtpAuthMisconfigured, ts, raw) -> None:
        self._auth_other(st, ev, ts, raw, "error", None, None, ev.profile, "profile misconfigured or missing")

    def _on_SmtpAuthForwardUnreachable(self, st: _State, ev: E.SmtpAuthForwardUnreachable, ts, raw) -> None:
        self._auth_other(st, ev, ts, raw, "error", None, None, "",
                         f"forwarding server {ev.server} unreachable" + (f": {ev.reason}" if ev.reason else ""))

    def _on_SmtpAuthLdapLookupFailed(self, st: _State, ev: E.SmtpAuthLdapLookupFailed, ts, raw) -> None:
        self._auth_other(st, ev, ts, raw, "error", ev.user, None, "", "LDAP query/user lookup failed")

    def _on_SmtpAuthRequiredNotInitiated(self, st: _State, ev, ts, raw) -> None:
        self._auth_other(st, ev, ts, raw, "error", None, None, "", "AUTH required but not initiated")

    def _on_InvalidAddress(self, st: _State, ev: E.InvalidAddress, ts, raw) -> None:
        if self.keep_lines:
            self._line(self._conn(st, ev.icid, ts), raw)
        if ev.mid is not None:
            if self.keep_lines:
                self._line(self._msg(st, ev.mid, ts), raw)

    def _on_SmtpAuthResult(self, st: _State, ev: E.SmtpAuthResult, ts, raw) -> None:
        c = self._conn(st, ev.icid, ts)
        if ev.succeeded:
            c.auth_user = ev.user
            c.auth_mechanism = ev.mechanism
            c.auth_profile = ev.profile
        else:
            c.auth_failures.append(ev.user)
        if self.keep_lines:
            self._line(c, raw)
        self.counters.auth += 1
        if self.on_auth is not None:
            self.on_auth(AuthAttempt(c.appliance, ts, "inbound", ev.succeeded, ev.user, ev.mechanism,
                                     ev.profile, c.peer_ip, c.interface_ip, ev.icid, None,
                                     raw.rstrip("\r\n")))

    # --- MID ----------------------------------------------------------------------------

    def _on_StartMid(self, st: _State, ev: E.StartMid, ts, raw) -> None:
        old = st.mids.get(ev.mid)
        if old is not None and not old.partial:
            # A second start for a live MID: the counter restarted (appliance reset or a log
            # replayed). The earlier message ends here as it stands.
            del st.mids[ev.mid]
            old.expired = True
            self.counters.expired += 1
            self._emit(old)
        m = self._msg(st, ev.mid, ts)
        m.partial = False
        m.started = ts
        self._attach(st, m, ev.icid)
        if self.keep_lines:
            self._line(m, raw)

    def _on_MailFrom(self, st: _State, ev: E.MailFrom, ts, raw) -> None:
        m = self._msg(st, ev.mid, ts)
        m.sender = ev.sender
        self._attach(st, m, ev.icid)
        if self.keep_lines:
            self._line(m, raw)

    def _on_RcptTo(self, st: _State, ev: E.RcptTo, ts, raw) -> None:
        m = self._msg(st, ev.mid, ts)
        r = m.recipients.get(ev.rid)
        if r is None:
            m.recipients[ev.rid] = Recipient(ev.rid, ev.rcpt)
        else:
            r.address = ev.rcpt
        self._attach(st, m, ev.icid)
        if self.keep_lines:
            self._line(m, raw)

    def _on_RcptRejected(self, st: _State, ev: E.RcptRejected, ts, raw) -> None:
        m = self._msg(st, ev.mid, ts)
        m.rejected.append(ev.rcpt)
        self._attach(st, m, ev.icid)
        if self.keep_lines:
            self._line(m, raw)

    def _on_MessageIdHeader(self, st: _State, ev, ts, raw) -> None:
        m = self._msg(st, ev.mid, ts)
        m.message_id = ev.message_id
        if self.keep_lines:
            self._line(m, raw)

    def _on_SubjectHeader(self, st: _State, ev, ts, raw) -> None:
        m = self._msg(st, ev.mid, ts)
        m.subject = ev.subject
        if self.keep_lines:
            self._line(m, raw)

    def _on_MessageReady(self, st: _State, ev: E.MessageReady, ts, raw) -> None:
        m = self._msg(st, ev.mid, ts)
        m.size = ev.size
        if m.sender is None:
            m.sender = ev.sender
        if self.keep_lines:
            self._line(m, raw)

    def _on_PolicyMatch(self, st: _State, ev: E.PolicyMatch, ts, raw) -> None:
        m = self._msg(st, ev.mid, ts)
        m.policy = ev.policy
        m.direction = ev.direction
        if self.keep_lines:
            self._line(m, raw)

    def _on_QueuedForDelivery(self, st: _State, ev, ts, raw) -> None:
        if self.keep_lines:
            self._line(self._msg(st, ev.mid, ts), raw)

    def _on_MidNote(self, st: _State, ev: E.MidNote, ts, raw) -> None:
        m = self._msg(st, ev.mid, ts)
        if len(m.verdicts) < MAX_VERDICTS:
            m.verdicts.append(ev.text)
        if self.keep_lines:
            self._line(m, raw)

    def _on_MessageAborted(self, st: _State, ev: E.MessageAborted, ts, raw) -> None:
        m = self._msg(st, ev.mid, ts)
        m.abort_reason = ev.reason
        if self.keep_lines:
            self._line(m, raw)

    def _on_MessageFinished(self, st: _State, ev: E.MessageFinished, ts, raw) -> None:
        m = self._msg(st, ev.mid, ts)
        m.finished = ts
        m.status = ev.status
        if self.keep_lines:
            self._line(m, raw)
        # Recipients never delivered by a finished message: dropped (after "Message aborted")
        # or handed to a split child, which then carries their outcome.
        split = any(rel == "split" for _, rel in m.children)
        if m.abort_reason is not None or ev.status == "aborted" or split:
            final = DROPPED if (m.abort_reason is not None or ev.status == "aborted") else SPLIT
            for r in m.recipients.values():
                if r.outcome == PENDING:
                    r.outcome = final
        del st.mids[ev.mid]
        self.counters.finished += 1
        self._emit(m)

    def _family(self, st: _State, parent_mid: int, child_mid: int, relation: str, ts, raw,
                inherit: bool) -> Message:
        child = self._msg(st, child_mid, ts)
        child.parent = parent_mid
        child.relation = relation
        parent = st.mids.get(parent_mid)
        if parent is not None:
            parent.children.append((child_mid, relation))
            if self.keep_lines:
                self._line(parent, raw)
            if inherit:
                # A split/rewritten child is the same mail: same connection, same envelope.
                if child.connection is None:
                    child.connection = parent.connection
                    child.icid = parent.icid
                child.sender = child.sender if child.sender is not None else parent.sender
                child.message_id = child.message_id or parent.message_id
                child.subject = child.subject if child.subject is not None else parent.subject
                child.partial = parent.partial
                if child.started is None or (parent.started is not None and parent.started < child.started):
                    child.started = parent.started
        if self.keep_lines:
            self._line(child, raw)
        return child

    def _on_SplitMid(self, st: _State, ev: E.SplitMid, ts, raw) -> None:
        self._family(st, ev.mid, ev.new_mid, "split", ts, raw, True)

    def _on_RewrittenMid(self, st: _State, ev: E.RewrittenMid, ts, raw) -> None:
        if ev.new_mid == ev.mid:   # rewritten in place (e.g. a footer filter): a verdict note
            m = self._msg(st, ev.mid, ts)
            if len(m.verdicts) < MAX_VERDICTS:
                m.verdicts.append(f"rewritten by {ev.by}")
            if self.keep_lines:
                self._line(m, raw)
            return
        child = self._family(st, ev.mid, ev.new_mid, "rewritten", ts, raw, True)
        parent = st.mids.get(ev.mid)
        if parent is not None and not child.recipients:
            for rid, r in parent.recipients.items():
                child.recipients[rid] = Recipient(rid, r.address)

    def _on_GeneratedBcc(self, st: _State, ev: E.GeneratedBcc, ts, raw) -> None:
        self._family(st, ev.original_mid, ev.mid, "bcc", ts, raw, False)

    def _on_GeneratedForBounce(self, st: _State, ev: E.GeneratedForBounce, ts, raw) -> None:
        self._family(st, ev.original_mid, ev.mid, "bounce", ts, raw, False)

    # --- DCID ---------------------------------------------------------------------------

    def _on_NewDcid(self, st: _State, ev: E.NewDcid, ts, raw) -> None:
        d = st.dcids[ev.dcid] = Delivery(self._last_app or "", ev.dcid, ts)
        self.counters.deliveries += 1
        d.interface = ev.interface
        d.address = ev.address
        d.port = ev.port
        if self.keep_lines:
            self._line(d, raw)

    def _on_DcidTlsSuccess(self, st: _State, ev: E.DcidTlsSuccess, ts, raw) -> None:
        d = self._deliv(st, ev.dcid, ts)
        d.tls_protocol = ev.protocol or "TLS"
        d.tls_cipher = ev.cipher
        if self.keep_lines:
            self._line(d, raw)

    def _on_DcidTlsFailed(self, st: _State, ev, ts, raw) -> None:
        d = self._deliv(st, ev.dcid, ts)
        d.tls_failed = True
        if self.keep_lines:
            self._line(d, raw)

    _on_DcidTlsRequired = _on_DcidTlsFailed

    def _on_DcidNote(self, st: _State, ev, ts, raw) -> None:
        if self.keep_lines:
            self._line(self._deliv(st, ev.dcid, ts), raw)

    def _on_DeliveryConnectionError(self, st: _State, ev: E.DeliveryConnectionError, ts, raw) -> None:
        d = self._deliv(st, ev.dcid, ts)
        d.address = d.address or ev.address
        d.port = d.port or ev.port
        d.error = ev.reason
        if self.keep_lines:
            self._line(d, raw)

    def _on_DcidClose(self, st: _State, ev, ts, raw) -> None:
        d = st.dcids.pop(ev.dcid, None)
        if d is not None:
            d.closed = ts
            if self.keep_lines:
                self._line(d, raw)

    def _on_OutboundAuthResult(self, st: _State, ev: E.OutboundAuthResult, ts, raw) -> None:
        d = self._deliv(st, ev.dcid, ts)
        d.address = d.address or ev.address
        d.auth_profile = ev.profile
        d.auth_succeeded = ev.succeeded
        d.auth_response = response_text(ev.response)
        if self.keep_lines:
            self._line(d, raw)
        self.counters.auth += 1
        if self.on_auth is not None:
            self.on_auth(AuthAttempt(d.appliance, ts, "outbound", ev.succeeded, None, None, ev.profile,
                                     d.interface, ev.address, ev.dcid, d.auth_response,
                                     raw.rstrip("\r\n")))

    def _delivery_for(self, st: _State, dcid: int, ts) -> Delivery | None:
        if dcid == 0:      # DCID 0: no connection was made (DNS failure and the like)
            return None
        return self._deliv(st, dcid, ts)

    def _on_DeliveryStart(self, st: _State, ev: E.DeliveryStart, ts, raw) -> None:
        m = self._msg(st, ev.mid, ts)
        d = self._delivery_for(st, ev.dcid, ts)
        for rid in ev.rids:
            r = m.recipient(rid)
            r.delivery = d
            r.attempts += 1
            r.last_seen = ts
        if self.keep_lines:
            self._line(m, raw)

    def _on_MessageDone(self, st: _State, ev: E.MessageDone, ts, raw) -> None:
        m = self._msg(st, ev.mid, ts)
        d = self._delivery_for(st, ev.dcid, ts)
        outcome = QUARANTINED if ev.note and "quarantine" in ev.note else DELIVERED
        for rid in ev.rids:
            r = m.recipient(rid)
            r.outcome = outcome
            if d is not None:
                r.delivery = d
            r.last_seen = ts
        if self.keep_lines:
            self._line(m, raw)

    def _on_DeliveryResponse(self, st: _State, ev: E.DeliveryResponse, ts, raw) -> None:
        m = self._msg(st, ev.mid, ts)
        for rid in ev.rids:
            m.recipient(rid).response = ev.response
        if self.keep_lines:
            self._line(m, raw)

    def _settle(self, st: _State, ev, outcome: str, ts, raw) -> None:
        m = self._msg(st, ev.mid, ts)
        r = m.recipient(ev.rid)
        r.outcome = outcome
        status = ev.status
        if status.startswith(_BY_DEST):
            # Some grammar revisions leave the seed's "Bounced by destination server with
            # response:" wording in the status; the status proper is the x.y.z after it.
            status = status[len(_BY_DEST):]
        r.status = status
        r.description = ev.description
        r.response = response_text(ev.response)
        r.last_seen = ts
        if ev.rcpt and not r.address:
            r.address = ev.rcpt
        if ev.sender and m.sender is None:
            m.sender = ev.sender
        d = self._delivery_for(st, ev.dcid, ts)
        if d is not None:
            r.delivery = d
        if self.keep_lines:
            self._line(m, raw)

    def _on_Bounced(self, st: _State, ev: E.Bounced, ts, raw) -> None:
        self._settle(st, ev, BOUNCED, ts, raw)

    def _on_Delayed(self, st: _State, ev: E.Delayed, ts, raw) -> None:
        self._settle(st, ev, DELAYED, ts, raw)

    def _on_PendingTill(self, st: _State, ev: E.PendingTill, ts, raw) -> None:
        m = self._msg(st, ev.mid, ts)
        for rid in ev.rids:
            m.recipient(rid).pending_till = ev.until
        if self.keep_lines:
            self._line(m, raw)

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

    def _on_IsqTagged(self, st: _State, ev, ts, raw) -> None:
        self._note(st, ev.mid, "ISQ: tagged for quarantine", ts, raw)

    def _on_RpcDeliveryStart(self, st: _State, ev, ts, raw) -> None:
        self._note(st, ev.mid, f"RPC delivery to {ev.destination} (RCID {ev.rcid})", ts, raw)

    def _on_RpcMessageDone(self, st: _State, ev, ts, raw) -> None:
        # The message reached the spam quarantine: its undelivered recipients are held there.
        m = self._note(st, ev.mid, f"RPC message done (RCID {ev.rcid})", ts, raw)
        for r in m.recipients.values():
            if r.outcome == PENDING:
                r.outcome = QUARANTINED
                r.last_seen = ts

    def _on_PossibleDelivery(self, st: _State, ev, ts, raw) -> None:
        # The connection broke after the data was sent: delivery may or may not have happened.
        m = self._note(st, ev.mid, f"possible delivery on DCID {ev.dcid}", ts, raw)
        d = self._delivery_for(st, ev.dcid, ts)
        for rid in ev.rids:
            r = m.recipient(rid)
            if d is not None:
                r.delivery = d
            r.last_seen = ts

    def _on_DoubleBounce(self, st: _State, ev, ts, raw) -> None:
        m = self._msg(st, ev.mid, ts)
        r = m.recipient(ev.rid)
        r.outcome = BOUNCED
        r.status = ev.status
        r.description = f"double bounce: {ev.description}"
        r.last_seen = ts
        if self.keep_lines:
            self._line(m, raw)

    def _on_LdapDrop(self, st: _State, ev, ts, raw) -> None:
        m = self._note(st, ev.mid, f"LDAP drop query {ev.query} RID {ev.rid}", ts, raw)
        r = m.recipient(ev.rid)
        r.outcome = DROPPED
        r.address = r.address or ev.address
        r.last_seen = ts

    def _on_LdapReroute(self, st: _State, ev, ts, raw) -> None:
        self._note(st, ev.mid, f"LDAP reroute query {ev.query} RID {ev.rid} to {ev.targets}", ts, raw)

    def _on_Reinjected(self, st: _State, ev, ts, raw) -> None:
        # Released from the end-user quarantine as a new MID: the same mail, same connection.
        self._family(st, ev.mid, ev.new_mid, "reinjected", ts, raw, True)

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
