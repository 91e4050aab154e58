"""The whole AUTH path with real peers: swaks -> mailward -> slapd / Postfix+Cyrus.

Each listener uses one profile; the mail_logs lines are checked as the appliance writes them.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from argon2 import PasswordHasher, Type

from mailward.auth.users import UserStore
from tests.peers.postfix import PostfixInstance, free_port, postfix_available
from tests.peers.slapd import SlapdInstance
from tests.support.gateway import start_gateway

pytestmark = pytest.mark.e2e

AUTH = r"Info: SMTP Auth: \(ICID \d+\) "


@pytest.fixture(scope="module")
def peers():
    assert shutil.which("swaks"), "swaks is not installed (make test installs it)"
    assert postfix_available(), "postfix / saslpasswd2 missing: install postfix and sasl2-bin"
    slapd = SlapdInstance()
    pf = PostfixInstance()
    try:
        slapd.start()
        pf.start()
        pf.add_user("carol", "postfix-pw")
        yield slapd, pf
    finally:
        pf.stop()
        slapd.close()


def config(tmp, slapd, pf) -> str:
    pw = tmp / "ldap.pw"
    pw.write_text(slapd.service_password + "\n")
    os.chmod(pw, 0o600)
    dead_ldap = f"ldap://127.0.0.1:{free_port()}"
    dead_smtp = free_port()

    def listener(name, profile):
        return f"""
[[listener]]
name = "{name}"
address = "127.0.0.1"
port = 0
type = "private"
auth = "required"
auth_profile = "{profile}"
accepted_domains = ["example.test"]
"""

    return f"""
[gateway]
hostname = "gw.example.test"
spool_dir = "{tmp / 'spool'}"
log_dir = "{tmp / 'log'}"
serial = "MWTEST-0001"

[dns]
reverse_lookups = false

[auth_guard]
free_failures = 2
base_delay = 0.05
max_delay = 0.1
lockout_failures = 4
lockout_seconds = 60

[auth_profiles.Directory]
type = "ldap"
urls = ["{dead_ldap}", "{slapd.ldap_url}"]
starttls = true
ca_file = "{slapd.ca_file}"
bind_dn = "{slapd.service_dn}"
bind_password_file = "{pw}"
search_base = "{slapd.people_dn}"
search_filter = "(&(objectClass=inetOrgPerson)(uid={{user}}))"
timeout = 3.0

[auth_profiles.Forward]
type = "smtp_forward"
servers = [{{ host = "127.0.0.1", port = {pf.port}, tls = "off", mechanisms = ["PLAIN"] }}]
timeout = 5.0

[auth_profiles.Local]
type = "local"
users_file = "{tmp / 'users.db'}"

[auth_profiles.DeadLdap]
type = "ldap"
urls = ["{dead_ldap}"]
search_base = "{slapd.people_dn}"
timeout = 2.0

[auth_profiles.DeadForward]
type = "smtp_forward"
servers = [{{ host = "127.0.0.1", port = {dead_smtp}, tls = "off" }}]
timeout = 2.0

[auth_profiles.Fallback]
type = "chain"
members = ["DeadLdap", "Local"]

