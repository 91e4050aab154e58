"""The local authentication profile: users from a ``UserStore``, answers through the cache.

Owns the mapping from a store check to an ``AuthOutcome``. Must not know the file format or
the hashing (``users.py``) nor SMTP replies.

CRAM-MD5 is not offered: it needs a password-equivalent secret (the password or its HMAC-MD5
context) stored on the gateway, which would undo what Argon2id buys. Clients that only speak
CRAM-MD5 can be served by an LDAP or forwarding profile in front of a server that stores such
secrets, or upgraded to PLAIN/LOGIN over TLS.
"""
from __future__ import annotations

from .base import PASSWORD_MECHANISMS, AuthOutcome, Credentials, Verdict, password_of
from .cache import CredentialCache, verify_with_cache
from .users import UserStore, UserStoreError
from ..maillog.events import SmtpAuthMisconfigured


class LocalProfile:
    mechanisms: tuple[str, ...] = PASSWORD_MECHANISMS

    def __init__(self, name: str, store: UserStore, cache: CredentialCache | None = None):
        self.name = name
        self.store = store
        self.cache = cache
        if cache is not None:
            # A changed or deleted user must not keep logging in from the cache.
            store.on_change(self._forget)

    def __repr__(self) -> str:
        return f"LocalProfile({self.name!r}, {str(self.store.path)!r})"

    def _forget(self, names: frozenset[str]) -> None:
        assert self.cache is not None
        for n in names:
            self.cache.invalidate(self.name, n)

    async def verify(self, creds: Credentials, *, icid: int, client_ip: str) -> AuthOutcome:
        password = password_of(creds)
        if password is None:
            return AuthOutcome(Verdict.FAIL, self.name, detail=f"mechanism {creds.mechanism} or authorization identity not supported")
        try:
            # Before the cache: a user changed on disk is forgotten before we answer from it.
            self.store.refresh()
        except UserStoreError as exc:
            return AuthOutcome(Verdict.MISCONFIGURED, self.name, detail=str(exc),
                               events=(SmtpAuthMisconfigured(icid, self.name),))

        async def check() -> AuthOutcome:
            ok = await self.store.verify(creds.username, password)
            return AuthOutcome(Verdict.OK if ok else Verdict.FAIL, self.name)

        try:
            return await verify_with_cache(self.cache, self.name, creds, check)
        except UserStoreError as exc:
            return AuthOutcome(Verdict.MISCONFIGURED, self.name, detail=str(exc),
                               events=(SmtpAuthMisconfigured(icid, self.name),))
