"""No password ever shows up in an outcome, its events or its detail (they reach the log)."""
from __future__ import annotations

import asyncio

from mailward.auth.base import Credentials
from mailward.auth.forward import ForwardServer, SmtpForwardProfile
from mailward.auth.ldap import LdapProfile
from mailward.auth.service import Authenticator
from mailward.maillog.sink import ListSink

SECRET = "Sup3r-Secret-Pa55"


def test_unreachable_backends_never_echo_the_password():
    profiles = {
        "L": LdapProfile("L", ["ldap://127.0.0.1:1"], search_base="dc=t", bind_dn="cn=svc,dc=t",
                         bind_password=SECRET + "-svc", timeout=1.0),
        "D": LdapProfile("D", ["ldaps://127.0.0.1:1"], dn_template="uid={user},dc=t", timeout=1.0),
        "F": SmtpForwardProfile("F", [ForwardServer("127.0.0.1", 1, tls="off")], timeout=1.0,
                                local_hostname="gw.test"),
    }
    sink = ListSink()
    auth = Authenticator(profiles, sink)

    async def main():
        outs = [await auth.authenticate(n, Credentials("PLAIN", "alice", SECRET), icid=1, client_ip="127.0.0.1")
                for n in profiles]
        await auth.aclose()
        return outs

    outs = asyncio.run(main())
    text = repr(outs) + repr(sink.events) + "".join(str(o.detail) for o in outs)
    assert "Sup3r" not in text
    assert len(sink.events) >= 3
