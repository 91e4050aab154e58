"""The chain profile: try member profiles in order until one decides.

Owns only the ordering rule: the first OK or FAIL decides; a TEMPFAIL or MISCONFIGURED member
is skipped (its log events are kept) and, when no member decided, the chain answers TEMPFAIL
so the client may retry. The outcome names the member that decided, as the log line must.
Must not know what any member does.

A chain offers only the mechanisms every member can verify: a CRAM-MD5 exchange cannot be
replayed to a member that needs the clear-text password.
"""
from __future__ import annotations

from collections.abc import Sequence

from .base import AuthOutcome, AuthProfile, Credentials, Verdict


class ChainProfile:
    def __init__(self, name: str, members: Sequence[AuthProfile]):
        if not members:
            raise ValueError(f"chain profile {name!r} needs at least one member")
        self.name = name
        self.members = tuple(members)

    @property
    def mechanisms(self) -> tuple[str, ...]:
        # Asked afresh: a member's list may change (a local profile offers CRAM-MD5 only
        # while it has a CRAM user).
        first = self.members[0].mechanisms
        return tuple(m for m in first if all(m in p.mechanisms for p in self.members[1:]))

    def __repr__(self) -> str:
        return f"ChainProfile({self.name!r}, [{', '.join(p.name for p in self.members)}])"

    async def verify(self, creds: Credentials, *, icid: int, client_ip: str) -> AuthOutcome:
        events = []
        details = []
        for member in self.members:
            outcome = await member.verify(creds, icid=icid, client_ip=client_ip)
            events.extend(outcome.events)
            if outcome.verdict in (Verdict.OK, Verdict.FAIL):
                return AuthOutcome(outcome.verdict, outcome.profile, outcome.detail, tuple(events))
            details.append(f"{outcome.profile}: {outcome.detail or outcome.verdict.value}")
        return AuthOutcome(Verdict.TEMPFAIL, self.members[-1].name, "; ".join(details), tuple(events))
