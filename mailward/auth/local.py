"""The local authentication profile: users from a ``UserStore``, answers through the cache.

Owns the mapping from a store check to an ``AuthOutcome``. Must not know the file format or
the hashing (``users.py``) nor SMTP replies.

CRAM-MD5 is offered only while the users file holds at least one user added with ``--cram``
(whose HMAC-MD5 context is stored beside the Argon2id hash, see ``crammd5.py``): that context
is password-equivalent for CRAM-MD5 and much weaker than Argon2id, so it is opt-in per user.
Users without it simply fail CRAM-MD5 and can use PLAIN/LOGIN.
"""
from __future__ import annotations

from .base import PASSWORD_MECHANISMS, AuthOutcome, Credentials, Verdict, password_of
from .cache import CredentialCache, cached_outcome, verify_with_cache
from .users import UserStore, UserStoreError
from ..maillog.events import SmtpAuthMisconfigured

# Seconds the advertised mechanism list may lag a users file edited by another process.
MECHANISMS_MAX_AGE = 1.0
_WITH_CRAM = PASSWORD_MECHANISMS + ("CRAM-MD5",)


class LocalProfile:
    def __init__(self, name: str, store: UserStore, cache: CredentialCache | None = None):
        self.name = name
        self.store = store
        self.cache = cache
        if cache is not None:
            # A changed or deleted user must not keep logging in from the cache.
            store.on_change(self._forget)

    def __repr__(self) -> str:
        return f"LocalProfile({self.name!r}, {str(self.store.path)!r})"

    @property
    def mechanisms(self) -> tuple[str, ...]:
        try:
            # Asked at every EHLO and AUTH command: a file changed on disk shows in the list
            # within a second, without a stat per command. ``verify`` always looks.
            self.store.refresh(max_age=MECHANISMS_MAX_AGE)
        except UserStoreError:
            return PASSWORD_MECHANISMS
        return _WITH_CRAM if self.store.has_cram() else PASSWORD_MECHANISMS

    def _forget(self, names: frozenset[str]) -> None:
        assert self.cache is not None
        for n in names:
            self.cache.invalidate(self.name, n)

    def verify_cached(self, creds: Credentials) -> AuthOutcome | None:
        """OK at once when the cache holds these credentials and the users file has not
        changed them; None means "verify in full" (``verify``). Never blocks, never awaits."""
        if self.cache is None:
            return None
        try:
            # As in verify: a user changed on disk is forgotten before we answer from the cache.
            self.store.refresh()
        except UserStoreError:
            return None
        return cached_outcome(self.cache, self.name, creds)

    async def verify(self, creds: Credentials, *, icid: int, client_ip: str) -> AuthOutcome:
        try:
            # Before the cache: a user changed on disk is forgotten before we answer from it.
            self.store.refresh()
        except UserStoreError as exc:
            return AuthOutcome(Verdict.MISCONFIGURED, self.name, detail=str(exc),
                               events=(SmtpAuthMisconfigured(icid, self.name),))
        if creds.mechanism.upper() == "CRAM-MD5":
            ok = (creds.challenge is not None and creds.digest is not None
                  and creds.authzid in (None, "", creds.username)
                  and self.store.verify_cram(creds.username, creds.challenge.encode(), creds.digest))
            return AuthOutcome(Verdict.OK if ok else Verdict.FAIL, self.name)
        password = password_of(creds)
        if password is None:
            return AuthOutcome(Verdict.FAIL, self.name,
                               detail=f"mechanism {creds.mechanism} or authorization identity not supported")

        async def check() -> AuthOutcome:
            ok = await self.store.verify(creds.username, password)
            return AuthOutcome(Verdict.OK if ok else Verdict.FAIL, self.name)

        try:
            return await verify_with_cache(self.cache, self.name, creds, check)
        except UserStoreError as exc:
            return AuthOutcome(Verdict.MISCONFIGURED, self.name, detail=str(exc),
                               events=(SmtpAuthMisconfigured(icid, self.name),))
