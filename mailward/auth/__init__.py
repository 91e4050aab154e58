"""Authentication: incoming profiles (local Argon2id, LDAP, SMTP forwarding, chains), the
verified-credential cache, the brute-force guard and outgoing credentials.

The SMTP core uses ``service.Authenticator`` (guard -> profile -> log events) and maps the
``Verdict`` to a reply; it never checks passwords itself.
"""
from .base import AuthOutcome, AuthProfile, Credentials, Verdict
from .cache import CredentialCache
from .chain import ChainProfile
from .guard import AuthGuard, GuardSettings, LockoutInfo
from .local import LocalProfile
from .outgoing import OutgoingCredentials, SecretError
from .service import Authenticator
from .users import UserStore, UserStoreError

__all__ = [
    "AuthGuard", "AuthOutcome", "AuthProfile", "Authenticator", "ChainProfile", "Credentials",
    "CredentialCache", "GuardSettings", "LocalProfile", "LockoutInfo", "OutgoingCredentials",
    "SecretError", "UserStore", "UserStoreError", "Verdict",
]
