"""dnslist[zone] sender groups end to end: SMTP clients over loopback TCP, a gateway whose
configured name server is a real DNS server on a private loopback UDP port."""
from __future__ import annotations

import socket
import time

import pytest

from mailward.config import ConfigError, parse_config
from tests.peers.dns_server import DnsServer
from tests.support.gateway import FROM_CONFIG, config_text, fast_user_store, start_gateway

HAT = """
[[listener.hat]]
group = "RBLBlacklist"
match = ["dnslist[bl.test]", "dnslist[dark.test]"]
policy = "REJECT"

[[listener.hat]]
group = "None"
match = ["ALL"]
policy = "ACCEPT"
"""


def banner_from(src: str, port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(src, 0)) as s:
        return s.makefile("rb").readline()


def gateway_with(tmp_path, dns: DnsServer, timeout: float = 2.0):
    fast_user_store(tmp_path, {"alice": "alice-secret"})     # the listener's AUTH profile needs its file
    text = config_text(tmp_path, HAT).replace("reverse_lookups = true", f"""reverse_lookups = false
nameservers = ["127.0.0.1:{dns.port}"]
timeout = {timeout}""")
    # The gateway builds its resolver from [dns] (rDNS off, but the HAT has dnslist entries).
    return start_gateway(parse_config(text, "test.toml", tmp_path), tmp_path, resolver=FROM_CONFIG)


def test_a_listed_client_is_refused_and_the_match_is_logged(tmp_path):
    with DnsServer({"3.0.0.127.bl.test": ["127.0.0.2"]}) as dns:
        g = gateway_with(tmp_path, dns)
        try:
            assert banner_from("127.0.0.3", g.port).startswith(b"554 5.7.1")
            assert banner_from("127.0.0.1", g.port).startswith(b"220 ")
            g.flush()
            bodies = g.log_bodies()
            assert any(b.endswith("REJECT SG RBLBlacklist match dnslist[bl.test] SBRS None") for b in bodies), bodies
            assert any(b.endswith("ACCEPT SG None match ALL SBRS None") for b in bodies)
            assert "3.0.0.127.bl.test" in dns.queries and "1.0.0.127.bl.test" in dns.queries
        finally:
            g.stop()


def test_a_list_that_has_gone_dark_lists_nobody_after_the_timeout(tmp_path):
    with DnsServer({}, silent_zones=("dark.test",)) as dns:
        g = gateway_with(tmp_path, dns, timeout=1.0)
        try:
            t = time.monotonic()
            assert banner_from("127.0.0.3", g.port).startswith(b"220 ")
            assert time.monotonic() - t < 5
        finally:
            g.stop()


def test_bad_name_server_and_dnslist_entries_are_config_errors(tmp_path):
    text = config_text(tmp_path, HAT)
    with pytest.raises(ConfigError, match="not an IP address"):
        parse_config(text.replace("reverse_lookups = true", 'nameservers = ["ns.example"]'), "t.toml", tmp_path)
    with pytest.raises(ConfigError, match="dnslist"):
        parse_config(text.replace("dnslist[bl.test]", "dnslist[]"), "t.toml", tmp_path)
