"""SMTP smuggling and STARTTLS command injection against the whole gateway, over a socket.

The unit tests prove the SMTP core; these prove the assembled gateway (shell, session,
spool, log): a smuggled second transaction behind a non-standard end-of-data sequence never
becomes a second message, and commands pipelined behind STARTTLS before the handshake are
never answered or executed.
"""
from __future__ import annotations

import pytest

from mailward.auth.users import UserStore
from mailward.net.tls import selfsigned
from tests.reliability.support import RawClient
from tests.support.gateway import config_text, start_gateway

RELAY_LOOPBACK = """
[[listener.hat]]
group = "RELAYLIST"
match = ["127.0.0.0/8"]
policy = "RELAY"
"""

# Sequences some MTA has taken as the end of DATA (SMTP smuggling, CVE-2023-51764/51765/51766,
# and the aiosmtpd advisories GHSA-pr2m-px7j-xg65 and CVE-2024-27305).
SMUGGLE = {
    "lf-dot-crlf": b"\n.\r\n",
    "cr-dot-lf": b"\r.\n",
    "lf-dot-lf": b"\n.\n",
    "cr-dot-cr": b"\r.\r",
    "crlf-dot-lf": b"\r\n.\n",
    "lf-dot-cr": b"\n.\r",
    "bare-lf": b"\n",
    "bare-cr": b"\r",
}

SMUGGLED_TX = (b"MAIL FROM:<smuggled@evil.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\n"
               b"Message-ID: <smuggled@evil.test>\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n")


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smuggle")
    UserStore(tmp / "users.db", create=True)
    g = start_gateway(config_text(tmp, RELAY_LOOPBACK), tmp)
    yield g
    g.stop()


@pytest.fixture(scope="module")
def gw_normalize(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smuggle-normalize")
    UserStore(tmp / "users.db", create=True)
    g = start_gateway(config_text(tmp, 'bare_newline = "normalize"\n' + RELAY_LOOPBACK), tmp)
    yield g
    g.stop()


def queued_message_ids(g) -> list[str]:
    # the appliance quotes the value: Info: MID 3 Message-ID '<id@host>'
    return [line.split("Message-ID ", 1)[1].strip("'") for line in g.log_bodies() if " Message-ID " in line]


def smuggle(g, seq: bytes, tag: str) -> list[int]:
    with RawClient(g.port) as c:
        c.send(b"EHLO attacker.test\r\nMAIL FROM:<a@client.test>\r\nRCPT TO:<x@example.test>\r\nDATA\r\n")
        codes = [c.reply()[0] for _ in range(5)]
        assert codes == [220, 250, 250, 250, 354]
        c.send(f"Message-ID: <first-{tag}@client.test>\r\nSubject: first\r\n\r\nbody\r\n".encode()
               + seq + SMUGGLED_TX + b".\r\nQUIT\r\n")
        return codes + [code for code, _ in c.replies_until_close()]


@pytest.mark.parametrize("name", sorted(SMUGGLE))
@pytest.mark.parametrize("mode", ["reject", "normalize"])
def test_smuggled_transaction_never_becomes_a_second_message(gw, gw_normalize, name, mode):
    g = gw if mode == "reject" else gw_normalize
    before = len(list(g.gateway.spool.messages()))
    codes = smuggle(g, SMUGGLE[name], f"{mode}-{name}")
    # exactly one reply to the one end of DATA, then QUIT's: no 250 for a smuggled MAIL/RCPT/DATA
    assert len(codes) == 7 and codes[-1] == 221, codes
    end_of_data = codes[5]
    after = len(list(g.gateway.spool.messages()))
    if mode == "reject":
        # the whole message is refused once, cleanly: nothing queued
        assert end_of_data == 554 and after == before, codes
    else:
        # one message, the smuggled text is only its body
        assert end_of_data == 250 and after == before + 1, codes
        assert queued_message_ids(g)[-1] == f"<first-{mode}-{name}@client.test>"
    ids = queued_message_ids(g)
    assert "<smuggled@evil.test>" not in ids
    assert not any("smuggled@evil.test" in line for line in g.log_bodies())


def test_real_end_of_data_still_works_after_the_battery(gw):
    with RawClient(gw.port) as c:
        c.send(b"EHLO ok.test\r\nMAIL FROM:<a@client.test>\r\nRCPT TO:<x@example.test>\r\nDATA\r\n")
        assert [c.reply()[0] for _ in range(5)] == [220, 250, 250, 250, 354]
        c.send(b"Message-ID: <plain@client.test>\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        assert [code for code, _ in c.replies_until_close()] == [250, 221]
    assert "<plain@client.test>" in queued_message_ids(gw)


@pytest.fixture
def tls_gw(tmp_path):
    UserStore(tmp_path / "users.db", create=True)
    selfsigned("gw.example.test", tmp_path / "gw.crt", tmp_path / "gw.key")
    extra = f'starttls = "preferred"\ncert_file = "{tmp_path / "gw.crt"}"\nkey_file = "{tmp_path / "gw.key"}"\n'
    g = start_gateway(config_text(tmp_path, extra + RELAY_LOOPBACK), tmp_path)
    yield g
    g.stop()


def test_commands_pipelined_behind_starttls_are_discarded(tls_gw):
    with RawClient(tls_gw.port) as c:
        assert c.reply()[0] == 220
        c.send(b"EHLO attacker.test\r\n")
        assert c.reply()[0] == 250
        # one write: STARTTLS plus a whole plaintext transaction an attacker injected
        c.send(b"STARTTLS\r\nMAIL FROM:<inject@evil.test>\r\nRCPT TO:<victim@example.test>\r\n"
               b"DATA\r\nMessage-ID: <inject@evil.test>\r\n\r\ninjected\r\n.\r\n")
        code, _ = c.reply()
        assert code == 220
        c.starttls()
        # the first reply after the handshake is the one to our EHLO: nothing queued for the
        # injected commands
        c.send(b"EHLO client.test\r\n")
        code, text = c.reply()
        assert code == 250 and "gw.example.test" in text.splitlines()[0], text
        # MAIL is accepted (not 503 "nested MAIL"): the injected MAIL never ran
        c.send(b"MAIL FROM:<a@client.test>\r\n")
        assert c.reply()[0] == 250
        c.send(b"RCPT TO:<x@example.test>\r\nDATA\r\n")
        assert [c.reply()[0], c.reply()[0]] == [250, 354]
        c.send(b"Message-ID: <after-tls@client.test>\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        assert [code for code, _ in c.replies_until_close()] == [250, 221]
    ids = queued_message_ids(tls_gw)
    assert ids == ["<after-tls@client.test>"], ids
    assert not any("inject@evil.test" in line for line in tls_gw.log_bodies())