[auth_profiles.AllDown]
type = "chain"
members = ["DeadLdap", "DeadForward"]
""" + listener("LdapMail", "Directory") + listener("ForwardMail", "Forward") \
        + listener("ChainMail", "Fallback") + listener("DownMail", "AllDown") + listener("LocalMail", "Local")


@pytest.fixture
def gw(tmp_path, peers):
    slapd, pf = peers
    store = UserStore(tmp_path / "users.db", create=True,
                      hasher=PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1, type=Type.ID))
    store.add("dave", "local-pw")
    store.add("erin", "cram-pw", cram=True)
    g = start_gateway(config(tmp_path, slapd, pf), tmp_path)
    yield g
    g.stop()


def swaks_auth(port: int, user: str, password: str, mech: str = "PLAIN") -> subprocess.CompletedProcess:
    return subprocess.run(["swaks", "--server", f"127.0.0.1:{port}", "--hide-informational",
                           "--auth", mech, "--auth-user", user, "--auth-password", password,
                           "--quit-after", "AUTH"], capture_output=True, text=True, timeout=60)


def auth_lines(gw) -> list[str]:
    return [b for b in gw.log_bodies() if "SMTP Auth" in b]


def port(gw, name: str) -> int:
    names = [c.name for c in gw.gateway.contexts]
    return gw.ports[names.index(name)]


def test_ldap_profile_success_failure_and_unknown_user(gw):
    p = port(gw, "LdapMail")
    r = swaks_auth(p, "alice", "wonderland")
    assert "235 2.7.0" in r.stdout, r.stdout
    r = swaks_auth(p, "alice", "wrong", mech="LOGIN")
    assert "535 5.7.8" in r.stdout, r.stdout
    r = swaks_auth(p, "mallory", "whatever")
    assert "535 5.7.8" in r.stdout, r.stdout
    lines = auth_lines(gw)
    assert re.fullmatch(AUTH + "succeeded for user: alice using AUTH mechanism: PLAIN with profile: Directory",
                        lines[0]), lines
    assert re.fullmatch(AUTH + "failed for user: alice using AUTH mechanism: LOGIN with profile: Directory",
                        lines[1]), lines
    assert re.fullmatch(r"Info: SMTP Auth: \(ICID \d+\) LDAP query/user lookup failed for user: mallory",
                        lines[2]), lines
    assert re.fullmatch(AUTH + "failed for user: mallory using AUTH mechanism: PLAIN with profile: Directory",
                        lines[3]), lines


def test_forward_profile_against_postfix(gw):
    p = port(gw, "ForwardMail")
    assert "235 2.7.0" in swaks_auth(p, "carol", "postfix-pw").stdout
    assert "535 5.7.8" in swaks_auth(p, "carol", "nope").stdout
    lines = auth_lines(gw)
    assert re.fullmatch(AUTH + "succeeded for user: carol using AUTH mechanism: PLAIN with profile: Forward",
                        lines[0]), lines
    assert re.fullmatch(AUTH + "failed for user: carol using AUTH mechanism: PLAIN with profile: Forward",
                        lines[1]), lines


def test_chain_names_the_member_that_decided(gw):
    assert "235 2.7.0" in swaks_auth(port(gw, "ChainMail"), "dave", "local-pw").stdout
    lines = auth_lines(gw)
    assert re.fullmatch(AUTH + "succeeded for user: dave using AUTH mechanism: PLAIN with profile: Local",
                        lines[-1]), lines


def test_backends_down_answer_454_and_log_why(gw):
    r = swaks_auth(port(gw, "DownMail"), "alice", "wonderland")
    assert "454 4.7.0" in r.stdout, r.stdout
    bodies = gw.log_bodies()
    assert "Info: SMTP Auth LDAP query failed, possible LDAP misconfiguration or unreachable server." in bodies
    assert any(re.fullmatch(r"Info: SMTP Auth: \(ICID \d+\) could not reach forwarding server 127\.0\.0\.1:\d+ "
                            r"with reason: .+", b) for b in bodies), bodies
    assert re.fullmatch(AUTH + "failed for user: alice using AUTH mechanism: PLAIN with profile: DeadForward",
                        auth_lines(gw)[-1])


def test_lockout_after_repeated_failures(gw):
    p = port(gw, "LdapMail")
    replies = [swaks_auth(p, "alice", f"guess{i}").stdout for i in range(6)]
    assert all("535 5.7.8" in r for r in replies[:4]), replies
    assert all("454 4.7.0" in r for r in replies[4:]), replies
    bodies = gw.log_bodies()
    assert any(re.fullmatch(AUTH + r"lockout of address 127\.0\.0\.1 for 60 seconds after 4 failures", b)
               for b in bodies), bodies
    assert sum(bool(re.fullmatch(AUTH + "rejected using AUTH mechanism: PLAIN reason: .+", b))
               for b in bodies) == 2


def test_cram_md5_for_a_local_user_with_a_stored_context(gw):
    p = port(gw, "LocalMail")
    ehlo = subprocess.run(["swaks", "--server", f"127.0.0.1:{p}", "--quit-after", "EHLO"],
                          capture_output=True, text=True, timeout=30).stdout
    assert re.search(r"250-AUTH PLAIN LOGIN CRAM-MD5", ehlo), ehlo
    assert "235 2.7.0" in swaks_auth(p, "erin", "cram-pw", mech="CRAM-MD5").stdout
    assert "535 5.7.8" in swaks_auth(p, "erin", "wrong", mech="CRAM-MD5").stdout
    assert "535 5.7.8" in swaks_auth(p, "dave", "local-pw", mech="CRAM-MD5").stdout   # no context stored
    lines = auth_lines(gw)
    assert re.fullmatch(AUTH + "succeeded for user: erin using AUTH mechanism: CRAM-MD5 with profile: Local",
                        lines[0]), lines
    assert re.fullmatch(AUTH + "failed for user: dave using AUTH mechanism: CRAM-MD5 with profile: Local",
                        lines[2]), lines
