"""Join rules for deliveries (DCID): connection facts (destination, TLS, outbound AUTH) and
per-recipient outcomes (delivered, quarantined, bounced, delayed, pending, double bounce).

A mixin of ``Correlator``: it uses the engine's lookups. It knows nothing of files or reports.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from mailward.maillog import events as E

if TYPE_CHECKING:
    from .correlate import _State

from .model import BOUNCED, DELAYED, DELIVERED, QUARANTINED, AuthAttempt, Delivery


def response_text(resp: E.SmtpResponse | None) -> str | None:
    """The appliance's own rendering of a remote reply: ('554', ['5.7.1 ...'])."""
    if resp is None:
        return None
    return repr((resp.code, list(resp.lines)))


class DeliveryRules:
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
        r.status = ev.status
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

