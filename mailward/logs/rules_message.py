"""Join rules for messages (MID): envelope, headers, policy, verdicts, end of message, and
MID families (split, rewritten, bcc, bounce, EUQ reinjection), quarantine and LDAP lines.

A mixin of ``Correlator``: it uses the engine's lookups and hands finished stories to
``_emit``. It knows nothing of files or reports.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from mailward.maillog import events as E

if TYPE_CHECKING:
    from .correlate import _State

from .model import BOUNCED, DROPPED, PENDING, QUARANTINED, SPLIT, Message, Recipient

MAX_VERDICTS = 64       # per message: enough for every engine line, bounded against odd logs


class MessageRules:
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
        text = ev.text
        if len(m.verdicts) < MAX_VERDICTS:
            m.verdicts.append(text)
        if text[:4] == "was " and (text.startswith("was dropped by") or text.startswith("was bounced by")):
            # "MID m was dropped|bounced by content filter 'f' in the inbound table": the end
            # of its recipients, even when no "Message aborted" line follows.
            m.abort_reason = m.abort_reason or text
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
            if m.abort_reason is not None and m.abort_reason.startswith("was bounced by"):
                final = BOUNCED
            elif m.abort_reason is not None or ev.status == "aborted":
                final = DROPPED
            else:
                final = SPLIT
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

