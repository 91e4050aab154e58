"""Profiles built from the config schema: every type, chains resolved, errors named."""
from __future__ import annotations

import asyncio
import os

import pytest
from argon2 import PasswordHasher, Type

from mailward.auth.base import Credentials, Verdict
from mailward.auth.cache import CredentialCache
from mailward.auth.chain import ChainProfile
from mailward.auth.factory import build_profiles
from mailward.auth.forward import SmtpForwardProfile
from mailward.auth.ldap import LdapProfile
from mailward.auth.local import LocalProfile
from mailward.auth.service import Authenticator
from mailward.auth.users import UserStore
from mailward.config import ConfigError, parse_config
from mailward.maillog.sink import ListSink

CONFIG = """
[auth_profiles.Local]
type = "local"
users_file = "users.db"

[auth_profiles.Directory]
type = "ldap"
urls = ["ldap://127.0.0.1:1"]
search_base = "ou=people,dc=example,dc=test"

[auth_profiles.Forward]
type = "smtp_forward"
servers = [{ host = "127.0.0.1", port = 1, tls = "off", mechanisms = ["PLAIN"] }]
timeout = 2.0

[auth_profiles.Everyone]
type = "chain"
members = ["Directory", "Forward", "Local"]
"""


@pytest.fixture
def cfg(tmp_path):
    store = UserStore(tmp_path / "users.db", create=True,
                      hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1, type=Type.ID))
    store.add("alice", "wonderland")
    return parse_config(CONFIG, "test.toml", tmp_path)


def test_every_type_is_built_and_shares_the_cache(cfg):
    cache = CredentialCache()
    profiles = build_profiles(cfg.auth_profiles, cache=cache)
    assert isinstance(profiles["Local"], LocalProfile)
    assert isinstance(profiles["Directory"], LdapProfile)
    assert isinstance(profiles["Forward"], SmtpForwardProfile)
    chain = profiles["Everyone"]
    assert isinstance(chain, ChainProfile)
    assert [m.name for m in chain.members] == ["Directory", "Forward", "Local"]
    assert chain.members[0] is profiles["Directory"]
    assert all(p.cache is cache for n, p in profiles.items() if n != "Everyone")


def test_chain_falls_back_to_local_when_backends_are_down(cfg):
    sink = ListSink()
    auth = Authenticator(build_profiles(cfg.auth_profiles), sink)

    async def main():
        try:
            return await auth.authenticate("Everyone", Credentials("PLAIN", "alice", "wonderland"), icid=5,
                                           client_ip="127.0.0.1")
        finally:
            await auth.aclose()

    out = asyncio.run(main())
    assert (out.verdict, out.profile) == (Verdict.OK, "Local")
    kinds = [type(e).__name__ for e in sink.events]
    assert kinds == ["SystemNote", "SmtpAuthForwardUnreachable", "SmtpAuthResult"]


def test_loose_users_file_is_a_config_error(cfg, tmp_path):
    os.chmod(tmp_path / "users.db", 0o644)
    with pytest.raises(ConfigError, match=r"auth_profiles\.Local: .*chmod 600"):
        build_profiles(cfg.auth_profiles)


def test_missing_users_file_is_a_config_error_unless_created(cfg, tmp_path):
    (tmp_path / "users.db").unlink()
    with pytest.raises(ConfigError, match="auth_profiles.Local"):
        build_profiles(cfg.auth_profiles)
    profiles = build_profiles(cfg.auth_profiles, create_users_files=True)
    assert (tmp_path / "users.db").exists() and isinstance(profiles["Local"], LocalProfile)
