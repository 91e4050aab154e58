"""The LDAP profile against a real OpenLDAP slapd (private instance, loopback, own ports)."""
from __future__ import annotations

import asyncio

import pytest

from mailward.auth.base import Credentials, Verdict
from mailward.auth.cache import CredentialCache
from mailward.auth.ldap import LDAP_QUERY_FAILED, LdapProfile
from mailward.maillog.events import SmtpAuthLdapLookupFailed, SmtpAuthMisconfigured, SystemNote
from tests.peers.slapd import SlapdInstance, free_port, slapd_peer  # noqa: F401

pytestmark = pytest.mark.e2e


def search_profile(peer, **kw) -> LdapProfile:
    args = dict(search_base=peer.people_dn, bind_dn=peer.service_dn,
                bind_password=peer.service_password, timeout=3.0)
    args.update(kw)
    urls = args.pop("urls", [peer.ldap_url])
    return LdapProfile("Directory", urls, **args)


def verify(profile, user, password, icid=30):
    return asyncio.run(profile.verify(Credentials("PLAIN", user, password), icid=icid, client_ip="127.0.0.1"))


def dead_url() -> str:
    return f"ldap://127.0.0.1:{free_port()}"


def test_search_then_bind_success_and_wrong_password(slapd_peer):
    p = search_profile(slapd_peer)
    ok = verify(p, "alice", "wonderland")
    assert (ok.verdict, ok.profile, ok.events) == (Verdict.OK, "Directory", ())
    bad = verify(p, "alice", "wonderlanD")
    assert (bad.verdict, bad.events) == (Verdict.FAIL, ())
    assert p.mechanisms == ("PLAIN", "LOGIN")
    p.close()


def test_unknown_user_fails_with_lookup_event(slapd_peer):
    p = search_profile(slapd_peer)
    out = verify(p, "mallory", "anything", icid=31)
    assert out.verdict is Verdict.FAIL
    assert out.events == (SmtpAuthLdapLookupFailed(31, "mallory"),)
    p.close()


@pytest.mark.parametrize("user", ["*", "al*", "*)(uid=*", "admin)(|(uid=*", "alice)(uid=*", "a\\6cice",
                                  "alice\x00", "(uid=alice)"])
def test_filter_injection_is_escaped(slapd_peer, user):
    # Unescaped, "al*" would find exactly alice and log in with her password; "*)(uid=*" and
    # "admin)(|(uid=*" would widen the filter. Escaped per RFC 4515 they match no entry.
    p = search_profile(slapd_peer, search_filter="(&(objectClass=inetOrgPerson)(uid={user}))")
    for password in ("wonderland", "adm1n-pw"):
        out = verify(p, user, password)
        assert out.verdict is Verdict.FAIL, (user, out)
        assert isinstance(out.events[0], SmtpAuthLdapLookupFailed)
    p.close()


def test_name_needing_escapes_still_works(slapd_peer):
    p = search_profile(slapd_peer)
    assert verify(p, "o'hara+x", "scarlett").verdict is Verdict.OK
    p.close()


def test_direct_bind_with_dn_template(slapd_peer):
    p = LdapProfile("Direct", [slapd_peer.ldap_url], dn_template=f"uid={{user}},{slapd_peer.people_dn}",
                    timeout=3.0)
    assert verify(p, "bob", "builder-42").verdict is Verdict.OK
    assert verify(p, "bob", "builder-43").verdict is Verdict.FAIL
    assert verify(p, "o'hara+x", "scarlett").verdict is Verdict.OK        # RFC 4514 escaping
    # DN injection: a comma in the name must not move the bind to another entry.
    assert verify(p, "bob,ou=people", "builder-42").verdict is Verdict.FAIL
    assert verify(p, "nobody", "x").verdict is Verdict.FAIL
    p.close()


def test_empty_password_is_never_an_anonymous_bind(slapd_peer):
    p = LdapProfile("Direct", [slapd_peer.ldap_url], dn_template=f"uid={{user}},{slapd_peer.people_dn}")
    assert verify(p, "alice", "").verdict is Verdict.FAIL
    p.close()


