"""LDAP profile checks that need no directory (the real-server tests are in tests/e2e)."""
from __future__ import annotations

import asyncio

import pytest

from mailward.auth.base import Credentials, Verdict
from mailward.auth.ldap import LdapProfile


def test_settings_are_validated():
    with pytest.raises(ValueError, match="search_base"):
        LdapProfile("D", ["ldap://127.0.0.1:1"])
    with pytest.raises(ValueError, match="dn_template"):
        LdapProfile("D", ["ldap://127.0.0.1:1"], dn_template="uid=x,dc=t")
    with pytest.raises(ValueError, match="search_filter"):
        LdapProfile("D", ["ldap://127.0.0.1:1"], search_base="dc=t", search_filter="(uid=x)")
    with pytest.raises(ValueError, match="URL"):
        LdapProfile("D", ["http://127.0.0.1"], search_base="dc=t")
    with pytest.raises(ValueError, match="no server"):
        LdapProfile("D", [], search_base="dc=t")


@pytest.mark.parametrize("user,password,mech", [("alice", "", "PLAIN"), ("", "pw", "PLAIN"),
                                                ("alice", None, "CRAM-MD5")])
def test_refused_before_any_network(user, password, mech):
    # Port 1 on loopback: any connection attempt would show up as TEMPFAIL, not FAIL.
    p = LdapProfile("D", ["ldap://127.0.0.1:1"], dn_template="uid={user},dc=t")
    out = asyncio.run(p.verify(Credentials(mech, user, password), icid=1, client_ip="127.0.0.1"))
    assert out.verdict is Verdict.FAIL
    p.close()


def test_unreachable_is_tempfail_fast():
    p = LdapProfile("D", ["ldap://127.0.0.1:1", "ldaps://127.0.0.1:1"], dn_template="uid={user},dc=t",
                    timeout=1.0)
    out = asyncio.run(p.verify(Credentials("PLAIN", "alice", "pw"), icid=1, client_ip="127.0.0.1"))
    assert out.verdict is Verdict.TEMPFAIL
    assert "ldap://127.0.0.1:1" in out.detail and "ldaps://127.0.0.1:1" in out.detail
    p.close()


def test_from_config_reads_secret_lazily(tmp_path):
    import os

    from mailward.config import LdapProfile as LdapCfg

    pw = tmp_path / "bind.pw"
    cfg = LdapCfg(type="ldap", urls=["ldap://127.0.0.1:1"], bind_dn="cn=svc,dc=t", bind_password_file=pw,
                  search_base="dc=t")
    p = LdapProfile.from_config("D", cfg)   # the file need not exist yet

    def run():
        return asyncio.run(p.verify(Credentials("PLAIN", "alice", "pw"), icid=1, client_ip="127.0.0.1"))

    assert run().verdict is Verdict.MISCONFIGURED          # missing secret
    pw.write_text("svc-pw\n")
    os.chmod(pw, 0o644)
    out = run()
    assert out.verdict is Verdict.MISCONFIGURED and "chmod 600" in out.detail   # loose secret
    os.chmod(pw, 0o600)
    assert run().verdict is Verdict.TEMPFAIL                # now only the server is missing
    p.close()
