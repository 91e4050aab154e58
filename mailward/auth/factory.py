"""Builds profile objects from the validated config (``config.Config.auth_profiles``).

Owns the mapping from config sections to profile classes and the sharing rules: one
credential cache for every profile (entries are keyed by profile name), chains resolved to
their member objects. Must not read anything but the files the config names. A profile that
cannot be built (missing or loose users file, bad URL) raises ``ConfigError`` naming it, so
the gateway refuses to start with one clear line instead of failing every login later.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import ConfigError
from .base import AuthProfile
from .cache import CredentialCache
from .chain import ChainProfile
from .local import LocalProfile
from .users import UserStore, UserStoreError


def build_profiles(profiles_cfg: Mapping[str, Any], *, cache: CredentialCache | None = None,
                   create_users_files: bool = False) -> dict[str, AuthProfile]:
    """``{name: profile}`` for every ``[auth_profiles.NAME]``; chains after their members."""
    built: dict[str, AuthProfile] = {}
    pending = dict(profiles_cfg)

    def build(name: str, stack: tuple[str, ...] = ()) -> AuthProfile:
        if name in built:
            return built[name]
        if name in stack:
            raise ValueError(f"auth_profiles.{name}: chain refers to itself")
        cfg = pending[name]
        kind = cfg.type
        prof: AuthProfile
        if kind == "local":
            prof = LocalProfile(name, UserStore(Path(cfg.users_file), create=create_users_files), cache)
        elif kind == "ldap":
            from .ldap import LdapProfile

            prof = LdapProfile.from_config(name, cfg, cache=cache)
        elif kind == "smtp_forward":
            from .forward import SmtpForwardProfile

            prof = SmtpForwardProfile.from_config(name, cfg, cache=cache)
        elif kind == "chain":
            prof = ChainProfile(name, [build(m, stack + (name,)) for m in cfg.members])
        else:  # the schema allows nothing else; a new type must be added here
            raise ValueError(f"auth_profiles.{name}: unknown type {kind!r}")
        built[name] = prof
        return prof

    for name in pending:
        try:
            build(name)
        except (UserStoreError, ValueError) as exc:
            raise ConfigError(f"auth_profiles.{name}: {exc}") from None
    return built