def test_wrong_service_password_is_misconfigured(slapd_peer):
    p = search_profile(slapd_peer, bind_password="not-it")
    out = verify(p, "alice", "wonderland", icid=33)
    assert out.verdict is Verdict.MISCONFIGURED
    assert out.events == (SmtpAuthMisconfigured(33, "Directory"),)
    p.close()


def test_missing_search_base_is_misconfigured(slapd_peer):
    p = search_profile(slapd_peer, search_base="ou=nowhere,dc=example,dc=test")
    assert verify(p, "alice", "wonderland").verdict is Verdict.MISCONFIGURED
    p.close()


def test_failover_to_second_url_and_tempfail_when_all_down(slapd_peer):
    p = search_profile(slapd_peer, urls=[dead_url(), slapd_peer.ldap_url])
    assert verify(p, "alice", "wonderland").verdict is Verdict.OK
    assert verify(p, "alice", "nope").verdict is Verdict.FAIL
    p.close()
    down = search_profile(slapd_peer, urls=[dead_url(), dead_url()])
    out = verify(down, "alice", "wonderland", icid=34)
    assert out.verdict is Verdict.TEMPFAIL
    assert out.events == (SystemNote(LDAP_QUERY_FAILED),)
    assert out.detail.count("127.0.0.1") == 2
    down.close()


def test_starttls_and_ldaps_with_verified_certificate(slapd_peer):
    st = search_profile(slapd_peer, starttls=True, ca_file=slapd_peer.ca_file)
    assert verify(st, "alice", "wonderland").verdict is Verdict.OK
    assert verify(st, "alice", "x").verdict is Verdict.FAIL
    st.close()
    ls = search_profile(slapd_peer, urls=[slapd_peer.ldaps_url], ca_file=slapd_peer.ca_file)
    assert verify(ls, "bob", "builder-42").verdict is Verdict.OK
    ls.close()


def test_untrusted_certificate_is_refused_unless_verification_off(slapd_peer):
    # No CA given: the self-signed certificate is not trusted, so no password goes out.
    strict = search_profile(slapd_peer, urls=[slapd_peer.ldaps_url])
    out = verify(strict, "alice", "wonderland")
    assert out.verdict is Verdict.TEMPFAIL and "certificate" in out.detail.lower()
    strict.close()
    st = search_profile(slapd_peer, starttls=True)
    assert verify(st, "alice", "wonderland").verdict is Verdict.TEMPFAIL
    st.close()
    lax = search_profile(slapd_peer, urls=[slapd_peer.ldaps_url], tls_verify=False)
    assert verify(lax, "alice", "wonderland").verdict is Verdict.OK
    lax.close()


def test_pooled_search_connection_survives_server_restart():
    with SlapdInstance() as peer:
        p = search_profile(peer)
        assert verify(p, "alice", "wonderland").verdict is Verdict.OK
        assert len(p._idle[0]) == 1          # the search connection was kept for reuse
        assert verify(p, "bob", "builder-42").verdict is Verdict.OK
        assert len(p._idle[0]) == 1          # ... and reused, not multiplied
        peer.stop()
        peer.start()                         # the pooled connection is now dead
        assert verify(p, "alice", "wonderland").verdict is Verdict.OK
        peer.stop()
        assert verify(p, "alice", "wonderland").verdict is Verdict.TEMPFAIL
        peer.start()
        p._down_until.clear()                # do not wait out the down-marking in a test
        assert verify(p, "alice", "wonderland").verdict is Verdict.OK
        p.close()


def test_cache_for_ldap_and_invalidation_on_failure():
    with SlapdInstance() as peer:
        cache = CredentialCache()
        p = search_profile(peer, cache=cache)
        assert verify(p, "alice", "wonderland").detail is None
        assert verify(p, "alice", "wonderland").detail == "cached"
        # A failure for alice clears her entries: with the directory gone, the right
        # password can no longer be answered from the cache.
        assert verify(p, "alice", "guess").verdict is Verdict.FAIL
        assert verify(p, "bob", "builder-42").verdict is Verdict.OK
        peer.stop()
        assert verify(p, "alice", "wonderland").verdict is Verdict.TEMPFAIL
        assert verify(p, "bob", "builder-42").detail == "cached"
        p.close()
