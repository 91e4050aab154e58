"""TLS helpers: a self-signed pair with a private key file, and contexts that talk to each other."""
from __future__ import annotations

import asyncio
import ssl
import stat

import pytest

from mailward.net.tls import client_context, describe, selfsigned, server_context


def test_selfsigned_key_is_private_and_loads(tmp_path):
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    selfsigned("mx.test", cert, key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert cert.read_text().startswith("-----BEGIN CERTIFICATE-----")
    ctx = server_context(cert, key)
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_contexts_handshake_and_verify(tmp_path):
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    selfsigned("localhost", cert, key)

    async def main():
        got = {}

        async def on_client(reader, writer):
            got["server"] = describe(writer.get_extra_info("ssl_object"))
            writer.write(await reader.readline())
            await writer.drain()
            writer.close()

        srv = await asyncio.start_server(on_client, "127.0.0.1", 0, ssl=server_context(cert, key))
        port = srv.sockets[0].getsockname()[1]
        # verifying client trusting our own certificate
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=client_context(cafile=cert),
                                             server_hostname="localhost")
        w.write(b"ping\n")
        assert await r.readline() == b"ping\n"
        w.close()
        # verifying client without the CA fails; opportunistic client succeeds
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection("127.0.0.1", port, ssl=client_context(), server_hostname="localhost")
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=client_context(verify=False),
                                             server_hostname="localhost")
        w.write(b"x\n")
        assert await r.readline() == b"x\n"
        w.close()
        srv.close()
        return got

    got = asyncio.run(main())
    proto, cipher = got["server"]
    assert proto.startswith("TLSv1.") and cipher


def test_describe_without_tls():
    assert describe(None) == (None, None)
